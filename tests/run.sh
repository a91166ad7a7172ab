#!/bin/sh
# Runs test programs and prints one summary line: "N passed, M failed, K skipped".
# Usage: tests/run.sh PROGRAM... [--variant NAME PROGRAM...]
# Programs after "--variant NAME" run with CAEM_TEST_VARIANT=NAME, which the
# harness adds to their result lines.
# A program that exits non-zero without printing a FAIL line (a crash, a
# sanitizer report) counts as one failed test named after the program.
# The CPU reference tests run on the CPU also where a GPU is present; the
# CUDA test programs choose their backend themselves.
CAEM_DEVICE=${CAEM_DEVICE:-cpu}
export CAEM_DEVICE
passed=0
failed=0
skipped=0
variant=""
for prog in "$@"; do
    if [ "$prog" = "--variant" ]; then
        variant=next
        continue
    fi
    if [ "$variant" = "next" ]; then
        variant=$prog
        continue
    fi
    out=$(mktemp)
    CAEM_TEST_VARIANT=$variant "$prog" >"$out" 2>&1
    status=$?
    cat "$out"
    p=$(grep -c '^ok ' "$out")
    f=$(grep -c '^FAIL ' "$out")
    s=$(grep -c '^skip ' "$out")
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $prog: exited with status $status"
        f=1
    fi
    rm -f "$out"
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
