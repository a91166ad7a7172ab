#!/bin/sh
# Measures what the live screen costs a training job. The job trains the
# tiny model on the default corpus's classification task, batch 16, STEPS
# steps. It runs headless with `caem run`, and inside the screen, started
# from the REPL in a tmux window of 160x48 that redraws the panels while the
# job runs. The runs alternate, ROUNDS times each, and the script prints each
# run's tokens/s and the ratio of the medians (screen / headless). Then it
# measures the CPU time the screen itself takes while it redraws.
#
# Usage: bench/screen.sh [STEPS [ROUNDS]]   (defaults 300 and 3)
# Needs tmux and the corpus in $CAEM_DATA (default build/data; make data);
# without them it prints what is missing and exits 0, so that make bench goes on.
set -u
steps=${1:-300}
rounds=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
data=${CAEM_DATA:-$root/build/data}
caem=$root/caem
if ! command -v tmux >/dev/null 2>&1; then
    echo "bench/screen.sh: skipped: tmux is not installed (Debian package tmux)"
    exit 0
fi
if [ ! -x "$caem" ] || [ ! -f "$data/spm.model" ]; then
    echo "bench/screen.sh: skipped: needs ./caem and the corpus in $data (make data)"
    exit 0
fi
work=$(mktemp -d /tmp/caem_bench_screen.XXXXXX)
socket=caem-bench-$$
trap 'tmux -L "$socket" kill-server 2>/dev/null; rm -rf "$work"' EXIT

cat > "$work/job.lua" <<EOF
local caem = require "caem"
local tok = caem.tokenizer("$data/spm.model")
local task = caem.task{ name = "classification", dir = "$data", tokenizer = tok,
                        max_input = 128 }
local m = caem.model{ preset = "tiny", tokenizer = tok, seed = 1 }
local job = m:train{ task = task, steps = $steps, batch = 16, lr = 2e-3, validate_every = 0 }
job:wait()
local s = job:status()
local out = assert(io.open(OUT, "w"))
out:write(("%.1f %.2f\\n"):format(s.tokens_per_second, s.elapsed))
out:close()
EOF

# Prints "tokens_per_second elapsed" of one run.
headless() {
    "$caem" -e "OUT = '$work/headless.txt'" "$work/job.lua" 2>/dev/null
    cat "$work/headless.txt"
}

screen() {
    rm -f "$work/screen.txt"
    tmux -L "$socket" new-session -d -x 160 -y 48 \
        "env LANG=C.UTF-8 TERM=xterm-256color HOME=$work $caem"
    sleep 1
    tmux -L "$socket" send-keys "OUT = '$work/screen.txt'; dofile('$work/job.lua')" Enter
    while [ ! -s "$work/screen.txt" ]; do
        sleep 0.5
    done
    tmux -L "$socket" send-keys C-d
    sleep 0.5
    tmux -L "$socket" kill-server 2>/dev/null
    cat "$work/screen.txt"
}

median() {
    sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

: > "$work/headless.all"
: > "$work/screen.all"
i=1
while [ "$i" -le "$rounds" ]; do
    h=$(headless)
    s=$(screen)
    echo "round $i: headless ${h%% *} tokens/s, screen ${s%% *} tokens/s"
    echo "${h%% *}" >> "$work/headless.all"
    echo "${s%% *}" >> "$work/screen.all"
    i=$((i + 1))
done
# The screen's own cost: the CPU time caem uses over 10 s while it redraws
# the panels of a paused job (the worker thread idles).
cat > "$work/idle.lua" <<EOF
local tok = caem.tokenizer("$data/spm.model")
local task = caem.task{ name = "classification", dir = "$data", tokenizer = tok,
                        max_input = 128 }
idle_model = caem.model{ preset = "tiny", tokenizer = tok, seed = 1 }
idle_job = idle_model:train{ task = task, steps = 1000, batch = 16, paused = true }
idle_job:step(20)
EOF
tmux -L "$socket" new-session -d -x 160 -y 48 \
    "exec env LANG=C.UTF-8 TERM=xterm-256color HOME=$work $caem"
sleep 1
tmux -L "$socket" send-keys "dofile('$work/idle.lua')" Enter
sleep 5
pid=$(tmux -L "$socket" list-panes -F '#{pane_pid}' | head -1)
ticks_per_second=$(getconf CLK_TCK)
before=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
sleep 10
after=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
tmux -L "$socket" kill-server 2>/dev/null
awk -v t="$((after - before))" -v hz="$ticks_per_second" 'BEGIN {
    printf "screen redrawing a paused job at 160x48: %.2f s of CPU in 10 s (%.1f%% of one core)\n", t / hz, 100 * t / hz / 10 }'

mh=$(median < "$work/headless.all")
ms=$(median < "$work/screen.all")
awk -v h="$mh" -v s="$ms" -v steps="$steps" 'BEGIN {
    printf "screen overhead, tiny model, %d steps: headless %.0f tokens/s, screen %.0f tokens/s, ratio %.3f\n", steps, h, s, s / h }'
