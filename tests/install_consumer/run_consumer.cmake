# Script of install.find_package_consumer (CMakeLists.txt here): installs nddr, builds the consumer
# project against it and runs it; checks that a program on nddr::nddr alone links neither libpng
# nor zlib (ldd), that one on nddr::image_io does, that one on nddr::cuda does not link libcublas
# (nddr loads it on first use), and that nddr::nddr is found and builds where libpng and zlib
# cannot be found at all.
file(REMOVE_RECURSE ${PREFIX} ${CONSUMER_BUILD} ${CONSUMER_BUILD}-no-images)
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message("${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}")
  endif()
endfunction()
# The entries of ldd's output for `program` (linked --no-as-needed, so they are there when the
# program's targets put them on the link line) that match `regex`.
function(linked_libraries program regex out_var)
  find_program(LDD ldd REQUIRED)
  execute_process(COMMAND ${LDD} ${program} OUTPUT_VARIABLE libs RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "ldd ${program} failed (${rc})")
  endif()
  string(REGEX MATCHALL "${regex}" found "${libs}")
  set(${out_var} "${found}" PARENT_SCOPE)
endfunction()
# The libpng and zlib entries of ldd's output for `program`.
function(image_libraries program out_var)
  linked_libraries(${program} "(libpng[^ \t\n]*|libz\\.so[^ \t\n]*)" found)
  set(${out_var} "${found}" PARENT_SCOPE)
endfunction()

run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${PREFIX})
set(_cuda_args -DNDDR_CONSUMER_CUDA=${WITH_CUDA})
if(WITH_CUDA AND CUDA_ROOT)
  list(APPEND _cuda_args -DCUDAToolkit_ROOT=${CUDA_ROOT})
endif()
set(_common -DCMAKE_PREFIX_PATH=${PREFIX} -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE} -B ${CONSUMER_BUILD} ${_common} ${_cuda_args})
run(${CMAKE_COMMAND} --build ${CONSUMER_BUILD})
run(${CONSUMER_BUILD}/consumer)
run(${CONSUMER_BUILD}/consumer_images ${CONSUMER_BUILD}/consumer_image.png)
if(WITH_CUDA)
  run(${CONSUMER_BUILD}/consumer_cuda)
  linked_libraries(${CONSUMER_BUILD}/consumer_cuda "libcublas[^ \t\n]*" _cublas)
  if(_cublas)
    message(FATAL_ERROR "the nddr::cuda consumer links cuBLAS (${_cublas}); nddr loads it on "
                        "first use (docs/cuda.md)")
  endif()
endif()

image_libraries(${CONSUMER_BUILD}/consumer _plain)
if(_plain)
  message(FATAL_ERROR "the nddr::nddr consumer links image libraries: ${_plain}")
endif()
image_libraries(${CONSUMER_BUILD}/consumer_images _images)
if(NOT _images MATCHES "libpng")
  message(FATAL_ERROR "the nddr::image_io consumer does not link libpng (ldd: '${_images}')")
endif()
message("nddr::nddr consumer: no libpng, no zlib (ldd); nddr::image_io consumer: ${_images}")

# As if libpng and zlib were not installed: find_package(nddr) succeeds without nddr::image_io
# and the nddr::nddr program builds and runs.
run(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE} -B ${CONSUMER_BUILD}-no-images ${_common}
    -DNDDR_CONSUMER_IMAGES=OFF -DNDDR_CONSUMER_CUDA=OFF
    -DCMAKE_DISABLE_FIND_PACKAGE_PNG=TRUE -DCMAKE_DISABLE_FIND_PACKAGE_ZLIB=TRUE)
run(${CMAKE_COMMAND} --build ${CONSUMER_BUILD}-no-images --target consumer)
run(${CONSUMER_BUILD}-no-images/consumer)
message("install consumer: all checks passed")
