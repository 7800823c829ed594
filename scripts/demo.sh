#!/usr/bin/env bash
# scripts/demo.sh start|stop|status — private Apache + php-fpm demo for mod_fastcgi-rs.
# Used by `make demo` / `make demo-stop`; can also be run by hand.
#
# Environment:
#   DEMO_PORT       listen port on 127.0.0.1 (default 8080)
#   DEMO_MPM        event|worker|prefork (default event)
#   DEMO_DIR        runtime directory (default: see below)
#   MOD_FASTCGI_SO  module to load (default <repo>/target/release/mod_fastcgi.so)
#   APACHE2, PHP_FPM  override the server binaries
#
# Runtime directory: <repo>/.demo when Apache's run user (www-data) can reach it.
# When started as root from a repository www-data cannot traverse (e.g. below
# /root, mode 0700) it is /tmp/mod_fastcgi-demo instead, and <repo>/.demo is made
# a symlink to it, so the logs are always found under <repo>/.demo/logs.
# Not as root: everything runs as the invoking user and <repo>/.demo is used.
#
# Servers are started detached (setsid, stdio to log files, never a pipe) and
# stopped by the PIDs in their pid files; nothing else is ever signalled.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
TEMPLATES="$REPO/conf-examples/demo"
PORT=${DEMO_PORT:-8080}
MPM=${DEMO_MPM:-event}
MODULE=${MOD_FASTCGI_SO:-$REPO/target/release/mod_fastcgi.so}
RUN_USER=${DEMO_USER:-www-data}
RUN_GROUP=${DEMO_GROUP:-www-data}
FALLBACK_DIR=/tmp/mod_fastcgi-demo

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Can $RUN_USER search (traverse) directory $1?
user_can_traverse() {
    is_root || return 0
    runuser -u "$RUN_USER" -- test -x "$1" 2>/dev/null
}

pick_dir() {
    if [ -n "${DEMO_DIR:-}" ]; then
        D=$DEMO_DIR
    elif user_can_traverse "$REPO"; then
        D="$REPO/.demo"
    else
        D=$FALLBACK_DIR
    fi
}

find_apache() {
    APACHE2=${APACHE2:-$(command -v apache2 || command -v httpd || echo /usr/sbin/apache2)}
    [ -x "$APACHE2" ] || die "apache2 not found (run 'make deps')"
}

find_fpm() {
    if [ -z "${PHP_FPM:-}" ]; then
        PHP_FPM=$(command -v php-fpm || true)
        if [ -z "$PHP_FPM" ]; then
            # Debian: /usr/sbin/php-fpm8.2 (highest version wins)
            PHP_FPM=$(find /usr/sbin /usr/local/sbin -maxdepth 1 -name 'php-fpm*' 2>/dev/null | sort -V | tail -n 1)
        fi
    fi
    if [ -z "$PHP_FPM" ] || [ ! -x "$PHP_FPM" ]; then die "php-fpm not found (run 'make deps')"; fi
}

# pid_alive PID 'GLOB...': running (not a zombie) and its executable's name matches a glob.
pid_alive() {
    local pid=$1 pat=$2 exe state
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo X)
    [ "$state" != Z ] && [ "$state" != X ] || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    exe=${exe##*/}
    local p pats
    read -ra pats <<<"$pat"      # no pathname expansion of the globs
    for p in "${pats[@]}"; do
        # shellcheck disable=SC2254
        case "$exe" in $p) return 0 ;; esac
    done
    return 1
}

# stop_pidfile FILE NAME-PATTERN LABEL
stop_pidfile() {
    local f=$1 pat=$2 label=$3 pid
    [ -f "$f" ] || return 0
    pid=$(tr -dc '0-9' <"$f")
    if pid_alive "$pid" "$pat"; then
        say "stopping $label (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            pid_alive "$pid" "$pat" || break
            sleep 0.1
        done
        if pid_alive "$pid" "$pat"; then
            say "$label (pid $pid) ignored SIGTERM for 10s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    fi
    rm -f "$f"
}

do_stop() {
    pick_dir
    if [ ! -d "$D/run" ]; then
        say "nothing to stop (no $D/run)"
        return 0
    fi
    stop_pidfile "$D/run/httpd.pid" 'apache2* httpd*' apache2
    stop_pidfile "$D/run/php-fpm.pid" 'php-fpm* php*-fpm*' php-fpm
    rm -f "$D/run/php-fpm.sock"
    say "stopped"
}

do_status() {
    pick_dir
    local a=stopped p=stopped pid
    pid=$({ tr -dc "0-9" <"$D/run/httpd.pid"; } 2>/dev/null || true)
    pid_alive "$pid" 'apache2* httpd*' && a="running (pid $pid)"
    pid=$({ tr -dc "0-9" <"$D/run/php-fpm.pid"; } 2>/dev/null || true)
    pid_alive "$pid" 'php-fpm* php*-fpm*' && p="running (pid $pid)"
    say "dir $D; apache2 $a; php-fpm $p"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

show_logs() {
    local f
    for f in "$D"/logs/*.log "$D"/logs/*.out; do
        [ -s "$f" ] || continue
        printf -- '----- %s (last 20 lines)\n' "$f" >&2
        tail -n 20 "$f" >&2
    done
}

fail_start() {
    printf 'demo: ERROR: %s\n' "$*" >&2
    show_logs
    do_stop >&2 || true
    exit 1
}

subst() {  # subst TEMPLATE OUTPUT
    sed -e "s|@DEMO_DIR@|$D|g" -e "s|@PORT@|$PORT|g" -e "s|@MPM@|$MPM|g" \
        -e "s|@MODDIR@|$MODDIR|g" -e "s|@MODULE@|$MODULE|g" \
        -e "s|@RUN_USER@|$RUN_USER|g" -e "s|@RUN_GROUP@|$RUN_GROUP|g" \
        -e "s|@HTTPD_ROOTONLY@|$HTTPD_ROOTONLY|g" -e "s|@FPM_ROOTONLY@|$FPM_ROOTONLY|g" \
        "$1" >"$2"
}

do_start() {
    find_apache
    find_fpm
    command -v curl >/dev/null || die "curl not found (run 'make deps')"
    [ -f "$MODULE" ] || die "module $MODULE not found (run 'make build')"
    case "$MPM" in event|worker|prefork) ;; *) die "DEMO_MPM must be event, worker or prefork" ;; esac
    case "$PORT" in ''|*[!0-9]*) die "DEMO_PORT must be a number" ;; esac
    MODULE=$(cd "$(dirname "$MODULE")" && pwd -P)/$(basename "$MODULE")

    do_stop                      # `make demo` twice: replace the previous instance
    pick_dir
    port_in_use "$PORT" && die "127.0.0.1:$PORT is already in use (set DEMO_PORT=...)"

    if [ "$D" = "$FALLBACK_DIR" ]; then
        say "$REPO is not traversable by $RUN_USER; using $FALLBACK_DIR"
        mkdir -p "$D"
        { [ -O "$D" ] && [ ! -L "$D" ]; } || die "$D exists but is not a directory owned by $(id -un)"
        if [ ! -e "$REPO/.demo" ] || [ -L "$REPO/.demo" ]; then
            ln -sfn "$D" "$REPO/.demo"
        fi
    fi
    mkdir -p "$D"/{conf,htdocs,logs,run}
    rm -f "$D"/logs/*            # fresh logs for every start
    chmod 0755 "$D" "$D"/{conf,htdocs,logs,run}
    rm -rf "$D/fastcgi"          # the virtual path's parent must NOT exist
    user_can_traverse "$D/htdocs" || die "$RUN_USER cannot reach $D/htdocs"

    MODDIR=$(apxs -q LIBEXECDIR 2>/dev/null || echo /usr/lib/apache2/modules)
    if is_root; then
        HTTPD_ROOTONLY='' FPM_ROOTONLY=''
    else
        HTTPD_ROOTONLY='# ' FPM_ROOTONLY='; '
    fi
    subst "$TEMPLATES/httpd.conf.in" "$D/conf/httpd.conf"
    subst "$TEMPLATES/php-fpm.conf.in" "$D/conf/php-fpm.conf"
    install -m 0644 "$TEMPLATES/index.php" "$D/htdocs/index.php"
    if [ -f /etc/mime.types ]; then cp /etc/mime.types "$D/conf/mime.types"; else : >"$D/conf/mime.types"; fi

    local HTTPD=("$APACHE2" -d "$D" -f "$D/conf/httpd.conf")
    say "checking config: ${HTTPD[*]} -t"
    "${HTTPD[@]}" -t >"$D/logs/httpd-configtest.out" 2>&1 \
        || { cat "$D/logs/httpd-configtest.out" >&2; die "Apache config test failed"; }

    say "starting php-fpm: $PHP_FPM -y $D/conf/php-fpm.conf"
    setsid "$PHP_FPM" -y "$D/conf/php-fpm.conf" </dev/null >>"$D/logs/php-fpm.out" 2>&1 \
        || fail_start "php-fpm did not start"

    for _ in $(seq 1 100); do [ -S "$D/run/php-fpm.sock" ] && break; sleep 0.1; done
    [ -S "$D/run/php-fpm.sock" ] || fail_start "php-fpm socket $D/run/php-fpm.sock did not appear"

    say "starting apache2 ($MPM MPM): ${HTTPD[*]} -k start"
    setsid "${HTTPD[@]}" -k start </dev/null >>"$D/logs/httpd.out" 2>&1 \
        || fail_start "apache2 did not start"

    local url="http://127.0.0.1:$PORT/index.php" ok=
    for _ in $(seq 1 100); do
        if curl -fsS -o "$D/logs/index.out" "$url" 2>/dev/null; then ok=1; break; fi
        sleep 0.2
    done
    if [ -z "$ok" ]; then
        curl -sS -i "$url" >&2 || true
        fail_start "no successful answer from $url within 20s"
    fi
    say "curl -fsS $url"
    cat "$D/logs/index.out"
    echo
    say "running: $url   (apache2 pid $(cat "$D/run/httpd.pid"), php-fpm pid $(cat "$D/run/php-fpm.pid"))"
    say "logs in $D/logs; stop with 'make demo-stop'"
}

case "${1:-}" in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
