#!/usr/bin/env bash
# Per-kernel GPU time of one steady-state training step, nddr against PyTorch eager, on a
# machine with a GPU, after tools/gpu-check.sh has built nddr-bench-step in its build dir:
#
#   bash tools/gpu-profile.sh [network] [batch] [size]     (defaults: vgg16-nddr 10 321)
#
# nddr: Nsight Compute (`ncu --profile-from-start off`, one metric, gpu__time_duration.sum) over
# the one step that `nddr-bench-step --profile-step` runs between cudaProfilerStart/Stop.
# PyTorch: torch.profiler over one step of bench/pytorch/nddr_vgg16.py (--profile).
# Both in FP32 (no TF32). Writes ncu-nddr.csv (every kernel, in launch order), kernels-nddr.csv
# and kernels-pytorch.csv (per kernel name: calls, total microseconds) and prints the top rows
# of both and their totals. Output goes to $OUT when set, else the build dir.
# Environment: NDDR_BUILD_DIR (default build-gpu), NDDR_BENCH_BIN (the nddr-bench-step to run;
# default: the build dir's), NCU (path of ncu; else searched for).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${NDDR_BUILD_DIR:-$repo/build-gpu}
out=${OUT:-$build/gpu-profile}
network=${1:-vgg16-nddr}
batch=${2:-10}
size=${3:-321}
mkdir -p "$out"
bench=${NDDR_BENCH_BIN:-$build/examples/nddr-bench-step}
[[ -x "$bench" ]] || { echo "gpu-profile: $bench not built (run tools/gpu-check.sh first)" >&2; exit 1; }

ncu=${NCU:-$(command -v ncu || true)}
if [[ -z "$ncu" ]]; then
  ncu=$(ls -d /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | tail -n1 || true)
fi
py=python3
[[ -x /opt/torch/.venv/bin/python3 ]] && py=/opt/torch/.venv/bin/python3

args=(--network "$network" --batch "$batch" --size "$size")
if [[ -n "$ncu" ]]; then
  echo "=== gpu-profile: nddr ($ncu)"
  "$ncu" --profile-from-start off --clock-control none --metrics gpu__time_duration.sum --csv \
    --log-file "$out/ncu-nddr.csv" "$bench" --device cuda "${args[@]}" --iters 1 --warmup 2 \
    --profile-step || echo "gpu-profile: ncu failed"
else
  echo "gpu-profile: ncu not found; nddr not profiled"
fi
echo "=== gpu-profile: PyTorch"
"$py" "$repo/bench/pytorch/nddr_vgg16.py" --device cuda "${args[@]}" --iters 1 --warmup 2 --no-tf32 \
  --profile "$out/kernels-pytorch.csv" || echo "gpu-profile: PyTorch profile failed"

"$py" - "$out" <<'PY'
import csv, os, sys
out = sys.argv[1]
def top(path, title):
    if not os.path.exists(path):
        return
    rows = list(csv.DictReader(open(path)))
    total = sum(float(r["total_us"]) for r in rows)
    calls = sum(int(r["calls"]) for r in rows)
    print(f"\n{title}: {calls} kernels, {total / 1000:.2f} ms of kernel time")
    for r in rows[:30]:
        print(f"  {float(r['total_us']) / 1000:8.2f} ms {int(r['calls']):5d}  {r['name'][:110]}")
ncu = os.path.join(out, "ncu-nddr.csv")
if os.path.exists(ncu):
    lines = open(ncu).read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    totals = {}
    if start is not None:
        for r in csv.DictReader(lines[start:]):
            if r.get("Metric Name") != "gpu__time_duration.sum":
                continue
            v = float(r["Metric Value"].replace(",", ""))
            scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}.get(r["Metric Unit"], 1e-3)
            n, t = totals.get(r["Kernel Name"], (0, 0.0))
            totals[r["Kernel Name"]] = (n + 1, t + v * scale)
    with open(os.path.join(out, "kernels-nddr.csv"), "w") as f:
        f.write("name,calls,total_us\n")
        for name, (n, t) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
            f.write('"%s",%d,%.1f\n' % (name.replace('"', "'"), n, t))
top(os.path.join(out, "kernels-nddr.csv"), "nddr")
top(os.path.join(out, "kernels-pytorch.csv"), "PyTorch")
PY
