// Links the installed subinterp::core (the shared libsubinterp), embeds
// Python, runs code in a sub-interpreter, and prints the version and the
// file of the core it runs on.
//
// With an argument, a folder holding an installed subinterp package (a
// wheel's site-packages), Python code in this host then imports that package:
// the package's extension must run on this host's core (one library mapped,
// the host's interpreters listed, the host's queue found by id).
#include <Python.h>

#include <subinterp/subinterp.hpp>

#include <cstdio>
#include <string>

namespace {

int use_package(const char* site_packages, const subinterp::Interpreter& interp,
                const subinterp::Queue& queue) {
  std::string code = "import sys\nsys.path.insert(0, r'''" + std::string(site_packages) +
                     "''')\n"
                     "import subinterp\n"
                     "assert subinterp.__file__.startswith(sys.path[0]), subinterp.__file__\n"
                     "ids = [i.id for i in subinterp.list_all()]\n"
                     "assert " + std::to_string(interp.id()) + " in ids, ids\n"
                     "subinterp.Queue(" + std::to_string(queue.id()) + ").put('from the package')\n"
                     "with open('/proc/self/maps') as f:\n"
                     "    cores = {l.split()[-1] for l in f if 'libsubinterp' in l}\n"
                     "import os\n"
                     "assert cores == {os.path.realpath(r'''" + subinterp::core_path() +
                     "''')}, cores\n"
                     "print('package', subinterp.__file__, 'on the core', cores.pop())\n";
  return PyRun_SimpleString(code.c_str()) == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
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
    if (argc > 1) {
      subinterp::Queue queue = subinterp::Queue::create();
      PyEval_RestoreThread(main_tstate);
      status |= use_package(argv[1], interp, queue);
      main_tstate = PyEval_SaveThread();
      if (status == 0 && queue.get(10.0).value.as_string() != "from the package") status = 1;
    }
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
