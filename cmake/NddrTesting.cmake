# Test helpers: few, well-grouped executables (Catch2 2.x), must-not-compile tests.
find_package(Catch2 2 REQUIRED)
include(Catch)

# Shared Catch2 main, compiled once.
add_library(nddr_catch_main OBJECT "${PROJECT_SOURCE_DIR}/tests/main.cpp")
target_link_libraries(nddr_catch_main PUBLIC Catch2::Catch2)

# nddr_add_test(<name> SOURCES <files...> [LABELS <labels...>] [LIBS <targets...>]
#               [PREFIX <ctest name prefix>])
# One executable; every Catch2 test case becomes a ctest test carrying LABELS.
# nddr_check_test_names(<sources...>)
# catch_discover_tests reads the test names into a CMake list, so a ';' in a TEST_CASE name
# splits it into names that match no test case, and ctest then "passes" a test that never ran.
# Such names stop the configure step.
function(nddr_check_test_names)
  foreach(_src IN LISTS ARGN)
    if(_src MATCHES "^\\$<" OR NOT EXISTS "${_src}")  # object libraries: checked where defined
      continue()
    endif()
    file(STRINGS "${_src}" _bad REGEX "TEST_CASE\\(\"[^\"]*;")
    if(_bad)
      message(FATAL_ERROR "${_src}: a TEST_CASE name contains ';' (ctest would split it and run "
                          "nothing): ${_bad}")
    endif()
  endforeach()
endfunction()

function(nddr_add_test name)
  cmake_parse_arguments(ARG "" "PREFIX" "SOURCES;LABELS;LIBS" ${ARGN})
  nddr_check_test_names(${ARG_SOURCES})
  add_executable(${name} ${ARG_SOURCES} $<TARGET_OBJECTS:nddr_catch_main>)
  target_link_libraries(${name} PRIVATE nddr::nddr nddr_build_flags Catch2::Catch2 ${ARG_LIBS})
  target_compile_definitions(${name} PRIVATE
    NDDR_TEST_DATA_DIR="${PROJECT_SOURCE_DIR}/tests/data")
  target_precompile_headers(${name} PRIVATE
    <catch2/catch.hpp> <Eigen/Core> <vector> <string> <cmath>)
  catch_discover_tests(${name} TEST_PREFIX "${ARG_PREFIX}" PROPERTIES LABELS "${ARG_LABELS}")
endfunction()

# nddr_add_sanitized_test(<name> <nddr_add_test arguments...>)
# nddr_add_test, compiled and linked with AddressSanitizer + UndefinedBehaviorSanitizer whatever
# NDDR_SANITIZE says, so that its tests run under them in every configuration (CI runs only the
# default preset). Keep such executables small: the sanitizers slow compiling and running.
function(nddr_add_sanitized_test name)
  nddr_add_test(${name} ${ARGN})
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=address,undefined
                         -fno-omit-frame-pointer -fno-sanitize-recover=all>)
  target_link_options(${name} PRIVATE -fsanitize=address,undefined)
endfunction()

# nddr_add_failtest(<name> FILE <source> PATTERN <regex>)
# Passes when compiling <source> fails AND the compiler's diagnostics match <regex>
# (so the error text is part of the contract, e.g. that it names the offending type).
function(nddr_add_failtest name)
  cmake_parse_arguments(ARG "" "FILE;PATTERN" "" ${ARGN})
  get_target_property(_eigen_inc Eigen3::Eigen INTERFACE_INCLUDE_DIRECTORIES)
  set(_incs "${PROJECT_SOURCE_DIR}/include" ${_eigen_inc} ${Boost_INCLUDE_DIRS})
  string(REPLACE ";" "|" _incs "${_incs}")
  add_test(NAME failtest.${name}
    COMMAND ${CMAKE_COMMAND}
      -DCOMPILER=${CMAKE_CXX_COMPILER}
      -DSOURCE=${ARG_FILE}
      -DINCLUDES=${_incs}
      -P ${PROJECT_SOURCE_DIR}/cmake/NddrFailtest.cmake)
  set_tests_properties(failtest.${name} PROPERTIES
    PASS_REGULAR_EXPRESSION "${ARG_PATTERN}"
    FAIL_REGULAR_EXPRESSION "NDDR_FAILTEST_COMPILED"
    LABELS failtest
    COST 13)  # seconds measured here: ctest -j starts these before the short unit tests
endfunction()
