#!/usr/bin/env bash
# Collects into .deps/ (git-ignored) the header-only dependencies that the lent GPU machine
# lacks, laid out like an install prefix so that CMAKE_PREFIX_PATH=.deps finds them:
#   .deps/include/eigen3            + .deps/share/eigen3/cmake      (Eigen 3.4, Eigen3::Eigen)
#   .deps/include/catch2            + .deps/lib/cmake/Catch2        (Catch2 2.x, include(Catch))
#                                   + .deps/lib/libCatch2WithMain.a (named by Catch2's targets)
#   .deps/include/boost/{hana,config,version.hpp}
#                                   + .deps/lib/cmake/Boost-<ver>   (hand-written: Boost::headers)
# Google Benchmark is not collected (the bench suite is off in tools/gpu-check.sh).
# Usage, from anywhere: bash tools/gpu-deps.sh      (then carry ".deps" to the GPU machine)
# The source locations default to Debian's packages (libeigen3-dev, catch2, libboost-dev) and
# can be overridden with EIGEN_INCLUDE, EIGEN_CMAKE, CATCH2_INCLUDE, CATCH2_CMAKE,
# CATCH2_MAIN_LIB and BOOST_INCLUDE.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deps="$repo/.deps"
max_mb=60

eigen_include=${EIGEN_INCLUDE:-/usr/include/eigen3}
eigen_cmake=${EIGEN_CMAKE:-/usr/share/eigen3/cmake}
catch2_include=${CATCH2_INCLUDE:-/usr/include/catch2}
catch2_cmake=${CATCH2_CMAKE:-/usr/lib/cmake/Catch2}
# Catch2's exported targets name this library (Catch2::Catch2WithMain; nddr has its own main)
# and CMake refuses the package when the file is missing.
catch2_main_lib=${CATCH2_MAIN_LIB:-/usr/lib/libCatch2WithMain.a}
boost_include=${BOOST_INCLUDE:-/usr/include}

die() { echo "gpu-deps: $*" >&2; exit 1; }
need() { [[ -e "$1" ]] || die "missing $1 ($2)"; }

need "$eigen_include/Eigen/Core" "apt-get install libeigen3-dev, or set EIGEN_INCLUDE"
need "$eigen_cmake/Eigen3Config.cmake" "apt-get install libeigen3-dev, or set EIGEN_CMAKE"
need "$catch2_include/catch.hpp" "apt-get install catch2 (2.x), or set CATCH2_INCLUDE"
need "$catch2_cmake/Catch2Config.cmake" "apt-get install catch2 (2.x), or set CATCH2_CMAKE"
need "$catch2_main_lib" "apt-get install catch2 (2.x), or set CATCH2_MAIN_LIB"
need "$boost_include/boost/hana.hpp" "apt-get install libboost-dev, or set BOOST_INCLUDE"
need "$boost_include/boost/version.hpp" "apt-get install libboost-dev, or set BOOST_INCLUDE"

boost_version_macro=$(sed -n 's/^#define BOOST_VERSION \([0-9]*\).*/\1/p' "$boost_include/boost/version.hpp")
[[ -n "$boost_version_macro" ]] || die "cannot read BOOST_VERSION from $boost_include/boost/version.hpp"
boost_version="$((boost_version_macro / 100000)).$((boost_version_macro / 100 % 1000)).$((boost_version_macro % 100))"

rm -rf "$deps"
mkdir -p "$deps/include/boost" "$deps/share/eigen3" "$deps/lib/cmake"

echo "gpu-deps: Eigen from $eigen_include"
cp -a "$eigen_include" "$deps/include/eigen3"
cp -a "$eigen_cmake" "$deps/share/eigen3/cmake"

echo "gpu-deps: Catch2 from $catch2_include"
cp -a "$catch2_include" "$deps/include/catch2"
cp -a "$catch2_cmake" "$deps/lib/cmake/Catch2"
cp -a "$catch2_main_lib" "$deps/lib/"

# Only the Boost libraries nddr uses: Hana (host code only) plus the version header and
# Boost.Config, which Hana does not need today but any future Boost header will.
echo "gpu-deps: Boost $boost_version headers (hana, config, version) from $boost_include"
for item in hana hana.hpp config config.hpp version.hpp; do
  cp -a "$boost_include/boost/$item" "$deps/include/boost/$item"
done

# A minimal config package: find_package(Boost <ver>) finds it through CMAKE_PREFIX_PATH (in
# CONFIG mode, or through FindBoost, which tries the config package first).
boost_cmake="$deps/lib/cmake/Boost-$boost_version"
mkdir -p "$boost_cmake"
cat >"$boost_cmake/BoostConfig.cmake" <<CMAKE
# Written by tools/gpu-deps.sh: the header-only subset of Boost $boost_version in this prefix.
get_filename_component(_nddr_boost_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(Boost_INCLUDE_DIRS "\${_nddr_boost_prefix}/include")
set(Boost_INCLUDE_DIR "\${_nddr_boost_prefix}/include")
set(Boost_LIBRARIES "")
set(Boost_VERSION "$boost_version")
set(Boost_VERSION_STRING "$boost_version")
set(Boost_VERSION_MACRO "$boost_version_macro")
set(Boost_VERSION_MAJOR "${boost_version%%.*}")
set(Boost_VERSION_MINOR "$(echo "$boost_version" | cut -d. -f2)")
set(Boost_VERSION_PATCH "${boost_version##*.}")
set(Boost_VERSION_COUNT 3)
if(NOT TARGET Boost::headers)
  add_library(Boost::headers INTERFACE IMPORTED)
  set_target_properties(Boost::headers PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "\${Boost_INCLUDE_DIRS}"
    INTERFACE_COMPILE_DEFINITIONS "BOOST_ALL_NO_LIB")
endif()
if(NOT TARGET Boost::boost)
  add_library(Boost::boost INTERFACE IMPORTED)
  set_target_properties(Boost::boost PROPERTIES INTERFACE_LINK_LIBRARIES Boost::headers)
endif()
foreach(_nddr_boost_component IN LISTS Boost_FIND_COMPONENTS)
  if(NOT _nddr_boost_component STREQUAL "headers")
    set(Boost_FOUND FALSE)
    set(Boost_NOT_FOUND_MESSAGE "only the header-only subset of Boost is in \${_nddr_boost_prefix}")
  endif()
endforeach()
unset(_nddr_boost_prefix)
CMAKE
cat >"$boost_cmake/BoostConfigVersion.cmake" <<CMAKE
# Written by tools/gpu-deps.sh: same major version and at least the requested one.
set(PACKAGE_VERSION "$boost_version")
if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION
   OR NOT PACKAGE_FIND_VERSION_MAJOR EQUAL ${boost_version%%.*})
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
CMAKE

eigen_version=$(sed -n 's/^set *( *PACKAGE_VERSION "\(.*\)").*/\1/p' "$deps/share/eigen3/cmake/Eigen3ConfigVersion.cmake" | head -n1)
catch2_version=$(sed -n 's/^set *( *PACKAGE_VERSION "\(.*\)").*/\1/p' "$deps/lib/cmake/Catch2/Catch2ConfigVersion.cmake" | head -n1)
{
  echo "Collected by tools/gpu-deps.sh on $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "eigen  ${eigen_version:-?}  from $eigen_include"
  echo "catch2 ${catch2_version:-?}  from $catch2_include"
  echo "boost  $boost_version (hana, config, version only)  from $boost_include"
} >"$deps/MANIFEST"

size_kb=$(du -sk "$deps" | cut -f1)
cat "$deps/MANIFEST"
du -sh "$deps"/include/* "$deps/lib/cmake"/* "$deps/share/eigen3"
echo "gpu-deps: $deps holds $((size_kb / 1024)) MB"
((size_kb < max_mb * 1024)) || die "$deps is $((size_kb / 1024)) MB, above the ${max_mb} MB budget"
