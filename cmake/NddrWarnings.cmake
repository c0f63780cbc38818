# nddr_warnings: -Wall -Wextra -Wpedantic -Werror-free warnings for our own code; third-party
# headers come in as SYSTEM includes through their imported targets.
add_library(nddr_warnings INTERFACE)
target_compile_options(nddr_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic>
  # GCC 12 reports -Wmaybe-uninitialized inside Eigen's AVX-512 GEMM kernels after inlining
  # (false positives in third-party code that SYSTEM includes cannot silence).
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>>:-Wno-maybe-uninitialized>
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>)
