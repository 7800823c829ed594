//! Issue #4, the connection pool, through real Apache + php-fpm (and scripted FastCGI backends):
//!
//! * `pool_reuse_*` – 1000 sequential requests on one client connection open only as many
//!   backend connections as Apache processes served them (counted by a relay in front of
//!   php-fpm, and by a scripted backend), and `-keep-conn off` opens one per request.
//! * `pool_large_responses_no_delayed_ack_stall` – 1 MiB php-fpm responses on kept TCP
//!   connections, 4 clients: no request waits out a delayed ACK (40 ms).
//! * `pool_backend_ignores_keep_conn` – backends that ignore FCGI_KEEP_CONN (close after the
//!   response, or a little later) cause no error.
//! * `pool_stale_conn_replay_without_stall` – a backend that reads the next request on a kept
//!   connection and closes: every reuse is replayed, without error and without stalling.
//! * `pool_fpm_max_requests_recycling` – php-fpm `pm.max_requests` closing kept connections.
//! * `pool_fpm_ondemand` – php-fpm `pm = ondemand` stopping and starting workers.
//! * `pool_capped_keeps_connections_when_accepts_lag` – with `-max-conns`, an application
//!   slow to accept new connections (a loaded CPU) must not make the pool reconnect.
//! * `pool_fpm_reload_and_restart_under_load` – php-fpm `SIGUSR2` and stop/start under load.
//! * `pool_graceful_restarts_no_fd_leak` – a dedicated Apache, graceful restarts under load:
//!   fds of the parent and children, connections left open to php-fpm.
//! * `pool_starvation` – a dedicated Apache (prefork: 16 processes; event/worker: 4 processes)
//!   and a `pm=static`, `pm.max_children=4` pool with a 5 ms script, 32 clients: with
//!   `-max-conns 4` no error, no slow request, every process served, never more than 4
//!   connections; the same load in guard-only mode (`-keep-conn on`, no `-max-conns`): no
//!   error, no slow request, every process served (its connection count and php-fpm's listen
//!   queue are reported: without a cap they are not bounded).
//! * `pool_graceful_restart_lingering_child_idle_conns` – after a graceful restart, a child of
//!   the old generation that is still busy (a slow client) must not keep php-fpm workers bound
//!   to its idle pooled connections while the new generation's requests wait for one.
//! * `pool_killed_child_releases_its_slots` – a child killed while it holds pooled connections
//!   (crash, OOM killer) must not keep their `-max-conns` slots forever.
//! * `pool_shared_backend_two_definitions` – two `FastCgiExternalServer` definitions (two
//!   virtual paths, two vhosts) in front of one php-fpm pool: a request of one must not wait
//!   in php-fpm's backlog behind workers held by the other's idle pooled connections.
//! * `pool_capped_above_app_capacity_sequential` – `-max-conns 4` in front of php-fpm with one
//!   worker: a sequential client whose requests land on different Apache processes must not
//!   wait the loaded-CPU delay (ASK_AFTER_CAPPED) behind the worker another process holds idle.
//!
//! Environment: `MFCGI_STARVATION_SECS` (default 20, as issue #4 asks) – duration of the
//! `-max-conns` starvation run (the guard-only run lasts at most 10 s);
//! `MFCGI_POOL_RESTARTS` (default 20) – graceful restarts in the fd test.
//! Every test prints one `pool:` line with its measurements.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::apache::ApacheConf;
use crate::check::{bad_log_lines, ensure, expect_status, p};
use crate::fpm::Pool;
use crate::harness::{Builder, Ctx, Suite, test};
use crate::http::{Conn, Request, Response, roundtrip_ka};
use crate::pool_fcgi::{
    FakeFcgi, KeepMode, Relay, backend_sockets, backend_sockets_at, fnv64, fpm_status,
    fpm_status_at,
};
use crate::pool_inst::{
    self as inst, Apache, CheckResp, Load, MakeReq, Outcome, Sampler, latency, ms,
};
use crate::procs::{self, Endpoint};
use crate::util::{self, Prng, q};

pub const SUITE: Suite = Suite {
    name: "pool",
    setup,
    tests: &[
        test("pool_reuse_1000_sequential_php_fpm", reuse_php_fpm),
        test("pool_reuse_1000_sequential_scripted", reuse_scripted),
        test(
            "pool_large_responses_no_delayed_ack_stall",
            large_responses_no_stall,
        ),
        test("pool_backend_ignores_keep_conn", backend_ignores_keep_conn),
        test("pool_ipv6_php_fpm", ipv6_php_fpm),
        test("pool_stale_conn_replay_without_stall", stale_conn_replay),
        test(
            "pool_reused_conn_dies_mid_script_not_replayed",
            dies_mid_script_not_replayed,
        ),
        test("pool_fpm_max_requests_recycling", fpm_max_requests),
        test("pool_fpm_ondemand", fpm_ondemand),
        test(
            "pool_capped_keeps_connections_when_accepts_lag",
            capped_keeps_connections,
        ),
        test(
            "pool_fpm_reload_and_restart_under_load",
            fpm_reload_and_restart,
        ),
        test(
            "pool_graceful_restarts_no_fd_leak",
            graceful_restarts_no_fd_leak,
        ),
        test(
            "pool_finish_request_tail_not_waited_for",
            finish_request_tail_not_waited_for,
        ),
        test("pool_starvation", starvation),
        test(
            "pool_graceful_restart_lingering_child_idle_conns",
            lingering_child_idle_conns,
        ),
        test(
            "pool_killed_child_releases_its_slots",
            killed_child_releases_slots,
        ),
        test(
            "pool_killed_child_leaves_no_waiting_request",
            killed_child_with_waiting_request,
        ),
        test(
            "pool_capped_above_app_capacity_sequential",
            capped_above_capacity_sequential,
        ),
        test(
            "pool_shared_backend_two_definitions",
            shared_backend_two_definitions,
        ),
        test(
            "pool_outside_client_not_starved",
            outside_client_not_starved,
        ),
        test("pool_mpm_itk_one_connection_per_request", mpm_itk),
        test("pool_remote_application", remote_application),
    ],
};

/// Backends started in `setup` (they live as long as the test process).
struct State {
    relay_reuse: Relay,
    relay_noreuse: Relay,
    /// On [::1], to php-fpm listening on [::1] only.
    relay_v6: Relay,
    fake_keep: FakeFcgi,
    fake_close: FakeFcgi,
    fake_delay: FakeFcgi,
    fake_next: FakeFcgi,
    fake_late: FakeFcgi,
    fake_dies: FakeFcgi,
}

static STATE: OnceLock<State> = OnceLock::new();

fn state() -> &'static State {
    STATE.get().expect("pool suite setup did not run")
}

const HELLO_PHP: &str = "<?php\nheader('Content-Type: text/plain');\necho 'hello from php-fpm ', str_repeat('.', 70), \"\\n\";\n";
/// 1 MiB in 64 KiB echos: php-fpm sends each as a record of its own, in two writes.
const MIB_PHP: &str = "<?php\nheader('Content-Type: application/octet-stream');\n$piece = str_repeat('0123456789abcdef', 4096);\nfor ($i = 0; $i < 16; $i++) { echo $piece; }\n";
const SLEEP_PHP: &str = "<?php\n$ms = isset($_GET['ms']) ? (int)$_GET['ms'] : 5;\nusleep($ms * 1000);\nheader('Content-Type: text/plain');\necho \"slept\\n\";\n";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// mod_fastcgi's classic chain (AddType + Action + Alias) to a virtual path below `fcgi_dir`.
fn php_chain(fcgi_dir: &Path, id: &str, target: &str, opts: &str) -> String {
    let vpath = fcgi_dir.join(format!("{id}.fcgi"));
    format!(
        "DirectoryIndex index.php\n\
         AddType application/x-httpd-fastphp5 .php\n\
         Action application/x-httpd-fastphp5 /php5.fcgi\n\
         Alias /php5.fcgi {vp}\n\
         FastCgiExternalServer {vp} -host {target} {opts}\n\
         <Directory {d}>\n    Require all granted\n</Directory>\n",
        vp = q(p(&vpath)),
        d = q(format!("{}/", p(fcgi_dir))),
    )
}

/// Every URL below `/fake` goes to a scripted backend.
fn fake_chain(fcgi_dir: &Path, id: &str, port: u16, opts: &str) -> String {
    let vpath = fcgi_dir.join(format!("{id}.fcgi"));
    format!(
        "Alias /fake {vp}\n\
         FastCgiExternalServer {vp} -host 127.0.0.1:{port} {opts}\n\
         <Directory {d}>\n    Require all granted\n</Directory>\n",
        vp = q(p(&vpath)),
        d = q(format!("{}/", p(fcgi_dir))),
    )
}

fn tcp_pool(name: &str, port: u16, extra: &[&str]) -> Pool {
    let mut pl = Pool::new(name, "www-data", "www-data", Endpoint::Tcp(port));
    pl.extra = extra.iter().map(|s| s.to_string()).collect();
    pl
}

fn setup(b: &mut Builder) -> Result<(), String> {
    let tmp = b.tmp.clone();
    let d = b.docroot("pool")?;
    util::write_file(&d.join("hello.php"), HELLO_PHP)?;
    util::write_file(&d.join("sleep.php"), SLEEP_PHP)?;
    util::write_file(&d.join("mib.php"), MIB_PHP)?;
    let marks = tmp.join("tail-marks");
    util::mkdir_p(&marks)?;
    util::chmod(&marks, 0o777)?;
    util::write_file(&d.join("tail.php"), TAIL_PHP.replace("@MARKS@", &p(&marks)))?;
    let fcgi_dir = tmp.join("pool-fcgi"); // never created
    b.set("pool_fcgi_dir", p(&fcgi_dir));
    b.set("pool_docroot", p(&d));

    // php-fpm pools on the shared master (pm=static, 4 children each)
    let status = "pm.status_path = /fpm-status";
    let pool_port = |b: &mut Builder, name: &str, extra: &[&str]| -> Result<u16, String> {
        let port = b.port()?;
        b.pool(tcp_pool(name, port, extra));
        b.set(&format!("{name}_port"), port);
        Ok(port)
    };
    let reuse_port = pool_port(b, "pool_reuse", &[status])?;
    let maxreq_port = pool_port(b, "pool_maxreq", &[status, "pm.max_requests = 7"])?;
    pool_port(b, "pool_starve_cap", &[status])?;
    pool_port(b, "pool_starve_guard", &[status])?;
    pool_port(b, "pool_fd", &[status])?;
    pool_port(b, "pool_edge", &[status])?;
    // pm = ondemand (no worker until a connection waits; idle workers stopped after 1 s)
    let ondemand_port = b.port()?;
    let mut od = tcp_pool(
        "pool_ondemand",
        ondemand_port,
        &["pm.process_idle_timeout = 1s", status],
    );
    od.pm = "ondemand";
    b.pool(od);
    b.set("pool_ondemand_port", ondemand_port);
    // one worker only, under a cap of 4 (an application smaller than -max-conns)
    let single_port = b.port()?;
    let mut single = tcp_pool("pool_single", single_port, &[]);
    single.max_children = 1;
    b.pool(single);
    // two workers, in front of which two definitions (vhosts pool_shared_a and _b) pool
    let shared_port = b.port()?;
    let mut shared = tcp_pool("pool_shared", shared_port, &[]);
    shared.max_children = 2;
    b.pool(shared);
    b.set("pool_shared_port", shared_port);
    // two workers on a unix socket, pooled by one definition; other clients reach it directly
    let outside_sock = tmp.join("run/pool-outside.sock");
    let mut outside = Pool::new(
        "pool_outside_unix",
        "www-data",
        "www-data",
        Endpoint::Unix(outside_sock.clone()),
    );
    outside.max_children = 2;
    b.pool(outside);
    b.set("pool_outside_sock", p(&outside_sock));
    // its own workers: an idle connection of another definition holds one of pool_reuse's
    let large_port = pool_port(b, "pool_large", &[])?;
    let tail_port = pool_port(b, "pool_tail_tcp", &[])?;
    let tail_sock = tmp.join("run/pool-tail.sock");
    b.pool(Pool::new(
        "pool_tail_unix",
        "www-data",
        "www-data",
        Endpoint::Unix(tail_sock.clone()),
    ));
    // a pool listening on the IPv6 loopback address only
    let v6_port = b.port()?;
    b.pool(Pool::new(
        "pool_v6",
        "www-data",
        "www-data",
        Endpoint::Tcp6(v6_port),
    ));
    b.set("pool_v6_port", v6_port);
    // php-fpm of the reload/restart test: a dedicated master started by the test itself
    let restart_port = b.port()?;
    b.set("pool_restart_port", restart_port);

    let upstream = SocketAddr::from(([127, 0, 0, 1], reuse_port));
    // (ports from the harness' reserved set: a bind to port 0 could take one of those)
    let st = State {
        relay_reuse: Relay::start(b.port()?, upstream)?,
        relay_noreuse: Relay::start(b.port()?, upstream)?,
        relay_v6: Relay::start_on(
            Ipv6Addr::LOCALHOST.into(),
            b.port()?,
            SocketAddr::from((Ipv6Addr::LOCALHOST, v6_port)),
        )?,
        fake_keep: FakeFcgi::start(b.port()?, KeepMode::Honor)?,
        fake_close: FakeFcgi::start(b.port()?, KeepMode::CloseAfterResponse)?,
        fake_delay: FakeFcgi::start(b.port()?, KeepMode::CloseAfterDelay(2))?,
        fake_next: FakeFcgi::start(b.port()?, KeepMode::CloseOnNextRequest)?,
        fake_late: FakeFcgi::start(b.port()?, KeepMode::HonorAcceptingLate(8))?,
        fake_dies: FakeFcgi::start(b.port()?, KeepMode::DiesMidScript(200))?,
    };

    let vhosts: Vec<(&str, String)> = vec![
        (
            "pool_reuse",
            php_chain(
                &fcgi_dir,
                "pool_reuse",
                &format!("127.0.0.1:{}", st.relay_reuse.port),
                "-max-conns 4",
            ),
        ),
        (
            "pool_noreuse",
            php_chain(
                &fcgi_dir,
                "pool_noreuse",
                &format!("127.0.0.1:{}", st.relay_noreuse.port),
                "-keep-conn off",
            ),
        ),
        // IPv6: through the counting relay, and straight to php-fpm with and without the pool
        (
            "pool_v6",
            php_chain(
                &fcgi_dir,
                "pool_v6",
                &format!("[::1]:{}", st.relay_v6.port),
                "-max-conns 4",
            ),
        ),
        (
            "pool_v6_direct",
            php_chain(
                &fcgi_dir,
                "pool_v6_direct",
                &format!("[::1]:{v6_port}"),
                "-max-conns 4",
            ),
        ),
        (
            "pool_v6_off",
            php_chain(
                &fcgi_dir,
                "pool_v6_off",
                &format!("[::1]:{v6_port}"),
                "-keep-conn off",
            ),
        ),
        // php-fpm over TCP directly (no relay: the relay would change the TCP exchange)
        (
            "pool_large",
            php_chain(
                &fcgi_dir,
                "pool_large",
                &format!("127.0.0.1:{large_port}"),
                "-max-conns 4",
            ),
        ),
        (
            "pool_tail_tcp",
            php_chain(
                &fcgi_dir,
                "pool_tail_tcp",
                &format!("127.0.0.1:{tail_port}"),
                "-max-conns 4",
            ),
        ),
        (
            "pool_tail_unix",
            php_chain(&fcgi_dir, "pool_tail_unix", "", "-max-conns 4")
                .replace("-host  ", &format!("-socket {} ", q(p(&tail_sock)))),
        ),
        (
            "pool_ondemand",
            php_chain(
                &fcgi_dir,
                "pool_ondemand",
                &format!("127.0.0.1:{ondemand_port}"),
                "-max-conns 4",
            ),
        ),
        (
            "pool_maxreq",
            php_chain(
                &fcgi_dir,
                "pool_maxreq",
                &format!("127.0.0.1:{maxreq_port}"),
                "-max-conns 4",
            ),
        ),
        (
            "pool_fake_keep",
            fake_chain(
                &fcgi_dir,
                "pool_fake_keep",
                st.fake_keep.port,
                "-max-conns 4",
            ),
        ),
        (
            "pool_fake_close",
            fake_chain(
                &fcgi_dir,
                "pool_fake_close",
                st.fake_close.port,
                "-max-conns 4",
            ),
        ),
        (
            "pool_fake_late",
            fake_chain(
                &fcgi_dir,
                "pool_fake_late",
                st.fake_late.port,
                &format!("-max-conns {LATE_CAP}"),
            ),
        ),
        (
            "pool_fake_delay",
            fake_chain(
                &fcgi_dir,
                "pool_fake_delay",
                st.fake_delay.port,
                "-max-conns 4",
            ),
        ),
        (
            "pool_fake_next",
            fake_chain(
                &fcgi_dir,
                "pool_fake_next",
                st.fake_next.port,
                "-max-conns 4",
            ),
        ),
        (
            "err_pool_fake_dies",
            fake_chain(
                &fcgi_dir,
                "err_pool_fake_dies",
                st.fake_dies.port,
                "-max-conns 4",
            ),
        ),
        (
            "pool_single",
            php_chain(
                &fcgi_dir,
                "pool_single",
                &format!("127.0.0.1:{single_port}"),
                "-max-conns 4",
            ),
        ),
        (
            "pool_shared_a",
            php_chain(
                &fcgi_dir,
                "pool_shared_a",
                &format!("127.0.0.1:{shared_port}"),
                "-max-conns 2",
            ),
        ),
        (
            "pool_shared_b",
            php_chain(
                &fcgi_dir,
                "pool_shared_b",
                &format!("127.0.0.1:{shared_port}"),
                "-max-conns 2",
            ),
        ),
        (
            "pool_outside_unix",
            php_chain(&fcgi_dir, "pool_outside_unix", "", "-max-conns 2")
                .replace("-host  ", &format!("-socket {} ", q(p(&outside_sock)))),
        ),
        (
            "pool_shared_off",
            php_chain(
                &fcgi_dir,
                "pool_shared_off",
                &format!("127.0.0.1:{shared_port}"),
                "-keep-conn off",
            ),
        ),
        // 502/503 are expected while php-fpm restarts: `err_` keeps it out of error_logs_clean
        (
            "err_pool_restart",
            php_chain(
                &fcgi_dir,
                "err_pool_restart",
                &format!("127.0.0.1:{restart_port}"),
                "-max-conns 4",
            ),
        ),
    ];
    // name-based, all on one port (the harness hands out a limited batch of ports)
    let port = b.port()?;
    for (id, body) in vhosts {
        b.vhost(
            id,
            port,
            &format!("{}.test", id.replace('_', "-")),
            &d,
            &body,
        );
    }
    STATE
        .set(st)
        .map_err(|_| "pool suite setup ran twice".to_string())?;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// helpers

fn lines_with(path: &Path, from: u64, needle: &str) -> Vec<String> {
    util::read_from(path, from)
        .lines()
        .filter(|l| l.contains(needle))
        .map(|l| l.to_string())
        .collect()
}

/// Module error lines (`[fastcgi:error]` and worse) and crashes in a log since `from`.
fn module_errors(path: &Path, from: u64) -> Vec<String> {
    bad_log_lines(path, from)
}

fn check_hello(_: &Request, r: &Response) -> Result<(), String> {
    ensure(r.text().starts_with("hello from php-fpm"), || {
        format!("unexpected body: {}", r.summary())
    })
}

fn check_slept(_: &Request, r: &Response) -> Result<(), String> {
    ensure(r.text() == "slept\n", || {
        format!("unexpected body: {}", r.summary())
    })
}

/// Checks a scripted backend's answer against the request that was sent.
fn check_fake(req: &Request, r: &Response) -> Result<(), String> {
    let kv = r.kv();
    let want_len = req.body.len().to_string();
    let want_fnv = format!("{:016x}", fnv64(&req.body));
    let uri = req.target.as_str();
    ensure(
        kv.get("MARKER").map(String::as_str) == Some("fake-fcgi")
            && kv.get("STDIN_LEN") == Some(&want_len)
            && kv.get("STDIN_FNV") == Some(&want_fnv)
            && kv.get("URI").map(String::as_str) == Some(uri),
        || {
            format!(
                "answer does not match the request {} {} ({} body bytes): {}",
                req.method,
                uri,
                req.body.len(),
                r.summary()
            )
        },
    )
}

/// `n` requests one after the other on one keep-alive connection (re-opened only after the
/// server closed it between requests).
fn sequential(
    ctx: &Ctx,
    id: &str,
    n: usize,
    make: &dyn Fn(usize) -> Request,
    check: fn(&Request, &Response) -> Result<(), String>,
) -> Result<usize, String> {
    let v = ctx.vhost(id);
    let mut conn = ctx.connect(id)?;
    let mut reconnects = 0;
    for i in 0..n {
        if conn.closed {
            conn = Conn::connect(v.port).map_err(|e| e.to_string())?;
            reconnects += 1;
        }
        let req = make(i).host(&v.server_name);
        let (r, retried) = roundtrip_ka(&mut conn, v.port, &req)
            .map_err(|e| format!("request {i} ({}): {e}", req.target))?;
        reconnects += retried as usize;
        expect_status(&r, 200).map_err(|e| format!("request {i} ({}): {e}", req.target))?;
        check(&req, &r).map_err(|e| format!("request {i}: {e}"))?;
    }
    Ok(reconnects)
}

fn load_report(outcomes: &[Outcome], secs: f64) -> String {
    let ok: Vec<Outcome> = outcomes
        .iter()
        .filter(|o| o.error.is_none())
        .cloned()
        .collect();
    let l = latency(&ok);
    let all = latency(outcomes);
    format!(
        "{} requests ({:.0}/s), {} errors, p50 {} p99 {} max {} (max incl. errors {})",
        outcomes.len(),
        outcomes.len() as f64 / secs,
        outcomes.len() - ok.len(),
        ms(l.p50),
        ms(l.p99),
        ms(l.max),
        ms(all.max)
    )
}

/// No request against an instant backend should take this long.
const SLOW: Duration = Duration::from_secs(2);

/// Fails with the first of them if Apache took SLOW or more to serve requests of `id` (see
/// `slow_requests`).
fn no_slow_requests(ctx: &Ctx, id: &str, from: u64) -> Result<(), String> {
    let slow = slow_requests(ctx, id, from, SLOW);
    ensure(slow.is_empty(), || {
        format!(
            "{} requests took Apache over {}: {:?}",
            slow.len(),
            ms(SLOW),
            &slow[..slow.len().min(6)]
        )
    })
}

/// Requests of a vhost that Apache took `limit` or more to serve (`%D` in the access log: the
/// time a client waits for a prefork child to be spawned does not count).
fn slow_requests(ctx: &Ctx, id: &str, from: u64, limit: Duration) -> Vec<String> {
    let v = ctx.vhost(id);
    inst::served(
        &ctx.apache_conf.access_log(),
        &format!("{}:{}", v.server_name, v.port),
        from,
    )
    .into_iter()
    .filter(|s| s.took >= limit)
    .map(|s| {
        format!(
            "{:?} took {} (status {}, pid {})",
            s.request,
            ms(s.took),
            s.status,
            s.pid
        )
    })
    .collect()
}

fn first_errors(outcomes: &[Outcome], n: usize) -> Vec<String> {
    outcomes
        .iter()
        .filter_map(|o| {
            o.error
                .as_ref()
                .map(|e| format!("t={:.3}s+{} {e}", o.start.as_secs_f64(), ms(o.took())))
        })
        .take(n)
        .collect()
}

// ------------------------------------------------------------------------------------------
// 1. reuse

/// Answers at once, then runs on after fastcgi_finish_request() for `ms` milliseconds (as
/// WordPress's wp-cron.php and Laravel's jobs after the response do), then writes the file
/// `mark` (a plain name) in the directory @MARKS@.
const TAIL_PHP: &str = "<?php\necho \"done\\n\";\nfastcgi_finish_request();\nusleep((int)$_GET['ms'] * 1000);\nfile_put_contents('@MARKS@/' . basename($_GET['mark']), 'tail ran');\n";

/// A script that goes on after fastcgi_finish_request() keeps its php-fpm worker busy while its
/// connection, whose request has ended, is back in the pool. The next request must not be sent
/// over that connection (it would wait for the end of the script): over TCP and over a unix
/// socket, a 1.5 s tail is followed at once by 6 requests on the same client connection (so the
/// same Apache process and pool), each answered well before the tail ends; the tail itself runs
/// to its end. Before the check (`Conn::app_busy`), the first of them took the 1.5 s.
fn finish_request_tail_not_waited_for(ctx: &Ctx) -> Result<(), String> {
    const TAIL_MS: u64 = 1500;
    for id in ["pool_tail_tcp", "pool_tail_unix"] {
        let v = ctx.vhost(id);
        let mark = ctx.tmp.join("tail-marks").join(id);
        let _ = std::fs::remove_file(&mark);
        let mut conn = ctx.connect(id)?;
        let mut ask = |target: String| -> Result<(Response, Duration), String> {
            let req = Request::get(&target).host(&v.server_name);
            let t0 = Instant::now();
            let (r, _) = roundtrip_ka(&mut conn, v.port, &req)
                .map_err(|e| format!("{id}: {target}: {e}"))?;
            expect_status(&r, 200).map_err(|e| format!("{id}: {target}: {e}"))?;
            Ok((r, t0.elapsed()))
        };
        // warm the pool: connections whose workers are back waiting
        for i in 0..4 {
            let (r, _) = ask(format!("/hello.php?run=tail-warm&i={i}"))?;
            check_hello(&Request::get("/"), &r)?;
        }
        let t0 = Instant::now();
        let (r, took) = ask(format!("/tail.php?ms={TAIL_MS}&mark={id}"))?;
        ensure(r.text() == "done\n", || {
            format!("{id}: tail.php answered {}", r.summary())
        })?;
        ensure(took < Duration::from_millis(TAIL_MS / 2), || {
            format!(
                "{id}: tail.php took {} (fastcgi_finish_request did not end the response)",
                ms(took)
            )
        })?;
        let mut slowest = Duration::ZERO;
        for i in 0..6 {
            let (r, took) = ask(format!("/hello.php?run=tail&i={i}"))?;
            check_hello(&Request::get("/"), &r)?;
            slowest = slowest.max(took);
        }
        let after = t0.elapsed();
        // the tail did run, to its end (else the test would prove nothing)
        let ran = (0..(TAIL_MS + 3000) / 20).any(|_| {
            mark.exists() || {
                thread::sleep(Duration::from_millis(20));
                false
            }
        });
        println!(
            "    pool: {id}: 6 requests right after a {TAIL_MS} ms tail: slowest {}, all done {} after the tail began; tail finished: {ran}",
            ms(slowest),
            ms(after)
        );
        ensure(ran, || {
            format!("{id}: the script's tail never wrote {}", p(&mark))
        })?;
        ensure(slowest < Duration::from_millis(TAIL_MS / 2), || {
            format!(
                "{id}: a request after the tail took {} (it waited for the php-fpm worker still running the script)",
                ms(slowest)
            )
        })?;
    }
    Ok(())
}

/// 1000 sequential requests on one client connection through `-max-conns 4` to php-fpm open
/// only as many backend connections as Apache processes served them (normally one);
/// `-keep-conn off` opens one per request (which also proves the relay counts).
fn reuse_php_fpm(ctx: &Ctx) -> Result<(), String> {
    let st = state();
    let v = ctx.vhost("pool_reuse");
    let access = ctx.apache_conf.access_log();
    let log_off = util::file_len(&access);
    let before = st.relay_reuse.count();
    let reconnects = sequential(
        ctx,
        "pool_reuse",
        1000,
        &|i| Request::get(&format!("/hello.php?run=reuse&i={i}")),
        check_hello,
    )?;
    thread::sleep(Duration::from_millis(100));
    let opened = st.relay_reuse.count() - before;
    let pids = inst::per_pid(&access, &format!("{}:{}", v.server_name, v.port), log_off);
    let served: usize = pids.values().map(|c| c.0).sum();
    println!(
        "    pool: reuse php-fpm: 1000 requests (client reconnects {reconnects}), served by {} Apache process(es), {opened} backend connection(s) opened",
        pids.len()
    );
    ensure(served == 1000, || {
        format!(
            "access log shows {served} requests for {}, expected 1000",
            v.server_name
        )
    })?;
    ensure(opened >= 1 && opened <= pids.len(), || {
        format!(
            "{opened} backend connections for 1000 sequential requests served by {} Apache process(es) {pids:?}",
            pids.len()
        )
    })?;

    // control: one connection per request with -keep-conn off
    let before = st.relay_noreuse.count();
    sequential(
        ctx,
        "pool_noreuse",
        100,
        &|i| Request::get(&format!("/hello.php?run=noreuse&i={i}")),
        check_hello,
    )?;
    thread::sleep(Duration::from_millis(100));
    let opened = st.relay_noreuse.count() - before;
    ensure(opened == 100, || {
        format!("-keep-conn off: {opened} backend connections for 100 requests, expected 100")
    })
}

/// Large responses on kept TCP connections to php-fpm must not stall on delayed ACKs. Linux
/// treats a connection that carries request, answer, request, ... as interactive and delays
/// its ACKs; php-fpm writes a large answer in several writes without TCP_NODELAY, so Nagle
/// holds the last small segment of a write until our ACK comes: 40 ms (the minimum
/// delayed-ACK timeout) where the whole transfer takes a few ms. It shows under concurrency,
/// when the receiving Apache thread does not read each segment at once (before the fix: 9% of
/// these requests took 40 ms or more, p99 48 ms; after: none, p99 5 ms).
fn large_responses_no_stall(ctx: &Ctx) -> Result<(), String> {
    let v = ctx.vhost("pool_large");
    let host = v.server_name.clone();
    let make: MakeReq =
        Arc::new(move |t, n| Request::get(&format!("/mib.php?t={t}&n={n}")).host(&host));
    let check: CheckResp = Arc::new(|_, r: &Response| {
        ensure(r.body.len() == 1 << 20, || {
            format!("{} body bytes, expected 1 MiB", r.body.len())
        })
    });
    // 4 clients, as many as php-fpm has workers and -max-conns allows: nobody waits for a slot
    let load = Load::start(v.port, 4, true, make, check);
    thread::sleep(Duration::from_secs(3));
    let outcomes = load.finish();
    let l = latency(&outcomes);
    let slow = outcomes
        .iter()
        .filter(|o| o.took() >= Duration::from_millis(40))
        .count();
    println!(
        "    pool: 1 MiB responses over kept TCP connections, 4 clients: {}; {slow} took 40 ms or more",
        load_report(&outcomes, 3.0)
    );
    let errs = first_errors(&outcomes, 5);
    ensure(errs.is_empty(), || format!("failed requests: {errs:?}"))?;
    ensure(l.n >= 100, || {
        format!("only {} requests completed in 3 s", l.n)
    })?;
    ensure(slow * 100 <= l.n, || {
        format!(
            "{slow} of {} 1 MiB responses took 40 ms or more (delayed-ACK stalls; p50 {}, p99 {})",
            l.n,
            ms(l.p50),
            ms(l.p99)
        )
    })
}

/// The same against a scripted backend that honours FCGI_KEEP_CONN and pads its records.
fn reuse_scripted(ctx: &Ctx) -> Result<(), String> {
    let fake = &state().fake_keep;
    let v = ctx.vhost("pool_fake_keep");
    let access = ctx.apache_conf.access_log();
    let log_off = util::file_len(&access);
    let (acc0, ans0, keep0, _) = fake.stats.snapshot();
    let mut body_rng = Prng::new(4);
    let bodies: Vec<Vec<u8>> = (0..8).map(|i| body_rng.bytes(100 + i * 997)).collect();
    sequential(
        ctx,
        "pool_fake_keep",
        1000,
        &|i| {
            if i % 5 == 4 {
                Request::post(&format!("/fake/p?i={i}"), bodies[i % 8].clone())
            } else {
                Request::get(&format!("/fake/g?i={i}"))
            }
        },
        check_fake,
    )?;
    thread::sleep(Duration::from_millis(100));
    let (acc, ans, keep, _) = fake.stats.snapshot();
    let (acc, ans, keep) = (acc - acc0, ans - ans0, keep - keep0);
    let pids = inst::per_pid(&access, &format!("{}:{}", v.server_name, v.port), log_off);
    println!(
        "    pool: reuse scripted: 1000 requests served by {} Apache process(es), {acc} backend connection(s), {keep} with KEEP_CONN",
        pids.len()
    );
    let errs = fake.stats.errors();
    ensure(errs.is_empty(), || {
        format!("the scripted backend saw protocol errors: {errs:?}")
    })?;
    ensure(ans == 1000 && keep == 1000, || {
        format!("backend answered {ans} requests, {keep} with FCGI_KEEP_CONN; expected 1000/1000")
    })?;
    ensure(acc >= 1 && acc <= pids.len(), || {
        format!(
            "{acc} backend connections for 1000 sequential requests served by {} process(es)",
            pids.len()
        )
    })
}

/// IPv6 (`-host [::1]:port`): php-fpm listening on the IPv6 loopback address only. Through a
/// counting relay on [::1], 200 sequential requests open at most one connection per Apache
/// process; straight to php-fpm, pooled and with one connection per request, every answer is
/// php-fpm's. (An IPv4-only build of the connector fails all three: nothing listens on
/// 127.0.0.1 at these ports.)
fn ipv6_php_fpm(ctx: &Ctx) -> Result<(), String> {
    let relay = &state().relay_v6;
    let v = ctx.vhost("pool_v6");
    let access = ctx.apache_conf.access_log();
    let log_off = util::file_len(&access);
    let before = relay.count();
    sequential(
        ctx,
        "pool_v6",
        200,
        &|i| Request::get(&format!("/hello.php?run=v6&i={i}")),
        check_hello,
    )?;
    thread::sleep(Duration::from_millis(100));
    let opened = relay.count() - before;
    let pids = inst::per_pid(&access, &format!("{}:{}", v.server_name, v.port), log_off);
    println!(
        "    pool: IPv6: 200 requests to [::1] served by {} Apache process(es), {opened} backend connection(s) opened",
        pids.len()
    );
    ensure(opened >= 1 && opened <= pids.len(), || {
        format!(
            "{opened} backend connections over IPv6 for 200 sequential requests served by {} Apache process(es) {pids:?}",
            pids.len()
        )
    })?;
    for id in ["pool_v6_direct", "pool_v6_off"] {
        sequential(
            ctx,
            id,
            50,
            &|i| Request::get(&format!("/hello.php?run={id}&i={i}")),
            check_hello,
        )?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// 4. backends that ignore FCGI_KEEP_CONN

fn fake_requests() -> (MakeReq, CheckResp) {
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..4)
            .map(|i| Prng::new(40 + i).bytes(1000 + 333 * i as usize))
            .collect(),
    );
    let make: MakeReq = Arc::new(move |t, n| {
        if n % 3 == 2 {
            Request::post(
                &format!("/fake/c?t={t}&n={n}"),
                bodies[(n % 4) as usize].clone(),
            )
        } else {
            Request::get(&format!("/fake/c?t={t}&n={n}"))
        }
    });
    (make, Arc::new(check_fake))
}

/// Test 4 of the issue: a backend that ignores FCGI_KEEP_CONN and closes after each response
/// (right after END_REQUEST, or 2 ms later, when the module may already have sent the next
/// request on it).
fn backend_ignores_keep_conn(ctx: &Ctx) -> Result<(), String> {
    let st = state();
    fake_cases(
        ctx,
        &[
            (
                "pool_fake_close",
                &st.fake_close,
                "closes after END_REQUEST",
            ),
            (
                "pool_fake_delay",
                &st.fake_delay,
                "closes 2 ms after END_REQUEST",
            ),
        ],
    )
}

/// Every reuse of a pooled connection meets a backend that reads the request and closes (as a
/// php-fpm worker stopped while idle on a kept connection can): each such request is replayed
/// on a new connection, invisibly, and without waiting for a `-max-conns` slot behind the
/// process's own idle connections.
fn stale_conn_replay(ctx: &Ctx) -> Result<(), String> {
    let st = state();
    fake_cases(
        ctx,
        &[(
            "pool_fake_next",
            &st.fake_next,
            "reads the next request, then closes",
        )],
    )
}

/// A request on a pooled connection whose application process reads it and then dies (killed
/// by `request_terminate_timeout`, a crash) is not sent again, whatever its method: the script
/// may have acted on it. A 502, one error line; the application saw it once. (A connection the
/// application closes without reading the request is replayed: `stale_conn_replay`.)
fn dies_mid_script_not_replayed(ctx: &Ctx) -> Result<(), String> {
    let st = state();
    let fake = &st.fake_dies;
    let id = "err_pool_fake_dies";
    let v = ctx.vhost(id);
    for post in [false, true] {
        let log_off = util::file_len(&v.error_log);
        let (acc0, ans0, _, drop0) = fake.stats.snapshot();
        let mut conn = ctx.connect(id)?;
        let first = Request::get("/fake/s?i=first").host(&v.server_name);
        let r = conn.roundtrip(&first).map_err(|e| e.to_string())?;
        expect_status(&r, 200)?;
        check_fake(&first, &r)?;
        let second = if post {
            Request::post("/fake/s?i=dies", b"a=1&b=2".to_vec())
        } else {
            Request::get("/fake/s?i=dies")
        }
        .host(&v.server_name);
        let r = conn.roundtrip(&second).map_err(|e| e.to_string())?;
        let method = &second.method;
        thread::sleep(Duration::from_millis(100));
        let (acc, ans, _, dropped) = fake.stats.snapshot();
        let (acc, ans, dropped) = (acc - acc0, ans - ans0, dropped - drop0);
        ensure(r.status == 502, || {
            format!(
                "{method} on the pooled connection: want 502 (not replayed), got {}",
                r.summary()
            )
        })?;
        ensure(acc == 1 && ans == 1 && dropped == 1, || {
            format!(
                "{method}: the backend saw {acc} connection(s), answered {ans} and dropped {dropped} request(s); want 1, 1, 1 (no replay)"
            )
        })?;
        let errs = module_errors(&v.error_log, log_off);
        ensure(errs.len() == 1, || {
            format!("{method}: want one error line, got {errs:?}")
        })?;
        ensure(
            lines_with(&v.error_log, log_off, "FCGI024").is_empty(),
            || format!("{method}: a replay was logged (FCGI024)"),
        )?;
    }
    Ok(())
}

fn fake_cases(ctx: &Ctx, cases: &[(&str, &FakeFcgi, &str)]) -> Result<(), String> {
    let mut failures = Vec::new();
    for &(id, fake, what) in cases {
        let v = ctx.vhost(id);
        let log_off = util::file_len(&v.error_log);
        let access_off = util::file_len(&ctx.apache_conf.access_log());
        let (acc0, ans0, _, drop0) = fake.stats.snapshot();
        // sequential on one client connection, then 8 concurrent clients for 1.5 s
        let mut rng = Prng::new(7);
        let bodies: Vec<Vec<u8>> = (0..4).map(|i| rng.bytes(500 + i * 1000)).collect();
        let seq = sequential(
            ctx,
            id,
            150,
            &|i| {
                if i % 3 == 1 {
                    Request::post(&format!("/fake/s?i={i}"), bodies[i % 4].clone())
                } else {
                    Request::get(&format!("/fake/s?i={i}"))
                }
            },
            check_fake,
        );
        let (make, check) = fake_requests();
        let make: MakeReq = {
            let host = v.server_name.clone();
            Arc::new(move |t, n| make(t, n).host(&host))
        };
        let load = Load::start(v.port, 8, true, make, check);
        thread::sleep(Duration::from_millis(1500));
        let outcomes = load.finish();
        thread::sleep(Duration::from_millis(100));
        let (acc, ans, _, dropped) = fake.stats.snapshot();
        let (acc, ans, dropped) = (acc - acc0, ans - ans0, dropped - drop0);
        let retries = lines_with(&v.error_log, log_off, "FCGI024").len();
        let errs = module_errors(&v.error_log, log_off);
        let load_errs = first_errors(&outcomes, 5);
        println!(
            "    pool: backend {what}: 150 sequential {}, concurrent: {}; backend: {acc} connections, {ans} answered, {dropped} dropped unanswered; {retries} replays logged (FCGI024)",
            if seq.is_ok() { "ok" } else { "FAILED" },
            load_report(&outcomes, 1.5)
        );
        let mut problems = Vec::new();
        if let Err(e) = seq {
            problems.push(format!("sequential: {e}"));
        }
        if !load_errs.is_empty() {
            problems.push(format!(
                "concurrent: {} errors, e.g. {load_errs:?}",
                outcomes.iter().filter(|o| o.error.is_some()).count()
            ));
        }
        let slow = slow_requests(ctx, id, access_off, SLOW);
        if !slow.is_empty() {
            problems.push(format!(
                "{} requests took Apache over {} against an instant backend: {:?}",
                slow.len(),
                ms(SLOW),
                &slow[..slow.len().min(6)]
            ));
        }
        if !errs.is_empty() {
            problems.push(format!("error log: {:?}", &errs[..errs.len().min(5)]));
        }
        let perrs = fake.stats.errors();
        if !perrs.is_empty() {
            problems.push(format!("backend saw protocol errors: {perrs:?}"));
        }
        if fake.mode == KeepMode::CloseAfterResponse && acc != ans {
            problems.push(format!(
                "{acc} connections for {ans} answers (one request per connection expected)"
            ));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "backend that {what} (vhost {id}): {}",
                problems.join("; ")
            ));
        }
    }
    ensure(failures.is_empty(), || failures.join("\n    "))
}

// ------------------------------------------------------------------------------------------
// php-fpm recycling, reload and restart

/// php-fpm `pm.max_requests = 7`: workers exit (closing kept connections) all the time.
fn fpm_max_requests(ctx: &Ctx) -> Result<(), String> {
    let v = ctx.vhost("pool_maxreq");
    let log_off = util::file_len(&v.error_log);
    let access_off = util::file_len(&ctx.apache_conf.access_log());
    let reconnects = sequential(
        ctx,
        "pool_maxreq",
        200,
        &|i| Request::get(&format!("/hello.php?run=maxreq&i={i}")),
        check_hello,
    )?;
    let host = v.server_name.clone();
    let make: MakeReq =
        Arc::new(move |t, n| Request::get(&format!("/hello.php?t={t}&n={n}")).host(&host));
    let load = Load::start(v.port, 8, true, make, Arc::new(check_hello));
    thread::sleep(Duration::from_secs(3));
    let outcomes = load.finish();
    thread::sleep(Duration::from_millis(100));
    let retries = lines_with(&v.error_log, log_off, "FCGI024").len();
    let errs = module_errors(&v.error_log, log_off);
    println!(
        "    pool: pm.max_requests=7: 200 sequential ok ({reconnects} client reconnects); 8 clients: {}; {retries} replays logged",
        load_report(&outcomes, 3.0)
    );
    let failed = first_errors(&outcomes, 5);
    ensure(failed.is_empty(), || {
        format!(
            "{} requests failed under pm.max_requests, e.g. {failed:?}",
            outcomes.iter().filter(|o| o.error.is_some()).count()
        )
    })?;
    no_slow_requests(ctx, "pool_maxreq", access_off)?;
    ensure(errs.is_empty(), || format!("error log lines: {errs:?}"))
}

/// php-fpm with `pm = ondemand`, as hosting setups with one pool per site user often run it:
/// it starts a worker only when a connection waits in its backlog and stops workers idle for
/// `pm.process_idle_timeout` (1 s here), closing the connections the pool keeps (`-max-conns
/// 4`, pool idle timeout 5 s). Load from 8 clients, a pause of 2.5 s in which php-fpm stops
/// every worker, then sequential requests and load again: no request may fail or take over
/// SLOW, and nothing but notices may be logged.
fn fpm_ondemand(ctx: &Ctx) -> Result<(), String> {
    let v = ctx.vhost("pool_ondemand");
    let port: u16 = ctx.val("pool_ondemand_port").parse().unwrap();
    let log_off = util::file_len(&v.error_log);
    let access_off = util::file_len(&ctx.apache_conf.access_log());
    let host = v.server_name.clone();
    let make: MakeReq =
        Arc::new(move |t, n| Request::get(&format!("/sleep.php?ms=2&t={t}&n={n}")).host(&host));
    let mut report = Vec::new();
    let mut failed = Vec::new();
    for round in 0..2 {
        let load = Load::start(v.port, 8, true, make.clone(), Arc::new(check_slept));
        thread::sleep(Duration::from_secs(2));
        let outcomes = load.finish();
        report.push(load_report(&outcomes, 2.0));
        failed.extend(first_errors(&outcomes, 5));
        // php-fpm stops the idle workers; the pool still holds their connections
        thread::sleep(Duration::from_millis(2500));
        fpm_status(port)?;
        sequential(
            ctx,
            "pool_ondemand",
            20,
            &|i| Request::get(&format!("/hello.php?run=ondemand{round}&i={i}")),
            check_hello,
        )
        .map_err(|e| format!("after php-fpm stopped its idle workers: {e}"))?;
    }
    thread::sleep(Duration::from_millis(100));
    let errs = module_errors(&v.error_log, log_off);
    println!("    pool: pm=ondemand: {}", report.join("; "));
    ensure(failed.is_empty(), || format!("requests failed: {failed:?}"))?;
    no_slow_requests(ctx, "pool_ondemand", access_off)?;
    ensure(errs.is_empty(), || format!("error log lines: {errs:?}"))
}

/// `-max-conns` of the pool_fake_late vhost.
const LATE_CAP: usize = 8;

/// A capped pool in front of an application that has a free process for every connection
/// under the cap, but whose process needs a few milliseconds to get the CPU before it takes
/// a new connection (here: a scripted backend that accepts every 8 ms), as on a loaded or
/// stolen-from CPU. The pool must keep its connections. Taking that wait for starvation and
/// asking other Apache processes to close idle connections (what the guard does after 1 ms
/// without a cap) made them reconnect, and their new connections waited the same way: on the
/// benchmark's single CPU (`-max-conns 50`, `pm = static` 50, hello.php, 32 clients), a
/// connection was opened for 24% to 62% of the requests instead of 0.1%. Clients come in
/// rounds, new connections each round (as wrk runs, and as browsers come and go), so that
/// each round spreads them over the Apache processes anew and some fresh connections are
/// needed.
fn capped_keeps_connections(ctx: &Ctx) -> Result<(), String> {
    let st = state();
    let v = ctx.vhost("pool_fake_late");
    let log_off = util::file_len(&v.error_log);
    let stats = &st.fake_late.stats;
    let (acc0, ans0) = (
        stats.accepted.load(std::sync::atomic::Ordering::SeqCst),
        stats.answered.load(std::sync::atomic::Ordering::SeqCst),
    );
    let (make, check) = fake_requests();
    let make: MakeReq = {
        let host = v.server_name.clone();
        Arc::new(move |t, n| make(t, n).host(&host))
    };
    let (rounds, round) = (10, Duration::from_millis(300));
    let mut outcomes = Vec::new();
    for _ in 0..rounds {
        let load = Load::start(v.port, 6, true, make.clone(), check.clone());
        thread::sleep(round);
        outcomes.extend(load.finish());
    }
    thread::sleep(Duration::from_millis(100));
    let opened = stats.accepted.load(std::sync::atomic::Ordering::SeqCst) - acc0;
    let answered = stats.answered.load(std::sync::atomic::Ordering::SeqCst) - ans0;
    let errs = module_errors(&v.error_log, log_off);
    println!(
        "    pool: -max-conns {LATE_CAP}, an application that accepts every 8 ms, 6 clients in {rounds} rounds: {}; {opened} connections opened for {answered} requests",
        load_report(&outcomes, rounds as f64 * round.as_secs_f64())
    );
    let failed = first_errors(&outcomes, 5);
    ensure(failed.is_empty(), || format!("requests failed: {failed:?}"))?;
    let limit = 2 * LATE_CAP + answered / 100;
    ensure(opened <= limit, || {
        format!(
            "{opened} connections opened for {answered} requests (at most {limit} expected): the pool reconnects"
        )
    })?;
    ensure(errs.is_empty(), || format!("error log lines: {errs:?}"))
}

/// `-max-conns 4` in front of a php-fpm pool with one worker, one client sending one request
/// at a time, each on a new connection, so that they land on either Apache process. The
/// process that served a request keeps its connection, and with it php-fpm's only worker;
/// a request served by another process opens a new connection that waits in php-fpm's backlog
/// until the first process gives its connection up. Asked for at once (the request is the only
/// one in flight, so no loaded CPU explains the silence), that takes a millisecond or two;
/// the build before waited ASK_AFTER_CAPPED (20 ms) for each such request first. Of the
/// requests served by another process than the one before, at most 2 (or a twentieth) may
/// take 15 ms or more (Apache's `%D`). First, clients of another definition (`pool_reuse`) leave pooled
/// connections in the Apache processes: the reaper that gives the connection up then sleeps on
/// that definition's bell, and must be woken for this one's too (the build before waited for
/// its next pass, 16-20 ms, for 5-15 of 40 such requests under prefork).
fn capped_above_capacity_sequential(ctx: &Ctx) -> Result<(), String> {
    let id = "pool_single";
    let v = ctx.vhost(id);
    let log_off = util::file_len(&v.error_log);
    let other = ctx.vhost("pool_reuse");
    let host = other.server_name.clone();
    let make: MakeReq =
        Arc::new(move |t, n| Request::get(&format!("/hello.php?single_other={t}-{n}")).host(&host));
    let load = Load::start(other.port, 6, false, make, Arc::new(check_hello));
    thread::sleep(Duration::from_millis(300));
    let failed = first_errors(&load.finish(), 5);
    ensure(failed.is_empty(), || {
        format!("requests to pool_reuse failed: {failed:?}")
    })?;
    let access_off = util::file_len(&ctx.apache_conf.access_log());
    let vhost_key = format!("{}:{}", v.server_name, v.port);
    // the requests served by another process than the one before them
    let moved = || -> Vec<inst::Served> {
        let mut prev = None;
        inst::served(&ctx.apache_conf.access_log(), &vhost_key, access_off)
            .into_iter()
            .filter(|s| prev.replace(s.pid).is_some_and(|p| p != s.pid))
            .collect()
    };
    let mut served = 0;
    for i in 0..200 {
        let req = Request::get(&format!("/hello.php?single={i}")).host(&v.server_name);
        let r = crate::http::fetch(v.port, req).map_err(|e| format!("request {i}: {e}"))?;
        expect_status(&r, 200).map_err(|e| format!("request {i}: {e}"))?;
        check_hello(&Request::get("/"), &r).map_err(|e| format!("request {i}: {e}"))?;
        served += 1;
        if i % 10 == 9 {
            thread::sleep(Duration::from_millis(50)); // let the access log catch up
            if moved().len() >= 30 {
                break;
            }
        }
    }
    thread::sleep(Duration::from_millis(100));
    let moved = moved();
    let switched = moved.len();
    let slow_at = Duration::from_millis(15);
    let slow: Vec<String> = moved
        .iter()
        .filter(|s| s.took >= slow_at)
        .map(|s| format!("{:?} {} (pid {})", s.request, ms(s.took), s.pid))
        .collect();
    let errs = module_errors(&v.error_log, log_off);
    println!(
        "    pool: -max-conns 4, php-fpm with 1 worker, {served} sequential requests: {switched} served by another process than the one before, {} of them took {} or more",
        slow.len(),
        ms(slow_at)
    );
    ensure(switched >= 10, || {
        format!(
            "only {switched} of {served} requests landed on another Apache process: nothing tested"
        )
    })?;
    ensure(slow.len() <= (switched / 20).max(2), || {
        format!(
            "{} of {switched} requests on another process waited: {:?}",
            slow.len(),
            &slow[..slow.len().min(6)]
        )
    })?;
    ensure(errs.is_empty(), || format!("error log lines: {errs:?}"))
}

/// Two definitions (virtual paths) in front of one php-fpm pool of two workers, each with
/// `-max-conns 2` (the configuration does not say they share it: with one virtual path per
/// vhost, as hosting setups write them, the same pool often stands behind several). Two
/// concurrent requests of `pool_shared_b` leave two pooled connections, which hold both
/// workers; then requests of `pool_shared_a`, one at a time and two at once, and one of
/// `pool_shared_off`, a third definition that does not pool (`-keep-conn off`). Each must be
/// served within a second: its new connection waits in php-fpm's backlog until `b`'s idle
/// connections are given up, which the pool idle timeout (5 s) would only do much later (the
/// build before: 4.95 s).
fn shared_backend_two_definitions(ctx: &Ctx) -> Result<(), String> {
    let (a, b) = (ctx.vhost("pool_shared_a"), ctx.vhost("pool_shared_b"));
    let off = ctx.vhost("pool_shared_off");
    let log_off = util::file_len(&a.error_log);
    let limit = Duration::from_secs(1);
    let mut report = Vec::new();
    let mut slow = Vec::new();
    for round in 0..3 {
        // b: two at once, so that two connections (both workers) are pooled
        for r in concurrent_sleeps(b.port, &b.server_name, 2, 30) {
            let r = r.map_err(|e| format!("pool_shared_b: {e}"))?;
            expect_status(&r, 200).map_err(|e| format!("pool_shared_b: {e}"))?;
        }
        thread::sleep(Duration::from_millis(50));
        // a: alone, then two at once
        for n in [1usize, 2] {
            let ha = a.server_name.clone();
            let pa = a.port;
            let t0 = Instant::now();
            let clients: Vec<_> = (0..n)
                .map(|i| {
                    let ha = ha.clone();
                    thread::spawn(move || {
                        let t = Instant::now();
                        crate::http::fetch(
                            pa,
                            Request::get(&format!("/hello.php?shared_a={round}-{n}-{i}")).host(&ha),
                        )
                        .map(|r| (r, t.elapsed()))
                    })
                })
                .collect();
            for h in clients {
                let (r, took) = h
                    .join()
                    .map_err(|_| "client thread panicked".to_string())?
                    .map_err(|e| format!("pool_shared_a: {e}"))?;
                expect_status(&r, 200).map_err(|e| format!("pool_shared_a: {e}"))?;
                check_hello(&Request::get("/"), &r)?;
                if took >= limit {
                    slow.push(format!("round {round}, {n} at once: {}", ms(took)));
                }
            }
            report.push(format!("{n}: {}", ms(t0.elapsed())));
            // b's pooled connections again for the next case
            {
                let r = crate::http::fetch(
                    b.port,
                    Request::get(&format!("/hello.php?shared_b_again={round}"))
                        .host(&b.server_name),
                )
                .map_err(|e| format!("pool_shared_b: {e}"))?;
                expect_status(&r, 200)?;
            }
        }
        // the definition without a pool, after b pooled again
        let t = Instant::now();
        let r = crate::http::fetch(
            off.port,
            Request::get(&format!("/hello.php?shared_off={round}")).host(&off.server_name),
        )
        .map_err(|e| format!("pool_shared_off: {e}"))?;
        expect_status(&r, 200).map_err(|e| format!("pool_shared_off: {e}"))?;
        let took = t.elapsed();
        if took >= limit {
            slow.push(format!("round {round}, -keep-conn off: {}", ms(took)));
        }
        report.push(format!("off: {}", ms(took)));
    }
    let errs = module_errors(&a.error_log, log_off);
    println!(
        "    pool: two definitions, one php-fpm pool of 2 workers, each -max-conns 2: requests of one after the other pooled both workers took [{}]",
        report.join(", ")
    );
    ensure(slow.is_empty(), || {
        format!("requests waited behind the other definition's idle connections: {slow:?}")
    })?;
    ensure(errs.is_empty(), || format!("error log lines: {errs:?}"))
}

/// A client this Apache does not know of (a second web server, a cron job talking FastCGI)
/// reaching the php-fpm pool directly while the module's idle pooled connections hold every
/// worker: it must be served within a second, over TCP (`pool_shared_b`: 2 workers, `-max-conns
/// 2`) and over a unix socket (`pool_outside_unix`, the same). The build before left it in
/// php-fpm's listen backlog until `-pool-idle-timeout` (5 s) expired the idle connections.
fn outside_client_not_starved(ctx: &Ctx) -> Result<(), String> {
    let docroot = PathBuf::from(ctx.val("pool_docroot"));
    let script = p(&docroot.join("hello.php"));
    let params = [
        ("SCRIPT_FILENAME", script.as_str()),
        ("SCRIPT_NAME", "/hello.php"),
        ("REQUEST_URI", "/hello.php"),
        ("REQUEST_METHOD", "GET"),
        ("QUERY_STRING", ""),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
    ];
    let tcp: SocketAddr = format!("127.0.0.1:{}", ctx.val("pool_shared_port"))
        .parse()
        .map_err(|e| format!("address: {e}"))?;
    let sock = PathBuf::from(ctx.val("pool_outside_sock"));
    let limit = Duration::from_secs(1);
    let mut report = Vec::new();
    let mut slow = Vec::new();
    let fcgi_dir = PathBuf::from(ctx.val("pool_fcgi_dir"));
    for (id, unix) in [("pool_shared_b", false), ("pool_outside_unix", true)] {
        let v = ctx.vhost(id);
        let log_off = util::file_len(&v.error_log);
        let vpath = p(&fcgi_dir.join(format!("{id}.fcgi")));
        let released = |what: &str| -> Result<u64, String> {
            crate::status::num(&crate::status::auto(ctx, &vpath)?, "OutsiderReleases")
                .map_err(|e| format!("{id} {what}: {e}"))
        };
        let released_before = released("before")?;
        for round in 0..3 {
            // two at once: both workers end up held by idle pooled connections
            for r in concurrent_sleeps(v.port, &v.server_name, 2, 30) {
                let r = r.map_err(|e| format!("{id}: {e}"))?;
                expect_status(&r, 200).map_err(|e| format!("{id}: {e}"))?;
            }
            thread::sleep(Duration::from_millis(50));
            let t = Instant::now();
            let (out, _) = if unix {
                crate::pool_fcgi::fcgi_request_unix(&sock, &params, b"", Duration::from_secs(10))
            } else {
                crate::pool_fcgi::fcgi_request(tcp, &params, b"", Duration::from_secs(10))
            }
            .map_err(|e| format!("{id}: the outside client: {e}"))?;
            let took = t.elapsed();
            ensure(
                String::from_utf8_lossy(&out).contains("hello from php-fpm"),
                || {
                    format!(
                        "{id}: the outside client got {:?}",
                        String::from_utf8_lossy(&out)
                    )
                },
            )?;
            report.push(format!("{id} {round}: {}", ms(took)));
            if took >= limit {
                slow.push(format!("{id}, round {round}: {}", ms(took)));
            }
        }
        // mod_status counts what was given up for them. Not necessarily one per round: a
        // release request of this definition's own (a request that asked another process for
        // its idle connection just as that process's next request took it, then got a slot
        // anyway) can close a connection at its next checkin, and the outside client of that
        // round then finds a free worker (seen once in a prefork CI pass: 2 of 3). The rounds'
        // times, below, are what the client sees.
        let given = released("after")? - released_before;
        ensure(given >= 1, || {
            format!(
                "{id}: mod_status counts {given} idle connections given up for outside clients, want at least 1"
            )
        })?;
        report.push(format!("{id}: {given} given up"));
        let errs = module_errors(&v.error_log, log_off);
        ensure(errs.is_empty(), || {
            format!("{id}: error log lines: {errs:?}")
        })?;
    }
    println!(
        "    pool: a client of php-fpm that Apache does not know of, behind 2 idle pooled connections holding both workers: [{}]",
        report.join(", ")
    );
    ensure(slow.is_empty(), || {
        format!("the outside client waited behind idle pooled connections: {slow:?}")
    })
}

/// php-fpm on "another host": in a network namespace of its own, reached over a veth pair
/// (`netns::NetNs`), where the kernel can tell the module nothing about the application's end
/// of a connection and does not reuse local ports left in TIME_WAIT. Three definitions reach
/// its pool of 4 workers: `-max-conns 4`, `-keep-conn on` (the guard alone) and no pool.
/// 1. Siblings: the capped definition's 4 idle pooled connections hold every worker; a request
///    of each other definition must not wait for them to expire (the build before: 4.99 s,
///    `-pool-idle-timeout`; the backlog look that frees them on loopback cannot see a remote
///    application's backlog).
/// 2. The issue's starvation run against it, for the cap and for the guard alone (no error,
///    slowest under 2 s, every process served), and the local ports each leaves in TIME_WAIT:
///    requests whose client connections land on any process move pooled connections between
///    processes (closed in one, opened in another; under prefork every request), and the build
///    before closed each one with a FIN from this side, 60 s of TIME_WAIT per request: the
///    28,232 local ports ran out in under a minute (503, "Cannot assign requested address").
fn remote_application(ctx: &Ctx) -> Result<(), String> {
    if std::env::var_os("MFCGI_NO_NETNS").is_some() {
        println!("    pool: remote application: not run (MFCGI_NO_NETNS set)");
        return Ok(());
    }
    let ns = crate::netns::NetNs::create().map_err(|e| {
        format!(
            "cannot make a network namespace (root needed; MFCGI_NO_NETNS=1 skips this test): {e}"
        )
    })?;
    let app = SocketAddrV4::new(ns.app_ip, 9000);
    let mut pool = Pool::new(
        "pool_remote",
        "www-data",
        "www-data",
        Endpoint::Remote(app, ns.host_ip),
    );
    pool.extra = vec!["pm.status_path = /fpm-status".into()];
    let dir = ctx.tmp.join("pool-fpm-remote");
    let (mut fpm, fconf) = inst::start_fpm_in(ctx, &ns, &dir, &[pool])?;

    let mpm = ctx.env.mpm.clone();
    let (procs_n, threads) = if mpm == "prefork" { (16, 1) } else { (4, 16) };
    let fcgi_dir = PathBuf::from(ctx.val("pool_fcgi_dir"));
    let docroot = PathBuf::from(ctx.val("pool_docroot"));
    let root = ctx.tmp.join("pool-apache-remote");
    let mut conf = ApacheConf::new(&root, &mpm, &ctx.env.module_so);
    let ports = util::free_ports(3)?;
    let defs = [
        ("remote_cap", "-max-conns 4"),
        // (its own pooled connection, which holds a worker too, expires before the next fill)
        ("remote_guard", "-keep-conn on -pool-idle-timeout 1"),
        ("remote_off", ""),
    ];
    for ((id, opts), port) in defs.iter().zip(&ports) {
        let chain = php_chain(&fcgi_dir, id, &app.to_string(), opts);
        conf.add_vhost(inst::vhost(&conf, id, *port, &docroot, &chain));
    }
    let mut apache = Apache::start(ctx, "remote", conf, &mpm, procs_n, threads)?;
    let host = |id: &str| format!("{}.test", id.replace('_', "-"));
    let logs: Vec<(PathBuf, u64)> = defs
        .iter()
        .map(|(id, _)| {
            let l = apache.conf.log_dir.join(format!("{id}.error.log"));
            let off = util::file_len(&l);
            (l, off)
        })
        .collect();

    // 1. siblings
    let mut report = Vec::new();
    let mut slow = Vec::new();
    let mut all_held: std::collections::BTreeMap<&str, usize> = Default::default();
    for round in 0..2 {
        for (id, port) in [("remote_off", ports[2]), ("remote_guard", ports[1])] {
            if round > 0 && id == "remote_off" {
                // the guard's own idle connection (held after its request) expires
                thread::sleep(Duration::from_millis(2200));
            }
            for r in concurrent_sleeps(ports[0], &host("remote_cap"), 4, 60) {
                let r = r.map_err(|e| format!("remote_cap: {e}"))?;
                expect_status(&r, 200).map_err(|e| format!("remote_cap: {e}"))?;
            }
            thread::sleep(Duration::from_millis(50));
            let held = backend_sockets_at(app, false)?.established;
            *all_held.entry(id).or_default() += usize::from(held >= 4);
            let t = Instant::now();
            let r = crate::http::fetch(
                port,
                Request::get(&format!("/sleep.php?ms=1&sibling={round}")).host(&host(id)),
            )
            .map_err(|e| format!("{id}: {e}"))?;
            expect_status(&r, 200).map_err(|e| format!("{id}: {e}"))?;
            let took = t.elapsed();
            report.push(format!("{id} ({held} held): {}", ms(took)));
            if took >= Duration::from_secs(1) {
                slow.push(format!("round {round}, {id}: {}", ms(took)));
            }
        }
    }
    println!(
        "    pool: remote php-fpm (4 workers), after 4 idle connections of the -max-conns 4 definition: {}",
        report.join(", ")
    );

    // 2. starvation runs, and the local ports they leave in TIME_WAIT (after the guard's own
    // idle connection of step 1 expired: it would count as a fifth connection of the cap's)
    thread::sleep(Duration::from_millis(1500));
    let shape = if mpm == "prefork" {
        format!("prefork {procs_n} processes")
    } else {
        format!("{mpm} {procs_n}x{threads} threads")
    };
    let secs = env_num("MFCGI_STARVATION_SECS", 20).min(10);
    let mut runs = Vec::new();
    for (i, (id, capped)) in [("remote_cap", true), ("remote_guard", false)]
        .into_iter()
        .enumerate()
    {
        let tw0 = backend_sockets_at(app, true)?.time_wait;
        let run = starve_run(
            &apache,
            id,
            ports[i],
            app,
            secs,
            capped,
            &format!(
                "remote php-fpm, {} , {shape}, 32 clients (a new connection each), 5 ms script, pm.max_children=4",
                defs[i].1
            ),
        );
        let tw = backend_sockets_at(app, true)?.time_wait.saturating_sub(tw0);
        println!(
            "    pool: {}; local ports left in TIME_WAIT: {tw}",
            run.summary
        );
        runs.push((id, run, tw));
    }
    let crashes = lines_with(&apache.conf.error_log(), 0, "exit signal");
    let errs: Vec<String> = logs
        .iter()
        .flat_map(|(l, off)| module_errors(l, *off))
        .collect();
    apache.stop();
    fpm.stop(Duration::from_secs(10));
    let fpm_log = std::fs::read_to_string(&fconf.log).unwrap_or_default();
    let fpm_bad: Vec<&str> = fpm_log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARNING"))
        .collect();
    drop(ns);

    ensure(crashes.is_empty(), || {
        format!("Apache children crashed: {crashes:?}")
    })?;
    ensure(all_held.values().all(|&n| n > 0), || {
        format!(
            "the 4 idle connections were never all held before one of the siblings' requests: {report:?}"
        )
    })?;
    ensure(slow.is_empty(), || {
        format!(
            "requests waited behind another definition's idle connections to the remote php-fpm: {slow:?}"
        )
    })?;
    for (id, run, tw) in &runs {
        ensure(run.problems.is_empty(), || {
            format!("{id}: {}", run.problems.join("; "))
        })?;
        // (the few a test client's own closes can leave aside, none per request)
        ensure(*tw <= run.requests / 100 + 8, || {
            format!(
                "{id}: {tw} local ports left in TIME_WAIT towards the remote php-fpm for {} requests: pooled connections closed with a FIN from Apache's side",
                run.requests
            )
        })?;
    }
    ensure(errs.is_empty(), || format!("module errors: {errs:?}"))?;
    ensure(fpm_bad.is_empty(), || {
        format!("php-fpm warned: {fpm_bad:?}")
    })
}

fn alive(pid: u32) -> bool {
    procs::proc_stat(pid as libc::pid_t).is_some_and(|s| s.state != 'Z')
}

/// php-fpm reloaded (SIGUSR2) and then stopped and started again while 8 clients send
/// requests (a 5 ms script) through `-max-conns 4`. Requests in flight inside php-fpm while its
/// workers are stopped may fail with 502/503; requests that arrive while no php-fpm runs at
/// all (between the old master's exit and the new one's start) wait for it (`-connect-retry`,
/// 1 s by default) and must succeed unless php-fpm stayed down longer than that; every other
/// request must succeed, with no crash, and the pool must be back to reusing connections
/// afterwards.
/// How long requests wait for an application that refuses connections (-connect-retry's
/// default, which err_pool_restart uses).
const RESTART_WAIT: Duration = Duration::from_secs(1);

fn fpm_reload_and_restart(ctx: &Ctx) -> Result<(), String> {
    let v = ctx.vhost("err_pool_restart");
    let fpm_port: u16 = ctx.val("pool_restart_port").parse().unwrap();
    let dir = ctx.tmp.join("pool-fpm-restart");
    let main_off = util::file_len(&ctx.error_log());
    let log_off = util::file_len(&v.error_log);
    let (mut fpm, fconf) =
        inst::start_fpm(ctx, &dir, &[tcp_pool("pool_restart", fpm_port, &[])], "")?;
    sequential(
        ctx,
        "err_pool_restart",
        20,
        &|i| Request::get(&format!("/sleep.php?ms=1&warm={i}")),
        check_slept,
    )?;

    let host = v.server_name.clone();
    let make: MakeReq =
        Arc::new(move |t, n| Request::get(&format!("/sleep.php?ms=5&t={t}&n={n}")).host(&host));
    let load = Load::start(v.port, 8, true, make, Arc::new(check_slept));
    thread::sleep(Duration::from_millis(1500));

    // reload: the master re-executes itself keeping its listening socket
    let old = procs::children_of(fpm.pid);
    let t_sig1 = load.now();
    // SAFETY: kill(2) on the php-fpm master we started.
    unsafe { libc::kill(fpm.pid as libc::pid_t, libc::SIGUSR2) };
    let t = Instant::now();
    while old.iter().any(|&p| alive(p)) && t.elapsed() < Duration::from_secs(15) {
        thread::sleep(Duration::from_millis(2));
    }
    let t_gone1 = load.now();
    loop {
        let now = procs::children_of(fpm.pid);
        if now.len() >= 4 && now.iter().all(|c| !old.contains(c)) {
            break;
        }
        if t.elapsed() > Duration::from_secs(15) {
            let _ = load.finish();
            return Err(format!(
                "php-fpm did not come back after SIGUSR2; log:\n{}",
                util::tail(&fconf.log, 20)
            ));
        }
        thread::sleep(Duration::from_millis(2));
    }
    let t_ready1 = load.now();
    thread::sleep(Duration::from_millis(2000));

    // restart: stop the master (SIGTERM), start a new one on the same address
    let t_sig2 = load.now();
    fpm.stop(Duration::from_secs(10));
    let t_gone2 = load.now();
    // as slow as a service manager's restart: requests keep arriving with nothing listening
    thread::sleep(Duration::from_millis(300));
    fpm = match inst::spawn_fpm(ctx, &fconf) {
        Ok(s) => s,
        Err(e) => {
            let _ = load.finish();
            return Err(format!("php-fpm restart: {e}"));
        }
    };
    let t_ready2 = load.now();
    thread::sleep(Duration::from_millis(2000));
    let outcomes = load.finish();

    // classification
    #[derive(Default, Debug)]
    struct Tally {
        inflight: usize,
        stopping: usize,
        down: usize,
    }
    let (mut reload, mut restart, mut bad) = (Tally::default(), Tally::default(), Vec::new());
    for o in outcomes.iter().filter(|o| o.error.is_some()) {
        let gw = o.status == 502 || o.status == 503;
        if gw && o.start < t_sig1 && o.end >= t_sig1 {
            reload.inflight += 1;
        } else if gw && o.start < t_sig2 && o.end >= t_sig2 {
            restart.inflight += 1;
        } else if gw && o.start >= t_sig2 && o.start <= t_gone2 {
            // php-fpm is shutting down: no worker will take it
            restart.stopping += 1;
        } else if o.status == 503
            && o.start > t_gone2
            && o.start <= t_ready2
            && t_ready2 - t_gone2 > RESTART_WAIT - Duration::from_millis(200)
        {
            // php-fpm stayed down about as long as requests wait for it
            restart.down += 1;
        } else {
            if gw && o.start >= t_sig1 && o.start <= t_gone1 {
                reload.stopping += 1;
            }
            bad.push(format!(
                "t={:.3}s..{:.3}s: {}",
                o.start.as_secs_f64(),
                o.end.as_secs_f64(),
                o.error.as_deref().unwrap_or("")
            ));
        }
    }
    let in_reload = outcomes
        .iter()
        .filter(|o| o.overlaps(t_sig1, t_ready1))
        .count();
    let after = outcomes.iter().filter(|o| o.start > t_ready2).count();
    // requests still waiting when php-fpm came back, and then served: they found no listener
    // (or were replayed after a reset) and waited instead of failing
    let waited_ok = outcomes
        .iter()
        .filter(|o| o.error.is_none() && o.start < t_ready2 && o.end > t_ready2)
        .count();

    // recovery: reuse again (200 sequential requests open at most a connection or two)
    let before: std::collections::BTreeSet<u16> =
        backend_sockets(fpm_port).local_ports.into_iter().collect();
    let ports = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let pc = ports.clone();
    let sampler = Sampler::start(Duration::from_millis(1), move || {
        let s = backend_sockets(fpm_port);
        let n = s.held();
        pc.lock().unwrap().extend(s.local_ports);
        n
    });
    let rec = sequential(
        ctx,
        "err_pool_restart",
        200,
        &|i| Request::get(&format!("/sleep.php?ms=1&after={i}")),
        check_slept,
    );
    let (max_held, _) = sampler.finish();
    let fresh = ports.lock().unwrap().difference(&before).count();
    thread::sleep(Duration::from_millis(100));
    let fcgi_lines: Vec<String> = util::read_from(&v.error_log, log_off)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("FCGI0"))
                .map(|w| w.trim_end_matches(':').to_string())
        })
        .collect();
    let mut ids: std::collections::BTreeMap<String, usize> = Default::default();
    for id in fcgi_lines {
        *ids.entry(id).or_default() += 1;
    }
    let crashes: Vec<String> = lines_with(&ctx.error_log(), main_off, "exit signal");
    fpm.stop(Duration::from_secs(10));
    println!(
        "    pool: php-fpm reload+restart: {}; reload: workers gone {:.0} ms after SIGUSR2, new ones {:.0} ms later, {in_reload} requests overlapped; \
         restart: workers gone {:.0} ms after SIGTERM, php-fpm down for {:.0} ms, {waited_ok} requests waited for it and succeeded; failures at reload {reload:?}, at restart {restart:?}, {} other; \
         {after} requests after the restart; recovery: 200 sequential {}, {fresh} new backend connection(s) (max {max_held} open at once); log ids {ids:?}",
        load_report(&outcomes, (t_ready2 + Duration::from_secs(2)).as_secs_f64()),
        (t_gone1 - t_sig1).as_secs_f64() * 1000.0,
        (t_ready1 - t_gone1).as_secs_f64() * 1000.0,
        (t_gone2 - t_sig2).as_secs_f64() * 1000.0,
        (t_ready2 - t_gone2).as_secs_f64() * 1000.0,
        bad.len(),
        if rec.is_ok() { "ok" } else { "FAILED" },
    );
    ensure(crashes.is_empty(), || {
        format!("Apache children crashed: {crashes:?}")
    })?;
    ensure(bad.is_empty(), || {
        format!(
            "{} requests failed outside the allowed windows (reload {:.3}..{:.3}s, restart {:.3}..{:.3}s, down until {:.3}s), e.g. {:?}",
            bad.len(),
            t_sig1.as_secs_f64(),
            t_gone1.as_secs_f64(),
            t_sig2.as_secs_f64(),
            t_gone2.as_secs_f64(),
            t_ready2.as_secs_f64(),
            &bad[..bad.len().min(6)]
        )
    })?;
    ensure(after > 0, || {
        "no requests were sent after the restart".to_string()
    })?;
    ensure(waited_ok > 0, || {
        "no request waited for the restarted php-fpm and was served".to_string()
    })?;
    rec.map_err(|e| format!("after the restart: {e}"))?;
    ensure(fresh <= 2, || {
        format!(
            "after the restart 200 sequential requests opened {fresh} backend connections: the pool does not reuse"
        )
    })
}

// ------------------------------------------------------------------------------------------
// graceful restarts

/// Graceful restarts of a dedicated Apache under load: afterwards the parent has as many fds
/// as before, the children of the new generation as many as the first ones, and (after a last
/// restart without load; `-pool-idle-timeout 300`, so only restarts close pooled connections)
/// no connection to php-fpm is left open.
fn graceful_restarts_no_fd_leak(ctx: &Ctx) -> Result<(), String> {
    let restarts = env_num("MFCGI_POOL_RESTARTS", 20) as usize;
    let mpm = ctx.env.mpm.clone();
    let fpm_port: u16 = ctx.val("pool_fd_port").parse().unwrap();
    let fcgi_dir = PathBuf::from(ctx.val("pool_fcgi_dir"));
    let docroot = PathBuf::from(ctx.val("pool_docroot"));
    let root = ctx.tmp.join("pool-apache-fd");
    let mut conf = ApacheConf::new(&root, &mpm, &ctx.env.module_so);
    let port = util::free_ports(1)?[0];
    let body = php_chain(
        &fcgi_dir,
        "fd",
        &format!("127.0.0.1:{fpm_port}"),
        "-max-conns 4 -pool-idle-timeout 300",
    );
    conf.add_vhost(inst::vhost(&conf, "fd", port, &docroot, &body));
    let (procs_n, threads) = if mpm == "prefork" { (4, 1) } else { (2, 16) };
    let mut apache = Apache::start(ctx, "fd", conf, &mpm, procs_n, threads)?;
    thread::sleep(Duration::from_millis(300));
    let parent = apache.pid();
    let parent_fd0 = inst::fd_count(parent);
    let maps0 = inst::anon_shared_maps(parent);
    let child_fd0 = apache
        .children()
        .iter()
        .map(|&c| inst::fd_count(c))
        .max()
        .unwrap_or(0);

    let host = "fd.test".to_string();
    let make: MakeReq =
        Arc::new(move |t, n| Request::get(&format!("/hello.php?t={t}&n={n}")).host(&host));
    let load = Load::start(port, 6, true, make, Arc::new(check_hello));
    let t0 = Instant::now();
    let mut parent_fds = Vec::new();
    let mut held = Vec::new();
    let mut err = None;
    for _ in 0..restarts {
        thread::sleep(Duration::from_millis(200));
        if let Err(e) = apache.graceful(Duration::from_secs(15)) {
            err = Some(e);
            break;
        }
        parent_fds.push(inst::fd_count(parent));
        held.push(backend_sockets(fpm_port).held());
    }
    thread::sleep(Duration::from_millis(300));
    let outcomes = load.finish();
    let load_secs = t0.elapsed().as_secs_f64();
    if let Some(e) = err {
        return Err(e);
    }
    let busy_held = backend_sockets(fpm_port).held();
    // last restart without load: the old generation exits and must close its pools
    let old: Vec<u32> = apache.children();
    apache.graceful(Duration::from_secs(15))?;
    let t = Instant::now();
    while (old.iter().any(|&c| alive(c))
        || backend_sockets(fpm_port).held() > 0
        || apache
            .children()
            .iter()
            .filter(|c| !old.contains(c))
            .count()
            < procs_n as usize)
        && t.elapsed() < Duration::from_secs(10)
    {
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(200));
    let left = backend_sockets(fpm_port);
    let old_alive: Vec<u32> = old.iter().copied().filter(|&c| alive(c)).collect();
    let parent_fd1 = inst::fd_count(parent);
    let maps1 = inst::anon_shared_maps(parent);
    let child_fd1 = apache
        .children()
        .iter()
        .map(|&c| inst::fd_count(c))
        .max()
        .unwrap_or(0);
    let errs = module_errors(&apache.conf.error_log(), 0);
    let verrs = module_errors(&apache.conf.log_dir.join("fd.error.log"), 0);
    apache.stop();
    println!(
        "    pool: {} graceful restarts under load ({mpm}): {}; parent fds {parent_fd0} -> {parent_fd1} (after each restart: {parent_fds:?}); \
         max child fds {child_fd0} -> {child_fd1}; connections to php-fpm held after each restart {held:?}, {busy_held} at the end of the load, \
         {} after a restart without load ({} CLOSE_WAIT); anonymous shared mappings in the parent {maps0} -> {maps1}",
        restarts,
        load_report(&outcomes, load_secs),
        left.held(),
        left.close_wait
    );
    let failed = first_errors(&outcomes, 5);
    ensure(failed.is_empty(), || {
        format!(
            "{} requests failed during graceful restarts, e.g. {failed:?}",
            outcomes.iter().filter(|o| o.error.is_some()).count()
        )
    })?;
    ensure(errs.is_empty() && verrs.is_empty(), || {
        format!("error log lines: {errs:?} {verrs:?}")
    })?;
    ensure(old_alive.is_empty(), || {
        format!(
            "old-generation children still alive 10 s after the last graceful restart: {old_alive:?}"
        )
    })?;
    ensure(left.held() == 0, || {
        format!(
            "{} connection(s) to php-fpm still open ({} established, {} CLOSE_WAIT) after a graceful restart without load (pool-idle-timeout 300)",
            left.held(),
            left.established,
            left.close_wait
        )
    })?;
    ensure(parent_fd1 <= parent_fd0, || {
        format!(
            "parent fd count grew from {parent_fd0} to {parent_fd1} over {restarts} graceful restarts: {parent_fds:?}"
        )
    })?;
    ensure(child_fd1 > 0 && child_fd1 <= child_fd0, || {
        format!("fresh children have {child_fd1} fds, the first generation had {child_fd0}")
    })
}

// ------------------------------------------------------------------------------------------
// 2. starvation

struct StarveRun {
    summary: String,
    problems: Vec<String>,
    requests: usize,
}

#[allow(clippy::too_many_arguments)]
fn starve_run(
    apache: &Apache,
    id: &str,
    port: u16,
    app: SocketAddrV4,
    secs: u64,
    capped: bool,
    what: &str,
) -> StarveRun {
    let access = apache.conf.access_log();
    let log_off = util::file_len(&access);
    let vlog = apache.conf.log_dir.join(format!("{id}.error.log"));
    let vlog_off = util::file_len(&vlog);
    let children = apache.children();
    let over: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let ov = over.clone();
    let sampler = Sampler::start(Duration::from_millis(2), move || {
        let t0 = Instant::now();
        let s = backend_sockets_at(app, false).unwrap_or_default();
        let took = t0.elapsed();
        if s.held() > 4 {
            // Look again at once: ports of the first look that are gone by now were closing
            // while the kernel walked its table (a sample is not an atomic snapshot).
            let again = backend_sockets_at(app, false).unwrap_or_default();
            let gone = s
                .local_ports
                .iter()
                .filter(|p| !again.local_ports.contains(p))
                .count();
            ov.lock().unwrap().push(format!(
                "{} established + {} connecting + {} CLOSE_WAIT in a look of {} (looked again: {} held, {gone} of the first gone)",
                s.established,
                s.syn_sent,
                s.close_wait,
                ms(took),
                again.held()
            ));
        }
        s.held()
    });
    let host = format!("{}.test", id.replace('_', "-"));
    let vh = format!("{host}:{port}");
    let make: MakeReq =
        Arc::new(move |t, n| Request::get(&format!("/sleep.php?ms=5&t={t}&n={n}")).host(&host));
    let load = Load::start(port, 32, false, make, Arc::new(check_slept));
    thread::sleep(Duration::from_secs(secs));
    let t_end = load.now();
    let outcomes = load.finish();
    let (max_held, samples) = sampler.finish();
    thread::sleep(Duration::from_millis(300));
    let pids = inst::per_pid(&access, &vh, log_off);
    let status = fpm_status_at(SocketAddr::V4(app)).unwrap_or_default();
    let ok: Vec<Outcome> = outcomes
        .iter()
        .filter(|o| o.error.is_none())
        .cloned()
        .collect();
    let errors = outcomes.len() - ok.len();
    let l = latency(&ok);
    let slowest = latency(&outcomes).max;
    let counts: Vec<usize> = pids.values().map(|c| c.0).collect();
    let (minc, maxc) = (
        counts.iter().min().copied().unwrap_or(0),
        counts.iter().max().copied().unwrap_or(0),
    );
    let log_ids: Vec<String> = lines_with(&vlog, vlog_off, "FCGI0")
        .iter()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("FCGI0"))
                .map(|w| w.trim_end_matches(':').to_string())
        })
        .collect();
    let mut ids: std::collections::BTreeMap<String, usize> = Default::default();
    for i in log_ids {
        *ids.entry(i).or_default() += 1;
    }
    let g = |k: &str| status.get(k).cloned().unwrap_or_else(|| "?".into());
    let summary = format!(
        "{what}: {} requests in {:.1}s ({:.0}/s), {errors} errors, slowest {} (p50 {} p99 {}), {} of {} Apache processes served ({minc}..{maxc} requests each), \
         at most {max_held} connections to php-fpm ({} of {samples} samples over 4), php-fpm max listen queue {}; log ids {ids:?}",
        outcomes.len(),
        t_end.as_secs_f64(),
        outcomes.len() as f64 / t_end.as_secs_f64(),
        ms(slowest),
        ms(l.p50),
        ms(l.p99),
        pids.len(),
        children.len(),
        over.lock().unwrap().len(),
        g("max listen queue"),
    );
    let summary = {
        let over = over.lock().unwrap();
        if over.is_empty() {
            summary
        } else {
            format!("{summary}; over 4 e.g. {:?}", &over[..over.len().min(3)])
        }
    };
    // The issue's test: zero errors, the slowest request well under 2 s, every process
    // served; with the cap also its connection count and php-fpm's backlog.
    let mut problems = Vec::new();
    if errors > 0 {
        problems.push(format!(
            "{errors} errors, e.g. {:?}",
            first_errors(&outcomes, 4)
        ));
    }
    if slowest >= Duration::from_secs(2) {
        problems.push(format!("slowest request took {}", ms(slowest)));
    }
    let unserved: Vec<u32> = children
        .iter()
        .copied()
        .filter(|c| !pids.contains_key(c))
        .collect();
    if !unserved.is_empty() {
        problems.push(format!(
            "Apache processes {unserved:?} served no request (per process: {pids:?})"
        ));
    }
    let failing: Vec<(u32, usize)> = pids
        .iter()
        .filter(|(_, c)| c.1 > 0)
        .map(|(p, c)| (*p, c.1))
        .collect();
    if !failing.is_empty() {
        problems.push(format!("non-200 answers per process: {failing:?}"));
    }
    if capped {
        // A sample is not an atomic snapshot: the kernel walks its socket table bucket by
        // bucket (a look takes 7-20 ms here with thousands of TIME_WAIT sockets) while
        // connections close and open, so one socket closed and its successor opened during a
        // look can both be counted. The guard run shows it: 16 prefork children, each holding
        // at most one connection at a time, were seen with up to 25. The module closes a
        // socket before it gives its slot back. Single samples over the cap are tolerated, a
        // sustained excess is not.
        // What the cap protects is php-fpm's backlog: requests queued there wait for a worker.
        let over = over.lock().unwrap();
        if over.len() * 50 > samples.max(1) {
            problems.push(format!(
                "more than 4 connections to php-fpm with -max-conns 4 in {} of {samples} samples (max {max_held}), e.g. {:?}",
                over.len(),
                &over[..over.len().min(3)]
            ));
        }
        let queue: usize = status
            .get("max listen queue")
            .and_then(|v| v.parse().ok())
            .unwrap_or(usize::MAX);
        if queue > 4 {
            problems.push(format!(
                "php-fpm's max listen queue was {queue} (status: {status:?})"
            ));
        }
    }
    StarveRun {
        summary,
        problems,
        requests: outcomes.len(),
    }
}

fn starvation(ctx: &Ctx) -> Result<(), String> {
    let secs = env_num("MFCGI_STARVATION_SECS", 20);
    let mpm = ctx.env.mpm.clone();
    let (procs_n, threads) = if mpm == "prefork" { (16, 1) } else { (4, 16) };
    let cap_port: u16 = ctx.val("pool_starve_cap_port").parse().unwrap();
    let guard_port: u16 = ctx.val("pool_starve_guard_port").parse().unwrap();
    let fcgi_dir = PathBuf::from(ctx.val("pool_fcgi_dir"));
    let docroot = PathBuf::from(ctx.val("pool_docroot"));
    let root = ctx.tmp.join("pool-apache-starve");
    let mut conf = ApacheConf::new(&root, &mpm, &ctx.env.module_so);
    let ports = util::free_ports(2)?;
    let cap = php_chain(
        &fcgi_dir,
        "starve_cap",
        &format!("127.0.0.1:{cap_port}"),
        "-max-conns 4",
    );
    let guard = php_chain(
        &fcgi_dir,
        "starve_guard",
        &format!("127.0.0.1:{guard_port}"),
        "-keep-conn on",
    );
    conf.add_vhost(inst::vhost(&conf, "starve_cap", ports[0], &docroot, &cap));
    conf.add_vhost(inst::vhost(
        &conf,
        "starve_guard",
        ports[1],
        &docroot,
        &guard,
    ));
    let mut apache = Apache::start(ctx, "starve", conf, &mpm, procs_n, threads)?;
    let shape = if mpm == "prefork" {
        format!("prefork {procs_n} processes")
    } else {
        format!("{mpm} {procs_n}x{threads} threads")
    };
    let local = |port| SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let capped = starve_run(
        &apache,
        "starve_cap",
        ports[0],
        local(cap_port),
        secs,
        true,
        &format!("-max-conns 4, {shape}, 32 clients, 5 ms script, pm.max_children=4"),
    );
    println!("    pool: starvation {}", capped.summary);
    let guard = starve_run(
        &apache,
        "starve_guard",
        ports[1],
        local(guard_port),
        secs.min(10),
        false,
        &format!("guard only (-keep-conn on, no -max-conns), {shape}"),
    );
    println!("    pool: starvation {}", guard.summary);
    let crashes = lines_with(&apache.conf.error_log(), 0, "exit signal");
    apache.stop();
    ensure(crashes.is_empty(), || {
        format!("Apache children crashed: {crashes:?}")
    })?;
    ensure(capped.problems.is_empty(), || {
        format!("with -max-conns 4: {}", capped.problems.join("; "))
    })?;
    ensure(guard.problems.is_empty(), || {
        format!("guard only: {}", guard.problems.join("; "))
    })
}

// ------------------------------------------------------------------------------------------
// old generation / dead children

/// A request whose body never comes: the handler waits for its first piece (before it
/// connects to the application), which keeps the Apache child that took it busy.
fn stalled_post(port: u16, host: &str) -> Result<std::net::TcpStream, String> {
    use std::io::Write;
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.write_all(
        format!("POST /hello.php HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100\r\n\r\n")
            .as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    Ok(s)
}

/// `n` concurrent requests to sleep.php?ms=`sleep_ms` (each on its own client connection).
fn concurrent_sleeps(
    port: u16,
    host: &str,
    n: usize,
    sleep_ms: u32,
) -> Vec<Result<Response, String>> {
    let hs: Vec<_> = (0..n)
        .map(|i| {
            let host = host.to_string();
            thread::spawn(move || {
                crate::http::fetch(
                    port,
                    Request::get(&format!("/sleep.php?ms={sleep_ms}&c={i}")).host(&host),
                )
                .map_err(|e| e.to_string())
            })
        })
        .collect();
    hs.into_iter()
        .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
        .collect()
}

fn edge_instance(
    ctx: &Ctx,
    name: &str,
    opts: &str,
    prefork_block: &str,
) -> Result<(Apache, u16, u16), String> {
    let mpm = ctx.env.mpm.clone();
    let fpm_port: u16 = ctx.val("pool_edge_port").parse().unwrap();
    let fcgi_dir = PathBuf::from(ctx.val("pool_fcgi_dir"));
    let docroot = PathBuf::from(ctx.val("pool_docroot"));
    let root = ctx.tmp.join(format!("pool-apache-{name}"));
    let mut conf = ApacheConf::new(&root, &mpm, &ctx.env.module_so);
    let port = util::free_ports(1)?[0];
    let body = php_chain(&fcgi_dir, name, &format!("127.0.0.1:{fpm_port}"), opts);
    conf.add_vhost(inst::vhost(&conf, name, port, &docroot, &body));
    let apache = if mpm == "prefork" {
        Apache::start_with(ctx, name, conf, prefork_block, 4)?
    } else {
        // One process of 16 threads, and room for a second: the worker MPM starts a child of a
        // new generation only within MaxRequestWorkers / ThreadsPerChild process slots, so
        // with room for one it waits for a lingering old child to exit (the event MPM lets a
        // new generation use the slots up to ServerLimit). MinSpareThreads 1: no second child
        // of the first generation is started when one thread is busy.
        let block = "StartServers 1\nServerLimit 4\nThreadsPerChild 16\nMaxRequestWorkers 32\n\
                     MinSpareThreads 1\nMaxSpareThreads 32\nMaxConnectionsPerChild 0\n";
        Apache::start_with(ctx, name, conf, block, 1)?
    };
    Ok((apache, port, fpm_port))
}

/// Bursts of 4 concurrent short requests until 4 connections to php-fpm sit idle in the
/// pool(s). (Requests must answer within 20 ms: a fresh connection unanswered for longer counts
/// as waiting, and while anyone waits finished requests close their connections.)
fn fill_pools(port: u16, host: &str, fpm_port: u16) -> Result<usize, String> {
    let mut held = 0;
    for _ in 0..30 {
        for r in concurrent_sleeps(port, host, 4, 10) {
            expect_status(&r?, 200)?;
        }
        thread::sleep(Duration::from_millis(50));
        held = backend_sockets(fpm_port).held();
        if held >= 4 {
            break;
        }
    }
    Ok(held)
}

/// After a graceful restart the children of the old generation finish what they are doing.
/// One that is busy with a slow client still holds its idle pooled connections — each binds a
/// php-fpm worker — and its reaper only sees the *old* generation's counters, so a request of
/// the new generation that queues in php-fpm's backlog behind them is not noticed: it waits
/// until `-pool-idle-timeout` (5 s by default) closes them. Expected: such a request is served
/// at once (< 1 s), and the instance never holds more than `-max-conns` connections.
fn lingering_child_idle_conns(ctx: &Ctx) -> Result<(), String> {
    // room for a new generation next to 4 busy old children
    let prefork = "StartServers 4\nMinSpareServers 4\nMaxSpareServers 8\nServerLimit 12\nMaxRequestWorkers 12\nMaxConnectionsPerChild 0\n";
    let (mut apache, port, fpm_port) = edge_instance(ctx, "linger", "-max-conns 4", prefork)?;
    let host = "linger.test";
    // four connections to php-fpm, left idle in the pool(s) of the current child(ren)
    let idle_before = fill_pools(port, host, fpm_port)?;
    // keep every current child busy with a client that never sends its body
    let children = apache.children();
    let mut stalls = Vec::new();
    for _ in &children {
        stalls.push(stalled_post(port, host)?);
    }
    thread::sleep(Duration::from_millis(300));
    let old = apache.children();
    apache.graceful(Duration::from_secs(15))?;
    // the new generation is up when a child that was not there before exists
    let t = Instant::now();
    while apache.children().iter().all(|c| old.contains(c)) && t.elapsed() < Duration::from_secs(10)
    {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));
    let lingering = old.iter().filter(|&&c| alive(c)).count();
    let sampler = Sampler::start(Duration::from_millis(5), move || {
        backend_sockets(fpm_port).held()
    });
    let t0 = Instant::now();
    let r = crate::http::fetch(
        port,
        Request::get("/sleep.php?ms=5&after=graceful").host(host),
    );
    let took = t0.elapsed();
    let (max_held, _) = sampler.finish();
    drop(stalls);
    apache.stop();
    let status = match &r {
        Ok(r) => r.status.to_string(),
        Err(e) => e.to_string(),
    };
    println!(
        "    pool: graceful restart with {lingering} busy old-generation child(ren) holding {idle_before} idle connection(s) to a 4-worker php-fpm: \
         a new-generation request took {} ({status}); up to {max_held} connections to php-fpm meanwhile (-max-conns 4)",
        ms(took)
    );
    ensure(idle_before == 4, || {
        format!("setup: expected 4 idle pooled connections before the restart, found {idle_before}")
    })?;
    ensure(lingering > 0, || {
        "setup: no old-generation child lingered after the graceful restart".to_string()
    })?;
    let r = r.map_err(|e| e.to_string())?;
    expect_status(&r, 200)?;
    ensure(took < Duration::from_secs(1), || {
        format!(
            "after a graceful restart a request waited {} in php-fpm's backlog behind connections idle in a lingering old-generation child \
             (their reaper does not see the new generation's waiters; the instance held up to {max_held} connections with -max-conns 4)",
            ms(took)
        )
    })
}

/// A child killed while it holds pooled connections: the kernel closes them, but the
/// instance-wide count of open connections is only decremented by the child that opened them.
/// Expected: the slots come back (requests are served); the failure mode is every request
/// waiting for a free slot until the connect timeout and getting a 503.
fn killed_child_releases_slots(ctx: &Ctx) -> Result<(), String> {
    let prefork = inst::mpm_block("prefork", 4, 1);
    let (mut apache, port, fpm_port) =
        edge_instance(ctx, "kill", "-max-conns 4 -appConnTimeout 3", &prefork)?;
    let host = "kill.test";
    let held_before = fill_pools(port, host, fpm_port)?;
    let victims = kill_children(&apache);
    thread::sleep(Duration::from_millis(500));
    let held_after = backend_sockets(fpm_port).held();
    let mut results = Vec::new();
    for i in 0..3 {
        let t0 = Instant::now();
        let r = crate::http::fetch(
            port,
            Request::get(&format!("/hello.php?after_kill={i}")).host(host),
        );
        results.push((r.map(|r| r.status).map_err(|e| e.to_string()), t0.elapsed()));
    }
    let log = util::read_to_string_lossy(&apache.conf.log_dir.join("kill.error.log"));
    let busy = log
        .lines()
        .filter(|l| l.contains("(-max-conns) busy"))
        .count();
    apache.stop();
    let shown: Vec<String> = results
        .iter()
        .map(|(r, d)| format!("{r:?} in {}", ms(*d)))
        .collect();
    println!(
        "    pool: killed {} child(ren) holding {held_before} pooled connection(s) (then {held_after} open): next requests {shown:?}; {busy} 'all connections busy' log lines",
        victims.len()
    );
    ensure(held_before == 4, || {
        format!("setup: expected 4 pooled connections before the kill, found {held_before}")
    })?;
    ensure(
        results
            .iter()
            .all(|(r, d)| *r == Ok(200) && *d < Duration::from_secs(1)),
        || {
            format!(
                "after SIGKILL of the children holding pooled connections, requests got {shown:?} ({busy} FCGI011 'all 4 connections (-max-conns) busy'): \
             the killed children's -max-conns slots are never given back"
            )
        },
    )
}

/// SIGKILLs every child of `apache` and waits (15 s at most) until the parent has replaced
/// them; returns the killed ones.
fn kill_children(apache: &Apache) -> Vec<u32> {
    let victims = apache.children();
    for &c in &victims {
        // SAFETY: kill(2) on a child of the Apache instance this test started.
        unsafe { libc::kill(c as libc::pid_t, libc::SIGKILL) };
    }
    let t = Instant::now();
    while (apache.children().iter().any(|c| victims.contains(c)) || apache.children().is_empty())
        && t.elapsed() < Duration::from_secs(15)
    {
        thread::sleep(Duration::from_millis(50));
    }
    victims
}

/// A child killed while one of its requests waits in php-fpm's backlog (counted as waiting:
/// stalled): what it leaves in the shared counts must not keep the other processes from
/// pooling for the rest of the generation (while a request waits anywhere, finished requests
/// close their connection so that the waiter gets a php-fpm worker). Expected: after the kill,
/// sequential requests on one client connection reuse one connection to php-fpm.
fn killed_child_with_waiting_request(ctx: &Ctx) -> Result<(), String> {
    let prefork = inst::mpm_block("prefork", 6, 1);
    let (mut apache, port, fpm_port) = edge_instance(ctx, "killwait", "-keep-conn on", &prefork)?;
    let host = "killwait.test";
    // php-fpm has 4 workers: 4 requests hold them for 700 ms, a 5th waits in its backlog
    let busy = thread::spawn(move || concurrent_sleeps(port, host, 5, 700));
    thread::sleep(Duration::from_millis(300));
    let victims = kill_children(&apache);
    let _ = busy.join();
    // php-fpm's workers finish the sleeps of the killed requests
    thread::sleep(Duration::from_millis(1000));
    let mut conn = Conn::connect(port).map_err(|e| e.to_string())?;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let req = Request::get(&format!("/hello.php?after_kill={i}")).host(host);
        let r = conn
            .roundtrip(&req)
            .map_err(|e| format!("request {i}: {e}"))?;
        statuses.push(r.status);
    }
    thread::sleep(Duration::from_millis(100));
    let held = backend_sockets(fpm_port).held();
    apache.stop();
    println!(
        "    pool: killed {} child(ren) while a request waited in php-fpm's backlog: 6 sequential requests after it got {statuses:?}, {held} connection(s) to php-fpm held after them",
        victims.len()
    );
    ensure(statuses.iter().all(|&s| s == 200), || {
        format!("requests after the kill got {statuses:?}")
    })?;
    ensure(held == 1, || {
        format!(
            "after the kill, 6 sequential requests left {held} pooled connection(s) to php-fpm, want 1: \
             the killed child's waiting request is still counted, so every request closes its connection"
        )
    })
}

/// Debian's mpm-itk: `MFCGI_MPM_ITK_SO`, else the copy `make deps-test` unpacks from the
/// `libapache2-mpm-itk` package under `target/test-deps/mpm-itk` (installing the package would
/// switch the system's Apache to prefork), else an installed one.
fn mpm_itk_so(ctx: &Ctx) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match std::env::var_os("MFCGI_MPM_ITK_SO") {
        Some(so) => vec![PathBuf::from(so)],
        None => vec![
            ctx.env
                .manifest_dir
                .join("target/test-deps/mpm-itk/usr/lib/apache2/modules/mpm_itk.so"),
            PathBuf::from("/usr/lib/apache2/modules/mpm_itk.so"),
        ],
    };
    candidates.iter().find(|c| c.is_file()).cloned().ok_or_else(|| {
        format!(
            "mpm-itk not found ({candidates:?}): `make deps-test` unpacks Debian's libapache2-mpm-itk under target/test-deps"
        )
    })
}

/// mpm-itk (prefork underneath) forks a process for every client connection from the child
/// that accepted it and ends it with the connection; the child itself serves nothing. A forked
/// process has no reaper thread (threads do not survive fork), so nothing would expire its
/// pooled connections or give them up to another process, and a reaper in the child could be
/// copied into the fork holding one of its locks. Expected: the pool is off there with a
/// startup warning naming the server (FCGI007), every request opens its own connection
/// (php-fpm's workers are never held by an idle connection), the children run no thread
/// besides their own, and requests on kept-alive and concurrent client connections are served
/// without an error — with mpm-itk loaded before this module, whose hook on the directory
/// walk's stat calls would otherwise answer "no such file" for the virtual path (404). Runs in
/// the prefork pass only (mpm-itk requires prefork).
fn mpm_itk(ctx: &Ctx) -> Result<(), String> {
    if ctx.env.mpm != "prefork" {
        println!("    pool: mpm-itk: runs in the prefork pass (mpm-itk requires prefork)");
        return Ok(());
    }
    let itk_so = mpm_itk_so(ctx)?;
    let fpm_port: u16 = ctx.val("pool_edge_port").parse().unwrap();
    let relay = Relay::start(
        util::free_ports(1)?[0],
        SocketAddr::from(([127, 0, 0, 1], fpm_port)),
    )?;
    let fcgi_dir = PathBuf::from(ctx.val("pool_fcgi_dir"));
    let docroot = PathBuf::from(ctx.val("pool_docroot"));
    let root = ctx.tmp.join("pool-apache-itk");
    let mut conf = ApacheConf::new(&root, "prefork", &ctx.env.module_so);
    // loaded before this module, unlike Debian's alphabetical mods-enabled order: both hook
    // the directory walk's stat calls, and mpm-itk's must not answer for the virtual path
    conf.load_before
        .push(format!("LoadModule mpm_itk_module {}", q(p(&itk_so))));
    let port = util::free_ports(1)?[0];
    let mut body = php_chain(
        &fcgi_dir,
        "itk",
        &format!("127.0.0.1:{}", relay.port),
        "-max-conns 4 -appConnTimeout 3",
    );
    body.push_str("AssignUserID www-data www-data\n");
    conf.add_vhost(inst::vhost(&conf, "itk", port, &docroot, &body));
    let log = conf.error_log();
    let access = conf.access_log();
    // a child per client connection (6 below, kept alive), and spares
    let block = inst::mpm_block("prefork", 8, 1);
    let mut apache = Apache::start_with(ctx, "itk", conf, &block, 8)?;
    let host = "itk.test";
    let run = || -> Result<String, String> {
        // kept-alive: one forked process serves the whole client connection
        let before = relay.count();
        let mut c = Conn::connect(port).map_err(|e| e.to_string())?;
        for i in 0..50 {
            let r = c
                .roundtrip(&Request::get(&format!("/hello.php?itk={i}")).host(host))
                .map_err(|e| format!("kept-alive request {i}: {e}"))?;
            expect_status(&r, 200)?;
            check_hello(&Request::get("/"), &r)?;
        }
        drop(c);
        thread::sleep(Duration::from_millis(100));
        let opened = relay.count() - before;
        ensure(opened == 50, || {
            format!(
                "50 requests on one kept-alive client connection under mpm-itk opened {opened} application connection(s), expected one each (no pool in a process forked per connection)"
            )
        })?;
        // the children: their own thread only
        let children = apache.children();
        let threads: Vec<(u32, usize)> = children
            .iter()
            .map(|&c| {
                let n = std::fs::read_dir(format!("/proc/{c}/task")).map_or(0, |d| d.count());
                (c, n)
            })
            .collect();
        ensure(
            !threads.is_empty() && threads.iter().all(|&(_, n)| n == 1),
            || {
                format!(
                    "children and their thread counts: {threads:?} (expected 1 each: no reaper thread in a child mpm-itk forks from)"
                )
            },
        )?;
        // concurrent clients, kept-alive and not
        let host2 = host.to_string();
        let make: MakeReq =
            Arc::new(move |t, n| Request::get(&format!("/hello.php?t={t}&n={n}")).host(&host2));
        let check: CheckResp = Arc::new(|q: &Request, r: &Response| {
            expect_status(r, 200)?;
            check_hello(q, r)
        });
        let ka = Load::start(port, 3, true, make.clone(), check.clone());
        let fresh = Load::start(port, 3, false, make, check);
        thread::sleep(Duration::from_secs(2));
        let mut outcomes = ka.finish();
        outcomes.extend(fresh.finish());
        let errs = first_errors(&outcomes, 5);
        ensure(errs.is_empty(), || {
            format!("errors under load through mpm-itk: {errs:?}")
        })?;
        // More client connections (each a process of its own) than the shared table of
        // processes has entries (1024), then processes killed while they hold their
        // connections: their -max-conns slots must come back, as with a killed child. (The
        // build before kept each forked process's entry after it exited: once the table was
        // full, a new process's connections were counted in no entry, and a killed one's
        // slots were lost for good: every request then waited for a slot and got a 503.)
        let t_many = Instant::now();
        for i in 0..1100 {
            let r = crate::http::fetch(
                port,
                Request::get(&format!("/hello.php?fresh={i}")).host(host),
            )
            .map_err(|e| format!("request {i} on a fresh connection: {e}"))?;
            expect_status(&r, 200)?;
        }
        let many = t_many.elapsed();
        let victims: Vec<_> = (0..4)
            .map(|i| {
                thread::spawn(move || {
                    let _ = crate::http::fetch(
                        port,
                        Request::get(&format!("/sleep.php?ms=1000&victim={i}")).host(host),
                    );
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(400));
        let kids = apache.children();
        let forked: Vec<u32> = kids.iter().flat_map(|&k| procs::children_of(k)).collect();
        for &f in &forked {
            // SAFETY: kill(2) on a process of the Apache instance this test started.
            unsafe { libc::kill(f as libc::pid_t, libc::SIGKILL) };
        }
        for v in victims {
            let _ = v.join();
        }
        let mut after = Vec::new();
        for i in 0..3 {
            let t0 = Instant::now();
            let r = crate::http::fetch(
                port,
                Request::get(&format!("/hello.php?after_kill={i}")).host(host),
            )
            .map_err(|e| format!("request {i} after the kill: {e}"))?;
            after.push(format!("{} in {}", r.status, ms(t0.elapsed())));
            ensure(r.status == 200, || {
                format!(
                    "after 1100 client connections and {} forked processes killed while holding their -max-conns slots, requests get {after:?} (slots lost)",
                    forked.len()
                )
            })?;
        }
        ensure(forked.len() == 4, || {
            format!("setup: expected the 4 forked processes of the slow requests, found {forked:?}")
        })?;
        Ok(format!(
            "{} application connections for 50 kept-alive requests; children {threads:?}; {}; 1100 fresh connections in {}; {} forked processes killed holding slots, then {after:?}",
            opened,
            load_report(&outcomes, 2.0),
            ms(many),
            forked.len()
        ))
    };
    let res = run();
    apache.stop();
    let res = res?;
    let warned = util::read_to_string_lossy(&log)
        .lines()
        .filter(|l| l.contains("FCGI007") && l.contains("itk.fcgi"))
        .count();
    println!("    pool: mpm-itk: {res}; FCGI007 lines {warned}");
    ensure(warned >= 1, || {
        format!(
            "no FCGI007 warning that the pool is off under mpm-itk; error log:\n{}",
            util::tail(&log, 20)
        )
    })?;
    let mut bad = bad_log_lines(&log, 0);
    // (mpm-itk reports a forked process that died or could not change its user; the four
    // killed on purpose above are expected)
    bad.extend(
        util::read_to_string_lossy(&log)
            .lines()
            .filter(|l| l.contains("[mpm_itk:") && !l.contains("child died with signal 9"))
            .map(str::to_string),
    );
    ensure(bad.is_empty(), || format!("error log: {bad:?}"))?;
    let served = inst::served(&access, &format!("{host}:{port}"), 0).len();
    ensure(served >= 50, || {
        format!("access log shows {served} requests")
    })
}
