#!/usr/bin/env bash
# Runs nddr's and PyTorch's training step (and inference) of one paper network on the CPU in one
# command, alternating, and prints the speed and peak-memory ratios (speed: PyTorch / nddr, > 1
# means nddr is faster; memory: nddr / PyTorch, < 1 means nddr uses less).
#
#   bench/compare_cpu.sh [--network vgg16-nddr] [--rounds 1] [--modes "train infer"]
#                        [--torch PYTHON] [--configs "eager channels-last"] [--no-debian]
#                        [--width W] [--base OLD_BUILD_DIR]
#                        [build-dir] [batch] [size] [iters] [threads]
# Defaults: vgg16-nddr, 1 round, build/default 2 161 3 $(nproc); --width: the input width
# (default: size; --width 640 with size 480 is a full NYUv2 image).
# Peers:
#   --torch PYTHON   the Python of the newest PyTorch (bench/setup_pytorch.sh installs PyPI's
#                    into bench/.venv-torch; default: $NDDR_TORCH_PYTHON, else that venv if it
#                    exists, else /usr/bin/python3), run in each of --configs: eager,
#                    channels-last, compile, channels-last+compile (compile: torch.compile,
#                    PyTorch >= 2; its warm-up compiles). nddr is compared with the fastest.
#   Debian's python3-torch (/usr/bin/python3, 1.13), eager, as a second column unless
#   --no-debian or it is the same Python as --torch.
# Each round runs the peers, then nddr (then --base's nddr-bench-step, e.g. a worktree at an
# older commit) per mode; with several rounds the medians of the per-run medians are compared.
# Networks: see examples/nddr_bench_step.cpp.
set -euo pipefail
network=vgg16-nddr
rounds=1
modes="train infer"
base=""
torch_py=${NDDR_TORCH_PYTHON:-}
configs="eager channels-last"
debian=1
width=0
positional=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --network) network=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    --torch) torch_py=$2; shift 2 ;;
    --configs) configs=$2; shift 2 ;;
    --no-debian) debian=0; shift ;;
    --width) width=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    --*) echo "compare_cpu.sh: unknown flag $1" >&2; exit 2 ;;
    *) positional+=("$1"); shift ;;
  esac
done
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${positional[0]:-build/default}
batch=${positional[1]:-2}
size=${positional[2]:-161}
iters=${positional[3]:-3}
threads=${positional[4]:-$(nproc)}
[[ "$width" == 0 ]] && width=$size
# --width only when the input is not square, so that a --base build from before the flag runs.
width_flag=()
[[ "$width" != "$size" ]] && width_flag=(--width "$width")
if [[ -z "$torch_py" ]]; then
  if [[ -x "$repo/bench/.venv-torch/bin/python" ]]; then torch_py=$repo/bench/.venv-torch/bin/python
  else torch_py=/usr/bin/python3; fi
fi
for c in $configs; do
  case "$c" in
    eager|channels-last|compile|channels-last+compile) ;;
    *) echo "compare_cpu.sh: --configs: unknown configuration '$c' (eager, channels-last, compile, channels-last+compile)" >&2; exit 2 ;;
  esac
done
bin="$build/examples/nddr-bench-step"
[[ -x "$bin" ]] || { echo "compare_cpu.sh: build $bin first (cmake --build --preset default --target nddr_bench_step)" >&2; exit 1; }
[[ -z "$base" || -x "$base/examples/nddr-bench-step" ]] || { echo "compare_cpu.sh: no $base/examples/nddr-bench-step" >&2; exit 1; }
"$torch_py" -c 'import torch' 2>/dev/null || { echo "compare_cpu.sh: --torch $torch_py cannot import torch (bench/setup_pytorch.sh)" >&2; exit 1; }
if [[ $debian == 1 ]]; then
  if [[ "$(readlink -f "$torch_py")" == "$(readlink -f /usr/bin/python3)" ]] ||
     ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    debian=0
  fi
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
common=(--batch "$batch" --size "$size" "${width_flag[@]}" --iters "$iters" --warmup 1 --threads "$threads")
flags_of() {  # configuration -> nddr_vgg16.py flags
  case "$1" in
    eager) ;;
    channels-last) echo --channels-last ;;
    compile) echo --compile ;;
    channels-last+compile) echo --channels-last --compile ;;
  esac
}
echo "# $(date -u +%FT%TZ) $network batch $batch size ${size}x$width iters $iters threads $threads rounds $rounds; torch: $("$torch_py" -c 'import torch; print(torch.__version__)') ($torch_py)$([[ $debian == 1 ]] && echo ", Debian $(/usr/bin/python3 -c 'import torch; print(torch.__version__)')"); load: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 0; r < rounds; ++r)); do
  for mode in $modes; do
    for c in $configs; do
      # shellcheck disable=SC2046
      "$torch_py" "$repo/bench/pytorch/nddr_vgg16.py" --network "$network" --device cpu "${common[@]}" \
        --mode "$mode" $(flags_of "$c") | sed 's/"impl": *"pytorch-/"impl": "new-pytorch-/' | tee -a "$out"
    done
    if [[ $debian == 1 ]]; then
      /usr/bin/python3 "$repo/bench/pytorch/nddr_vgg16.py" --network "$network" --device cpu "${common[@]}" \
        --mode "$mode" | sed 's/"impl": *"pytorch-eager"/"impl": "debian-pytorch-eager"/' | tee -a "$out"
    fi
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
    n, nm = med("nddr", mode, "median_s"), med("nddr", mode, "peak_rss_mib")
    peers = sorted({x["impl"] for x in rows if x["mode"] == mode and x["impl"].startswith("new-")})
    times = {p: med(p, mode, "median_s") for p in peers}
    best = min(peers, key=lambda p: times[p])
    version = next(x["torch"] for x in rows if x["impl"] == best)
    bm = med(best, mode, "peak_rss_mib")
    cells = ", ".join(f"{p[len('new-pytorch-'):]} {times[p]:.3f} s" for p in peers)
    line = (f"cpu {mode}: nddr {n:.3f} s ({nm:.0f} MiB); PyTorch {version}: {cells}; "
            f"speed ratio vs the fastest ({best[len('new-pytorch-'):]}) = {times[best] / n:.3f}, "
            f"peak RSS ratio {nm / bm:.2f}")
    d = med("debian-pytorch-eager", mode, "median_s")
    if d is not None:
        dv = next(x["torch"] for x in rows if x["impl"] == "debian-pytorch-eager")
        dm = med("debian-pytorch-eager", mode, "peak_rss_mib")
        line += f"; PyTorch {dv} eager {d:.3f} s: speed ratio {d / n:.3f}, peak RSS ratio {nm / dm:.2f}"
    b = med("nddr-base", mode, "median_s")
    if b is not None:
        bm2 = med("nddr-base", mode, "peak_rss_mib")
        line += f"; base {b:.3f} s, {bm2:.0f} MiB (speed-up over base {b / n:.3f})"
    print(line)
PY
