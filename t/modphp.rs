//! What a PHP application sees through the module, compared with what it sees under mod_php,
//! the reference most PHP code was written against. The same scripts, in the same tree, are
//! served by this module through the AddType/Action/Alias recipe (the suite's vhost in the
//! main Apache, whatever its MPM) and by Debian's mod_php in a dedicated prefork Apache with
//! the same vhost lines, over a matrix of requests: query strings, PATH_INFO (plain, encoded,
//! UTF-8), directory indexes, `.htaccess` front controllers, mod_rewrite in the server and in
//! a directory, an Alias outside the DocumentRoot, an ErrorDocument, bodies (form, JSON,
//! multipart upload, chunked, `Expect: 100-continue`), Basic credentials, repeated headers,
//! HTTP/1.0 without a Host, HEAD and OPTIONS. The script prints `$_SERVER`'s CGI variables and
//! what Symfony's `Request` and Guzzle's `ServerRequest` (Debian's packages) derive from them:
//! base URL, base path, path info, the full URI, credentials, the body's digest, `$_GET`,
//! `$_POST` and `$_FILES`. Everything must be equal but what the recipe itself adds, the
//! differences the README lists (*What PHP sees, against mod_php*): the `REDIRECT_…`, `ORIG_…` and
//! `CONTEXT_…` variables of the internal redirect to the virtual path (mod_fastcgi's values),
//! `PATH_TRANSLATED` for a PATH_INFO of `/`, `HTTP_AUTHORIZATION` (passed with
//! `-pass-header Authorization`; mod_php gives only `PHP_AUTH_*`), and `CONTENT_LENGTH` of a
//! chunked body (the module sends the length it read).
//!
//! mod_php is not installed: `make deps-test` unpacks Debian's `libapache2-mod-php<version>`
//! under `target/test-deps/mod-php` (installing it would switch the system's Apache to prefork).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::apache::ApacheConf;
use crate::check::{ensure, p};
use crate::fpm::Pool;
use crate::harness::{Builder, Ctx, Suite, test};
use crate::http::{self, Request, Response};
use crate::pool_inst::{self, Apache};
use crate::procs::Endpoint;
use crate::util::{self, q};

pub const SUITE: Suite = Suite {
    name: "modphp",
    setup,
    tests: &[
        test("modphp_same_variables_as_mod_php", same_as_mod_php),
        test("modphp_same_responses_as_mod_php", responses_as_mod_php),
        test("modphp_log_clean", log_clean),
    ],
};

const ID: &str = "modphp";
const SYMFONY: &str = "/usr/share/php/Symfony/Component/HttpFoundation/autoload.php";
const GUZZLE: &str = "/usr/share/php/GuzzleHttp/Psr7/autoload.php";
/// The Host header of every request (both servers then name the same host and port).
const HOST: &str = "app.test:8080";

const DUMP_PHP: &str = r#"<?php
require_once '__SYMFONY__';
require_once '__GUZZLE__';
$keys = ['SCRIPT_NAME', 'PHP_SELF', 'PATH_INFO', 'PATH_TRANSLATED', 'SCRIPT_FILENAME',
  'REQUEST_URI', 'QUERY_STRING', 'DOCUMENT_ROOT', 'CONTEXT_PREFIX', 'CONTEXT_DOCUMENT_ROOT',
  'SERVER_NAME', 'SERVER_PORT', 'SERVER_ADDR', 'HTTP_HOST', 'REQUEST_METHOD', 'SERVER_PROTOCOL',
  'REMOTE_ADDR', 'REQUEST_SCHEME', 'HTTPS', 'PHP_AUTH_USER', 'PHP_AUTH_PW', 'AUTH_TYPE',
  'REMOTE_USER', 'HTTP_AUTHORIZATION', 'CONTENT_TYPE', 'CONTENT_LENGTH', 'HTTP_CONTENT_TYPE',
  'HTTP_CONTENT_LENGTH', 'HTTP_X_FOO', 'HTTP_COOKIE', 'HTTP_PROXY', 'HTTP_EXPECT', 'MYVAR', 'DIRVAR',
  'GATEWAY_INTERFACE', 'SERVER_ADMIN', 'SERVER_SIGNATURE'];
$o = [];
foreach ($keys as $k) {
    $o['srv.' . $k] = array_key_exists($k, $_SERVER) ? (string)$_SERVER[$k] : '<unset>';
}
foreach ($_SERVER as $k => $v) {
    if (strncmp($k, 'REDIRECT_', 9) == 0 || strncmp($k, 'ORIG_', 5) == 0) {
        $o['srv.' . $k] = (string)$v;
    }
}
$r = Symfony\Component\HttpFoundation\Request::createFromGlobals();
$o['sf.baseUrl'] = $r->getBaseUrl();
$o['sf.basePath'] = $r->getBasePath();
$o['sf.pathInfo'] = $r->getPathInfo();
$o['sf.scriptName'] = $r->getScriptName();
$o['sf.requestUri'] = $r->getRequestUri();
$o['sf.uri'] = $r->getUri();
$o['sf.schemeAndHost'] = $r->getSchemeAndHttpHost();
$o['sf.method'] = $r->getMethod();
$o['sf.user'] = (string)$r->getUser();
$o['sf.password'] = (string)$r->getPassword();
$o['sf.authorization'] = (string)$r->headers->get('Authorization');
$o['sf.contentType'] = (string)$r->headers->get('Content-Type');
$o['sf.body'] = md5($r->getContent());
$g = GuzzleHttp\Psr7\ServerRequest::fromGlobals();
$o['gz.uri'] = (string)$g->getUri();
$j = JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES;
$o['php.get'] = json_encode($_GET, $j);
$o['php.post'] = json_encode($_POST, $j);
$o['php.cookie'] = json_encode($_COOKIE, $j);
$files = [];
foreach ($_FILES as $name => $f) {
    $files[$name] = [$f['name'], $f['size'], $f['error'], $f['error'] ? '' : md5_file($f['tmp_name'])];
}
$o['php.files'] = json_encode($files, $j);
$o['php.input'] = md5(file_get_contents('php://input'));
ksort($o);
header('Content-Type: text/plain; charset=UTF-8');
foreach ($o as $k => $v) {
    echo $k, '=', str_replace("\n", '\n', $v), "\n";
}
"#;

/// Responses a script makes, chosen by `?m=`: status codes, headers, cookies, compression,
/// sizes. Under both servers the answer must be the same, headers and body.
const RESP_PHP: &str = r#"<?php
switch ($_GET['m'] ?? '') {
case 'status201': http_response_code(201); echo "made\n"; break;
case 'httpline': header('HTTP/1.1 404 Not Found'); echo "nf\n"; break;
case 'redirect': header('Location: /dump.php'); break;
case 'redirect301': header('Location: http://example.org/x', true, 301); echo 'moved'; break;
case 'cookies': setcookie('a', '1'); setcookie('b', 'x y', ['expires' => 2000000000, 'path' => '/', 'samesite' => 'Lax']);
    session_start(); $_SESSION['x'] = 1; echo "s\n"; break;
case 'nocontent': http_response_code(204); echo 'x'; break;
case 'notmodified': http_response_code(304); header('ETag: "e1"'); echo 'x'; break;
case 'gzip': ini_set('zlib.output_compression', '1'); echo str_repeat("hello world\n", 2000); break;
case 'json': header('Content-Type: application/json'); echo '{"a":1}'; break;
case 'nobody': break;
case 'big': echo str_repeat('0123456789abcdef', 131072); break;
case 'auth': header('WWW-Authenticate: Basic realm="r"'); http_response_code(401); echo 'no'; break;
case 'multi': header('X-A: 1'); header('X-A: 2', false); header('Cache-Control: no-cache');
    header('Cache-Control: private', false); echo 'm'; break;
case 'length': header('Content-Length: 5'); echo 'hello'; break;
case 'lastmod': header('Last-Modified: Tue, 01 Dec 2026 00:00:00 GMT'); header('ETag: "abc"'); echo 'lm'; break;
case 'vary': header('Vary: Accept-Language'); header('Content-Language: fr'); echo 'v'; break;
case 'nopoweredby': header_remove('X-Powered-By'); echo 'r'; break;
case 'exit': echo 'before'; exit(3);
case 'late': ob_start(); echo 'buffered'; header('X-Late: 1'); ob_end_flush(); break;
case 'download': header('Content-Disposition: attachment; filename="a b.txt"'); header('Content-Type: text/plain'); echo 'f'; break;
case 'link': header('Link: </s.css>; rel=preload', false); header('Link: </t.js>; rel=preload', false); echo 'l'; break;
case 'utf8header': header("X-U: \xc3\xbc"); echo 'u'; break;
default: echo "default\n";
}
"#;

/// The `?m=` modes of `resp.php` compared.
const RESP_MODES: &[&str] = &[
    "status201",
    "httpline",
    "redirect",
    "redirect301",
    "cookies",
    "nocontent",
    "notmodified",
    "gzip",
    "json",
    "nobody",
    "big",
    "auth",
    "multi",
    "length",
    "lastmod",
    "vary",
    "nopoweredby",
    "exit",
    "late",
    "download",
    "link",
    "utf8header",
    "",
];

/// The scripts' tree, relative to the suite's directory.
const SCRIPTS: &[&str] = &[
    "www/dump.php",
    "www/index.php",
    "www/sub/dump.php",
    "www/sub/index.php",
    "www/dir/sp ace.php",
    "www/\u{fc}/\u{ef}.php",
    "www/front/index.php",
    "www/rw/target.php",
    "outside/dump.php",
];

/// Front controller as frameworks ship it (Laravel's and Symfony's public/.htaccess).
const FRONT_HTACCESS: &str = "RewriteEngine On\n\
RewriteCond %{REQUEST_FILENAME} !-f\n\
RewriteCond %{REQUEST_FILENAME} !-d\n\
RewriteRule ^ index.php [L]\n\
SetEnv DIRVAR front\n";

/// The vhost lines both servers share (after their own PHP lines).
fn common_lines(root: &Path) -> String {
    let www = root.join("www");
    let outside = root.join("outside");
    format!(
        "ServerAdmin admin@app.test\n\
         Alias /aliased {outside}\n\
         <Directory {outside}>\n    Require all granted\n</Directory>\n\
         ErrorDocument 404 /dump.php\n\
         SetEnv MYVAR hello\n\
         RewriteEngine On\n\
         RewriteRule ^/srv/(.*)$ /dump.php/$1?s=1 [QSA,PT]\n\
         <Directory {rw}>\n    RewriteEngine On\n    RewriteRule ^go/(.*)$ target.php?x=$1 [QSA,L]\n    SetEnvIf Request_URI go DIRVAR=rw\n</Directory>\n",
        outside = q(p(&outside)),
        rw = q(p(&www.join("rw"))),
    )
}

fn setup(b: &mut Builder) -> Result<(), String> {
    let root = b.tmp.join("modphp");
    let dump = DUMP_PHP
        .replace("__SYMFONY__", SYMFONY)
        .replace("__GUZZLE__", GUZZLE);
    for s in SCRIPTS {
        let f = root.join(s);
        util::mkdir_p(f.parent().unwrap())?;
        util::write_file(&f, &dump)?;
    }
    util::write_file(&root.join("www/resp.php"), RESP_PHP)?;
    util::write_file(&root.join("www/front/.htaccess"), FRONT_HTACCESS)?;
    let www = root.join("www");
    let sock = b.tmp.join("run/modphp.sock");
    let mut pool = Pool::new(ID, "www-data", "www-data", Endpoint::Unix(sock.clone()));
    pool.max_children = 4;
    b.pool(pool);
    let vpath = root.join("fastcgi/php.fcgi"); // its directory never exists
    let mut body = crate::apps::recipe_vhost("index.php", &www, &vpath, &sock);
    body.push_str(&common_lines(&root));
    let port = b.port()?;
    b.vhost(ID, port, "modphp.test", &www, &body);
    b.set("modphp_root", p(&root));
    b.set("modphp_vpath", p(&vpath));
    Ok(())
}

/// Debian's mod_php, unpacked by `make deps-test`.
fn find_mod_php(ctx: &Ctx) -> Result<PathBuf, String> {
    let dir = ctx
        .env
        .manifest_dir
        .join("target/test-deps/mod-php/usr/lib/apache2/modules");
    let found = std::fs::read_dir(&dir).ok().and_then(|rd| {
        rd.flatten().map(|e| e.path()).find(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libphp") && n.ends_with(".so"))
        })
    });
    found.ok_or_else(|| {
        format!(
            "no libphp*.so under {}: `make deps-test` unpacks Debian's libapache2-mod-php there",
            dir.display()
        )
    })
}

/// php.ini for mod_php: php-fpm's, with the extensions of php-fpm's conf.d appended (mod_php
/// would scan its own conf.d, which exists only where the package is installed).
fn mod_php_ini(ctx: &Ctx, dir: &Path) -> Result<(), String> {
    let ini = ctx
        .env
        .php_ini
        .clone()
        .ok_or("php-fpm's php.ini not found")?;
    let mut text = util::read_to_string_lossy(&ini);
    let confd = ini.with_file_name("conf.d");
    let mut parts: Vec<PathBuf> = std::fs::read_dir(&confd)
        .map_err(|e| format!("{}: {e}", confd.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|f| f.extension().is_some_and(|x| x == "ini"))
        .collect();
    parts.sort();
    for f in parts {
        text.push('\n');
        text.push_str(&util::read_to_string_lossy(&f));
    }
    util::mkdir_p(dir)?;
    util::write_file(&dir.join("php.ini"), text)
}

fn start_mod_php(ctx: &Ctx, root: &Path) -> Result<Apache, String> {
    let so = find_mod_php(ctx)?;
    let ini_dir = root.join("mod-php-ini");
    mod_php_ini(ctx, &ini_dir)?;
    let mut conf = ApacheConf::new(&root.join("apache-mod-php"), "prefork", &ctx.env.module_so);
    conf.load_before
        .push(format!("LoadModule php_module {}", q(p(&so))));
    conf.global.push(format!("PHPIniDir {}", q(p(&ini_dir))));
    let www = root.join("www");
    let body = format!(
        "DirectoryIndex index.php\n\
         <Directory {w}>\n    AllowOverride All\n</Directory>\n\
         <FilesMatch \"\\.php$\">\n    SetHandler application/x-httpd-php\n</FilesMatch>\n{}",
        common_lines(root),
        w = q(p(&www)),
    );
    let port = util::free_ports(1)?[0];
    let mut v = pool_inst::vhost(&conf, "mod_php", port, &www, &body);
    // the name an HTTP/1.0 request without Host gets
    v.server_name = "modphp.test".into();
    conf.add_vhost(v);
    Apache::start(ctx, "mod-php", conf, "prefork", 2, 1)
}

/// One request of the matrix: raw bytes, and the variables that may differ for it alone.
struct Case {
    name: &'static str,
    raw: Vec<u8>,
    head: bool,
    also_differ: &'static [&'static str],
    /// Variables whose mod_php value the case is about (checked, so that a matrix that reaches
    /// neither script cannot pass).
    expect: &'static [(&'static str, &'static str)],
}

fn req(r: Request) -> Vec<u8> {
    r.host(HOST).close().to_bytes()
}

fn case(name: &'static str, raw: Vec<u8>) -> Case {
    Case {
        name,
        raw,
        head: false,
        also_differ: &[],
        expect: &[],
    }
}

fn cases() -> Vec<Case> {
    let boundary = "----mfcgiBoundary7MA4YWxkTrZu0gW";
    let mut upload = Vec::new();
    upload.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nd\u{e9}j\u{e0} vu\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a b.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    upload.extend((0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    upload.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    vec![
        Case {
            expect: &[("srv.SCRIPT_NAME", "/dump.php"), ("sf.pathInfo", "/")],
            ..case("plain", req(Request::get("/dump.php")))
        },
        Case {
            expect: &[("srv.QUERY_STRING", "a=1&b=%20x&c[]=1&a+b=c%2Bd&f=%C3%BC")],
            ..case(
                "query",
                req(Request::get(
                    "/dump.php?a=1&b=%20x&c[]=1&a+b=c%2Bd&f=%C3%BC",
                )),
            )
        },
        case("empty query", req(Request::get("/dump.php?"))),
        Case {
            expect: &[
                ("srv.PATH_INFO", "/extra/path"),
                ("sf.pathInfo", "/extra/path"),
                ("sf.baseUrl", "/dump.php"),
            ],
            ..case("path info", req(Request::get("/dump.php/extra/path?q")))
        },
        Case {
            // PATH_INFO "/": httpd's lookup of it finds the DirectoryIndex under mod_php;
            // php-fpm, which rewrites PATH_TRANSLATED behind the recipe, makes it the
            // DocumentRoot followed by PATH_INFO (its ORIG_PATH_TRANSLATED is httpd's)
            also_differ: &["srv.PATH_TRANSLATED"],
            expect: &[("srv.PATH_INFO", "/")],
            ..case("trailing slash", req(Request::get("/dump.php/")))
        },
        Case {
            expect: &[("srv.PATH_INFO", "/ext ra/\u{e9}")],
            ..case(
                "encoded path info",
                req(Request::get("/sub/dump.php/ext%20ra/%C3%A9")),
            )
        },
        Case {
            expect: &[("srv.SCRIPT_NAME", "/dir/sp ace.php")],
            ..case("space in script", req(Request::get("/dir/sp%20ace.php/p")))
        },
        Case {
            expect: &[("srv.SCRIPT_NAME", "/\u{fc}/\u{ef}.php")],
            ..case(
                "UTF-8 script",
                req(Request::get("/%C3%BC/%C3%AF.php/%C3%A9?z")),
            )
        },
        Case {
            expect: &[("srv.SCRIPT_NAME", "/dump.php")],
            ..case("encoded name", req(Request::get("/du%6dp.php")))
        },
        case("dot segments", req(Request::get("/sub/../dump.php"))),
        Case {
            // refused (AllowEncodedSlashes Off): the 404 ErrorDocument is the script
            expect: &[("srv.REQUEST_URI", "/dump.php%2Fx")],
            ..case("encoded slash", req(Request::get("/dump.php%2Fx")))
        },
        case("double slash", req(Request::get("//dump.php"))),
        Case {
            expect: &[
                ("srv.SCRIPT_NAME", "/sub/index.php"),
                ("sf.basePath", "/sub"),
            ],
            ..case("directory index", req(Request::get("/sub/")))
        },
        case("root index", req(Request::get("/?r=1"))),
        Case {
            expect: &[
                ("sf.baseUrl", "/front"),
                ("sf.pathInfo", "/users/42/edit"),
                ("srv.DIRVAR", "front"),
            ],
            ..case(
                "front controller",
                req(Request::get("/front/users/42/edit?tab=2")),
            )
        },
        Case {
            expect: &[("sf.baseUrl", "/front"), ("sf.pathInfo", "/")],
            ..case("front controller root", req(Request::get("/front/")))
        },
        case(
            "front controller direct",
            req(Request::get("/front/index.php/users/7")),
        ),
        Case {
            expect: &[
                ("srv.QUERY_STRING", "x=abc&y=2"),
                ("srv.SCRIPT_NAME", "/rw/target.php"),
            ],
            ..case("directory rewrite", req(Request::get("/rw/go/abc?y=2")))
        },
        Case {
            expect: &[("srv.PATH_INFO", "/a/b"), ("srv.QUERY_STRING", "s=1&t=9")],
            ..case("server rewrite", req(Request::get("/srv/a/b?t=9")))
        },
        Case {
            expect: &[
                ("srv.SCRIPT_NAME", "/aliased/dump.php"),
                ("srv.CONTEXT_PREFIX", "/aliased"),
            ],
            ..case("alias", req(Request::get("/aliased/dump.php/z?k")))
        },
        Case {
            expect: &[("srv.REQUEST_URI", "/missing/page?x=2")],
            ..case("error document", req(Request::get("/missing/page?x=2")))
        },
        Case {
            expect: &[("php.post", "{\"a\":\"1\",\"b\":\"\u{fc}\"}")],
            ..case(
                "form post",
                req(Request::post("/dump.php", "a=1&b=%C3%BC").header(
                    "Content-Type",
                    "application/x-www-form-urlencoded; charset=UTF-8",
                )),
            )
        },
        case(
            "json",
            req(Request::post("/dump.php/api", "{\"a\":[1,2]}")
                .header("Content-Type", "application/json")),
        ),
        Case {
            expect: &[("php.post", "{\"title\":\"d\u{e9}j\u{e0} vu\"}")],
            ..case(
                "multipart upload",
                req(Request::post("/dump.php", upload).header(
                    "Content-Type",
                    &format!("multipart/form-data; boundary={boundary}"),
                )),
            )
        },
        Case {
            also_differ: &["srv.CONTENT_LENGTH"],
            expect: &[("php.post", "{\"a\":\"1\",\"c\":\"3\"}")],
            ..case(
                "chunked",
                req(
                    Request::post("/dump.php", &b"3\r\na=1\r\n4\r\n&c=3\r\n0\r\n\r\n"[..])
                        .header("Transfer-Encoding", "chunked")
                        .header("Content-Type", "application/x-www-form-urlencoded"),
                ),
            )
        },
        case("expect 100-continue", {
            let mut r = Request::new("PUT", "/dump.php/f")
                .header("Expect", "100-continue")
                .header("Content-Type", "text/plain");
            r.body = big;
            req(r)
        }),
        Case {
            // `Authorization` reaches the application by -pass-header in the module's recipe only
            also_differ: &["srv.HTTP_AUTHORIZATION", "sf.authorization"],
            expect: &[("srv.PHP_AUTH_USER", "al ice"), ("srv.PHP_AUTH_PW", "p:w")],
            ..case(
                "basic credentials",
                req(Request::get("/dump.php").header("Authorization", "Basic YWwgaWNlOnA6dw==")),
            )
        },
        Case {
            expect: &[
                ("srv.HTTP_X_FOO", "a, b"),
                ("srv.HTTP_PROXY", "<unset>"),
                ("srv.HTTP_COOKIE", "a=1, b=2"),
                ("php.cookie", "{\"a\":\"1, b=2\"}"),
            ],
            ..case(
                "repeated headers",
                req(Request::get("/dump.php")
                    .header("X-Foo", "a")
                    .header("X-Foo", "b")
                    .header("Cookie", "a=1")
                    .header("Cookie", "b=2")
                    .header("X_Foo", "underscore")
                    .header("Proxy", "http://evil.test:3128")),
            )
        },
        case(
            "HTTP/1.0 without Host",
            b"GET /dump.php/x?y HTTP/1.0\r\n\r\n".to_vec(),
        ),
        Case {
            head: true,
            ..case("HEAD", req(Request::head("/dump.php")))
        },
        case("OPTIONS", req(Request::new("OPTIONS", "/dump.php"))),
    ]
}

/// Keys the recipe itself sets as mod_fastcgi did: the internal redirect to the virtual path
/// (mod_actions renames the script request's variables `REDIRECT_…` and adds its own), the
/// virtual path's Alias (`CONTEXT_PREFIX` and `CONTEXT_DOCUMENT_ROOT`; the spec's table of
/// what php-fpm receives) and php-fpm's `ORIG_…` copies of what it rewrote. Checked for what
/// they must be in `recipe_values`.
fn recipe_key(k: &str) -> bool {
    k.starts_with("srv.REDIRECT_")
        || k.starts_with("srv.ORIG_")
        || k == "srv.CONTEXT_PREFIX"
        || k == "srv.CONTEXT_DOCUMENT_ROOT"
}

/// The recipe's own variables in the module's answer: the virtual path's, as mod_fastcgi
/// sent them (`CONTEXT_…`), and what php-fpm kept of them (`ORIG_…`); for the ErrorDocument,
/// the error's status one redirect further back than mod_php has it.
fn recipe_values(
    c: &Case,
    vpath: &str,
    mod_php: &BTreeMap<String, String>,
    ours: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut want = vec![
        ("srv.CONTEXT_PREFIX", "/php.fcgi"),
        ("srv.CONTEXT_DOCUMENT_ROOT", vpath),
        ("srv.ORIG_SCRIPT_NAME", "/php.fcgi"),
        ("srv.ORIG_SCRIPT_FILENAME", vpath),
    ];
    let mut bad = Vec::new();
    if c.name == "error document" {
        want.push(("srv.REDIRECT_REDIRECT_STATUS", "404"));
        if mod_php.get("srv.REDIRECT_STATUS").map(String::as_str) != Some("404") {
            bad.push(format!(
                "{}: mod_php's REDIRECT_STATUS is {:?}, not 404",
                c.name,
                mod_php.get("srv.REDIRECT_STATUS")
            ));
        }
    }
    for (k, v) in want {
        if ours.get(k).map(String::as_str) != Some(v) {
            bad.push(format!(
                "{}: the module's {k} is {:?}, mod_fastcgi's recipe gives {v:?}",
                c.name,
                ours.get(k)
            ));
        }
    }
    bad
}

fn fetch(port: u16, c: &Case) -> Result<Response, String> {
    http::fetch_raw(port, &c.raw, c.head).map_err(|e| format!("{}: port {port}: {e}", c.name))
}

fn same_as_mod_php(ctx: &Ctx) -> Result<(), String> {
    for f in [SYMFONY, GUZZLE] {
        ensure(Path::new(f).is_file(), || {
            format!(
                "{f} missing: `make deps-test` installs php-symfony-http-foundation and php-guzzlehttp-psr7"
            )
        })?;
    }
    let root = PathBuf::from(ctx.val("modphp_root"));
    let vpath = ctx.val("modphp_vpath");
    let mut modphp = start_mod_php(ctx, &root)?;
    let theirs = modphp.conf.vhosts[0].port;
    let ours = ctx.vhost(ID).port;
    let mut failures = Vec::new();
    let mut compared = 0usize;
    for c in cases() {
        let (a, b) = (fetch(theirs, &c)?, fetch(ours, &c)?);
        if a.status != b.status {
            failures.push(format!(
                "{}: status {} under mod_php, {} through the module",
                c.name, a.status, b.status
            ));
            continue;
        }
        if c.head {
            ensure(a.body.is_empty() && b.body.is_empty(), || {
                format!("{}: a HEAD answer carried a body", c.name)
            })?;
            continue;
        }
        let (ka, kb): (BTreeMap<String, String>, BTreeMap<String, String>) = (a.kv(), b.kv());
        if !ka.contains_key("srv.SCRIPT_NAME") {
            failures.push(format!(
                "{}: mod_php's answer is not the script's: {}",
                c.name,
                a.summary()
            ));
            continue;
        }
        for (k, want) in c.expect {
            if ka.get(*k).map(String::as_str) != Some(*want) {
                failures.push(format!(
                    "{}: under mod_php {k} is {:?}, the case expects {want:?}",
                    c.name,
                    ka.get(*k)
                ));
            }
        }
        failures.extend(recipe_values(&c, vpath, &ka, &kb));
        let keys: std::collections::BTreeSet<&String> = ka.keys().chain(kb.keys()).collect();
        for k in keys {
            if recipe_key(k) || c.also_differ.contains(&k.as_str()) {
                continue;
            }
            compared += 1;
            let (va, vb) = (ka.get(k), kb.get(k));
            if va != vb {
                failures.push(format!(
                    "{}: {k}: mod_php {va:?}, the module {vb:?}",
                    c.name
                ));
            }
        }
    }
    modphp.stop();
    ensure(failures.is_empty(), || {
        format!(
            "{} differences from mod_php:\n    {}",
            failures.len(),
            failures.join("\n    ")
        )
    })?;
    if std::env::var_os("MFCGI_VERBOSE").is_some() {
        eprintln!(
            "    {} requests, {compared} values equal to mod_php's",
            cases().len()
        );
    }
    Ok(())
}

/// A response as the client sees it, for comparison: status, the headers but those of the
/// moment (`Date`, `Server`, `Keep-Alive`, `Connection`), in order, a session id replaced by a
/// mark, and the body.
fn response_shape(r: &Response) -> (u16, Vec<String>, Vec<u8>) {
    let headers = r
        .headers
        .iter()
        .filter(|(k, _)| {
            !["date", "server", "keep-alive", "connection"]
                .contains(&k.to_ascii_lowercase().as_str())
        })
        .map(|(k, v)| {
            let v = match v.split_once("PHPSESSID=") {
                Some((a, b)) => {
                    let rest = b
                        .split_once(';')
                        .map(|(_, r)| format!(";{r}"))
                        .unwrap_or_default();
                    format!("{a}PHPSESSID=<id>{rest}")
                }
                None => v.clone(),
            };
            format!("{}: {v}", k.to_ascii_lowercase())
        })
        .collect();
    (r.status, headers, r.body.clone())
}

/// What the client gets when a script sets statuses, headers and cookies, compresses its
/// output or sends none: the same under mod_php and through the module, headers (order and
/// repeats included) and body, for GET and HEAD. (A `Status:` header and a `Location` with a
/// 200 are CGI's and mod_fastcgi's rules, which mod_php does not follow: *Request and
/// response*, and the conformance suite.)
fn responses_as_mod_php(ctx: &Ctx) -> Result<(), String> {
    let root = PathBuf::from(ctx.val("modphp_root"));
    let mut modphp = start_mod_php(ctx, &root)?;
    let theirs = modphp.conf.vhosts[0].port;
    let ours = ctx.vhost(ID).port;
    let mut failures = Vec::new();
    for m in RESP_MODES {
        for head in [false, true] {
            let target = format!("/resp.php?m={m}");
            let r = if head {
                Request::head(&target)
            } else {
                Request::get(&target)
            };
            let c = Case {
                head,
                ..case("response", req(r.header("Accept-Encoding", "gzip")))
            };
            let (a, b) = (fetch(theirs, &c)?, fetch(ours, &c)?);
            let (sa, sb) = (response_shape(&a), response_shape(&b));
            if sa != sb {
                failures.push(format!(
                    "{} {target}: mod_php {} {:?} ({} body bytes), the module {} {:?} ({} body bytes)",
                    if head { "HEAD" } else { "GET" },
                    sa.0,
                    sa.1,
                    sa.2.len(),
                    sb.0,
                    sb.1,
                    sb.2.len()
                ));
            }
        }
    }
    modphp.stop();
    ensure(failures.is_empty(), || {
        format!(
            "{} responses differ from mod_php's:\n    {}",
            failures.len(),
            failures.join("\n    ")
        )
    })
}

fn log_clean(ctx: &Ctx) -> Result<(), String> {
    crate::apps::only_app_stderr(ctx, &[ID])
}
