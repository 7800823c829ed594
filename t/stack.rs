//! The module behind the stack most sites run: TLS (mod_ssl), HTTP/2 (mod_http2, where the MPM
//! supports it: event and worker) and compression (mod_deflate), php-fpm behind the
//! AddType/Action/Alias recipe with `-flush` and the pool on. The client is curl (HTTP/2 over
//! TLS and gzip are curl's, not the harness's). Checked: the CGI variables of an HTTPS/HTTP/2
//! request, a 3 MB request body, 16 concurrent streams on one connection with every body
//! intact, a 4 MiB response through mod_deflate decoded byte for byte, and `-flush` output that
//! reaches the client piece by piece through TLS, HTTP/2 and gzip.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::check::{ensure, p};
use crate::fpm::{self, Pool};
use crate::harness::{Builder, Ctx, Suite, test};
use crate::procs::Endpoint;
use crate::util::{self, q};

pub const SUITE: Suite = Suite {
    name: "stack",
    setup,
    tests: &[
        test("stack_tls_http2_variables_and_body", variables_and_body),
        test("stack_http2_concurrent_streams", concurrent_streams),
        test("stack_deflate_large_response_intact", deflate_large),
        test("stack_flush_through_tls_http2_gzip", flush_through),
        test("stack_cancelled_upload_not_passed_on", cancelled_upload),
        test("stack_mod_cache_through_action", cache_through_action),
    ],
};

const MODULES: &str = "/usr/lib/apache2/modules";

/// `stream.php?n=N&ms=M`: N lines, M ms apart, each sent with flush() (PHP's own output
/// buffer is switched off first).
const STREAM_PHP: &str = r#"<?php
while (ob_get_level()) { ob_end_flush(); }
header('Content-Type: text/plain');
$n = isset($_GET['n']) ? (int)$_GET['n'] : 5;
$ms = isset($_GET['ms']) ? (int)$_GET['ms'] : 300;
for ($i = 0; $i < $n; $i++) {
    echo "tick $i\n";
    flush();
    if ($i + 1 < $n) { usleep($ms * 1000); }
}
"#;

/// The variables a TLS / HTTP/2 request must carry.
const VARS_PHP: &str = r#"<?php
header('Content-Type: text/plain');
foreach (['HTTPS', 'REQUEST_SCHEME', 'SERVER_PROTOCOL', 'SERVER_PORT', 'SCRIPT_NAME',
          'PATH_INFO', 'QUERY_STRING', 'SSL_PROTOCOL'] as $k) {
    echo $k, '=', $_SERVER[$k] ?? '-', "\n";
}
"#;

/// `cached.php`: a response shared caches may keep for a minute, different every time it is
/// generated.
const CACHED_PHP: &str = r#"<?php
header('Cache-Control: public, max-age=60');
echo 'generated ', uniqid('', true), ' for ', $_SERVER['QUERY_STRING'], "\n";
"#;

/// `record.php`: appends the length of the body it got to `<stack_dir>/records/got.log`.
const RECORD_PHP: &str = r#"<?php
$b = file_get_contents('php://input');
file_put_contents(__RECORDS__ . '/got.log', 'len=' . strlen($b) . "\n", FILE_APPEND | LOCK_EX);
echo 'got ', strlen($b), "\n";
"#;

fn setup(b: &mut Builder) -> Result<(), String> {
    // valgrind runs only the request-path suites; OpenSSL under memcheck is not what it checks
    if b.env.valgrind {
        b.set("stack_off", "not configured under valgrind");
        return Ok(());
    }
    let dir = b.tmp.join("stack");
    util::mkdir_p(&dir)?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=stack.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let h2 = b.env.mpm != "prefork"; // mod_http2 stays inactive under prefork
    let mut mods = vec![
        "ssl",
        "socache_shmcb",
        "filter",
        "deflate",
        "cache",
        "cache_disk",
    ];
    if h2 {
        mods.push("http2");
    }
    for m in mods {
        b.apache
            .global
            .push(format!("LoadModule {m}_module {MODULES}/mod_{m}.so"));
    }
    let docroot = b.docroot("stack")?;
    util::write_file(&docroot.join("stream.php"), STREAM_PHP)?;
    util::write_file(&docroot.join("sub/vars.php"), VARS_PHP)?;
    util::write_file(&docroot.join("cached.php"), CACHED_PHP)?;
    let records = dir.join("records");
    util::mkdir_p(&records)?;
    std::fs::set_permissions(
        &records,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .map_err(|e| format!("chmod {}: {e}", p(&records)))?;
    let records_php = format!("'{}'", p(&records));
    util::write_file(
        &docroot.join("record.php"),
        RECORD_PHP.replace("__RECORDS__", &records_php),
    )?;
    let sock = b.tmp.join("run/stack.sock");
    let mut pool = Pool::new(
        "stack",
        "www-data",
        "www-data",
        Endpoint::Unix(sock.clone()),
    );
    pool.max_children = 8;
    b.pool(pool);
    let vdir = dir.join("fastcgi"); // never created
    let vpath = vdir.join("php.fcgi");
    let body = format!(
        "SSLEngine on\nSSLCertificateFile {cert}\nSSLCertificateKeyFile {key}\n{protocols}\
         AddOutputFilterByType DEFLATE text/plain application/octet-stream\n{recipe}",
        cert = q(p(&cert)),
        key = q(p(&key)),
        protocols = if h2 { "Protocols h2 http/1.1\n" } else { "" },
        recipe = recipe(&vpath, &sock, "-flush -max-conns 8"),
    );
    let port = b.port()?;
    b.vhost("stack", port, "stack.test", &docroot, &body);
    // mod_cache in front: through Action only as a normal handler (CacheQuickHandler off);
    // the quick handler's save filter does not survive the Action's internal redirect
    let cache_root = dir.join("cache");
    util::mkdir_p(&cache_root)?;
    util::run(
        Command::new("chown")
            .arg("www-data:www-data")
            .arg(&cache_root),
        "chown the cache root",
    )?;
    let body = format!(
        "CacheRoot {root}\nCacheEnable disk /\nCacheQuickHandler off\nCacheHeader on\n{recipe}",
        root = q(p(&cache_root)),
        recipe = recipe(&vdir.join("php-cache.fcgi"), &sock, "-max-conns 8"),
    );
    let port = b.port()?;
    b.vhost("stack_cache", port, "stack-cache.test", &docroot, &body);
    if h2 {
        // cleartext HTTP/2 (prior knowledge) for the raw-frame client of `cancelled_upload`
        let body = format!(
            "Protocols h2c http/1.1\n{}",
            recipe(&vdir.join("php-h2c.fcgi"), &sock, "-max-conns 8")
        );
        let port = b.port()?;
        b.vhost("stack_h2c", port, "stack-h2c.test", &docroot, &body);
    }
    b.set("stack_h2", if h2 { "1" } else { "0" });
    b.set("stack_dir", p(&dir));
    Ok(())
}

/// mod_fastcgi's recipe for `.php` on the virtual path `vpath` (its directory never exists)
/// served by php-fpm on `sock`, with the given FastCgiExternalServer options.
fn recipe(vpath: &Path, sock: &Path, opts: &str) -> String {
    let vdir = vpath.parent().unwrap_or(vpath);
    format!(
        "AddType application/x-httpd-fastphp .php\n\
         Action application/x-httpd-fastphp /php.fcgi\n\
         Alias /php.fcgi {vp}\n\
         FastCgiExternalServer {vp} -socket {sock} {opts}\n\
         <Directory {vd}>\n    Require all granted\n</Directory>\n",
        vp = q(p(vpath)),
        sock = q(p(sock)),
        vd = q(p(vdir)),
    )
}

fn base(ctx: &Ctx) -> Result<String, String> {
    if let Some(why) = ctx.vals.get("stack_off") {
        return Err(format!("the stack vhost is {why}"));
    }
    Ok(format!("https://127.0.0.1:{}", ctx.vhost("stack").port))
}

fn want_h2(ctx: &Ctx) -> bool {
    ctx.val("stack_h2") == "1"
}

/// curl with TLS verification off (self-signed), HTTP/2 offered; extra args appended.
fn curl() -> Command {
    let mut c = Command::new("curl");
    c.args(["-sSk", "--http2", "--max-time", "60"]);
    c
}

fn run(mut c: Command) -> Result<Vec<u8>, String> {
    let what = format!("curl {:?}", c.get_args().collect::<Vec<_>>());
    util::run(&mut c, &what)
}

/// The HTTP version curl reports for a response, from its `-w '%{http_version}'`.
fn version_ok(ctx: &Ctx, v: &str) -> Result<(), String> {
    let want = if want_h2(ctx) { "2" } else { "1.1" };
    ensure(v.trim() == want, || {
        format!("HTTP version {v:?}, want {want} (MPM {})", ctx.env.mpm)
    })
}

fn variables_and_body(ctx: &Ctx) -> Result<(), String> {
    let base = base(ctx)?;
    let mut c = curl();
    c.args(["-w", "\nHTTP_VERSION=%{http_version}\n"])
        .arg(format!("{base}/sub/vars.php/extra/path?a=1"));
    let text = String::from_utf8_lossy(&run(c)?).into_owned();
    let kv = util::parse_kv(&text);
    version_ok(
        ctx,
        kv.get("HTTP_VERSION").map(|s| s.as_str()).unwrap_or(""),
    )?;
    let proto = if want_h2(ctx) { "HTTP/2.0" } else { "HTTP/1.1" };
    // SSL_PROTOCOL and the other SSL_* variables need `SSLOptions +StdEnvVars`, as with CGI
    ensure(
        kv.get("SSL_PROTOCOL").map(|s| s.as_str()) == Some("-"),
        || format!("SSL_PROTOCOL without SSLOptions +StdEnvVars: {text}"),
    )?;
    for (k, v) in [
        ("HTTPS", "on"),
        ("REQUEST_SCHEME", "https"),
        ("SERVER_PROTOCOL", proto),
        ("PATH_INFO", "/extra/path"),
        ("SCRIPT_NAME", "/sub/vars.php"),
        ("QUERY_STRING", "a=1"),
        ("SERVER_PORT", &ctx.vhost("stack").port.to_string()),
    ] {
        ensure(kv.get(k).map(|s| s.as_str()) == Some(v), || {
            format!("{k} = {:?}, want {v:?}; response:\n{text}", kv.get(k))
        })?;
    }
    // a 3 MB body, sent as HTTP/2 DATA frames
    let dir = Path::new(ctx.val("stack_dir"));
    let data = util::Prng::new(0x57ac).bytes(3_000_000);
    let file = dir.join("body.bin");
    util::write_file(&file, &data)?;
    let mut c = curl();
    c.args([
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
    ])
    .arg(format!("@{}", p(&file)))
    .arg(format!("{base}/post.php"));
    let kv = util::parse_kv(&String::from_utf8_lossy(&run(c)?));
    let md5 = util::md5_hex(&data)?;
    ensure(
        kv.get("LEN").map(|s| s.as_str()) == Some("3000000") && kv.get("MD5") == Some(&md5),
        || format!("POST body arrived as {kv:?}, sent 3000000 bytes with md5 {md5}"),
    )
}

fn concurrent_streams(ctx: &Ctx) -> Result<(), String> {
    let base = base(ctx)?;
    let dir = Path::new(ctx.val("stack_dir")).join("streams");
    util::mkdir_p(&dir)?;
    // 16 transfers, all at once over one connection (curl multiplexes HTTP/2 streams)
    let n = 16;
    let mut c = curl();
    c.args(["--parallel", "--parallel-max", "16"]);
    for i in 0..n {
        if i > 0 {
            c.arg("--next").args(["-sSk", "--http2"]);
        }
        c.args(["-w", "%{http_code} %{http_version} %{num_connects}\n", "-o"])
            .arg(dir.join(format!("{i}.out")))
            .arg(format!("{base}/big.php?mb=1&i={i}"));
    }
    let out = String::from_utf8_lossy(&run(c)?).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    ensure(lines.len() == n, || {
        format!("{} results from curl: {out}", lines.len())
    })?;
    let connects: u32 = lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u32>().ok())
        .sum();
    for l in &lines {
        let mut f = l.split_whitespace();
        ensure(f.next() == Some("200"), || {
            format!("a stream answered {l:?}")
        })?;
        version_ok(ctx, f.next().unwrap_or(""))?;
    }
    if want_h2(ctx) {
        ensure(connects == 1, || {
            format!("{connects} connections for {n} transfers: not multiplexed")
        })?;
    }
    let mut want = Vec::with_capacity(1 << 20);
    for i in 0..128 {
        want.extend(fpm::big_piece(i));
    }
    for i in 0..n {
        let got = std::fs::read(dir.join(format!("{i}.out"))).map_err(|e| e.to_string())?;
        ensure(got == want, || {
            format!("stream {i}: {} bytes, not big.php's 1 MiB", got.len())
        })?;
    }
    Ok(())
}

fn deflate_large(ctx: &Ctx) -> Result<(), String> {
    let base = base(ctx)?;
    let dir = Path::new(ctx.val("stack_dir"));
    let (raw, decoded) = (dir.join("gz.raw"), dir.join("gz.out"));
    // once as sent (gzip on the wire), once decoded by curl
    let mut c = curl();
    c.args(["-H", "Accept-Encoding: gzip", "-D", "-", "-o"])
        .arg(&raw)
        .arg(format!("{base}/big.php?mb=4"));
    let head = String::from_utf8_lossy(&run(c)?).to_ascii_lowercase();
    ensure(head.contains("content-encoding: gzip"), || {
        format!("no gzip from mod_deflate: {head}")
    })?;
    let wire = util::file_len(&raw);
    let mut c = curl();
    c.arg("--compressed")
        .arg("-o")
        .arg(&decoded)
        .arg(format!("{base}/big.php?mb=4"));
    run(c)?;
    let got = std::fs::read(&decoded).map_err(|e| e.to_string())?;
    let mut want = Vec::with_capacity(4 << 20);
    for i in 0..4 * 128 {
        want.extend(fpm::big_piece(i));
    }
    ensure(got == want, || {
        format!(
            "decoded body {} bytes, want big.php's {} ({} compressed)",
            got.len(),
            want.len(),
            wire
        )
    })?;
    ensure(wire > 0 && wire < want.len() as u64 / 4, || {
        format!("{wire} bytes on the wire for 4 MiB of repetitive text")
    })
}

fn flush_through(ctx: &Ctx) -> Result<(), String> {
    let base = base(ctx)?;
    let (n, ms) = (8u32, 60u64); // gaps below the 100 ms after which output is flushed anyway
    let mut c = curl();
    c.args(["--compressed", "-N", "-D", "/dev/stderr"])
        .arg(format!("{base}/stream.php?n={n}&ms={ms}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = c.spawn().map_err(|e| format!("curl: {e}"))?;
    let stdout = child.stdout.take().unwrap();
    let mut arrivals = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        arrivals.push((started.elapsed(), line));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let head = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    ensure(out.status.success(), || format!("curl failed: {head}"))?;
    ensure(head.contains("content-encoding: gzip"), || {
        format!("the stream was not compressed: {head}")
    })?;
    let lines: Vec<&str> = arrivals.iter().map(|(_, l)| l.as_str()).collect();
    let want: Vec<String> = (0..n).map(|i| format!("tick {i}")).collect();
    ensure(lines == want, || format!("lines {lines:?}"))?;
    // the script spends (n-1)*ms between its first and last line: with -flush the client sees
    // that spread; buffered anywhere on the way, all lines arrive together at the end
    let spread = arrivals[n as usize - 1].0 - arrivals[0].0;
    let min = Duration::from_millis((n as u64 - 1) * ms * 3 / 4);
    ensure(spread >= min, || {
        format!(
            "lines arrived within {spread:?} of each other (want >= {min:?}): output held back; arrivals {:?}",
            arrivals.iter().map(|(t, _)| *t).collect::<Vec<_>>()
        )
    })
}

/// An upload the client cancels halfway never reaches the application as a whole request:
/// with a Content-Length (curl killed after 3000 of 6000 bytes, over HTTP/2 where the MPM has
/// it), and over HTTP/2 without one, where a client's RST_STREAM makes mod_http2 end the
/// stream's input as if the body were complete (a raw-frame client, cleartext HTTP/2). The
/// finished upload before them is recorded, so the check can see one.
fn cancelled_upload(ctx: &Ctx) -> Result<(), String> {
    let base = base(ctx)?;
    let log = Path::new(ctx.val("stack_dir")).join("records/got.log");
    let lines = || {
        std::fs::read_to_string(&log)
            .map(|s| s.lines().map(str::to_string).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let before = lines();
    let url = format!("{base}/record.php");
    upload(&url, 3000, 3000, false)?;
    upload(&url, 3000, 6000, true)?;
    let mut want = vec!["len=3000"];
    let mut resets = 0;
    if want_h2(ctx) {
        let port = ctx.vhost("stack_h2c").port;
        for _ in 0..3 {
            h2c_post(port, "/record.php", 1000, false)?;
            resets += 1;
        }
        // the same client finishing its body: recorded (the resets above can be told apart)
        h2c_post(port, "/record.php", 1000, true)?;
        want.push("len=1000");
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = lines();
    let new = &after[before.len().min(after.len())..];
    ensure(new == want, || {
        format!(
            "the application recorded {new:?}, want {want:?}: the finished uploads only (not the one cut at 3000 of 6000 bytes, nor the {resets} reset HTTP/2 streams)"
        )
    })?;
    if resets > 0 {
        // the access log tells the reset requests (400: not served) from the finished one
        let port = format!(":{} ", ctx.vhost("stack_h2c").port);
        let log = util::read_to_string_lossy(&ctx.apache_conf.access_log());
        let statuses: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&port) && l.contains("\"POST /record.php HTTP/2.0\""))
            .filter_map(|l| l.rsplit_once("\" ").and_then(|(_, t)| t.split(' ').next()))
            .collect();
        ensure(statuses == ["400", "400", "400", "200"], || {
            format!(
                "access log statuses of the h2c POSTs {statuses:?}, want the 3 resets as 400 and the finished one as 200"
            )
        })?;
    }
    Ok(())
}

/// PUTs `len` bytes through curl's stdin (`-T -`) with `Content-Length: length`; `cancel`:
/// curl is killed half a second later (`--max-time` would not do: curl then ends the body
/// properly).
fn upload(url: &str, len: usize, length: usize, cancel: bool) -> Result<(), String> {
    use std::io::Write;
    let mut c = curl();
    c.args(["-T", "-", "-o", "/dev/null", "-H"])
        .arg(format!("Content-Length: {length}"))
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().map_err(|e| format!("curl: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("curl without stdin")?;
    stdin
        .write_all(&vec![b'u'; len])
        .map_err(|e| format!("writing to curl: {e}"))?;
    if cancel {
        std::thread::sleep(Duration::from_millis(500));
        let _ = child.kill();
        let _ = child.wait();
        return Ok(());
    }
    drop(stdin);
    let st = child.wait().map_err(|e| format!("curl: {e}"))?;
    ensure(st.success(), || format!("finished upload: curl {st}"))
}

/// Cleartext HTTP/2 with prior knowledge: a POST without a length, `len` bytes of DATA, then
/// either END_STREAM (`finish`) or, 300 ms later, RST_STREAM (CANCEL); the connection is
/// closed 300 ms after that.
fn h2c_post(port: u16, path: &str, len: usize, finish: bool) -> Result<(), String> {
    use std::io::Write;
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let n = payload.len() as u32;
        let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }
    // HPACK: every field a literal without indexing, new name, no Huffman (lengths < 127)
    let mut block = Vec::new();
    for (k, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "127.0.0.1"),
    ] {
        block.push(0);
        block.push(k.len() as u8);
        block.extend_from_slice(k.as_bytes());
        block.push(v.len() as u8);
        block.extend_from_slice(v.as_bytes());
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    out.extend(frame(0x1, 0x4, 1, &block)); // HEADERS, END_HEADERS
    out.extend(frame(0x0, u8::from(finish), 1, &vec![b'r'; len])); // DATA (END_STREAM)
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("h2c connect: {e}"))?;
    s.write_all(&out).map_err(|e| format!("h2c send: {e}"))?;
    std::thread::sleep(Duration::from_millis(300));
    if !finish {
        s.write_all(&frame(0x3, 0, 1, &8u32.to_be_bytes())) // RST_STREAM CANCEL
            .map_err(|e| format!("h2c reset: {e}"))?;
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// mod_cache (disk) in front of PHP through the Action recipe, as a normal handler: the first
/// request is generated and stored, the second answered from the cache with the same body, and
/// another query string is a different entry.
fn cache_through_action(ctx: &Ctx) -> Result<(), String> {
    base(ctx)?;
    let id = "stack_cache";
    let tag = format!("k={}", std::process::id());
    let url = format!("/cached.php?{tag}");
    let first = ctx.get(id, &url)?;
    let second = ctx.get(id, &url)?;
    let other = ctx.get(id, &format!("{url}&other=1"))?;
    let cache = |r: &crate::http::Response| r.header("X-Cache").unwrap_or("-").to_string();
    let text = |r: &crate::http::Response| String::from_utf8_lossy(&r.body).into_owned();
    ensure(
        first.status == 200
            && text(&first).starts_with("generated ")
            && cache(&first).starts_with("MISS"),
        || format!("first request: {}", first.summary()),
    )?;
    ensure(
        second.status == 200 && cache(&second).starts_with("HIT") && second.body == first.body,
        || {
            format!(
                "second request not answered from the cache: X-Cache {:?}, body {:?} (first {:?})",
                cache(&second),
                text(&second),
                text(&first)
            )
        },
    )?;
    ensure(
        other.status == 200 && cache(&other).starts_with("MISS") && other.body != first.body,
        || {
            format!(
                "another query string: X-Cache {:?}, body {:?}",
                cache(&other),
                text(&other)
            )
        },
    )
}
