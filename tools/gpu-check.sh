#!/usr/bin/env bash
# Builds nddr with the CUDA backend and runs the CUDA tests (label cuda) and the CPU tests on a
# machine WITH a GPU. Run from anywhere, after `bash tools/gpu-deps.sh` has filled .deps/ (the
# Eigen, Catch2 and Boost headers such a machine lacks) and .deps has been carried along:
#
#   bash tools/gpu-check.sh                   # configure; build + run the CUDA tests; then
#                                             # build everything and run the CPU tests
#   bash tools/gpu-check.sh --configure-only  # stop after configuring (works without a GPU)
#
# Environment (all optional):
#   NDDR_BUILD_DIR      build directory (default: build-gpu in the repository)
#   NDDR_TEST_FILTER    regex on test file names for the CPU test executables (default: all)
#   NDDR_CUDA_ARCH      CMAKE_CUDA_ARCHITECTURES (default 90: H100/H200)
#   NDDR_JOBS           build and ctest parallelism (default 16)
#   NDDR_SKIP_CPU_TESTS set to 1 to run only the CUDA tests
#   NDDR_SKIP_BENCH     set to 1 to skip the benchmarks against PyTorch
#   NDDR_CTEST_CUDA     set to 1 to also run `ctest -L cuda` (the NCCL tests, where MPI exists)
#   NDDR_PROFILE        set to 1 to profile one training step per kernel (tools/gpu-profile.sh)
#   NDDR_CMAKE_ARGS     extra arguments for the configure step (word-split)
#   CUDNN_ROOT          prefix holding include/cudnn.h and lib*/libcudnn.so* (else searched for)
#   NDDR_PREBUILT_DIR   a folder made by tools/gpu-prebuild.sh on another machine (the CUDA test
#                       binary, nddr-bench-step, the libraries they need that a bare GPU
#                       machine may lack): no .deps, no configure, no build (saves the 100-150 s
#                       build of the device's time); the tests and benchmarks run from there
#   NDDR_BENCH_TIMED    set to 0 to skip the --cudnn-benchmark rows of the benchmarks
#   OUT                 if set, the logs are written there instead of the build dir
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deps="$repo/.deps"
build=${NDDR_BUILD_DIR:-$repo/build-gpu}
jobs=${NDDR_JOBS:-16}
arch=${NDDR_CUDA_ARCH:-90}
configure_only=0
[[ "${1:-}" == "--configure-only" ]] && configure_only=1
prebuilt=${NDDR_PREBUILT_DIR:-}
[[ -n "$prebuilt" ]] && prebuilt=$(cd "$prebuilt" && pwd)

# Logs go straight to $OUT when it is set, so they come back even if the run is cut short.
logs=${OUT:-$build/gpu-check-logs}
mkdir -p "$logs"
failures=()

say() { printf '\n=== gpu-check: %s\n' "$*"; }
die() {
  printf 'gpu-check: ERROR: %s\n' "$*" >&2
  exit 1
}

# ---- toolchain ----------------------------------------------------------------------------
say "machine"
uname -a
if command -v nvidia-smi >/dev/null; then
  nvidia-smi 2>&1 | tee "$logs/nvidia-smi.log"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 |
    tee -a "$logs/nvidia-smi.log" || true
elif ((configure_only)); then
  echo "nvidia-smi not found (fine for --configure-only)"
else
  die "nvidia-smi not found: this script is meant for a machine with an NVIDIA GPU"
fi

nvcc=$(command -v nvcc || true)
[[ -z "$nvcc" && -x /usr/local/cuda/bin/nvcc ]] && nvcc=/usr/local/cuda/bin/nvcc
[[ -n "$nvcc" ]] || die "nvcc not found on PATH or in /usr/local/cuda/bin"
nvcc=$(readlink -f "$nvcc")
cuda_root=$(dirname "$(dirname "$nvcc")")
"$nvcc" --version

cmake=$(command -v cmake || true)
[[ -z "$cmake" && -x /opt/torch/.venv/bin/cmake ]] && cmake=/opt/torch/.venv/bin/cmake
[[ -n "$cmake" ]] || die "cmake not found"
"$cmake" --version | head -n1
cxx=${CXX:-$(command -v g++ || true)}
[[ -n "$cxx" ]] || die "no C++ compiler (g++) found; set CXX"
"$cxx" --version | head -n1
generator=()
if command -v ninja >/dev/null; then
  generator=(-G Ninja)
elif [[ -x /opt/torch/.venv/bin/ninja ]]; then
  generator=(-G Ninja -DCMAKE_MAKE_PROGRAM=/opt/torch/.venv/bin/ninja)
fi

# ---- header dependencies (.deps) ----------------------------------------------------------
if [[ -z "$prebuilt" ]]; then
  say "dependencies from $deps"
  [[ -f "$deps/MANIFEST" ]] ||
    die "$deps/MANIFEST missing: run 'bash tools/gpu-deps.sh' where the packages are installed and carry .deps"
  cat "$deps/MANIFEST"
  # Exported so that nested CMake runs (the install/find_package consumer test) find them too.
  export CMAKE_PREFIX_PATH="$deps${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
fi

# ---- cuDNN --------------------------------------------------------------------------------
# cuDNN may be in the toolkit, in the system, or only in a Python wheel (nvidia-cudnn-cu13,
# whose lib/ has libcudnn.so.9 but no unversioned libcudnn.so): find the header and library.
say "cuDNN"
cudnn_prefixes=()
[[ -n "${CUDNN_ROOT:-}" ]] && cudnn_prefixes+=("$CUDNN_ROOT")
cudnn_prefixes+=("$cuda_root" "$cuda_root/targets/x86_64-linux" /usr/local/cuda /usr)
for py in python3 /opt/torch/.venv/bin/python3; do
  command -v "$py" >/dev/null || continue
  while IFS= read -r sp; do
    [[ -d "$sp/nvidia" ]] || continue
    while IFS= read -r header; do
      cudnn_prefixes+=("$(dirname "$(dirname "$header")")")
    done < <(find "$sp/nvidia" -maxdepth 4 -name cudnn.h 2>/dev/null)
  done < <("$py" -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null || true)
done
cudnn_include=""
cudnn_library=""
for prefix in "${cudnn_prefixes[@]}"; do
  for inc in "$prefix/include" "$prefix/include/x86_64-linux-gnu"; do
    [[ -f "$inc/cudnn.h" ]] || continue
    for libdir in "$prefix/lib64" "$prefix/lib" "$prefix/lib/x86_64-linux-gnu"; do
      lib=$(ls "$libdir"/libcudnn.so "$libdir"/libcudnn.so.[0-9]* 2>/dev/null | head -n1 || true)
      if [[ -n "$lib" ]]; then
        cudnn_include=$inc
        cudnn_library=$lib
        break 3
      fi
    done
  done
done
if [[ -z "$cudnn_library" ]]; then
  echo "searched prefixes: ${cudnn_prefixes[*]}"
  echo "cudnn.h anywhere under /usr /opt:"
  find /usr /opt -name cudnn.h 2>/dev/null | head -n 5 || true
  die "cuDNN not found; set CUDNN_ROOT to the prefix holding include/cudnn.h and lib/libcudnn.so*"
fi
cudnn_libdir=$(dirname "$cudnn_library")
echo "cudnn.h:   $cudnn_include/cudnn.h"
echo "libcudnn:  $cudnn_library"
grep -E '^#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) ' "$cudnn_include/cudnn_version.h" || true
# libcudnn loads its engine libraries (libcudnn_*.so.9) with dlopen at run time; they sit next
# to it but are not on the executable's RPATH, so put their folder on the loader path.
export LD_LIBRARY_PATH="$cudnn_libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ls "$cuda_root"/lib64/libcublas.so* >/dev/null 2>&1 ||
  echo "warning: no libcublas.so* in $cuda_root/lib64: nddr loads libcublas.so.N when a CUDA" \
       "context is created (docs/cuda.md) and the CUDA tests need CMake's CUDA::cublas"

if [[ -n "$prebuilt" ]]; then
  # ---- prebuilt binaries: no configure, no build -------------------------------------------
  say "prebuilt binaries from $prebuilt"
  [[ -f "$prebuilt/MANIFEST" ]] || die "$prebuilt/MANIFEST missing: make the folder with tools/gpu-prebuild.sh"
  cat "$prebuilt/MANIFEST"
  # The carried libraries come last: the machine's own (newer) ones win where they exist.
  export LD_LIBRARY_PATH="$cuda_root/lib64:${LD_LIBRARY_PATH}:$prebuilt/lib"
  ldd "$prebuilt/nddr_cuda_tests" | grep -i "not found" && die "a library of the prebuilt tests is missing"
  mkdir -p "$build"
  cuda_exe="$prebuilt/nddr_cuda_tests"
  bench_bin="$prebuilt/nddr-bench-step"
  layer_bin="$prebuilt/00_nddr_layer"
  cd "$build"
else
# ---- configure ----------------------------------------------------------------------------
say "configure ($build)"
extra=()
[[ -n "${NDDR_CMAKE_ARGS:-}" ]] && read -r -a extra <<<"$NDDR_CMAKE_ARGS"
"$cmake" -S "$repo" -B "$build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_CUDA_COMPILER="$nvcc" \
  -DCMAKE_CUDA_HOST_COMPILER="$cxx" \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -DCMAKE_PREFIX_PATH="$deps" \
  -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
  -DNDDR_ENABLE_CUDA=ON \
  -DNDDR_BUILD_TESTS=ON \
  -DNDDR_BUILD_EXAMPLES=ON \
  -DNDDR_BUILD_BENCH=OFF \
  -DNDDR_CUDA_EMULATION_TESTS=OFF \
  -DNDDR_TEST_FILTER="${NDDR_TEST_FILTER:-}" \
  -DCUDNN_INCLUDE_DIR="$cudnn_include" \
  -DCUDNN_LIBRARY="$cudnn_library" \
  "${extra[@]}" 2>&1 | tee "$logs/configure.log" ||
  die "configure failed (see $logs/configure.log)"
for var in Eigen3_DIR Catch2_DIR Boost_DIR Boost_INCLUDE_DIR CUDNN_LIBRARY CMAKE_CUDA_COMPILER; do
  grep -E "^$var(:[A-Z]+)?=" "$build/CMakeCache.txt" || echo "$var: (not in the cache)"
done
grep -q '^NDDR_ENABLE_CUDA:BOOL=ON' "$build/CMakeCache.txt" ||
  die "the configure step left NDDR_ENABLE_CUDA off"
if ((configure_only)); then
  say "configure-only: done"
  exit 0
fi

# ---- CUDA tests first, so that a broken CPU test elsewhere cannot hide them --------------
# nddr-bench-step is built in the same command (the two link in parallel) unless the
# benchmarks are skipped.
targets=(nddr_cuda_tests 00_nddr_layer)
[[ "${NDDR_SKIP_BENCH:-0}" != 1 ]] && targets+=(nddr_bench_step)
say "build ${targets[*]} (-j$jobs)"
start=$SECONDS
"$cmake" --build "$build" -j"$jobs" --target "${targets[@]}" 2>&1 | tee "$logs/build-cuda.log" ||
  die "building ${targets[*]} failed (see $logs/build-cuda.log)"
echo "build took $((SECONDS - start)) s"

cd "$build"
cuda_exe=$(find "$build" -type f -name nddr_cuda_tests -perm -u+x | head -n1)
bench_bin="$build/examples/nddr-bench-step"
layer_bin="$build/examples/00_nddr_layer"
fi  # prebuilt

# The test executable directly (one run, with each test case's duration): its summary shows
# the assertion count, and a GPU machine must not take the no-device path. NDDR_CTEST_CUDA=1
# also runs `ctest -L cuda` (every entry with the label, the NCCL tests where MPI was found).
say "CUDA tests"
start=$SECONDS
if [[ -n "$cuda_exe" ]]; then
  if ! "$cuda_exe" --durations yes 2>&1 | tee "$logs/cuda-tests.log"; then
    failures+=("nddr_cuda_tests")
  fi
  if grep -q "no CUDA device: skipped" "$logs/cuda-tests.log"; then
    failures+=("CUDA tests skipped although a GPU is present")
  fi
else
  failures+=("nddr_cuda_tests was not built")
fi
echo "CUDA tests took $((SECONDS - start)) s"
# The one-layer walk-through on the GPU (closed form at init, 20 SGD steps; no data needed).
say "example: 00_nddr_layer --device cuda"
if [[ -x "${layer_bin:-}" ]]; then
  "$layer_bin" --device cuda 2>&1 | tee "$logs/example-00_nddr_layer.log" ||
    failures+=("00_nddr_layer --device cuda")
else
  failures+=("00_nddr_layer was not built")
fi
if [[ "${NDDR_CTEST_CUDA:-0}" == 1 ]]; then
  if ! ctest -L cuda --output-on-failure --timeout 600 2>&1 | tee "$logs/ctest-cuda.log"; then
    failures+=("ctest -L cuda")
  fi
fi

if [[ "${NDDR_SKIP_CPU_TESTS:-0}" != 1 && -z "$prebuilt" ]]; then
  say "build everything else (-j$jobs)"
  start=$SECONDS
  if ! "$cmake" --build "$build" -j"$jobs" 2>&1 | tee "$logs/build.log"; then
    failures+=("full build (see build.log)")
  fi
  echo "build took $((SECONDS - start)) s"
  say "CPU tests (ctest -LE cuda -j$jobs)"
  start=$SECONDS
  if ! ctest -LE cuda -j"$jobs" --output-on-failure --timeout 900 2>&1 |
    tee "$logs/ctest-cpu.log"; then
    failures+=("ctest -LE cuda")
  fi
  echo "CPU tests took $((SECONDS - start)) s"
fi

# ---- GPU benchmarks ------------------------------------------------------------------------
# nddr's NDDR-VGG16 training step and inference pass (examples/nddr_bench_step.cpp) against
# PyTorch's eager version of the same network (bench/pytorch/nddr_vgg16.py), at the paper's
# batch 10 x 321^2, run alternately in this one command; prints the ratio.
if [[ "${NDDR_SKIP_BENCH:-0}" != 1 ]]; then
  say "benchmark: NDDR-VGG16 train + infer, batch ${NDDR_BENCH_BATCH:-10}, ${NDDR_BENCH_SIZE:-321}x${NDDR_BENCH_SIZE:-321}: nddr vs PyTorch eager"
  bench_py=""
  for py in /opt/torch/.venv/bin/python3 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
      bench_py=$py
      break
    fi
  done
  bench_args=(--batch "${NDDR_BENCH_BATCH:-10}" --size "${NDDR_BENCH_SIZE:-321}" --iters 10 --warmup 3)
  # Like for like: full FP32 convolutions on both sides, then TF32 on both (PyTorch's default),
  # then BF16 mixed precision (nddr --bf16: BF16 convolutions, FP32 activations; PyTorch
  # torch.autocast(bfloat16): BF16 activations too); algorithms from cuDNN's heuristics on both
  # (PyTorch's default), then timed per shape on both (--cudnn-benchmark; training step only).
  for precision in fp32 tf32 bf16; do
    for algos in heuristic benchmark; do
      py_flag=(); nddr_flag=()
      [[ $precision == fp32 ]] && py_flag+=(--no-tf32)
      [[ $precision == tf32 ]] && nddr_flag+=(--tf32)
      [[ $precision == bf16 ]] && { py_flag+=(--bf16); nddr_flag+=(--bf16); }
      [[ $algos == benchmark ]] && { py_flag+=(--cudnn-benchmark); nddr_flag+=(--cudnn-benchmark); }
      modes=(train infer)
      [[ $algos == benchmark ]] && modes=(train)
      [[ $algos == benchmark && "${NDDR_BENCH_TIMED:-1}" == 0 ]] && modes=()
      for mode in "${modes[@]}"; do
        if [[ -n "$bench_py" ]]; then
          "$bench_py" "$repo/bench/pytorch/nddr_vgg16.py" --device cuda "${bench_args[@]}" \
            --mode "$mode" "${py_flag[@]}" 2>&1 | tee -a "$logs/bench.jsonl" ||
            failures+=("PyTorch benchmark ($precision $algos $mode)")
        fi
        "$bench_bin" --device cuda "${bench_args[@]}" --mode "$mode" \
          "${nddr_flag[@]}" 2>&1 | tee -a "$logs/bench.jsonl" ||
          failures+=("nddr-bench-step ($precision $algos $mode)")
      done
    done
  done
  if [[ -n "$bench_py" ]]; then
    "$bench_py" - "$logs/bench.jsonl" <<'PY' | tee "$logs/bench-summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for prec in ("fp32", "tf32", "bf16"):
    for algos in ("heuristic", "benchmark"):
        for mode in ("train", "infer"):
            r = {x["impl"]: x for x in rows if x.get("mode") == mode and x.get("precision") == prec
                 and x.get("conv_algos", "heuristic") == algos}
            if "nddr" in r and "pytorch-eager" in r:
                n, p = r["nddr"], r["pytorch-eager"]
                print(f"{prec} {algos} {mode}: nddr {n['images_per_s']:.2f} img/s, PyTorch "
                      f"{p['images_per_s']:.2f} img/s, speed ratio nddr/PyTorch = "
                      f"{n['images_per_s'] / p['images_per_s']:.3f}")
PY
  fi
fi

# ---- per-kernel profile of one training step (NDDR_PROFILE=1) ------------------------------
if [[ "${NDDR_PROFILE:-0}" == 1 && "${NDDR_SKIP_BENCH:-0}" != 1 ]]; then
  say "profile: one FP32 training step, nddr (ncu) vs PyTorch (torch.profiler)"
  OUT="$logs" NDDR_BUILD_DIR="$build" NDDR_BENCH_BIN="$bench_bin" timeout "${NDDR_PROFILE_TIMEOUT:-240}" \
    bash "$repo/tools/gpu-profile.sh" 2>&1 | tee "$logs/profile.log" || failures+=("profile")
fi

say "summary"
if ((${#failures[@]})); then
  printf 'FAILED: %s\n' "${failures[@]}"
  exit 1
fi
echo "all GPU checks passed"
