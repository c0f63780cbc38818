# Compiles SOURCE with -fsyntax-only and prints the diagnostics; prints NDDR_FAILTEST_COMPILED
# if it compiled (the test then fails).
string(REPLACE "|" ";" _incs "${INCLUDES}")
set(_flags -std=c++20 -fsyntax-only -fopenmp)
foreach(_i IN LISTS _incs)
  if(NOT _i STREQUAL "/usr/include")
    list(APPEND _flags -isystem ${_i})
  endif()
endforeach()
execute_process(COMMAND ${COMPILER} ${_flags} ${SOURCE}
  RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
message("${_out}${_err}")
if(_rc EQUAL 0)
  message("NDDR_FAILTEST_COMPILED: ${SOURCE} compiled but must not")
endif()
