//! A FastCGI application other than PHP, as sysadmins run them behind `FastCgiExternalServer`:
//! git's smart HTTP protocol, `git-http-backend` run by fcgiwrap (Debian's `fcgiwrap` and
//! `git`), reached through `ScriptAlias /git/ /usr/lib/git-core/git-http-backend/` with the
//! real program as the server's path, and driven by the real git client.
//!
//! It checks what git needs from a connector: a push of a pack of several MiB, which git sends
//! as a chunked request body (larger than `http.postBuffer`); fetch negotiations with many
//! `have` lines, which git sends gzip-compressed (`Content-Encoding: gzip`, inflated by
//! git-http-backend itself); responses of several MiB streamed back; Basic credentials on the
//! push only, with `REMOTE_USER` reaching the application (git-http-backend enables
//! receive-pack for an authenticated user and records the name in the reflog); a push
//! without credentials refused with 401. Both clones must end with the same commits and
//! bytes, and `git fsck` must find the repository whole.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::check::{ensure, p};
use crate::harness::{Builder, Ctx, Suite, test};
use crate::procs::{Endpoint, Server};
use crate::util::{self, Prng, q};

pub const SUITE: Suite = Suite {
    name: "git",
    setup,
    tests: &[
        test("git_smart_http_through_fcgiwrap", smart_http),
        test("git_log_clean", log_clean),
    ],
};

const ID: &str = "git";
const FCGIWRAP: &str = "/usr/sbin/fcgiwrap";
const BACKEND: &str = "/usr/lib/git-core/git-http-backend";
const USER: &str = "alice";
const PASSWORD: &str = "s3cret pass";

fn setup(b: &mut Builder) -> Result<(), String> {
    let root = b.tmp.join("git");
    let repos = root.join("repos");
    let run = root.join("run");
    for d in [&repos, &run, &root.join("home"), &root.join("work")] {
        util::mkdir_p(d)?;
    }
    let sock = run.join("fcgiwrap.sock");
    let htpasswd = root.join("htpasswd");
    let docroot = b.docroot("git")?;
    let body = format!(
        "SetEnv GIT_PROJECT_ROOT {repos}\n\
         SetEnv GIT_HTTP_EXPORT_ALL 1\n\
         ScriptAlias /git/ {backend}/\n\
         FastCgiExternalServer {backend} -socket {sock} -max-conns 4\n\
         <Directory {dir}>\n    Require all granted\n</Directory>\n\
         <Location /git/>\n    AuthType Basic\n    AuthName git\n    AuthUserFile {htpasswd}\n    \
         <If \"%{{QUERY_STRING}} =~ /service=git-receive-pack/ || %{{REQUEST_URI}} =~ m#/git-receive-pack$#\">\n        \
         Require valid-user\n    </If>\n</Location>\n",
        repos = q(p(&repos)),
        backend = BACKEND,
        sock = q(p(&sock)),
        dir = q(p(Path::new(BACKEND).parent().unwrap())),
        htpasswd = q(p(&htpasswd)),
    );
    let port = b.port()?;
    b.vhost(ID, port, "git.test", &docroot, &body);
    b.set("git_root", p(&root));
    Ok(())
}

/// The git client, with a configuration of its own (no user or system files).
fn git(ctx: &Ctx, dir: &Path, args: &[&str]) -> Command {
    let root = PathBuf::from(ctx.val("git_root"));
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", root.join("home"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "user.name=Tester",
            "-c",
            "user.email=tester@example.org",
            "-c",
            "init.defaultBranch=main",
            // the server's repository belongs to www-data, the client runs as root
            "-c",
            "safe.directory=*",
        ])
        .args(args);
    c
}

/// Runs git; its stderr when it fails (or when `want_ok` is false and it succeeds).
fn run_git(
    ctx: &Ctx,
    dir: &Path,
    args: &[&str],
    want_ok: bool,
) -> Result<(String, String), String> {
    let out = git(ctx, dir, args)
        .output()
        .map_err(|e| format!("git {args:?}: {e}"))?;
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    if out.status.success() != want_ok {
        return Err(format!(
            "git {} {}: {}\nstdout: {so}\nstderr: {se}",
            args.join(" "),
            if want_ok {
                "failed"
            } else {
                "succeeded where it must fail"
            },
            out.status
        ));
    }
    Ok((so, se))
}

/// `git fast-import` input: `n` commits on `branch`, each adding one small file (a history
/// with many commits, made in a moment).
/// Commit times start at `t0` (a clone's own commits newer than what the server has are the
/// `have`s a fetch sends first).
fn history(branch: &str, from: Option<&str>, n: usize, tag: &str, t0: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        let data = format!("{tag} file {i}\n");
        let msg = format!("{tag} commit {i}\n");
        s.push_str(&format!(
            "commit refs/heads/{branch}\ncommitter Tester <tester@example.org> {} +0000\ndata {}\n{msg}",
            t0 + i,
            msg.len()
        ));
        if let (0, Some(from)) = (i, from) {
            s.push_str(&format!("from {from}\n"));
        }
        s.push_str(&format!(
            "M 100644 inline {tag}/f{i}.txt\ndata {}\n{data}\n",
            data.len()
        ));
    }
    s.into_bytes()
}

fn fast_import(ctx: &Ctx, dir: &Path, stream: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut child = git(ctx, dir, &["fast-import", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("git fast-import: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stream)
        .map_err(|e| format!("git fast-import stdin: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("git fast-import: {e}"))?;
    ensure(out.status.success(), || {
        format!("git fast-import: {}", String::from_utf8_lossy(&out.stderr))
    })
}

fn start_fcgiwrap(ctx: &Ctx, root: &Path) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let (uid, gid) = util::user_ids("www-data").ok_or("no user www-data")?;
    util::run(
        Command::new("chown")
            .args(["-R", "www-data:www-data"])
            .arg(root.join("repos"))
            .arg(root.join("run")),
        "chown the git tree",
    )?;
    let sock = root.join("run/fcgiwrap.sock");
    let mut cmd = Command::new(FCGIWRAP);
    cmd.arg("-s")
        .arg(format!("unix:{}", p(&sock)))
        .arg("-c")
        .arg("4")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", root.join("run"))
        .uid(uid)
        .gid(gid);
    let mut server = Server::spawn("fcgiwrap", cmd, &root.join("run/fcgiwrap"))?;
    let ready = server.wait_ready(&[Endpoint::Unix(sock)], Duration::from_secs(10));
    ctx.extra.lock().unwrap().push(server);
    ready
}

fn smart_http(ctx: &Ctx) -> Result<(), String> {
    for f in [FCGIWRAP, BACKEND, "/usr/bin/git"] {
        ensure(Path::new(f).is_file(), || {
            format!("{f} missing: `make deps-test` installs Debian's fcgiwrap and git")
        })?;
    }
    let root = PathBuf::from(ctx.val("git_root"));
    let work = root.join("work");
    util::run(
        Command::new("htpasswd")
            .args(["-bc"])
            .arg(root.join("htpasswd"))
            .args([USER, PASSWORD]),
        "htpasswd",
    )?;
    run_git(
        ctx,
        &root.join("repos"),
        &["init", "-q", "--bare", "repo.git"],
        true,
    )?;
    run_git(
        ctx,
        &root.join("repos/repo.git"),
        &["config", "core.logAllRefUpdates", "true"],
        true,
    )?;
    start_fcgiwrap(ctx, &root)?;
    let port = ctx.vhost(ID).port;
    let url = format!("http://127.0.0.1:{port}/git/repo.git");
    let auth_url = format!(
        "http://{USER}:{}@127.0.0.1:{port}/git/repo.git",
        PASSWORD.replace(' ', "%20")
    );

    // an empty repository, cloned; then a history of 250 commits and a 6 MiB file
    run_git(ctx, &work, &["clone", "-q", &url, "a"], true)?;
    let a = work.join("a");
    fast_import(ctx, &a, &history("main", None, 250, "a", 1_700_000_000))?;
    let big = Prng::new(7).bytes(6 << 20);
    util::write_file(&a.join("big.bin"), &big)?;
    run_git(ctx, &a, &["reset", "-q", "--hard", "main"], true)?;
    run_git(ctx, &a, &["add", "big.bin"], true)?;
    run_git(ctx, &a, &["commit", "-q", "-m", "big"], true)?;

    // without credentials the push is refused (git-http-backend never sees it)
    let (_, refused) = run_git(ctx, &a, &["push", "-q", &url, "main"], false)?;
    ensure(
        refused.contains("401")
            || refused.contains("Authentication failed")
            || refused.contains("could not read Username"),
        || format!("a push without credentials failed otherwise than by a 401: {refused}"),
    )?;
    // with them: the pack goes up as a chunked request body
    let trace = run_traced(ctx, &a, &["push", "-q", &auth_url, "main"])?;
    ensure(
        trace.contains("Send header: Transfer-Encoding: chunked"),
        || {
            format!(
                "git did not send the pack chunked; the case is not tested: {}",
                tail_lines(&trace, 30)
            )
        },
    )?;
    let reflog = util::read_to_string_lossy(&root.join("repos/repo.git/logs/refs/heads/main"));
    ensure(reflog.contains(USER), || {
        format!("REMOTE_USER did not reach git-http-backend (reflog: {reflog:?})")
    })?;

    // a second clone: the same commits, the same bytes, a whole repository
    run_git(ctx, &work, &["clone", "-q", &url, "b"], true)?;
    let b = work.join("b");
    let head = |dir: &Path, rev: &str| -> Result<String, String> {
        Ok(run_git(ctx, dir, &["rev-parse", rev], true)?
            .0
            .trim()
            .to_string())
    };
    ensure(head(&a, "HEAD")? == head(&b, "HEAD")?, || {
        "the clone's HEAD is not the pushed one".to_string()
    })?;
    ensure(
        std::fs::read(b.join("big.bin")).ok().as_deref() == Some(&big[..]),
        || "big.bin differs in the clone".to_string(),
    )?;
    let (count, _) = run_git(ctx, &b, &["rev-list", "--count", "HEAD"], true)?;
    ensure(count.trim() == "251", || {
        format!("the clone has {} commits, want 251", count.trim())
    })?;

    // the clone gets 300 commits of its own (many `have`s in the next negotiation), the
    // first one pushes another commit, and the clone fetches it: gzip-compressed requests
    fast_import(
        ctx,
        &b,
        &history("local", Some("refs/heads/main"), 300, "b", 1_900_000_000),
    )?;
    util::write_file(&a.join("more.bin"), Prng::new(8).bytes(2 << 20))?;
    run_git(ctx, &a, &["add", "more.bin"], true)?;
    run_git(ctx, &a, &["commit", "-q", "-m", "more"], true)?;
    run_git(ctx, &a, &["push", "-q", &auth_url, "main"], true)?;
    let trace = run_traced(ctx, &b, &["fetch", "-q", "origin"])?;
    ensure(
        trace.contains("Send header: Content-Encoding: gzip"),
        || {
            format!(
                "git sent no gzip-compressed request; the case is not tested: {}",
                tail_lines(&trace, 30)
            )
        },
    )?;
    ensure(head(&a, "HEAD")? == head(&b, "origin/main")?, || {
        "the fetch did not bring the new commit".to_string()
    })?;
    run_git(ctx, &b, &["fsck", "--no-progress", "--strict"], true)?;
    run_git(
        ctx,
        &root.join("repos/repo.git"),
        &["fsck", "--no-progress", "--strict"],
        true,
    )?;
    Ok(())
}

/// Runs git with curl's trace of the headers it sends (on stderr); the trace, or an error
/// with its end if git failed.
fn run_traced(ctx: &Ctx, dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = git(ctx, dir, args)
        .env("GIT_TRACE_CURL", "1")
        .env("GIT_TRACE_CURL_NO_DATA", "1")
        .output()
        .map_err(|e| format!("git {}: {e}", args.join(" ")))?;
    let trace = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure(out.status.success(), || {
        format!("git {} failed: {}", args.join(" "), tail_lines(&trace, 30))
    })?;
    Ok(trace)
}

fn tail_lines(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

fn log_clean(ctx: &Ctx) -> Result<(), String> {
    crate::apps::only_app_stderr(ctx, &[ID])
}
