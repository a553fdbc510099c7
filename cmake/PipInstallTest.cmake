# ctest script (cmake -P): `pip install` of the source tree into a fresh
# virtual environment, offline (--no-index) and with pip's default build
# isolation, through the in-tree PEP 517 backend. Then, from a folder outside
# the source tree and with no PYTHONPATH or LD_LIBRARY_PATH, the
# environment's python imports subinterp and checks that:
#   - the package, its extension and the core library all come from the
#     environment, the library from beside the extension;
#   - the extension finds the library through an $ORIGIN run path;
#   - interpreters, a queue and the pool work.
# Inputs: Python_EXECUTABLE SOURCE_DIR WORK_DIR

set(venv "${WORK_DIR}/venv")
set(outside "${WORK_DIR}/elsewhere")
file(REMOVE_RECURSE "${venv}" "${outside}")
file(MAKE_DIRECTORY "${outside}")

unset(ENV{PYTHONPATH})
unset(ENV{LD_LIBRARY_PATH})
unset(ENV{PIP_REQUIRE_VIRTUALENV})
# The backend keeps its CMake build here, so that a second run is incremental.
set(ENV{SUBINTERP_WHEEL_BUILD_DIR} "${WORK_DIR}/wheel-build")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc WORKING_DIRECTORY "${outside}")
  if(NOT rc EQUAL 0)
    list(JOIN ARGN " " cmd)
    message(FATAL_ERROR "failed (${rc}): ${cmd}")
  endif()
endfunction()

run("${Python_EXECUTABLE}" -m venv --without-pip "${venv}")
set(venv_python "${venv}/bin/python")
# The python running pip installs into the environment (pip >= 22.3).
run("${Python_EXECUTABLE}" -m pip --python "${venv_python}" install --no-index --no-cache-dir
    --disable-pip-version-check "${SOURCE_DIR}")
unset(ENV{SUBINTERP_WHEEL_BUILD_DIR})

set(check [=[
import os, re, subprocess, sys
import importlib.metadata
prefix = os.path.realpath(sys.prefix)
import subinterp
from subinterp import _subinterp
package = os.path.dirname(os.path.realpath(subinterp.__file__))
assert package.startswith(prefix + os.sep), package
extension = os.path.realpath(_subinterp.__file__)
assert os.path.dirname(extension) == package, extension

# The library the process loaded is the one beside the extension.
with open("/proc/self/maps") as maps:
    loaded = {line.split()[-1] for line in maps if "libsubinterp" in line}
assert len(loaded) == 1 and os.path.dirname(next(iter(loaded))) == package, loaded

dynamic = subprocess.run(["readelf", "-d", extension], capture_output=True, text=True,
                         check=True).stdout
paths = re.findall(r"\((?:RPATH|RUNPATH)\)\s+Library r(?:un)?path: \[([^\]]*)\]", dynamic)
assert paths == ["$ORIGIN"], paths
needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(libsubinterp[^\]]*)\]", dynamic)
assert len(needed) == 1 and os.path.isfile(os.path.join(package, needed[0])), needed

interp = subinterp.create()
queue = subinterp.create_queue()
interp.call(lambda q: q.put(("from", __import__("sys").prefix)), queue)
assert queue.get(timeout=10) == ("from", sys.prefix)
from subinterp.futures import InterpreterPoolExecutor
with InterpreterPoolExecutor(2) as pool:
    assert list(pool.map(abs, [-1, -2, 3])) == [1, 2, 3]
# The server's extension and library, and the console script.
from subinterp import _server
assert os.path.dirname(os.path.realpath(_server.__file__)) == package, _server.__file__
script = os.path.join(os.path.dirname(sys.executable), "subinterp")
usage = subprocess.run([script, "serve", "--help"], capture_output=True, text=True)
assert usage.returncode == 0 and "--workers" in usage.stdout, usage
print("subinterp", importlib.metadata.version("subinterp"), "from", package,
      "with", sorted(loaded)[0], "run path", paths[0])
]=])
execute_process(COMMAND "${venv_python}" -I -c "${check}"
                WORKING_DIRECTORY "${outside}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "using the installed subinterp failed (${rc})")
endif()
