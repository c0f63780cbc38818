# nddr_warnings: -Wall -Wextra -Wpedantic -Werror-free warnings for our own code; third-party
# headers come in as SYSTEM includes through their imported targets.
add_library(nddr_warnings INTERFACE)
target_compile_options(nddr_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic>
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>)
