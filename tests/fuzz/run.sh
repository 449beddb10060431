#!/usr/bin/env bash
# Build each libFuzzer target with clang (ASan + UBSan) straight from the
# sources it needs, into a temp dir, and run it over a bounded number of
# inputs starting from tests/fuzz/corpus/<target>/. Exit non-zero on a crash.
#
#   tests/fuzz/run.sh [BUILDDIR]      BUILDDIR holds autoconfig.h (default: build)
#   FUZZ_RUNS=N  inputs per target (default 20000)
#   FUZZ_KEEP=1  keep the temp dir (binaries, new corpus entries, crash files)
set -euo pipefail
cd "$(dirname "$0")/../.."
top=$PWD
builddir=${1:-build}
runs=${FUZZ_RUNS:-20000}
max_time=${FUZZ_MAX_TIME:-25}   # seconds per target, a bound on top of -runs

if ! command -v clang >/dev/null; then
        echo "fuzz: no clang; skipped"
        exit 77
fi
if [[ ! -f $builddir/autoconfig.h ]]; then
        echo "fuzz: no $builddir/autoconfig.h; run ./dev build first" >&2
        exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hauld-fuzz-XXXXXX")
[[ -n ${FUZZ_KEEP:-} ]] || trap 'rm -rf "$tmp"' EXIT

cflags=(-std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
        -I"$top" -I"$top/$builddir")
cflags+=($(pkg-config --cflags jansson libcurl))
libs=($(pkg-config --libs jansson libcurl))

# name: the sources each target needs besides its own file
declare -A sources=(
        [fuzz_job_request]="api/job_request.c api/problem.c daemon/job.c daemon/urlcheck.c daemon/naming.c common/str.c"
        [fuzz_naming]="daemon/naming.c daemon/urlcheck.c daemon/job.c common/str.c"
)

rc=0
for name in fuzz_job_request fuzz_naming; do
        # shellcheck disable=SC2086
        clang "${cflags[@]}" -o "$tmp/$name" "tests/fuzz/$name.c" ${sources[$name]} "${libs[@]}"
        mkdir -p "$tmp/corpus-$name"
        echo "fuzz: $name, $runs inputs"
        if ! (cd "$tmp" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
                "./$name" -runs="$runs" -max_total_time="$max_time" -max_len=4096 -timeout=10 \
                -rss_limit_mb=2048 -print_final_stats=0 \
                "corpus-$name" "$top/tests/fuzz/corpus/$name" >"$name.log" 2>&1); then
                echo "fuzz: $name FAILED; the tail of its log:" >&2
                tail -n 60 "$tmp/$name.log" >&2
                ls "$tmp"/crash-* "$tmp"/leak-* "$tmp"/timeout-* 2>/dev/null >&2 || :
                rc=1
                FUZZ_KEEP=1
                trap - EXIT
                echo "fuzz: kept $tmp" >&2
        else
                grep -E '^#[0-9]+ *DONE|Done [0-9]+ runs' "$tmp/$name.log" | tail -n 1 || :
        fi
done
exit $rc
