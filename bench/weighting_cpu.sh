#!/usr/bin/env bash
# Per-step cost and peak memory of every weighting method on NDDR-VGG16 on the CPU, as ratios
# against EW measured in the same command (bench/weighting_step.cpp; docs/performance.md).
#
#   bench/weighting_cpu.sh [build-dir] [batch] [size] [iters] [threads]
# Defaults: build/bench 2 161 3 $(nproc). Build first:
#   cmake --preset bench && cmake --build --preset bench --target weighting_step
# Prints the machine's load average before and after: numbers taken while it is above ~2.5
# (other builds running) are not final.
set -euo pipefail
build=${1:-build/bench}
batch=${2:-2}
size=${3:-161}
iters=${4:-3}
threads=${5:-$(nproc)}
bin="$build/bench/weighting_step"
if [[ ! -x "$bin" ]]; then
  echo "weighting_cpu.sh: no $bin (cmake --build --preset bench --target weighting_step)" >&2
  exit 1
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; $threads threads"
"$bin" --batch "$batch" --size "$size" --iters "$iters" --warmup 1 --threads "$threads"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
