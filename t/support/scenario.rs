//! Shared pieces of the scenario suites (conformance, hostile): error-log marks and checks,
//! and small helpers for vhosts whose virtual path is recorded as `<id>.vpath`.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::check::{ensure, p};
use crate::harness::{Builder, Ctx};
use crate::http::{Conn, Response};
use crate::util;

pub fn vpath(ctx: &Ctx, id: &str) -> String {
    ctx.val(&format!("{id}.vpath")).to_string()
}

pub fn host(ctx: &Ctx, id: &str) -> String {
    ctx.vhost(id).server_name.clone()
}

/// An `/app` vhost of a scenario suite: `/app` is aliased to the virtual path
/// `<tmp>/<dir>/<file>.fcgi` (the directory is never created), recorded as `<id>.vpath`.
pub struct AppSite<'a> {
    /// Directory under the temp dir holding the virtual path.
    pub dir: &'a str,
    /// File name of the virtual path, without `.fcgi`.
    pub file: &'a str,
    /// Document root site name (see `Builder::docroot`).
    pub docroot: &'a str,
    /// `-host …` / `-socket …`.
    pub target: &'a str,
    pub opts: &'a str,
    /// More vhost configuration.
    pub extra: &'a str,
}

pub fn add_app_site(b: &mut Builder, id: &str, site: AppSite<'_>) -> Result<(), String> {
    let vdir = b.tmp.join(site.dir); // never created
    let vpath = vdir.join(format!("{}.fcgi", site.file));
    b.set(&format!("{id}.vpath"), p(&vpath));
    let body = format!(
        "Alias /app {vp}\n\
         FastCgiExternalServer {vp} {target} {opts}\n\
         <Directory {vd}>\n    Require all granted\n</Directory>\n{extra}\n",
        vp = util::q(p(&vpath)),
        vd = util::q(p(&vdir)),
        target = site.target,
        opts = site.opts,
        extra = site.extra,
    );
    let port = b.port()?;
    let docroot = b.docroot(site.docroot)?;
    b.vhost(
        id,
        port,
        &format!("{}.test", id.replace('_', "-")),
        &docroot,
        &body,
    );
    Ok(())
}

pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Upper bound of a latency assertion: `millis`, or `2 × millis + 1 s` when Apache runs under
/// valgrind (lower bounds, e.g. "the timeout did not fire early", are never relaxed).
pub fn late(ctx: &Ctx, millis: u64) -> Duration {
    if ctx.env.valgrind {
        Duration::from_millis(2 * millis + 1000)
    } else {
        Duration::from_millis(millis)
    }
}

/// Log offsets taken before a scenario.
pub struct Logs {
    pub main: PathBuf,
    pub main_off: u64,
    pub vhost: PathBuf,
    pub off: u64,
    /// Apache runs under valgrind: wait longer for log lines to appear and settle.
    pub slow: bool,
}

impl Logs {
    pub fn mark(ctx: &Ctx, id: &str) -> Logs {
        let main = ctx.error_log();
        let vhost = ctx.vhost(id).error_log.clone();
        Logs {
            main_off: util::file_len(&main),
            off: util::file_len(&vhost),
            main,
            vhost,
            slow: ctx.env.valgrind,
        }
    }

    /// A settling pause (longer under valgrind).
    fn settle(&self, millis: u64) {
        let millis = if self.slow { millis * 3 } else { millis };
        thread::sleep(Duration::from_millis(millis));
    }

    pub fn text(&self) -> String {
        util::read_from(&self.vhost, self.off)
    }

    /// `[fastcgi:error]` (and worse) lines of the vhost log since the mark.
    pub fn errors(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| {
                l.contains("[fastcgi:error]")
                    || l.contains("[fastcgi:crit]")
                    || l.contains("[fastcgi:alert]")
                    || l.contains("[fastcgi:emerg]")
                    || l.contains("[core:error]")
            })
            .map(String::from)
            .collect()
    }

    /// Wait for a line containing every needle.
    pub fn wait_for(&self, needles: &[&str], timeout: Duration) -> Result<String, String> {
        let t0 = Instant::now();
        loop {
            let text = self.text();
            if let Some(l) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return Ok(l.to_string());
            }
            if t0.elapsed() > timeout {
                return Err(format!(
                    "no log line with {needles:?} in {}; new lines:\n    {}",
                    self.vhost.display(),
                    text.lines().collect::<Vec<_>>().join("\n    ")
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Exactly one error-level line, and it contains every needle.
    pub fn expect_one_error(&self, needles: &[&str]) -> Result<String, String> {
        let mut n = vec!["[fastcgi:error]"];
        n.extend_from_slice(needles);
        let wait = Duration::from_secs(if self.slow { 10 } else { 3 });
        let line = self.wait_for(&n, wait)?;
        self.settle(150);
        let errs = self.errors();
        ensure(errs.len() == 1, || {
            format!(
                "want exactly one error line (with {needles:?}), got {}:\n    {}",
                errs.len(),
                errs.join("\n    ")
            )
        })?;
        Ok(line)
    }

    pub fn expect_no_errors(&self) -> Result<(), String> {
        self.settle(100);
        let errs = self.errors();
        ensure(errs.is_empty(), || {
            format!("unexpected error lines:\n    {}", errs.join("\n    "))
        })
    }

    /// At most `n` error-level lines.
    pub fn at_most_errors(&self, n: usize) -> Result<(), String> {
        self.settle(150);
        let errs = self.errors();
        ensure(errs.len() <= n, || {
            format!(
                "want at most {n} error lines, got {}:\n    {}",
                errs.len(),
                errs.join("\n    ")
            )
        })
    }

    /// No child crashed and no panic was caught since the mark.
    pub fn no_crash(&self) -> Result<(), String> {
        let main = util::read_from(&self.main, self.main_off);
        let vh = self.text();
        let bad: Vec<&str> = main
            .lines()
            .chain(vh.lines())
            .filter(|l| {
                l.contains("exit signal")
                    || l.contains("FCGI070")
                    || l.contains("panicked")
                    || l.contains("AH00052")
            })
            .collect();
        ensure(bad.is_empty(), || {
            format!("crash/panic lines:\n    {}", bad.join("\n    "))
        })
    }
}

/// An aborted response: the client can tell (no terminating chunk / short body, connection
/// closed).
pub fn expect_aborted(r: &Response, c: &mut Conn, want_body: &[u8]) -> Result<(), String> {
    let mut errs = Vec::new();
    if r.status != 200 {
        errs.push(format!(
            "want the application's 200 (then an abort), got {}",
            r.status
        ));
    }
    if r.body != want_body {
        errs.push(format!(
            "body before the abort: want {:?}",
            String::from_utf8_lossy(want_body)
        ));
    }
    if r.complete || r.chunked_terminated {
        errs.push(format!(
            "aborted response presented as complete (framing {:?}, terminating chunk received: {})",
            r.framing, r.chunked_terminated
        ));
    }
    if !c.is_closed_by_peer(Duration::from_secs(3)) {
        errs.push("client connection left open after the abort".into());
    }
    ensure(errs.is_empty(), || {
        format!("{}: {}", errs.join("; "), r.summary())
    })
}
