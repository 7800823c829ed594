//! One MariaDB server for the suites of real applications that need a database (WordPress,
//! phpMyAdmin): a data directory of its own under the temp dir, a unix socket, no TCP, started
//! by the first test that asks (so runs of other suites pay nothing) and stopped by PID after
//! the last test (`Ctx::extra`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::check::p;
use crate::harness::Ctx;
use crate::procs::{Endpoint, Server};
use crate::util;

const MARIADBD: &str = "/usr/sbin/mariadbd";
const MARIADB_INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
const MARIADB: &str = "/usr/bin/mariadb";

static SOCKET: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The server's socket, starting it on first use.
pub fn socket(ctx: &Ctx) -> Result<&'static Path, String> {
    SOCKET
        .get_or_init(|| start(ctx))
        .as_ref()
        .map(|p| p.as_path())
        .map_err(|e| format!("MariaDB: {e}"))
}

/// Runs SQL as root (empty password, over the socket).
pub fn sql(ctx: &Ctx, statements: &str) -> Result<(), String> {
    query(ctx, statements).map(drop)
}

/// Runs a query as root and returns its output (tab-separated, no column names).
pub fn query(ctx: &Ctx, statement: &str) -> Result<String, String> {
    let sock = socket(ctx)?;
    let out = util::run(
        Command::new(MARIADB)
            .arg("--no-defaults")
            .arg(format!("--socket={}", p(sock)))
            .args(["-uroot", "-N", "-B", "-e", statement]),
        &format!("mariadb -e {statement:?}"),
    )?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn start(ctx: &Ctx) -> Result<PathBuf, String> {
    for f in [MARIADBD, MARIADB_INSTALL_DB, MARIADB] {
        if !Path::new(f).exists() {
            return Err(format!(
                "{f} is missing: `make deps-test` installs Debian's mariadb-server"
            ));
        }
    }
    let db = ctx.tmp.join("apps/mariadb");
    let data = db.join("data");
    util::mkdir_p(&db)?;
    let sock = db.join("mysqld.sock");
    util::run(
        Command::new(MARIADB_INSTALL_DB)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", p(&data)))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ]),
        "mariadb-install-db",
    )?;
    let mut cmd = Command::new(MARIADBD);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", p(&data)))
        .arg(format!("--socket={}", p(&sock)))
        .arg(format!("--pid-file={}", p(&db.join("mysqld.pid"))))
        .args([
            "--skip-networking",
            "--user=root",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
        ]);
    let mut server = Server::spawn("mariadbd", cmd, &ctx.tmp.join("logs/mariadbd"))?;
    let ready = server.wait_ready(&[Endpoint::Unix(sock.clone())], Duration::from_secs(30));
    ctx.extra.lock().unwrap().push(server);
    ready?;
    Ok(sock)
}
