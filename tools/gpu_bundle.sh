#!/bin/sh
# Writes a self-contained folder that runs the CUDA agreement tests and times
# the training step on a GPU server that has only the NVIDIA driver (and, for
# the reference timings, PyTorch with transformers). `make gpu-bundle` builds
# the programs and calls this script. Copy the folder to the server and run
# its run.sh there (the comment at the top of tests/gpu/run.sh describes it).
#
# Usage: tools/gpu_bundle.sh [--cublas bundled|system] BUILD_DIR [OUT_DIR]
#   BUILD_DIR  the build folder with bench/bench_step and tests/cuda/test_*;
#              caem is taken from the repository root
#   OUT_DIR    the folder to write (default: BUILD_DIR/gpu-bundle); a bundle
#              already there is replaced
#   --cublas system
#              leaves libcublas and libcublasLt (about 600 MB) out of lib/.
#              The server then needs the cuBLAS of the CUDA major version
#              that built the bundle, which run.sh looks for.
#
# The folder holds:
#   bin/        caem and bench_step
#   tests/      the real-GPU test programs and tests/fixtures/parity_*
#   bench/      reference_step.py
#   lib/        every shared library the programs load, as ldd lists them,
#               except the C library's own and the NVIDIA driver's
#   bundle.env  the build's commit, cuBLAS mode and sonames and the minimum
#               glibc version, for run.sh
#   run.sh      a copy of tests/gpu/run.sh
set -eu

fail() {
    echo "gpu_bundle: $*" >&2
    exit 1
}

usage() {
    echo "usage: tools/gpu_bundle.sh [--cublas bundled|system] BUILD_DIR [OUT_DIR]" >&2
    exit 2
}

cublas=bundled
while [ $# -gt 0 ]; do
    case $1 in
        --cublas)
            [ $# -ge 2 ] || usage
            cublas=$2
            shift 2
            ;;
        --cublas=*)
            cublas=${1#--cublas=}
            shift
            ;;
        -h|--help)
            sed -n '2,/^set -eu/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        -*)
            usage
            ;;
        *)
            break
            ;;
    esac
done
case $cublas in
    bundled|system) ;;
    *) fail "invalid --cublas '$cublas', expected bundled or system" ;;
esac
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    usage
fi
build=$1
out=${2:-$build/gpu-bundle}

command -v nvcc >/dev/null 2>&1 ||
    fail "gpu-bundle needs nvcc on the PATH: the CUDA backend and its tests are built only with it"
root=$(cd "$(dirname "$0")/.." && pwd)

# ---- the programs, each checked for a CUDA build ----

tests=""
for source in "$root"/tests/cuda/test_*.c; do
    [ -e "$source" ] || fail "no tests/cuda/test_*.c under $root"
    name=$(basename "$source" .c)
    tests="$tests $build/tests/cuda/$name"
done
programs="$root/caem $build/bench/bench_step$tests"
for program in $programs; do
    [ -x "$program" ] || fail "$program is missing; build it first (make gpu-bundle does)"
    ldd "$program" | grep -q 'libcublas\.so' ||
        fail "$program does not load cuBLAS, so it was built without CUDA; rebuild with" \
             "nvcc on the PATH (touch $build/config.txt if nvcc was added since)"
done

# ---- the output folder ----

# Only a folder that this script wrote, or an empty one, is replaced.
if [ -e "$out" ]; then
    if [ -f "$out/bundle.env" ] || [ -z "$(ls -A "$out" 2>/dev/null)" ]; then
        rm -rf "$out"
    else
        fail "$out exists and is not a bundle (no bundle.env); remove it or choose another OUT_DIR"
    fi
fi
mkdir -p "$out/bin" "$out/tests/fixtures" "$out/bench" "$out/lib"
cp "$root/caem" "$build/bench/bench_step" "$out/bin/"
# shellcheck disable=SC2086
cp $tests "$out/tests/"
cp "$root"/tests/fixtures/parity_*.safetensors "$out/tests/fixtures/"
cp "$root/bench/reference_step.py" "$out/bench/"
cp "$root/tests/gpu/run.sh" "$out/run.sh"
chmod +x "$out/run.sh"

# ---- shared libraries ----

# Libraries that the server provides: glibc's own and the NVIDIA driver's.
system_library() {
    case $1 in
        linux-vdso.so*|ld-linux*|libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|\
        libresolv.so*|libcuda.so*|libcudadebugger.so*|libnvidia*) return 0 ;;
    esac
    return 1
}

cublas_library() {
    case $1 in
        libcublas.so*|libcublasLt.so*) return 0 ;;
    esac
    return 1
}

listing=$(mktemp)
trap 'rm -f "$listing"' EXIT
cublas_sonames=""
for program in $programs; do
    ldd "$program" >"$listing"
    # Lines read "NAME => PATH (ADDRESS)", "NAME => not found" or "PATH (ADDRESS)".
    while read -r name arrow path _; do
        [ "$arrow" = "=>" ] || continue
        system_library "$name" && continue
        [ "$path" != "not" ] || fail "$program needs $name, which ldd cannot find here"
        if cublas_library "$name"; then
            case " $cublas_sonames " in
                *" $name "*) ;;
                *) cublas_sonames="${cublas_sonames:+$cublas_sonames }$name" ;;
            esac
            [ "$cublas" = bundled ] || continue
        fi
        [ -e "$out/lib/$name" ] || cp -L "$path" "$out/lib/$name"
    done <"$listing"
done
[ -n "$cublas_sonames" ] || fail "no cuBLAS library in the ldd output of the programs"

# The newest glibc symbol version that the programs and the bundled
# libraries use is the oldest glibc that the server may have.
glibc=$(objdump -T "$out"/bin/* "$out"/tests/test_* "$out"/lib/* 2>/dev/null |
    grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -u -V | tail -n 1)

commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit with uncommitted changes"
fi
cuda_release=$(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
cat >"$out/bundle.env" <<EOF
# Written by tools/gpu_bundle.sh on $(date -u '+%Y-%m-%d %H:%M UTC'); read by run.sh.
BUNDLE_SOURCE='commit $commit'
BUNDLE_CUDA='$cuda_release'
BUNDLE_CUBLAS='$cublas'
BUNDLE_CUBLAS_SONAMES='$cublas_sonames'
BUNDLE_GLIBC='$glibc'
EOF

# ---- check: every library resolves inside the bundle ----

# With lib/ first on the search path, each library must come from lib/ or be
# a system library above (or cuBLAS, under --cublas system).
status=0
for program in "$out"/bin/* "$out"/tests/test_*; do
    LD_LIBRARY_PATH="$out/lib" ldd "$program" >"$listing"
    bundled=0
    system=0
    elsewhere=""
    while read -r name arrow path _; do
        [ "$arrow" = "=>" ] || continue
        case $path in
            "$out/lib/"*) bundled=$((bundled + 1)) ;;
            *)
                if system_library "$name"; then
                    system=$((system + 1))
                elif cublas_library "$name" && [ "$cublas" = system ] && [ "$path" != not ]; then
                    elsewhere="$elsewhere, $name from $(dirname "$path")"
                else
                    echo "gpu_bundle: check failed: ${program#"$out"/} loads $name from $path" >&2
                    status=1
                fi
                ;;
        esac
    done <"$listing"
    echo "check ${program#"$out"/}: $bundled libraries from lib/, $system from glibc$elsewhere"
done
[ "$status" -eq 0 ] || fail "some libraries do not resolve inside $out/lib"

size=$(du -sh "$out" | cut -f 1)
echo "gpu_bundle: wrote $out ($size; cuBLAS $cublas: $cublas_sonames; needs glibc >= $glibc)"
echo "gpu_bundle: copy it to the GPU server and run its run.sh there"
