//! Self-test of the harness' HTTP client against a scripted in-process server (no Apache): the
//! later fault-injection and timing tests rely on it detecting cut-short bodies and on its
//! arrival timestamps.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use crate::check::ensure;
use crate::harness::{Ctx, Suite, test};
use crate::http::{Conn, Framing, HttpError, Request};
use crate::valgrind;

pub const SUITE: Suite = Suite {
    name: "selftest",
    setup: |_| Ok(()),
    tests: &[
        test("harness_http_client_selftest", http_client_selftest),
        test("harness_valgrind_log_checker", valgrind_log_checker),
    ],
};

/// A memcheck log in valgrind 3.19's format: three memory errors in the program itself, one
/// definite leak through the module, one through unknown (unloaded, unsymbolised) code, one
/// through httpd.
const VG_BAD: &str = "\
==1568== Memcheck, a memory error detector
==1568== Command: /usr/sbin/apache2 -f /tmp/x/conf/httpd.conf -X
==1568== 
==1568== Invalid write of size 1
==1568==    at 0x109197: main (main.c:8)
==1568==  Address 0x4a40048 is 0 bytes after a block of size 8 alloc'd
==1568==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==1568==    by 0x10918A: main (main.c:7)
==1568== 
==1568== Conditional jump or move depends on uninitialised value(s)
==1568==    at 0x10919E: main (main.c:9)
==1568== 
==1568== Invalid free() / delete / delete[] / realloc()
==1568==    at 0x484417B: free (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==1568==    by 0x1091C6: main (main.c:10)
==1568== 
==1568== 
==1568== HEAP SUMMARY:
==1568==     in use at exit: 96 bytes in 2 blocks
==1568== 
==1568== 32 bytes in 1 blocks are definitely lost in loss record 1 of 2
==1568==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==1568==    by 0x109176: alloc::alloc::alloc (alloc.rs:94)
==1568==    by 0x109177: mod_fastcgi::handler::run (handler.rs:120)
==1568==    by 0x1091D4: ap_run_handler (config.c:169)
==1568== 
==1568== 48 bytes in 1 blocks are definitely lost in loss record 2 of 3
==1568==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==1568==    by 0x508B49B: ???
==1568==    by 0x16B35F: ap_run_handler (in /usr/sbin/apache2)
==1568== 
==1568== 64 bytes in 1 blocks are definitely lost in loss record 3 of 3
==1568==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==1568==    by 0x109166: ap_leak (main.c:4)
==1568==    by 0x1091CB: main (main.c:11)
==1568== 
==1568== LEAK SUMMARY:
==1568==    definitely lost: 96 bytes in 2 blocks
==1568== ERROR SUMMARY: 5 errors from 5 contexts (suppressed: 0 from 0)
";

/// The checker must flag memory errors anywhere and definite leaks through the module only, and
/// refuse a log that never reached the heap summary.
fn valgrind_log_checker(_ctx: &Ctx) -> Result<(), String> {
    let mut bad = valgrind::Report::default();
    bad.add_log(VG_BAD);
    ensure(
        bad.errors.len() == 3
            && bad.definite == 3
            && bad.ours.len() == 1
            && bad.unattributed.len() == 1
            && !bad.clean(),
        || format!("fabricated bad log misjudged: {bad:?}"),
    )?;
    ensure(
        bad.ours[0].contains("mod_fastcgi::handler::run")
            && bad.errors[1].contains("uninitialised"),
        || format!("wrong records picked: {bad:?}"),
    )?;
    // Only httpd's own leaks left: clean.
    let httpd_only: String = VG_BAD
        .lines()
        .filter(|l| !l.contains("Invalid") && !l.contains("uninitialised") && !l.ends_with(": ???"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace(
            "mod_fastcgi::handler::run (handler.rs:120)",
            "ap_process_request (http_request.c:450)",
        );
    let mut ok = valgrind::Report::default();
    ok.add_log(&httpd_only);
    ensure(
        ok.errors.is_empty() && ok.definite == 3 && ok.ours.is_empty() && ok.clean(),
        || format!("log with httpd-only leaks misjudged: {ok:?}"),
    )?;
    // Killed before the heap summary: not clean, even without errors.
    let cut = httpd_only
        .split("HEAP SUMMARY")
        .next()
        .unwrap_or("")
        .to_string();
    let mut killed = valgrind::Report::default();
    killed.add_log(&cut);
    ensure(
        !killed.clean() && killed.failure().contains("heap summary"),
        || format!("log without heap summary accepted: {killed:?}"),
    )?;
    ensure(!valgrind::Report::default().clean(), || {
        "no log at all accepted".to_string()
    })
}

enum Step {
    /// Read one request head (up to the empty line).
    Read,
    Write(&'static [u8]),
    Sleep(u64),
}

/// Serve one scripted connection per script, in order; returns the port.
fn scripted_server(scripts: Vec<Vec<Step>>) -> Result<(u16, thread::JoinHandle<()>), String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    let h = thread::spawn(move || {
        for script in scripts {
            let Ok((mut s, _)) = l.accept() else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            for step in script {
                match step {
                    Step::Read => read_head(&mut s),
                    Step::Write(b) => {
                        let _ = s.write_all(b);
                    }
                    Step::Sleep(ms) => thread::sleep(Duration::from_millis(ms)),
                }
            }
            // dropping the stream closes the connection
        }
    });
    Ok((port, h))
}

fn read_head(s: &mut TcpStream) {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => got.push(b[0]),
            _ => return,
        }
    }
}

fn http_client_selftest(_ctx: &Ctx) -> Result<(), String> {
    use Step::*;
    let scripts = vec![
        // 0: keep-alive: chunked with trailer, then HEAD with Content-Length, then a C-L body
        vec![
            Read,
            Write(b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"),
            Read,
            Write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"),
            Read,
            Write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc"),
        ],
        // 1: chunked body cut short (no terminating chunk)
        vec![Read, Write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nab")],
        // 2: Content-Length body cut short
        vec![Read, Write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")],
        // 3: close-delimited body
        vec![Read, Write(b"HTTP/1.0 200 OK\r\n\r\nuntil close")],
        // 4: closed without a response
        vec![Read],
        // 5: 100 Continue, then a streamed chunked body with pauses
        vec![
            Read,
            Write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Write(b"3\r\none\r\n"),
            Sleep(150),
            Write(b"3\r\ntwo\r\n"),
            Sleep(150),
            Write(b"5\r\nthree\r\n0\r\n\r\n"),
        ],
    ];
    let (port, server) = scripted_server(scripts)?;

    // 0
    let mut c = Conn::connect(port).map_err(String::from)?;
    let r = c.roundtrip(&Request::get("/a")).map_err(String::from)?;
    ensure(r.status == 200 && r.body == b"hello world", || {
        format!("chunked: {}", r.summary())
    })?;
    ensure(
        r.framing == Framing::Chunked && r.complete && r.chunked_terminated,
        || format!("chunked flags: {r:?}"),
    )?;
    ensure(r.headers_all("SET-COOKIE") == ["a=1", "b=2"], || {
        format!("duplicate headers: {:?}", r.headers)
    })?;
    ensure(r.header("x-trailer") == Some("t"), || {
        format!("trailer: {:?}", r.headers)
    })?;
    let r = c.roundtrip(&Request::head("/b")).map_err(String::from)?;
    ensure(r.status == 200 && r.body_len == 0 && r.complete, || {
        format!("HEAD: {}", r.summary())
    })?;
    let r = c.roundtrip(&Request::get("/c")).map_err(String::from)?;
    ensure(
        r.status == 404 && r.body == b"abc" && r.complete && c.served == 3,
        || format!("3rd on conn: {}", r.summary()),
    )?;
    drop(c);

    // 1
    let r = Conn::connect(port)
        .and_then(|mut c| c.roundtrip(&Request::get("/")))
        .map_err(String::from)?;
    ensure(
        !r.complete && !r.chunked_terminated && r.body == b"helloab",
        || format!("cut chunked: {r:?}"),
    )?;
    // 2
    let r = Conn::connect(port)
        .and_then(|mut c| c.roundtrip(&Request::get("/")))
        .map_err(String::from)?;
    ensure(
        !r.complete && r.body_len == 3 && r.framing == Framing::ContentLength(10),
        || format!("cut C-L: {r:?}"),
    )?;
    // 3
    let r = Conn::connect(port)
        .and_then(|mut c| c.roundtrip(&Request::get("/")))
        .map_err(String::from)?;
    ensure(
        r.complete && r.framing == Framing::Close && r.body == b"until close",
        || format!("close-delimited: {r:?}"),
    )?;
    // 4
    match Conn::connect(port).and_then(|mut c| c.roundtrip(&Request::get("/"))) {
        Err(HttpError::ClosedBeforeResponse { received: 0 }) => {}
        other => return Err(format!("no-response case: {other:?}")),
    }
    // 5
    let mut c = Conn::connect(port).map_err(String::from)?;
    let mut collected = Vec::new();
    let r = c
        .roundtrip_streaming(&Request::get("/s"), &mut |d| {
            collected.extend_from_slice(d);
            Ok(())
        })
        .map_err(String::from)?;
    ensure(r.interim == [100] && r.status == 200 && r.complete, || {
        format!("interim/stream: {r:?}")
    })?;
    ensure(
        collected == b"onetwothree" && r.body.is_empty() && r.body_len == 11,
        || format!("streamed body {collected:?}"),
    )?;
    ensure(r.arrivals.len() == 3, || {
        format!("want 3 arrivals: {:?}", r.arrivals)
    })?;
    let gaps: Vec<u128> = r
        .arrivals
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect();
    ensure(gaps.iter().all(|&g| (120..1500).contains(&g)), || {
        format!("arrival gaps {gaps:?} ms: {:?}", r.arrivals)
    })?;
    ensure(
        r.arrivals.iter().map(|a| a.offset).collect::<Vec<_>>() == [0, 3, 6],
        || format!("offsets: {:?}", r.arrivals),
    )?;
    server
        .join()
        .map_err(|_| "scripted server panicked".to_string())?;
    Ok(())
}
