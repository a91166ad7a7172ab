#!/bin/sh
# Runs the CUDA agreement tests and times the training step on the GPU, from
# the folder that `make gpu-bundle` writes (this file is its run.sh). The
# server needs only the NVIDIA driver. When python3 imports torch and
# transformers and torch finds a CUDA device, each timing also runs the
# reference (bench/reference_step.py) on the GPU in the same precision.
#
# Usage: ./run.sh [LOG_FILE]
#
# Everything goes to LOG_FILE (default: logs/run-<UTC time>.log in the
# bundle, or a file under /tmp when the bundle is read-only). The terminal
# gets one line per step and, last, the timing table and the test counts.
# The whole run takes at most RUN_BUDGET_S seconds (default 290): each
# command gets its own limit or the time left, whichever is smaller, and a
# timing that the budget no longer covers is reported as not run.
#
# Exit status 0 when every agreement test passed (or skipped for a reason
# other than a missing GPU) and every timing ran; 1 otherwise, with the
# reasons printed above the table.
set -u

here=$(cd "$(dirname "$0")" && pwd)
budget=${RUN_BUDGET_S:-290}
started=$(date +%s)
deadline=$((started + budget))

# Per-command limits in seconds, before the budget cuts them.
TEST_LIMIT_S=90
SMALL_LIMIT_S=60
BASE_LIMIT_S=120
# Timed steps after bench_step's two warm-up steps.
SMALL_STEPS=20
BASE_STEPS=5

say() {
    echo "$*"
    echo "$*" >>"$log"
}

die() {
    say "run.sh: $*"
    exit 1
}

# ---- log ----

if [ $# -ge 1 ]; then
    log=$1
elif mkdir -p "$here/logs" 2>/dev/null && [ -w "$here/logs" ]; then
    log="$here/logs/run-$(date -u +%Y%m%d-%H%M%S).log"
else
    log=$(mktemp /tmp/caem-gpu-run-XXXXXX.log)
fi
: >"$log" || { echo "run.sh: cannot write the log file $log" >&2; exit 1; }
echo "run.sh: log: $log"

work=$(mktemp -d /tmp/caem-gpu-run-XXXXXX)
trap 'rm -rf "$work"' EXIT

# ---- the bundle and this server ----

[ -f "$here/bundle.env" ] ||
    die "$here/bundle.env is missing; run the run.sh of a folder made by make gpu-bundle"
# shellcheck source=/dev/null
. "$here/bundle.env"
{
    echo "bundle: $here (${BUNDLE_SOURCE:-unknown source}, CUDA ${BUNDLE_CUDA:-?}," \
         "cuBLAS ${BUNDLE_CUBLAS:-?})"
    echo "host: $(uname -n), $(uname -sr), $(nproc 2>/dev/null || echo '?') CPUs"
    date -u '+started: %Y-%m-%d %H:%M:%S UTC'
} >>"$log"

if command -v nvidia-smi >/dev/null 2>&1; then
    gpus=$(nvidia-smi -L 2>&1)
    say "$gpus"
    nvidia-smi >>"$log" 2>&1
else
    say "nvidia-smi: not found on the PATH"
fi

# The bundle's programs need a glibc at least as new as the build's.
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | sed 's/^glibc //')
if [ -n "${BUNDLE_GLIBC:-}" ] && [ -n "$glibc" ]; then
    oldest=$(printf '%s\n%s\n' "$glibc" "$BUNDLE_GLIBC" | sort -V | head -n 1)
    [ "$oldest" = "$BUNDLE_GLIBC" ] ||
        die "this server has glibc $glibc, but the bundle needs $BUNDLE_GLIBC or newer;" \
            "make the bundle on a system with an older glibc"
fi

# ---- shared libraries ----

# Prints the folders that may hold cuBLAS: the CUDA toolkit's and those of
# the NVIDIA Python wheels (nvidia/cu13/lib for CUDA 13, nvidia/cublas/lib
# before it).
cublas_candidates() {
    [ -n "${CUDA_HOME:-}" ] && echo "$CUDA_HOME/lib64"
    echo /usr/local/cuda/lib64
    command -v python3 >/dev/null 2>&1 && python3 -c '
import os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
major = os.environ.get("BUNDLE_CUDA", "").split(".")[0]
for root in nvidia.__path__:
    print(os.path.join(root, "cu" + major, "lib"))
    print(os.path.join(root, "cublas", "lib"))
' 2>/dev/null
}

# Returns success when folder $1 contains every cuBLAS library the bundle needs.
has_cublas() {
    for soname in $BUNDLE_CUBLAS_SONAMES; do
        [ -e "$1/$soname" ] || return 1
    done
    return 0
}

outer_library_path=${LD_LIBRARY_PATH-}
outer_library_path_set=${LD_LIBRARY_PATH+set}
library_path=$here/lib
if ! has_cublas "$here/lib"; then
    cublas_dir=""
    searched=""
    export BUNDLE_CUDA
    cublas_candidates >"$work/candidates"
    while IFS= read -r dir; do
        searched="$searched $dir"
        if has_cublas "$dir"; then
            cublas_dir=$dir
            break
        fi
    done <"$work/candidates"
    [ -n "$cublas_dir" ] ||
        die "cuBLAS ($BUNDLE_CUBLAS_SONAMES) is not in lib/ and was not found in:$searched." \
            "Install the cuBLAS of CUDA ${BUNDLE_CUDA%%.*} (the toolkit, or a python3 NVIDIA" \
            "wheel), or make the bundle without CUBLAS=system"
    say "cuBLAS: $cublas_dir"
    library_path="$library_path:$cublas_dir"
fi
LD_LIBRARY_PATH=$library_path${outer_library_path:+:$outer_library_path}
export LD_LIBRARY_PATH
missing=$(ldd "$here/bin/bench_step" 2>&1 | grep 'not found')
[ -z "$missing" ] || die "bench_step cannot load these libraries: $missing"

# ---- commands under the time budget ----

if command -v timeout >/dev/null 2>&1; then
    have_timeout=1
else
    have_timeout=0
    say "timeout: not found on the PATH, so the commands run without a time limit"
fi

# Runs "$@" with the output in $work/out, for at most $limit seconds and
# never past the deadline. Sets run_status (124 when timed out) and
# run_seconds; returns 1 without running when under 10 s are left.
limited_run() {
    limit=$1
    shift
    left=$((deadline - $(date +%s)))
    [ "$left" -ge 10 ] || return 1
    [ "$limit" -le "$left" ] || limit=$left
    echo "\$ $*   (limit ${limit} s)" >>"$log"
    begin=$(date +%s)
    if [ "$have_timeout" -eq 1 ]; then
        timeout -k 10 "$limit" "$@" >"$work/out" 2>&1
    else
        "$@" >"$work/out" 2>&1
    fi
    run_status=$?
    run_seconds=$(($(date +%s) - begin))
    cat "$work/out" >>"$log"
    echo "(exit status $run_status after $run_seconds s)" >>"$log"
    return 0
}

problems=""
problem() {
    problems="$problems
run.sh: $*"
}

# ---- agreement tests ----

# The tests skip with a reason that starts "no GPU" when the CUDA backend
# cannot open a device (tests/cuda/cuda_check.h).
passed=0
failed=0
skipped=0
no_gpu=0
no_gpu_reason=""
for program in "$here"/tests/test_*; do
    name=$(basename "$program")
    if ! CAEM_ROOT=$here limited_run "$TEST_LIMIT_S" "$program"; then
        problem "$name: not run, the time budget of $budget s was spent"
        failed=$((failed + 1))
        continue
    fi
    p=$(grep -c '^ok ' "$work/out")
    f=$(grep -c '^FAIL ' "$work/out")
    s=$(grep -c '^skip ' "$work/out")
    n=$(grep -c '^skip [^:]*: no GPU' "$work/out")
    no_gpu=$((no_gpu + n))
    if [ -z "$no_gpu_reason" ]; then
        no_gpu_reason=$(grep -m 1 '^skip [^:]*: no GPU' "$work/out" |
            sed 's/^skip [^:]*: no GPU: //')
    fi
    if [ "$run_status" -eq 124 ] || [ "$run_status" -eq 137 ]; then
        problem "$name: timed out after $run_seconds s"
        f=$((f + 1))
    elif [ "$run_status" -ne 0 ] && [ "$f" -eq 0 ]; then
        problem "$name: exited with status $run_status without a FAIL line:" \
                "$(tail -n 1 "$work/out")"
        f=1
    fi
    grep '^FAIL ' "$work/out" | while read -r line; do
        echo "  $line"
    done
    say "$name: $p passed, $f failed, $s skipped ($run_seconds s)"
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))
done
tests_line="agreement tests: $passed passed, $failed failed, $skipped skipped"
if [ "$no_gpu" -gt 0 ]; then
    say "$tests_line"
    die "$no_gpu tests skipped because no usable GPU was found ($no_gpu_reason);" \
        "nothing was timed"
fi

# ---- reference ----

# The reference runs under the server's own library path, because lib/
# contains this bundle's libstdc++ and cuBLAS, which must not replace PyTorch's.
reference_option=""
python=$(command -v python3 2>/dev/null || true)
if [ -n "$python" ]; then
    if [ "$outer_library_path_set" = set ]; then
        restore="LD_LIBRARY_PATH='$outer_library_path'; export LD_LIBRARY_PATH"
    else
        restore="unset LD_LIBRARY_PATH"
    fi
    printf '#!/bin/sh\n%s\nexec "%s" "$@"\n' "$restore" "$python" >"$work/python3"
    chmod +x "$work/python3"
    check=$("$work/python3" -c '
import torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__,
      "CUDA device:", torch.cuda.is_available())' 2>&1 | tail -n 1)
    say "python3: $check"
    case $check in
        *"CUDA device: True")
            reference_option=--reference
            CAEM_PYTHON=$work/python3
            export CAEM_PYTHON
            ;;
        *) say "the reference is not timed: python3 needs transformers and torch with a GPU" ;;
    esac
else
    say "the reference is not timed: python3 not found"
fi

# ---- timings ----

table="$work/table"
printf '%-14s %-9s %9s %10s %6s %13s %7s\n' config precision ms/step tokens/s "MFU %" \
    "ref tokens/s" ratio >"$table"

# Times one configuration and precision and adds its row to the table.
bench() {
    config=$1
    precision=$2
    steps=$3
    limit=$4

    say "bench_step --config $config --precision $precision --steps $steps"
    # shellcheck disable=SC2086
    if ! CAEM_ROOT=$here limited_run "$limit" "$here/bin/bench_step" --device cuda \
        --config "$config" --precision "$precision" --steps "$steps" $reference_option; then
        problem "bench $config $precision: not run, the time budget of $budget s was spent"
        printf '%-14s %-9s %9s\n' "$config" "$precision" "not run" >>"$table"
        return
    fi

    line=$(grep "^$config on " "$work/out" | tail -n 1)
    if [ "$run_status" -ne 0 ] || [ -z "$line" ]; then
        if [ "$run_status" -eq 124 ] || [ "$run_status" -eq 137 ]; then
            what="timed out"
            problem "bench $config $precision: timed out after $run_seconds s"
        else
            what="failed"
            problem "bench $config $precision: exited with status $run_status:" \
                    "$(tail -n 1 "$work/out")"
        fi
        printf '%-14s %-9s %9s\n' "$config" "$precision" "$what" >>"$table"
        return
    fi

    say "$line"
    ms=$(echo "$line" | sed -n 's/.* \([0-9][0-9.]*\) ms\/step.*/\1/p')
    tokens=$(echo "$line" | sed -n 's/^[^:]*: \([0-9][0-9.]*\) tokens\/s, .*/\1/p')
    mfu=$(echo "$line" | sed -n 's/.* = \([0-9][0-9.]*\)% of .*/\1/p')
    reference=$(echo "$line" | sed -n 's/.*, reference \([0-9][0-9.]*\) tokens\/s, .*/\1/p')
    ratio=$(echo "$line" | sed -n 's/.*, reference [0-9.]* tokens\/s, \([0-9][0-9.]*x\)$/\1/p')
    case $line in
        *"reference failed"*) reference=failed ;;
        *"reference skipped"*) reference=skipped ;;
    esac
    printf '%-14s %-9s %9s %10s %6s %13s %7s\n' "$config" "$precision" "${ms:-?}" \
        "${tokens:-?}" "${mfu:-?}" "${reference:-?}" "${ratio:--}" >>"$table"
}

bench small fp32 "$SMALL_STEPS" "$SMALL_LIMIT_S"
bench small tf32 "$SMALL_STEPS" "$SMALL_LIMIT_S"
bench switch-base-8 fp32 "$BASE_STEPS" "$BASE_LIMIT_S"
bench switch-base-8 tf32 "$BASE_STEPS" "$BASE_LIMIT_S"
bench switch-base-8 bf16 "$BASE_STEPS" "$BASE_LIMIT_S"

# ---- summary: the table and the test counts last ----

elapsed=$(($(date +%s) - started))
{
    echo
    echo "run.sh: finished in $elapsed s; full log: $log"
    [ -z "$problems" ] || echo "$problems" | sed '1d'
    echo
    cat "$table"
    echo "$tests_line"
} | tee -a "$log"
[ -z "$problems" ] && [ "$failed" -eq 0 ]
