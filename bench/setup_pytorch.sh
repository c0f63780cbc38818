#!/usr/bin/env bash
# Installs the newest PyTorch from PyPI into a virtual environment for bench/compare_cpu.sh
# (issue 21: the peer is the strongest PyTorch a user would pick, not only Debian's 1.13).
#
#   bench/setup_pytorch.sh [--cpu-only] [VENV]        (default VENV: bench/.venv-torch)
#
# PyPI's Linux x86-64 wheel of torch depends on NVIDIA's CUDA runtime wheels (several GB to
# download, unused on the CPU). --cpu-only installs from PyTorch's own CPU index
# (https://download.pytorch.org/whl/cpu, not PyPI): the same CPU kernels (oneDNN, MKL), no CUDA
# libraries. Prints the Python to pass as `compare_cpu.sh --torch`.
set -euo pipefail
cpu_only=0
venv=""
for a in "$@"; do
  case "$a" in
    --cpu-only) cpu_only=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    -*) echo "setup_pytorch.sh: unknown flag $a" >&2; exit 2 ;;
    *) venv=$a ;;
  esac
done
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${venv:-$repo/bench/.venv-torch}
python3 -m venv "$venv" || { echo "setup_pytorch.sh: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
"$venv/bin/pip" install --quiet --upgrade pip
if [[ $cpu_only == 1 ]]; then
  "$venv/bin/pip" install --quiet torch --index-url https://download.pytorch.org/whl/cpu
else
  "$venv/bin/pip" install --quiet torch
fi
"$venv/bin/python" -c 'import torch; print("setup_pytorch.sh: torch", torch.__version__, "oneDNN", torch.backends.mkldnn.is_available())'
echo "$venv/bin/python"
