//! Connections to a FastCGI application: non-blocking connect with a deadline (unix and TCP),
//! readiness waits, and gathered sends. Safe code over `ffi::sock`.
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::config::{ServerDef, Target};
use crate::ffi::sock::{self, Ready};

/// Per-definition runtime state of one child process (the connection pool lives here).
#[derive(Debug, Default)]
pub struct Runtime {}

impl Runtime {
    pub fn new(_def: &ServerDef) -> Self {
        Runtime {}
    }
}

/// An open connection to the application.
#[derive(Debug)]
pub struct Conn {
    fd: OwnedFd,
}

/// Why a connect failed.
#[derive(Debug)]
pub struct ConnectError {
    pub error: io::Error,
    pub timed_out: bool,
    /// The address tried last, for the log line.
    pub target: String,
}

pub fn target_text(t: &Target) -> String {
    match t {
        Target::Unix(p) => format!("unix:{}", String::from_utf8_lossy(p)),
        Target::Inet(a) => a.to_string(),
    }
}

fn ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

impl Conn {
    /// Connects to the first target that accepts, waiting at most `timeout` overall. A unix
    /// socket whose listen backlog is full is retried until the deadline (never forever).
    pub fn connect(targets: &[Target], timeout: Duration) -> Result<Conn, ConnectError> {
        let deadline = Instant::now() + timeout;
        let mut last = ConnectError { error: io::Error::from_raw_os_error(libc::EINVAL), timed_out: false, target: String::new() };
        for t in targets {
            match Self::connect_one(t, deadline) {
                Ok(c) => return Ok(c),
                Err((error, timed_out)) => {
                    last = ConnectError { error, timed_out, target: target_text(t) };
                    if timed_out {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    fn connect_one(t: &Target, deadline: Instant) -> Result<Conn, (io::Error, bool)> {
        let mut backoff = Duration::from_millis(1);
        loop {
            let fd = sock::socket_for(t).map_err(|e| (e, false))?;
            match sock::connect(fd.as_fd(), t) {
                Ok(()) => return Ok(Conn { fd }),
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match sock::poll(fd.as_fd(), false, true, ms(left)).map_err(|e| (e, false))? {
                        None => return Err((io::Error::from_raw_os_error(libc::ETIMEDOUT), true)),
                        Some(_) => {
                            sock::take_error(fd.as_fd()).map_err(|e| (e, false))?;
                            return Ok(Conn { fd });
                        }
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && matches!(t, Target::Unix(_)) => {
                    // Listen backlog full: wait a little and try again, within the deadline.
                    let now = Instant::now();
                    if now >= deadline {
                        return Err((e, true));
                    }
                    std::thread::sleep(backoff.min(deadline - now));
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err((e, false)),
            }
        }
    }

    /// Waits for readability (always) and writability (if `write`), up to `timeout`.
    pub fn wait(&self, write: bool, timeout: Duration) -> io::Result<Option<Ready>> {
        sock::poll(self.fd.as_fd(), true, write, ms(timeout))
    }

    /// Non-blocking receive (`WouldBlock` when nothing is available, `Ok(0)` at EOF).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        sock::recv(self.fd.as_fd(), buf)
    }

    /// Non-blocking gathered send.
    pub fn sendv(&self, bufs: &[&[u8]]) -> io::Result<usize> {
        sock::sendv(self.fd.as_fd(), bufs)
    }

    /// True when an idle connection is still open and clean (for pooling).
    pub fn is_reusable(&self) -> bool {
        sock::idle_socket_alive(self.fd.as_fd())
    }
}
