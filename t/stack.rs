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
    let mut mods = vec!["ssl", "socache_shmcb", "filter", "deflate"];
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
         AddOutputFilterByType DEFLATE text/plain application/octet-stream\n\
         AddType application/x-httpd-fastphp .php\n\
         Action application/x-httpd-fastphp /php.fcgi\n\
         Alias /php.fcgi {vp}\n\
         FastCgiExternalServer {vp} -socket {sock} -flush -max-conns 8\n\
         <Directory {vd}>\n    Require all granted\n</Directory>\n",
        cert = q(p(&cert)),
        key = q(p(&key)),
        protocols = if h2 { "Protocols h2 http/1.1\n" } else { "" },
        vp = q(p(&vpath)),
        sock = q(p(&sock)),
        vd = q(p(&vdir)),
    );
    let port = b.port()?;
    b.vhost("stack", port, "stack.test", &docroot, &body);
    b.set("stack_h2", if h2 { "1" } else { "0" });
    b.set("stack_dir", p(&dir));
    Ok(())
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
