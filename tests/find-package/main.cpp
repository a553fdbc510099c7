// Links the installed subinterp::core (the shared libsubinterp), embeds
// Python, runs code in a sub-interpreter, and prints the version and the
// file of the core it runs on.
#include <Python.h>

#include <subinterp/subinterp.hpp>

#include <cstdio>

int main() {
  subinterp::require_core_build();  // these headers match the library loaded
  Py_InitializeEx(0);
  PyThreadState* main_tstate = PyEval_SaveThread();
  int status = 0;
  try {
    subinterp::Interpreter interp = subinterp::Interpreter::create();
    subinterp::Value r = interp.call(subinterp::Value::function_ref("math", "factorial"),
                                     subinterp::Value::tuple({subinterp::Value::from_int(10)}),
                                     subinterp::Value());
    if (r.as_int() != 3628800) status = 1;
    interp.close();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    status = 1;
  }
  PyEval_RestoreThread(main_tstate);
  subinterp::shutdown();
  if (Py_FinalizeEx() < 0) status = 1;
  std::printf("subinterp %s core %s\n", subinterp::version(), subinterp::core_path().c_str());
  return status;
}
