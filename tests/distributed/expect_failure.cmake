# cmake -DCMD=<a|b|c> -DLIMIT=<seconds> -DPATTERN=<regex> -P expect_failure.cmake
# Succeeds when CMD exits non-zero within LIMIT seconds and its output matches PATTERN.
string(REPLACE "|" ";" _cmd "${CMD}")
string(TIMESTAMP _t0 "%s")
execute_process(COMMAND ${_cmd} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err
                TIMEOUT ${LIMIT})
string(TIMESTAMP _t1 "%s")
math(EXPR _dt "${_t1} - ${_t0}")
message("---- output ----\n${_out}\n---- errors ----\n${_err}\n---- exit: ${_rc} after ${_dt} s")
if(_rc STREQUAL "0")
  message(FATAL_ERROR "expected a failure, but the command succeeded")
endif()
if(_rc MATCHES "timeout" OR _dt GREATER LIMIT)
  message(FATAL_ERROR "the command did not end within ${LIMIT} s (it hangs)")
endif()
if(NOT "${_out}${_err}" MATCHES "${PATTERN}")
  message(FATAL_ERROR "the output does not match '${PATTERN}'")
endif()
message(STATUS "failed as expected (exit ${_rc}) in ${_dt} s")
