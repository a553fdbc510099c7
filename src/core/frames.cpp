// sys._current_frames() and sys._current_exceptions() for one interpreter.
//
// CPython 3.12 and 3.13 implement both (_PyThread_CurrentFrames and
// _PyThread_CurrentExceptions in Python/pystate.c) by walking the thread
// states of every interpreter under the runtime's list lock but only the
// caller's GIL: they make frame objects for, and read the exceptions of,
// threads that run at that moment under other interpreters' GILs, and the
// process aborts (free(): invalid pointer) or crashes. The replacements walk
// the calling interpreter's thread states only, under its GIL, and otherwise
// do what CPython does: same audit events, same keys (tstate->thread_id),
// same values, same order of insertion.
#include "subinterp/frames.hpp"

#include <exception>
#include <string>

#include "frames.hpp"
#include "internal.hpp"
#include "subinterp/error.hpp"
#include "subinterp/ref.hpp"

// _PyErr_StackItem (cpython/pystate.h) holds only `exc_value` since 3.12,
// which also made sys._current_exceptions() map to the exception instead of
// a (type, value, traceback) tuple; 3.12 and 3.13 agree on both.
#if PY_VERSION_HEX < 0x030C0000
#error "subinterp needs CPython 3.12 or later"
#endif

namespace subinterp {
namespace {

// Calls add(result, tstate) for each thread state of the calling
// interpreter, as CPython walks them (newest first). The list cannot change
// under us except by additions at its head: threads of this interpreter
// delete their thread states with its GIL held (threading, PyGILState, the
// runtime's Attachment), and nothing in the walk releases the GIL: since
// 3.12 allocations only schedule a garbage collection, which runs at the
// next bytecode boundary, not in here.
template <class Add>
PyObject* list_threads(const char* audit_event, Add add) {
  try {
    py::check(PySys_Audit(audit_event, nullptr));
    py::ref result = py::check(PyDict_New());
    PyInterpreterState* interp = PyThreadState_GetInterpreter(PyThreadState_Get());
    for (PyThreadState* t = PyInterpreterState_ThreadHead(interp); t != nullptr;
         t = PyThreadState_Next(t)) {
      add(result.get(), t);
    }
    return result.release();
  } catch (py::PythonError& e) {
    e.restore();
  } catch (std::exception& e) {
    PyErr_SetString(PyExc_SystemError, e.what());
  } catch (...) {
    SUBINTERP_RETHROW_FORCED_UNWIND;
    PyErr_SetString(PyExc_SystemError, "unknown C++ exception");
  }
  return nullptr;
}

void set_item(PyObject* dict, unsigned long thread_id, PyObject* value) {
  py::ref key = py::check(PyLong_FromUnsignedLong(thread_id));
  py::check(PyDict_SetItem(dict, key.get(), value));
}

PyObject* current_frames(PyObject*, PyObject*) {
  return list_threads("sys._current_frames", [](PyObject* result, PyThreadState* t) {
    // The topmost complete frame, made into a frame object (CPython skips a
    // thread without one). A failure to make the object is cleared here, so
    // such a thread is skipped instead of failing the call.
    py::ref frame = py::ref::steal(reinterpret_cast<PyObject*>(PyThreadState_GetFrame(t)));
    if (frame) set_item(result, t->thread_id, frame.get());
  });
}

// The exception `t` is handling, as CPython's _PyErr_GetTopmostException
// finds it: the innermost entry of its exception stack that holds one, else
// None.
PyObject* handled_exception(PyThreadState* t) {
  _PyErr_StackItem* item = t->exc_info;
  while ((item->exc_value == nullptr || item->exc_value == Py_None) &&
         item->previous_item != nullptr) {
    item = item->previous_item;
  }
  return item->exc_value != nullptr ? item->exc_value : Py_None;
}

PyObject* current_exceptions(PyObject*, PyObject*) {
  return list_threads("sys._current_exceptions", [](PyObject* result, PyThreadState* t) {
    set_item(result, t->thread_id, handled_exception(t));
  });
}

// A static method table is fine (no Python objects in it); the function
// objects are made in each interpreter.
PyMethodDef g_listings[] = {
    {"_current_frames", current_frames, METH_NOARGS,
     "_current_frames($module, /)\n--\n\n"
     "Return a dict mapping each thread's identifier to the topmost stack frame\n"
     "currently active in that thread, for the threads of the calling interpreter.\n\n"
     "Installed by subinterp: CPython's own version reads other interpreters'\n"
     "threads without their GILs, which crashes while they run.\n\n"
     "This function should be used for specialized purposes only."},
    {"_current_exceptions", current_exceptions, METH_NOARGS,
     "_current_exceptions($module, /)\n--\n\n"
     "Return a dict mapping each thread's identifier to its current raised\n"
     "exception (or None), for the threads of the calling interpreter.\n\n"
     "Installed by subinterp: CPython's own version reads other interpreters'\n"
     "threads without their GILs, which crashes while they run.\n\n"
     "This function should be used for specialized purposes only."},
};

bool is_ours(PyObject* obj, const PyMethodDef& def) {
  return obj != nullptr && PyCFunction_Check(obj) && PyCFunction_GetFunction(obj) == def.ml_meth;
}

}  // namespace

void protect_thread_listings() {
  py::ref module_name = py::check(PyUnicode_FromString("sys"));
  // Bound as the functions' __self__, as CPython's are.
  py::ref sys = py::ref::steal(PyImport_GetModule(module_name.get()));
  if (!sys) py::throw_python_error();
  for (PyMethodDef& def : g_listings) {
    py::ref current = py::ref::steal(PyObject_GetAttrString(sys.get(), def.ml_name));
    if (!current) PyErr_Clear();  // replaced below all the same
    if (is_ours(current.get(), def)) continue;
    py::ref function = py::check(PyCFunction_NewEx(&def, sys.get(), module_name.get()));
    py::check(PyObject_SetAttrString(sys.get(), def.ml_name, function.get()));
  }
}

void detail::protect_thread_listings_or_fail() {
  try {
    protect_thread_listings();
  } catch (py::PythonError& e) {
    py::ref exc = e.take();
    std::string what = type_qualname(exc.get());
    if (py::ref text = py::ref::steal(PyObject_Str(exc.get()))) {
      if (const char* utf8 = PyUnicode_AsUTF8(text.get())) what += std::string(": ") + utf8;
    }
    PyErr_Clear();
    throw InterpreterError("could not replace sys._current_frames(): " + what);
  }
}

}  // namespace subinterp
