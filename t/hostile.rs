//! Issue "Hardening" (#5): hostile FastCGI applications and hostile or broken HTTP clients.
//!
//! Every scenario has its own vhost (id `hx_*`, or `err_hx_*` when it provokes error-level log
//! lines on purpose) whose `/app[/…]` maps to a virtual path served by a scripted fake
//! application: mostly [`crate::fakefcgi::Backend`], and for what that cannot do (a TCP reset
//! with SO_LINGER 0, the PARAMS records exactly as they were framed) a small raw backend
//! defined here. `?ok` always gets a normal `OK` answer, which is how fault tests check that the
//! next request on the same vhost is served. A php-fpm pool serves the big-download abort.
//!
//! Test names all contain `hostile` (run them with `-- hostile`).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::check::{ensure, p};
use crate::fakefcgi::{Action, Backend, Req, pattern_byte, raw_record, rtype};
use crate::fpm::{Pool, big_piece};
use crate::harness::{Builder, Ctx, Suite, test};
use crate::http::Request;
use crate::pool_fcgi::reset_close;
use crate::procs::{self, Endpoint};
use crate::scenario::{AppSite, Logs, add_app_site, expect_aborted, host, late, ms, vpath};
use crate::util::{self, q};

pub const SUITE: Suite = Suite {
    name: "hostile",
    setup,
    tests: &[
        // hostile applications
        test(
            "hostile_max_and_1_byte_records_with_empty_stderr_10mib",
            max_and_1_byte_records_10mib,
        ),
        test(
            "hostile_duplicate_conflicting_content_length",
            duplicate_conflicting_content_length,
        ),
        test(
            "hostile_app_never_reads_100mib_upload",
            app_never_reads_100mib_upload,
        ),
        test(
            "hostile_app_stdout_forever_client_closes",
            app_stdout_forever_client_closes,
        ),
        test("hostile_app_reset_mid_response", app_reset_mid_response),
        test(
            "hostile_app_answers_before_reading_body_pooled",
            app_answers_before_reading_body_pooled,
        ),
        test(
            "hostile_app_resets_new_connection_unread",
            app_resets_new_connection_unread,
        ),
        test(
            "hostile_app_killed_mid_script_not_replayed",
            app_killed_mid_script_not_replayed,
        ),
        // hostile clients
        test("hostile_client_aborts_mid_upload", client_aborts_mid_upload),
        test(
            "hostile_client_aborts_php_100mib_download",
            client_aborts_php_100mib_download,
        ),
        test("hostile_slowloris_body", slowloris_body),
        test(
            "hostile_small_body_read_before_connecting",
            small_body_read_before_connecting,
        ),
        test(
            "hostile_request_buffering_reads_whole_body_first",
            request_buffering_whole_body_first,
        ),
        test(
            "hostile_te_chunked_with_content_length",
            te_chunked_with_content_length,
        ),
        test(
            "hostile_encoded_cr_lf_nul_in_path_info",
            encoded_cr_lf_nul_in_path_info,
        ),
        test(
            "hostile_long_url_and_huge_merged_header",
            long_url_and_huge_merged_header,
        ),
        // last: stop the fake applications, check what they saw
        test("hostile_fake_backends_clean", fake_backends_clean),
    ],
};

// ------------------------------------------------------------------------------------------
// fake applications and vhosts

static BACKENDS: Mutex<Vec<(String, Arc<Backend>)>> = Mutex::new(Vec::new());
static RAW: Mutex<Vec<(String, Arc<RawBackend>)>> = Mutex::new(Vec::new());

fn backend(id: &str) -> Arc<Backend> {
    BACKENDS
        .lock()
        .unwrap()
        .iter()
        .find(|(n, _)| n == id)
        .map(|(_, b)| Arc::clone(b))
        .unwrap_or_else(|| panic!("no fake backend {id:?}"))
}

fn raw_backend(id: &str) -> Arc<RawBackend> {
    RAW.lock()
        .unwrap()
        .iter()
        .find(|(n, _)| n == id)
        .map(|(_, b)| Arc::clone(b))
        .unwrap_or_else(|| panic!("no raw backend {id:?}"))
}

const OK_BODY: &[u8] = b"OK\n";
const TEXT: &[u8] = b"Content-Type: text/plain\r\n\r\n";
const BIG_LEN: usize = 10 << 20;

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn end() -> Action {
    Action::End {
        app_status: 0,
        protocol_status: 0,
    }
}

fn respond(stdout: &[u8]) -> Vec<Action> {
    vec![
        Action::WaitStdin,
        Action::Stdout(stdout.to_vec()),
        Action::StdoutEnd,
        end(),
    ]
}

/// 10 MiB of the pattern as STDOUT records of 0xffff and 1 content bytes, alternately, each
/// followed by an empty STDERR record.
fn max_and_one_records() -> Vec<u8> {
    let mut out = raw_record(
        1,
        rtype::STDOUT,
        1,
        b"Content-Type: application/octet-stream\r\n\r\n",
        0,
    );
    let empty_err = raw_record(1, rtype::STDERR, 1, b"", 0);
    let mut off = 0usize;
    let mut big = true;
    while off < BIG_LEN {
        let n = (BIG_LEN - off).min(if big { 0xffff } else { 1 });
        let piece: Vec<u8> = (off..off + n).map(pattern_byte).collect();
        out.extend_from_slice(&raw_record(1, rtype::STDOUT, 1, &piece, 0));
        out.extend_from_slice(&empty_err);
        off += n;
        big = !big;
    }
    out
}

fn dup_cl_script(r: &Req) -> Vec<Action> {
    let body = b"0123456789abcdefghij";
    let head: &[u8] = match r.query().as_str() {
        "a" => b"Content-Type: text/plain\r\nContent-Length: 5\r\nContent-Length: 500\r\n\r\n",
        "b" => b"Content-Type: text/plain\r\nContent-Length: 20\r\nContent-Length: 20\r\n\r\n",
        "c" => b"Content-Type: text/plain\r\nContent-Length: 5, 500\r\n\r\n",
        _ => b"Content-Type: text/plain\r\nContent-Length: 500\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    };
    respond(&cat(&[head, body]))
}

type S = fn(&Req) -> Vec<Action>;

fn setup(b: &mut Builder) -> Result<(), String> {
    let sites: Vec<(&str, &str, &str, S)> = vec![
        // (vhost id, FastCgiExternalServer options, extra vhost lines, script)
        ("hx_records", "-keep-conn on", "", |_| {
            vec![
                Action::WaitStdin,
                Action::Send(max_and_one_records()),
                Action::StdoutEnd,
                end(),
            ]
        }),
        ("hx_dupcl", "-keep-conn on", "", dup_cl_script),
        ("err_hx_noread", "-idle-timeout 2 -keep-conn on", "", |_| {
            // never reads the request body, never answers
            vec![Action::Sleep(4000), Action::Close]
        }),
        ("hx_forever", "-keep-conn on", "", |_| {
            vec![
                Action::WaitStdin,
                Action::Stdout(b"Content-Type: application/octet-stream\r\n\r\n".to_vec()),
                Action::StdoutPattern(1 << 40),
                Action::StdoutEnd,
                end(),
            ]
        }),
        ("hx_early", "-keep-conn on -max-conns 2", "", |_| {
            // answers completely without reading the request body
            vec![
                Action::Stdout(cat(&[TEXT, b"answered early\n"])),
                Action::StdoutEnd,
                end(),
            ]
        }),
        ("hx_upabort", "-keep-conn on", "", summarize_stdin),
        (
            "hx_slowloris",
            "-keep-conn on",
            "Timeout 2",
            summarize_stdin,
        ),
        ("hx_prebody", "", "", summarize_stdin),
        ("hx_buffered", "-request-buffering on", "", summarize_stdin),
        ("hx_te", "", "", summarize_stdin),
        ("hx_crlf", "", "", |_| respond(&cat(&[TEXT, b"reached\n"]))),
    ];
    for (id, opts, extra, script) in sites {
        let s: S = script;
        let port = b.port()?;
        let be = Backend::tcp(
            id,
            port,
            Arc::new(move |r: &Req| {
                if r.query() == "ok" {
                    respond(&cat(&[TEXT, OK_BODY]))
                } else {
                    s(r)
                }
            }),
        )?;
        add_site(b, id, &be.fces_target(), opts, extra)?;
        BACKENDS
            .lock()
            .unwrap()
            .push((id.to_string(), Arc::new(be)));
    }

    // raw backends: TCP reset mid-response; PARAMS records as framed
    for (id, opts, extra) in [
        ("err_hx_reset", "-flush", ""),
        ("err_hx_rstnew", "", ""),
        (
            "err_hx_big",
            "",
            "LimitRequestFields 200\nLimitRequestFieldSize 1048576",
        ),
    ] {
        let port = b.port()?;
        let rb = RawBackend::start(id, port)?;
        add_site(b, id, &format!("-host 127.0.0.1:{port}"), opts, extra)?;
        RAW.lock().unwrap().push((id.to_string(), rb));
    }

    // php-fpm for the aborted 100 MiB download
    let fpm_port = b.port()?;
    // one worker: the requests after the aborted download are served only if that worker was
    // freed (the module closed its connection)
    let mut pool = Pool::new("hostile", "www-data", "www-data", Endpoint::Tcp(fpm_port));
    pool.max_children = 1;
    b.pool(pool);
    let docroot = b.docroot("hostile")?;
    let vdir = b.tmp.join("hx-fcgi");
    let vpath = vdir.join("php.fcgi");
    let body = format!(
        "AddType application/x-httpd-fastphp5 .php\n\
         Action application/x-httpd-fastphp5 /php.fcgi\n\
         Alias /php.fcgi {vp}\n\
         FastCgiExternalServer {vp} -host 127.0.0.1:{fpm_port}\n\
         <Directory {vd}>\n    Require all granted\n</Directory>\n",
        vp = q(p(&vpath)),
        vd = q(p(&vdir)),
    );
    let port = b.port()?;
    b.vhost("hx_php", port, "hx-php.test", &docroot, &body);
    Ok(())
}

/// Reads the whole request body, answers with its length and checksum.
fn summarize_stdin(_: &Req) -> Vec<Action> {
    vec![
        Action::WaitStdin,
        Action::Stdout(TEXT.to_vec()),
        Action::StdinSummary,
        Action::StdoutEnd,
        end(),
    ]
}

/// A vhost whose `/app` maps to the virtual path `<tmp>/hx-fcgi/<id>.fcgi` served by `target`.
fn add_site(
    b: &mut Builder,
    id: &str,
    target: &str,
    opts: &str,
    extra: &str,
) -> Result<(), String> {
    let site = AppSite {
        dir: "hx-fcgi",
        file: id,
        docroot: "hostile",
        target,
        opts,
        extra,
    };
    add_app_site(b, id, site)
}

// ------------------------------------------------------------------------------------------
// raw backend: one request per connection, every record kept as framed

#[derive(Debug, Clone, Default)]
struct RawReq {
    /// Content of every non-empty PARAMS record, in order.
    params_records: Vec<Vec<u8>>,
    /// All pairs (decoded from the concatenated stream).
    params: Vec<(Vec<u8>, Vec<u8>)>,
    stdin: Vec<u8>,
    problems: Vec<String>,
}

impl RawReq {
    fn param(&self, name: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

struct RawBackend {
    name: String,
    stop: AtomicBool,
    connections: AtomicUsize,
    /// The next this many connections are reset without reading the request (like a php-fpm
    /// worker stopped by a reload right after accepting).
    reset_unread: AtomicUsize,
    reqs: Mutex<Vec<RawReq>>,
}

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Decode name-value pairs; Err if the data does not hold whole pairs.
fn decode_pairs(mut d: &[u8]) -> Result<Pairs, String> {
    fn len(d: &mut &[u8]) -> Result<usize, String> {
        match d.first() {
            None => Err("missing length".into()),
            Some(&b) if b & 0x80 == 0 => {
                *d = &d[1..];
                Ok(b as usize)
            }
            Some(_) if d.len() >= 4 => {
                let n = u32::from_be_bytes([d[0] & 0x7f, d[1], d[2], d[3]]) as usize;
                *d = &d[4..];
                Ok(n)
            }
            Some(_) => Err("truncated 4-byte length".into()),
        }
    }
    let mut out = Vec::new();
    while !d.is_empty() {
        let nl = len(&mut d)?;
        let vl = len(&mut d)?;
        if d.len() < nl + vl {
            return Err(format!("pair of {nl}+{vl} bytes but only {} left", d.len()));
        }
        out.push((d[..nl].to_vec(), d[nl..nl + vl].to_vec()));
        d = &d[nl + vl..];
    }
    Ok(out)
}

impl RawBackend {
    fn start(name: &str, port: u16) -> Result<Arc<RawBackend>, String> {
        let l = TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("raw backend {name}: bind {port}: {e}"))?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        let rb = Arc::new(RawBackend {
            name: name.to_string(),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            reset_unread: AtomicUsize::new(0),
            reqs: Mutex::new(Vec::new()),
        });
        let sh = Arc::clone(&rb);
        thread::Builder::new()
            .name(format!("raw-{name}"))
            .spawn(move || {
                let t0 = Instant::now();
                while !sh.stop.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(600) {
                    match l.accept() {
                        Ok((s, _)) => {
                            sh.connections.fetch_add(1, Ordering::SeqCst);
                            let sh2 = Arc::clone(&sh);
                            thread::spawn(move || sh2.serve(s));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(rb)
    }

    fn reqs(&self) -> Vec<RawReq> {
        self.reqs.lock().unwrap().clone()
    }

    fn wait_req(&self, n: usize, timeout: Duration) -> Result<RawReq, String> {
        let t0 = Instant::now();
        loop {
            if let Some(r) = self.reqs.lock().unwrap().get(n - 1) {
                return Ok(r.clone());
            }
            if t0.elapsed() > timeout {
                return Err(format!(
                    "raw backend {}: request #{n} not received within {timeout:?}",
                    self.name
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn serve(&self, mut s: TcpStream) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = s.set_nodelay(true);
        if self
            .reset_unread
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            // let the request arrive, then close with it unread
            thread::sleep(Duration::from_millis(30));
            reset_close(s);
            return;
        }
        let mut req = RawReq::default();
        let mut stream = Vec::new();
        let mut params_done = false;
        loop {
            let mut h = [0u8; 8];
            if let Err(e) = s.read_exact(&mut h) {
                req.problems.push(format!("reading a record header: {e}"));
                break;
            }
            let len = u16::from_be_bytes([h[4], h[5]]) as usize;
            let mut c = vec![0u8; len + h[6] as usize];
            if let Err(e) = s.read_exact(&mut c) {
                req.problems.push(format!("reading a record: {e}"));
                break;
            }
            c.truncate(len);
            if h[0] != 1 || u16::from_be_bytes([h[2], h[3]]) != 1 {
                req.problems.push(format!("bad record header {h:?}"));
            }
            match h[1] {
                1 => {}
                4 if len == 0 => {
                    params_done = true;
                    let killed = decode_pairs(&stream).is_ok_and(|p| {
                        p.iter()
                            .any(|(k, v)| k == b"QUERY_STRING" && v == b"killed")
                    });
                    if killed {
                        // a php-fpm worker killed while its script runs: the request read but
                        // for the record that ends its (empty) body, then a reset
                        req.params = decode_pairs(&stream).unwrap_or_default();
                        self.reqs.lock().unwrap().push(req);
                        thread::sleep(Duration::from_millis(200));
                        reset_close(s);
                        return;
                    }
                }
                4 => {
                    if params_done {
                        req.problems
                            .push("PARAMS after the empty PARAMS record".into());
                    }
                    if let Err(e) = decode_pairs(&c) {
                        req.problems.push(format!(
                            "PARAMS record {} ({len} bytes) does not hold whole pairs: {e}",
                            req.params_records.len() + 1
                        ));
                    }
                    stream.extend_from_slice(&c);
                    req.params_records.push(c);
                }
                5 if len == 0 => break,
                5 => req.stdin.extend_from_slice(&c),
                t => req.problems.push(format!("unexpected record type {t}")),
            }
        }
        match decode_pairs(&stream) {
            Ok(pairs) => req.params = pairs,
            Err(e) => req.problems.push(format!("PARAMS stream: {e}")),
        }
        let query = String::from_utf8_lossy(req.param("QUERY_STRING").unwrap_or(b"")).into_owned();
        self.reqs.lock().unwrap().push(req);
        if query == "reset" {
            let _ = s.write_all(&raw_record(
                1,
                rtype::STDOUT,
                1,
                &cat(&[TEXT, b"partial"]),
                1,
            ));
            thread::sleep(Duration::from_millis(300));
            reset_close(s);
            return;
        }
        let mut out = raw_record(1, rtype::STDOUT, 1, &cat(&[TEXT, OK_BODY]), 0);
        out.extend_from_slice(&raw_record(1, rtype::STDOUT, 1, b"", 0));
        out.extend_from_slice(&raw_record(1, rtype::END_REQUEST, 1, &[0; 8], 0));
        let _ = s.write_all(&out);
        let _ = s.shutdown(Shutdown::Write);
        let mut sink = [0u8; 4096];
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    }
}

// ------------------------------------------------------------------------------------------
// helpers

/// After every scenario: no crash, and a normal request on the same vhost succeeds.
fn after_fault(ctx: &Ctx, id: &str, logs: &Logs) -> Result<(), String> {
    logs.no_crash()?;
    let r = ctx
        .get(id, "/app/ok?ok")
        .map_err(|e| format!("normal request after the fault: {e}"))?;
    ensure(r.status == 200 && r.body == OK_BODY && r.complete, || {
        format!("normal request after the fault: {}", r.summary())
    })?;
    logs.no_crash()
}

fn apache_rss_kib(ctx: &Ctx) -> u64 {
    ctx.apache_children()
        .iter()
        .filter_map(|&pid| procs::rss_kib(pid))
        .sum()
}

fn raw_connect(port: u16) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )
    .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// Read from `s` until the header block and at least `n` body bytes arrived; returns the head
/// and the number of body bytes read.
fn read_head_and(s: &mut TcpStream, n: usize) -> Result<(String, usize), String> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let (head, mut have) = loop {
        let k = s
            .read(&mut buf)
            .map_err(|e| format!("read after {} bytes: {e}", got.len()))?;
        if k == 0 {
            return Err(format!(
                "connection closed after {} bytes, before the header block ended",
                got.len()
            ));
        }
        got.extend_from_slice(&buf[..k]);
        if let Some(h) = got.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) {
            break (
                String::from_utf8_lossy(&got[..h]).into_owned(),
                got.len() - h,
            );
        }
    };
    while have < n {
        let k = s
            .read(&mut buf)
            .map_err(|e| format!("read after {have} body bytes: {e}"))?;
        if k == 0 {
            return Err(format!(
                "connection closed after {have} body bytes (want {n}); head {head:?}"
            ));
        }
        have += k;
    }
    Ok((head, have))
}

// ------------------------------------------------------------------------------------------
// hostile applications

fn max_and_1_byte_records_10mib(ctx: &Ctx) -> Result<(), String> {
    let id = "hx_records";
    let logs = Logs::mark(ctx, id);
    let h = host(ctx, id);
    let mut c = ctx.connect(id)?;
    let r = c
        .roundtrip(&Request::get("/app/x?records").host(&h))
        .map_err(String::from)?;
    ensure(r.status == 200 && r.complete, || {
        format!("10 MiB response: {}", r.summary())
    })?;
    let bad = r
        .body
        .iter()
        .enumerate()
        .position(|(i, &b)| b != pattern_byte(i));
    ensure(r.body.len() == BIG_LEN && bad.is_none(), || {
        format!(
            "body: {} bytes (want {BIG_LEN}), first wrong byte at {bad:?}",
            r.body.len()
        )
    })?;
    let r2 = c
        .roundtrip(&Request::get("/app/ok?ok").host(&h).close())
        .map_err(|e| format!("next request on the connection: {e}"))?;
    ensure(r2.status == 200 && r2.body == OK_BODY, || {
        format!("next request on the connection: {}", r2.summary())
    })?;
    logs.at_most_errors(0)?;
    after_fault(ctx, id, &logs)
}

fn duplicate_conflicting_content_length(ctx: &Ctx) -> Result<(), String> {
    let id = "hx_dupcl";
    let logs = Logs::mark(ctx, id);
    let h = host(ctx, id);
    let body20: &[u8] = b"0123456789abcdefghij";
    for case in ["a", "b", "c", "d"] {
        let mut c = ctx.connect(id)?;
        let r = c
            .roundtrip(&Request::get(&format!("/app/x?{case}")).host(&h))
            .map_err(|e| format!("case {case}: {e}"))?;
        ensure(r.status == 200 && r.body == body20 && r.complete, || {
            format!("case {case}: {}", r.summary())
        })?;
        let cls = r.headers_all("Content-Length");
        let tes = r.headers_all("Transfer-Encoding");
        ensure(
            (cls.is_empty() || cls == ["20"])
                && tes.len() <= 1
                && !(cls.len() == 1 && tes.len() == 1),
            || format!("case {case}: framing headers {:?}", r.headers),
        )?;
        let r2 = c
            .roundtrip(&Request::get("/app/ok?ok").host(&h).close())
            .map_err(|e| format!("case {case}: next request: {e}"))?;
        ensure(r2.status == 200 && r2.body == OK_BODY, || {
            format!(
                "case {case}: next request on the connection: {}",
                r2.summary()
            )
        })?;
    }
    logs.at_most_errors(0)?;
    after_fault(ctx, id, &logs)
}

fn app_never_reads_100mib_upload(ctx: &Ctx) -> Result<(), String> {
    let id = "err_hx_noread";
    let logs = Logs::mark(ctx, id);
    let rss0 = apache_rss_kib(ctx);
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(rss0 as usize));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        let pid = ctx.apache_pid();
        // under valgrind Apache is one process that serves the requests itself
        let single = ctx.env.valgrind;
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let pids = if single {
                    vec![pid]
                } else {
                    procs::children_of(pid)
                };
                let rss: u64 = pids.iter().filter_map(|&p| procs::rss_kib(p)).sum();
                peak.fetch_max(rss as usize, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    const TOTAL: usize = 100 << 20;
    let mut c = ctx.connect(id)?;
    c.set_timeout(Duration::from_secs(10))
        .map_err(String::from)?;
    let head = format!(
        "POST /app/x?noread HTTP/1.1\r\nHost: {}\r\nContent-Length: {TOTAL}\r\n\r\n",
        host(ctx, id)
    );
    let t0 = Instant::now();
    c.send_raw(head.as_bytes()).map_err(String::from)?;
    let mut w = c.stream().try_clone().map_err(|e| e.to_string())?;
    let writer = thread::spawn(move || {
        let chunk = util::Prng::new(5).bytes(1 << 20);
        let mut sent = 0usize;
        while sent < TOTAL {
            match w.write(&chunk) {
                Ok(n) if n > 0 => sent += n,
                _ => break,
            }
        }
        sent
    });
    let r = c.read_response(false);
    let took = t0.elapsed();
    let _ = c.stream().shutdown(Shutdown::Both);
    let sent = writer.join().map_err(|_| "writer panicked".to_string())?;
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    let grew = (peak.load(Ordering::SeqCst) as u64).saturating_sub(rss0);
    if std::env::var_os("MFCGI_VERBOSE").is_some() {
        let what = r
            .as_ref()
            .map(|r| r.status.to_string())
            .unwrap_or_else(|e| e.to_string());
        eprintln!(
            "    noread: answer ({what}) after {} ms, client sent {} MiB, Apache RSS +{} KiB",
            ms(took),
            sent >> 20,
            grew
        );
    }
    // (the connection closed or reset instead: allowed)
    if let Ok(r) = &r {
        ensure(r.status == 504, || {
            format!("want 504 (or the connection closed), got {}", r.summary())
        })?;
    }
    ensure(
        took >= Duration::from_millis(1800) && took < late(ctx, 6000),
        || {
            format!(
                "answer/close after {} ms, want about 2000 ms (idle timeout 2) ({r:?})",
                ms(took)
            )
        },
    )?;
    ensure(grew < 32 * 1024, || {
        format!(
            "Apache RSS grew by {} KiB during the upload (client sent {} bytes)",
            grew, sent
        )
    })?;
    logs.expect_one_error(&[&format!(
        "FastCGI: comm with server \"{}\" aborted: idle timeout (2 sec)",
        vpath(ctx, id)
    )])?;
    after_fault(ctx, id, &logs)
}

fn app_stdout_forever_client_closes(ctx: &Ctx) -> Result<(), String> {
    let id = "hx_forever";
    let logs = Logs::mark(ctx, id);
    let be = backend(id);
    let n = be.record_count();
    let mut s = raw_connect(ctx.vhost(id).port)?;
    let req = format!(
        "GET /app/x?forever HTTP/1.1\r\nHost: {}\r\n\r\n",
        host(ctx, id)
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let (head, got) = read_head_and(&mut s, 1 << 20)?;
    ensure(head.starts_with("HTTP/1.1 200"), || {
        format!("response head {head:?}")
    })?;
    drop(s);
    let closed_at = Instant::now();
    let rec = be
        .wait_record(n + 1, Duration::from_secs(5))
        .map_err(|e| format!("{e} — the application was not stopped after the client closed"))?;
    let took = closed_at.elapsed();
    ensure(rec.write_error.is_some(), || {
        "backend record without a write error".into()
    })?;
    if std::env::var_os("MFCGI_VERBOSE").is_some() {
        eprintln!(
            "    forever: client read {got} bytes; backend write failed {} ms after the client closed: {:?}",
            ms(took),
            rec.write_error
        );
    }
    logs.at_most_errors(1)?;
    after_fault(ctx, id, &logs)
}

fn app_reset_mid_response(ctx: &Ctx) -> Result<(), String> {
    let id = "err_hx_reset";
    let logs = Logs::mark(ctx, id);
    let mut c = ctx.connect(id)?;
    let r = c
        .roundtrip(&Request::get("/app/x?reset").host(&host(ctx, id)))
        .map_err(|e| format!("GET ?reset: {e}"))?;
    expect_aborted(&r, &mut c, b"partial")?;
    logs.expect_one_error(&[&format!(
        "FastCGI: comm with server \"{}\" aborted",
        vpath(ctx, id)
    )])?;
    after_fault(ctx, id, &logs)
}

/// An application that resets a new connection without reading the request (a php-fpm
/// worker stopped by a reload just after accept): an idempotent request is sent again once on
/// another connection and succeeds with one warning; a POST is not replayed (502, one error);
/// two resets in a row give 502.
/// php-fpm reads a request but for its last record (the end of the body) before it runs the
/// script, so a worker killed mid-script (`request_terminate_timeout`, a crash) resets the
/// connection as one stopped before reading does. The module saw the request read, so it
/// does not run the script a second time: a 502 and one error line, no FCGI025.
fn app_killed_mid_script_not_replayed(ctx: &Ctx) -> Result<(), String> {
    let id = "err_hx_rstnew";
    let rb = raw_backend(id);
    let h = host(ctx, id);
    for method in ["GET", "DELETE"] {
        let logs = Logs::mark(ctx, id);
        let (c0, n0) = (rb.connections.load(Ordering::SeqCst), rb.reqs().len());
        let mut req = Request::get("/app/x?killed").host(&h);
        req.method = method.to_string();
        let r = ctx
            .connect(id)?
            .roundtrip(&req)
            .map_err(|e| format!("{method}: {e}"))?;
        let (c1, n1) = (rb.connections.load(Ordering::SeqCst), rb.reqs().len());
        ensure(r.status == 502, || {
            format!("{method}: want 502, got {}", r.summary())
        })?;
        ensure(c1 - c0 == 1 && n1 - n0 == 1, || {
            format!(
                "{method}: backend saw {} connection(s) and {} request(s), want 1 and 1 (no replay)",
                c1 - c0,
                n1 - n0
            )
        })?;
        logs.expect_one_error(&["aborted: read failed"])
            .map_err(|e| format!("{method}: {e}"))?;
        ensure(!logs.text().contains("FCGI025"), || {
            format!("{method}: FCGI025 (replay) logged")
        })?;
    }
    Ok(())
}

fn app_resets_new_connection_unread(ctx: &Ctx) -> Result<(), String> {
    let id = "err_hx_rstnew";
    let rb = raw_backend(id);
    let vp = vpath(ctx, id);
    let h = host(ctx, id);
    let warning = format!(
        "FCGI025: FastCGI: server \"{vp}\" reset a new connection without reading the whole request"
    );
    for method in ["GET", "HEAD", "DELETE"] {
        let logs = Logs::mark(ctx, id);
        let (c0, n0) = (rb.connections.load(Ordering::SeqCst), rb.reqs().len());
        rb.reset_unread.store(1, Ordering::SeqCst);
        let mut req = Request::get("/app/x?ok").host(&h);
        req.method = method.to_string();
        let r = ctx
            .connect(id)?
            .roundtrip(&req)
            .map_err(|e| format!("{method}: {e}"))?;
        let want_body: &[u8] = if method == "HEAD" { b"" } else { OK_BODY };
        ensure(r.status == 200 && r.body == want_body && r.complete, || {
            format!("{method}: want 200 after one replay, got {}", r.summary())
        })?;
        let (c1, n1) = (rb.connections.load(Ordering::SeqCst), rb.reqs().len());
        ensure(c1 - c0 == 2 && n1 - n0 == 1, || {
            format!(
                "{method}: backend saw {} connection(s) and {} request(s), want 2 and 1",
                c1 - c0,
                n1 - n0
            )
        })?;
        logs.wait_for(&[&warning], Duration::from_secs(3))
            .map_err(|e| format!("{method}: {e}"))?;
        let warned = logs.text().lines().filter(|l| l.contains(&warning)).count();
        ensure(warned == 1, || {
            format!("{method}: want one FCGI025 warning, got {warned}")
        })?;
        logs.expect_no_errors()
            .map_err(|e| format!("{method}: {e}"))?;
    }
    // a POST is not sent twice
    let logs = Logs::mark(ctx, id);
    let c0 = rb.connections.load(Ordering::SeqCst);
    rb.reset_unread.store(1, Ordering::SeqCst);
    let r = ctx
        .connect(id)?
        .roundtrip(&Request::post("/app/x?ok", b"a=1".to_vec()).host(&h))
        .map_err(|e| format!("POST: {e}"))?;
    ensure(r.status == 502, || {
        format!("POST: want 502 (not replayed), got {}", r.summary())
    })?;
    ensure(rb.connections.load(Ordering::SeqCst) - c0 == 1, || {
        "POST: the module opened a second connection".to_string()
    })?;
    logs.expect_one_error(&[&format!(
        "FastCGI: comm with server \"{vp}\" aborted: read failed"
    )])
    .map_err(|e| format!("POST: {e}"))?;
    after_fault(ctx, id, &logs)?;
    // a second reset is not retried again
    let logs = Logs::mark(ctx, id);
    rb.reset_unread.store(2, Ordering::SeqCst);
    let r = ctx
        .connect(id)?
        .roundtrip(&Request::get("/app/x?ok").host(&h))
        .map_err(|e| format!("GET twice reset: {e}"))?;
    ensure(r.status == 502, || {
        format!("GET reset twice: want 502, got {}", r.summary())
    })?;
    logs.expect_one_error(&[&format!(
        "FastCGI: comm with server \"{vp}\" aborted: read failed"
    )])
    .map_err(|e| format!("GET twice reset: {e}"))?;
    after_fault(ctx, id, &logs)
}

fn app_answers_before_reading_body_pooled(ctx: &Ctx) -> Result<(), String> {
    let id = "hx_early";
    let logs = Logs::mark(ctx, id);
    let be = backend(id);
    let h = host(ctx, id);
    let mut c = ctx.connect(id)?;
    for round in 1..=2 {
        let body = util::Prng::new(round).bytes(1 << 20);
        let head = format!(
            "POST /app/x?early HTTP/1.1\r\nHost: {h}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        c.send_raw(head.as_bytes()).map_err(String::from)?;
        let mut w = c.stream().try_clone().map_err(|e| e.to_string())?;
        let writer = thread::spawn(move || w.write_all(&body).map_err(|e| e.to_string()));
        let r = c
            .read_response(false)
            .map_err(|e| format!("round {round}: {e}"))?;
        ensure(
            r.status == 200 && r.body == b"answered early\n" && r.complete,
            || format!("round {round}: {}", r.summary()),
        )?;
        writer
            .join()
            .map_err(|_| "writer panicked".to_string())?
            .map_err(|e| {
                format!("round {round}: the server stopped reading the 1 MiB body: {e}")
            })?;
        ensure(!c.closed, || {
            format!(
                "round {round}: server closed the connection: {:?}",
                r.headers
            )
        })?;
        let r2 = c
            .roundtrip(&Request::get("/app/ok?ok").host(&h))
            .map_err(|e| format!("round {round}: next request on the same connection: {e}"))?;
        ensure(r2.status == 200 && r2.body == OK_BODY, || {
            format!("round {round}: next request: {}", r2.summary())
        })?;
    }
    let errs = be.errors();
    ensure(errs.is_empty(), || {
        format!("the application saw a desynchronised stream: {errs:?}")
    })?;
    logs.at_most_errors(0)?;
    after_fault(ctx, id, &logs)
}

// ------------------------------------------------------------------------------------------
// hostile clients

fn client_aborts_mid_upload(ctx: &Ctx) -> Result<(), String> {
    let id = "hx_upabort";
    let logs = Logs::mark(ctx, id);
    let be = backend(id);
    let n = be.record_count();
    let c0 = be.connections();
    let mut s = raw_connect(ctx.vhost(id).port)?;
    let head = format!(
        "POST /app/x?upabort HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        host(ctx, id),
        10 << 20
    );
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    let half = util::Prng::new(3).bytes(5 << 20);
    s.write_all(&half)
        .map_err(|e| format!("sending the first half: {e}"))?;
    thread::sleep(Duration::from_millis(100));
    drop(s);
    let closed_at = Instant::now();
    let rec = be.wait_record(n + 1, Duration::from_secs(5)).map_err(|e| {
        format!("{e} — the application connection was not closed after the client aborted")
    })?;
    ensure(be.connections() > c0, || {
        "the application was never connected".into()
    })?;
    ensure(!rec.stdin_complete && rec.stdin.len() <= 5 << 20, || {
        format!(
            "application got stdin_complete={} with {} bytes",
            rec.stdin_complete,
            rec.stdin.len()
        )
    })?;
    if std::env::var_os("MFCGI_VERBOSE").is_some() {
        eprintln!(
            "    upabort: backend saw {:?} after {} ms with {} bytes",
            rec.write_error,
            ms(closed_at.elapsed()),
            rec.stdin.len()
        );
    }
    logs.at_most_errors(0)?;
    after_fault(ctx, id, &logs)
}

fn client_aborts_php_100mib_download(ctx: &Ctx) -> Result<(), String> {
    let id = "hx_php";
    let logs = Logs::mark(ctx, id);
    let mut s = raw_connect(ctx.vhost(id).port)?;
    let req = format!(
        "GET /big.php?mb=100 HTTP/1.1\r\nHost: {}\r\n\r\n",
        host(ctx, id)
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let (head, _) = read_head_and(&mut s, 2 << 20)?;
    ensure(head.starts_with("HTTP/1.1 200"), || {
        format!("big.php head {head:?}")
    })?;
    drop(s);
    thread::sleep(Duration::from_millis(200));
    logs.no_crash()?;
    // php-fpm and Apache are both free again: a complete 1 MiB download and a small request
    let t0 = Instant::now();
    let r = ctx.get(id, "/big.php?mb=1")?;
    let want: Vec<u8> = (0..128u64).flat_map(big_piece).collect();
    ensure(r.status == 200 && r.complete && r.body == want, || {
        format!(
            "big.php?mb=1 after the abort: {} bytes, {}",
            r.body.len(),
            r.summary()
        )
    })?;
    let r = ctx.get(id, "/index.php")?;
    ensure(r.status == 200, || {
        format!("index.php after the abort: {}", r.summary())
    })?;
    ensure(t0.elapsed() < late(ctx, 5000), || {
        format!("follow-up requests took {} ms", ms(t0.elapsed()))
    })?;
    logs.at_most_errors(0)?;
    logs.no_crash()
}

/// A small request body is read whole before the application is connected: a client that
/// trickles it holds no application process meanwhile, and one that gives up halfway sends
/// the application nothing (not a request with a cut body that php-fpm would run anyway).
fn small_body_read_before_connecting(ctx: &Ctx) -> Result<(), String> {
    whole_body_first(ctx, "hx_prebody", 6000, 1000)
}

/// A body sent in pieces, the application connected only once it is all in, and one the
/// client gives up on after a third never sent; on `id`, a body of `len` bytes in pieces of
/// `piece`.
fn whole_body_first(ctx: &Ctx, id: &str, len: usize, piece: usize) -> Result<(), String> {
    let logs = Logs::mark(ctx, id);
    let be = backend(id);
    let (n, c0) = (be.record_count(), be.connections());
    let body = util::Prng::new(11).bytes(len);
    let mut c = ctx.connect(id)?;
    c.set_timeout(Duration::from_secs(10))
        .map_err(String::from)?;
    let head = format!(
        "POST /app/x?trickle HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        host(ctx, id),
        body.len()
    );
    c.send_raw(head.as_bytes()).map_err(String::from)?;
    let pieces = body.chunks(piece).count();
    let mut early = Vec::new();
    for (i, part) in body.chunks(piece).enumerate() {
        c.send_raw(part)
            .map_err(|e| format!("body piece {i}: {e}"))?;
        if i + 1 == pieces {
            break;
        }
        thread::sleep(Duration::from_millis(150));
        if be.connections() != c0 {
            early.push(i);
        }
    }
    let r = c.read_response(false).map_err(String::from)?;
    ensure(early.is_empty(), || {
        format!(
            "the application was connected while the client was still sending a {len}-byte body (after pieces {early:?} of {pieces})"
        )
    })?;
    ensure(r.status == 200, || {
        format!("body sent in pieces: {}", r.summary())
    })?;
    let rec = be.wait_record(n + 1, Duration::from_secs(5))?;
    ensure(rec.stdin_complete && rec.stdin == body, || {
        format!(
            "application got {} bytes (complete {}), want the {len} sent",
            rec.stdin.len(),
            rec.stdin_complete,
        )
    })?;

    // the client gives up after a third of the body
    let (n, c1) = (be.record_count(), be.connections());
    let mut s = raw_connect(ctx.vhost(id).port)?;
    let head = format!(
        "POST /app/x?cut HTTP/1.1\r\nHost: {}\r\nContent-Length: {len}\r\n\r\n",
        host(ctx, id)
    );
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(&body[..len / 3]).map_err(|e| e.to_string())?;
    thread::sleep(Duration::from_millis(100));
    drop(s);
    thread::sleep(Duration::from_millis(500));
    ensure(be.connections() == c1 && be.record_count() == n, || {
        format!(
            "a request whose body the client gave up on reached the application ({} connections, {} requests more)",
            be.connections() - c1,
            be.record_count() - n
        )
    })?;
    logs.at_most_errors(0)?;
    after_fault(ctx, id, &logs)
}

/// `-request-buffering on`: the same for a body of any length (300 KB here).
fn request_buffering_whole_body_first(ctx: &Ctx) -> Result<(), String> {
    whole_body_first(ctx, "hx_buffered", 300_000, 50_000)
}

fn slowloris_body(ctx: &Ctx) -> Result<(), String> {
    let id = "hx_slowloris";
    let logs = Logs::mark(ctx, id);
    let be = backend(id);
    let n = be.record_count();
    let c0 = be.connections();
    let mut c = ctx.connect(id)?;
    c.set_timeout(Duration::from_secs(10))
        .map_err(String::from)?;
    let head = format!(
        "POST /app/x?slowloris HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\n\r\n",
        host(ctx, id)
    );
    let t0 = Instant::now();
    c.send_raw(head.as_bytes()).map_err(String::from)?;
    for _ in 0..10 {
        c.send_raw(b"x")
            .map_err(|e| format!("slow body byte: {e}"))?;
        thread::sleep(Duration::from_millis(200));
    }
    let r = c.read_response(false);
    let took = t0.elapsed();
    let closed = match &r {
        Ok(_) => c.is_closed_by_peer(Duration::from_secs(2)),
        Err(_) => true,
    };
    ensure(took < late(ctx, 6000), || {
        format!(
            "answered/closed after {} ms (want < {} with Timeout 2): {r:?}",
            ms(took),
            ms(late(ctx, 6000))
        )
    })?;
    if let Ok(r) = &r {
        ensure(r.status >= 400, || {
            format!("a request with a missing body got {}", r.summary())
        })?;
    }
    ensure(closed, || {
        "client connection left open after the incomplete body".into()
    })?;
    if be.connections() > c0 {
        let rec = be.wait_record(n + 1, Duration::from_secs(3)).map_err(|e| {
            format!("{e} — the application connection was not closed after the body timed out")
        })?;
        ensure(!rec.stdin_complete, || {
            format!(
                "application saw a complete body of {} bytes",
                rec.stdin.len()
            )
        })?;
    }
    if std::env::var_os("MFCGI_VERBOSE").is_some() {
        eprintln!(
            "    slowloris: {} ms, {:?}",
            ms(took),
            r.as_ref().map(|r| r.status)
        );
    }
    logs.at_most_errors(1)?;
    after_fault(ctx, id, &logs)
}

fn te_chunked_with_content_length(ctx: &Ctx) -> Result<(), String> {
    let id = "hx_te";
    let logs = Logs::mark(ctx, id);
    let be = backend(id);
    let h = host(ctx, id);
    let n0 = be.record_count();
    let smuggled = format!("GET /app/smuggled?smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n");
    let chunk_of_smuggled = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    let cases: [(&str, String, &[u8]); 2] = [
        // chunked ends early; CL would take the smuggled request as body
        (
            "CL longer than the chunked body",
            format!(
                "POST /app/x?te1 HTTP/1.1\r\nHost: {h}\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}"
            ),
            b"hello",
        ),
        // CL 0 would make the chunk a request of its own
        (
            "CL 0 with a chunk holding a request",
            format!(
                "POST /app/x?te2 HTTP/1.1\r\nHost: {h}\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n{chunk_of_smuggled}"
            ),
            smuggled.as_bytes(),
        ),
    ];
    let mut served = 0;
    for (name, raw, want_stdin) in &cases {
        let mut c = ctx.connect(id)?;
        c.set_timeout(Duration::from_secs(5))
            .map_err(String::from)?;
        c.send_raw(raw.as_bytes()).map_err(String::from)?;
        let r = c.read_response(false).map_err(|e| format!("{name}: {e}"))?;
        if std::env::var_os("MFCGI_VERBOSE").is_some() {
            eprintln!("    te: {name}: {}", r.status);
        }
        ensure(r.status == 400 || r.status == 200, || {
            format!("{name}: want 400 or 200, got {}", r.summary())
        })?;
        if r.status == 200 {
            served += 1;
            let rec = be.wait_record(n0 + served, Duration::from_secs(3))?;
            ensure(rec.stdin == *want_stdin, || {
                format!(
                    "{name}: application got body {:?} (want the chunked body {:?})",
                    String::from_utf8_lossy(&rec.stdin),
                    String::from_utf8_lossy(want_stdin)
                )
            })?;
        }
        // whatever else comes on this connection must not be a response to the smuggled request
        if let Ok(r2) = c.read_response(false) {
            return Err(format!(
                "{name}: a second response on the connection: {}",
                r2.summary()
            ));
        }
    }
    thread::sleep(Duration::from_millis(200));
    let recs = be.records();
    let bad: Vec<String> = recs[n0..]
        .iter()
        .filter(|r| {
            r.req.query().contains("smuggled")
                || r.req
                    .param("REQUEST_URI")
                    .unwrap_or_default()
                    .contains("smuggled")
        })
        .map(|r| r.req.params_text())
        .collect();
    ensure(bad.is_empty(), || {
        format!(
            "the application received a smuggled request:\n{}",
            bad.join("\n")
        )
    })?;
    ensure(recs.len() - n0 == served, || {
        format!(
            "{} application requests for {served} served",
            recs.len() - n0
        )
    })?;
    logs.at_most_errors(0)?;
    after_fault(ctx, id, &logs)
}

fn encoded_cr_lf_nul_in_path_info(ctx: &Ctx) -> Result<(), String> {
    let id = "hx_crlf";
    let logs = Logs::mark(ctx, id);
    let be = backend(id);
    let c0 = be.connections();
    let n0 = be.record_count();
    for target in [
        "/app/x%0d%0aX:%20y",
        "/app/x%0a",
        "/app/x%0d",
        "/app/x%00",
        "/app/x%0d%0aX:%20y/z.php?q=1",
    ] {
        let r = ctx.get(id, target)?;
        if std::env::var_os("MFCGI_VERBOSE").is_some() {
            eprintln!("    crlf: {target}: {}", r.status);
        }
        ensure(r.status == 404 || r.status == 400, || {
            format!("{target}: want 404 or 400, got {}", r.summary())
        })?;
    }
    thread::sleep(Duration::from_millis(100));
    ensure(be.connections() == c0 && be.record_count() == n0, || {
        let recs = be.records();
        format!(
            "the application was reached ({} connections): {:?}",
            be.connections() - c0,
            recs[n0..]
                .iter()
                .map(|r| r.req.param("PATH_INFO"))
                .collect::<Vec<_>>()
        )
    })?;
    logs.wait_for(&["FCGI063", "CR, LF or NUL"], Duration::from_secs(2))?;
    logs.at_most_errors(0)?;
    after_fault(ctx, id, &logs)
}

fn long_url_and_huge_merged_header(ctx: &Ctx) -> Result<(), String> {
    let id = "err_hx_big";
    let logs = Logs::mark(ctx, id);
    let rb = raw_backend(id);
    let n0 = rb.reqs().len();
    let h = host(ctx, id);
    // request line "GET <target> HTTP/1.1" of 8180 bytes (LimitRequestLine 8190)
    let prefix = "/app/long?q=";
    let target = format!("{prefix}{}", "u".repeat(8180 - 4 - 9 - prefix.len()));
    let mut raw = format!("GET {target} HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n");
    // 100 × 8000 bytes with one name: httpd merges them into one 800 KB field, which it
    // accepts only with LimitRequestFieldSize above the merged size (set in this vhost)
    let value = "b".repeat(8000);
    for _ in 0..100 {
        raw.push_str(&format!("X-Big: {value}\r\n"));
    }
    raw.push_str("X-Small: kept\r\n\r\n");
    let mut c = ctx.connect(id)?;
    c.send_raw(raw.as_bytes()).map_err(String::from)?;
    let r = c.read_response(false).map_err(String::from)?;
    ensure(r.status == 200 && r.body == OK_BODY, || {
        format!("want 200 OK, got {}", r.summary())
    })?;
    let req = rb.wait_req(n0 + 1, Duration::from_secs(3))?;
    let mut errs = req.problems.clone();
    if req.param("REQUEST_URI") != Some(target.as_bytes()) {
        errs.push(format!(
            "REQUEST_URI is {:?} bytes, want {}",
            req.param("REQUEST_URI").map(|v| v.len()),
            target.len()
        ));
    }
    if req.param("HTTP_X_SMALL") != Some(b"kept".as_slice()) {
        errs.push("HTTP_X_SMALL missing".into());
    }
    if let Some(v) = req.param("HTTP_X_BIG") {
        errs.push(format!(
            "HTTP_X_BIG was sent ({} bytes): want it skipped, not truncated",
            v.len()
        ));
    }
    let biggest = req
        .params_records
        .iter()
        .map(|r| r.len())
        .max()
        .unwrap_or(0);
    if biggest > 65535 {
        errs.push(format!("a PARAMS record of {biggest} bytes"));
    }
    if std::env::var_os("MFCGI_VERBOSE").is_some() {
        eprintln!(
            "    big: {} PARAMS records, largest {biggest} bytes, {} pairs",
            req.params_records.len(),
            req.params.len()
        );
    }
    ensure(errs.is_empty(), || errs.join("; "))?;
    logs.wait_for(
        &[
            "FCGI050",
            "HTTP_X_BIG",
            "does not fit in a FastCGI PARAMS record",
            &vpath(ctx, id),
        ],
        Duration::from_secs(2),
    )?;
    let n050 = logs
        .text()
        .lines()
        .filter(|l| l.contains("FCGI050"))
        .count();
    ensure(n050 == 1, || format!("want one FCGI050 line, got {n050}"))?;
    logs.at_most_errors(0)?;
    after_fault(ctx, id, &logs)
}

// ------------------------------------------------------------------------------------------

fn fake_backends_clean(ctx: &Ctx) -> Result<(), String> {
    let mut problems = Vec::new();
    thread::sleep(Duration::from_millis(1100)); // the parent logs crashed children once a second
    for l in util::read_to_string_lossy(&ctx.error_log()).lines() {
        if l.contains("exit signal") || l.contains("AH00052") || l.contains("FCGI070") {
            problems.push(format!("error.log: {l}"));
        }
    }
    let all: Vec<(String, Arc<Backend>)> = BACKENDS.lock().unwrap().clone();
    for (name, be) in &all {
        be.stop();
        for e in be.errors() {
            problems.push(format!("{name}: {e}"));
        }
    }
    for (name, rb) in RAW.lock().unwrap().iter() {
        rb.stop.store(true, Ordering::SeqCst);
        for r in rb.reqs() {
            for e in r.problems {
                problems.push(format!("{name}: {e}"));
            }
        }
    }
    ensure(problems.is_empty(), || problems.join("\n    "))
}
