// _subinterp_probe: a C++ extension module of the tests that uses the C++ API
// of libsubinterp, as a third-party extension would. Loaded next to the
// subinterp package, it must work on the same core: the same interpreters,
// queues and shutdown.
#include <Python.h>

#include <algorithm>
#include <string>
#include <vector>

#include "subinterp/subinterp.hpp"

namespace si = subinterp;

// The tests also build this module as _subinterp_probe_other, against the
// headers of another release (a different SUBINTERP_BUILD_ID): it must refuse
// to load.
#ifndef PROBE_NAME
#define PROBE_NAME _subinterp_probe
#endif
#define PROBE_STR_(x) #x
#define PROBE_STR(x) PROBE_STR_(x)
#define PROBE_INIT_(x) PyInit_##x
#define PROBE_INIT(x) PROBE_INIT_(x)

namespace {

// Runs `body`; C++ errors become RuntimeError (their message), Python errors
// are restored.
template <class F>
PyObject* entry(F&& body) {
  try {
    return body();
  } catch (si::py::PythonError& e) {
    e.restore();
  } catch (const si::ExecutionFailed& e) {
    PyErr_Format(PyExc_RuntimeError, "ExecutionFailed: %s", e.snapshot().msg.c_str());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  } catch (...) {
    SUBINTERP_RETHROW_FORCED_UNWIND;
    PyErr_SetString(PyExc_SystemError, "unknown C++ exception");
  }
  return nullptr;
}

PyObject* interpreter_ids(PyObject*, PyObject*) {
  return entry([] {
    std::vector<std::int64_t> ids;
    for (auto& [id, whence] : si::list_interpreters()) ids.push_back(id);
    std::sort(ids.begin(), ids.end());
    si::py::ref list = si::py::check(PyList_New(0));
    for (auto id : ids) {
      si::py::ref item = si::py::check(PyLong_FromLongLong(id));
      si::py::check(PyList_Append(list.get(), item.get()));
    }
    return list.release();
  });
}

PyObject* exec_in(PyObject*, PyObject* args) {
  long long id;
  const char* source;
  if (!PyArg_ParseTuple(args, "Ls", &id, &source)) return nullptr;
  return entry([&] {
    si::Interpreter::get(id).exec(source);
    Py_RETURN_NONE;
  });
}

PyObject* queue_put(PyObject*, PyObject* args) {
  long long id;
  PyObject* obj;
  if (!PyArg_ParseTuple(args, "LO", &id, &obj)) return nullptr;
  return entry([&] {
    si::Queue::find(id).put(si::Value::capture(obj));
    Py_RETURN_NONE;
  });
}

PyObject* queue_get(PyObject*, PyObject* args) {
  long long id;
  double timeout;
  if (!PyArg_ParseTuple(args, "Ld", &id, &timeout)) return nullptr;
  return entry([&] { return si::Queue::find(id).get(timeout).value.rebuild().release(); });
}

PyObject* core_path(PyObject*, PyObject*) {
  return entry([] { return PyUnicode_DecodeFSDefault(si::core_path().c_str()); });
}

PyObject* shutdown(PyObject*, PyObject*) {
  return entry([] {
    si::shutdown();
    Py_RETURN_NONE;
  });
}

PyMethodDef methods[] = {
    {"interpreter_ids", interpreter_ids, METH_NOARGS, "ids of every interpreter, sorted"},
    {"exec_in", exec_in, METH_VARARGS, "exec_in(id, source)"},
    {"queue_put", queue_put, METH_VARARGS, "queue_put(id, obj)"},
    {"queue_get", queue_get, METH_VARARGS, "queue_get(id, timeout)"},
    {"core_path", core_path, METH_NOARGS, "the file of the core this module uses"},
    {"shutdown", shutdown, METH_NOARGS, "subinterp::shutdown()"},
    {nullptr, nullptr, 0, nullptr},
};

// Refuses to load beside another core, as the subinterp extension does (in
// the exec slot: see module_exec in src/module/module.cpp).
int probe_exec(PyObject*) {
  try {
    si::require_core_build(reinterpret_cast<const void*>(&probe_exec));
  } catch (const si::Error& e) {
    PyErr_SetString(PyExc_ImportError, e.what());
    return -1;
  }
  return 0;
}

PyModuleDef_Slot slots[] = {
    {Py_mod_exec, reinterpret_cast<void*>(probe_exec)},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {0, nullptr},
};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, PROBE_STR(PROBE_NAME), nullptr, 0, methods, slots,
                          nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PROBE_INIT(PROBE_NAME)() { return PyModuleDef_Init(&module_def); }
