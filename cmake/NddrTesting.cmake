# Test helpers: few, well-grouped executables (Catch2 2.x), must-not-compile tests.
find_package(Catch2 2 REQUIRED)
include(Catch)

# Shared Catch2 main, compiled once.
add_library(nddr_catch_main OBJECT "${PROJECT_SOURCE_DIR}/tests/main.cpp")
target_link_libraries(nddr_catch_main PUBLIC Catch2::Catch2)

# Unity batches (measured: three tests/train files compiled as one translation unit cost 142
# CPU-s against 325 separately; they instantiate the same networks and trainers, which one unit
# optimises once). All test executables: 2047 CPU-s in batches of 4, 1492 in batches of 8. Off for quick edit-compile cycles on one file: -DNDDR_UNITY_TESTS=OFF.
option(NDDR_UNITY_TESTS "Compile the test sources in batches, one translation unit per batch" ON)
set(NDDR_UNITY_BATCH_SIZE 8 CACHE STRING "Test sources per unity batch (NDDR_UNITY_TESTS)")

# nddr_unity_sources(<out_var> <target> <sources...>)
# With NDDR_UNITY_TESTS, replaces the .cpp sources by generated batches of NDDR_UNITY_BATCH_SIZE
# (cmake/NddrUnityBatch.cmake says how a batch is written and what a source must not do);
# generator expressions, other files and sources with a `// NDDR_UNITY_STANDALONE` line are
# kept as they are. The batches are written at build time from the sources, so editing a
# test needs no re-configure.
function(nddr_unity_sources out_var target)
  if(NOT NDDR_UNITY_TESTS OR NDDR_UNITY_BATCH_SIZE LESS 2)
    set(${out_var} ${ARGN} PARENT_SCOPE)
    return()
  endif()
  set(_out)
  set(_batch)
  set(_index 0)
  set(_script ${PROJECT_SOURCE_DIR}/cmake/NddrUnityBatch.cmake)
  foreach(_src IN LISTS ARGN ITEMS "")  # "" flushes the last batch
    set(_join OFF)
    if(_src MATCHES "\\.cpp$" AND NOT _src MATCHES "^\\$<")
      file(STRINGS "${_src}" _standalone REGEX "^// NDDR_UNITY_STANDALONE" LIMIT_COUNT 1)
      if(NOT _standalone)
        set(_join ON)
      endif()
    endif()
    if(_join)
      list(APPEND _batch ${_src})
      list(LENGTH _batch _size)
    elseif(NOT _src STREQUAL "")
      list(APPEND _out ${_src})
      continue()
    endif()
    if(_batch AND (_src STREQUAL "" OR _size GREATER_EQUAL NDDR_UNITY_BATCH_SIZE))
      list(LENGTH _batch _size)
      if(_size EQUAL 1)
        list(APPEND _out ${_batch})
      else()
        set(_unity ${CMAKE_CURRENT_BINARY_DIR}/unity/${target}_${_index}.cpp)
        string(REPLACE ";" "|" _joined "${_batch}")
        add_custom_command(OUTPUT ${_unity}
          COMMAND ${CMAKE_COMMAND} -DOUTPUT=${_unity} "-DSOURCES=${_joined}" -P ${_script}
          DEPENDS ${_batch} ${_script}
          COMMENT "Writing the unity batch ${target}_${_index}.cpp (${_size} test sources)"
          VERBATIM)
        list(APPEND _out ${_unity})
        math(EXPR _index "${_index} + 1")
      endif()
      set(_batch)
    endif()
  endforeach()
  set(${out_var} ${_out} PARENT_SCOPE)
endfunction()

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
  nddr_unity_sources(_sources ${name} ${ARG_SOURCES})
  add_executable(${name} ${_sources} $<TARGET_OBJECTS:nddr_catch_main>)
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
