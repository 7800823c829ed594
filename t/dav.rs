//! Another project's test suite through the module: litmus, the WebDAV server test suite
//! (Debian's `litmus`), against SabreDAV (Debian's `php-sabre-dav`, a file server in PHP) on
//! php-fpm behind the AddType/Action/Alias recipe with the pool on, every URL rewritten to the
//! one script. WebDAV is HTTP at its widest: methods with bodies (PROPFIND, PROPPATCH, LOCK,
//! MKCOL, COPY, MOVE), bodies in answers to them (207 Multi-Status), `Depth`, `Destination`,
//! `Overwrite`, `If` and `Lock-Token` headers, and status codes a PHP application chooses
//! (201, 204, 207, 412, 423, ...).
//!
//! litmus's suites `basic`, `copymove`, `props`, `locks` and `http` run one by one (litmus
//! stops after the first suite with a failure). Every test must pass but the ones SabreDAV's
//! file backend cannot: it keeps no dead properties, so PROPPATCH on a file is 403 (`propset`,
//! `propmanyns`, and `propget` after them; `owner_modify` in `locks`). mod_proxy_fcgi in front
//! of the same application fails the same four and nothing else (by hand, 2026-12-07).

use std::path::Path;
use std::process::Command;

use crate::check::{ensure, p};
use crate::fpm::Pool;
use crate::harness::{Builder, Ctx, Suite, test};
use crate::procs::Endpoint;
use crate::util;

pub const SUITE: Suite = Suite {
    name: "dav",
    setup,
    tests: &[
        test("dav_litmus_sabredav", litmus),
        test("dav_log_clean", log_clean),
    ],
};

const SABRE: &str = "/usr/share/php/Sabre/autoload.php";
const LITMUS: &str = "/usr/bin/litmus";
const ID: &str = "dav";

/// The suites, the fewest tests each must pass, and the failures allowed (SabreDAV's).
const SUITES: &[(&str, usize, &[&str])] = &[
    ("basic", 16, &[]),
    ("copymove", 13, &[]),
    ("props", 11, &["propset", "propmanyns", "propget"]),
    ("locks", 34, &["owner_modify"]),
    ("http", 4, &[]),
];

/// SabreDAV 1.8 on PHP 8.2: deprecation notices go nowhere (they would reach the error log as
/// the application's stderr); the tree lives under the suite's temp dir.
const SERVER_PHP: &str = r#"<?php
error_reporting(E_ALL & ~E_DEPRECATED & ~E_STRICT & ~E_NOTICE & ~E_WARNING);
ini_set('display_errors', '0');
date_default_timezone_set('UTC');
require_once 'Sabre/autoload.php';
$server = new \Sabre\DAV\Server(new \Sabre\DAV\FS\Directory(__DATA__ . '/public'));
$server->setBaseUri('/');
$locks = new \Sabre\DAV\Locks\Backend\File(__DATA__ . '/locksdb');
$server->addPlugin(new \Sabre\DAV\Locks\Plugin($locks));
$server->exec();
"#;

fn setup(b: &mut Builder) -> Result<(), String> {
    if !Path::new(SABRE).is_file() || !Path::new(LITMUS).is_file() {
        b.set("dav_missing", "1");
        return Ok(());
    }
    let root = b.tmp.join("dav");
    let www = root.join("www");
    let data = root.join("data");
    util::mkdir_p(&www)?;
    util::mkdir_p(&data.join("public"))?;
    util::write_file(
        &www.join("server.php"),
        SERVER_PHP.replace("__DATA__", &format!("'{}'", p(&data))),
    )?;
    util::run(
        Command::new("chown")
            .args(["-R", "www-data:www-data"])
            .arg(&data),
        "chown the DAV tree",
    )?;
    let sock = b.tmp.join("run/dav.sock");
    let mut pool = Pool::new("dav", "www-data", "www-data", Endpoint::Unix(sock.clone()));
    pool.max_children = 4;
    b.pool(pool);
    let vpath = b.tmp.join("dav/fastcgi/php.fcgi"); // its directory never exists
    let mut body = crate::apps::recipe_vhost("server.php", &www, &vpath, &sock);
    body.push_str(
        "RewriteEngine On\n\
         RewriteCond %{REQUEST_URI} !^/php\\.fcgi\n\
         RewriteRule ^ /server.php [L]\n",
    );
    let port = b.port()?;
    b.vhost(ID, port, "dav.test", &www, &body);
    b.set("dav_data", p(&data));
    Ok(())
}

fn installed(ctx: &Ctx) -> Result<(), String> {
    if ctx.vals.contains_key("dav_missing") {
        return Err(format!(
            "{SABRE} or {LITMUS} missing: `make deps-test` installs Debian's php-sabre-dav and litmus"
        ));
    }
    Ok(())
}

/// One litmus run: its FAIL lines and its summary line.
struct Run {
    fails: Vec<String>,
    summary: Option<String>,
}

fn parse(out: &str) -> Run {
    let mut run = Run {
        fails: Vec::new(),
        summary: None,
    };
    for line in out.lines() {
        if line.starts_with("<- summary for") {
            run.summary = Some(line.to_string());
            continue;
        }
        // "\r 6. propset..... \r 6. propset..... FAIL (reason)": litmus redraws the line after
        // a test's own output with a carriage return; the last copy carries the result
        let seg = line.rsplit('\r').next().unwrap_or(line).trim();
        let Some((num, rest)) = seg.split_once(". ") else {
            continue;
        };
        if num.parse::<u32>().is_err() {
            continue;
        }
        let name: String = rest.chars().take_while(|&c| c != '.').collect();
        let verdict = rest[name.len()..].trim_start_matches('.').trim();
        let word = verdict.split_whitespace().next().unwrap_or("");
        if name.is_empty() || word.is_empty() {
            continue;
        }
        if word == "FAIL" {
            run.fails.push(seg.to_string());
        }
    }
    run
}

fn litmus(ctx: &Ctx) -> Result<(), String> {
    installed(ctx)?;
    let url = format!("http://127.0.0.1:{}/", ctx.vhost(ID).port);
    let mut report = Vec::new();
    for &(suite, min_pass, allowed) in SUITES {
        // (litmus writes its debug.log and child.log into the current directory)
        let out = Command::new(LITMUS)
            .env("TESTS", suite)
            .current_dir(&ctx.tmp)
            .arg(&url)
            .output()
            .map_err(|e| format!("litmus: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let run = parse(&text);
        // "<- summary for `props': of 14 tests run: 11 passed, 3 failed. 78.6%"
        let count = |word: &str| -> Option<usize> {
            let summary = run.summary.as_deref()?;
            let before = summary.split(&format!(" {word}")).next()?;
            before.rsplit(' ').next()?.parse().ok()
        };
        let (passed, failed) = (count("passed").unwrap_or(0), count("failed").unwrap_or(0));
        let unexpected: Vec<&String> = run
            .fails
            .iter()
            .filter(|l| !allowed.iter().any(|a| l.contains(&format!(". {a}."))))
            .collect();
        ensure(
            unexpected.is_empty() && passed >= min_pass && failed == run.fails.len(),
            || {
                format!(
                    "litmus {suite}: {passed} passed (want at least {min_pass}), {failed} failed ({} FAIL lines read), failures other than SabreDAV's own {allowed:?}:\n    {}\n{}\n{}",
                    run.fails.len(),
                    unexpected
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("\n    "),
                    run.summary.as_deref().unwrap_or("(no summary line)"),
                    String::from_utf8_lossy(&out.stderr)
                )
            },
        )?;
        report.push(format!("{suite} {passed} passed, {failed} failed"));
    }
    if std::env::var_os("MFCGI_VERBOSE").is_some() {
        eprintln!("    litmus: {}", report.join(", "));
    }
    Ok(())
}

fn log_clean(ctx: &Ctx) -> Result<(), String> {
    installed(ctx)?;
    crate::apps::only_app_stderr(ctx, &[ID])
}
