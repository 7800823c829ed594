#!/usr/bin/env bash
# Fuzzing: every libFuzzer target in fuzz/fuzz_targets for FUZZ_SECONDS (default 60) seconds.
# Prints executions and coverage per target; exits non-zero if any target crashes (or fails to
# build). Seeds: fuzz/corpus/<t> (read only); new inputs go to fuzz/target/fuzz-corpus/<t>;
# crash inputs to fuzz/artifacts/<t>/ (rerun one with: fuzz/target/fuzz/<triple>/release/<t>
# <artifact>).
#
# The targets are built with cargo directly, with the settings `cargo fuzz build` uses by
# default on Linux (sancov level 4 with inline 8-bit counters, PC table, compare tracing and
# stack depth; no branch folding; AddressSanitizer; debug assertions; `--cfg fuzzing`; dead
# code linked; one codegen unit; debug info; the caller's RUSTFLAGS appended; ASan's ODR check
# off at run time), so a fresh machine does not spend ~3 minutes compiling cargo-fuzz first.
# `cargo fuzz run <t>` in fuzz/ works as well where cargo-fuzz is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1 # -Z sanitizer on a stable toolchain
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
CARGO="${CARGO:-cargo}"
start=$(date +%s)

if [ ! -f fuzz/Cargo.toml ]; then echo "fuzz-ci: no fuzz/Cargo.toml; nothing to fuzz"; exit 0; fi
cd fuzz
shopt -s nullglob
targets=$(for f in fuzz_targets/*.rs; do basename "$f" .rs; done)
[ -n "$targets" ] || { echo "fuzz-ci: no fuzz targets"; exit 0; }

# Build all targets first (so build time is not counted against the fuzzing time). An explicit
# --target keeps the flags off build scripts and proc macros, as cargo-fuzz does.
triple=$(rustc -vV | sed -n 's/^host: //p')
t_build=$(date +%s)
RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
-Cllvm-args=-sanitizer-coverage-stack-depth \
--cfg fuzzing -Clink-dead-code -Zsanitizer=address -Cdebug-assertions -Ccodegen-units=1 \
${RUSTFLAGS:-}" \
    $CARGO build --release --config profile.release.debug=true --locked --target "$triple" \
    --target-dir target/fuzz --bins
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"
bin="target/fuzz/$triple/release"
echo "fuzz-ci: build took $(( $(date +%s) - t_build ))s; $FUZZ_SECONDS s per target"

failed=""; summary=""
for t in $targets; do
    mkdir -p "target/fuzz-corpus/$t" "artifacts/$t"
    seeds=""; [ -d "corpus/$t" ] && seeds="corpus/$t"
    log="target/fuzz-ci-$t.log"
    echo "=== fuzz-ci: $t for ${FUZZ_SECONDS}s"
    rc=0
    if [ -x "$bin/$t" ]; then
        "$bin/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$FUZZ_SECONDS" \
            -print_final_stats=1 "target/fuzz-corpus/$t" $seeds >"$log" 2>&1 || rc=$?
    else
        echo "fuzz-ci: no binary $bin/$t (is fuzz_targets/$t.rs a [[bin]] of fuzz/Cargo.toml?)" >"$log"
        rc=127
    fi
    # (|| true: a target that crashes while loading its seeds prints none of these)
    execs=$( { grep -E '^stat::number_of_executed_units:' "$log" || true; } | awk '{print $2}' | tail -1)
    rate=$( { grep -E '^stat::average_exec_per_sec:' "$log" || true; } | awk '{print $2}' | tail -1)
    cov=$( { grep -oE 'cov: [0-9]+' "$log" || true; } | tail -1 | awk '{print $2}')
    line="$t: exit $rc, ${execs:-?} executions (${rate:-?}/s), cov ${cov:-?}"
    if [ "$rc" -ne 0 ] || grep -qE '^==[0-9]+==ERROR|SUMMARY: (libFuzzer|AddressSanitizer)|panicked at|deadly signal' "$log"; then
        failed="$failed $t"
        line="$line  ** CRASH **"
        echo "--- tail of $log:"; tail -40 "$log"
        ls -1 "artifacts/$t" 2>/dev/null | sed 's/^/    artifact: /' || true
    fi
    echo "$line"
    summary="$summary$line"$'\n'
done
echo "=== fuzz-ci summary (total $(( $(date +%s) - start ))s):"
printf '%s' "$summary"
if [ -n "$failed" ]; then echo "fuzz-ci: FAILED:$failed" >&2; exit 1; fi
echo "fuzz-ci: no crash"
