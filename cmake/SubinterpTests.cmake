# Registers every test with CTest. Labels: "cpp" (GoogleTest, tests/cpp),
# "python" (unittest, tests/python), "examples" (the programs in examples/),
# "install" (find_package and pip install).
#
# Environment of every test:
#   PYTHONPATH=<build>/python:<source>/python   _subinterp, then the package
#   SUBINTERP_BUILD_DIR=<build>, SUBINTERP_SOURCE_DIR=<source>
#   PYTHONDONTWRITEBYTECODE=1, PYTHONFAULTHANDLER=1
# plus, in a sanitizer build, the sanitizer's options and, for tests that run
# the (uninstrumented) python executable, LD_PRELOAD of its runtime.

if(SUBINTERP_SANITIZE STREQUAL "")
  set(SUBINTERP_TEST_TIMEOUT 300 CACHE STRING "Timeout in seconds of each test")
else()
  # Instrumented code runs several times slower.
  set(SUBINTERP_TEST_TIMEOUT 900 CACHE STRING "Timeout in seconds of each test")
endif()

set(SUBINTERP_TEST_ENV
    "PYTHONPATH=${SUBINTERP_PYTHON_BUILD_DIR}:${PROJECT_SOURCE_DIR}/python"
    "SUBINTERP_BUILD_DIR=${PROJECT_BINARY_DIR}"
    "SUBINTERP_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
    "PYTHONDONTWRITEBYTECODE=1"
    "PYTHONFAULTHANDLER=1")
if(SUBINTERP_SANITIZE STREQUAL "address")
  # Python objects then come from malloc, where ASan sees each one.
  list(APPEND SUBINTERP_TEST_ENV "PYTHONMALLOC=malloc")
endif()
# Tests that run a program we linked / the python executable.
set(_exe_env ${SUBINTERP_TEST_ENV} ${SUBINTERP_SANITIZER_EXE_ENV})
set(_python_env ${SUBINTERP_TEST_ENV} ${SUBINTERP_SANITIZER_ENV})

# --- C++ tests: one executable, each GoogleTest case a CTest test "cpp.<Suite>.<Name>".
file(GLOB _cpp_tests CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/tests/cpp/*_test.cpp")
if(_cpp_tests)
  find_package(GTest REQUIRED)
  include(GoogleTest)
  subinterp_program(subinterp_cpp_tests ${_cpp_tests})
  target_link_libraries(subinterp_cpp_tests PRIVATE GTest::gtest_main GTest::gmock)
  set_target_properties(subinterp_cpp_tests PROPERTIES
    RUNTIME_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}/tests")
  # PRE_TEST: the list of cases is read when ctest runs, not at build time, so
  # a build never fails because a test binary cannot start.
  gtest_discover_tests(subinterp_cpp_tests
    TEST_PREFIX "cpp."
    TEST_LIST subinterp_cpp_tests_TESTS
    DISCOVERY_MODE PRE_TEST
    DISCOVERY_TIMEOUT 60
    PROPERTIES LABELS cpp TIMEOUT ${SUBINTERP_TEST_TIMEOUT})
  # gtest_discover_tests flattens list-valued PROPERTIES, so ENVIRONMENT (a
  # list) is set by a file that CTest reads after the discovered tests.
  set(_env_file "${PROJECT_BINARY_DIR}/subinterp_cpp_tests_env.cmake")
  file(WRITE "${_env_file}"
    "if(subinterp_cpp_tests_TESTS)\n"
    "  set_tests_properties(\${subinterp_cpp_tests_TESTS} PROPERTIES ENVIRONMENT [==[${_exe_env}]==])\n"
    "endif()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${_env_file}")
endif()

# --- Python tests: one CTest test "python.<module>" per tests/python/test_*.py.
file(GLOB _py_tests CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/tests/python/test_*.py")
foreach(_file IN LISTS _py_tests)
  get_filename_component(_module "${_file}" NAME_WE)
  add_test(NAME python.${_module}
           COMMAND "${Python_EXECUTABLE}" -m unittest -v ${_module}
           WORKING_DIRECTORY "${PROJECT_SOURCE_DIR}/tests/python")
  set_tests_properties(python.${_module} PROPERTIES
    LABELS python
    TIMEOUT ${SUBINTERP_TEST_TIMEOUT}
    ENVIRONMENT "${_python_env}")
endforeach()

# --- one core per process: C++ hosts and a C++ extension of the tests that
# meet the subinterp package in one process (tests/hosts).
#   _subinterp_probe     an extension module that uses the C++ API (loaded by
#                        tests/python/test_one_core.py from <build>/tests/probe),
#                        and _subinterp_probe_other, the same built for another
#                        release
#   host.static_core     a host with the static core: the package refuses it
#   host.shutdown_*      shutdown() once, host or package first
set(_hosts "${PROJECT_SOURCE_DIR}/tests/hosts")
Python_add_library(_subinterp_probe MODULE WITH_SOABI "${_hosts}/probe_module.cpp")
target_link_libraries(_subinterp_probe PRIVATE subinterp::core)
set_target_properties(_subinterp_probe PROPERTIES
  LIBRARY_OUTPUT_DIRECTORY "$<1:${PROJECT_BINARY_DIR}/tests/probe>"
  CXX_VISIBILITY_PRESET hidden)
subinterp_warnings(_subinterp_probe)

# The same module built against the headers of another release (only the
# version differs): importing it must fail with both builds named.
set(_other_include "${PROJECT_BINARY_DIR}/tests/other-release/include")
file(READ "${SUBINTERP_GENERATED_INCLUDE_DIR}/subinterp/version.hpp" _version_hpp)
string(REPLACE "\"${PROJECT_VERSION}\"" "\"${PROJECT_VERSION}-other\"" _version_hpp "${_version_hpp}")
file(CONFIGURE OUTPUT "${_other_include}/subinterp/version.hpp" CONTENT "${_version_hpp}" @ONLY)
Python_add_library(_subinterp_probe_other MODULE WITH_SOABI "${_hosts}/probe_module.cpp")
target_include_directories(_subinterp_probe_other BEFORE PRIVATE "${_other_include}")
target_compile_definitions(_subinterp_probe_other PRIVATE PROBE_NAME=_subinterp_probe_other)
target_link_libraries(_subinterp_probe_other PRIVATE subinterp::core)
set_target_properties(_subinterp_probe_other PROPERTIES
  LIBRARY_OUTPUT_DIRECTORY "$<1:${PROJECT_BINARY_DIR}/tests/probe>"
  CXX_VISIBILITY_PRESET hidden)

subinterp_program(shutdown_host "${_hosts}/shutdown_host.cpp")
set_target_properties(shutdown_host PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}/tests")
foreach(_order host-first python-first)
  add_test(NAME host.shutdown_${_order} COMMAND shutdown_host ${_order})
  set_tests_properties(host.shutdown_${_order} PROPERTIES
    LABELS cpp TIMEOUT ${SUBINTERP_TEST_TIMEOUT} ENVIRONMENT "${_exe_env}")
endforeach()

if(TARGET subinterp_core_static)
  add_executable(static_core_host "${_hosts}/static_core_host.cpp")
  target_link_libraries(static_core_host PRIVATE subinterp_core_static Python::Python)
  target_compile_definitions(static_core_host PRIVATE
    SUBINTERP_BUILD_PYTHONPATH="${SUBINTERP_PYTHON_BUILD_DIR}:${PROJECT_SOURCE_DIR}/python")
  set_target_properties(static_core_host PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}/tests")
  add_dependencies(static_core_host _subinterp)
  subinterp_warnings(static_core_host)
  add_test(NAME host.static_core COMMAND static_core_host)
  set_tests_properties(host.static_core PROPERTIES
    LABELS cpp TIMEOUT ${SUBINTERP_TEST_TIMEOUT} ENVIRONMENT "${_exe_env}")
endif()

# --- the example programs run, each a test "example.<name>" (exit status 0
# means its own checks passed).
if(SUBINTERP_EXAMPLES)
  file(GLOB _examples CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/examples/*.cpp")
  foreach(_source IN LISTS _examples)
    get_filename_component(_name "${_source}" NAME_WE)
    add_test(NAME example.${_name} COMMAND example_${_name})
    set_tests_properties(example.${_name} PROPERTIES
      LABELS examples
      TIMEOUT ${SUBINTERP_TEST_TIMEOUT}
      ENVIRONMENT "${_exe_env}")
  endforeach()
endif()

# --- find_package(subinterp) from an install into a scratch prefix builds a
# consumer (tests/find-package) that links subinterp::core.
if(SUBINTERP_INSTALL)
  list(JOIN SUBINTERP_SANITIZE_FLAGS " " _sanitize_flags)
  list(JOIN SUBINTERP_SANITIZE_LINK_FLAGS " " _sanitize_link_flags)
  add_test(NAME install.find_package
           COMMAND "${CMAKE_COMMAND}"
             "-DBUILD_DIR=${PROJECT_BINARY_DIR}"
             "-DCONSUMER_DIR=${PROJECT_SOURCE_DIR}/tests/find-package"
             "-DWORK_DIR=${PROJECT_BINARY_DIR}/find-package-test"
             "-DGENERATOR=${CMAKE_GENERATOR}"
             "-DCXX_COMPILER=${CMAKE_CXX_COMPILER}"
             "-DBUILD_TYPE=$<CONFIG>"
             "-DPython_EXECUTABLE=${Python_EXECUTABLE}"
             "-DSANITIZE_FLAGS=${_sanitize_flags}"
             "-DSANITIZE_LINK_FLAGS=${_sanitize_link_flags}"
             -P "${PROJECT_SOURCE_DIR}/cmake/FindPackageTest.cmake")
  set_tests_properties(install.find_package PROPERTIES
    LABELS install
    TIMEOUT ${SUBINTERP_TEST_TIMEOUT}
    ENVIRONMENT "${_exe_env}")
endif()

# --- pip installs the project (PEP 517 backend in tools/build_backend, no
# package index) into a scratch folder, and a fresh python imports it from
# there alone. It builds a plain Release wheel, so a sanitizer build skips it.
if(SUBINTERP_SANITIZE STREQUAL "")
  add_test(NAME install.pip
           COMMAND "${CMAKE_COMMAND}"
             "-DPython_EXECUTABLE=${Python_EXECUTABLE}"
             "-DSOURCE_DIR=${PROJECT_SOURCE_DIR}"
             "-DWORK_DIR=${PROJECT_BINARY_DIR}/pip-install-test"
             -P "${PROJECT_SOURCE_DIR}/cmake/PipInstallTest.cmake")
  set_tests_properties(install.pip PROPERTIES
    LABELS "install;python"
    TIMEOUT 900
    FIXTURES_SETUP subinterp_wheel)

  # One core, whoever loads first: the find_package consumer (linked with the
  # library installed by cmake --install) imports the package installed by
  # pip in the test above, whose extension carries its own copy of the
  # library: the loader gives it the host's, and the two share one registry.
  if(SUBINTERP_INSTALL)
    set_tests_properties(install.find_package PROPERTIES FIXTURES_SETUP subinterp_consumer)
    add_test(NAME install.host_imports_the_wheel
             COMMAND "${PROJECT_BINARY_DIR}/find-package-test/build/consumer"
                     "${PROJECT_BINARY_DIR}/pip-install-test/venv/lib/python${SUBINTERP_PYTHON_TAG}/site-packages")
    set_tests_properties(install.host_imports_the_wheel PROPERTIES
      LABELS install
      TIMEOUT ${SUBINTERP_TEST_TIMEOUT}
      FIXTURES_REQUIRED "subinterp_wheel;subinterp_consumer"
      # Not the build tree's package: the wheel's.
      ENVIRONMENT "PYTHONNOUSERSITE=1;PYTHONDONTWRITEBYTECODE=1")
  endif()
endif()
