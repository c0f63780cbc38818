#!/usr/bin/env bash
# Builds, on a machine WITHOUT a GPU that has nvcc, cuDNN and the header dependencies (this
# workplace's development machine), the binaries that tools/gpu-check.sh runs on a GPU
# machine, and stages them in .gpu-bin/ (git-ignored) to carry there:
#   .gpu-bin/nddr_cuda_tests, .gpu-bin/nddr-bench-step, .gpu-bin/00_nddr_layer
#   .gpu-bin/lib/       libraries a bare GPU machine may lack (libgomp, libpng16, libz); the
#                       machine's own are preferred where it has them
#   .gpu-bin/MANIFEST   commit, build flags, toolchain
# A portable build: no -march=native (the GPU machine's CPU may differ), no MPI. On the GPU
# machine: NDDR_PREBUILT_DIR=.gpu-bin bash tools/gpu-check.sh (no .deps, no configure, no build:
# the 100-150 s build no longer spends device time).
#
#   bash tools/gpu-prebuild.sh [build-dir]     (default build-prebuilt in the repository)
# Environment: NDDR_CUDA_ARCH (default 90), NDDR_JOBS (default 2).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$repo/build-prebuilt}
out="$repo/.gpu-bin"
arch=${NDDR_CUDA_ARCH:-90}
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[[ -x "$nvcc" ]] || { echo "gpu-prebuild: nvcc not found" >&2; exit 1; }

cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc" \
  -DNDDR_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" -DNDDR_ENABLE_MPI=OFF \
  -DNDDR_NATIVE=OFF -DNDDR_BUILD_TESTS=ON -DNDDR_BUILD_EXAMPLES=ON -DNDDR_BUILD_BENCH=OFF >/dev/null
grep -q '^NDDR_ENABLE_CUDA:BOOL=ON' "$build/CMakeCache.txt" ||
  { echo "gpu-prebuild: the configure step left NDDR_ENABLE_CUDA off" >&2; exit 1; }
cmake --build "$build" -j"${NDDR_JOBS:-2}" --target nddr_cuda_tests nddr_bench_step 00_nddr_layer

rm -rf "$out"
mkdir -p "$out/lib"
cp "$build/tests/nddr_cuda_tests" "$build/examples/nddr-bench-step" "$build/examples/00_nddr_layer" "$out/"
for lib in libgomp.so.1 libpng16.so.16 libz.so.1; do
  path=$(ldd "$out/nddr_cuda_tests" | awk -v l="$lib" '$1 == l { print $3 }')
  [[ -n "$path" ]] && cp -L "$path" "$out/lib/$lib"
done
{
  echo "commit: $(git -C "$repo" rev-parse HEAD)$(git -C "$repo" diff --quiet HEAD -- include apps tests examples || echo ' + uncommitted changes')"
  echo "built: $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -m), $(ldd --version | head -n1)"
  echo "nvcc: $("$nvcc" --version | tail -n1); arch $arch; no -march=native; no MPI"
  echo "files: $(cd "$out" && ls nddr_cuda_tests nddr-bench-step 00_nddr_layer lib/* | tr '\n' ' ')"
} >"$out/MANIFEST"
cat "$out/MANIFEST"
du -sh "$out"
