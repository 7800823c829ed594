//! phpMyAdmin through the module: Debian's `phpmyadmin` package (5.2), copied into the temp dir
//! with a configuration of its own, on the suites' MariaDB server (`support/mariadb.rs`),
//! served by php-fpm behind the mod_fastcgi recipe (AddType + Action + Alias +
//! FastCgiExternalServer on a virtual path whose directory does not exist), pool on.
//!
//! What an operator checks after moving phpMyAdmin: the cookie login (a session cookie, the
//! form's token, encrypted credential cookies, a redirect built from the script's own URL),
//! a wrong password refused, an SQL file uploaded as
//! multipart/form-data and imported (rows and their UTF-8 text intact in the database), an
//! export downloaded as an attachment, plain and gzip-compressed (binary bytes through the
//! module unchanged), and a log with nothing but the application's own stderr.
//!
//! The database and the copy are made by the first test that needs them; every test can run
//! alone (`-- phpmyadmin_export`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::apps::{Browser, input_value, only_app_stderr, recipe_vhost};
use crate::check::{ensure, expect_status, p};
use crate::fpm::Pool;
use crate::harness::{Builder, Ctx, Suite, test};
use crate::http::Response;
use crate::mariadb;
use crate::procs::Endpoint;
use crate::util::{self, run};

pub const SUITE: Suite = Suite {
    name: "phpmyadmin",
    setup,
    tests: &[
        test("phpmyadmin_cookie_login_and_wrong_password", login_test),
        test("phpmyadmin_import_sql_upload", import),
        test("phpmyadmin_export_download_plain_and_gzip", export),
        test("phpmyadmin_log_only_application_stderr", logs),
    ],
};

/// Debian's layout.
const PMA_CODE: &str = "/usr/share/phpmyadmin";

/// `err_`: the module logs the application's stderr at error level (FCGI040); the last test
/// checks this vhost's log itself.
const VHOST: &str = "err_apps_pma";
const HOST: &str = "pma.test";
const USER: &str = "mfcgi";
const PASSWORD: &str = "Mfcgi-Pma-5521!";
const DB: &str = "mfcgi_pma";
/// Rows of the imported table.
const ROWS: usize = 400;

fn setup(b: &mut Builder) -> Result<(), String> {
    let root = b.tmp.join("apps/phpmyadmin");
    let www = root.join("www");
    util::mkdir_p(&www)?;
    let sock = b.tmp.join("run/apps-pma.sock");
    let mut pool = Pool::new("pma", "www-data", "www-data", Endpoint::Unix(sock.clone()));
    pool.max_children = 4;
    b.pool(pool);
    // the virtual path's directory is never created
    let vpath = b.tmp.join("apps/pma-fastcgi/php.fcgi");
    let body = recipe_vhost("index.php", &www, &vpath, &sock);
    let port = b.port()?;
    b.vhost(VHOST, port, HOST, &www, &body);
    b.set("pma_root", p(&root));
    Ok(())
}

static SITE: OnceLock<Result<(), String>> = OnceLock::new();

fn site(ctx: &Ctx) -> Result<(), String> {
    SITE.get_or_init(|| install(ctx))
        .clone()
        .map_err(|e| format!("phpMyAdmin setup: {e}"))
}

/// Copies phpMyAdmin, points it at a configuration and a temp dir of its own, and makes its
/// database user.
fn install(ctx: &Ctx) -> Result<(), String> {
    let f = format!("{PMA_CODE}/index.php");
    if !Path::new(&f).exists() {
        return Err(format!(
            "{f} is missing: `make deps-test` installs Debian's phpmyadmin and mariadb-server"
        ));
    }
    let root = PathBuf::from(ctx.val("pma_root"));
    let www = root.join("www");
    // -L: the package links into /etc, /var/lib and other packages' directories
    run(
        Command::new("cp")
            .arg("-rL")
            .arg(format!("{PMA_CODE}/."))
            .arg(&www),
        "copy phpMyAdmin",
    )?;
    let tmp = root.join("tmp");
    util::mkdir_p(&tmp)?;
    run(
        Command::new("chown").arg("www-data:www-data").arg(&tmp),
        "chown phpMyAdmin's temp dir",
    )?;
    // Debian's build reads /etc/phpmyadmin/config.inc.php and writes /var/lib/phpmyadmin/tmp
    let vendor = www.join("libraries/vendor_config.php");
    let text = std::fs::read_to_string(&vendor).map_err(|e| format!("{}: {e}", p(&vendor)))?;
    let conf = www.join("config.mfcgi.inc.php");
    let patched = text
        .replace("/etc/phpmyadmin/config.inc.php", &p(&conf))
        .replace("/var/lib/phpmyadmin/tmp/", &format!("{}/", p(&tmp)));
    ensure(patched != text, || {
        format!("{}: no configuration path to replace", p(&vendor))
    })?;
    util::write_file(&vendor, patched)?;

    let sock = mariadb::socket(ctx)?;
    mariadb::sql(
        ctx,
        &format!(
            "CREATE DATABASE {DB} CHARACTER SET utf8mb4; \
             CREATE USER '{USER}'@'localhost' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL ON {DB}.* TO '{USER}'@'localhost';"
        ),
    )?;
    util::write_file(
        &conf,
        format!(
            "<?php\n\
             $cfg['blowfish_secret'] = 'mfcgi-0123456789abcdefghijklmnop';\n\
             $cfg['Servers'][1]['auth_type'] = 'cookie';\n\
             $cfg['Servers'][1]['host'] = 'localhost';\n\
             $cfg['Servers'][1]['connect_type'] = 'socket';\n\
             $cfg['Servers'][1]['socket'] = '{sock}';\n\
             $cfg['Servers'][1]['AllowNoPassword'] = false;\n\
             $cfg['TempDir'] = '{tmp}';\n\
             $cfg['VersionCheck'] = false;\n\
             $cfg['SendErrorReports'] = 'never';\n",
            sock = p(sock),
            tmp = p(&tmp)
        ),
    )?;
    Ok(())
}

/// A browser logged in through the cookie form.
fn login(ctx: &Ctx) -> Result<(Browser<'_>, String), String> {
    site(ctx)?;
    let mut br = Browser::new(ctx, VHOST);
    let (r, token) = submit_login(&mut br, PASSWORD)?;
    // a good login answers with a redirect to the page the application built from the
    // script's own URL (SCRIPT_NAME through the Action recipe is /index.php, not the virtual
    // path's /php.fcgi), and the encrypted credentials in cookies
    ensure(r.status == 302, || {
        format!("login POST: want 302, got {}", r.summary())
    })?;
    let loc = r.header("Location").unwrap_or("").to_string();
    let path = loc.trim_start_matches(&format!("http://{HOST}"));
    ensure(path.starts_with("/index.php?route=/"), || {
        format!("login redirect to {loc:?}")
    })?;
    ensure(
        br.cookies.contains_key("pmaAuth-1") && br.cookies.contains_key("pmaUser-1"),
        || format!("no credential cookies after login: {:?}", br.cookies.keys()),
    )?;
    let home = br.get(path)?;
    expect_status(&home, 200)?;
    let text = home.text();
    ensure(text.contains(DB) && text.contains("logout"), || {
        format!(
            "the page after login lists no database {DB} or no logout: {}",
            home.summary()
        )
    })?;
    // the token of a logged-in page (forms and URLs carry it)
    let token = input_value(&text, "token").unwrap_or(token);
    Ok((br, token))
}

/// Fetches the login form and posts it: (response, the form's token).
fn submit_login(br: &mut Browser<'_>, password: &str) -> Result<(Response, String), String> {
    let form = br.get("/index.php")?;
    expect_status(&form, 200)?;
    let text = form.text();
    let token = input_value(&text, "token")
        .ok_or_else(|| format!("the login form has no token: {}", form.summary()))?;
    let set_session = input_value(&text, "set_session").unwrap_or_default();
    ensure(br.cookies.contains_key("phpMyAdmin"), || {
        format!("no session cookie with the login form: {:?}", form.headers)
    })?;
    let r = br.post_form(
        "/index.php?route=/",
        &[
            ("route", "/"),
            ("token", &token),
            ("set_session", &set_session),
            ("pma_username", USER),
            ("pma_password", password),
            ("server", "1"),
        ],
    )?;
    Ok((r, token))
}

fn login_test(ctx: &Ctx) -> Result<(), String> {
    login(ctx)?;
    // a wrong password: the form again, with MariaDB's refusal, and no credential cookie
    let mut br = Browser::new(ctx, VHOST);
    let (r, _) = submit_login(&mut br, "wrong-password")?;
    let r = if r.status == 302 {
        let loc = r.header("Location").unwrap_or("").to_string();
        br.get(loc.trim_start_matches(&format!("http://{HOST}")))?
    } else {
        r
    };
    expect_status(&r, 200)?;
    ensure(
        r.text().contains("Access denied") || r.text().contains("1045"),
        || format!("a wrong password was not refused: {}", r.summary()),
    )?;
    ensure(!br.cookies.contains_key("pmaAuth-1"), || {
        format!("credential cookie after a wrong password: {:?}", br.cookies)
    })
}

/// The text of row `i`: UTF-8 of several lengths, markup and quotes that the SQL file and the
/// export must escape.
fn row_text(i: usize) -> String {
    format!(
        "note {i}: Grüße, 日本語, <b>\"quoted\"</b> & 'single' {}",
        "x".repeat(i % 97)
    )
}

/// An SQL file that creates and fills the table.
fn sql_file() -> String {
    let mut s = String::from(
        "CREATE TABLE notes (id INT PRIMARY KEY, body TEXT) DEFAULT CHARSET=utf8mb4;\n",
    );
    for chunk in (0..ROWS).collect::<Vec<_>>().chunks(50) {
        let values: Vec<String> = chunk
            .iter()
            .map(|&i| format!("({i}, '{}')", row_text(i).replace('\'', "''")))
            .collect();
        s.push_str(&format!(
            "INSERT INTO notes (id, body) VALUES {};\n",
            values.join(", ")
        ));
    }
    s
}

/// Imports the table through phpMyAdmin's import form (once; later callers find it there).
fn imported(ctx: &Ctx) -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| import_upload(ctx)).clone()
}

fn import_upload(ctx: &Ctx) -> Result<(), String> {
    let (mut br, token) = login(ctx)?;
    let file = sql_file();
    let r = br.post_multipart(
        "/index.php?route=/import",
        &[
            ("token", token.as_str()),
            ("db", DB),
            ("import_type", "database"),
            ("format", "sql"),
            ("charset_of_file", "utf-8"),
            ("allow_interrupt", "yes"),
            ("skip_queries", "0"),
            ("sql_compatibility", "NONE"),
            ("sql_no_auto_value_on_zero", "something"),
        ],
        (
            "import_file",
            "notes.sql",
            "application/sql",
            file.as_bytes(),
        ),
    )?;
    expect_status(&r, 200)?;
    ensure(
        r.text().contains("Import has been successfully finished"),
        || format!("the import did not finish: {}", r.summary()),
    )?;
    Ok(())
}

fn import(ctx: &Ctx) -> Result<(), String> {
    imported(ctx)?;
    // what MariaDB holds now: every row, the text byte for byte
    let count = mariadb::query(ctx, &format!("SELECT COUNT(*) FROM {DB}.notes"))?;
    ensure(count.trim() == ROWS.to_string(), || {
        format!("{DB}.notes has {} rows, the file {ROWS}", count.trim())
    })?;
    for i in [0, 7, ROWS - 1] {
        let got = mariadb::query(
            ctx,
            &format!("SELECT HEX(body) FROM {DB}.notes WHERE id = {i}"),
        )?;
        let want: String = row_text(i).bytes().map(|b| format!("{b:02X}")).collect();
        ensure(got.trim() == want, || {
            format!("row {i}: stored {:?}, sent {:?}", got.trim(), row_text(i))
        })?;
    }
    Ok(())
}

/// Posts the export form for the table: the response.
fn export_as(br: &mut Browser<'_>, token: &str, compression: &str) -> Result<Response, String> {
    br.post_form(
        "/index.php?route=/export",
        &[
            ("token", token),
            ("db", DB),
            ("table", "notes"),
            ("export_type", "table"),
            ("export_method", "quick"),
            ("what", "sql"),
            ("output_format", "sendit"),
            ("filename_template", "@TABLE@"),
            ("remember_template", ""),
            ("charset", "utf-8"),
            ("compression", compression),
            ("maxsize", ""),
            ("sql_include_comments", "something"),
            ("sql_header_comment", ""),
            ("sql_compatibility", "NONE"),
            ("sql_backquotes", "something"),
            ("sql_structure_or_data", "structure_and_data"),
            ("sql_create_table", "something"),
            ("sql_auto_increment", "something"),
            ("sql_create_view", "something"),
            ("sql_type", "INSERT"),
            ("sql_insert_syntax", "both"),
            ("sql_max_query_size", "50000"),
            ("sql_hex_for_binary", "something"),
            ("sql_utc_time", "something"),
        ],
    )
}

/// `gzip -dc` of `data` (written to a file under the temp dir first).
fn gunzip(ctx: &Ctx, data: &[u8]) -> Result<Vec<u8>, String> {
    let f = ctx.tmp.join("apps/phpmyadmin/export.sql.gz");
    util::write_file(&f, data)?;
    run(Command::new("gzip").arg("-dc").arg(&f), "gzip -dc")
}

/// Checks an exported SQL dump: the table's definition and every row's text, escaped.
fn check_dump(sql: &str, what: &str) -> Result<(), String> {
    ensure(sql.contains("CREATE TABLE `notes`"), || {
        format!("{what}: no CREATE TABLE in {} bytes", sql.len())
    })?;
    ensure(sql.contains("INSERT INTO `notes`"), || {
        format!("{what}: no INSERT in {} bytes", sql.len())
    })?;
    for i in [0, 7, ROWS - 1] {
        let escaped = row_text(i).replace('\'', "\\'").replace('"', "\\\"");
        ensure(sql.contains(&format!("({i}, '{escaped}')")), || {
            format!("{what}: row {i} not found as ({i}, '{escaped}')")
        })?;
    }
    Ok(())
}

fn export(ctx: &Ctx) -> Result<(), String> {
    imported(ctx)?;
    let (mut br, token) = login(ctx)?;
    let plain = export_as(&mut br, &token, "none")?;
    expect_status(&plain, 200)?;
    let cd = plain
        .header("Content-Disposition")
        .unwrap_or("")
        .to_string();
    ensure(
        cd.contains("attachment") && cd.contains("notes.sql"),
        || {
            format!(
                "plain export: Content-Disposition {cd:?}: {}",
                plain.summary()
            )
        },
    )?;
    let text = String::from_utf8(plain.body.clone())
        .map_err(|e| format!("plain export is not UTF-8: {e}"))?;
    check_dump(&text, "plain export")?;

    let gz = export_as(&mut br, &token, "gzip")?;
    expect_status(&gz, 200)?;
    let cd = gz.header("Content-Disposition").unwrap_or("").to_string();
    ensure(cd.contains("notes.sql.gz"), || {
        format!("gzip export: Content-Disposition {cd:?}: {}", gz.summary())
    })?;
    ensure(gz.body.starts_with(&[0x1f, 0x8b]), || {
        format!(
            "gzip export does not start with gzip's magic: {:?}",
            &gz.body[..gz.body.len().min(16)]
        )
    })?;
    let unpacked = gunzip(ctx, &gz.body)?;
    let text = String::from_utf8(unpacked).map_err(|e| format!("gunzipped export: {e}"))?;
    check_dump(&text, "gzip export")
}

fn logs(ctx: &Ctx) -> Result<(), String> {
    imported(ctx)?;
    only_app_stderr(ctx, &[VHOST])
}
