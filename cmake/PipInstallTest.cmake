# ctest script (cmake -P): `pip install` of the source tree into a scratch
# folder, offline (--no-index) and with pip's default build isolation, through
# the in-tree PEP 517 backend; then a fresh python, with only that folder on
# its path, imports subinterp and _subinterp from it.
# Inputs: Python_EXECUTABLE SOURCE_DIR WORK_DIR

set(target "${WORK_DIR}/target")
file(REMOVE_RECURSE "${target}")
file(MAKE_DIRECTORY "${target}")

unset(ENV{PYTHONPATH})
unset(ENV{PIP_REQUIRE_VIRTUALENV})
# The backend keeps its CMake build here, so that a second run is incremental.
set(ENV{SUBINTERP_WHEEL_BUILD_DIR} "${WORK_DIR}/wheel-build")

execute_process(
  COMMAND "${Python_EXECUTABLE}" -m pip install --no-index --no-cache-dir
          --disable-pip-version-check --target "${target}" "${SOURCE_DIR}"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pip install failed (${rc})")
endif()

set(check [=[
import importlib.metadata, os, sys
target = os.path.realpath(sys.argv[1])
import subinterp, _subinterp
for module in (subinterp, _subinterp):
    where = os.path.realpath(module.__file__)
    assert where.startswith(target + os.sep), (module.__name__, where)
print("imported subinterp", importlib.metadata.version("subinterp"), "from", target)
]=])
set(ENV{PYTHONPATH} "${target}")
execute_process(COMMAND "${Python_EXECUTABLE}" -s -c "${check}" "${target}"
                WORKING_DIRECTORY "${WORK_DIR}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "importing the installed subinterp failed (${rc})")
endif()
