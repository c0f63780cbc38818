#!/usr/bin/env bash
# Runs nddr's and PyTorch's training step (and inference) of one paper network on the CPU in one
# command, alternating, and prints the speed and peak-memory ratios (nddr / PyTorch; > 1 means
# nddr is faster for speed, uses more memory for memory).
#
#   bench/compare_cpu.sh [--network vgg16-nddr] [--rounds 1] [--modes "train infer"]
#                        [--base OLD_BUILD_DIR] [build-dir] [batch] [size] [iters] [threads]
# Defaults: vgg16-nddr, 1 round, build/default 2 161 3 $(nproc). Networks: see
# examples/nddr_bench_step.cpp. Each round runs PyTorch, then nddr (then --base's nddr-bench-step,
# e.g. a worktree at an older commit) per mode; with several rounds the medians of the per-run
# medians are compared. Needs Debian's python3-torch (/usr/bin/python3).
set -euo pipefail
network=vgg16-nddr
rounds=1
modes="train infer"
base=""
positional=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --network) network=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    --*) echo "compare_cpu.sh: unknown flag $1" >&2; exit 1 ;;
    *) positional+=("$1"); shift ;;
  esac
done
build=${positional[0]:-build/default}
batch=${positional[1]:-2}
size=${positional[2]:-161}
iters=${positional[3]:-3}
threads=${positional[4]:-$(nproc)}
bin="$build/examples/nddr-bench-step"
[[ -x "$bin" ]] || { echo "compare_cpu.sh: build $bin first (cmake --build --preset default --target nddr_bench_step)" >&2; exit 1; }
[[ -z "$base" || -x "$base/examples/nddr-bench-step" ]] || { echo "compare_cpu.sh: no $base/examples/nddr-bench-step" >&2; exit 1; }
/usr/bin/python3 -c 'import torch' 2>/dev/null || { echo "compare_cpu.sh: apt-get install python3-torch" >&2; exit 1; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
common=(--batch "$batch" --size "$size" --iters "$iters" --warmup 1 --threads "$threads")
echo "# $(date -u +%FT%TZ) $network batch $batch size $size iters $iters threads $threads rounds $rounds; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 0; r < rounds; ++r)); do
  for mode in $modes; do
    /usr/bin/python3 "$repo/bench/pytorch/nddr_vgg16.py" --network "$network" --device cpu "${common[@]}" \
      --mode "$mode" | tee -a "$out"
    "$bin" --network "$network" --device cpu "${common[@]}" --mode "$mode" | tee -a "$out"
    if [[ -n "$base" ]]; then
      "$base/examples/nddr-bench-step" --network "$network" --device cpu "${common[@]}" --mode "$mode" |
        sed 's/"impl":"nddr"/"impl":"nddr-base"/' | tee -a "$out"
    fi
  done
done
/usr/bin/python3 - "$out" "$modes" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def med(impl, mode, key):
    v = [x[key] for x in rows if x["impl"] == impl and x["mode"] == mode]
    return statistics.median(v) if v else None
for mode in sys.argv[2].split():
    n, p = med("nddr", mode, "median_s"), med("pytorch-eager", mode, "median_s")
    nm, pm = med("nddr", mode, "peak_rss_mib"), med("pytorch-eager", mode, "peak_rss_mib")
    line = (f"cpu {mode}: nddr {n:.3f} s, PyTorch {p:.3f} s, speed ratio nddr/PyTorch = {p / n:.3f}; "
            f"peak RSS {nm:.0f} vs {pm:.0f} MiB (ratio {nm / pm:.2f})")
    b = med("nddr-base", mode, "median_s")
    if b is not None:
        bm = med("nddr-base", mode, "peak_rss_mib")
        line += f"; base {b:.3f} s, {bm:.0f} MiB (speed-up over base {b / n:.3f})"
    print(line)
PY
