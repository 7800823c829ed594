//! Test runner: environment, temp dir layout, server startup, test selection and reporting.
//!
//! A suite contributes a `setup(&mut Builder)` (vhosts, pools, files) and a list of tests
//! (`fn(&Ctx) -> Result<(), String>`). All suites share ONE php-fpm master and ONE Apache.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::apache::{ApacheConf, VHost};
use super::fpm::{self, FpmConf, Pool};
use super::http::{self, Conn, Request, Response};
use super::procs::{self, Endpoint, Server};
use super::util;
use super::valgrind;

pub type TestFn = fn(&Ctx) -> Result<(), String>;

pub struct Test {
    pub name: &'static str,
    pub f: TestFn,
}

/// `Test` constructor (keeps test tables one line per test).
pub const fn test(name: &'static str, f: TestFn) -> Test {
    Test { name, f }
}

pub struct Suite {
    pub name: &'static str,
    pub setup: fn(&mut Builder) -> Result<(), String>,
    pub tests: &'static [Test],
}

/// Settings from the environment.
#[derive(Debug, Clone)]
pub struct Env {
    pub manifest_dir: PathBuf,
    pub module_so: PathBuf,
    pub mpm: String,
    pub apache_bin: PathBuf,
    pub php_fpm: PathBuf,
    pub php_ini: Option<PathBuf>,
    /// `MFCGI_VALGRIND=1`: the main Apache runs under valgrind memcheck as one process
    /// (`-X`, prefork). Tests relax assertions that are only about timing, and adapt those
    /// that need several Apache processes.
    pub valgrind: bool,
}

impl Env {
    pub fn from_env() -> Result<Env, String> {
        let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let module_so = std::env::var_os("MOD_FASTCGI_SO")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest_dir.join("target/release/libmod_fastcgi.so"));
        if !module_so.is_file() {
            return Err(format!(
                "module not found: {} — run `cargo build --release` first (or set MOD_FASTCGI_SO)",
                module_so.display()
            ));
        }
        let module_so = module_so
            .canonicalize()
            .map_err(|e| format!("{}: {e}", module_so.display()))?;
        let valgrind = std::env::var("MFCGI_VALGRIND").is_ok_and(|v| v == "1");
        let mpm = match std::env::var("MPM") {
            Ok(m) if valgrind && m != "prefork" => {
                return Err(format!(
                    "MFCGI_VALGRIND=1 runs Apache as one process (-X), which needs MPM=prefork (got MPM={m})"
                ));
            }
            Ok(m) => m,
            Err(_) if valgrind => "prefork".into(),
            Err(_) => "event".into(),
        };
        if !["event", "prefork", "worker"].contains(&mpm.as_str()) {
            return Err(format!(
                "MPM must be event, prefork or worker (got {mpm:?})"
            ));
        }
        let apache_bin =
            PathBuf::from(std::env::var("APACHE2").unwrap_or_else(|_| "/usr/sbin/apache2".into()));
        if !apache_bin.is_file() {
            return Err(format!(
                "apache2 binary not found: {} (set APACHE2)",
                apache_bin.display()
            ));
        }
        let php_fpm = match std::env::var_os("PHP_FPM") {
            Some(p) => PathBuf::from(p),
            None => fpm::find_php_fpm().ok_or("no /usr/sbin/php-fpm* found (set PHP_FPM)")?,
        };
        if !php_fpm.is_file() {
            return Err(format!(
                "php-fpm binary not found: {} (set PHP_FPM)",
                php_fpm.display()
            ));
        }
        let php_ini = fpm::php_ini_for(&php_fpm);
        Ok(Env {
            manifest_dir,
            module_so,
            mpm,
            apache_bin,
            php_fpm,
            php_ini,
            valgrind,
        })
    }
}

/// Collects the configuration before the servers start.
pub struct Builder {
    pub env: Env,
    pub tmp: PathBuf,
    pub apache: ApacheConf,
    pub fpm: FpmConf,
    /// Named values for tests (ports, paths) — read back with [`Ctx::val`].
    pub vals: BTreeMap<String, String>,
    ports: Vec<u16>,
}

impl Builder {
    /// A free loopback TCP port.
    pub fn port(&mut self) -> Result<u16, String> {
        if self.ports.is_empty() {
            self.ports = util::free_ports(32)?;
        }
        Ok(self.ports.pop().unwrap())
    }

    /// `<tmp>/htdocs/<site>` with all PHP test scripts installed.
    pub fn docroot(&self, site: &str) -> Result<PathBuf, String> {
        let d = self.tmp.join("htdocs").join(site);
        util::mkdir_p(&d)?;
        fpm::install_scripts(&d, site)?;
        Ok(d)
    }

    /// Add a vhost; its error log is `<tmp>/logs/<id>.error.log`.
    pub fn vhost(&mut self, id: &str, port: u16, server_name: &str, docroot: &Path, body: &str) {
        let v = VHost {
            id: id.to_string(),
            port,
            server_name: server_name.to_string(),
            docroot: docroot.to_path_buf(),
            grant_docroot: true,
            body: body.to_string(),
            error_log: self.tmp.join("logs").join(format!("{id}.error.log")),
        };
        self.apache.add_vhost(v);
    }

    pub fn pool(&mut self, pool: Pool) {
        self.fpm.pools.push(pool);
    }

    pub fn set(&mut self, key: &str, val: impl ToString) {
        self.vals.insert(key.to_string(), val.to_string());
    }
}

/// What tests see.
pub struct Ctx {
    pub env: Env,
    pub tmp: PathBuf,
    pub apache_conf: ApacheConf,
    pub fpm_conf: FpmConf,
    pub vals: BTreeMap<String, String>,
    pub apache: Mutex<Server>,
    pub fpm: Mutex<Server>,
    /// Servers a test started for itself (a database): stopped by PID after the last test.
    pub extra: Mutex<Vec<Server>>,
}

impl Ctx {
    pub fn vhost(&self, id: &str) -> &VHost {
        self.apache_conf
            .vhosts
            .iter()
            .find(|v| v.id == id)
            .unwrap_or_else(|| panic!("no vhost {id:?} configured"))
    }

    pub fn val(&self, key: &str) -> &str {
        self.vals
            .get(key)
            .map(|s| s.as_str())
            .unwrap_or_else(|| panic!("no value {key:?} set in setup"))
    }

    /// Request on a fresh connection to vhost `id` (Host header = its ServerName).
    pub fn req(&self, id: &str, req: Request) -> Result<Response, String> {
        let v = self.vhost(id);
        let req = req.host(&v.server_name);
        http::fetch(v.port, req).map_err(|e| {
            format!(
                "request to {} (vhost {id}, port {}): {e}",
                v.server_name, v.port
            )
        })
    }

    pub fn get(&self, id: &str, target: &str) -> Result<Response, String> {
        self.req(id, Request::get(target))
            .map_err(|e| format!("GET {target}: {e}"))
    }

    /// Keep-alive connection to vhost `id`.
    pub fn connect(&self, id: &str) -> Result<Conn, String> {
        Conn::connect(self.vhost(id).port).map_err(|e| e.to_string())
    }

    pub fn error_log(&self) -> PathBuf {
        self.apache_conf.error_log()
    }

    pub fn apache_pid(&self) -> u32 {
        self.apache.lock().unwrap().pid
    }

    /// Live Apache child processes: the processes serving requests (under valgrind, Apache
    /// runs as one process and serves them itself).
    pub fn apache_children(&self) -> Vec<u32> {
        if self.env.valgrind {
            return vec![self.apache_pid()];
        }
        procs::children_of(self.apache_pid())
    }

    /// `normal`, or `slow` when the main Apache runs under valgrind (for waits and limits that
    /// are about speed, not behaviour).
    pub fn scaled(&self, normal: Duration, slow: Duration) -> Duration {
        if self.env.valgrind { slow } else { normal }
    }

    /// Write a throw-away config and run `apache2 -t` on it.
    pub fn config_test(&self, name: &str, text: &str) -> Result<super::apache::ConfigTest, String> {
        let path = self
            .tmp
            .join("conf/configtest")
            .join(format!("{name}.conf"));
        super::apache::config_test(&self.env.apache_bin, &path, text)
    }
}

fn start_servers(b: &Builder) -> Result<(Server, Server), String> {
    util::write_file(&b.fpm.conf_path, b.fpm.render())?;
    util::write_file(&b.apache.mime_types(), ApacheConf::mime_types_text())?;
    let apache_conf_path = b.tmp.join("conf/httpd.conf");
    util::write_file(&apache_conf_path, b.apache.render())?;

    let mut cmd = Command::new(&b.env.php_fpm);
    cmd.arg("-F").arg("-y").arg(&b.fpm.conf_path);
    if let Some(ini) = &b.env.php_ini {
        cmd.arg("-c").arg(ini);
    }
    let mut fpm = Server::spawn("php-fpm", cmd, &b.tmp.join("logs/php-fpm"))?;
    fpm.wait_ready(&b.fpm.endpoints(), Duration::from_secs(15))
        .map_err(|e| format!("{e}\nphp-fpm log:\n{}", util::tail(&b.fpm.log, 30)))?;

    let (cmd, ready) = if b.env.valgrind {
        // One process under memcheck: its start can take long on a loaded machine.
        let cmd = valgrind::command(&b.env.apache_bin, &apache_conf_path, &b.tmp.join("logs"));
        (cmd, Duration::from_secs(120))
    } else {
        let mut cmd = Command::new(&b.env.apache_bin);
        cmd.arg("-f").arg(&apache_conf_path).arg("-DFOREGROUND");
        (cmd, Duration::from_secs(15))
    };
    let mut apache = Server::spawn("apache2", cmd, &b.tmp.join("logs/apache2"))?;
    let eps: Vec<Endpoint> = b.apache.ports().into_iter().map(Endpoint::Tcp).collect();
    apache
        .wait_ready(&eps, ready)
        .map_err(|e| format!("{e}\nerror.log:\n{}", util::tail(&b.apache.error_log(), 30)))?;
    if b.env.valgrind {
        return Ok((fpm, apache));
    }
    // Children up (the parent binds the ports before forking them).
    let start = Instant::now();
    while procs::children_of(apache.pid).is_empty() && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((fpm, apache))
}

static PANIC_MSG: Mutex<Option<String>> = Mutex::new(None);

fn run_one(t: &Test, ctx: &Ctx) -> Result<(), String> {
    match panic::catch_unwind(AssertUnwindSafe(|| (t.f)(ctx))) {
        Ok(r) => r,
        Err(_) => Err(format!(
            "panicked: {}",
            PANIC_MSG
                .lock()
                .unwrap()
                .take()
                .unwrap_or_else(|| "(unknown)".into())
        )),
    }
}

fn print_diagnostics(tmp: &Path, apache: &ApacheConf, fpm: &FpmConf) {
    eprintln!("\n==== temp dir kept: {}", tmp.display());
    let mut logs = vec![apache.error_log()];
    logs.extend(apache.vhosts.iter().map(|v| v.error_log.clone()));
    logs.push(fpm.log.clone());
    logs.push(tmp.join("logs/apache2.stderr"));
    logs.push(tmp.join("logs/php-fpm.stderr"));
    logs.sort();
    logs.dedup();
    for l in logs {
        let t = util::tail(&l, 25);
        if !t.trim().is_empty() {
            eprintln!("==== tail of {}:\n{t}", l.display());
        }
    }
}

/// Valgrind mode, after the last test: SIGTERM the (single) Apache process, wait until it has
/// exited (valgrind writes its leak report then), and check the memcheck log(s).
fn valgrind_verdict(ctx: &Ctx) -> Result<(), String> {
    let t0 = Instant::now();
    let mut apache = ctx.apache.lock().unwrap();
    let pid = apache.pid as libc::pid_t;
    if apache.exited().is_some() {
        return Err(format!("Apache (pid {pid}) died during the tests"));
    }
    // SAFETY: plain kill(2) on the PID of the child we spawned and have not reaped yet.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let limit = Duration::from_secs(180);
    let status = loop {
        if let Some(st) = apache.exited() {
            break Some(st);
        }
        if t0.elapsed() > limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    apache.stop(Duration::from_secs(1));
    drop(apache);
    let log_dir = ctx.tmp.join("logs");
    let report = valgrind::check_dir(&log_dir);
    let requests = std::fs::read_to_string(ctx.apache_conf.access_log())
        .map(|s| s.lines().count())
        .unwrap_or(0);
    println!("{}", report.summary(requests));
    let mut why = Vec::new();
    match status {
        None => why.push(format!(
            "Apache did not exit within {limit:?} of SIGTERM (killed)"
        )),
        Some(st) if !st.success() => why.push(format!("Apache under valgrind exited with {st}")),
        Some(_) => {}
    }
    if !report.clean() {
        why.push(report.failure());
    }
    if why.is_empty() {
        if std::env::var_os("MFCGI_VERBOSE").is_some() {
            println!("  Apache stopped in {:.1}s", t0.elapsed().as_secs_f64());
        }
        Ok(())
    } else {
        Err(format!(
            "{} (logs: {}/valgrind.*.log)",
            why.join("; "),
            log_dir.display()
        ))
    }
}

/// Entry point used by `t/integration.rs`.
pub fn main(suites: &[Suite]) -> ! {
    let started = Instant::now();
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    // A filter selects the tests whose name contains it, or every test of the suite it names.
    let selected: Vec<&Test> = suites
        .iter()
        .flat_map(|s| s.tests.iter().map(move |t| (s.name, t)))
        .filter(|(suite, t)| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| t.name.contains(f.as_str()) || suite == f)
        })
        .map(|(_, t)| t)
        .collect();

    panic::set_hook(Box::new(|info| {
        let msg = match info.payload().downcast_ref::<&str>() {
            Some(s) => s.to_string(),
            None => info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default(),
        };
        let loc = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        *PANIC_MSG.lock().unwrap() = Some(format!("{msg}{loc}"));
    }));

    let env = match Env::from_env() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            println!("0 passed, {} failed", selected.len().max(1));
            std::process::exit(1);
        }
    };
    if selected.is_empty() {
        println!("no tests match {filters:?}");
        println!("0 passed, 0 failed");
        std::process::exit(0);
    }
    println!(
        "mod_fastcgi integration: MPM={} module={} apache={} php-fpm={}",
        env.mpm,
        env.module_so.display(),
        env.apache_bin.display(),
        env.php_fpm.display()
    );
    if env.valgrind {
        match valgrind::version() {
            Ok(v) => println!(
                "valgrind mode: Apache runs as `valgrind --tool=memcheck ... apache2 -X` ({v}); timing assertions relaxed"
            ),
            Err(e) => {
                eprintln!("error: {e}");
                println!("0 passed, {} failed", selected.len());
                std::process::exit(1);
            }
        }
    }

    let tmp = match util::mkdtemp("/tmp/mfcgi-test.XXXXXX") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    for d in ["conf", "logs", "run", "run/apache", "htdocs"] {
        if let Err(e) = util::mkdir_p(&tmp.join(d)) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }

    let mut b = Builder {
        apache: ApacheConf::new(&tmp, &env.mpm, &env.module_so),
        fpm: FpmConf::new(&tmp),
        env,
        tmp: tmp.clone(),
        vals: BTreeMap::new(),
        ports: Vec::new(),
    };
    let mut setup_err = None;
    for s in suites {
        if let Err(e) = (s.setup)(&mut b) {
            setup_err = Some(format!("setup of suite {}: {e}", s.name));
            break;
        }
    }
    let servers = match setup_err {
        Some(e) => Err(e),
        None => start_servers(&b),
    };

    let mut passed = 0usize;
    let mut failed = 0usize;
    match servers {
        Err(e) => {
            eprintln!("error: server startup failed: {e}");
            for t in &selected {
                println!("test {} ... FAILED: server startup failed", t.name);
                failed += 1;
            }
            print_diagnostics(&tmp, &b.apache, &b.fpm);
        }
        Ok((fpm_srv, apache_srv)) => {
            let ctx = Ctx {
                env: b.env.clone(),
                tmp: tmp.clone(),
                apache_conf: b.apache.clone(),
                fpm_conf: b.fpm.clone(),
                vals: b.vals.clone(),
                apache: Mutex::new(apache_srv),
                fpm: Mutex::new(fpm_srv),
                extra: Mutex::new(Vec::new()),
            };
            let verbose = std::env::var_os("MFCGI_VERBOSE").is_some();
            for t in &selected {
                let t0 = Instant::now();
                let r = run_one(t, &ctx);
                let took = if verbose {
                    format!(" ({:.2}s)", t0.elapsed().as_secs_f64())
                } else {
                    String::new()
                };
                match r {
                    Ok(()) => {
                        println!("test {} ... ok{took}", t.name);
                        passed += 1;
                    }
                    Err(e) => {
                        println!("test {} ... FAILED: {e}{took}", t.name);
                        failed += 1;
                    }
                }
            }
            if ctx.env.valgrind {
                // After the last test: stop Apache so valgrind writes its leak summary, then
                // judge the memcheck log(s) like a test.
                let r = valgrind_verdict(&ctx);
                match r {
                    Ok(()) => {
                        println!("test valgrind_memcheck ... ok");
                        passed += 1;
                    }
                    Err(e) => {
                        println!("test valgrind_memcheck ... FAILED: {e}");
                        failed += 1;
                    }
                }
            }
            ctx.apache.lock().unwrap().stop(Duration::from_secs(10));
            ctx.fpm.lock().unwrap().stop(Duration::from_secs(10));
            for s in ctx.extra.lock().unwrap().iter_mut() {
                s.stop(Duration::from_secs(10));
            }
            if failed > 0 {
                print_diagnostics(&tmp, &ctx.apache_conf, &ctx.fpm_conf);
            }
        }
    }
    let keep = failed > 0 || std::env::var_os("MFCGI_KEEP").is_some();
    if keep {
        println!("temp dir kept: {}", tmp.display());
    } else if let Err(e) = std::fs::remove_dir_all(&tmp) {
        eprintln!("warning: could not remove {}: {e}", tmp.display());
    }
    println!("wall time: {:.1}s", started.elapsed().as_secs_f64());
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed > 0 { 1 } else { 0 });
}
