//! Null FastCGI responder for `benches/run.sh`: answers every request as soon as its STDIN
//! stream ends, with a fixed header block and a body of `--body-size` bytes, and honours
//! FCGI_KEEP_CONN. It does no work of its own, so a benchmark against it measures the web
//! server and its FastCGI connector. Std only; one thread per connection.
//!
//! Usage: null-fcgi [--listen 127.0.0.1:9100 | --listen unix:/path/to.sock] [--body-size 100]

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;

const BEGIN_REQUEST: u8 = 1;
const ABORT_REQUEST: u8 = 2;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const GET_VALUES: u8 = 9;
const GET_VALUES_RESULT: u8 = 10;
const UNKNOWN_TYPE: u8 = 11;
const KEEP_CONN: u8 = 1;

fn header(out: &mut Vec<u8>, rtype: u8, id: u16, len: usize, pad: u8) {
    out.extend_from_slice(&[
        1,
        rtype,
        (id >> 8) as u8,
        id as u8,
        (len >> 8) as u8,
        len as u8,
        pad,
        0,
    ]);
}

/// The complete answer to one request (STDOUT records, empty STDOUT, END_REQUEST).
fn response(id: u16, body_size: usize) -> Vec<u8> {
    let mut data = b"Content-Type: text/plain\r\n\r\n".to_vec();
    data.extend(std::iter::repeat_n(b'x', body_size.saturating_sub(1)));
    if body_size > 0 {
        data.push(b'\n');
    }
    let mut out = Vec::with_capacity(data.len() + 64);
    for piece in data.chunks(65528) {
        let pad = (8 - piece.len() % 8) % 8;
        header(&mut out, STDOUT, id, piece.len(), pad as u8);
        out.extend_from_slice(piece);
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    header(&mut out, STDOUT, id, 0, 0);
    header(&mut out, END_REQUEST, id, 8, 0);
    out.extend_from_slice(&[0; 8]);
    out
}

/// A connection from either listener.
trait Stream: Read + Write + Sized {
    fn duplicate(&self) -> io::Result<Self>;
}
impl Stream for TcpStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.set_nodelay(true)?;
        self.try_clone()
    }
}
impl Stream for UnixStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
}

fn serve<S: Stream>(stream: S, body_size: usize) -> io::Result<()> {
    let mut r = BufReader::with_capacity(64 * 1024, stream.duplicate()?);
    let mut w = BufWriter::with_capacity(64 * 1024, stream);
    let mut content = vec![0u8; 65535 + 255];
    // per request: id, keep-conn flag, whether STDIN has ended
    let mut current: Option<(u16, bool)> = None;
    let mut cached: Option<(u16, Vec<u8>)> = None;
    loop {
        let mut h = [0u8; 8];
        match r.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        if h[0] != 1 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad version"));
        }
        let rtype = h[1];
        let id = u16::from_be_bytes([h[2], h[3]]);
        let len = u16::from_be_bytes([h[4], h[5]]) as usize + h[6] as usize;
        r.read_exact(&mut content[..len])?;
        let clen = u16::from_be_bytes([h[4], h[5]]) as usize;
        match rtype {
            BEGIN_REQUEST => {
                let keep = clen >= 3 && content[2] & KEEP_CONN != 0;
                current = Some((id, keep));
            }
            PARAMS => {}
            STDIN if clen == 0 => {
                let Some((rid, keep)) = current.take() else {
                    continue;
                };
                if cached.as_ref().map(|c| c.0) != Some(rid) {
                    cached = Some((rid, response(rid, body_size)));
                }
                w.write_all(&cached.as_ref().unwrap().1)?;
                w.flush()?;
                if !keep {
                    return Ok(());
                }
            }
            STDIN => {}
            ABORT_REQUEST => {
                let mut out = Vec::new();
                header(&mut out, END_REQUEST, id, 8, 0);
                out.extend_from_slice(&[0; 8]);
                w.write_all(&out)?;
                w.flush()?;
                current = None;
            }
            GET_VALUES => {
                // FCGI_MPXS_CONNS=0, FCGI_MAX_CONNS / FCGI_MAX_REQS: let the client decide
                let pairs: &[(&[u8], &[u8])] = &[(b"FCGI_MPXS_CONNS", b"0")];
                let mut body = Vec::new();
                for (k, v) in pairs {
                    body.push(k.len() as u8);
                    body.push(v.len() as u8);
                    body.extend_from_slice(k);
                    body.extend_from_slice(v);
                }
                let mut out = Vec::new();
                header(&mut out, GET_VALUES_RESULT, 0, body.len(), 0);
                out.extend_from_slice(&body);
                w.write_all(&out)?;
                w.flush()?;
            }
            t => {
                let mut out = Vec::new();
                header(&mut out, UNKNOWN_TYPE, 0, 8, 0);
                out.extend_from_slice(&[t, 0, 0, 0, 0, 0, 0, 0]);
                w.write_all(&out)?;
                w.flush()?;
            }
        }
    }
}

fn main() {
    let mut listen = "127.0.0.1:9100".to_string();
    let mut body_size = 100usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen needs an address"),
            "--body-size" => {
                body_size = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--body-size needs a number")
            }
            "-h" | "--help" => {
                println!("usage: null-fcgi [--listen 127.0.0.1:9100 | --listen unix:/path] [--body-size 100]");
                return;
            }
            other => {
                eprintln!("null-fcgi: unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    if let Some(path) = listen.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path).unwrap_or_else(|e| {
            eprintln!("null-fcgi: bind {listen}: {e}");
            std::process::exit(1);
        });
        eprintln!("null-fcgi: listening on {listen}, body {body_size} bytes");
        accept_loop(l.incoming(), body_size);
    } else {
        let l = TcpListener::bind(&listen).unwrap_or_else(|e| {
            eprintln!("null-fcgi: bind {listen}: {e}");
            std::process::exit(1);
        });
        eprintln!("null-fcgi: listening on {listen}, body {body_size} bytes");
        accept_loop(l.incoming(), body_size);
    }
}

fn accept_loop<S: Stream + Send + 'static>(
    incoming: impl Iterator<Item = io::Result<S>>,
    body_size: usize,
) {
    for s in incoming {
        match s {
            Ok(s) => {
                let _ = thread::Builder::new().stack_size(64 * 1024).spawn(move || {
                    let _ = serve(s, body_size);
                });
            }
            Err(e) => eprintln!("null-fcgi: accept: {e}"),
        }
    }
}
