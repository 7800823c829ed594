//! Helpers of the connection-pool suite (`t/pool.rs`): dedicated Apache and php-fpm instances
//! (own config, own process counts, own logs, stopped by PID through [`Server`]), a
//! multi-threaded load generator that records every request's timing and outcome, and /proc
//! probes (open fds, anonymous shared mappings).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::apache::{ApacheConf, VHost};
use super::fpm::{FpmConf, Pool};
use super::harness::Ctx;
use super::http::{self, Conn, Request, Response, roundtrip_ka};
use super::procs::{self, Endpoint, Server};
use super::util;

/// MPM settings for a dedicated instance.
pub fn mpm_block(mpm: &str, processes: u32, threads: u32) -> String {
    match mpm {
        "prefork" => format!(
            "StartServers {processes}\nMinSpareServers {processes}\nMaxSpareServers {processes}\nServerLimit {processes}\nMaxRequestWorkers {processes}\nMaxConnectionsPerChild 0\n"
        ),
        _ => format!(
            "StartServers {processes}\nServerLimit {limit}\nThreadsPerChild {threads}\nMaxRequestWorkers {max}\nMinSpareThreads {threads}\nMaxSpareThreads {max}\nMaxConnectionsPerChild 0\n",
            // room for gracefully finishing processes next to a full new generation
            limit = processes * 2,
            max = processes * threads,
        ),
    }
}

/// A dedicated Apache instance (its own ServerRoot under the suite's temp dir).
pub struct Apache {
    pub conf: ApacheConf,
    pub conf_path: PathBuf,
    pub server: Server,
}

impl Apache {
    /// Writes the config and starts `apache2 -DFOREGROUND`; returns once every port accepts
    /// and `processes` children exist.
    pub fn start(
        ctx: &Ctx,
        name: &str,
        conf: ApacheConf,
        mpm: &str,
        processes: u32,
        threads: u32,
    ) -> Result<Apache, String> {
        let block = mpm_block(mpm, processes, threads);
        Apache::start_with(ctx, name, conf, &block, processes)
    }

    /// Like [`Apache::start`] with the MPM directives given verbatim.
    pub fn start_with(
        ctx: &Ctx,
        name: &str,
        conf: ApacheConf,
        block: &str,
        processes: u32,
    ) -> Result<Apache, String> {
        let root = conf.server_root.clone();
        for d in ["conf", "logs", "run", "run/apache"] {
            util::mkdir_p(&root.join(d))?;
        }
        let text = conf.render().replace(&conf.mpm_block(), block);
        let conf_path = root.join("conf/httpd.conf");
        util::write_file(&conf_path, text)?;
        util::write_file(&conf.mime_types(), ApacheConf::mime_types_text())?;
        let mut cmd = Command::new(&ctx.env.apache_bin);
        cmd.arg("-f").arg(&conf_path).arg("-DFOREGROUND");
        let mut server =
            Server::spawn(&format!("apache2-{name}"), cmd, &root.join("logs/apache2"))?;
        let eps: Vec<Endpoint> = conf.ports().into_iter().map(Endpoint::Tcp).collect();
        server
            .wait_ready(&eps, Duration::from_secs(20))
            .map_err(|e| format!("{e}\nerror.log:\n{}", util::tail(&conf.error_log(), 30)))?;
        let t0 = Instant::now();
        while (procs::children_of(server.pid).len() as u32) < processes {
            if t0.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "dedicated apache {name}: only {} of {processes} children after 20 s",
                    procs::children_of(server.pid).len()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(Apache {
            conf,
            conf_path,
            server,
        })
    }

    pub fn pid(&self) -> u32 {
        self.server.pid
    }

    pub fn children(&self) -> Vec<u32> {
        procs::children_of(self.server.pid)
    }

    /// Number of "resuming normal operations" lines in the error log (one per (re)start).
    pub fn generations(&self) -> usize {
        util::read_to_string_lossy(&self.conf.error_log())
            .lines()
            .filter(|l| l.contains("resuming normal operations"))
            .count()
    }

    /// `SIGUSR1` (graceful restart); waits until the parent has re-read its configuration.
    pub fn graceful(&self, timeout: Duration) -> Result<(), String> {
        let before = self.generations();
        // SAFETY: plain kill(2) on the PID of a process we started.
        if unsafe { libc::kill(self.server.pid as libc::pid_t, libc::SIGUSR1) } != 0 {
            return Err(format!(
                "kill -USR1 {}: {}",
                self.server.pid,
                std::io::Error::last_os_error()
            ));
        }
        let t0 = Instant::now();
        while self.generations() <= before {
            if t0.elapsed() > timeout {
                return Err(format!(
                    "graceful restart: no 'resuming normal operations' after {timeout:?}; error.log:\n{}",
                    util::tail(&self.conf.error_log(), 20)
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        self.server.stop(Duration::from_secs(10));
    }
}

/// A vhost for a dedicated instance (error log in that instance's log dir).
pub fn vhost(conf: &ApacheConf, id: &str, port: u16, docroot: &Path, body: &str) -> VHost {
    VHost {
        id: id.to_string(),
        port,
        server_name: format!("{}.test", id.replace('_', "-")),
        docroot: docroot.to_path_buf(),
        grant_docroot: true,
        body: body.to_string(),
        error_log: conf.log_dir.join(format!("{id}.error.log")),
    }
}

/// A dedicated php-fpm master (own config, pid file and log under `dir`).
pub fn start_fpm(
    ctx: &Ctx,
    dir: &Path,
    pools: &[Pool],
    global_extra: &str,
) -> Result<(Server, FpmConf), String> {
    start_fpm_with(
        ctx,
        dir,
        pools,
        global_extra,
        Command::new(&ctx.env.php_fpm),
    )
}

/// [`start_fpm`] inside another network namespace (its pools listen on `Endpoint::Remote`).
pub fn start_fpm_in(
    ctx: &Ctx,
    ns: &crate::netns::NetNs,
    dir: &Path,
    pools: &[Pool],
) -> Result<(Server, FpmConf), String> {
    start_fpm_with(ctx, dir, pools, "", ns.command(&ctx.env.php_fpm))
}

/// [`start_fpm`] with the command that runs php-fpm given.
fn start_fpm_with(
    ctx: &Ctx,
    dir: &Path,
    pools: &[Pool],
    global_extra: &str,
    cmd: Command,
) -> Result<(Server, FpmConf), String> {
    util::mkdir_p(&dir.join("logs"))?;
    let conf = FpmConf {
        conf_path: dir.join("php-fpm.conf"),
        log: dir.join("logs/php-fpm.log"),
        pid: dir.join("php-fpm.pid"),
        pools: pools.to_vec(),
    };
    let mut text = conf.render();
    if !global_extra.is_empty() {
        text = text.replacen(
            "daemonize = no\n",
            &format!("daemonize = no\n{global_extra}\n"),
            1,
        );
    }
    util::write_file(&conf.conf_path, text)?;
    let server = spawn_fpm_with(ctx, &conf, cmd)?;
    Ok((server, conf))
}

/// Starts a php-fpm master for an existing config and waits for its endpoints.
pub fn spawn_fpm(ctx: &Ctx, conf: &FpmConf) -> Result<Server, String> {
    spawn_fpm_with(ctx, conf, Command::new(&ctx.env.php_fpm))
}

/// [`spawn_fpm`] with the command that runs php-fpm given (its arguments are added).
fn spawn_fpm_with(ctx: &Ctx, conf: &FpmConf, mut cmd: Command) -> Result<Server, String> {
    cmd.arg("-F").arg("-y").arg(&conf.conf_path);
    if let Some(ini) = &ctx.env.php_ini {
        cmd.arg("-c").arg(ini);
    }
    let dir = conf.conf_path.parent().unwrap_or(Path::new("/tmp"));
    let mut s = Server::spawn("php-fpm-pool", cmd, &dir.join("logs/php-fpm"))?;
    s.wait_ready(&conf.endpoints(), Duration::from_secs(15))
        .map_err(|e| format!("{e}\nphp-fpm log:\n{}", util::tail(&conf.log, 20)))?;
    Ok(s)
}

// ------------------------------------------------------------------------------------------
// /proc probes

pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Sockets among a process's fds.
pub fn socket_fds(pid: u32) -> usize {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    rd.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// Anonymous shared mappings (`/dev/zero (deleted)`) of a process.
pub fn anon_shared_maps(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("/dev/zero (deleted)") || l.contains("SYSV"))
        .count()
}

// ------------------------------------------------------------------------------------------
// load generator

/// One request of a load run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub thread: usize,
    /// Since the start of the run.
    pub start: Duration,
    pub end: Duration,
    /// HTTP status, 0 when no (complete) response arrived.
    pub status: u16,
    /// Why the request counts as failed (`None`: it succeeded).
    pub error: Option<String>,
}

impl Outcome {
    pub fn took(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }
    /// In flight at some moment of [a, b].
    pub fn overlaps(&self, a: Duration, b: Duration) -> bool {
        self.start <= b && self.end >= a
    }
}

pub type MakeReq = Arc<dyn Fn(usize, u64) -> Request + Send + Sync>;
pub type CheckResp = Arc<dyn Fn(&Request, &Response) -> Result<(), String> + Send + Sync>;

pub struct Load {
    pub t0: Instant,
    stop: Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<Vec<Outcome>>>,
    pub done: Arc<AtomicU64>,
}

impl Load {
    /// `threads` clients against 127.0.0.1:`port`, each sending requests back to back until
    /// [`Load::finish`]. With `keepalive` a client keeps its connection (reconnecting when the
    /// server closes it, and retrying once on the idle-close race); else every request uses a
    /// fresh connection with `Connection: close`.
    pub fn start(
        port: u16,
        threads: usize,
        keepalive: bool,
        make: MakeReq,
        check: CheckResp,
    ) -> Load {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let handles = (0..threads)
            .map(|t| {
                let (stop, make, check, done) =
                    (stop.clone(), make.clone(), check.clone(), done.clone());
                thread::spawn(move || {
                    let mut out = Vec::new();
                    let mut conn: Option<Conn> = None;
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let req = make(t, n);
                        n += 1;
                        let start = t0.elapsed();
                        let res: Result<Response, String> = if keepalive {
                            let c = match conn.take().filter(|c| !c.closed) {
                                Some(c) => Ok(c),
                                None => Conn::connect(port).map_err(|e| e.to_string()),
                            };
                            match c {
                                Err(e) => Err(e),
                                Ok(mut c) => {
                                    let r = roundtrip_ka(&mut c, port, &req)
                                        .map(|(r, _)| r)
                                        .map_err(|e| e.to_string());
                                    if r.is_ok() {
                                        conn = Some(c);
                                    }
                                    r
                                }
                            }
                        } else {
                            http::fetch(port, req.clone()).map_err(|e| e.to_string())
                        };
                        let end = t0.elapsed();
                        let (status, error) = match res {
                            Err(e) => (0, Some(e)),
                            Ok(r) => {
                                let e = if !r.complete {
                                    Some(format!(
                                        "status {} with an incomplete body ({} bytes)",
                                        r.status, r.body_len
                                    ))
                                } else if r.status != 200 {
                                    Some(format!("status {}", r.status))
                                } else {
                                    check(&req, &r).err()
                                };
                                if e.is_some() {
                                    conn = None;
                                }
                                (r.status, e)
                            }
                        };
                        done.fetch_add(1, Ordering::Relaxed);
                        out.push(Outcome {
                            thread: t,
                            start,
                            end,
                            status,
                            error,
                        });
                    }
                    out
                })
            })
            .collect();
        Load {
            t0,
            stop,
            handles,
            done,
        }
    }

    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    pub fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for h in self.handles {
            if let Ok(v) = h.join() {
                all.extend(v);
            }
        }
        all.sort_by_key(|o| o.start);
        all
    }
}

/// Latency summary of successful requests.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

pub fn latency(outcomes: &[Outcome]) -> Latency {
    let mut v: Vec<Duration> = outcomes.iter().map(|o| o.took()).collect();
    if v.is_empty() {
        return Latency::default();
    }
    v.sort();
    let pick = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Latency {
        n: v.len(),
        p50: pick(0.50),
        p99: pick(0.99),
        max: *v.last().unwrap(),
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

/// Requests per Apache child from an access log written with the harness' `mfcgi` format
/// (`%v:%{local}p ... %>s %B %D pid=%P`), for one vhost (`vhost` = `<ServerName>:<port>`):
/// pid → (count, non-200 count).
pub fn per_pid(access_log: &Path, vhost: &str, from: u64) -> BTreeMap<u32, (usize, usize)> {
    let text = util::read_from(access_log, from);
    let needle = format!("{vhost} ");
    let mut m: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&needle)) {
        let Some(pid) = line
            .rsplit("pid=")
            .next()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            continue;
        };
        // ... "GET /x HTTP/1.1" 200 123 456 pid=7
        let status = line
            .rsplit_once('"')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        let e = m.entry(pid).or_default();
        e.0 += 1;
        if status != 200 {
            e.1 += 1;
        }
    }
    m
}

/// One access-log line of the harness' `mfcgi` format.
#[derive(Debug, Clone)]
pub struct Served {
    pub pid: u32,
    pub status: u16,
    /// `%D`: time taken to serve the request.
    pub took: Duration,
    pub request: String,
}

/// The requests of one vhost (`<ServerName>:<port>`) logged since byte `from`.
pub fn served(access_log: &Path, vhost: &str, from: u64) -> Vec<Served> {
    let needle = format!("{vhost} ");
    util::read_from(access_log, from)
        .lines()
        .filter(|l| l.starts_with(&needle))
        .filter_map(|l| {
            let (head, rest) = l.rsplit_once('"')?;
            let request = head.split_once('"')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(Served {
                status: f.first()?.parse().ok()?,
                took: Duration::from_micros(f.get(2)?.parse().ok()?),
                pid: f.get(3)?.strip_prefix("pid=")?.parse().ok()?,
                request,
            })
        })
        .collect()
}

/// Samples a value periodically in a background thread; `finish` returns (max, samples).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    h: Option<thread::JoinHandle<(usize, usize)>>,
    pub series: Arc<Mutex<Vec<usize>>>,
}

impl Sampler {
    pub fn start(every: Duration, f: impl Fn() -> usize + Send + 'static) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let series = Arc::new(Mutex::new(Vec::new()));
        let (s, ser) = (stop.clone(), series.clone());
        let h = thread::spawn(move || {
            let (mut max, mut n) = (0, 0);
            while !s.load(Ordering::Relaxed) {
                let v = f();
                max = max.max(v);
                n += 1;
                ser.lock().unwrap().push(v);
                thread::sleep(every);
            }
            (max, n)
        });
        Sampler {
            stop,
            h: Some(h),
            series,
        }
    }

    pub fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.h.take().and_then(|h| h.join().ok()).unwrap_or((0, 0))
    }
}
