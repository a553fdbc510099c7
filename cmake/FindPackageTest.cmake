# ctest script (cmake -P): installs the build into a scratch prefix, then
# configures, builds and runs tests/find-package against that prefix alone.
# With the shared core (the default), the consumer must need libsubinterp's
# SONAME and run on the installed library.
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
if(NOT rc EQUAL 0 OR NOT out MATCHES "^subinterp [0-9]+\\.[0-9]+\\.[0-9]+ core ([^\n]*)")
  message(FATAL_ERROR "the consumer failed (${rc}) or printed no version")
endif()
set(core "${CMAKE_MATCH_1}")

file(GLOB shared_core "${prefix}/lib*/libsubinterp.so.*")
if(shared_core)
  execute_process(COMMAND readelf -d "${consumer}" OUTPUT_VARIABLE dynamic RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR NOT dynamic MATCHES "NEEDED\\)[^\n]*\\[libsubinterp\\.so\\.[0-9]+\\.[0-9]+\\]")
    message(FATAL_ERROR "the consumer does not link the shared libsubinterp:\n${dynamic}")
  endif()
  get_filename_component(core_real "${core}" REALPATH)
  get_filename_component(prefix_real "${prefix}" REALPATH)
  string(FIND "${core_real}" "${prefix_real}/" at)
  if(NOT at EQUAL 0)
    message(FATAL_ERROR "the consumer ran on ${core_real}, not on the library in ${prefix_real}")
  endif()
endif()
