//! An application on "another host" without leaving the machine: a network namespace of its
//! own, joined to ours by a veth pair. The kernel of our namespace then sees the application's
//! sockets as remote ones: sock_diag cannot find them (what the module's backlog guard and
//! its look at what the application has read rely on), and local ports left in TIME_WAIT
//! towards it are not reused as they are towards loopback (`tcp_tw_reuse` = 2).
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

pub struct NetNs {
    pub name: String,
    host_if: String,
    /// Our end of the veth pair.
    pub host_ip: Ipv4Addr,
    /// The namespace's end.
    pub app_ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e} (is iproute2 installed?)", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetNs {
    /// Creates the namespace and the link (needs root, as the suite runs under CI), with
    /// addresses of the benchmarking range 198.18.0.0/15 derived from this process's id, so
    /// that two suites running at once do not meet.
    pub fn create() -> Result<NetNs, String> {
        let pid = std::process::id();
        let name = format!("mfcgi-{pid}");
        let (host_if, app_if) = (format!("mfh{pid}"), format!("mfa{pid}"));
        let (b2, b3) = (((pid >> 6) & 0xff) as u8, ((pid & 0x3f) * 4) as u8);
        let host_ip = Ipv4Addr::new(198, 18, b2, b3 + 1);
        let app_ip = Ipv4Addr::new(198, 18, b2, b3 + 2);
        // leftovers of a run of the same pid that was killed
        let _ = ip(&["netns", "del", &name]);
        let _ = ip(&["link", "del", &host_if]);
        let ns = NetNs {
            name,
            host_if,
            host_ip,
            app_ip,
        };
        let n = ns.name.as_str();
        ip(&["netns", "add", n])?;
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &app_if,
            "netns",
            n,
        ])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &ns.host_if])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{app_ip}/30"),
            "dev",
            &app_if,
        ])?;
        ip(&["-n", n, "link", "set", &app_if, "up"])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `program` run inside the namespace (`ip netns exec` executes it in its own place: the
    /// process id is the program's).
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // (deleting the namespace deletes its end of the pair, and with it ours)
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}
