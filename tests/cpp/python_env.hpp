// Shared set-up of the C++ tests: the process embeds Python as a C++ host
// does.
//
// The GoogleTest environment initializes Python once per process and then
// detaches the main thread's thread state, so tests start with no thread
// state attached on any thread, like the threads of a C++ server. Code that
// must touch Python objects of the main interpreter (to capture or rebuild
// values) attaches one explicitly with `MainThreadState`; subinterpreters
// are only ever entered through the subinterp API. PyGILState_* is never
// used (DESIGN.md, invariant 2).
#pragma once

#include <Python.h>

#include <memory>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "subinterp/subinterp.hpp"

namespace subinterp {
// Lets GoogleTest print a Value::Kind by name (found by argument-dependent
// lookup).
inline void PrintTo(Value::Kind kind, std::ostream* out) {
  static const char* const kNames[] = {"None",    "Bool", "Int",      "BigInt",    "Float",
                                       "Complex", "Str",  "Bytes",    "ByteArray", "Tuple",
                                       "List",    "Dict", "Set",      "FrozenSet", "Buffer",
                                       "Module",  "Code", "Function", "Pickled",
                                       "Queue",   "SendChannel", "RecvChannel", "Instance"};
  auto index = static_cast<std::size_t>(kind);
  if (index < sizeof(kNames) / sizeof(kNames[0])) {
    *out << "Kind::" << kNames[index];
  } else {
    *out << "Kind(" << index << ")";
  }
}
}  // namespace subinterp

namespace subinterp_test {

class PythonEnv : public ::testing::Environment {
 public:
  void SetUp() override {
    Py_InitializeEx(0);
    main_thread = std::this_thread::get_id();
    main_tstate = PyEval_SaveThread();
  }

  void TearDown() override {
    PyEval_RestoreThread(main_tstate);
    subinterp::shutdown();
    Py_FinalizeEx();
    main_tstate = nullptr;
  }

  // The thread that initialized Python, and its (detached) thread state of
  // the main interpreter.
  static inline std::thread::id main_thread;
  static inline PyThreadState* main_tstate = nullptr;
};

// `inline`, not `static`: every test file includes this header, and the
// environment must be registered once per process, not once per file.
inline ::testing::Environment* const python_env =
    ::testing::AddGlobalTestEnvironment(new PythonEnv);

// Attaches a thread state of the main interpreter on the calling thread for
// its lifetime. On the thread that initialized Python it reuses that
// thread's own thread state (one thread state per thread and interpreter);
// on any other thread it makes one and deletes it, on that thread, at the
// end. Requires that no thread state is attached when it is made.
class MainThreadState {
 public:
  MainThreadState() {
    owned_ = std::this_thread::get_id() != PythonEnv::main_thread;
    tstate_ = owned_ ? PyThreadState_New(PyInterpreterState_Main()) : PythonEnv::main_tstate;
    guard_ = std::make_unique<subinterp::ThreadStateGuard>(tstate_);
  }
  ~MainThreadState() {
    guard_.reset();
    if (owned_) {
      PyEval_RestoreThread(tstate_);
      PyThreadState_Clear(tstate_);
      PyThreadState_DeleteCurrent();
    }
  }
  MainThreadState(const MainThreadState&) = delete;
  MainThreadState& operator=(const MainThreadState&) = delete;

 private:
  bool owned_ = false;
  PyThreadState* tstate_ = nullptr;
  std::unique_ptr<subinterp::ThreadStateGuard> guard_;
};

// Throws with the pending Python error printed to stderr, so a failing
// helper call shows the Python traceback in the test log.
inline subinterp::py::ref checked(PyObject* obj, const std::string& what) {
  if (obj == nullptr) {
    PyErr_Print();
    throw std::runtime_error("Python error in: " + what);
  }
  return subinterp::py::ref::steal(obj);
}

// A fresh namespace of the attached interpreter with builtins in it.
inline subinterp::py::ref fresh_namespace() {
  subinterp::py::ref ns = checked(PyDict_New(), "PyDict_New");
  if (PyDict_SetItemString(ns.get(), "__builtins__", PyEval_GetBuiltins()) < 0) {
    checked(nullptr, "__builtins__");
  }
  return ns;
}

// Evaluates `expr` in `ns` (a fresh namespace when null) of the attached
// interpreter; statements in `setup` run first.
inline subinterp::py::ref eval(const std::string& expr, const std::string& setup = {},
                               PyObject* ns = nullptr) {
  subinterp::py::ref owned;
  if (ns == nullptr) {
    owned = fresh_namespace();
    ns = owned.get();
  }
  if (!setup.empty()) checked(PyRun_String(setup.c_str(), Py_file_input, ns, ns), setup);
  return checked(PyRun_String(expr.c_str(), Py_eval_input, ns, ns), expr);
}

// Python's `a == b` on objects of the attached interpreter.
inline bool py_equal(PyObject* a, PyObject* b) {
  int rc = PyObject_RichCompareBool(a, b, Py_EQ);
  if (rc < 0) checked(nullptr, "==");
  return rc == 1;
}

// repr(obj), for failure messages.
inline std::string py_repr(PyObject* obj) {
  subinterp::py::ref r = subinterp::py::ref::steal(PyObject_Repr(obj));
  if (!r) {
    PyErr_Clear();
    return "<repr failed>";
  }
  const char* text = PyUnicode_AsUTF8(r.get());
  if (text == nullptr) {
    PyErr_Clear();
    return "<repr not UTF-8>";
  }
  return text;
}

// Captures the value of `expr` evaluated in the main interpreter.
inline subinterp::Value capture_main(const std::string& expr, const std::string& setup = {}) {
  MainThreadState attached;
  subinterp::py::ref obj = eval(expr, setup);
  return subinterp::Value::capture(obj.get());
}

}  // namespace subinterp_test
