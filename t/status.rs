//! The module's section in mod_status (`/server-status`, `?auto`, `?notable`): per
//! FastCgiExternalServer, the pool's state and the totals since the configuration was loaded,
//! checked against traffic whose counts are known.

use crate::check::{ensure, expect_status, p};
use crate::fpm::Pool;
use crate::harness::{Builder, Ctx, Suite, test};
use crate::http::Request;
use crate::procs::Endpoint;
use crate::util::{self, q};

pub const SUITE: Suite = Suite {
    name: "status",
    setup,
    tests: &[
        test("status_counts_requests_and_reuse", counts),
        test("status_counts_failures", failures),
        test("status_counts_client_aborts", client_aborts),
        test("status_counts_backlogged_and_stalled", backlogged),
        test(
            "status_replayed_stalled_request_not_left_waiting",
            replayed_stalled,
        ),
        test("status_binding_cap_hands_connections_over", binding_cap),
        test("status_html_and_notable", html),
    ],
};

const MAX_CONNS: u32 = 3;

/// A listener that never accepts: connections to it wait in its backlog (kept open for the
/// whole run).
static NEVER_ACCEPTS: std::sync::OnceLock<std::net::TcpListener> = std::sync::OnceLock::new();

fn setup(b: &mut Builder) -> Result<(), String> {
    let run = b.tmp.join("run");
    let sock = run.join("status.sock");
    let mut pool = Pool::new(
        "status",
        "www-data",
        "www-data",
        Endpoint::Unix(sock.clone()),
    );
    pool.max_children = MAX_CONNS;
    b.pool(pool);
    let docroot = b.docroot("status")?;
    let vdir = b.tmp.join("status-fcgi"); // never created
    let (ok_path, dead_path) = (vdir.join("app<&>.fcgi"), vdir.join("dead.fcgi"));
    let chain = |vpath: &std::path::Path, url: &str, opts: &str| {
        format!(
            "AddType application/x-httpd-fastphp .php\n\
             Action application/x-httpd-fastphp {url}\n\
             Alias {url} {vp}\n\
             FastCgiExternalServer {vp} {opts}\n\
             <Directory {vd}>\n    Require all granted\n</Directory>\n",
            vp = q(p(vpath)),
            vd = q(p(&vdir)),
        )
    };
    let port = b.port()?;
    b.vhost(
        "status_app",
        port,
        "status-app.test",
        &docroot,
        &chain(
            &ok_path,
            "/app.fcgi",
            &format!("-socket {} -max-conns {MAX_CONNS}", q(p(&sock))),
        ),
    );
    // one slot for the whole instance: requests queue, and a request that ends hands its
    // connection to a waiter of its own process
    let port = b.port()?;
    b.vhost(
        "status_cap",
        port,
        "status-cap.test",
        &docroot,
        &chain(
            &vdir.join("cap.fcgi"),
            "/cap.fcgi",
            &format!("-socket {} -max-conns 1", q(p(&sock))),
        ),
    );
    b.set("status_cap_path", p(&vdir.join("cap.fcgi")));
    // nothing listens there: every request is a 503 (logged: `err_`)
    let port = b.port()?;
    b.vhost(
        "err_status_dead",
        port,
        "status-dead.test",
        &docroot,
        &chain(
            &dead_path,
            "/dead.fcgi",
            &format!(
                "-socket {} -keep-conn off",
                q(p(&run.join("status-nothing.sock")))
            ),
        ),
    );
    // the pool without -max-conns in front of an application that never accepts: requests
    // wait in its backlog, are counted as such, and end in the idle timeout (504, logged)
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?;
    let _ = NEVER_ACCEPTS.set(listener);
    let stuck_path = vdir.join("stuck.fcgi");
    let port = b.port()?;
    b.vhost(
        "err_status_stuck",
        port,
        "status-stuck.test",
        &docroot,
        &chain(
            &stuck_path,
            "/stuck.fcgi",
            &format!("-host {addr} -keep-conn on -idle-timeout 1"),
        ),
    );
    b.set("status_stuck_path", p(&stuck_path));
    // the pool without -max-conns in front of an application that leaves its first connection
    // unread (the request is marked stalled) and then resets it, as php-fpm stopping does; the
    // request is replayed on a second connection, which is answered
    let addr = resets_first_then_answers()?;
    let replay_path = vdir.join("replay.fcgi");
    let port = b.port()?;
    b.vhost(
        "status_replay",
        port,
        "status-replay.test",
        &docroot,
        &chain(
            &replay_path,
            "/replay.fcgi",
            &format!("-host {addr} -keep-conn on"),
        ),
    );
    b.set("status_replay_path", p(&replay_path));
    // the status page itself, on a docroot no FastCgiExternalServer covers
    let page_root = b.tmp.join("htdocs/status-page");
    util::mkdir_p(&page_root)?;
    let port = b.port()?;
    b.vhost(
        "status_page",
        port,
        "status-page.test",
        &page_root,
        "<Location /server-status>\n    SetHandler server-status\n</Location>\n",
    );
    b.set("status_ok_path", p(&ok_path));
    b.set("status_dead_path", p(&dead_path));
    Ok(())
}

/// The `?auto` lines of the definition whose path is `path`: name (without the
/// `FastCGIServer<n>` prefix) → value.
pub fn auto(ctx: &Ctx, path: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let r = ctx.get("status_page", "/server-status?auto")?;
    expect_status(&r, 200)?;
    let text = r.text();
    let prefix = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            (k.starts_with("FastCGIServer") && k.ends_with("Path") && v == path)
                .then(|| k.trim_end_matches("Path").to_string())
        })
        .ok_or_else(|| format!("no FastCGIServer<n>Path: {path} in ?auto:\n{text}"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            let name = k.strip_prefix(&prefix)?;
            // FastCGIServer1 must not match FastCGIServer10
            (!name.starts_with(|c: char| c.is_ascii_digit()))
                .then(|| (name.to_string(), v.to_string()))
        })
        .collect())
}

pub fn num(m: &std::collections::BTreeMap<String, String>, k: &str) -> Result<u64, String> {
    m.get(k)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no numeric {k} in {m:?}"))
}

fn counts(ctx: &Ctx) -> Result<(), String> {
    let path = ctx.val("status_ok_path");
    let before = auto(ctx, path)?;
    let n = 30u64;
    let mut conn = ctx.connect("status_app")?;
    for i in 0..n {
        let r = conn
            .roundtrip(&Request::get(&format!("/info.php?i={i}")).host("status-app.test"))
            .map_err(|e| format!("request {i}: {e}"))?;
        expect_status(&r, 200)?;
    }
    let after = auto(ctx, path)?;
    let d = |k: &str| -> Result<u64, String> { Ok(num(&after, k)? - num(&before, k)?) };
    ensure(d("Requests")? == n, || {
        format!(
            "Requests went up by {}, {n} were sent: {after:?}",
            d("Requests").unwrap_or(0)
        )
    })?;
    ensure(d("Connects")? + d("Reuses")? == n, || {
        format!("Connects + Reuses != {n}: {after:?}")
    })?;
    // sequential requests need one connection; each child that served some opened its own
    ensure(d("Connects")? <= 4 && d("Reuses")? >= n - 4, || {
        format!("the pool was not used: {after:?}")
    })?;
    ensure(d("Failures")? == 0 && d("Replays")? == 0, || {
        format!("failures or replays on a healthy backend: {after:?}")
    })?;
    ensure(after.get("Pool").map(|s| s.as_str()) == Some("on"), || {
        format!("Pool: {:?}", after.get("Pool"))
    })?;
    ensure(num(&after, "MaxConns")? == u64::from(MAX_CONNS), || {
        format!("MaxConns: {after:?}")
    })?;
    ensure(num(&after, "OpenConns")? <= u64::from(MAX_CONNS), || {
        format!("more connections open than -max-conns: {after:?}")
    })
}

fn failures(ctx: &Ctx) -> Result<(), String> {
    let path = ctx.val("status_dead_path");
    let before = auto(ctx, path)?;
    for _ in 0..3 {
        let r = ctx.get("err_status_dead", "/info.php")?;
        expect_status(&r, 503)?;
    }
    let after = auto(ctx, path)?;
    let d = |k: &str| -> Result<u64, String> { Ok(num(&after, k)? - num(&before, k)?) };
    ensure(
        d("Requests")? == 3 && d("Failures")? == 3 && d("Connects")? == 0,
        || format!("3 requests to a server that is not there: {after:?}"),
    )?;
    ensure(after.get("Pool").map(|s| s.as_str()) == Some("off"), || {
        format!("Pool: {:?}", after.get("Pool"))
    })
}

/// A request whose new connection is never taken by the application: `Backlogged` (looked at
/// after 1 ms) and `Stalled` (after 20 ms) count it once each, the idle timeout ends it with a
/// 504, and it no longer counts as waiting afterwards.
fn backlogged(ctx: &Ctx) -> Result<(), String> {
    let path = ctx.val("status_stuck_path");
    let before = auto(ctx, path)?;
    let r = ctx.get("err_status_stuck", "/info.php")?;
    expect_status(&r, 504)?;
    let after = auto(ctx, path)?;
    let d = |k: &str| -> Result<u64, String> { Ok(num(&after, k)? - num(&before, k)?) };
    ensure(
        d("Requests")? == 1
            && d("Connects")? == 1
            && d("Backlogged")? == 1
            && d("Stalled")? == 1
            && d("Failures")? == 1,
        || format!("one request left in the backlog: before {before:?}, after {after:?}"),
    )?;
    ensure(num(&after, "Waiting")? == 0, || {
        format!("still counted as waiting after it ended: {after:?}")
    })
}

/// An application on 127.0.0.1 whose every other connection is held unread for 150 ms and
/// then reset; the others get their request read and a short answer.
fn resets_first_then_answers() -> Result<std::net::SocketAddr, String> {
    use crate::fakefcgi::{raw_record, rtype};
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = l.local_addr().map_err(|e| format!("local_addr: {e}"))?;
    std::thread::spawn(move || {
        for (n, s) in l.incoming().enumerate() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                if n % 2 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(150));
                    crate::pool_fcgi::reset_close(s);
                    return;
                }
                // read records up to the empty STDIN one
                loop {
                    let mut h = [0u8; 8];
                    if s.read_exact(&mut h).is_err() {
                        return;
                    }
                    let len = u16::from_be_bytes([h[4], h[5]]) as usize + h[6] as usize;
                    let mut c = vec![0u8; len];
                    if s.read_exact(&mut c).is_err() {
                        return;
                    }
                    if h[1] == rtype::STDIN && len == 0 {
                        break;
                    }
                }
                let mut out = raw_record(
                    1,
                    rtype::STDOUT,
                    1,
                    b"Content-Type: text/plain\r\n\r\nok",
                    0,
                );
                out.extend_from_slice(&raw_record(1, rtype::STDOUT, 1, b"", 0));
                out.extend_from_slice(&raw_record(1, rtype::END_REQUEST, 1, &[0; 8], 0));
                let _ = s.write_all(&out);
            });
        }
    });
    Ok(addr)
}

/// A request marked as waiting for the application (stalled: 150 ms unread on a fresh
/// connection) and then replayed on another connection after a reset is not counted as
/// waiting once it was served: a leftover count would make every process close its idle
/// connections (the starvation guard) until the child exits.
fn replayed_stalled(ctx: &Ctx) -> Result<(), String> {
    let path = ctx.val("status_replay_path");
    let before = auto(ctx, path)?;
    let r = ctx.get("status_replay", "/info.php")?;
    expect_status(&r, 200)?;
    ensure(r.text() == "ok", || {
        format!("unexpected answer {}", r.summary())
    })?;
    let after = auto(ctx, path)?;
    let d = |k: &str| -> Result<u64, String> { Ok(num(&after, k)? - num(&before, k)?) };
    ensure(
        d("Requests")? == 1 && d("Connects")? == 2 && d("Replays")? == 1 && d("Stalled")? == 1,
        || format!("one request, stalled and replayed: before {before:?}, after {after:?}"),
    )?;
    ensure(num(&after, "Waiting")? == 0, || {
        format!("still counted as waiting after it was served: {after:?}")
    })
}

fn html(ctx: &Ctx) -> Result<(), String> {
    let r = ctx.get("status_page", "/server-status")?;
    expect_status(&r, 200)?;
    let t = r.text();
    let ok = ctx
        .val("status_ok_path")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    ensure(
        t.contains("FastCGI external servers") && t.contains(&format!("<td>{ok}</td>")),
        || format!("no row for {ok} (HTML-escaped) in /server-status:\n{t}"),
    )?;
    ensure(!t.contains("app<&>.fcgi"), || {
        "the path was not escaped".into()
    })?;
    ensure(t.contains(&format!("on, -max-conns {MAX_CONNS}")), || {
        "pool settings missing".into()
    })?;
    let plain = ctx.get("status_page", "/server-status?notable")?;
    ensure(
        !plain.text().contains("<th>Virtual path</th>")
            && plain.text().contains(&format!("<h3>{ok}</h3>")),
        || format!("?notable: {}", plain.summary()),
    )
}

fn client_aborts(ctx: &Ctx) -> Result<(), String> {
    use std::io::Read;
    let path = ctx.val("status_ok_path");
    let before = num(&auto(ctx, path)?, "ClientAborts")?;
    // 32 MiB asked for, a few KiB read, connection closed: the module meets the closed client
    // when it passes the next part of the answer on
    let mut conn = ctx.connect("status_app")?;
    conn.send_raw(
        &Request::get("/big.php?mb=32")
            .host("status-app.test")
            .to_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let _ = conn.stream().read(&mut buf);
    drop(conn);
    let deadline = std::time::Instant::now()
        + ctx.scaled(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(60),
        );
    loop {
        let now = num(&auto(ctx, path)?, "ClientAborts")?;
        if now > before {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "ClientAborts stayed at {now} after a client went away mid-answer"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Under a binding `-max-conns`, connections go from request to request: a request that ends
/// hands its connection to a queued request of its own process instead of closing it (only a
/// waiter in another process that has waited longer gets a new connection). A regression that
/// closed handed-over connections made most requests open one (`Connects` ≈ 60% of `Requests`
/// with one slot and 8 clients; with hand-overs working, 10-20%).
fn binding_cap(ctx: &Ctx) -> Result<(), String> {
    let path = ctx.val("status_cap_path");
    let before = auto(ctx, path)?;
    let (clients, each) = (8usize, 40usize);
    // several keep-alive clients at once need several processes or threads: one process under
    // valgrind (-X), one request at a time per prefork child
    let concurrent = !ctx.env.valgrind && ctx.env.mpm != "prefork";
    // Apache and php-fpm on one CPU, as on a small server (and as in the benchmark that found
    // the regression): there a thread woken by a hand-over competes with everything else
    let pinned = if concurrent {
        pin_servers(ctx, "0")
    } else {
        Vec::new()
    };
    let result = run_binding_cap(ctx, concurrent, clients, each);
    for (pid, mask) in pinned {
        let _ = std::process::Command::new("taskset")
            .args(["-a", "-p", &mask, &pid.to_string()])
            .output();
    }
    let sent = result?;
    let after = auto(ctx, path)?;
    let d = |k: &str| -> Result<u64, String> { Ok(num(&after, k)? - num(&before, k)?) };
    check_binding_cap(concurrent, clients, each, sent, &after, &d)
}

/// Pins Apache's children and php-fpm's processes (all threads) to `cpus`; returns their
/// previous masks (hex, as `taskset -p` prints them) to restore.
fn pin_servers(ctx: &Ctx, cpus: &str) -> Vec<(u32, String)> {
    let fpm = ctx.fpm.lock().map(|s| s.pid).unwrap_or(0);
    let mut pids = ctx.apache_children();
    pids.push(fpm);
    pids.extend(crate::procs::children_of(fpm));
    let mut old = Vec::new();
    for pid in pids {
        let Ok(out) = std::process::Command::new("taskset")
            .args(["-p", &pid.to_string()])
            .output()
        else {
            continue;
        };
        // "pid 123's current affinity mask: 3"
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let Some(mask) = text.rsplit(": ").next().map(|m| m.trim().to_string()) else {
            continue;
        };
        if std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid.to_string()])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            old.push((pid, mask));
        }
    }
    old
}

/// Sends the requests; returns how many.
fn run_binding_cap(
    ctx: &Ctx,
    concurrent: bool,
    clients: usize,
    each: usize,
) -> Result<u64, String> {
    if !concurrent {
        let n = clients * each / 4;
        for i in 0..n {
            let r = ctx.req(
                "status_cap",
                Request::get(&format!("/info.php?i={i}")).close(),
            )?;
            expect_status(&r, 200)?;
        }
        return Ok(n as u64);
    }
    std::thread::scope(|sc| -> Result<(), String> {
        let hs: Vec<_> = (0..clients)
            .map(|k| {
                sc.spawn(move || -> Result<(), String> {
                    let mut conn = ctx.connect("status_cap")?;
                    for i in 0..each {
                        let r = conn
                            .roundtrip(
                                &Request::get(&format!("/info.php?k={k}&i={i}"))
                                    .host("status-cap.test"),
                            )
                            .map_err(|e| format!("client {k} request {i}: {e}"))?;
                        expect_status(&r, 200)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join()
                .map_err(|_| "client thread panicked".to_string())??;
        }
        Ok(())
    })?;
    Ok((clients * each) as u64)
}

fn check_binding_cap(
    concurrent: bool,
    clients: usize,
    each: usize,
    sent: u64,
    after: &std::collections::BTreeMap<String, String>,
    d: &dyn Fn(&str) -> Result<u64, String>,
) -> Result<(), String> {
    ensure(d("Requests")? == sent && d("Failures")? == 0, || {
        format!("{sent} requests under -max-conns 1: {after:?}")
    })?;
    ensure(num(after, "OpenConns")? <= 1, || {
        format!("more than the one connection open: {after:?}")
    })?;
    if concurrent {
        let (connects, queued) = (d("Connects")?, d("Queued")?);
        println!(
            "    status: -max-conns 1, {clients} clients x {each}: {connects} new connections, {} reuses, {queued} waited for the slot",
            d("Reuses")?
        );
        ensure(queued > 0, || {
            format!("no request waited for the one slot with {clients} clients: {after:?}")
        })?;
        ensure(connects * 100 <= sent * 35, || {
            format!(
                "{connects} of {sent} requests opened a new connection under -max-conns 1: hand-overs to waiters failed ({after:?})"
            )
        })?;
    }
    Ok(())
}
