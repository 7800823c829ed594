//! FastCGI load generator for `benches/paired.sh` (variant `fpm-direct`): sends GET requests
//! straight to a FastCGI application (php-fpm, the null backend) over kept connections
//! (FCGI_KEEP_CONN), one thread per connection, each waiting for its answer before sending the
//! next request, like wrk does over HTTP. It measures what the application alone can serve,
//! the term of the bound 1/(1/static + 1/direct) that no web server can remove.
//! Prints wrk's lines that the benchmark scripts read (latency percentiles, request count,
//! socket errors, requests per second). Std only.
//!
//! Usage: fcgi-load --connect 127.0.0.1:9000|unix:/path --script /abs/file.php --uri /file.php
//!                  [--conns 32] [--duration 2]

use std::io::{self, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const ROLE_RESPONDER: u16 = 1;
const KEEP_CONN: u8 = 1;

fn header(out: &mut Vec<u8>, rtype: u8, len: usize) {
    out.extend_from_slice(&[1, rtype, 0, 1, (len >> 8) as u8, len as u8, 0, 0]);
}

fn pair(out: &mut Vec<u8>, name: &str, value: &str) {
    for len in [name.len(), value.len()] {
        if len < 128 {
            out.push(len as u8);
        } else {
            out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
        }
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// One complete request: BEGIN_REQUEST (keep the connection), the CGI variables Apache sends
/// for a GET, the end of PARAMS and an empty STDIN.
fn request(script: &str, uri: &str, port: &str) -> Vec<u8> {
    let docroot = script.strip_suffix(uri).unwrap_or("/");
    let mut params = Vec::new();
    for (n, v) in [
        ("HTTP_HOST", format!("127.0.0.1:{port}")),
        ("HTTP_USER_AGENT", "fcgi-load".into()),
        ("HTTP_ACCEPT", "*/*".into()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
        ("SERVER_SIGNATURE", String::new()),
        ("SERVER_SOFTWARE", "Apache".into()),
        ("SERVER_NAME", "127.0.0.1".into()),
        ("SERVER_ADDR", "127.0.0.1".into()),
        ("SERVER_PORT", port.into()),
        ("REMOTE_ADDR", "127.0.0.1".into()),
        ("DOCUMENT_ROOT", docroot.into()),
        ("REQUEST_SCHEME", "http".into()),
        ("CONTEXT_PREFIX", String::new()),
        ("CONTEXT_DOCUMENT_ROOT", docroot.into()),
        ("SERVER_ADMIN", "[no address given]".into()),
        ("SCRIPT_FILENAME", script.into()),
        ("REMOTE_PORT", "40000".into()),
        ("GATEWAY_INTERFACE", "CGI/1.1".into()),
        ("SERVER_PROTOCOL", "HTTP/1.1".into()),
        ("REQUEST_METHOD", "GET".into()),
        ("QUERY_STRING", String::new()),
        ("REQUEST_URI", uri.into()),
        ("SCRIPT_NAME", uri.into()),
    ] {
        pair(&mut params, n, &v);
    }
    let mut out = Vec::with_capacity(params.len() + 64);
    header(&mut out, BEGIN_REQUEST, 8);
    out.extend_from_slice(&ROLE_RESPONDER.to_be_bytes());
    out.extend_from_slice(&[KEEP_CONN, 0, 0, 0, 0, 0]);
    header(&mut out, PARAMS, params.len());
    out.extend_from_slice(&params);
    header(&mut out, PARAMS, 0);
    header(&mut out, STDIN, 0);
    out
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn connect(addr: &str) -> io::Result<Stream> {
        Ok(match addr.strip_prefix("unix:") {
            Some(p) => Stream::Unix(UnixStream::connect(p)?),
            None => {
                let s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
        })
    }
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(b),
            Stream::Unix(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(b),
            Stream::Unix(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads one answer up to its END_REQUEST; returns the bytes of content received.
fn answer(r: &mut impl Read) -> io::Result<u64> {
    let mut total = 0u64;
    let mut skip = [0u8; 65536 + 256];
    loop {
        let mut h = [0u8; 8];
        r.read_exact(&mut h)?;
        let len = usize::from(u16::from_be_bytes([h[4], h[5]])) + usize::from(h[6]);
        r.read_exact(&mut skip[..len])?;
        total += len as u64;
        if h[1] == END_REQUEST {
            return Ok(total);
        }
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(script)) = (arg(&args, "--connect"), arg(&args, "--script")) else {
        eprintln!(
            "usage: fcgi-load --connect ADDR --script FILE [--uri URI] [--conns N] [--duration S]"
        );
        std::process::exit(2);
    };
    let uri = arg(&args, "--uri").unwrap_or_else(|| "/".into());
    let conns: usize = arg(&args, "--conns")
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let secs: f64 = arg(&args, "--duration")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    let port = addr.rsplit(':').next().unwrap_or("80").to_string();
    let req = Arc::new(request(&script, &uri, &port));
    let bytes = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let (addr, req, bytes) = (addr.clone(), Arc::clone(&req), Arc::clone(&bytes));
            thread::spawn(move || {
                let mut lat: Vec<u32> = Vec::new();
                let (mut conn_err, mut io_err) = (0u64, 0u64);
                let mut conn: Option<(Stream, BufReader<Stream>)> = None;
                while Instant::now() < deadline {
                    if conn.is_none() {
                        // one handle writes, a clone reads through a buffer
                        match Stream::connect(&addr)
                            .and_then(|w| Ok((w.try_clone()?, w)))
                            .map(|(r, w)| (w, BufReader::with_capacity(65536, r)))
                        {
                            Ok(c) => conn = Some(c),
                            Err(_) => {
                                conn_err += 1;
                                thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                        }
                    }
                    let (w, r) = conn.as_mut().expect("connected above");
                    let t0 = Instant::now();
                    match w.write_all(&req).and_then(|_| answer(r)) {
                        Ok(n) => {
                            bytes.fetch_add(n, Ordering::Relaxed);
                            lat.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        }
                        Err(_) => {
                            io_err += 1;
                            conn = None;
                        }
                    }
                }
                (lat, conn_err, io_err)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let (mut conn_err, mut io_err) = (0, 0);
    for w in workers {
        if let Ok((l, c, e)) = w.join() {
            lat.extend(l);
            conn_err += c;
            io_err += e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |q: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((q * (lat.len() - 1) as f64).round() as usize).min(lat.len() - 1);
        f64::from(lat[i]) / 1000.0
    };
    println!("Running {secs}s test @ {addr} {script}");
    println!("  {conns} connections (FastCGI, FCGI_KEEP_CONN)");
    println!("  Latency Distribution");
    for (label, q) in [("50%", 0.50), ("75%", 0.75), ("90%", 0.90), ("99%", 0.99)] {
        println!("     {label} {:8.2}ms", pct(q));
    }
    println!(
        "  {} requests in {elapsed:.2}s, {:.2}MB read",
        lat.len(),
        bytes.load(Ordering::Relaxed) as f64 / 1e6
    );
    if conn_err + io_err > 0 {
        println!("  Socket errors: connect {conn_err}, read {io_err}, write 0, timeout 0");
    }
    println!("Requests/sec: {:10.2}", lat.len() as f64 / elapsed);
}
