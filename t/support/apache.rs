//! Apache httpd configuration builder: one instance, global section with Debian-style
//! security defaults, any number of `<VirtualHost>` snippets (each on a loopback port, name-based
//! vhosts may share a port), each with its own error log.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::util::q;

pub const MODULE_DIR: &str = "/usr/lib/apache2/modules";

/// Stock modules every test instance loads (besides the MPM and ours). mod_log_config is
/// compiled into Debian's apache2.
pub const STOCK_MODULES: &[&str] = &[
    "authz_core",
    "authz_host",
    "authn_core",
    "auth_basic",
    "authn_file",
    "authz_user",
    "access_compat",
    "mime",
    "alias",
    "actions",
    "dir",
    "env",
    "setenvif",
    "rewrite",
    "headers",
    "status",
    "include",
];

#[derive(Debug, Clone)]
pub struct VHost {
    /// Identifier (used in file names and by tests to look the vhost up).
    pub id: String,
    pub port: u16,
    pub server_name: String,
    pub docroot: PathBuf,
    /// Add `<Directory docroot> Require all granted </Directory>`.
    pub grant_docroot: bool,
    /// Config lines inside the `<VirtualHost>` block.
    pub body: String,
    pub error_log: PathBuf,
}

impl VHost {
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "# vhost {}\n<VirtualHost 127.0.0.1:{}>\n",
            self.id, self.port
        ));
        s.push_str(&format!("    ServerName {}\n", self.server_name));
        s.push_str(&format!(
            "    DocumentRoot {}\n",
            q(self.docroot.to_string_lossy())
        ));
        s.push_str(&format!(
            "    ErrorLog {}\n",
            q(self.error_log.to_string_lossy())
        ));
        if self.grant_docroot {
            s.push_str(&format!(
                "    <Directory {}>\n        Require all granted\n    </Directory>\n",
                q(self.docroot.to_string_lossy())
            ));
        }
        for line in self.body.lines() {
            if line.trim().is_empty() {
                s.push('\n');
            } else {
                s.push_str("    ");
                s.push_str(line);
                s.push('\n');
            }
        }
        s.push_str("</VirtualHost>\n\n");
        s
    }
}

#[derive(Debug, Clone)]
pub struct ApacheConf {
    pub server_root: PathBuf,
    pub run_dir: PathBuf,
    pub log_dir: PathBuf,
    pub mpm: String,
    pub module_so: PathBuf,
    pub user: String,
    pub group: String,
    pub log_level: String,
    /// Extra server-config lines (after the defaults, before the vhosts).
    pub global: Vec<String>,
    /// LoadModule lines for modules loaded before this module (their hooks of the same
    /// order are then registered, and run, before its own).
    pub load_before: Vec<String>,
    pub vhosts: Vec<VHost>,
    /// Extra Listen ports without vhost.
    pub extra_listen: Vec<u16>,
}

impl ApacheConf {
    pub fn new(server_root: &Path, mpm: &str, module_so: &Path) -> ApacheConf {
        ApacheConf {
            server_root: server_root.to_path_buf(),
            run_dir: server_root.join("run"),
            log_dir: server_root.join("logs"),
            mpm: mpm.to_string(),
            module_so: module_so.to_path_buf(),
            user: "www-data".into(),
            group: "www-data".into(),
            log_level: "warn fastcgi:debug".into(),
            global: Vec::new(),
            load_before: Vec::new(),
            vhosts: Vec::new(),
            extra_listen: Vec::new(),
        }
    }

    pub fn error_log(&self) -> PathBuf {
        self.log_dir.join("error.log")
    }
    pub fn access_log(&self) -> PathBuf {
        self.log_dir.join("access.log")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir.join("apache2.pid")
    }
    pub fn mime_types(&self) -> PathBuf {
        self.server_root.join("conf/mime.types")
    }

    pub fn add_vhost(&mut self, v: VHost) {
        self.vhosts.push(v);
    }

    pub fn ports(&self) -> Vec<u16> {
        let set: BTreeSet<u16> = self
            .vhosts
            .iter()
            .map(|v| v.port)
            .chain(self.extra_listen.iter().copied())
            .collect();
        set.into_iter().collect()
    }

    pub fn load_modules(&self) -> String {
        let mut s = format!(
            "LoadModule mpm_{m}_module {d}/mod_mpm_{m}.so\n",
            m = self.mpm,
            d = MODULE_DIR
        );
        for m in STOCK_MODULES {
            s.push_str(&format!("LoadModule {m}_module {MODULE_DIR}/mod_{m}.so\n"));
        }
        for l in &self.load_before {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str(&format!(
            "LoadModule fastcgi_module {}\n",
            q(self.module_so.to_string_lossy())
        ));
        s
    }

    /// Small process counts: the suite runs on 2 cores.
    pub fn mpm_block(&self) -> String {
        match self.mpm.as_str() {
            "prefork" => "StartServers 2\nMinSpareServers 1\nMaxSpareServers 4\nServerLimit 16\nMaxRequestWorkers 16\nMaxConnectionsPerChild 0\n".into(),
            "worker" => "StartServers 2\nServerLimit 2\nThreadsPerChild 16\nMaxRequestWorkers 32\nMinSpareThreads 8\nMaxSpareThreads 32\nMaxConnectionsPerChild 0\n".into(),
            _ => "StartServers 2\nServerLimit 2\nThreadsPerChild 16\nMaxRequestWorkers 32\nMinSpareThreads 8\nMaxSpareThreads 32\nMaxConnectionsPerChild 0\n".into(),
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# Generated by t/support/apache.rs (mod_fastcgi-rs integration tests)\n");
        s.push_str(&format!(
            "ServerRoot {}\n",
            q(self.server_root.to_string_lossy())
        ));
        s.push_str(&format!(
            "DefaultRuntimeDir {}\n",
            q(self.run_dir.join("apache").to_string_lossy())
        ));
        s.push_str(&format!(
            "PidFile {}\n",
            q(self.pid_file().to_string_lossy())
        ));
        s.push_str("ServerName localhost\n");
        s.push_str(&format!("User {}\nGroup {}\n\n", self.user, self.group));
        s.push_str(&self.load_modules());
        s.push('\n');
        s.push_str(&self.mpm_block());
        s.push_str("Timeout 30\nKeepAlive On\nMaxKeepAliveRequests 1000\nKeepAliveTimeout 5\nHostnameLookups Off\n\n");
        s.push_str(&format!(
            "ErrorLog {}\n",
            q(self.error_log().to_string_lossy())
        ));
        s.push_str(&format!("LogLevel {}\n", self.log_level));
        s.push_str("LogFormat \"%v:%{local}p %h %t \\\"%r\\\" %>s %B %D pid=%P\" mfcgi\n");
        s.push_str(&format!(
            "CustomLog {} mfcgi\n",
            q(self.access_log().to_string_lossy())
        ));
        s.push_str(&format!(
            "TypesConfig {}\n\n",
            q(self.mime_types().to_string_lossy())
        ));
        // Debian-style security defaults (apache2.conf): nothing is reachable unless granted.
        s.push_str(
            "<Directory />\n    Options FollowSymLinks\n    AllowOverride None\n    Require all denied\n</Directory>\n",
        );
        s.push_str("<FilesMatch \"^\\.ht\">\n    Require all denied\n</FilesMatch>\n\n");
        for p in self.ports() {
            s.push_str(&format!("Listen 127.0.0.1:{p}\n"));
        }
        s.push('\n');
        for g in &self.global {
            s.push_str(g);
            if !g.ends_with('\n') {
                s.push('\n');
            }
        }
        s.push('\n');
        for v in &self.vhosts {
            s.push_str(&v.render());
        }
        s
    }

    /// Minimal mime.types: no mapping for .php (Debian's /etc/mime.types maps it, which would
    /// hide missing AddType/AddHandler lines).
    pub fn mime_types_text() -> &'static str {
        "text/html html htm\ntext/plain txt\ntext/css css\napplication/javascript js\nimage/png png\n"
    }
}

/// Result of `apache2 -t`.
#[derive(Debug)]
pub struct ConfigTest {
    pub ok: bool,
    pub code: Option<i32>,
    pub output: String,
}

/// Run `apache2 -t -f <conf>`; `conf_text` is written to `conf_path` first.
pub fn config_test(
    apache_bin: &Path,
    conf_path: &Path,
    conf_text: &str,
) -> Result<ConfigTest, String> {
    super::util::write_file(conf_path, conf_text)?;
    let out = Command::new(apache_bin)
        .arg("-t")
        .arg("-f")
        .arg(conf_path)
        .output()
        .map_err(|e| format!("run {} -t: {e}", apache_bin.display()))?;
    let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stdout));
    Ok(ConfigTest {
        ok: out.status.success(),
        code: out.status.code(),
        output,
    })
}
