# Helpers shared by benches/run.sh and benches/paired.sh (sourced; bash). They call the
# caller's die(); pick_port records the ports it hands out in the caller's USED_PORTS.

# render TEMPLATE OUT KEY=VALUE...  (replaces @KEY@; values may span lines)
render() {
    local tpl=$1 out=$2 text kv
    shift 2
    text=$(<"$tpl")
    for kv in "$@"; do text=${text//@${kv%%=*}@/${kv#*=}}; done
    printf '%s\n' "$text" >"$out"
}

port_free() { ! ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }

pick_port() {
    # 12000-19999: below the kernel's ephemeral range (32768+ on Debian), where outgoing
    # connections of a busy machine would make bind() fail, and apart from the test suite's
    # 20000-32000
    local p
    for _ in $(seq 200); do
        p=$((12000 + RANDOM % 8000))
        if port_free "$p" && [[ " ${USED_PORTS:-} " != *" $p "* ]]; then USED_PORTS="${USED_PORTS:-} $p"; echo "$p"; return; fi
    done
    die "no free port"
}

wait_port() { # port|socket-path pid
    local i
    for i in $(seq 200); do
        if ! kill -0 "$2" 2>/dev/null; then return 1; fi
        case $1 in
        /*) [ -S "$1" ] && return 0 ;;
        *) if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi ;;
        esac
        sleep 0.05
    done
    return 1
}

# RSS (MiB) of the server process and its children
server_rss() {
    local p=$1 kb=0 k c
    for c in "$p" $(ps -o pid= --ppid "$p" 2>/dev/null); do
        k=$(awk '/^VmRSS:/ {print $2}' "/proc/$c/status" 2>/dev/null || echo 0)
        kb=$((kb + ${k:-0}))
    done
    awk -v kb="$kb" 'BEGIN { printf "%.1f", kb / 1024 }'
}

# wrk time value (e.g. 812.00us, 1.23ms, 2.00s) in ms
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

# cpu_ticks CPU[,CPU...] -> "busy idle steal" jiffies of those CPUs from /proc/stat, summed (a
# VM's steal is time the hypervisor ran something else on that vCPU: requests in flight then
# wait, whatever the server does, which is what the p99 of a run on a shared VM mostly measures)
cpu_ticks() {
    awk -v l="$1" 'BEGIN { n = split(l, c, ","); for (i = 1; i <= n; i++) want["cpu" c[i]] = 1 }
        $1 in want { b += $2 + $3 + $4 + $7 + $8; d += $5 + $6; s += $9 }
        END { print b + 0, d + 0, s + 0 }' /proc/stat
}

# make_docroot DIR: the files every variant serves ($HERE/www/*.php, null.php for routing to the
# null backend, and static files of the same sizes: hello.txt, null.txt of $NULL_BODY bytes,
# 1mib.bin)
make_docroot() {
    mkdir -p "$1"
    cp "$HERE"/www/*.php "$1/"
    # the null backend answers anything; the file only has to exist for routing
    printf '<?php // answered by the null backend, never run\n' >"$1/null.php"
    head -c 99 /dev/zero | tr '\0' 'x' >"$1/hello.txt"; echo >>"$1/hello.txt"
    head -c $((NULL_BODY - 1)) /dev/zero | tr '\0' 'x' >"$1/null.txt"; echo >>"$1/null.txt"
    head -c 1048576 /dev/zero | tr '\0' 'z' >"$1/1mib.bin"
}

# fcgi_opts VARIANT -> the FastCgiExternalServer options of a mod_fastcgi-rs variant
fcgi_opts() {
    case $1 in
    fcgi-pool | fcgi-pool-b) echo "-max-conns $FPM_CHILDREN" ;;
    fcgi-capped | fcgi-capped-b) echo "-max-conns $FCGI_CAPPED_CONNS" ;;
    fcgi-guard | fcgi-guard-b) echo "-keep-conn on" ;;
    *) echo "-keep-conn off" ;;
    esac
}

workload_target() { # workload variant -> "path|script|backend" (empty: not applicable)
    case "$1:$2" in
    hello:static) echo "/hello.txt||fpm" ;;
    hello:*) echo "/hello.php||fpm" ;;
    1mib:static) echo "/1mib.bin||fpm" ;;
    1mib:*) echo "/1mib.php||fpm" ;;
    post256k:static) echo "" ;;
    post256k:*) echo "/post.php|$HERE/post.lua|fpm" ;;
    busy:static | sleep:static | mix:static) echo "" ;;
    busy:*) echo "/busy.php||fpm" ;;
    sleep:*) echo "/sleep.php||fpm" ;;
    mix:*) echo "/hello.php|$HERE/mix.lua|fpm" ;;
    null:static) echo "/null.txt||null" ;;
    null:*) echo "/null.php||null" ;;
    *) die "unknown workload $1" ;;
    esac
}
