#!/bin/sh
# Installs the Debian packages the build and tests need, only those missing.
# Without root it prints the apt command to run and exits with status 1.
# Usage: tools/deps.sh [--check]   (--check only reports what is missing)
set -u
packages="gcc g++ make pkg-config liblua5.4-dev libncurses-dev libreadline-dev libhdf5-dev
hdf5-tools libopenblas-dev libopenblas-openmp-dev libjansson-dev libutf8proc-dev sentencepiece tmux wordnet-base"

missing=""
for p in $packages; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)
    if [ "$status" != "installed" ]; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi
echo "deps: missing Debian packages:$missing"
if [ "${1:-}" = "--check" ]; then
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: not running as root; install them with:"
    echo "    sudo apt-get update && sudo apt-get install -y$missing"
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || { echo "deps: apt-get update failed"; exit 1; }
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing || {
    echo "deps: apt-get install failed for:$missing"
    exit 1
}
echo "deps: installed$missing"
