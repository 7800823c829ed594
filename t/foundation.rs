//! Issue "Foundation": the three seed configurations, request/response plumbing through seed 1,
//! `apache2 -t` config errors, and a small concurrency run.
//!
//! Vhost ids (see `setup`):
//! * `seed1`      – seed config 1 (virtual path's parent directory absent, TCP pool, `-flush`).
//! * `seed1_deny`, `seed1_deny_in_granted`, `seed1_files_deny`, `seed1_grant_only`,
//!   `seed1_authz24` – seed 1 variants that only differ in `<Directory>`/`<Files>` sections for
//!   the virtual path.
//! * `err_stderr`, `err_noconn` – error-provoking vhosts (stderr logging, missing socket).
//! * `seed1_auth` – like seed 1 but a second virtual path with `-pass-header Authorization`.
//! * `seed1_trace` – seed 1 with `LogLevel fastcgi:trace3` and a rewrite that copies
//!   Authorization into the environment (the params trace must redact it).
//! * `site1`, `site2` – seed config 2, name-based on one port, pools as www-data / nobody.
//! * `seed3`      – seed config 3 (virtual path is a real directory, `www` symlink to docroot).
//!
//! Convention for later suites: vhosts that are expected to log errors get an id starting with
//! `err_`; `error_logs_clean` ignores their logs.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::apache::ApacheConf;
use crate::apache::{MODULE_DIR, STOCK_MODULES};
use crate::check::{ABSENT, bad_log_lines, ensure, expect_status, expect_vars, p};
use crate::fpm::{Pool, big_piece};
use crate::harness::{Builder, Ctx, Suite, test};
use crate::http::{Conn, Request, fetch, roundtrip_ka};
use crate::pool_inst::{self as inst, Apache};
use crate::procs::{self, Endpoint};
use crate::util::{self, Md5, Prng, q};

pub const SUITE: Suite = Suite {
    name: "foundation",
    setup,
    tests: &[
        test("seed1_script_vars", seed1_script_vars),
        test("seed1_path_info", seed1_path_info),
        test("seed1_directory_index", seed1_directory_index),
        test(
            "seed1_prefix_needs_slash_boundary",
            seed1_prefix_needs_slash_boundary,
        ),
        test(
            "seed1_directory_sections_apply",
            seed1_directory_sections_apply,
        ),
        test("seed1_accept_path_info_off", seed1_accept_path_info_off),
        test(
            "seed1_script_directory_settings",
            seed1_script_directory_settings,
        ),
        test("seed1_fpm_status_and_ping", seed1_fpm_status_and_ping),
        test("seed2_multi_user_pools", seed2_multi_user_pools),
        test("seed3_symlinked_site_dir", seed3_symlinked_site_dir),
        test("query_string_bytes", query_string_bytes),
        test("post_bodies", post_bodies),
        test("big_response_bounded_rss", big_response_bounded_rss),
        test("set_cookie_headers", set_cookie_headers),
        test("php_404_passthrough", php_404_passthrough),
        test(
            "handler_without_server_never_sends_the_file",
            handler_without_server_never_sends_the_file,
        ),
        test("php_redirect_302", php_redirect_302),
        test("head_request", head_request),
        test("pass_header_authorization", pass_header_authorization),
        test(
            "params_trace_redacts_credentials",
            params_trace_redacts_credentials,
        ),
        test("httpoxy_proxy_header_dropped", httpoxy_proxy_header_dropped),
        test("php_stderr_logged", php_stderr_logged),
        test("connect_failure_503_logged", connect_failure_503_logged),
        test("config_rejects_malformed", config_rejects_malformed),
        test("config_accepts_valid", config_accepts_valid),
        test(
            "conf_examples_pass_config_test",
            conf_examples_pass_config_test,
        ),
        test("make_install_destdir", make_install_destdir),
        test("ipc_dir_relative_sockets", ipc_dir_relative_sockets),
        test(
            "load_500_requests_32_concurrent",
            load_500_requests_32_concurrent,
        ),
        test("cold_code_never_mapped", cold_code_never_mapped),
    ],
};

/// Runs after every other suite.
pub const FINAL: Suite = Suite {
    name: "final",
    setup: |_| Ok(()),
    tests: &[test("error_logs_clean", error_logs_clean)],
};

// ------------------------------------------------------------------------------------------
// setup

fn setup(b: &mut Builder) -> Result<(), String> {
    let tmp = b.tmp.clone();
    let run = tmp.join("run");

    // php-fpm pools
    let tcp_port = b.port()?;
    let mut seed1_pool = Pool::new("seed1", "www-data", "www-data", Endpoint::Tcp(tcp_port));
    // php-fpm's own status and ping pages, reached through the module (fpm_status_and_ping)
    seed1_pool.extra.push("pm.status_path = /fpm-status".into());
    seed1_pool.extra.push("ping.path = /fpm-ping".into());
    b.pool(seed1_pool);
    let nogroup = util::primary_group("nobody").unwrap_or_else(|| "nogroup".into());
    b.pool(Pool::new(
        "www-data",
        "www-data",
        "www-data",
        Endpoint::Unix(run.join("www-data.sock")),
    ));
    b.pool(Pool::new(
        "nobody",
        "nobody",
        &nogroup,
        Endpoint::Unix(run.join("nobody.sock")),
    ));
    b.pool(Pool::new(
        "seed3",
        "www-data",
        "www-data",
        Endpoint::Unix(run.join("seed3.sock")),
    ));
    b.set("fpm_tcp_port", tcp_port);

    // ---- seed 1: the virtual path's parent directory does NOT exist
    let d1 = b.docroot("seed1")?;
    let fcgi_dir = tmp.join("fastcgi"); // never created
    let vpath = fcgi_dir.join("php5.fcgi");
    b.set("seed1_vpath", p(&vpath));
    b.set("seed1_docroot", p(&d1));
    let fces = format!(
        "FastCgiExternalServer {} -flush -host 127.0.0.1:{tcp_port}",
        q(p(&vpath))
    );
    let chain = format!(
        "DirectoryIndex index.php\n\
         AddType application/x-httpd-fastphp5 .php\n\
         Action application/x-httpd-fastphp5 /php5.fcgi\n\
         Alias /php5.fcgi {vp}\n\
         {fces}\n",
        vp = q(p(&vpath)),
    );
    let fd = q(format!("{}/", p(&fcgi_dir)));
    let seed1 = format!(
        "{chain}\
         # a URL mapping below the virtual path's directory but to another name\n\
         Alias /php5.fcgi2 {vp2}\n\
         <Directory {fd}>\n\
         \x20   Order deny,allow\n\
         \x20   Deny from all\n\
         \x20   <Files \"php5.fcgi\">\n\
         \x20       Order allow,deny\n\
         \x20       Allow from all\n\
         \x20   </Files>\n\
         </Directory>\n\
         # httpd 2.4 + Debian defaults (<Directory /> Require all denied): the Order/Allow\n\
         # exception above is not enough on its own, mod_authz_core still denies. Debian grants\n\
         # its cgi-bin directory (serve-cgi-bin.conf) in the same way.\n\
         <Directory {fd}>\n\
         \x20   Require all granted\n\
         </Directory>\n",
        vp2 = q(p(&fcgi_dir.join("php5.fcgi2"))),
    );
    let p1 = b.port()?;
    b.vhost("seed1", p1, "seed1.test", &d1, &seed1);

    // variants: same virtual path and identical options (accepted in several vhosts)
    let variants: [(&str, String); 5] = [
        // plain deny on the (absent) directory → 403
        (
            "seed1_deny",
            format!("<Directory {fd}>\n    Require all denied\n</Directory>\n"),
        ),
        // the parent is granted, the virtual path's directory denied → 403 only if the
        // <Directory> section of the virtual path itself applies
        (
            "seed1_deny_in_granted",
            format!(
                "<Directory {t}>\n    Require all granted\n</Directory>\n<Directory {fd}>\n    Require all denied\n</Directory>\n",
                t = q(p(&tmp))
            ),
        ),
        // the directory is granted but a <Files> section denies the virtual file → 403
        (
            "seed1_files_deny",
            format!(
                "<Directory {fd}>\n    Require all granted\n    <Files \"php5.fcgi\">\n        Require all denied\n    </Files>\n</Directory>\n"
            ),
        ),
        // only the virtual path's directory is granted (everything above is denied) → 200
        (
            "seed1_grant_only",
            format!("<Directory {fd}>\n    Require all granted\n</Directory>\n"),
        ),
        // httpd 2.4 form of the seed recipe (conf-examples/seed1-flush-host.conf) → 200
        (
            "seed1_authz24",
            format!(
                "<Directory {fd}>\n    Require all denied\n    <Files \"php5.fcgi\">\n        Require all granted\n    </Files>\n</Directory>\n"
            ),
        ),
    ];
    for (id, dirs) in variants {
        let port = b.port()?;
        b.vhost(
            id,
            port,
            &format!("{}.test", id.replace('_', "-")),
            &d1,
            &format!("{chain}{dirs}"),
        );
    }

    // `AcceptPathInfo Off` on a script's directory and on the virtual path's own directory
    let nopi = format!(
        "<Directory {fd}>\n    Require all granted\n    AcceptPathInfo Off\n</Directory>\n\
         <Directory {sub}>\n    AcceptPathInfo Off\n</Directory>\n",
        sub = q(p(&d1.join("sub")))
    );
    let pn = b.port()?;
    b.vhost(
        "seed1_pathinfo_off",
        pn,
        "seed1-pathinfo-off.test",
        &d1,
        &format!("{chain}{nopi}"),
    );

    // `CGIPassAuth On` and `SetEnv` on a script's directory only, and one variable set on the
    // virtual path's directory as well
    let scriptdir = format!(
        "<Directory {fd}>\n    Require all granted\n    SetEnv MFCGI_BOTH_VAR vpath\n</Directory>\n\
         <Directory {sub}>\n    CGIPassAuth On\n    SetEnv MFCGI_DIR_VAR sub\n    SetEnv MFCGI_BOTH_VAR sub\n</Directory>\n",
        sub = q(p(&d1.join("sub")))
    );
    let psd = b.port()?;
    b.vhost(
        "seed1_scriptdir",
        psd,
        "seed1-scriptdir.test",
        &d1,
        &format!("{chain}{scriptdir}"),
    );

    // php-fpm's status and ping pages: URLs with no file behind them, sent to the virtual
    // path by `Action ... virtual` (the recipe of conf-examples/seed1-flush-host.conf)
    let status_pages = format!(
        "<Directory {fd}>\n    Require all granted\n</Directory>\n\
         <LocationMatch \"^/fpm-(status|ping)$\">\n\
         \x20   Require local\n\
         \x20   SetHandler php-fpm-status\n\
         \x20   Action php-fpm-status /php5.fcgi virtual\n\
         </LocationMatch>\n"
    );
    let pst = b.port()?;
    b.vhost(
        "seed1_fpmstatus",
        pst,
        "seed1-fpmstatus.test",
        &d1,
        &format!("{chain}{status_pages}"),
    );

    // Vhosts whose error logs are expected to contain errors (id prefix `err_`):
    // the seed 1 chain, and the same chain pointing at a socket that does not exist.
    let grant = format!("<Directory {fd}>\n    Require all granted\n</Directory>\n");
    let pe = b.port()?;
    b.vhost(
        "err_stderr",
        pe,
        "err-stderr.test",
        &d1,
        &format!("{chain}{grant}"),
    );
    let missing_vpath = fcgi_dir.join("missing.fcgi");
    b.set("missing_vpath", p(&missing_vpath));
    let missing = format!(
        "AddType application/x-httpd-fastphp5 .php\n\
         Action application/x-httpd-fastphp5 /php5.fcgi\n\
         Alias /php5.fcgi {vp}\n\
         FastCgiExternalServer {vp} -socket {sock}\n{grant}",
        vp = q(p(&missing_vpath)),
        sock = q(p(&run.join("missing.sock"))),
    );
    let pm = b.port()?;
    b.vhost("err_noconn", pm, "err-noconn.test", &d1, &missing);

    // the handler fastcgi-script given by the configuration to files no definition serves
    // (mod_fastcgi's dynamic applications)
    let dd = b.docroot("dynamic")?;
    util::write_file(&dd.join("app.fcgi"), "#!/bin/sh\necho DYNAMIC-SOURCE-1\n")?;
    util::write_file(&dd.join("notes.txt"), "DYNAMIC-SOURCE-2\n")?;
    util::write_file(&dd.join("plain.html"), "static page\n")?;
    b.set("dynamic_docroot", p(&dd));
    let pd = b.port()?;
    b.vhost(
        "err_dynamic",
        pd,
        "err-dynamic.test",
        &dd,
        "AddHandler fastcgi-script .fcgi\n<Files \"notes.txt\">\n    SetHandler fastcgi-script\n</Files>\n",
    );

    // seed 1 with -pass-header Authorization on a second virtual path
    let auth_vpath = fcgi_dir.join("php5-auth.fcgi");
    let auth = format!(
        "DirectoryIndex index.php\n\
         AddType application/x-httpd-fastphp5 .php\n\
         Action application/x-httpd-fastphp5 /php5.fcgi\n\
         Alias /php5.fcgi {vp}\n\
         FastCgiExternalServer {vp} -flush -host 127.0.0.1:{tcp_port} -pass-header Authorization\n\
         <Directory {fd}>\n    Require all granted\n</Directory>\n",
        vp = q(p(&auth_vpath)),
    );
    let pa = b.port()?;
    b.vhost("seed1_auth", pa, "seed1-auth.test", &d1, &auth);

    // seed 1 with the module at trace3 and a rewrite that copies Authorization into the
    // environment (WordPress's and Symfony's .htaccess do so)
    let pt = b.port()?;
    b.vhost(
        "seed1_trace",
        pt,
        "seed1-trace.test",
        &d1,
        &format!(
            "{chain}{grant}LogLevel warn fastcgi:trace3\n\
             RewriteEngine On\n\
             RewriteCond %{{HTTP:Authorization}} .+\n\
             RewriteRule ^ - [E=HTTP_AUTHORIZATION:%0]\n"
        ),
    );

    // ---- seed 2: multi-user, global FastCgiExternalServer, name-based vhosts on one port.
    // <tmp>/shm exists (the "parent present" case); the virtual files do not.
    let shm = tmp.join("shm");
    util::mkdir_p(&shm)?;
    let mut global = Vec::new();
    for user in ["www-data", "nobody"] {
        global.push(format!(
            "FastCgiExternalServer {} -socket {}",
            q(p(&shm.join(format!("{user}-php.fcgi")))),
            q(p(&run.join(format!("{user}.sock"))))
        ));
    }
    global.push(format!(
        "<Directory {}>\n    Require all granted\n</Directory>",
        q(p(&shm))
    ));
    b.apache.global.extend(global);
    let p2 = b.port()?;
    for (id, user) in [("site1", "www-data"), ("site2", "nobody")] {
        let d = b.docroot(id)?;
        let body = format!(
            "DirectoryIndex index.php\n\
             AddType application/x-httpd-php .php\n\
             Action application/x-httpd-php /php.fcgi\n\
             Alias /php.fcgi {}\n",
            q(p(&shm.join(format!("{user}-php.fcgi"))))
        );
        b.vhost(id, p2, &format!("{id}.test"), &d, &body);
    }

    // ---- seed 3: the FastCgiExternalServer path is a real directory whose `www` entry is a
    // symlink to the vhost's DocumentRoot.
    let d3 = b.docroot("seed3")?;
    let site_dir = tmp.join("virtual-site3");
    util::mkdir_p(&site_dir)?;
    symlink(&d3, site_dir.join("www")).map_err(|e| format!("symlink: {e}"))?;
    b.set("seed3_dir", p(&site_dir));
    let body3 = format!(
        "DirectoryIndex index.php\n\
         AddHandler php5-fpm .php\n\
         Action php5-fpm /virtual-site\n\
         Alias /virtual-site {www}\n\
         FastCgiExternalServer {dir} -socket {sock} -idle-timeout 310 -flush\n\
         <Directory {dir}>\n    Require all granted\n</Directory>\n",
        www = q(p(&site_dir.join("www"))),
        dir = q(p(&site_dir)),
        sock = q(p(&run.join("seed3.sock"))),
    );
    let p3 = b.port()?;
    b.vhost("seed3", p3, "seed3.test", &d3, &body3);
    Ok(())
}

fn docroot(ctx: &Ctx, id: &str) -> String {
    p(&ctx.vhost(id).docroot)
}

// ------------------------------------------------------------------------------------------
// seed 1

/// Parity with mod_fastcgi's "normal" case (spec §2.4): the module sends
/// SCRIPT_FILENAME=<virtual path>, SCRIPT_NAME=/php5.fcgi, PATH_INFO=/index.php,
/// PATH_TRANSLATED=<docroot>/index.php, REDIRECT_URL=/index.php; php-fpm (cgi.fix_pathinfo=1)
/// then runs PATH_TRANSLATED and keeps the values it replaced as ORIG_*.
fn seed1_script_vars(ctx: &Ctx) -> Result<(), String> {
    let d = docroot(ctx, "seed1");
    let vpath = ctx.val("seed1_vpath");
    let r = ctx.get("seed1", "/index.php?a=1")?;
    expect_status(&r, 200)?;
    expect_vars(
        &r,
        &[
            ("MARKER", "mfcgi-info"),
            ("SITE", "seed1"),
            ("SCRIPT_NAME", "/index.php"),
            ("PHP_SELF", "/index.php"),
            ("SCRIPT_FILENAME", &format!("{d}/index.php")),
            ("REQUEST_URI", "/index.php?a=1"),
            ("QUERY_STRING", "a=1"),
            ("REDIRECT_URL", "/index.php"),
            ("REDIRECT_STATUS", "200"),
            ("REDIRECT_QUERY_STRING", "a=1"),
            ("REDIRECT_HANDLER", "application/x-httpd-fastphp5"),
            ("CONTEXT_PREFIX", "/php5.fcgi"),
            ("CONTEXT_DOCUMENT_ROOT", vpath),
            ("DOCUMENT_ROOT", &d),
            ("REQUEST_METHOD", "GET"),
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("GET_A_HEX", "31"),
            ("USER", "www-data"),
            ("FILE", &format!("{d}/index.php")),
            // what the module sent (PHP keeps the replaced values)
            ("ORIG_SCRIPT_FILENAME", vpath),
            ("ORIG_SCRIPT_NAME", "/php5.fcgi"),
            ("ORIG_PATH_INFO", "/index.php"),
            ("ORIG_PATH_TRANSLATED", &format!("{d}/index.php")),
            ("PATH_INFO", ABSENT),
            ("PATH_TRANSLATED", ABSENT),
        ],
    )?;
    ensure(r.header("X-Test") == Some("info"), || {
        format!("X-Test header missing: {}", r.summary())
    })?;
    ensure(
        r.header("Content-Type")
            .is_some_and(|c| c.starts_with("text/plain")),
        || format!("Content-Type from PHP not applied: {}", r.summary()),
    )
}

fn seed1_path_info(ctx: &Ctx) -> Result<(), String> {
    let d = docroot(ctx, "seed1");
    let r = ctx.get("seed1", "/sub/info.php/extra")?;
    expect_status(&r, 200)?;
    expect_vars(
        &r,
        &[
            ("MARKER", "mfcgi-info"),
            ("SCRIPT_NAME", "/sub/info.php"),
            ("PATH_INFO", "/extra"),
            ("PHP_SELF", "/sub/info.php/extra"),
            ("SCRIPT_FILENAME", &format!("{d}/sub/info.php")),
            ("PATH_TRANSLATED", &format!("{d}/extra")),
            ("REQUEST_URI", "/sub/info.php/extra"),
            ("REDIRECT_URL", "/sub/info.php/extra"),
            ("ORIG_SCRIPT_FILENAME", ctx.val("seed1_vpath")),
            ("ORIG_SCRIPT_NAME", "/php5.fcgi"),
            ("ORIG_PATH_INFO", "/sub/info.php/extra"),
            ("FILE", &format!("{d}/sub/info.php")),
        ],
    )
}

fn seed1_directory_index(ctx: &Ctx) -> Result<(), String> {
    let d = docroot(ctx, "seed1");
    let r = ctx.get("seed1", "/")?;
    expect_status(&r, 200)?;
    expect_vars(
        &r,
        &[
            ("MARKER", "mfcgi-info"),
            ("SCRIPT_NAME", "/index.php"),
            ("SCRIPT_FILENAME", &format!("{d}/index.php")),
            ("REQUEST_URI", "/"),
            ("REDIRECT_URL", "/index.php"),
        ],
    )
}

/// `/php5.fcgi2` maps to `<tmp>/fastcgi/php5.fcgi2`: same directory, different name, so it must
/// not be routed to the FastCGI server (prefix match only on a `/` boundary).
fn seed1_prefix_needs_slash_boundary(ctx: &Ctx) -> Result<(), String> {
    for target in ["/php5.fcgi2", "/php5.fcgi2/index.php", "/php5.fcgi2/"] {
        let r = ctx.get("seed1", target)?;
        ensure(r.status == 403 || r.status == 404, || {
            format!(
                "{target}: expected 403/404 (not handled by the module), got {}",
                r.summary()
            )
        })?;
        ensure(!r.text().contains("MARKER="), || {
            format!("{target}: reached PHP: {}", r.summary())
        })?;
    }
    // control: the real virtual path still works on the same vhost
    let r = ctx.get("seed1", "/info.php")?;
    expect_status(&r, 200)?;
    expect_vars(&r, &[("MARKER", "mfcgi-info")])
}

/// `<Directory>`/`<Files>` sections for the (absent) virtual path apply as if it existed.
fn seed1_directory_sections_apply(ctx: &Ctx) -> Result<(), String> {
    let mut errs = Vec::new();
    for (id, want) in [
        ("seed1_deny", 403),
        ("seed1_deny_in_granted", 403),
        ("seed1_files_deny", 403),
        ("seed1_grant_only", 200),
        ("seed1_authz24", 200),
    ] {
        // the docroot itself is reachable on every variant
        match ctx.get(id, "/static.txt") {
            Ok(r) if r.status == 200 => {}
            Ok(r) => errs.push(format!("{id} /static.txt: {}", r.summary())),
            Err(e) => errs.push(format!("{id}: {e}")),
        }
        match ctx.get(id, "/index.php") {
            Ok(r) => {
                let reached_php = r.text().contains("MARKER=mfcgi-info");
                if r.status != want || reached_php != (want == 200) {
                    errs.push(format!("{id} /index.php: want {want}, got {}", r.summary()));
                }
            }
            Err(e) => errs.push(format!("{id}: {e}")),
        }
    }
    ensure(errs.is_empty(), || errs.join(" | "))
}

/// `AcceptPathInfo Off` refuses a trailing path after the script (404, as mod_php and mod_cgi
/// do; mod_fastcgi ignored it): through `Action`, the script's own directory decides, not the
/// virtual path's (Off there must not break the recipe); a request for the virtual path itself
/// is judged by the virtual path's directory.
fn seed1_accept_path_info_off(ctx: &Ctx) -> Result<(), String> {
    let id = "seed1_pathinfo_off";
    let log = &ctx.vhost(id).error_log;
    let from = util::file_len(log);
    let mut errs = Vec::new();
    for (target, want, path_info) in [
        ("/sub/info.php", 200, None),
        ("/sub/info.php/extra", 404, None),
        ("/info.php/extra", 200, Some("/extra")),
        ("/php5.fcgi/info.php", 404, None),
    ] {
        let r = ctx.get(id, target)?;
        let reached_php = r.text().contains("MARKER=mfcgi-info");
        if r.status != want || reached_php != (want == 200) {
            errs.push(format!("{target}: want {want}, got {}", r.summary()));
        } else if let Some(pi) = path_info
            && let Err(e) = expect_vars(&r, &[("PATH_INFO", pi)])
        {
            errs.push(format!("{target}: {e}"));
        }
    }
    // the same request where AcceptPathInfo is left alone
    let r = ctx.get("seed1", "/sub/info.php/extra")?;
    if r.status != 200 {
        errs.push(format!("seed1 /sub/info.php/extra: {}", r.summary()));
    }
    ensure(errs.is_empty(), || errs.join(" | "))?;
    wait_log_line(
        log,
        from,
        &["FCGI064", "AcceptPathInfo Off", "\"/extra\"", "php5.fcgi"],
        Duration::from_secs(5),
    )
    .map(|_| ())
}

/// php-fpm's own status and ping pages (`pm.status_path`, `ping.path`) through the module:
/// URLs with no file behind them, routed to the virtual path by `Action ... virtual`; php-fpm
/// answers them when the request's script name is the page's path.
fn seed1_fpm_status_and_ping(ctx: &Ctx) -> Result<(), String> {
    let id = "seed1_fpmstatus";
    let logs = crate::scenario::Logs::mark(ctx, id);
    let r = ctx.get(id, "/fpm-ping")?;
    ensure(r.status == 200 && r.body == b"pong", || {
        format!("/fpm-ping: want php-fpm's pong: {}", r.summary())
    })?;
    let r = ctx.get(id, "/fpm-status?json")?;
    let text = r.text();
    ensure(
        r.status == 200
            && r.header("Content-Type")
                .is_some_and(|t| t.starts_with("application/json"))
            && text.contains("\"pool\":\"seed1\"")
            && text.contains("\"accepted conn\":"),
        || {
            format!(
                "/fpm-status?json: want the seed1 pool's status: {}",
                r.summary()
            )
        },
    )?;
    let r = ctx.get(id, "/fpm-status?full")?;
    let text = r.text();
    ensure(
        r.status == 200
            && text.contains("pool:")
            && text.contains("seed1")
            && text.contains("\nstate:"),
        || format!("/fpm-status?full: {}", r.summary()),
    )?;
    // the other pages of the vhost are unchanged
    let r = ctx.get(id, "/index.php")?;
    ensure(
        r.status == 200 && r.kv().get("SITE").map(String::as_str) == Some("seed1"),
        || format!("a PHP page on the same vhost: {}", r.summary()),
    )?;
    logs.expect_no_errors()
}

/// What a script's directory says reaches the script although under `Action` the request the
/// module serves is the virtual path's (as with mod_php or mod_proxy_fcgi): `CGIPassAuth On`
/// passes the client's credentials (`PHP_AUTH_USER`), `SetEnv` variables arrive under their own
/// names (besides mod_fastcgi's `REDIRECT_…` copies), and what the virtual path's directory
/// sets itself wins. Scripts elsewhere get none of it; mod_actions' HANDLER is not renamed back.
fn seed1_script_directory_settings(ctx: &Ctx) -> Result<(), String> {
    let mut errs = Vec::new();
    for (target, sub) in [("/sub/info.php", true), ("/info.php", false)] {
        let req = Request::get(target).header("Authorization", "Basic Zm9vOmJhcg==");
        let r = ctx.req("seed1_scriptdir", req)?;
        let yes = |v| if sub { v } else { ABSENT };
        let want = [
            ("MARKER", "mfcgi-info"),
            ("PHP_AUTH_USER", yes("foo")),
            ("PHP_AUTH_PW", yes("bar")),
            ("HAS_HTTP_AUTHORIZATION", if sub { "1" } else { "0" }),
            ("MFCGI_DIR_VAR", yes("sub")),
            ("REDIRECT_MFCGI_DIR_VAR", yes("sub")),
            ("MFCGI_BOTH_VAR", "vpath"),
            ("HANDLER", ABSENT),
            ("REDIRECT_HANDLER", "application/x-httpd-fastphp5"),
            ("REDIRECT_STATUS", "200"),
        ];
        if let Err(e) = expect_status(&r, 200).and_then(|_| expect_vars(&r, &want)) {
            errs.push(format!("{target}: {e}"));
        }
    }
    ensure(errs.is_empty(), || errs.join(" | "))
}

// ------------------------------------------------------------------------------------------
// seed 2 and 3

fn seed2_multi_user_pools(ctx: &Ctx) -> Result<(), String> {
    let shm = ctx.tmp.join("shm");
    // interleave to catch any cross-vhost mix-up (e.g. a connection pool keyed wrongly)
    // Under valgrind the one Apache process serves one client connection at a time, so two
    // open keep-alive connections would wait on each other: a fresh connection per request
    // there (the interleaving still goes through the one process' backend connections).
    let mut conns = if ctx.env.valgrind {
        None
    } else {
        Some([ctx.connect("site1")?, ctx.connect("site2")?])
    };
    for i in 0..8 {
        for (k, (id, user)) in [("site1", "www-data"), ("site2", "nobody")]
            .into_iter()
            .enumerate()
        {
            let d = docroot(ctx, id);
            let req = Request::get(&format!("/index.php?a={i}")).host(&format!("{id}.test"));
            let r = match conns.as_mut() {
                Some(conns) if i % 2 == 0 => {
                    conns[k].roundtrip(&req).map_err(|e| format!("{id}: {e}"))?
                }
                _ => ctx.req(id, req)?,
            };
            expect_status(&r, 200).map_err(|e| format!("{id}: {e}"))?;
            expect_vars(
                &r,
                &[
                    ("SITE", id),
                    ("USER", user),
                    ("SCRIPT_FILENAME", &format!("{d}/index.php")),
                    ("SCRIPT_NAME", "/index.php"),
                    ("HTTP_HOST", &format!("{id}.test")),
                    (
                        "ORIG_SCRIPT_FILENAME",
                        &p(&shm.join(format!("{user}-php.fcgi"))),
                    ),
                    ("ORIG_SCRIPT_NAME", "/php.fcgi"),
                ],
            )
            .map_err(|e| format!("{id} request {i}: {e}"))?;
        }
    }
    Ok(())
}

/// Seed 3: `FastCgiExternalServer <dir>` where `<dir>/www` → DocumentRoot. After the Action
/// redirect to `/virtual-site/index.php`, the directory walk finds the real file, so (as with
/// mod_fastcgi) r->filename = `<dir>/www/index.php` (below `<dir>`, hence handled) and there is no
/// PATH_INFO. The module therefore sends SCRIPT_FILENAME=`<dir>/www/index.php` and
/// SCRIPT_NAME=`/virtual-site/index.php`, no PATH_INFO/PATH_TRANSLATED. php-fpm's fix_pathinfo
/// logic only rewrites SCRIPT_NAME from REDIRECT_URL when PATH_TRANSLATED is present, so PHP
/// shows exactly those values (SCRIPT_NAME keeps the `/virtual-site` prefix) and runs the file
/// through the symlink (`__FILE__` is the resolved path under the DocumentRoot).
fn seed3_symlinked_site_dir(ctx: &Ctx) -> Result<(), String> {
    let dir = ctx.val("seed3_dir");
    let real = std::fs::canonicalize(&ctx.vhost("seed3").docroot).map_err(|e| e.to_string())?;
    let real = p(&real);
    for (target, script, uri) in [
        ("/index.php?a=3", "index.php", "/index.php?a=3"),
        ("/", "index.php", "/"),
        ("/sub/info.php", "sub/info.php", "/sub/info.php"),
    ] {
        let r = ctx.get("seed3", target)?;
        expect_status(&r, 200).map_err(|e| format!("{target}: {e}"))?;
        expect_vars(
            &r,
            &[
                ("MARKER", "mfcgi-info"),
                ("SITE", "seed3"),
                ("USER", "www-data"),
                ("SCRIPT_FILENAME", &format!("{dir}/www/{script}")),
                ("SCRIPT_NAME", &format!("/virtual-site/{script}")),
                ("REDIRECT_URL", &format!("/{script}")),
                ("REQUEST_URI", uri),
                ("PATH_INFO", ABSENT),
                ("PATH_TRANSLATED", ABSENT),
                ("FILE", &format!("{real}/{script}")),
            ],
        )
        .map_err(|e| format!("{target}: {e}"))?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// request / response plumbing through seed 1

fn query_string_bytes(ctx: &Ctx) -> Result<(), String> {
    for (qs, want_hex) in [
        ("a=%ff%fe%00x", "fffe0078"),
        ("a=x+y%2B%25", "782079 2b25"),
        ("a=%e2%82%ac&b=%0d%0a", "e282ac"),
        ("b=1&a=", ""),
    ] {
        let want_hex = want_hex.replace(' ', "");
        let target = format!("/index.php?{qs}");
        let r = ctx.get("seed1", &target)?;
        expect_status(&r, 200).map_err(|e| format!("{target}: {e}"))?;
        expect_vars(
            &r,
            &[
                ("GET_A_HEX", &want_hex),
                ("QUERY_STRING", qs),
                ("REQUEST_URI", &target),
                ("SCRIPT_NAME", "/index.php"),
            ],
        )
        .map_err(|e| format!("{target}: {e}"))?;
    }
    Ok(())
}

fn post_bodies(ctx: &Ctx) -> Result<(), String> {
    let mut conn = ctx.connect("seed1")?;
    for (i, size) in [0usize, 1, 8191, 8192, 8193, 65535, 65536, 10 << 20]
        .into_iter()
        .enumerate()
    {
        let body = Prng::new(1000 + i as u64).bytes(size);
        let md5 = util::md5_hex(&body)?;
        let req = Request::post("/post.php", body)
            .host("seed1.test")
            .header("Content-Type", "application/octet-stream");
        if conn.closed {
            conn = ctx.connect("seed1")?;
        }
        let r = conn
            .roundtrip(&req)
            .map_err(|e| format!("POST {size} bytes: {e}"))?;
        expect_status(&r, 200).map_err(|e| format!("POST {size} bytes: {e}"))?;
        expect_vars(
            &r,
            &[
                ("MARKER", "mfcgi-post"),
                ("LEN", &size.to_string()),
                ("MD5", &md5),
                ("CONTENT_LENGTH", &size.to_string()),
            ],
        )
        .map_err(|e| format!("POST {size} bytes: {e}"))?;
    }
    Ok(())
}

/// Compares a streamed body with big.php's deterministic output.
struct BigVerifier {
    off: u64,
    piece_idx: u64,
    piece: Vec<u8>,
    mismatch: Option<u64>,
}

impl BigVerifier {
    fn new() -> BigVerifier {
        BigVerifier {
            off: 0,
            piece_idx: 0,
            piece: big_piece(0),
            mismatch: None,
        }
    }
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let idx = self.off / 8192;
            if idx != self.piece_idx {
                self.piece_idx = idx;
                self.piece = big_piece(idx);
            }
            let within = (self.off % 8192) as usize;
            let n = data.len().min(8192 - within);
            if self.mismatch.is_none() && data[..n] != self.piece[within..within + n] {
                let k = (0..n)
                    .find(|&k| data[k] != self.piece[within + k])
                    .unwrap_or(0);
                self.mismatch = Some(self.off + k as u64);
            }
            self.off += n as u64;
            data = &data[n..];
        }
    }
}

fn expected_big_md5(mb: u64) -> Result<String, String> {
    let mut m = Md5::new()?;
    for i in 0..mb * 128 {
        m.update(&big_piece(i))?;
    }
    m.finish()
}

fn rss_map(pids: &[u32]) -> Vec<(u32, u64)> {
    pids.iter()
        .filter_map(|&pid| procs::rss_kib(pid).map(|r| (pid, r)))
        .collect()
}

/// 100 MiB through the module: intact, and Apache's RSS grows by < 16 MiB (no whole-response
/// buffering).
fn big_response_bounded_rss(ctx: &Ctx) -> Result<(), String> {
    const MB: u64 = 100;
    let expected_md5 = expected_big_md5(MB)?;
    let mut conn = ctx.connect("seed1")?;
    // Warm up on the same keep-alive connection so the serving process already exists.
    let warm = conn
        .roundtrip(&Request::get("/index.php").host("seed1.test"))
        .map_err(|e| format!("warm-up: {e}"))?;
    expect_status(&warm, 200)?;
    ensure(!conn.closed, || {
        "keep-alive connection closed after warm-up".into()
    })?;

    let children = ctx.apache_children();
    ensure(!children.is_empty(), || "no Apache children found".into())?;
    let before = rss_map(&children);
    let before_total: u64 = before.iter().map(|x| x.1).sum();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let before = before.clone();
        thread::spawn(move || {
            let mut max_growth: i64 = 0;
            loop {
                let done = stop.load(Ordering::Relaxed);
                let mut growth: i64 = 0;
                for (pid, b) in &before {
                    if let Some(now) = procs::rss_kib(*pid) {
                        growth += now as i64 - *b as i64;
                    }
                }
                max_growth = max_growth.max(growth);
                if done {
                    return max_growth;
                }
                thread::sleep(Duration::from_millis(25));
            }
        })
    };

    let mut md5 = Md5::new()?;
    let mut verifier = BigVerifier::new();
    let t0 = Instant::now();
    let req = Request::get(&format!("/big.php?mb={MB}")).host("seed1.test");
    let result = conn.roundtrip_streaming(&req, &mut |data| {
        verifier.feed(data);
        md5.update(data)
    });
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let max_growth_kib = sampler.join().map_err(|_| "sampler panicked".to_string())?;
    let r = result.map_err(|e| format!("GET big.php?mb={MB}: {e}"))?;
    let got_md5 = md5.finish()?;
    expect_status(&r, 200)?;
    let want_len = MB << 20;
    ensure(r.complete && r.body_len == want_len, || {
        format!(
            "body incomplete: {} of {want_len} bytes, framing {:?}, complete={}",
            r.body_len, r.framing, r.complete
        )
    })?;
    if let Some(off) = verifier.mismatch {
        return Err(format!(
            "body differs from generator output at offset {off}"
        ));
    }
    ensure(got_md5 == expected_md5, || {
        format!("md5 {got_md5} != expected {expected_md5}")
    })?;
    let limit_kib = 16 * 1024;
    ensure(max_growth_kib < limit_kib, || {
        format!(
            "Apache RSS grew by {} KiB during the {MB} MiB response (limit {limit_kib} KiB; before: {before_total} KiB over {} children)",
            max_growth_kib,
            children.len()
        )
    })?;
    // The measurement is only meaningful if the serving process was among the measured ones.
    let pid = served_by_pid(ctx, &format!("GET /big.php?mb={MB} "))?;
    ensure(before.iter().any(|(p, _)| *p == pid), || {
        format!("request served by pid {pid}, which was not measured ({children:?})")
    })?;
    if std::env::var_os("MFCGI_VERBOSE").is_some() {
        println!(
            "    big response: {MB} MiB in {:.2}s, max RSS growth {max_growth_kib} KiB",
            elapsed.as_secs_f64()
        );
    }
    Ok(())
}

/// PID of the Apache process that logged the last access-log line containing `needle`.
fn served_by_pid(ctx: &Ctx, needle: &str) -> Result<u32, String> {
    let log = ctx.apache_conf.access_log();
    let start = Instant::now();
    loop {
        let text = util::read_to_string_lossy(&log);
        if let Some(line) = text.lines().rev().find(|l| l.contains(needle)) {
            return line
                .rsplit("pid=")
                .next()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| format!("no pid in access log line {line:?}"));
        }
        if start.elapsed() > Duration::from_secs(3) {
            return Err(format!("no access log line with {needle:?}"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn set_cookie_headers(ctx: &Ctx) -> Result<(), String> {
    let r = ctx.get("seed1", "/cookies.php")?;
    expect_status(&r, 200)?;
    let cookies = r.headers_all("Set-Cookie");
    ensure(cookies.len() == 2, || {
        format!("want 2 Set-Cookie headers: {}", r.summary())
    })?;
    ensure(
        cookies[0].starts_with("c1=v1") && cookies[1].starts_with("c2=v2"),
        || format!("Set-Cookie values/order wrong: {cookies:?}"),
    )?;
    ensure(r.text() == "cookies set\n", || {
        format!("body: {}", r.summary())
    })
}

/// `AddHandler fastcgi-script .fcgi` / `SetHandler fastcgi-script` on files no
/// FastCgiExternalServer serves: mod_fastcgi ran them as dynamic applications, which this
/// module does not; the file must not be sent as it is (its source) but answered 500 with one
/// `FCGI090` line, or 404 when it does not exist.
fn handler_without_server_never_sends_the_file(ctx: &Ctx) -> Result<(), String> {
    let id = "err_dynamic";
    let log = ctx.vhost(id).error_log.clone();
    let r = ctx.get(id, "/plain.html")?;
    expect_status(&r, 200).map_err(|e| format!("control /plain.html: {e}"))?;
    for path in ["/app.fcgi", "/notes.txt"] {
        let off = util::file_len(&log);
        let r = ctx.get(id, path)?;
        expect_status(&r, 500).map_err(|e| format!("{path}: {e}"))?;
        ensure(!r.text().contains("DYNAMIC-SOURCE"), || {
            format!("{path}: the file's contents were sent: {}", r.summary())
        })?;
        let file = format!("{}{path}", ctx.val("dynamic_docroot"));
        let line = wait_log_line(
            &log,
            off,
            &["FCGI090", "handler fastcgi-script", &format!("\"{file}\"")],
            Duration::from_secs(3),
        )?;
        ensure(line.contains("[fastcgi:error]"), || {
            format!("{path}: not an error-level line: {line}")
        })?;
    }
    let r = ctx.get(id, "/missing.fcgi")?;
    expect_status(&r, 404)
}

fn php_404_passthrough(ctx: &Ctx) -> Result<(), String> {
    let r = ctx.get("seed1", "/notfound.php")?;
    expect_status(&r, 404)?;
    ensure(r.text() == "custom 404 body", || {
        format!("PHP's 404 body not passed through: {}", r.summary())
    })
}

fn php_redirect_302(ctx: &Ctx) -> Result<(), String> {
    let r = ctx.get("seed1", "/redirect.php")?;
    expect_status(&r, 302)?;
    // PHP sends `Status: 302` itself, so the app's Location and body pass through unchanged
    // (no internal redirect, no httpd error page).
    ensure(r.header("Location") == Some("/x"), || {
        format!("Location: {}", r.summary())
    })?;
    ensure(r.text() == "redirecting\n", || {
        format!("PHP's 302 body not passed through: {}", r.summary())
    })
}

fn head_request(ctx: &Ctx) -> Result<(), String> {
    let mut conn = ctx.connect("seed1")?;
    let g = conn
        .roundtrip(&Request::get("/index.php?a=1").host("seed1.test"))
        .map_err(|e| e.to_string())?;
    let h = conn
        .roundtrip(&Request::head("/index.php?a=1").host("seed1.test"))
        .map_err(|e| e.to_string())?;
    expect_status(&g, 200)?;
    expect_status(&h, 200)?;
    for name in ["Content-Type", "X-Test"] {
        ensure(g.header(name) == h.header(name), || {
            format!(
                "{name} differs: GET {:?} HEAD {:?}",
                g.header(name),
                h.header(name)
            )
        })?;
    }
    ensure(h.body_len == 0, || {
        format!("HEAD returned a body: {}", h.summary())
    })?;
    // the connection stays usable: HEAD must not have left body bytes on the wire
    let g2 = conn
        .roundtrip(&Request::get("/index.php?a=2").host("seed1.test"))
        .map_err(|e| format!("GET after HEAD on the same connection: {e}"))?;
    expect_status(&g2, 200)?;
    expect_vars(&g2, &[("QUERY_STRING", "a=2")])
}

fn pass_header_authorization(ctx: &Ctx) -> Result<(), String> {
    // "user1:pa:ss1"
    let auth = "Basic dXNlcjE6cGE6c3Mx";
    let r = ctx.req(
        "seed1_auth",
        Request::get("/index.php").header("Authorization", auth),
    )?;
    expect_status(&r, 200)?;
    expect_vars(
        &r,
        &[
            ("PHP_AUTH_USER", "user1"),
            ("PHP_AUTH_PW", "pa:ss1"),
            ("HAS_HTTP_AUTHORIZATION", "1"),
        ],
    )
    .map_err(|e| format!("with -pass-header Authorization: {e}"))?;
    let r = ctx.req(
        "seed1",
        Request::get("/index.php").header("Authorization", auth),
    )?;
    expect_status(&r, 200)?;
    expect_vars(
        &r,
        &[
            ("PHP_AUTH_USER", ABSENT),
            ("PHP_AUTH_PW", ABSENT),
            ("HAS_HTTP_AUTHORIZATION", "0"),
        ],
    )
    .map_err(|e| format!("without -pass-header: {e}"))
}

/// `LogLevel fastcgi:trace3` logs the params sent (FCGI051) with credentials and cookies
/// redacted, also under the `REDIRECT_` name the AddType/Action recipe gives a rewrite's
/// `[E=HTTP_AUTHORIZATION:...]`; at the default level no params are logged.
fn params_trace_redacts_credentials(ctx: &Ctx) -> Result<(), String> {
    // "tracer:trace-pw-5d1f"
    let b64 = "dHJhY2VyOnRyYWNlLXB3LTVkMWY=";
    let secrets = [b64, "trace-pw-5d1f", "cookie-secret-7e2a"];
    let req = || {
        Request::get("/index.php?tracecheck=1")
            .header("Authorization", &format!("Basic {b64}"))
            .header("Cookie", "sid=cookie-secret-7e2a; theme=dark")
    };
    let log = ctx.vhost("seed1_trace").error_log.clone();
    let off = util::file_len(&log);
    let r = ctx.req("seed1_trace", req())?;
    expect_status(&r, 200)?;
    let line = wait_log_line(
        &log,
        off,
        &["FCGI051", "REQUEST_URI=/index.php?tracecheck=1;"],
        Duration::from_secs(3),
    )?;
    for want in [
        "[fastcgi:trace3]",
        " REDIRECT_HTTP_AUTHORIZATION=[redacted];",
        " HTTP_COOKIE=[redacted];",
        " SCRIPT_FILENAME=",
    ] {
        ensure(line.contains(want), || {
            format!("trace line without {want:?}: {line}")
        })?;
    }
    let text = util::read_from(&log, off);
    for s in secrets {
        ensure(!text.contains(s), || {
            format!("{s:?} in the trace3 log: {text}")
        })?;
    }
    // the same request at the default level: no params in the log
    let log = ctx.vhost("seed1").error_log.clone();
    let off = util::file_len(&log);
    let r = ctx.req("seed1", req())?;
    expect_status(&r, 200)?;
    let text = util::read_from(&log, off);
    ensure(!text.contains("FCGI051"), || {
        format!("params logged below trace3: {text}")
    })
}

fn httpoxy_proxy_header_dropped(ctx: &Ctx) -> Result<(), String> {
    for id in ["seed1", "seed1_auth", "site1"] {
        let r = ctx.req(
            id,
            Request::get("/index.php").header("Proxy", "http://evil.example:8080/"),
        )?;
        expect_status(&r, 200).map_err(|e| format!("{id}: {e}"))?;
        expect_vars(&r, &[("MARKER", "mfcgi-info"), ("HAS_HTTP_PROXY", "0")])
            .map_err(|e| format!("{id}: {e}"))?;
    }
    Ok(())
}

/// Wait until `path` (from byte `from`) contains a line with every needle; returns that line.
fn wait_log_line(
    path: &Path,
    from: u64,
    needles: &[&str],
    timeout: Duration,
) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let text = util::read_from(path, from);
        if let Some(l) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return Ok(l.to_string());
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "no line with {needles:?} in {} after {timeout:?}; new lines: {:?}",
                path.display(),
                text.lines().collect::<Vec<_>>()
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// PHP's error_log() output arrives on FCGI_STDERR and is logged at error level, naming the
/// server (= r->filename, here the virtual path).
fn php_stderr_logged(ctx: &Ctx) -> Result<(), String> {
    let log = ctx.vhost("err_stderr").error_log.clone();
    let off = util::file_len(&log);
    let marker = format!("mfcgi-stderr-{}", std::process::id());
    let r = ctx.get("err_stderr", &format!("/stderr.php?m={marker}"))?;
    expect_status(&r, 200)?;
    ensure(r.text() == "stderr written\n", || {
        format!("body: {}", r.summary())
    })?;
    let vpath = ctx.val("seed1_vpath");
    let line = wait_log_line(&log, off, &[&marker], Duration::from_secs(3))?;
    ensure(
        line.contains("[fastcgi:error]")
            && line.contains(&format!("FastCGI: server \"{vpath}\" stderr: ")),
        || format!("stderr line has the wrong form: {line}"),
    )
}

/// A missing socket. mod_fastcgi answered 500 plus a misleading "incomplete headers" line; this
/// module answers 503 with ONE error line naming the server and the address (README,
/// "Differences from mod_fastcgi").
fn connect_failure_503_logged(ctx: &Ctx) -> Result<(), String> {
    let log = ctx.vhost("err_noconn").error_log.clone();
    let off = util::file_len(&log);
    let t0 = Instant::now();
    let r = ctx.get("err_noconn", "/index.php")?;
    expect_status(&r, 503)?;
    // (a latency bound only: relaxed under valgrind)
    ensure(
        t0.elapsed() < ctx.scaled(Duration::from_secs(5), Duration::from_secs(15)),
        || format!("took {:?}", t0.elapsed()),
    )?;
    ensure(!r.text().contains("MARKER="), || {
        format!("reached PHP: {}", r.summary())
    })?;
    let vpath = ctx.val("missing_vpath");
    let sock = ctx.tmp.join("run/missing.sock");
    wait_log_line(
        &log,
        off,
        &[
            "[fastcgi:error]",
            &format!("FastCGI: failed to connect to server \"{vpath}\""),
            &p(&sock),
            "connect() failed",
        ],
        Duration::from_secs(3),
    )?;
    thread::sleep(Duration::from_millis(100));
    let errors: Vec<String> = util::read_from(&log, off)
        .lines()
        .filter(|l| l.contains("[fastcgi:error]"))
        .map(String::from)
        .collect();
    ensure(errors.len() == 1, || {
        format!("want exactly one [fastcgi:error] line, got {errors:?}")
    })
}

// ------------------------------------------------------------------------------------------
// apache2 -t

fn config_base(ctx: &Ctx, name: &str) -> String {
    let t = p(&ctx.tmp);
    format!(
        "ServerRoot {t}\nServerName localhost\nPidFile {t}/run/cfgtest-{name}.pid\n\
         ErrorLog {t}/logs/cfgtest.error.log\n\
         LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n\
         LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n\
         LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so\n\
         LoadModule fastcgi_module {so}\n\
         Listen 127.0.0.1:1\n\n",
        so = q(p(&ctx.env.module_so))
    )
}

const V: &str = "/tmp/mfcgi-cfg/php.fcgi";

/// (name, config body, substrings that must all appear; `a|b` = either)
fn reject_cases() -> Vec<(&'static str, String, Vec<String>)> {
    let long_sock = format!("/tmp/{}.sock", "s".repeat(120));
    vec![
        (
            "unknown_option",
            format!("FastCgiExternalServer {V} -host 127.0.0.1:9000 -foo"),
            vec!["invalid option: -foo".into()],
        ),
        (
            "idle_timeout_zero",
            format!("FastCgiExternalServer {V} -host 127.0.0.1:9000 -idle-timeout 0"),
            vec!["invalid value for -idle-timeout: \"0\" must be >= 1".into()],
        ),
        (
            "idle_timeout_not_a_number",
            format!("FastCgiExternalServer {V} -host 127.0.0.1:9000 -idle-timeout abc"),
            vec!["invalid value for -idle-timeout".into()],
        ),
        (
            "appconntimeout_without_value",
            format!("FastCgiExternalServer {V} -host 127.0.0.1:9000 -appConnTimeout"),
            vec!["invalid value for -appConnTimeout".into()],
        ),
        (
            "host_and_socket",
            format!("FastCgiExternalServer {V} -host 127.0.0.1:9000 -socket /tmp/x.sock"),
            vec!["-host and -socket are mutually exclusive options".into()],
        ),
        (
            "neither_host_nor_socket",
            format!("FastCgiExternalServer {V} -flush"),
            vec!["-socket or -host option missing".into()],
        ),
        (
            "fastcgi_server_unsupported",
            "FastCgiServer /tmp/mfcgi-cfg/app.fcgi -processes 2".to_string(),
            vec![
                "FastCgiServer is not supported".into(),
                "use FastCgiExternalServer".into(),
            ],
        ),
        (
            "appclass_unsupported",
            "AppClass /tmp/mfcgi-cfg/app.fcgi".to_string(),
            vec!["AppClass is not supported".into()],
        ),
        (
            "ipc_dir_after_definition",
            format!("FastCgiExternalServer {V} -socket php.sock\nFastCgiIpcDir /tmp/mfcgi-ipc"),
            vec!["FastCgiIpcDir command must precede static FastCGI server definitions".into()],
        ),
        (
            "missing_port",
            format!("FastCgiExternalServer {V} -host 127.0.0.1"),
            vec!["missing port specification".into()],
        ),
        (
            "port_zero",
            format!("FastCgiExternalServer {V} -host 127.0.0.1:0"),
            vec!["bad port number".into()],
        ),
        (
            "port_not_numeric",
            format!("FastCgiExternalServer {V} -host 127.0.0.1:http"),
            vec!["bad port number".into()],
        ),
        (
            "port_too_big",
            format!("FastCgiExternalServer {V} -host 127.0.0.1:65536"),
            vec!["bad port number".into()],
        ),
        (
            "socket_path_too_long",
            format!("FastCgiExternalServer {V} -socket {long_sock}"),
            vec![format!(
                "path \"{long_sock}\" is too long for a Domain socket"
            )],
        ),
        (
            "redefinition_in_two_vhosts",
            format!(
                "<VirtualHost 127.0.0.1:80>\nFastCgiExternalServer {V} -host 127.0.0.1:9000\n</VirtualHost>\n\
                 <VirtualHost 127.0.0.1:81>\nFastCgiExternalServer {V} -host 127.0.0.1:9001\n</VirtualHost>\n"
            ),
            vec![format!("redefinition of previously defined class \"{V}\"")],
        ),
        (
            "redefinition_global",
            format!(
                "FastCgiExternalServer {V} -host 127.0.0.1:9000\nFastCgiExternalServer {V} -socket /tmp/x.sock\n"
            ),
            vec![format!("redefinition of previously defined class \"{V}\"")],
        ),
        (
            "no_arguments",
            "FastCgiExternalServer".to_string(),
            vec![
                "FastCgiExternalServer requires a path and either a -socket or -host option".into(),
            ],
        ),
        (
            "pass_header_proxy",
            format!("FastCgiExternalServer {V} -host 127.0.0.1:9000 -pass-header Proxy"),
            vec!["Proxy".into()],
        ),
        (
            "inside_directory",
            format!(
                "<Directory /tmp>\nFastCgiExternalServer {V} -host 127.0.0.1:9000\n</Directory>\n"
            ),
            vec!["not allowed here|cannot occur within|not allowed in <Directory>".into()],
        ),
        (
            // proves the module's name is mod_fastcgi.c: the block must be read
            "ifmodule_mod_fastcgi_c",
            format!(
                "<IfModule mod_fastcgi.c>\nFastCgiExternalServer {V} -host 127.0.0.1:9000 -bogus\n</IfModule>\n"
            ),
            vec!["invalid option: -bogus".into()],
        ),
    ]
}

fn accept_cases() -> Vec<(&'static str, String)> {
    vec![
        ("baseline_without_directive", String::new()),
        (
            "external_app_class_alias",
            format!("ExternalAppClass {V} -host 127.0.0.1:9000 -flush"),
        ),
        (
            "dynamic_app_tuning_ignored",
            "FastCgiConfig -maxProcesses 5 -idle-timeout 60\nFCGIConfig -restart".to_string(),
        ),
        (
            "wrapper_and_suexec",
            format!(
                "FastCgiWrapper On\nFastCgiSuexec /usr/lib/apache2/suexec\n\
                 FastCgiExternalServer {V} -host 127.0.0.1:9000 -user www-data -group www-data"
            ),
        ),
        (
            "socket_does_not_exist",
            format!("FastCgiExternalServer {V} -socket /nonexistent/dir/php-fpm.sock"),
        ),
        (
            "identical_in_two_vhosts",
            format!(
                "<VirtualHost 127.0.0.1:80>\nFastCgiExternalServer {V} -host 127.0.0.1:9000 -flush\n</VirtualHost>\n\
                 <VirtualHost 127.0.0.1:81>\nFastCgiExternalServer {V} -host 127.0.0.1:9000 -flush\n</VirtualHost>\n"
            ),
        ),
        (
            "ipv6_literal",
            format!("FastCgiExternalServer {V} -host [::1]:9000"),
        ),
        (
            "localhost_name",
            format!("FastCgiExternalServer {V} -host localhost:9000"),
        ),
        (
            "all_options",
            format!(
                "FastCgiExternalServer {V} -host 127.0.0.1:9000 -appConnTimeout 3 -idle-timeout 60 -flush \
                 -pass-header Authorization -pass-header X-Forwarded-For -nph"
            ),
        ),
        (
            "user_group",
            format!("FastCgiExternalServer {V} -socket /tmp/x.sock -user www-data -group www-data"),
        ),
        (
            "option_case_insensitive",
            format!("FastCgiExternalServer {V} -HOST 127.0.0.1:9000 -Idle-Timeout 5 -FLUSH"),
        ),
    ]
}

fn config_rejects_malformed(ctx: &Ctx) -> Result<(), String> {
    let mut errs = Vec::new();
    for (name, body, want) in reject_cases() {
        let text = format!("{}{body}\n", config_base(ctx, name));
        let t = ctx.config_test(&format!("reject-{name}"), &text)?;
        let out = t.output.trim().replace('\n', " / ");
        if t.ok {
            errs.push(format!("{name}: accepted (exit {:?}): {out}", t.code));
            continue;
        }
        // (the message names the directive at fault, one of the case's)
        if ![
            "FastCgiExternalServer",
            "FastCgiIpcDir",
            "FastCgiServer",
            "AppClass",
        ]
        .iter()
        .any(|d| body.contains(d) && t.output.contains(d))
        {
            errs.push(format!(
                "{name}: message does not name the directive: {out}"
            ));
        }
        for w in &want {
            if !w.split('|').any(|alt| t.output.contains(alt)) {
                errs.push(format!("{name}: message lacks {w:?}: {out}"));
            }
        }
    }
    ensure(errs.is_empty(), || errs.join("\n    "))
}

fn config_accepts_valid(ctx: &Ctx) -> Result<(), String> {
    let mut errs = Vec::new();
    for (name, body) in accept_cases() {
        let text = format!("{}{body}\n", config_base(ctx, name));
        let t = ctx.config_test(&format!("accept-{name}"), &text)?;
        if !t.ok || !t.output.contains("Syntax OK") {
            errs.push(format!(
                "{name}: rejected (exit {:?}): {}",
                t.code,
                t.output.trim().replace('\n', " / ")
            ));
        }
    }
    ensure(errs.is_empty(), || errs.join("\n    "))
}

/// `apache2 -t` of a configuration that loads the stock modules of the test instances and
/// ours, then includes `include` (and the extra lines).
fn include_config(ctx: &Ctx, name: &str, so: &Path, include: &str) -> String {
    let t = p(&ctx.tmp);
    let mut s = format!(
        "ServerRoot {t}\nServerName localhost\nPidFile {t}/run/cfgtest-{name}.pid\n\
         ErrorLog {t}/logs/cfgtest.error.log\n\
         LoadModule mpm_event_module {MODULE_DIR}/mod_mpm_event.so\n"
    );
    for m in STOCK_MODULES {
        s.push_str(&format!("LoadModule {m}_module {MODULE_DIR}/mod_{m}.so\n"));
    }
    if !so.as_os_str().is_empty() {
        s.push_str(&format!("LoadModule fastcgi_module {}\n", q(p(so))));
    }
    s.push_str(&format!("Listen 127.0.0.1:1\n{include}\n"));
    s
}

fn syntax_ok(ctx: &Ctx, name: &str, text: &str) -> Result<(), String> {
    let t = ctx.config_test(name, text)?;
    ensure(t.ok && t.output.contains("Syntax OK"), || {
        format!(
            "{name}: apache2 -t failed (exit {:?}): {}",
            t.code,
            t.output.trim().replace('\n', " / ")
        )
    })
}

/// Every Apache configuration in conf-examples/ passes `apache2 -t` with the module, and so
/// does each commented `FastCgiExternalServer` example of debian/fastcgi.conf once
/// uncommented (one at a time: they define the same virtual path differently).
fn conf_examples_pass_config_test(ctx: &Ctx) -> Result<(), String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf-examples");
    let so = ctx.env.module_so.clone();
    let mut errs = Vec::new();
    let mut checked = 0;
    for f in [
        "seed1-flush-host.conf",
        "seed2-multiuser.conf",
        "seed3-virtual-site.conf",
        "authorizer.conf",
        "git-http-backend.conf",
        "debian/fastcgi.conf",
    ] {
        let name = format!("example-{}", f.replace('/', "-"));
        let inc = format!("Include {}", q(p(&dir.join(f))));
        checked += 1;
        if let Err(e) = syntax_ok(ctx, &name, &include_config(ctx, &name, &so, &inc)) {
            errs.push(e);
        }
    }
    let deb = util::read_to_string_lossy(&dir.join("debian/fastcgi.conf"));
    let lines: Vec<&str> = deb.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let Some(directive) = l.trim_start().strip_prefix("#FastCgiExternalServer ") else {
            continue;
        };
        let mut variant = lines.clone();
        let uncommented = format!("FastCgiExternalServer {directive}");
        variant[i] = &uncommented;
        let name = format!("example-debian-fastcgi-line{}", i + 1);
        checked += 1;
        if let Err(e) = syntax_ok(
            ctx,
            &name,
            &include_config(ctx, &name, &so, &variant.join("\n")),
        ) {
            errs.push(format!("line {}: {uncommented}: {e}", i + 1));
        }
    }
    ensure(checked >= 8, || {
        format!(
            "only {checked} configurations found to check in {}",
            dir.display()
        )
    })?;
    ensure(errs.is_empty(), || errs.join("\n    "))
}

/// `make install DESTDIR=...` (apxs -i plus Debian's mods-available files) puts the module
/// where the installed `fastcgi.load` loads it from, and the installed files pass `apache2
/// -t`; `make uninstall DESTDIR=...` removes them again.
fn make_install_destdir(ctx: &Ctx) -> Result<(), String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dest = ctx.tmp.join("destdir");
    util::mkdir_p(&dest)?;
    // (apxs installs a file under its own name: the harness' module may be libmod_fastcgi.so)
    let so = &ctx.tmp.join("install-src/mod_fastcgi.so");
    util::mkdir_p(&ctx.tmp.join("install-src"))?;
    std::fs::copy(&ctx.env.module_so, so).map_err(|e| format!("copy the module: {e}"))?;
    let make = |target: &str| -> Result<Vec<u8>, String> {
        util::run(
            std::process::Command::new("make")
                .arg("-s")
                .arg("-C")
                .arg(repo)
                .arg(target)
                .arg(format!("DESTDIR={}", p(&dest)))
                .arg(format!("SO={}", p(so))),
            &format!("make {target} DESTDIR={}", p(&dest)),
        )
    };
    make("install")?;
    let libexec = String::from_utf8_lossy(&util::run(
        std::process::Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(repo)
            .arg("--eval=print-libexecdir: ; @echo $(LIBEXECDIR)")
            .arg("print-libexecdir"),
        "make print-libexecdir",
    )?)
    .trim()
    .to_string();
    let installed = dest
        .join(libexec.trim_start_matches('/'))
        .join("mod_fastcgi.so");
    let load = dest.join("etc/apache2/mods-available/fastcgi.load");
    let conf = dest.join("etc/apache2/mods-available/fastcgi.conf");
    for f in [&installed, &load, &conf] {
        ensure(f.is_file(), || {
            format!("make install did not create {}", f.display())
        })?;
    }
    ensure(
        std::fs::read(&installed).ok() == std::fs::read(so).ok(),
        || format!("{} differs from {}", installed.display(), so.display()),
    )?;
    let load_text = util::read_to_string_lossy(&load);
    let want = format!("LoadModule fastcgi_module {libexec}/mod_fastcgi.so");
    ensure(load_text.lines().any(|l| l.trim() == want), || {
        format!("fastcgi.load has no line {want:?}: {load_text}")
    })?;
    // the installed files as a2enmod would include them, with the module from DESTDIR
    let body = format!(
        "{}\nInclude {}",
        load_text.replace(
            &format!("{libexec}/"),
            &format!("{}/", p(&dest.join(libexec.trim_start_matches('/'))))
        ),
        q(p(&conf))
    );
    syntax_ok(
        ctx,
        "installed-load-conf",
        &include_config(ctx, "installed-load-conf", Path::new(""), &body),
    )?;
    make("uninstall")?;
    for f in [&installed, &load, &conf] {
        ensure(!f.exists(), || {
            format!("make uninstall left {}", f.display())
        })?;
    }
    Ok(())
}

/// Relative `-socket` paths are taken below `FastCgiIpcDir` when it is set, else below
/// `<DefaultRuntimeDir>/fastcgi`: one dedicated Apache for each case, the socket there a
/// symlink to php-fpm's www-data pool, a PHP page served through it.
fn ipc_dir_relative_sockets(ctx: &Ctx) -> Result<(), String> {
    let fpm_sock = ctx.tmp.join("run/www-data.sock");
    let docroot = PathBuf::from(ctx.val("seed1_docroot"));
    let vdir = ctx.tmp.join("ipc-vpaths"); // never created
    for (name, set) in [("ipcdir_set", true), ("ipcdir_default", false)] {
        let root = ctx.tmp.join(format!("apache-{name}"));
        let mut conf = ApacheConf::new(&root, &ctx.env.mpm, &ctx.env.module_so);
        let sockdir = if set {
            ctx.tmp.join("ipc-dir")
        } else {
            conf.run_dir.join("apache/fastcgi")
        };
        util::mkdir_p(&sockdir)?;
        symlink(&fpm_sock, sockdir.join("php.sock")).map_err(|e| format!("symlink: {e}"))?;
        if set {
            conf.global
                .push(format!("FastCgiIpcDir {}", q(p(&sockdir))));
        }
        let vpath = vdir.join(format!("{name}.fcgi"));
        let body = format!(
            "AddType application/x-httpd-fastphp5 .php\n\
             Action application/x-httpd-fastphp5 /php5.fcgi\n\
             Alias /php5.fcgi {vp}\n\
             FastCgiExternalServer {vp} -socket php.sock\n\
             <Directory {d}>\n    Require all granted\n</Directory>\n",
            vp = q(p(&vpath)),
            d = q(format!("{}/", p(&vdir))),
        );
        let port = util::free_ports(1)?[0];
        let v = inst::vhost(&conf, name, port, &docroot, &body);
        let host = v.server_name.clone();
        conf.add_vhost(v);
        let mut apache = Apache::start(ctx, name, conf, &ctx.env.mpm, 1, 2)?;
        let r = fetch(port, Request::get("/index.php").host(&host).close());
        apache.stop();
        let r = r.map_err(|e| format!("{name}: {e}"))?;
        expect_status(&r, 200).map_err(|e| format!("{name}: {e}"))?;
        expect_vars(&r, &[("MARKER", "mfcgi-info")]).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// concurrency

/// One request of the load mix; returns whether the keep-alive connection had to be re-opened.
fn one_load_request(conn: &mut Conn, port: u16, n: usize) -> Result<bool, String> {
    let host = "seed1.test";
    match n % 10 {
        7 | 8 => {
            let size = (n * 7919) % 40000;
            let body = Prng::new(n as u64).bytes(size);
            let md5 = util::md5_hex(&body)?;
            let req = Request::post("/post.php", body)
                .host(host)
                .header("Content-Type", "application/octet-stream");
            let (r, retried) = roundtrip_ka(conn, port, &req).map_err(|e| e.to_string())?;
            expect_status(&r, 200)?;
            expect_vars(&r, &[("LEN", &size.to_string()), ("MD5", &md5)])?;
            Ok(retried)
        }
        9 => {
            let req = Request::get("/big.php?mb=1").host(host);
            let (r, retried) = roundtrip_ka(conn, port, &req).map_err(|e| e.to_string())?;
            expect_status(&r, 200)?;
            let mut v = BigVerifier::new();
            v.feed(&r.body);
            ensure(
                r.complete && r.body.len() == 1 << 20 && v.mismatch.is_none(),
                || {
                    format!(
                        "big.php?mb=1 body wrong: {} bytes, complete={}, mismatch at {:?}",
                        r.body.len(),
                        r.complete,
                        v.mismatch
                    )
                },
            )?;
            Ok(retried)
        }
        _ => {
            let req = Request::get(&format!("/index.php?a={n}&n={n}")).host(host);
            let (r, retried) = roundtrip_ka(conn, port, &req).map_err(|e| e.to_string())?;
            expect_status(&r, 200)?;
            expect_vars(
                &r,
                &[
                    ("MARKER", "mfcgi-info"),
                    ("QUERY_STRING", &format!("a={n}&n={n}")),
                    ("GET_A_HEX", &util::hex(n.to_string().as_bytes())),
                    ("SCRIPT_NAME", "/index.php"),
                ],
            )?;
            Ok(retried)
        }
    }
}

fn load_500_requests_32_concurrent(ctx: &Ctx) -> Result<(), String> {
    const TOTAL: usize = 500;
    const THREADS: usize = 32;
    let main_log = ctx.error_log();
    let vhost_log = ctx.vhost("seed1").error_log.clone();
    let (main_off, vhost_off) = (util::file_len(&main_log), util::file_len(&vhost_log));
    let port = ctx.vhost("seed1").port;
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (next, done, errors, retries) =
                (next.clone(), done.clone(), errors.clone(), retries.clone());
            thread::spawn(move || {
                let mut conn: Option<Conn> = None;
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= TOTAL {
                        break;
                    }
                    if conn.as_ref().is_none_or(|c| c.closed) {
                        match Conn::connect(port) {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                errors.lock().unwrap().push(format!("request {n}: {e}"));
                                continue;
                            }
                        }
                    }
                    let c = conn.as_mut().unwrap();
                    match one_load_request(c, port, n) {
                        Ok(retried) => {
                            done.fetch_add(1, Ordering::SeqCst);
                            if retried {
                                retries.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(e) => {
                            errors.lock().unwrap().push(format!("request {n}: {e}"));
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "load thread panicked".to_string())?;
    }
    let elapsed = t0.elapsed();
    let errors = errors.lock().unwrap();
    if !errors.is_empty() {
        let shown: Vec<&String> = errors.iter().take(5).collect();
        return Err(format!(
            "{} of {TOTAL} requests failed, e.g.: {shown:?}",
            errors.len()
        ));
    }
    let ok = done.load(Ordering::SeqCst);
    ensure(ok == TOTAL, || {
        format!("only {ok} of {TOTAL} requests completed")
    })?;
    thread::sleep(Duration::from_millis(200));
    let mut bad = bad_log_lines(&main_log, main_off);
    bad.extend(bad_log_lines(&vhost_log, vhost_off));
    ensure(bad.is_empty(), || {
        format!("error log lines during the load run: {bad:?}")
    })?;
    if std::env::var_os("MFCGI_VERBOSE").is_some() {
        println!(
            "    load: {TOTAL} requests in {:.2}s ({} keep-alive reconnects after idle close)",
            elapsed.as_secs_f64(),
            retries.load(Ordering::SeqCst)
        );
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// final

/// No module/core errors or crashed children in the main log or any vhost log (except vhosts
/// whose id starts with `err_`, which provoke errors on purpose).
fn error_logs_clean(ctx: &Ctx) -> Result<(), String> {
    let mut logs: Vec<PathBuf> = vec![ctx.error_log()];
    logs.extend(
        ctx.apache_conf
            .vhosts
            .iter()
            .filter(|v| !v.id.starts_with("err_"))
            .map(|v| v.error_log.clone()),
    );
    logs.sort();
    logs.dedup();
    let mut bad = Vec::new();
    for l in &logs {
        for line in bad_log_lines(l, 0) {
            bad.push(format!("{}: {line}", file_name(l)));
        }
    }
    // php-fpm must not have lost workers either
    let fpm_log = util::read_to_string_lossy(&ctx.fpm_conf.log);
    for line in fpm_log.lines() {
        if line.contains("exited on signal") || line.contains("SIGSEGV") {
            bad.push(format!("php-fpm.log: {line}"));
        }
    }
    ensure(bad.is_empty(), || {
        format!("unexpected log lines:\n    {}", bad.join("\n    "))
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------------------
// the code that never runs stays out of the processes (build.rs, cold_text_layout)

/// Address and size of the section `name` of an ELF64 little-endian file.
fn elf_section(file: &Path, name: &str) -> Result<Option<(u64, u64)>, String> {
    let b = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let bad = || format!("{}: not an ELF64 little-endian file", file.display());
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|x| u16::from_le_bytes([x[0], x[1]]) as usize)
    };
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|x| u32::from_le_bytes(x.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|x| u64::from_le_bytes(x.try_into().unwrap()))
    };
    if b.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err(bad());
    }
    let shoff = u64_at(0x28).ok_or_else(bad)? as usize;
    let (shentsize, shnum, shstrndx) = (
        u16_at(0x3a).ok_or_else(bad)?,
        u16_at(0x3c).ok_or_else(bad)?,
        u16_at(0x3e).ok_or_else(bad)?,
    );
    let strtab = u64_at(shoff + shstrndx * shentsize + 0x18).ok_or_else(bad)? as usize;
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        let at = strtab + u32_at(sh).ok_or_else(bad)? as usize;
        let end = at
            + b.get(at..)
                .ok_or_else(bad)?
                .iter()
                .position(|&c| c == 0)
                .ok_or_else(bad)?;
        if &b[at..end] == name.as_bytes() {
            return Ok(Some((
                u64_at(sh + 0x10).ok_or_else(bad)?,
                u64_at(sh + 0x20).ok_or_else(bad)?,
            )));
        }
    }
    Ok(None)
}

/// Where the module is loaded in process `pid`: the start of its mapping at file offset 0.
fn load_base(pid: u32, so: &Path) -> Result<u64, String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("pid {pid}: {e}"))?;
    let want = so.to_string_lossy();
    maps.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6 && f[5] == want && u64::from_str_radix(f[2], 16) == Ok(0))
                .then(|| u64::from_str_radix(f[0].split('-').next()?, 16).ok())
                .flatten()
        })
        .ok_or_else(|| format!("pid {pid}: {want} is not mapped"))
}

/// How many of the pages `first..end` (page numbers) are present in `pid`'s page table.
fn pages_present(pid: u32, first: u64, end: u64) -> Result<usize, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(format!("/proc/{pid}/pagemap"))
        .map_err(|e| format!("pid {pid}: pagemap: {e}"))?;
    f.seek(SeekFrom::Start(first * 8))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; ((end - first) * 8) as usize];
    f.read_exact(&mut buf)
        .map_err(|e| format!("pid {pid}: pagemap: {e}"))?;
    Ok(buf
        .chunks_exact(8)
        .filter(|e| u64::from_le_bytes((*e).try_into().unwrap()) >> 63 == 1)
        .count())
}

/// Where the module's function whose mangled name contains `part` starts (`nm`, from binutils,
/// which apache2-dev's build tools bring).
fn symbol_address(so: &Path, part: &str) -> Result<u64, String> {
    let out = std::process::Command::new("nm")
        .arg(so)
        .output()
        .map_err(|e| format!("nm: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(part) && (l.contains(" t ") || l.contains(" T ")))
        .ok_or_else(|| format!("nm {}: no symbol containing {part}", so.display()))?;
    let hex = line.split_whitespace().next().unwrap_or("");
    u64::from_str_radix(hex, 16).map_err(|e| format!("nm line {line:?}: {e}"))
}

/// Rust's backtrace symbolizer, linked into the module through the default panic hook that
/// the module replaces, is about a third of its code and never runs; the module's `#[cold]`
/// functions (the configuration parser, the directive handlers, post_config) run in Apache's
/// parent only: build.rs links both as a section of their own (`.text.cold`) that ends on a
/// 64 KiB boundary, so that the kernel's 64 KiB fault-around never maps it into a child. After
/// the load run (and whatever tests ran before it in the same instance), no page of it (but the
/// first, which it shares with `.init`) is mapped in any child; before the layout, 111 to 127 of
/// the module's 127 code pages were, and a `#[cold]` function that a child runs would show here.
fn cold_code_never_mapped(ctx: &Ctx) -> Result<(), String> {
    let so = &ctx.env.module_so;
    let (addr, size) = elf_section(so, ".text.cold")?.ok_or_else(|| {
        format!(
            "{}: no .text.cold section: linked without build.rs's cold-code layout (see its cargo warning)",
            so.display()
        )
    })?;
    ensure(size >= 64 * 1024, || {
        format!(".text.cold holds only {size} bytes")
    })?;
    for sym in ["21parse_external_server", "11post_config"] {
        let at = symbol_address(so, sym)?;
        ensure((addr..addr + size).contains(&at), || {
            format!(
                "{sym} at {at:#x} is not in .text.cold ({addr:#x}+{size:#x}): #[cold] no longer moves it"
            )
        })?;
    }
    if ctx.env.valgrind {
        // valgrind runs the code from its own translations: what the kernel maps says nothing
        return Ok(());
    }
    let port = ctx.vhost("seed1").port;
    for i in 0..20 {
        let r = fetch(
            port,
            Request::get(&format!("/index.php?cold={i}")).host("seed1.test"),
        )
        .map_err(|e| e.to_string())?;
        expect_status(&r, 200)?;
    }
    let children = ctx.apache_children();
    ensure(!children.is_empty(), || "no Apache child".into())?;
    for pid in children {
        let base = load_base(pid, so)?;
        let (first, end) = ((base + addr) / 4096 + 1, (base + addr + size) / 4096);
        let present = pages_present(pid, first, end)?;
        ensure(present == 0, || {
            format!(
                "child {pid} maps {present} of the {} pages of the module's never-run code",
                end - first
            )
        })?;
    }
    Ok(())
}
