#!/usr/bin/env bash
# Installs the Debian packages nddr needs to build and test, if any is missing, and says so.
# Runs as root or through sudo. CUDA (nvcc, cuDNN, cuBLAS) is expected in /usr/local/cuda and is
# optional: without nvcc the CUDA backend is simply not built. Open MPI is optional for the library
# and needed for data-parallel training and its tests (without it there is no nddr::mpi target).
# libonnx-dev and libprotobuf-dev are for ONNX export (nddr::onnx, nddr-export; docs/onnx.md),
# likewise optional to the library; libmatio and libturbojpeg only for nddr-prepare-imdb-wiki (not
# built without them).
set -euo pipefail
packages=(cmake g++ make libeigen3-dev libboost-dev catch2 libbenchmark-dev libpng-dev zlib1g-dev dataset-fashion-mnist
          libcli11-dev openmpi-bin libopenmpi-dev libonnx-dev libprotobuf-dev libmatio-dev
          libturbojpeg0-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "nddr: installing missing Debian packages: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "nddr: all Debian build dependencies present"
fi
