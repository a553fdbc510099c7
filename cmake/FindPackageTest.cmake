# ctest script (cmake -P): installs the build into a scratch prefix, then
# configures, builds and runs tests/find-package against that prefix alone.
# Inputs: BUILD_DIR CONSUMER_DIR WORK_DIR GENERATOR CXX_COMPILER BUILD_TYPE
#         Python_EXECUTABLE SANITIZE_FLAGS SANITIZE_LINK_FLAGS (space-separated,
#         may be empty: the flags of a sanitizer build)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    list(JOIN ARGN " " cmd)
    message(FATAL_ERROR "failed (${rc}): ${cmd}")
  endif()
endfunction()

set(prefix "${WORK_DIR}/prefix")
set(consumer_build "${WORK_DIR}/build")
file(REMOVE_RECURSE "${WORK_DIR}")

if(NOT BUILD_TYPE)
  set(BUILD_TYPE Release)
endif()
run("${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}" --config "${BUILD_TYPE}")
run("${CMAKE_COMMAND}" -S "${CONSUMER_DIR}" -B "${consumer_build}" -G "${GENERATOR}"
    "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}"
    "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}"
    "-DCMAKE_PREFIX_PATH=${prefix}"
    "-DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF"
    "-DPython_EXECUTABLE=${Python_EXECUTABLE}"
    "-DCMAKE_CXX_FLAGS=${SANITIZE_FLAGS}"
    "-DCMAKE_EXE_LINKER_FLAGS=${SANITIZE_FLAGS} ${SANITIZE_LINK_FLAGS}")
run("${CMAKE_COMMAND}" --build "${consumer_build}" --config "${BUILD_TYPE}")

find_program(consumer NAMES consumer PATHS "${consumer_build}" "${consumer_build}/${BUILD_TYPE}"
             NO_DEFAULT_PATH REQUIRED)
execute_process(COMMAND "${consumer}" RESULT_VARIABLE rc OUTPUT_VARIABLE out)
message(STATUS "consumer printed: ${out}")
if(NOT rc EQUAL 0 OR NOT out MATCHES "^subinterp [0-9]+\\.[0-9]+\\.[0-9]+")
  message(FATAL_ERROR "the consumer failed (${rc}) or printed no version")
endif()
