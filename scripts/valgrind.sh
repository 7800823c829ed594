#!/usr/bin/env bash
# Memory check of the module under valgrind: a private Apache (prefork, single process:
# `apache2 -X`) loading the module, a private php-fpm on a unix socket, a representative set
# of requests (GET with a query, PATH_INFO, POST 1 MiB with Content-Length and chunked, a
# 5 MiB response, HEAD, Location redirects, a connect failure), then Apache is stopped and the
# valgrind log is checked.
#
# Fails if a request gets a wrong answer, if valgrind reports any invalid read/write/free, or
# a definite leak whose stack contains mod_fastcgi (httpd's own at-exit leaks are not ours).
#
# Environment: MOD_FASTCGI_SO (default <repo>/target/release/libmod_fastcgi.so),
#   APACHE2, PHP_FPM, VALGRIND_KEEP=1 (keep the work dir), VALGRIND_PORT (default: free port).
# Installs valgrind with apt-get when missing (root only).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
SO=${MOD_FASTCGI_SO:-$REPO/target/release/libmod_fastcgi.so}
APACHE2=${APACHE2:-/usr/sbin/apache2}
MODDIR=/usr/lib/apache2/modules
say() { printf 'valgrind.sh: %s\n' "$*"; }
die() { printf 'valgrind.sh: ERROR: %s\n' "$*" >&2; exit 1; }

if ! command -v valgrind >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "valgrind missing; install it: apt-get install valgrind"
    say "installing valgrind"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 valgrind
fi
[ -f "$SO" ] || die "module $SO missing (make build)"
[ -x "$APACHE2" ] || die "apache2 not found: $APACHE2"
PHP_FPM=${PHP_FPM:-$(find /usr/sbin /usr/local/sbin -maxdepth 1 -name 'php-fpm*' 2>/dev/null | sort -V | tail -n 1)}
[ -n "$PHP_FPM" ] && [ -x "$PHP_FPM" ] || die "php-fpm not found"
command -v curl >/dev/null || die "curl missing"

W=$(mktemp -d /tmp/mfcgi-valgrind.XXXXXX)
chmod 755 "$W"
mkdir -p "$W/htdocs" "$W/logs" "$W/run" "$W/conf"
PORT=${VALGRIND_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18089)}
FPM_PID=""; HTTPD_PID=""
cleanup() {
    # only the processes this script started, by PID
    if [ -n "$HTTPD_PID" ] && kill -0 "$HTTPD_PID" 2>/dev/null; then kill -TERM "$HTTPD_PID" 2>/dev/null || true; sleep 2; kill -KILL "$HTTPD_PID" 2>/dev/null || true; fi
    if [ -n "$FPM_PID" ] && kill -0 "$FPM_PID" 2>/dev/null; then kill -TERM "$FPM_PID" 2>/dev/null || true; fi
    if [ "${VALGRIND_KEEP:-0}" = 1 ] || [ "${FAILED:-0}" = 1 ]; then say "work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

RUN_USER=www-data
if [ "$(id -u)" -ne 0 ]; then RUN_USER=$(id -un); fi
RUN_GROUP=$(id -gn "$RUN_USER")
chown -R "$RUN_USER:$RUN_GROUP" "$W/logs" 2>/dev/null || true

# --- php-fpm
cat >"$W/php-fpm.conf" <<CONF
[global]
error_log = $W/logs/php-fpm.log
pid = $W/run/php-fpm.pid
daemonize = no
[vg]
$( [ "$(id -u)" -eq 0 ] && printf 'user = %s\ngroup = %s\n' "$RUN_USER" "$RUN_GROUP" )
listen = $W/run/fpm.sock
listen.mode = 0666
pm = static
pm.max_children = 2
php_admin_value[post_max_size] = 64M
php_admin_value[memory_limit] = 256M
CONF
cat >"$W/htdocs/info.php" <<'PHP'
<?php
header('Content-Type: text/plain');
$in = file_get_contents('php://input');
foreach (['REQUEST_METHOD','QUERY_STRING','PATH_INFO','SCRIPT_NAME','CONTENT_LENGTH'] as $k)
    echo $k, '=', $_SERVER[$k] ?? '', "\n";
echo 'BODY_LEN=', strlen($in), "\nBODY_MD5=", md5($in), "\n";
PHP
cat >"$W/htdocs/big.php" <<'PHP'
<?php
header('Content-Type: application/octet-stream');
$piece = str_repeat('0123456789abcdef', 4096); // 64 KiB
for ($i = 0; $i < 80; $i++) echo $piece;       // 5 MiB
PHP
cat >"$W/htdocs/redir.php" <<'PHP'
<?php
// PHP adds `Status: 302` to a Location header; resetting the code to 200 drops it, so the
// module sees a bare local Location and redirects internally (CGI semantics).
if (isset($_GET['ext'])) header('Location: http://example.invalid/elsewhere');
else { header('Location: /info.php?redirected=1'); http_response_code(200); }
PHP
"$PHP_FPM" -F -y "$W/php-fpm.conf" >"$W/logs/php-fpm.out" 2>&1 &
FPM_PID=$!

# --- Apache (prefork, -X: one process, under valgrind)
cat >"$W/conf/mime.types" <<'M'
text/plain txt
M
cat >"$W/conf/httpd.conf" <<CONF
ServerRoot "$W"
DefaultRuntimeDir "$W/run"
PidFile "$W/run/httpd.pid"
ServerName localhost
User $RUN_USER
Group $RUN_GROUP
LoadModule mpm_prefork_module $MODDIR/mod_mpm_prefork.so
LoadModule authz_core_module $MODDIR/mod_authz_core.so
LoadModule mime_module $MODDIR/mod_mime.so
LoadModule alias_module $MODDIR/mod_alias.so
LoadModule actions_module $MODDIR/mod_actions.so
LoadModule fastcgi_module "$SO"
Listen 127.0.0.1:$PORT
Timeout 30
ErrorLog "$W/logs/error.log"
LogLevel warn fastcgi:debug
TypesConfig "$W/conf/mime.types"
DocumentRoot "$W/htdocs"
<Directory />
    Require all denied
</Directory>
<Directory "$W/htdocs">
    Require all granted
</Directory>
AddType application/x-httpd-fastphp5 .php
Action application/x-httpd-fastphp5 /php5.fcgi
Alias /php5.fcgi "$W/fcgi/php5.fcgi"
FastCgiExternalServer "$W/fcgi/php5.fcgi" -socket "$W/run/fpm.sock" -max-conns 2
Alias /dead "$W/fcgi/dead.fcgi"
FastCgiExternalServer "$W/fcgi/dead.fcgi" -socket "$W/run/nobody-listens.sock"
<Directory "$W/fcgi/">
    Require all granted
</Directory>
CONF
"$APACHE2" -t -f "$W/conf/httpd.conf" >/dev/null 2>&1 || { "$APACHE2" -t -f "$W/conf/httpd.conf"; FAILED=1; die "config test failed"; }

VGLOG="$W/logs/valgrind.log"
say "valgrind $(valgrind --version), apache $("$APACHE2" -v | sed -n 's/^Server version: //p'), module $SO, port $PORT"
t0=$(date +%s)
valgrind --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite \
    --num-callers=40 --log-file="$VGLOG" \
    "$APACHE2" -X -f "$W/conf/httpd.conf" >"$W/logs/httpd.out" 2>&1 &
HTTPD_PID=$!
for _ in $(seq 1 240); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
    kill -0 "$HTTPD_PID" 2>/dev/null || { FAILED=1; cat "$VGLOG" "$W/logs/error.log" 2>/dev/null | tail -30; die "apache under valgrind exited at startup"; }
    sleep 0.5
done
[ -S "$W/run/fpm.sock" ] || { FAILED=1; die "php-fpm socket missing: $(tail -5 "$W/logs/php-fpm.log" 2>/dev/null)"; }
say "apache up under valgrind after $(( $(date +%s) - t0 ))s"

# --- requests
U="http://127.0.0.1:$PORT"
fails=0; n=0
# check NAME WANT_STATUS GREP_PATTERN|'' curl-args...
check() {
    local name=$1 want=$2 pat=$3; shift 3
    n=$((n + 1))
    local out="$W/logs/resp.$n" code
    code=$(curl -sS --max-time 120 -o "$out" -w '%{http_code}' "$@" 2>"$out.err") || code="curl-exit-$?"
    if [ "$code" != "$want" ]; then
        say "FAIL $name: status $code, want $want ($(head -c 300 "$out" "$out.err" 2>/dev/null | tr '\n' ' '))"; fails=$((fails + 1)); return
    fi
    if [ -n "$pat" ] && ! grep -qE -- "$pat" "$out"; then
        say "FAIL $name: body lacks /$pat/: $(head -c 300 "$out" | tr '\n' ' ')"; fails=$((fails + 1)); return
    fi
    say "ok   $name ($code, $(stat -c %s "$out") bytes)"
}
head -c 1048576 /dev/urandom >"$W/body.bin"
md5=$(md5sum "$W/body.bin" | cut -d' ' -f1)
check "GET with query"      200 '^QUERY_STRING=a=1&b=x%20y$'   "$U/info.php?a=1&b=x%20y"
check "PATH_INFO"           200 '^PATH_INFO=/extra/path$'      "$U/info.php/extra/path?p=1"
check "POST 1 MiB (C-L)"    200 "^BODY_MD5=$md5\$"             --data-binary @"$W/body.bin" -H 'Content-Type: application/octet-stream' "$U/info.php"
check "POST 1 MiB chunked"  200 "^BODY_MD5=$md5\$"             --data-binary @"$W/body.bin" -H 'Content-Type: application/octet-stream' -H 'Transfer-Encoding: chunked' "$U/info.php"
check "5 MiB response"      200 ''                             "$U/big.php"
size=$(stat -c %s "$W/logs/resp.$n"); if [ "$size" != 5242880 ]; then say "FAIL 5 MiB response: $size bytes"; fails=$((fails + 1)); fi
check "HEAD"                200 ''                             -I "$U/info.php?head=1"
check "Location (internal)" 200 '^QUERY_STRING=redirected=1$'  "$U/redir.php"
check "Location (URL)"      302 ''                             "$U/redir.php?ext=1"
check "connect failure"     503 ''                             "$U/dead/x"
check "GET after failures"  200 '^REQUEST_METHOD=GET$'         "$U/info.php?again=1"

# --- stop Apache (graceful stop of the single process), then read valgrind's verdict
kill -TERM "$HTTPD_PID"
for _ in $(seq 1 120); do kill -0 "$HTTPD_PID" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$HTTPD_PID" 2>/dev/null; then FAILED=1; die "apache did not stop within 60 s"; fi
wait "$HTTPD_PID" 2>/dev/null || true
HTTPD_PID=""
say "requests: $n sent, $fails failed; total $(( $(date +%s) - t0 ))s under valgrind"

echo "--- valgrind summary:"
grep -E 'ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|still reachable' "$VGLOG" | sed 's/^==[0-9]*== *//' | sort | uniq -c
invalid=$(grep -cE 'Invalid (read|write|free)|Mismatched free|Source and destination overlap' "$VGLOG" || true)
# loss records ("... definitely lost in loss record ...") up to the next empty "==pid== " line
ours=$(awk '/definitely lost in loss record/ {rec=1; buf=$0; next}
            rec && /^==[0-9]+== *$/ {rec=0; if (buf ~ /mod_fastcgi/) {n++; print buf > "/dev/stderr"}; next}
            rec {buf = buf "\n" $0}
            END {print n+0}' "$VGLOG" 2>"$W/logs/our-leaks.txt")
definite=$(grep -c 'definitely lost in loss record' "$VGLOG" || true)
say "invalid accesses: $invalid; definite-leak records: $definite, with mod_fastcgi in the stack: $ours"
if [ "$invalid" -gt 0 ]; then
    grep -E -A25 'Invalid (read|write|free)|Mismatched free|Source and destination overlap' "$VGLOG" | head -120
fi
[ "$ours" -gt 0 ] && head -150 "$W/logs/our-leaks.txt"
if [ "$fails" -gt 0 ] || [ "$invalid" -gt 0 ] || [ "$ours" -gt 0 ]; then
    FAILED=1
    say "FAILED (log: $VGLOG)"
    exit 1
fi
say "clean"
