#!/usr/bin/env bash
# Ship one task's finished training pair (runs/<task>_selected, runs/<task>_fp32) the way every shipped task
# was shipped: bundles + training logs + 100-episode evaluations, the curves, a second evaluation seed, the
# noise-robustness run (20 episodes per sigma), the trained hardware row and the README GIF.
#
#   tools/ship_task.sh humanoid Humanoid                          # <lowercase name> <hw_rows name>
#   tools/ship_task.sh ant Ant "--every 2 --max-steps 400"         # [render flags]: 20 Hz tasks keep more frames
# Prints what it runs; stops at the first failure. The README tables are then written by hand from the
# printed figures (they are the record of what was measured).
set -euo pipefail
task=$1
title=$2
render_flags=${3:---every 8}
q=.venv/bin/qpolicy
dest=policies/$task
for kind in selected fp32; do
    test -f "runs/${task}_${kind}/actor.pt" || { echo "runs/${task}_${kind} has not finished (no actor.pt)"; exit 2; }
done
mkdir -p bench_out
set -x
$q ship "runs/${task}_selected" --out "$dest/selected"
$q ship "runs/${task}_fp32" --out "$dest/fp32"
$q plot --curves "fp32=$dest/fp32/training_log.csv" "selected=$dest/selected/training_log.csv" --out "$dest"
$q eval "$dest/selected" --episodes 20 --seed 1 --json > "bench_out/${task}_selected_seed1.json"
$q eval "$dest/fp32" --episodes 20 --seed 1 --backend float --json > "bench_out/${task}_fp32_seed1.json"
$q noise "selected=$dest/selected" "fp32=$dest/fp32" --sigmas 0 0.1 0.2 0.3 0.4 0.5 --episodes 20 \
    --out "$dest/noise.csv"
$q plot --noise "$dest/noise.csv" --out "$dest"
.venv/bin/python bench/hw_table.py "$dest/selected" --out bench_out/hw_trained --json > "bench_out/${task}_hw.json"
cp "bench_out/hw_trained/${task}_selected/hw_row.json" "bench/results/hw_rows/${title}.json"
$q render "$dest/selected" --out "docs/media/${task}_selected.gif" --width 200 --height 150 $render_flags
