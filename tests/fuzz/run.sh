#!/usr/bin/env bash
# Builds the libFuzzer targets under tests/fuzz into build/fuzz/ and runs each
# one for SECONDS (default 600), two at a time. Each target starts from a
# writable copy of tests/fuzz/seeds/<target> in build/fuzz/corpus/<target>,
# logs to build/fuzz/logs/<target>.log and writes a crashing input to
# build/fuzz/artifacts/<target>/. Prints one line per target and exits 1 when
# any target crashed, timed out or ran out of memory.
#
# Usage: tests/fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail

cd "$(dirname "$0")/../.."
seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(agnews squad xsum deb822 model wordnet)
fi
jobs=${FUZZ_JOBS:-2}

CC=${CC:-clang}
FLAGS=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
       -fno-omit-frame-pointer -D_GNU_SOURCE -std=c11 -Isrc -Itests/fuzz)
LIBS=(-ljansson -lm -fopenmp)

# The library sources each target links, besides src/error.c.
sources_of() {
    case $1 in
        agnews|squad|xsum) echo src/dataset.c ;;
        deb822) echo src/deb822.c ;;
        model) echo src/tokenizer.c ;;
        wordnet) echo src/wordnet.c ;;
        *) echo "run.sh: unknown target '$1'" >&2; return 1 ;;
    esac
}

mkdir -p build/fuzz/logs build/fuzz/corpus build/fuzz/artifacts

# build every target first, so that a compile error stops the run before any fuzzing
for t in "${targets[@]}"; do
    srcs=$(sources_of "$t")
    # shellcheck disable=SC2086
    "$CC" "${FLAGS[@]}" -fopenmp -o "build/fuzz/fuzz_$t" "tests/fuzz/fuzz_$t.c" $srcs \
        src/error.c "${LIBS[@]}"
done

# Runs one target and stores the fuzzer's exit status in build/fuzz/logs/<t>.rc.
run_one() {
    local t=$1 seconds=$2
    local corpus=build/fuzz/corpus/$t artifacts=build/fuzz/artifacts/$t/
    mkdir -p "$corpus" "$artifacts"
    cp -n tests/fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    local rc=0
    ./build/fuzz/fuzz_"$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts" "$corpus" \
        > build/fuzz/logs/"$t".log 2>&1 || rc=$?
    echo "$rc" > build/fuzz/logs/"$t".rc
}
export -f run_one

printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$1" "$2"' _ {} "$seconds"

# one summary line per target, from the last libFuzzer status line of its log
failed=0
for t in "${targets[@]}"; do
    log=build/fuzz/logs/$t.log
    rc=$(cat build/fuzz/logs/"$t".rc)
    runs=$(grep -o '^stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    if [ -z "$runs" ]; then
        runs=$(echo "$last" | sed -E 's/^#([0-9]+).*/\1/')
    fi
    cov=$(echo "$last" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+' || echo '?')
    ft=$(echo "$last" | grep -oE 'ft: [0-9]+' | grep -oE '[0-9]+' || echo '?')
    if [ "$rc" -eq 0 ]; then
        result="no crash"
    else
        failed=1
        artifact=$(ls build/fuzz/artifacts/"$t"/ 2>/dev/null | head -n 1)
        result="CRASH (exit $rc): build/fuzz/artifacts/$t/$artifact, see $log"
    fi
    printf '%-8s %5ss  executions %-10s cov %-6s ft %-6s %s\n' \
        "$t" "$seconds" "${runs:-?}" "$cov" "$ft" "$result"
done
exit "$failed"
