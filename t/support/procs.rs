//! Child server processes tracked by PID: start in their own process group with output to
//! files, wait for readiness, stop with SIGTERM → wait → SIGKILL (process group too).
//! Also /proc helpers (children of a PID, VmRSS).
#![allow(dead_code)]

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Something a server listens on.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Tcp(u16),
    /// A TCP port on the IPv6 loopback address, [::1].
    Tcp6(u16),
    Unix(PathBuf),
    /// A TCP address in another network namespace (`netns::NetNs`), with the address its
    /// clients come from.
    Remote(std::net::SocketAddrV4, std::net::Ipv4Addr),
}

impl Endpoint {
    pub fn probe(&self) -> bool {
        match self {
            Endpoint::Tcp(p) => TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], *p)),
                Duration::from_millis(200),
            )
            .is_ok(),
            Endpoint::Tcp6(p) => TcpStream::connect_timeout(
                &SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, *p)),
                Duration::from_millis(200),
            )
            .is_ok(),
            Endpoint::Unix(p) => UnixStream::connect(p).is_ok(),
            Endpoint::Remote(a, _) => {
                TcpStream::connect_timeout(&SocketAddr::V4(*a), Duration::from_millis(200)).is_ok()
            }
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(p) => write!(f, "127.0.0.1:{p}"),
            Endpoint::Tcp6(p) => write!(f, "[::1]:{p}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Remote(a, _) => write!(f, "{a}"),
        }
    }
}

pub struct Server {
    pub name: String,
    pub child: Option<Child>,
    pub pid: u32,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Server {
    /// Spawn `cmd` as the leader of a new process group, stdout/stderr to `<log_prefix>.stdout/.stderr`.
    pub fn spawn(name: &str, mut cmd: Command, log_prefix: &Path) -> Result<Server, String> {
        let stdout = log_prefix.with_extension("stdout");
        let stderr = log_prefix.with_extension("stderr");
        let out = fs::File::create(&stdout).map_err(|e| format!("{}: {e}", stdout.display()))?;
        let err = fs::File::create(&stderr).map_err(|e| format!("{}: {e}", stderr.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // If the test runner dies (Ctrl-C, panic=abort...), take the server down with it.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {name} ({cmd:?}): {e}"))?;
        let pid = child.id();
        Ok(Server {
            name: name.to_string(),
            child: Some(child),
            pid,
            stdout,
            stderr,
        })
    }

    /// Exit status if the process already ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Wait until every endpoint accepts connections (or the process dies / timeout).
    pub fn wait_ready(&mut self, endpoints: &[Endpoint], timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                return Err(format!(
                    "{} exited during startup ({st}); stderr:\n{}",
                    self.name,
                    super::util::tail(&self.stderr, 40)
                ));
            }
            let pending: Vec<&Endpoint> = endpoints.iter().filter(|e| !e.probe()).collect();
            if pending.is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "{} not ready after {:?}: no listener on {}; stderr:\n{}",
                    self.name,
                    timeout,
                    pending
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    super::util::tail(&self.stderr, 40)
                ));
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM the leader, wait up to `grace`, then SIGKILL; finally SIGKILL whatever is left in
    /// the process group (the group id equals the leader's PID).
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = self.pid as libc::pid_t;
        if child.try_wait().ok().flatten().is_none() {
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < grace {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                sleep(Duration::from_millis(20));
            }
            if child.try_wait().ok().flatten().is_none() {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = child.wait();
            }
        }
        // Stragglers in the group (e.g. Apache children that outlive the parent).
        let start = Instant::now();
        while group_alive(pid) && start.elapsed() < Duration::from_secs(2) {
            sleep(Duration::from_millis(50));
        }
        if group_alive(pid) {
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Whether any process of the process group `pgid` still exists (zombies excluded).
fn group_alive(pgid: libc::pid_t) -> bool {
    for (pid, _) in all_procs() {
        if proc_stat(pid).is_some_and(|st| st.pgrp == pgid && st.state != 'Z') {
            return true;
        }
    }
    false
}

#[derive(Debug, Clone)]
pub struct ProcStat {
    pub state: char,
    pub ppid: libc::pid_t,
    pub pgrp: libc::pid_t,
}

pub fn proc_stat(pid: libc::pid_t) -> Option<ProcStat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
    })
}

fn all_procs() -> Vec<(libc::pid_t, ())> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<libc::pid_t>().ok())
            {
                v.push((pid, ()));
            }
        }
    }
    v
}

/// Live (non-zombie) direct children of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    for (p, _) in all_procs() {
        if proc_stat(p).is_some_and(|st| st.ppid == pid as libc::pid_t && st.state != 'Z') {
            v.push(p as u32);
        }
    }
    v.sort();
    v
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            return rest.trim().trim_end_matches("kB").trim().parse().ok();
        }
    }
    None
}
