//! mod_fastcgi's authorizer directives against php-fpm: `FastCgiAuthenticator`,
//! `FastCgiAuthorizer` and `FastCgiAccessChecker` naming a `FastCgiExternalServer`, with and
//! without `-compat` and `...Authoritative Off`.
//!
//! The authorizer is a php-fpm pool of its own whose `auto_prepend_file` answers the AUTHORIZER
//! role (php-fpm runs SCRIPT_FILENAME, which mod_fastcgi sets to the protected file) and logs
//! what it was sent, so the tests see both sides: what the application got and what the client
//! and the protected page got.

use std::path::PathBuf;

use crate::check::{ABSENT, ensure, expect_status, expect_vars, p};
use crate::fpm::Pool;
use crate::harness::{Builder, Ctx, Suite, test};
use crate::http::Request;
use crate::procs::Endpoint;
use crate::util::{self, q};

pub const SUITE: Suite = Suite {
    name: "auth",
    setup,
    tests: &[
        test(
            "auth_authenticator_and_authorizer",
            authenticator_and_authorizer,
        ),
        test("auth_access_checker_compat", access_checker_compat),
        test(
            "auth_not_authoritative_and_unreachable",
            not_authoritative_and_unreachable,
        ),
        test("auth_config_errors", config_errors),
    ],
};

const ID: &str = "err_auth"; // denials are logged at error level

/// The authorizer pool's auto_prepend_file: answers the three roles, logs what it was sent.
const AUTHORIZER_PHP: &str = r#"<?php
if (($_SERVER['FCGI_ROLE'] ?? '') === 'AUTHORIZER') {
    $role = $_SERVER['FCGI_APACHE_ROLE'] ?? '-';
    $seen = [];
    foreach (['FCGI_APACHE_ROLE', 'REMOTE_USER', 'REMOTE_PASSWD', 'PATH_TRANSLATED', 'SCRIPT_NAME',
              'PATH_INFO', 'CONTENT_LENGTH', 'REQUEST_URI', 'SCRIPT_FILENAME'] as $k) {
        $seen[] = $k . '=' . ($_SERVER[$k] ?? '<absent>');
    }
    file_put_contents('@LOG@', implode(' ', $seen) . "\n", FILE_APPEND | LOCK_EX);
    $user = $_SERVER['REMOTE_USER'] ?? '';
    switch ($role) {
    case 'AUTHENTICATOR':
        if (in_array($user, ['alice', 'bob'], true)
            && ($_SERVER['REMOTE_PASSWD'] ?? '') === 'secret-' . $user) {
            header('Variable-AUTH_GROUP: ' . ($user === 'alice' ? 'admins' : 'staff'));
            header('X-Authn-Extra: plain');
        } else {
            http_response_code(401);
            header('X-Auth-Why: wrong password');
        }
        break;
    case 'AUTHORIZER':
        if ($user !== 'alice') {
            http_response_code(403);
            header('X-Auth-Why: not an admin');
        }
        break;
    case 'ACCESS_CHECKER':
        if (isset($_SERVER['HTTP_X_BLOCK'])) {
            http_response_code(403);
            header('X-Denied-By: checker');
        } elseif (isset($_SERVER['HTTP_X_REDIRECT'])) {
            header('Location: /elsewhere');
        } else {
            header('Variable-CHECKED: yes');
            header('X-Other: only-without-compat');
        }
        break;
    }
    exit;
}
"#;

/// The protected page (run by the responder pool after the Action redirect).
const PAGE_PHP: &str = r#"<?php
header('Content-Type: text/plain');
echo "MARKER=auth-page\n";
foreach (['FCGI_ROLE', 'REMOTE_USER', 'REDIRECT_REMOTE_USER', 'AUTH_TYPE', 'REDIRECT_AUTH_GROUP', 'AUTH_GROUP', 'REDIRECT_X_Authn_Extra',
          'REDIRECT_CHECKED', 'REDIRECT_X_Other', 'REMOTE_PASSWD', 'REDIRECT_REMOTE_PASSWD',
          'FCGI_APACHE_ROLE', 'REDIRECT_FCGI_APACHE_ROLE', 'CONTENT_LENGTH'] as $k) {
    if (isset($_SERVER[$k])) { echo $k, '=', $_SERVER[$k], "\n"; }
}
echo 'BODY_LEN=', strlen(file_get_contents('php://input')), "\n";
"#;

fn setup(b: &mut Builder) -> Result<(), String> {
    let tmp = b.tmp.clone();
    let run = tmp.join("run");
    let docroot = b.docroot("auth")?;
    for d in ["basic", "plain", "checked", "lenient", "down"] {
        util::write_file(&docroot.join(d).join("page.php"), PAGE_PHP)?;
        util::write_file(&docroot.join(d).join("file.txt"), format!("static {d}\n"))?;
    }
    let logdir = tmp.join("auth-log");
    util::mkdir_p(&logdir)?;
    util::chmod(&logdir, 0o777)?;
    let prepend = tmp.join("auth-app/authorizer.php");
    util::write_file(
        &prepend,
        AUTHORIZER_PHP.replace("@LOG@", &p(&logdir.join("seen.log"))),
    )?;
    b.set("auth_seen_log", p(&logdir.join("seen.log")));

    let resp = run.join("auth-resp.sock");
    let mut pool = Pool::new(
        "authresp",
        "www-data",
        "www-data",
        Endpoint::Unix(resp.clone()),
    );
    pool.max_children = 2;
    b.pool(pool);
    let authz = run.join("auth-app.sock");
    let mut pool = Pool::new(
        "authapp",
        "www-data",
        "www-data",
        Endpoint::Unix(authz.clone()),
    );
    pool.max_children = 2;
    pool.extra.push(format!(
        "php_admin_value[auto_prepend_file] = {}",
        p(&prepend)
    ));
    // The protected files are what php-fpm is asked to run (SCRIPT_FILENAME); the prepended
    // authorizer exits before any of them runs.
    pool.extra
        .push("security.limit_extensions = .php .txt".into());
    b.pool(pool);

    // The same protection by httpd's own modules, to compare with.
    let htpasswd = tmp.join("auth-app/htpasswd");
    let out = std::process::Command::new("htpasswd")
        .arg("-cbB")
        .arg(&htpasswd)
        .args(["alice", "secret-alice"])
        .output()
        .map_err(|e| format!("htpasswd: {e}"))?;
    ensure(out.status.success(), || {
        format!("htpasswd: {}", String::from_utf8_lossy(&out.stderr))
    })?;

    let vdir = tmp.join("auth-fcgi"); // never created
    let v = |n: &str| q(p(&vdir.join(n)));
    let d = |n: &str| q(p(&docroot.join(n)));
    let body = format!(
        "AddType application/x-httpd-fastphp5 .php\n\
         Action application/x-httpd-fastphp5 /php5.fcgi\n\
         Alias /php5.fcgi {php}\n\
         FastCgiExternalServer {php} -socket {resp}\n\
         <Directory {vd}>\n    Require all granted\n</Directory>\n\
         <Directory {basic}>\n    AuthType Basic\n    AuthName \"fcgi test\"\n    \
             FastCgiAuthenticator {app}\n    FastCgiAuthorizer {app}\n    Require valid-user\n</Directory>\n\
         <Directory {plain}>\n    AuthType Basic\n    AuthName \"plain test\"\n    \
             AuthBasicProvider file\n    AuthUserFile {htpasswd}\n    Require valid-user\n</Directory>\n\
         <Directory {checked}>\n    FastCgiAccessChecker {app} -compat\n</Directory>\n\
         <Directory {lenient}>\n    FastCgiAccessChecker {app}\n    FastCgiAccessCheckerAuthoritative Off\n</Directory>\n\
         <Directory {down}>\n    FastCgiAccessChecker {down_app}\n</Directory>\n\
         # defined after the <Directory> sections that use them\n\
         FastCgiExternalServer {app} -socket {authz} -max-conns 2\n\
         FastCgiExternalServer {down_app} -socket {missing} -connect-retry 0\n",
        php = v("auth-php.fcgi"),
        resp = q(p(&resp)),
        vd = q(p(&vdir)),
        basic = d("basic"),
        checked = d("checked"),
        plain = d("plain"),
        htpasswd = q(p(&htpasswd)),
        lenient = d("lenient"),
        down = d("down"),
        app = v("authorizer.fcgi"),
        down_app = v("authorizer-down.fcgi"),
        authz = q(p(&authz)),
        missing = q(p(&run.join("auth-nothing.sock"))),
    );
    let port = b.port()?;
    b.vhost(ID, port, "auth.test", &docroot, &body);
    Ok(())
}

pub fn basic(user: &str, pw: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let src = format!("{user}:{pw}").into_bytes();
    let mut out = String::new();
    for c in src.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

fn seen_log(ctx: &Ctx) -> PathBuf {
    PathBuf::from(ctx.val("auth_seen_log"))
}

/// Lines the authorizer application logged since `from`.
fn seen_since(ctx: &Ctx, from: u64) -> Vec<String> {
    util::read_from(&seen_log(ctx), from)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The line the application logged for its request in `role` since `from`, checked to
/// contain every `want` (`NAME=value`, `NAME=<absent>`).
fn expect_seen(ctx: &Ctx, from: u64, role: &str, want: &[&str]) -> Result<(), String> {
    let seen = seen_since(ctx, from);
    let line = seen
        .iter()
        .find(|l| l.contains(&format!("FCGI_APACHE_ROLE={role}")))
        .ok_or_else(|| format!("no {role} request seen: {seen:?}"))?;
    for w in want {
        ensure(line.contains(w), || {
            format!("{role} request without {w}: {line}")
        })?;
    }
    Ok(())
}

fn get_as(
    ctx: &Ctx,
    target: &str,
    auth: Option<(&str, &str)>,
) -> Result<crate::http::Response, String> {
    let mut req = Request::get(target);
    if let Some((u, pw)) = auth {
        req = req.header("Authorization", &basic(u, pw));
    }
    ctx.req(ID, req).map_err(|e| format!("GET {target}: {e}"))
}

fn log_has(ctx: &Ctx, from: u64, needle: &str) -> Result<(), String> {
    let log = &ctx.vhost(ID).error_log;
    let text = util::read_from(log, from);
    ensure(text.contains(needle), || {
        format!("error log has no line with {needle:?}; it has:\n{text}")
    })
}

fn authenticator_and_authorizer(ctx: &Ctx) -> Result<(), String> {
    let log = ctx.vhost(ID).error_log.clone();
    let seen0 = util::file_len(&seen_log(ctx));
    // No credentials: httpd's own challenge; the application is not asked.
    let r = get_as(ctx, "/basic/page.php", None)?;
    expect_status(&r, 401)?;
    ensure(
        r.header("WWW-Authenticate")
            .is_some_and(|h| h.contains("fcgi test")),
        || format!("no Basic challenge: {}", r.summary()),
    )?;
    ensure(seen_since(ctx, seen0).is_empty(), || {
        "the authenticator was asked about a request without credentials".into()
    })?;

    // Wrong password: refused by the application, its headers reach the client with a 401.
    let l0 = util::file_len(&log);
    let r = get_as(ctx, "/basic/page.php", Some(("alice", "nope")))?;
    expect_status(&r, 401)?;
    ensure(
        r.header("X-Auth-Why") == Some("wrong password") && r.header("WWW-Authenticate").is_some(),
        || {
            format!(
                "denial without the application's header or the challenge: {}",
                r.summary()
            )
        },
    )?;
    log_has(
        ctx,
        l0,
        "FCGI100: FastCGI: authentication failed for user \"alice\" by FastCgiAuthenticator",
    )?;

    // bob authenticates but the authorizer refuses him.
    let l0 = util::file_len(&log);
    let r = get_as(ctx, "/basic/page.php", Some(("bob", "secret-bob")))?;
    expect_status(&r, 401)?;
    ensure(r.header("X-Auth-Why") == Some("not an admin"), || {
        format!("authorizer's denial header missing: {}", r.summary())
    })?;
    log_has(
        ctx,
        l0,
        "authorization failed for user \"bob\" by FastCgiAuthorizer",
    )?;

    // alice passes both: the page runs with her name and the authenticator's variable, and
    // nothing of the authorizer's own request leaks into it.
    let seen1 = util::file_len(&seen_log(ctx));
    let r = get_as(ctx, "/basic/page.php", Some(("alice", "secret-alice")))?;
    expect_status(&r, 200)?;
    // The user reaches the page as it does under httpd's own Basic authentication (through
    // the Action redirect, whose target has no authentication of its own).
    let plain = get_as(ctx, "/plain/page.php", Some(("alice", "secret-alice")))?;
    expect_status(&plain, 200)?;
    let (kv, pkv) = (r.kv(), plain.kv());
    for k in ["REMOTE_USER", "REDIRECT_REMOTE_USER", "AUTH_TYPE"] {
        ensure(kv.get(k) == pkv.get(k), || {
            format!(
                "{k}: {:?} with FastCgiAuthenticator, {:?} with mod_auth_basic",
                kv.get(k),
                pkv.get(k)
            )
        })?;
    }
    expect_vars(
        &r,
        &[
            ("MARKER", "auth-page"),
            ("FCGI_ROLE", "RESPONDER"),
            ("REDIRECT_AUTH_GROUP", "admins"),
            ("REDIRECT_X_Authn_Extra", "plain"),
            ("REMOTE_PASSWD", ABSENT),
            ("REDIRECT_REMOTE_PASSWD", ABSENT),
            ("FCGI_APACHE_ROLE", ABSENT),
            ("REDIRECT_FCGI_APACHE_ROLE", ABSENT),
        ],
    )?;
    expect_seen(
        ctx,
        seen1,
        "AUTHENTICATOR",
        &[
            "REMOTE_USER=alice",
            "REMOTE_PASSWD=secret-alice",
            "PATH_TRANSLATED=<absent>",
            "REQUEST_URI=/basic/page.php",
            "SCRIPT_NAME=/basic/page.php",
        ],
    )?;
    expect_seen(
        ctx,
        seen1,
        "AUTHORIZER",
        &["REMOTE_USER=alice", "REMOTE_PASSWD=<absent>"],
    )?;

    // A static file in the same directory is protected the same way.
    let r = get_as(ctx, "/basic/file.txt", Some(("alice", "secret-alice")))?;
    expect_status(&r, 200)?;
    ensure(r.text() == "static basic\n", || r.summary())?;
    let r = get_as(ctx, "/basic/file.txt", Some(("bob", "secret-bob")))?;
    expect_status(&r, 401)
}

fn access_checker_compat(ctx: &Ctx) -> Result<(), String> {
    let log = ctx.vhost(ID).error_log.clone();
    // Passed: with -compat only the Variable- headers become variables.
    let seen0 = util::file_len(&seen_log(ctx));
    let r = ctx
        .req(ID, Request::post("/checked/page.php", "abc"))
        .map_err(|e| format!("POST /checked/page.php: {e}"))?;
    expect_status(&r, 200)?;
    expect_vars(
        &r,
        &[
            ("REDIRECT_CHECKED", "yes"),
            ("REDIRECT_X_Other", ABSENT),
            ("REMOTE_USER", ABSENT),
            ("BODY_LEN", "3"),
        ],
    )?;
    expect_seen(
        ctx,
        seen0,
        "ACCESS_CHECKER",
        &[
            "CONTENT_LENGTH=<absent>",
            "SCRIPT_NAME=<absent>",
            "PATH_TRANSLATED=<absent>",
            "REQUEST_URI=/checked/page.php",
        ],
    )?;

    // Denied: 403 with the application's headers.
    let l0 = util::file_len(&log);
    let r = ctx
        .req(ID, Request::get("/checked/page.php").header("X-Block", "1"))
        .map_err(|e| e.to_string())?;
    expect_status(&r, 403)?;
    ensure(r.header("X-Denied-By") == Some("checker"), || r.summary())?;
    ensure(!r.text().contains("auth-page"), || "the page ran".into())?;
    log_has(
        ctx,
        l0,
        "FCGI100: FastCGI: access denied by FastCgiAccessChecker",
    )?;

    // A redirect is not an answer an authorizer may give.
    let l0 = util::file_len(&log);
    let r = ctx
        .req(
            ID,
            Request::get("/checked/file.txt").header("X-Redirect", "1"),
        )
        .map_err(|e| e.to_string())?;
    expect_status(&r, 403)?;
    ensure(r.header("Location").is_none(), || r.summary())?;
    log_has(ctx, l0, "FCGI101: FastCGI: FastCgiAccessChecker")?;
    log_has(ctx, l0, "redirected (not allowed)")?;
    let text = util::read_from(&log, l0);
    ensure(!text.contains("FCGI100"), || {
        format!("one refusal, one line; got:\n{text}")
    })
}

fn not_authoritative_and_unreachable(ctx: &Ctx) -> Result<(), String> {
    let log = ctx.vhost(ID).error_log.clone();
    // Not authoritative: a denial leaves the decision to the other modules (Require all
    // granted of the docroot).
    let r = ctx
        .req(ID, Request::get("/lenient/page.php").header("X-Block", "1"))
        .map_err(|e| e.to_string())?;
    expect_status(&r, 200)?;
    expect_vars(&r, &[("MARKER", "auth-page"), ("REDIRECT_CHECKED", ABSENT)])?;
    // Passed, without -compat: every header of the answer becomes a variable; the application
    // got SCRIPT_NAME and PATH_INFO, but no PATH_TRANSLATED.
    let seen0 = util::file_len(&seen_log(ctx));
    let r = get_as(ctx, "/lenient/page.php/extra/info", None)?;
    expect_status(&r, 200)?;
    expect_vars(
        &r,
        &[
            ("REDIRECT_CHECKED", "yes"),
            ("REDIRECT_X_Other", "only-without-compat"),
        ],
    )?;
    expect_seen(
        ctx,
        seen0,
        "ACCESS_CHECKER",
        &[
            "SCRIPT_NAME=/lenient/page.php ",
            "PATH_INFO=/extra/info ",
            "PATH_TRANSLATED=<absent>",
        ],
    )?;
    // An authorizer that cannot be reached: 503 and the usual connect error line.
    let l0 = util::file_len(&log);
    let r = get_as(ctx, "/down/file.txt", None)?;
    expect_status(&r, 503)?;
    ensure(!r.text().contains("static down"), || {
        "the file was served".into()
    })?;
    log_has(ctx, l0, "FCGI010: FastCGI: failed to connect to server")?;
    log_has(ctx, l0, "authorizer-down.fcgi")
}

fn config_errors(ctx: &Ctx) -> Result<(), String> {
    let text = |name: &str, body: &str| crate::conformance::config_text(ctx, name, body);
    let good = "<Directory /srv>\n FastCgiAuthorizer /fc/auth.fcgi -compat\n FastCgiAuthorizerAuthoritative off\n</Directory>\n\
                FastCgiExternalServer /fc/auth.fcgi -host 127.0.0.1:9";
    let t = ctx.config_test("auth_ok", &text("auth_ok", good))?;
    ensure(t.ok, || {
        format!("valid authorizer configuration refused: {}", t.output)
    })?;
    for (name, body, want) in [
        (
            "auth_undefined",
            "<Directory /srv>\n FastCgiAuthorizer /fc/nowhere.fcgi\n</Directory>",
            "FastCgiAuthorizer /fc/nowhere.fcgi: no FastCgiExternalServer",
        ),
        (
            "auth_option",
            "FastCgiExternalServer /fc/a.fcgi -host 127.0.0.1:9\n<Directory /srv>\n FastCgiAccessChecker /fc/a.fcgi -strict\n</Directory>",
            "FastCgiAccessChecker: unknown option: \"-strict\"",
        ),
        (
            "auth_flag",
            "<Directory /srv>\n FastCgiAuthenticatorAuthoritative maybe\n</Directory>",
            "FastCgiAuthenticatorAuthoritative must be On or Off",
        ),
        (
            "auth_context",
            "FastCgiExternalServer /fc/a.fcgi -host 127.0.0.1:9\nFastCgiAuthenticator /fc/a.fcgi",
            "FastCgiAuthenticator",
        ),
    ] {
        let t = ctx.config_test(name, &text(name, body))?;
        ensure(!t.ok, || {
            format!("{name}: accepted by apache2 -t: {}", t.output)
        })?;
        ensure(t.output.contains(want), || {
            format!("{name}: apache2 -t output lacks {want:?}: {}", t.output)
        })?;
    }
    Ok(())
}
