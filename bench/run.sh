#!/bin/sh
# Runs the training-step benchmark for the tiny and then the small
# configuration with every core, one line each, then the generation
# benchmark when its binary is given, one line per search.
# Usage: bench/run.sh BENCH_STEP [BENCH_GENERATE] [OPTIONS]
# OPTIONS go to both step runs. A tiny step takes milliseconds, so tiny times
# 50 steps instead of the default 5. A --steps in OPTIONS overrides that. The
# reference runs through tools/venv/bin/python under $CAEM_ROOT, by default
# the repository that contains this script.
set -u
if [ $# -lt 1 ]; then
    echo "usage: bench/run.sh BENCH_STEP [BENCH_GENERATE] [OPTIONS]" >&2
    exit 2
fi
bench=$1
shift
generate=
case ${1-} in
    ""|-*) ;;
    *) generate=$1; shift ;;
esac
for binary in "$bench" $generate; do
    if [ ! -x "$binary" ]; then
        echo "bench/run.sh: $binary is not an executable file. Build it with 'make bench'." >&2
        exit 2
    fi
done
CAEM_ROOT=${CAEM_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
export CAEM_ROOT

status=0
"$bench" --config tiny --steps 50 "$@" || status=1
"$bench" --config small "$@" || status=1
if [ -n "$generate" ]; then
    "$generate" || status=1
fi
exit $status
