#!/usr/bin/env bash
# Hosting scale (`make bench-many`; not part of `make test`): N name-based vhosts, each with its
# own FastCgiExternalServer (one php-fpm pool per site), against the same N vhosts without the
# FastCgiExternalServer lines. Prints the time `apache2 -t` takes, the RSS of the parent and of
# each child a few seconds after start, and the CPU time an idle child uses over IDLE_SECS.
# Nothing is requested: this is the cost of the configuration itself.
#
# Settings: N=500 IDLE_SECS=10 APACHE_MPM=event MOD_FASTCGI_SO=... OPTS="-max-conns 2"
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
N=${N:-500}
IDLE_SECS=${IDLE_SECS:-10}
APACHE_MPM=${APACHE_MPM:-event}
OPTS=${OPTS:--max-conns 2}
MODDIR=/usr/lib/apache2/modules

die() { echo "many: ERROR: $*" >&2; exit 1; }
# shared with run.sh and paired.sh: pick_port
. "$HERE/lib.sh"

[ -x /usr/sbin/apache2 ] || die "apache2 missing: run 'make deps' as root"
if [ -z "${MOD_FASTCGI_SO:-}" ]; then
    (cd "$REPO" && cargo build --release -q)
    MOD_FASTCGI_SO="$REPO/target/release/libmod_fastcgi.so"
fi

RUN=$(mktemp -d /tmp/mfcgi-many.XXXXXX)
chmod 755 "$RUN"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$RUN"
}
trap cleanup EXIT

mkdir -p "$RUN/www"
echo ok >"$RUN/www/index.html"

# conf NAME WITH_FCGI(0|1) PORT
conf() {
    local f="$RUN/$1.conf" i m
    {
        echo "ServerRoot \"$RUN\""
        echo "PidFile \"$RUN/$1.pid\""
        echo "DefaultRuntimeDir \"$RUN\""
        echo "ServerName localhost"
        [ "$(id -u)" -eq 0 ] && printf 'User www-data\nGroup www-data\n'
        echo "LoadModule mpm_${APACHE_MPM}_module $MODDIR/mod_mpm_${APACHE_MPM}.so"
        for m in authz_core mime alias actions dir; do echo "LoadModule ${m}_module $MODDIR/mod_$m.so"; done
        echo "LoadModule fastcgi_module \"$MOD_FASTCGI_SO\""
        echo "ErrorLog \"$RUN/$1.error.log\""
        echo "TypesConfig /dev/null"
        echo "Listen 127.0.0.1:$3"
        echo "StartServers 2"
        for ((i = 0; i < N; i++)); do
            echo "<VirtualHost 127.0.0.1:$3>"
            echo "ServerName site$i.test"
            echo "DocumentRoot \"$RUN/www\""
            echo "AddType application/x-httpd-fastphp .php"
            echo "Action application/x-httpd-fastphp /php.fcgi"
            echo "Alias /php.fcgi /nonexistent/site$i/php.fcgi"
            [ "$2" = 1 ] && echo "FastCgiExternalServer /nonexistent/site$i/php.fcgi -socket /run/php/site$i.sock $OPTS"
            echo "</VirtualHost>"
        done
    } >"$f"
}

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

printf 'many: %d vhosts, MPM %s, FastCgiExternalServer options: %s\n' "$N" "$APACHE_MPM" "$OPTS"
printf '%-28s %10s %14s %18s %22s\n' variant "-t (s)" "parent RSS KB" "child RSS KB" "idle child CPU ms/${IDLE_SECS}s"
for v in with without; do
    w=0; [ $v = with ] && w=1
    p=$(pick_port)
    conf "$v" "$w" "$p"
    t0=$(date +%s.%N)
    /usr/sbin/apache2 -t -f "$RUN/$v.conf" >/dev/null 2>&1 || { echo "many: $v: apache2 -t failed" >&2; /usr/sbin/apache2 -t -f "$RUN/$v.conf"; exit 1; }
    t1=$(date +%s.%N)
    /usr/sbin/apache2 -f "$RUN/$v.conf" -DFOREGROUND >"$RUN/$v.out" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    sleep 3
    kids=$(ps -o pid= --ppid "$pid" | tr -d ' ' | tr '\n' ' ')
    kid=${kids%% *}
    [ -n "$kid" ] || { echo "many: $v: no child process" >&2; cat "$RUN/$v.error.log" >&2; exit 1; }
    c0=$(ticks "$kid")
    sleep "$IDLE_SECS"
    c1=$(ticks "$kid")
    krss=$(for k in $kids; do rss "$k"; done | sort -n | tail -1)
    printf '%-28s %10.3f %14s %18s %22s\n' "$v FastCgiExternalServer" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        "$(rss "$pid")" "$krss" "$(((c1 - c0) * 1000 / $(getconf CLK_TCK)))"
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
done
