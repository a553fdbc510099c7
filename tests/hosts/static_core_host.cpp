// A host linked with the static core (SUBINTERP_SHARED=OFF's library). It
// works on its own; the subinterp package, whose extension uses the shared
// core, must refuse to load in it (a second registry), with an ImportError
// that names both files, in the main interpreter and in a sub-interpreter.
// Exit status 0 when all of that holds.
#include <Python.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "subinterp/subinterp.hpp"

namespace si = subinterp;

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
  if (!ok) ++failures;
}

bool names_both(const std::string& message) {
  return message.find(si::core_path()) != std::string::npos &&
         message.find("libsubinterp.so") != std::string::npos &&
         message.find("two copies of the subinterp core") != std::string::npos;
}

}  // namespace

int main() {
#ifdef SUBINTERP_BUILD_PYTHONPATH
  setenv("PYTHONPATH", SUBINTERP_BUILD_PYTHONPATH, 0);
#endif
  Py_InitializeEx(0);
  PyThreadState* main_tstate = PyEval_SaveThread();
  try {
    // This program's own core serves the process.
    si::Interpreter interp = si::Interpreter::create();
    interp.exec("x = 6 * 7");
    expect(si::core_path().find("static_core_host") != std::string::npos,
           "the core is in the program: " + si::core_path());
    try {
      interp.exec("import subinterp");
      expect(false, "import subinterp in a sub-interpreter is refused");
    } catch (const si::ExecutionFailed& e) {
      const auto& snap = e.snapshot();
      expect(snap.type_name == "ImportError", "sub-interpreter: " + snap.type_name);
      expect(names_both(snap.msg), "the error names both cores: " + snap.msg);
    }
    interp.exec("assert x == 42");  // still usable
    interp.close();
  } catch (const std::exception& e) {
    expect(false, std::string("unexpected error: ") + e.what());
  }

  PyEval_RestoreThread(main_tstate);
  PyObject* module = PyImport_ImportModule("subinterp");
  expect(module == nullptr && PyErr_ExceptionMatches(PyExc_ImportError),
         "import subinterp in the main interpreter is refused");
  if (module == nullptr) {
    PyObject* exc = PyErr_GetRaisedException();
    PyObject* text = PyObject_Str(exc);
    const char* message = text ? PyUnicode_AsUTF8(text) : nullptr;
    expect(message != nullptr && names_both(message),
           std::string("the error names both cores: ") + (message ? message : "?"));
    Py_XDECREF(text);
    Py_DECREF(exc);
  }
  Py_XDECREF(module);
  si::shutdown();
  int rc = Py_FinalizeEx();
  expect(rc == 0, "Py_FinalizeEx");
  return failures == 0 ? 0 : 1;
}
