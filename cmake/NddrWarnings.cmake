# nddr_warnings: -Wall -Wextra -Wpedantic -Werror-free warnings for our own code; third-party
# headers come in as SYSTEM includes through their imported targets.
add_library(nddr_warnings INTERFACE)
target_compile_options(nddr_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic>
  # GCC 12 reports -W(maybe-)uninitialized inside Eigen's AVX-512 GEMM kernels after inlining
  # (_mm512_undefined_ps in GCC's own intrinsics, fixed in GCC 13): false positives in
  # third-party code that SYSTEM includes and pragmas cannot silence.
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>>:-Wno-maybe-uninitialized>
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>,$<VERSION_LESS:$<CXX_COMPILER_VERSION>,13>>:-Wno-uninitialized>
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>)
