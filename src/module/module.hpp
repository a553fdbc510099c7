// Shared parts of the _subinterp extension: module state and the error
// bridge (docs/extension.md).
#pragma once

#include <Python.h>

#include <cstdint>
#include <unordered_map>

#include "subinterp/subinterp.hpp"

namespace subinterp_ext {

namespace si = subinterp;
namespace py = subinterp::py;

// Everything the module keeps, per interpreter (DESIGN.md, invariant 3).
struct ModuleState {
  // Installed by the package through register(); null until then.
  PyObject* interpreter_error;
  PyObject* not_found_error;
  PyObject* execution_failed;
  PyObject* not_shareable_error;
  PyObject* make_excinfo;
  PyObject* queue_error;
  PyObject* queue_not_found;
  PyObject* queue_empty;
  PyObject* queue_full;
  PyObject* item_destroyed;
  PyObject* channel_error;
  PyObject* channel_not_found;
  PyObject* channel_empty;
  PyObject* channel_closed;
  PyObject* unbound;         // returned by get() for an unbound item
  PyObject* unbound_error;   // markers accepted as `unbounditems`
  PyObject* unbound_remove;
  PyObject* queue_class;  // subclasses of the types below, made by get()
  PyObject* interpreter_class;  // subinterp.Interpreter (a subclass of interpreter_base)
  PyObject* send_class;
  PyObject* recv_class;
  PyObject* cancelled_error;  // concurrent.futures.CancelledError
  PyObject* broken_pool;      // BrokenInterpreterPool
  // Made by the module.
  PyObject* queue_type;
  PyObject* interpreter_base;  // base of subinterp.Interpreter: marks its objects as handles
  PyObject* send_type;
  PyObject* recv_type;
  PyObject* pool_type;
  PyObject* task_type;
  // The one live object per queue or channel end in this interpreter
  // (borrowed: each removes itself when deallocated). Owned.
  std::unordered_map<std::int64_t, PyObject*>* known;
};

extern PyModuleDef module_def;

inline ModuleState* state_of(PyObject* module) {
  return static_cast<ModuleState*>(PyModule_GetState(module));
}

inline PyObject* or_default(PyObject* registered, PyObject* fallback) {
  return registered != nullptr ? registered : fallback;
}

// Turns the C++ exception in flight into a pending Python exception of this
// interpreter. Called from the catch clause of every entry point.
void translate(PyObject* module) noexcept;

// Each entry point is one try: this runs `body` and translates errors.
template <class Body>
// Not noexcept: a thread that CPython ends at exit unwinds through it.
PyObject* entry(PyObject* module, Body&& body) {
  try {
    return body();
  } catch (...) {
    SUBINTERP_RETHROW_FORCED_UNWIND;
    translate(module);
    return nullptr;
  }
}

// A non-negative int argument (an id); `what` names it in errors.
std::int64_t id_arg(PyObject* obj, const char* what = "interpreter id");
bool check_nargs(const char* name, Py_ssize_t nargs, Py_ssize_t min, Py_ssize_t max);

// Worker pools (pool.cpp).
int pool_exec(PyObject* module);

// Queues and channels (handles.cpp).
int handles_exec(PyObject* module);
extern PyMethodDef handle_functions[];

// Values between processes and the sandbox worker's lockdown (sandbox.cpp).
extern PyMethodDef sandbox_functions[];

}  // namespace subinterp_ext
