//! WordPress through the module: Debian's `wordpress` package (6.1), copied into the temp dir
//! with a configuration of its own, on a MariaDB server the suite starts under the temp dir
//! (unix socket only, stopped by PID after the last test), served by php-fpm behind the
//! mod_fastcgi recipe (AddType + Action + Alias + FastCgiExternalServer on a virtual path whose
//! directory does not exist), with the pool on and `-pass-header Authorization`.
//!
//! What a site moving from mod_fastcgi is judged by: the web installer, the login (test
//! cookie, auth cookies, redirect), the admin's own forms (permalink settings with their
//! nonce), pretty permalinks through WordPress's `.htaccess` and mod_rewrite, comments, the
//! REST API with an application password sent as HTTP Basic credentials (which httpd only
//! passes with `-pass-header Authorization`), media uploads as raw and as chunked request
//! bodies fetched back byte for byte, XML-RPC, and the feed's 304s.
//!
//! The database and the installation are made by the first test that needs them, so that runs
//! of other suites do not pay for them; every test can run alone (`-- wordpress_rest`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::apps::{Browser, input_value, only_app_stderr, recipe_vhost};
use crate::auth::basic;
use crate::check::{ensure, expect_status, p};
use crate::fpm::Pool;
use crate::harness::{Builder, Ctx, Suite, test};
use crate::http::{Request, Response};
use crate::mariadb;
use crate::procs::Endpoint;
use crate::util::{self, run};

pub const SUITE: Suite = Suite {
    name: "wordpress",
    setup,
    tests: &[
        test("wordpress_install_login_dashboard", install_login),
        test("wordpress_permalinks_and_comments", permalinks_comments),
        test("wordpress_rest_api_application_password", rest_api),
        test("wordpress_media_uploads_raw_and_chunked", media),
        test("wordpress_xmlrpc_and_feed_caching", xmlrpc_feed),
        test("wordpress_log_only_application_stderr", logs),
    ],
};

/// Debian's layout.
const WP_CODE: &str = "/usr/share/wordpress";

/// `err_`: WordPress 6.1 on PHP 8.2 may write deprecation notices to stderr, which the module
/// logs at error level (FCGI040); the last test checks this vhost's log itself.
const VHOST: &str = "err_apps_wp";
const HOST: &str = "wp.test";
const USER: &str = "mfcgi-admin";
const PASSWORD: &str = "Mfcgi-Secret-7391!";

fn setup(b: &mut Builder) -> Result<(), String> {
    let root = b.tmp.join("apps/wordpress");
    let www = root.join("www");
    util::mkdir_p(&www)?;
    let sock = b.tmp.join("run/apps-wp.sock");
    let mut pool = Pool::new("wp", "www-data", "www-data", Endpoint::Unix(sock.clone()));
    pool.max_children = 4;
    b.pool(pool);
    // the virtual path's directory is never created
    let vpath = b.tmp.join("apps/wp-fastcgi/php.fcgi");
    let body = recipe_vhost("index.php", &www, &vpath, &sock);
    let port = b.port()?;
    b.vhost(VHOST, port, HOST, &www, &body);
    b.set("wp_root", p(&root));
    Ok(())
}

/// The installed site: made once, by the first test that asks.
struct Site {
    www: PathBuf,
}

static SITE: OnceLock<Result<Site, String>> = OnceLock::new();

fn site(ctx: &Ctx) -> Result<&'static Site, String> {
    SITE.get_or_init(|| install(ctx))
        .as_ref()
        .map_err(|e| format!("WordPress setup: {e}"))
}

/// Copies WordPress, creates its database, writes the configuration and runs the web installer.
fn install(ctx: &Ctx) -> Result<Site, String> {
    let f = format!("{WP_CODE}/wp-login.php");
    if !Path::new(&f).exists() {
        return Err(format!(
            "{f} is missing: `make deps-test` installs Debian's wordpress, mariadb-server and php-mysql"
        ));
    }
    let root = PathBuf::from(ctx.val("wp_root"));
    let www = root.join("www");
    // -L: the package links into /etc and other packages' directories
    run(
        Command::new("cp")
            .arg("-rL")
            .arg(format!("{WP_CODE}/."))
            .arg(&www),
        "copy WordPress",
    )?;

    // the database (the suites' MariaDB server: unix socket only)
    let sock = mariadb::socket(ctx)?;
    mariadb::sql(ctx, "CREATE DATABASE wordpress")?;

    // the site's configuration (Debian's wp-config.php looks in /etc/wordpress)
    util::write_file(
        &www.join("wp-config.php"),
        format!(
            "<?php\n\
             define('DB_NAME', 'wordpress');\ndefine('DB_USER', 'root');\ndefine('DB_PASSWORD', '');\n\
             define('DB_HOST', 'localhost:{sock}');\ndefine('DB_CHARSET', 'utf8mb4');\ndefine('DB_COLLATE', '');\n\
             define('AUTH_KEY', 'mfcgi-1');\ndefine('SECURE_AUTH_KEY', 'mfcgi-2');\n\
             define('LOGGED_IN_KEY', 'mfcgi-3');\ndefine('NONCE_KEY', 'mfcgi-4');\n\
             define('AUTH_SALT', 'mfcgi-5');\ndefine('SECURE_AUTH_SALT', 'mfcgi-6');\n\
             define('LOGGED_IN_SALT', 'mfcgi-7');\ndefine('NONCE_SALT', 'mfcgi-8');\n\
             $table_prefix = 'wp_';\n\
             // application passwords without TLS; no outgoing HTTP (no network here), no cron\n\
             define('WP_ENVIRONMENT_TYPE', 'local');\ndefine('WP_HTTP_BLOCK_EXTERNAL', true);\n\
             define('DISABLE_WP_CRON', true);\ndefine('AUTOMATIC_UPDATER_DISABLED', true);\n\
             define('WP_DEFAULT_THEME', 'mfcgi');\n\
             if (!defined('ABSPATH')) {{ define('ABSPATH', __DIR__ . '/'); }}\n\
             require_once ABSPATH . 'wp-settings.php';\n",
            sock = p(sock)
        ),
    )?;
    // the package ships no theme: a minimal one that prints posts and their comments
    let theme = www.join("wp-content/themes/mfcgi");
    util::mkdir_p(&theme)?;
    util::write_file(
        &theme.join("style.css"),
        "/*\nTheme Name: mfcgi\nDescription: test theme\n*/\n",
    )?;
    util::write_file(
        &theme.join("index.php"),
        "<!DOCTYPE html><html><head><?php wp_head(); ?></head><body>\n\
         <?php while (have_posts()) { the_post(); ?>\n\
         <h1 class=\"title\"><?php the_title(); ?></h1>\n\
         <div class=\"content\"><?php the_content(); ?></div>\n\
         <?php if (is_singular()) { foreach (get_comments(['post_id' => get_the_ID()]) as $c) { ?>\n\
         <p class=\"comment\"><?php echo esc_html($c->comment_content); ?></p>\n\
         <?php } } } ?>\n</body></html>\n",
    )?;
    // WordPress's rules for pretty permalinks (it cannot write them itself: the copy is
    // root's); no HTTP_AUTHORIZATION rewrite trick — `-pass-header Authorization` does that
    util::write_file(
        &www.join(".htaccess"),
        "RewriteEngine On\nRewriteBase /\nRewriteRule ^index\\.php$ - [L]\n\
         RewriteCond %{REQUEST_FILENAME} !-f\nRewriteCond %{REQUEST_FILENAME} !-d\n\
         RewriteRule . /index.php [L]\n",
    )?;
    let uploads = www.join("wp-content/uploads");
    util::mkdir_p(&uploads)?;
    run(
        Command::new("chown")
            .args(["-R", "www-data:www-data"])
            .arg(&uploads),
        "chown uploads",
    )?;

    // the web installer, as a browser would run it
    let mut br = Browser::new(ctx, VHOST);
    let form = br.get("/wp-admin/install.php")?;
    expect_status(&form, 200)?;
    ensure(form.text().contains("admin_password"), || {
        format!("install.php shows no installation form: {}", form.summary())
    })?;
    let done = br.post_form(
        "/wp-admin/install.php?step=2",
        &[
            ("weblog_title", "mfcgi blog"),
            ("user_name", USER),
            ("admin_password", PASSWORD),
            ("admin_password2", PASSWORD),
            ("admin_email", "admin@example.org"),
            ("blog_public", "0"),
            ("Submit", "Install WordPress"),
            ("language", ""),
        ],
    )?;
    expect_status(&done, 200)?;
    ensure(done.text().contains("Success!"), || {
        format!("the installer did not succeed: {}", done.summary())
    })?;
    set_permalinks(ctx)?;
    Ok(Site { www })
}

/// Pretty permalinks, set through the admin's own form (with its nonce and referer check), as
/// an administrator does right after installing.
fn set_permalinks(ctx: &Ctx) -> Result<(), String> {
    let mut br = login_as(ctx)?;
    let form = br.get("/wp-admin/options-permalink.php")?;
    expect_status(&form, 200)?;
    let nonce = field(&form, "_wpnonce", "options-permalink.php")?;
    let r = br.post_form(
        "/wp-admin/options-permalink.php",
        &[
            ("_wpnonce", &nonce),
            ("_wp_http_referer", "/wp-admin/options-permalink.php"),
            ("selection", "/%postname%/"),
            ("permalink_structure", "/%postname%/"),
            ("category_base", ""),
            ("tag_base", ""),
            ("submit", "Save Changes"),
        ],
    )?;
    ensure(
        r.status == 302
            && r.header("Location")
                .unwrap_or("")
                .contains("settings-updated=true"),
        || format!("saving the permalink settings: {}", r.summary()),
    )
}

/// A logged-in browser.
fn login(ctx: &Ctx) -> Result<Browser<'_>, String> {
    site(ctx)?;
    login_as(ctx)
}

fn login_as(ctx: &Ctx) -> Result<Browser<'_>, String> {
    let mut br = Browser::new(ctx, VHOST);
    // the login form sets the test cookie the POST must send back
    let form = br.get("/wp-login.php")?;
    expect_status(&form, 200)?;
    ensure(br.cookies.contains_key("wordpress_test_cookie"), || {
        format!("wp-login.php set no test cookie: {:?}", form.headers)
    })?;
    let r = br.post_form(
        "/wp-login.php",
        &[
            ("log", USER),
            ("pwd", PASSWORD),
            ("wp-submit", "Log In"),
            ("redirect_to", &format!("http://{HOST}/wp-admin/")),
            ("testcookie", "1"),
        ],
    )?;
    ensure(r.status == 302, || {
        format!("login POST: want 302, got {}", r.summary())
    })?;
    let loc = r.header("Location").unwrap_or("");
    ensure(loc == format!("http://{HOST}/wp-admin/"), || {
        format!("login redirect to {loc:?}")
    })?;
    ensure(
        br.cookies
            .keys()
            .any(|k| k.starts_with("wordpress_logged_in_")),
        || format!("no auth cookie after login: {:?}", br.cookies.keys()),
    )?;
    Ok(br)
}

fn install_login(ctx: &Ctx) -> Result<(), String> {
    let mut br = login(ctx)?;
    let dash = br.get("/wp-admin/")?;
    expect_status(&dash, 200)?;
    ensure(
        dash.text().contains("Dashboard") && dash.text().contains(USER),
        || format!("/wp-admin/ is not the dashboard: {}", dash.summary()),
    )?;
    // a second installation attempt is refused by WordPress itself (the database is shared)
    let again = br.get("/wp-admin/install.php")?;
    ensure(again.text().contains("Already Installed"), || {
        format!("install.php after installing: {}", again.summary())
    })?;
    // logged out, the admin redirects to the login form with the page to come back to
    let anon = Browser::new(ctx, VHOST).get("/wp-admin/")?;
    ensure(
        anon.status == 302
            && anon
                .header("Location")
                .unwrap_or("")
                .contains("/wp-login.php?redirect_to="),
        || format!("/wp-admin/ logged out: {}", anon.summary()),
    )
}

/// The value of a hidden form field, or an error naming the page.
fn field(page: &Response, name: &str, what: &str) -> Result<String, String> {
    input_value(&page.text(), name)
        .ok_or_else(|| format!("{what}: no field {name:?}: {}", page.summary()))
}

fn permalinks_comments(ctx: &Ctx) -> Result<(), String> {
    let mut br = login(ctx)?;
    // the pretty URL goes through .htaccess → /index.php → the Action chain; WordPress routes
    // by REQUEST_URI, which must still be the client's
    let post = br.get("/hello-world/")?;
    expect_status(&post, 200)?;
    ensure(post.text().contains("Hello world!"), || {
        format!("/hello-world/: {}", post.summary())
    })?;
    let missing = br.get("/no-such-post-here/")?;
    expect_status(&missing, 404)?;
    // the old ?p= URL redirects to the pretty one (canonical redirect, built from HTTP_HOST)
    let old = br.get("/?p=1")?;
    ensure(
        old.status == 301 && old.header("Location") == Some(&format!("http://{HOST}/hello-world/")),
        || format!("/?p=1: {}", old.summary()),
    )?;

    // a comment, posted by the logged-in admin (approved at once)
    let text = "Kommentar über mod_fastcgi-rs: ä & <b>ö</b> 日本語";
    let r = br.post_form(
        "/wp-comments-post.php",
        &[
            ("comment", text),
            ("comment_post_ID", "1"),
            ("comment_parent", "0"),
            ("submit", "Post Comment"),
        ],
    )?;
    ensure(r.status == 302, || {
        format!("wp-comments-post.php: {}", r.summary())
    })?;
    let loc = r.header("Location").unwrap_or("").to_string();
    ensure(
        loc.starts_with(&format!("http://{HOST}/hello-world/")) && loc.contains("#comment-"),
        || format!("comment redirect to {loc:?}"),
    )?;
    let post = br.get("/hello-world/")?;
    ensure(
        post.text()
            .contains("Kommentar über mod_fastcgi-rs: ä &amp; &lt;b&gt;ö&lt;/b&gt; 日本語")
            || post
                .text()
                .contains("Kommentar über mod_fastcgi-rs: ä &amp; ö 日本語"),
        || format!("the comment is not on the post: {}", post.summary()),
    )
}

/// The string value of `"key":"..."` in a JSON text (first occurrence), unescaped.
fn json_str(json: &str, key: &str) -> Option<String> {
    let at = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut chars = json[at..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// The number value of `"key":N` in a JSON text (first occurrence).
fn json_num(json: &str, key: &str) -> Option<u64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// An application password for the admin, made through the REST API with cookie
/// authentication and the REST nonce (as the admin's profile page does).
fn application_password(ctx: &Ctx) -> Result<String, String> {
    static PW: OnceLock<Result<String, String>> = OnceLock::new();
    PW.get_or_init(|| {
        let mut br = login(ctx)?;
        let nonce = br.get("/wp-admin/admin-ajax.php?action=rest-nonce")?;
        expect_status(&nonce, 200)?;
        let nonce = nonce.text().trim().to_string();
        let r = br.send(
            Request::post(
                "/wp-json/wp/v2/users/me/application-passwords",
                r#"{"name":"mfcgi-test"}"#,
            )
            .header("Content-Type", "application/json")
            .header("X-WP-Nonce", &nonce),
        )?;
        ensure(r.status == 201, || {
            format!("creating an application password: {}", r.summary())
        })?;
        json_str(&r.text(), "password").ok_or_else(|| format!("no password in {}", r.summary()))
    })
    .clone()
}

fn rest_api(ctx: &Ctx) -> Result<(), String> {
    site(ctx)?;
    let pw = application_password(ctx)?;
    let auth = basic(USER, &pw);
    let mut api = Browser::new(ctx, VHOST);
    // who am I: through the pretty /wp-json/ route and through ?rest_route=
    for target in ["/wp-json/wp/v2/users/me", "/?rest_route=/wp/v2/users/me"] {
        let me = api.send(Request::get(target).header("Authorization", &auth))?;
        expect_status(&me, 200)?;
        ensure(
            json_str(&me.text(), "slug").as_deref() == Some(USER),
            || format!("{target} with Basic credentials: {}", me.summary()),
        )?;
    }
    let body = r#"{"title":"REST post","content":"<p>\u00dcber REST: \u65e5\u672c\u8a9e &amp; more</p>","status":"publish"}"#;
    let create = |api: &mut Browser, auth: Option<&str>| {
        let req =
            Request::post("/wp-json/wp/v2/posts", body).header("Content-Type", "application/json");
        api.send(match auth {
            Some(a) => req.header("Authorization", a),
            None => req,
        })
    };
    // without credentials, or with a wrong password, WordPress refuses
    for (what, a) in [
        ("without credentials", None),
        ("with a wrong password", Some(basic(USER, "wrong password"))),
    ] {
        let r = create(&mut api, a.as_deref())?;
        ensure(r.status == 401, || {
            format!("creating a post {what}: {}", r.summary())
        })?;
    }
    let made = create(&mut api, Some(&auth))?;
    ensure(made.status == 201, || {
        format!("creating a post: {}", made.summary())
    })?;
    let id = json_num(&made.text(), "id").ok_or_else(|| made.summary())?;
    ensure(
        made.header("Location") == Some(&format!("http://{HOST}/wp-json/wp/v2/posts/{id}")),
        || format!("201 Location {:?}", made.header("Location")),
    )?;
    let link = json_str(&made.text(), "link").unwrap_or_default();
    ensure(link == format!("http://{HOST}/rest-post/"), || {
        format!("post link {link:?}")
    })?;
    let page = api.get("/rest-post/")?;
    expect_status(&page, 200)?;
    ensure(
        page.text().contains("Über REST: 日本語 &amp; more"),
        || format!("/rest-post/: {}", page.summary()),
    )?;
    let read = api.get(&format!("/wp-json/wp/v2/posts/{id}"))?;
    expect_status(&read, 200)?;
    ensure(
        read.header("Content-Type")
            .unwrap_or("")
            .starts_with("application/json"),
        || format!("REST Content-Type {:?}", read.header("Content-Type")),
    )?;
    // the REST API's own headers reach the client
    ensure(
        read.header("Link")
            .is_some_and(|l| l.contains("rel=\"alternate\"")),
        || format!("REST headers: {:?}", read.headers),
    )?;
    let list = api.get("/wp-json/wp/v2/posts?per_page=1")?;
    ensure(
        list.header("X-WP-Total")
            .is_some_and(|t| t.parse::<u32>().unwrap_or(0) >= 2),
        || format!("X-WP-Total {:?}", list.header("X-WP-Total")),
    )
}

/// Text of `n` bytes (the upload's type is checked against its content).
fn notes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = util::Prng::new(seed);
    let mut out = Vec::with_capacity(n + 80);
    while out.len() < n {
        let line = format!(
            "line {:08} {:016x} mod_fastcgi-rs upload\n",
            out.len(),
            rng.next_u64()
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(n);
    out
}

fn chunked(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in data.chunks(7000) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn media(ctx: &Ctx) -> Result<(), String> {
    let site = site(ctx)?;
    let auth = basic(USER, &application_password(ctx)?);
    let mut api = Browser::new(ctx, VHOST);
    for (name, size, chunk) in [
        ("mfcgi-raw.txt", 2 << 20, false),
        ("mfcgi-chunked.txt", 3 << 20, true),
    ] {
        let data = notes(size, size as u64);
        let mut req = Request::post(
            "/wp-json/wp/v2/media",
            if chunk { chunked(&data) } else { data.clone() },
        )
        .header("Content-Type", "text/plain")
        .header(
            "Content-Disposition",
            &format!("attachment; filename=\"{name}\""),
        )
        .header("Authorization", &auth);
        if chunk {
            req = req.header("Transfer-Encoding", "chunked");
        }
        let r = api.send(req)?;
        ensure(r.status == 201, || {
            format!("uploading {name}: {}", r.summary())
        })?;
        let url = json_str(&r.text(), "source_url").unwrap_or_default();
        let path = url
            .strip_prefix(&format!("http://{HOST}"))
            .ok_or_else(|| format!("source_url {url:?}"))?
            .to_string();
        ensure(path.ends_with(name), || format!("source_url {url:?}"))?;
        // what PHP wrote is what was sent, and Apache serves it back
        let on_disk = std::fs::read(site.www.join(path.trim_start_matches('/')))
            .map_err(|e| format!("{path}: {e}"))?;
        ensure(on_disk == data, || {
            format!(
                "{name}: stored {} bytes, sent {}",
                on_disk.len(),
                data.len()
            )
        })?;
        let got = api.get(&path)?;
        expect_status(&got, 200)?;
        ensure(got.body == data, || {
            format!("{path}: fetched {} bytes", got.body.len())
        })?;
    }
    Ok(())
}

fn xmlrpc_call(method: &str, user: &str, pw: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<methodCall><methodName>{method}</methodName><params>\
         <param><value><string>{user}</string></value></param>\
         <param><value><string>{pw}</string></value></param>\
         </params></methodCall>\n"
    )
}

fn xmlrpc_feed(ctx: &Ctx) -> Result<(), String> {
    site(ctx)?;
    let mut br = Browser::new(ctx, VHOST);
    let post = |br: &mut Browser, body: String| {
        br.send(Request::post("/xmlrpc.php", body).header("Content-Type", "text/xml"))
    };
    let ok = post(&mut br, xmlrpc_call("wp.getUsersBlogs", USER, PASSWORD))?;
    expect_status(&ok, 200)?;
    ensure(
        ok.text().contains("<name>isAdmin</name>") && ok.text().contains("mfcgi blog"),
        || format!("wp.getUsersBlogs: {}", ok.summary()),
    )?;
    let bad = post(&mut br, xmlrpc_call("wp.getUsersBlogs", USER, "nope"))?;
    ensure(
        bad.status == 200 && bad.text().contains("<int>403</int>"),
        || format!("wp.getUsersBlogs with a wrong password: {}", bad.summary()),
    )?;

    // the feed: WordPress's own conditional GET
    let feed = br.get("/feed/")?;
    expect_status(&feed, 200)?;
    ensure(
        feed.header("Content-Type")
            .unwrap_or("")
            .contains("rss+xml")
            && feed.text().contains("<title>Hello world!</title>"),
        || format!("/feed/: {}", feed.summary()),
    )?;
    let etag = feed.header("ETag").unwrap_or("").to_string();
    let lm = feed.header("Last-Modified").unwrap_or("").to_string();
    ensure(!etag.is_empty() && !lm.is_empty(), || {
        format!("the feed has no ETag/Last-Modified: {:?}", feed.headers)
    })?;
    for (h, v) in [
        ("If-None-Match", etag.as_str()),
        ("If-Modified-Since", lm.as_str()),
    ] {
        let r = br.send(Request::get("/feed/").header(h, v))?;
        ensure(r.status == 304 && r.body.is_empty(), || {
            format!(
                "/feed/ with {h}: want 304 without a body, got {}",
                r.summary()
            )
        })?;
    }
    Ok(())
}

/// The only error-level lines the module may have written for this vhost are the
/// application's own stderr (FCGI040).
fn logs(ctx: &Ctx) -> Result<(), String> {
    site(ctx)?;
    only_app_stderr(ctx, &[VHOST])
}
