#!/usr/bin/env bash
# Runs nddr's and PyTorch's NDDR-VGG16 training step (and inference) on the CPU in one command,
# alternating, and prints the speed and peak-memory ratios (nddr / PyTorch; > 1 means nddr is
# faster for speed, uses more memory for memory).
#
#   bench/compare_cpu.sh [build-dir] [batch] [size] [iters] [threads]
# Defaults: build/default 2 161 3 $(nproc). Needs Debian's python3-torch (/usr/bin/python3).
set -euo pipefail
build=${1:-build/default}
batch=${2:-2}
size=${3:-161}
iters=${4:-3}
threads=${5:-$(nproc)}
bin="$build/examples/nddr-bench-step"
[[ -x "$bin" ]] || { echo "compare_cpu.sh: build $bin first (cmake --build --preset default --target nddr_bench_step)" >&2; exit 1; }
/usr/bin/python3 -c 'import torch' 2>/dev/null || { echo "compare_cpu.sh: apt-get install python3-torch" >&2; exit 1; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for mode in train infer; do
  /usr/bin/python3 "$repo/bench/pytorch/nddr_vgg16.py" --device cpu --batch "$batch" --size "$size" \
    --iters "$iters" --warmup 1 --threads "$threads" --mode "$mode" | tee -a "$out"
  "$bin" --device cpu --batch "$batch" --size "$size" --iters "$iters" --warmup 1 \
    --threads "$threads" --mode "$mode" | tee -a "$out"
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for mode in ("train", "infer"):
    r = {x["impl"]: x for x in rows if x["mode"] == mode}
    n, p = r["nddr"], r["pytorch-eager"]
    print(f"cpu {mode}: nddr {n['median_s']:.3f} s, PyTorch {p['median_s']:.3f} s, speed ratio "
          f"nddr/PyTorch = {p['median_s'] / n['median_s']:.3f}; peak RSS {n['peak_rss_mib']:.0f} vs "
          f"{p['peak_rss_mib']:.0f} MiB (ratio {n['peak_rss_mib'] / p['peak_rss_mib']:.2f})")
PY
