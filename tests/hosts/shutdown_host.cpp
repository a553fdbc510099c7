// shutdown() runs once for the host and the subinterp package together.
//
//   shutdown_host host-first     the host calls subinterp::shutdown() before
//                                Py_FinalizeEx(); the package's exit hook
//                                then finds nothing to do
//   shutdown_host python-first   Py_FinalizeEx() runs the package's exit hook,
//                                which ends the host's interpreters too; the
//                                host's shutdown() afterwards returns at once
//
// Either way, interpreters and a pool made by Python code and by the host
// are all ended, and the process exits with status 0.
#include <Python.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "subinterp/subinterp.hpp"

namespace si = subinterp;

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
  std::fflush(stdout);
  if (!ok) ++failures;
}

constexpr const char* kSetUp = R"(
import subinterp
from subinterp.futures import InterpreterPoolExecutor
interp = subinterp.create()
queue = subinterp.create_queue()
pool = InterpreterPoolExecutor(2)
assert pool.submit(abs, -3).result() == 3
)";

constexpr const char* kAfter = R"(
import subinterp
ids = [i.id for i in subinterp.list_all()]
assert ids == [0], ids
try:
    interp.exec('pass')
except subinterp.InterpreterError:
    pass
else:
    raise AssertionError('interpreter still open after shutdown()')
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || (std::strcmp(argv[1], "host-first") != 0 &&
                    std::strcmp(argv[1], "python-first") != 0)) {
    std::fprintf(stderr, "usage: shutdown_host host-first|python-first\n");
    return 2;
  }
  const bool host_first = std::strcmp(argv[1], "host-first") == 0;
#ifdef SUBINTERP_BUILD_PYTHONPATH
  setenv("PYTHONPATH", SUBINTERP_BUILD_PYTHONPATH, 0);
#endif
  Py_InitializeEx(0);
  expect(PyRun_SimpleString(kSetUp) == 0, "Python code makes an interpreter, a queue, a pool");
  PyThreadState* main_tstate = PyEval_SaveThread();
  // The host keeps its handle past the end (as a global would).
  auto kept = std::make_unique<si::Interpreter>(si::Interpreter::create());
  kept->exec("import subinterp");
  std::size_t count = si::list_interpreters().size();
  // main, Python's interpreter, 1 or 2 pool workers, the host's
  expect(count >= 4, "one registry holds them all: " + std::to_string(count));
  PyEval_RestoreThread(main_tstate);

  if (host_first) {
    si::shutdown();
    expect(kept->is_closed(), "the host's interpreter is closed");
    auto left = si::list_interpreters();
    expect(left.size() == 1 && left[0].first == 0,
           "after the host's shutdown() only the main interpreter is left");
    expect(PyRun_SimpleString(kAfter) == 0, "the package sees the same");
    try {
      si::Interpreter::create();
      expect(false, "create() after shutdown() throws");
    } catch (const si::InterpreterError&) {
      expect(true, "create() after shutdown() throws InterpreterError");
    }
    int rc = Py_FinalizeEx();
    expect(rc == 0, "Py_FinalizeEx (the package's exit hook finds nothing to do)");
  } else {
    int rc = Py_FinalizeEx();
    expect(rc == 0, "Py_FinalizeEx runs the package's exit hook");
    expect(kept->is_closed(), "the package's exit hook closed the host's interpreter");
    si::shutdown();  // returns at once: already done, and Python is finalized
    expect(true, "the host's shutdown() after Py_FinalizeEx returns");
  }
  kept.reset();  // after Python finalized: must leave Python alone
  return failures == 0 ? 0 : 1;
}
