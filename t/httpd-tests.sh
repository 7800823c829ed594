#!/usr/bin/env bash
# httpd's own test framework (httpd-tests, the "perl-framework" that Debian ships in its
# apache2 source package for its autopkgtest) run over PHP served through this module:
# `make test-httpd` (part of `make test`). Nothing of it is kept in this repository: the
# source package is fetched with `apt-get source` into target/httpd-tests and used as it is,
# with three changes made in the copy that runs:
#   - its `need_php` check (written for mod_php) also accepts mod_fastcgi.c, so that the PHP
#     tests run instead of being skipped;
#   - t/conf/extra.conf.in gets the AddType/Action/Alias/FastCgiExternalServer recipe that
#     sends every .php file to a php-fpm pool this script starts (with register_argc_argv on,
#     which the suite sets for mod_php);
#   - the httpd.conf it starts from is Debian's apache2.conf with every module Debian ships
#     loaded, as Debian's autopkgtest builds it, plus this module.
# Tests run: every t/php/*.t but lookup.t and virtual.t, which call apache_lookup_uri() and
# virtual(), functions only mod_php has; the need_php4 tests are skipped by the suite itself
# (PHP 4 syntax), and both t/security tests that use PHP. They check, through Apache and
# php-fpm: query strings and argv, GET and POST variables, status codes set by PHP (404, 599),
# no 304 for a PHP page on If-Modified-Since, PATH_INFO and AcceptPathInfo (on, off, default),
# multipart bodies, includes.
#
# Settings: MPM=event|prefork|worker (default event), POOL=1 (the pool on: -max-conns 4),
# MOD_FASTCGI_SO (default target/release/mod_fastcgi.so), KEEP=1 (keep the temp dir).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SO=${MOD_FASTCGI_SO:-$REPO/target/release/mod_fastcgi.so}
MPM=${MPM:-event}
POOL=${POOL:-0}
KEEP=${KEEP:-0}
CACHE="$REPO/target/httpd-tests"

log() { printf 'httpd-tests: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ -f "$SO" ] || die "$SO not built (make build)"
case $MPM in event | prefork | worker) ;; *) die "MPM must be event, prefork or worker" ;; esac
PHP_FPM=$(ls /usr/sbin/php-fpm* 2>/dev/null | head -1)
[ -n "$PHP_FPM" ] || die "php-fpm missing (make deps)"

# --- Perl modules the framework needs (Debian's autopkgtest list, the part the PHP tests use)
need=""
perl -MLWP::UserAgent -e1 2>/dev/null || need="$need libwww-perl"
perl -MHTML::HeadParser -e1 2>/dev/null || need="$need libhtml-parser-perl"
if [ -n "$need" ]; then
    [ "$(id -u)" -eq 0 ] || die "missing Perl modules; as root: apt-get install$need"
    log "installing:$need"
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 $need >/dev/null
fi

# --- The framework, from Debian's apache2 source package (once; kept in target/)
if [ ! -f "$CACHE/perl-framework/Makefile.PL" ]; then
    [ "$(id -u)" -eq 0 ] || die "fetching the apache2 source package needs root (apt)"
    if ! apt-get source --download-only --print-uris apache2 >/dev/null 2>&1; then
        # no deb-src entry: add one for the release the machine runs
        . /etc/os-release
        log "adding a deb-src entry for Debian $VERSION_CODENAME"
        printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$VERSION_CODENAME" >/etc/apt/sources.list.d/mod-fastcgi-rs-src.sources
        apt-get -o DPkg::Lock::Timeout=300 update -qq
    fi
    rm -rf "$CACHE" && mkdir -p "$CACHE/dl"
    (cd "$CACHE/dl" && apt-get source --download-only apache2 >/dev/null 2>&1) ||
        die "apt-get source apache2 failed"
    deb=$(ls "$CACHE"/dl/apache2_*.debian.tar.* | head -1)
    tar -xf "$deb" -C "$CACHE" debian/perl-framework
    mv "$CACHE/debian/perl-framework" "$CACHE/perl-framework"
    rmdir "$CACHE/debian"
    log "framework from $(basename "$deb")"
fi

# --- A copy to run in (the framework writes into its tree), readable by the test user
TMP=$(mktemp -d /tmp/mfcgi-httpd-tests.XXXXXX)
chmod 755 "$TMP"
FPM_PID=""
cleanup() {
    [ -n "$FPM_PID" ] && kill "$FPM_PID" 2>/dev/null || true
    if [ -f "$TMP/pf/t/conf/httpd.conf" ]; then (cd "$TMP/pf" && as_user t/TEST -stop-httpd >/dev/null 2>&1) || true; fi
    if [ "$KEEP" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
cp -a "$CACHE/perl-framework" "$TMP/pf"
# under the name the framework expects (it takes a module's name from its file name)
cp "$SO" "$TMP/mod_fastcgi.so"
cd "$TMP/pf"

# The framework refuses to run as root (httpd could not start its children): as root it runs
# as `nobody`, and so does the php-fpm pool, both reading the copy.
user=$(id -un)
group=$(id -gn)
as_user() { "$@"; }
if [ "$(id -u)" -eq 0 ]; then
    user=nobody
    group=$(id -gn nobody 2>/dev/null || echo nogroup)
    as_user() { runuser -u "$user" -g "$group" -- env HOME="$TMP" "$@"; }
fi

# need_php: also mod_fastcgi.c (the change must apply, or nothing of PHP would run)
perl -pi -e 's/_need_multi\(qw\(php4 php5 sapi_apache2\.c\)\)/_need_multi(qw(php4 php5 sapi_apache2.c mod_fastcgi.c))/' \
    Apache-Test/lib/Apache/Test.pm
grep -q 'qw(php4 php5 sapi_apache2.c mod_fastcgi.c)' Apache-Test/lib/Apache/Test.pm ||
    die "need_php in Apache-Test/lib/Apache/Test.pm has changed; cannot enable the PHP tests"

# php-fpm on a free loopback port
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$TMP/fpm"
cat >"$TMP/fpm/php-fpm.conf" <<EOF
[global]
error_log = $TMP/fpm/php-fpm.log
daemonize = no
[t]
$( [ "$(id -u)" -ne 0 ] || printf 'user = %s\ngroup = %s\n' "$user" "$group" )
listen = 127.0.0.1:$port
pm = static
pm.max_children = 4
catch_workers_output = yes
php_admin_flag[register_argc_argv] = on
EOF
"$PHP_FPM" -n -F -y "$TMP/fpm/php-fpm.conf" &
FPM_PID=$!
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

opts="-pass-header Authorization"
[ "$POOL" = 1 ] && opts="$opts -max-conns 4"
cat >>t/conf/extra.conf.in <<EOF

## added by mod_fastcgi-rs t/httpd-tests.sh: PHP through php-fpm on 127.0.0.1:$port
<IfModule mod_fastcgi.c>
    AddType application/x-httpd-fastphp .php
    Action application/x-httpd-fastphp /php.fcgi
    Alias /php.fcgi /nonexistent/fastcgi/php.fcgi
    FastCgiExternalServer /nonexistent/fastcgi/php.fcgi -host 127.0.0.1:$port $opts
    <Directory @SERVERROOT@/htdocs/php/multiviews>
        Options MultiViews
    </Directory>
</IfModule>
EOF

# httpd.conf to start from, as Debian's autopkgtest writes it, plus the module
set +u
. /etc/apache2/envvars
set -u
conf=$TMP/pf/apache2.conf.base
{
    sed 's,^Include,#Include,' /etc/apache2/apache2.conf
    cat "/etc/apache2/mods-available/mpm_$MPM.load"
    ls /etc/apache2/mods-available/*.load | grep -v -e mpm_ -e fastcgi | xargs cat
    cat /etc/apache2/mods-available/mime.conf
    echo "ServerName localhost"
    echo "LoadModule fastcgi_module $TMP/mod_fastcgi.so"
} >"$conf"
[ "$(id -u)" -ne 0 ] || chown -R "$user:$group" "$TMP/pf"

tests=$(ls t/php/*.t | grep -v -e '/lookup\.t$' -e '/virtual\.t$')
tests="$tests t/security/CVE-2004-0958.t t/security/CVE-2004-0959.t"
log "MPM=$MPM pool=$POOL module=$SO php-fpm=$PHP_FPM ($(echo $tests | wc -w) test files)"
as_user perl Makefile.PL -apxs /usr/bin/apxs2 -httpd_conf "$conf" >"$TMP/makefile.log" 2>&1 ||
    { cat "$TMP/makefile.log" >&2; die "perl Makefile.PL failed"; }
rc=0
# shellcheck disable=SC2086
as_user t/TEST -port select $tests >"$TMP/test.log" 2>&1 || rc=$?
grep -E '^t/|^Files=|^Result|Failed test' "$TMP/test.log" | grep -v ' ok$' >&2 || true

fail=0
grep -q '^Result: PASS' "$TMP/test.log" || { log "the framework did not report PASS (exit $rc)"; fail=1; }
# the PHP tests must have run, not been skipped for want of a PHP module
if grep -E '^t/(php|security)/.*skipped:' "$TMP/test.log" | grep -q 'mod_fastcgi'; then
    log "PHP tests were skipped: PHP did not count as available"; fail=1
fi
ran=$(sed -nE 's/^Files=[0-9]+, Tests=([0-9]+),.*/\1/p' "$TMP/test.log")
[ "${ran:-0}" -ge 60 ] || { log "only ${ran:-0} tests ran (expected 60 or more)"; fail=1; }
# one error-log line per failure, and none but the application's own stderr (FCGI040)
bad=$(grep -E '\[fastcgi:(emerg|alert|crit|error|warn)\]' t/logs/error_log | grep -v 'FCGI040' || true)
if [ -n "$bad" ]; then log "module errors in the log:"; printf '%s\n' "$bad" | head -20 >&2; fail=1; fi
if grep -qE 'exited on signal|SIGSEGV' "$TMP/fpm/php-fpm.log"; then log "php-fpm workers crashed"; fail=1; fi
if [ $fail = 1 ]; then
    log "FAILED (MPM=$MPM pool=$POOL); log: $TMP/test.log"
    KEEP=1
    exit 1
fi
log "passed: $ran tests (MPM=$MPM pool=$POOL)"
