//! `-adapt on`: the adaptive limit within `-max-conns`, through Apache and php-fpm. Requests
//! that sleep get every slot; requests that keep the CPUs busy get fewer (the others wait in
//! Apache); and slots held by long requests never stall the quick ones. The limit in force is
//! read from mod_status (`AdaptiveLimit`).

use crate::check::{ensure, expect_status, p};
use crate::fpm::Pool;
use crate::harness::{Builder, Ctx, Suite, test};
use crate::http::Request;
use crate::procs::Endpoint;
use crate::status::{auto, num};
use crate::util::{self, q};
use std::time::{Duration, Instant};

pub const SUITE: Suite = Suite {
    name: "adapt",
    setup,
    tests: &[
        // in this order: the first learns the base and climbs, the second brings the limit
        // down, the third needs it down
        test("adapt_sleeping_requests_get_every_slot", sleeping),
        test("adapt_cpu_bound_requests_get_fewer_slots", cpu_bound),
        test("adapt_long_requests_do_not_stall_quick_ones", long_requests),
    ],
};

const MAX_CONNS: u32 = 8;
/// Concurrent clients (prefork serves at most 16 at once; the status page needs one).
const CLIENTS: usize = 12;

const SLEEP_PHP: &str = "<?php\nusleep((int)($_GET['ms'] ?? 5) * 1000);\nheader('Content-Type: text/plain');\necho \"slept\\n\";\n";
/// A fixed amount of CPU work: `n` thousand MD5s (about 0.1 ms per thousand here).
const BUSY_PHP: &str = "<?php\n$n = (int)($_GET['n'] ?? 10) * 1000;\n$x = '';\nfor ($i = 0; $i < $n; $i++) { $x = md5($x); }\nheader('Content-Type: text/plain');\necho \"busy\\n\";\n";

fn setup(b: &mut Builder) -> Result<(), String> {
    let sock = b.tmp.join("run").join("adapt.sock");
    let mut pool = Pool::new(
        "adapt",
        "www-data",
        "www-data",
        Endpoint::Unix(sock.clone()),
    );
    pool.max_children = MAX_CONNS;
    b.pool(pool);
    let docroot = b.docroot("adapt")?;
    util::write_file(&docroot.join("sleep.php"), SLEEP_PHP)?;
    util::write_file(&docroot.join("busy.php"), BUSY_PHP)?;
    let vdir = b.tmp.join("adapt-fcgi"); // never created
    let vpath = vdir.join("php.fcgi");
    let port = b.port()?;
    b.vhost(
        "adapt_app",
        port,
        "adapt-app.test",
        &docroot,
        &format!(
            "AddType application/x-httpd-fastphp .php\n\
             Action application/x-httpd-fastphp /php.fcgi\n\
             Alias /php.fcgi {vp}\n\
             FastCgiExternalServer {vp} -socket {s} -max-conns {MAX_CONNS} -adapt on\n\
             <Directory {vd}>\n    Require all granted\n</Directory>\n\
             <Location /server-status>\n    SetHandler server-status\n</Location>\n",
            vp = q(p(&vpath)),
            s = q(p(&sock)),
            vd = q(p(&vdir)),
        ),
    );
    b.set("adapt_path", p(&vpath));
    Ok(())
}

/// The adaptive limit now.
fn limit(ctx: &Ctx) -> Result<u64, String> {
    let m = auto(ctx, "adapt_app", ctx.val("adapt_path"))?;
    ensure(m.get("Adaptive").map(String::as_str) == Some("on"), || {
        format!("Adaptive: {m:?}")
    })?;
    num(&m, "AdaptiveLimit")
}

/// CLIENTS keep-alive clients requesting `target` for `secs`; returns the responses (all 200)
/// and the limit seen every 250 ms meanwhile.
fn load(ctx: &Ctx, target: &str, secs: f64) -> Result<(u64, Vec<u64>), String> {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..CLIENTS)
            .map(|k| {
                sc.spawn(move || -> Result<u64, String> {
                    let mut conn = ctx.connect("adapt_app")?;
                    let mut n = 0;
                    while Instant::now() < until {
                        if n > 0 && n % 500 == 0 {
                            // (Apache ends a keep-alive connection after MaxKeepAliveRequests)
                            conn = ctx.connect("adapt_app")?;
                        }
                        let r = conn
                            .roundtrip(
                                &Request::get(&format!("{target}&k={k}&n={n}"))
                                    .host("adapt-app.test"),
                            )
                            .map_err(|e| format!("client {k} request {n}: {e}"))?;
                        expect_status(&r, 200)?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        let mut seen = Vec::new();
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(250));
            seen.push(limit(ctx)?);
        }
        let mut total = 0;
        for h in hs {
            total += h
                .join()
                .map_err(|_| "client thread panicked".to_string())??;
        }
        Ok((total, seen))
    })
}

/// Requests that sleep 20 ms use no CPU: the limit climbs from 1 to (nearly) all 8 slots, and
/// the throughput shows it (one slot: at most 50 requests per second).
fn sleeping(ctx: &Ctx) -> Result<(), String> {
    // a static file first, so that prefork has its children running before the measurement
    // (it starts one more per second at first); the limit is not touched by it
    load(ctx, "/static.txt?warm=1", 1.5)?;
    let secs = 3.0;
    let (n, seen) = load(ctx, "/sleep.php?ms=20", secs)?;
    let per_sec = n as f64 / secs;
    println!("    adapt: sleep 20 ms x {CLIENTS} clients: {per_sec:.0} req/s, limit seen {seen:?}");
    let end = limit(ctx)?;
    ensure(end >= u64::from(MAX_CONNS) - 2, || {
        format!("the limit stayed at {end} of {MAX_CONNS} for requests that sleep ({seen:?})")
    })?;
    // 8 slots: up to 400/s; 3 or fewer: at most 150/s
    ensure(per_sec > 200.0, || {
        format!("{per_sec:.0} req/s of 20 ms sleeps with {MAX_CONNS} slots ({seen:?})")
    })
}

/// Requests that each need about 10 ms of CPU: on this 2-CPU machine (shared with Apache and
/// the clients) more than a few at once only slow each other down, and the limit comes down.
fn cpu_bound(ctx: &Ctx) -> Result<(), String> {
    let (n, seen) = load(ctx, "/busy.php?n=100", 4.0)?;
    println!("    adapt: ~10 ms of CPU x {CLIENTS} clients: {n} requests, limit seen {seen:?}");
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    // the last half of the samples (the first ones may still be coming down)
    let tail = &seen[seen.len() / 2..];
    let mut sorted = tail.to_vec();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(u64::MAX);
    ensure(median <= 2 * cpus && median < u64::from(MAX_CONNS), || {
        format!(
            "CPU-bound requests: limit {median} (of {MAX_CONNS}, {cpus} CPUs) in the second half: {seen:?}"
        )
    })
}

/// With the limit down (after `cpu_bound`), limit + 1 requests that take 1.5 s hold every
/// allowed slot and more: a quick request must not wait for them (nothing finishes for 20 ms:
/// the limit grows by one).
fn long_requests(ctx: &Ctx) -> Result<(), String> {
    let now = limit(ctx)?;
    ensure(now + 1 < u64::from(MAX_CONNS), || {
        format!("the limit is {now}: too high to test with {MAX_CONNS} slots")
    })?;
    let long = now as usize + 1;
    std::thread::scope(|sc| -> Result<(), String> {
        let hs: Vec<_> = (0..long)
            .map(|k| {
                sc.spawn(move || -> Result<(), String> {
                    let r = ctx.get("adapt_app", &format!("/sleep.php?ms=1500&long={k}"))?;
                    expect_status(&r, 200)
                })
            })
            .collect();
        // let the long ones take their slots
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        let r = ctx.get("adapt_app", "/sleep.php?ms=1&quick=1")?;
        let took = t.elapsed();
        expect_status(&r, 200)?;
        println!(
            "    adapt: {long} requests of 1.5 s on a limit of {now}: a quick one took {took:?}"
        );
        ensure(took < Duration::from_millis(800), || {
            format!("a quick request waited {took:?} behind {long} long ones (limit was {now})")
        })?;
        for h in hs {
            h.join()
                .map_err(|_| "client thread panicked".to_string())??;
        }
        Ok(())
    })
}
