// Worker pools of the _subinterp extension: the engine of
// subinterp.futures.InterpreterPoolExecutor.
//
// A `Pool` object owns a core Pool. Each submitted task carries a Python
// future of the submitting interpreter; when the task ends, the worker
// thread visits that interpreter and calls the package's `settle(future,
// result, exception)`, which resolves the future there. The future, the
// settle function and the module are touched only with the submitting
// interpreter attached (DESIGN.md, invariant 1). A `Task` object is the
// core future, for cancel() and for waiting without the GIL.
#include <Python.h>

#include <memory>
#include <optional>
#include <string>

#include "module.hpp"

namespace subinterp_ext {
namespace {

#define SUBINTERP_FN(f) reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f))

struct PoolObject {
  PyObject_HEAD si::Pool* pool;  // owned
  si::Interpreter* home;         // owned: the interpreter the pool belongs to
  PyObject* module;
  PyObject* settle;
};

struct TaskObject {
  PyObject_HEAD si::Future* future;  // owned
  PyObject* module;
};

PoolObject* as_pool(PyObject* self) { return reinterpret_cast<PoolObject*>(self); }
TaskObject* as_task(PyObject* self) { return reinterpret_cast<TaskObject*>(self); }

// The Python exception object for the core error `error`, made in the
// attached interpreter (its module state's classes).
py::ref exception_object(PyObject* module, const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (...) {
    SUBINTERP_RETHROW_FORCED_UNWIND;
    translate(module);
  }
  return py::ref::steal(PyErr_GetRaisedException());
}

// What a task's completion needs in the submitting interpreter. The
// references are released by deliver(), or by drop() when the task was
// never queued; a Delivery destroyed with them still held (its interpreter
// was closed first) leaves them to that interpreter's end.
class Delivery {
 public:
  Delivery(const si::Interpreter& home, PyObject* module, PyObject* settle, PyObject* future)
      : home_(home),
        module_(Py_NewRef(module)),
        settle_(Py_NewRef(settle)),
        future_(Py_NewRef(future)) {}
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;

  void deliver(const si::Value& result, const std::exception_ptr& error) {
    try {
      home_.visit([&] { settle(result, error); });
    } catch (...) {
      SUBINTERP_RETHROW_FORCED_UNWIND;
      // The submitting interpreter is gone, and its futures with it.
    }
  }

  // With the submitting interpreter attached.
  void drop() noexcept {
    Py_CLEAR(module_);
    Py_CLEAR(settle_);
    Py_CLEAR(future_);
  }

 private:
  void settle(const si::Value& result, const std::exception_ptr& error) {
    if (future_ == nullptr) return;
    py::ref value;
    py::ref exc;
    if (!error) {
      try {
        value = result.rebuild();
      } catch (py::PythonError& e) {
        exc = e.take();
      } catch (...) {
        SUBINTERP_RETHROW_FORCED_UNWIND;
        exc = exception_object(module_, std::current_exception());
      }
    } else {
      exc = exception_object(module_, error);
    }
    PyObject* out = PyObject_CallFunctionObjArgs(settle_, future_, value ? value.get() : Py_None,
                                                 exc ? exc.get() : Py_None, nullptr);
    if (out == nullptr) {
      PyErr_WriteUnraisable(settle_);
    } else {
      Py_DECREF(out);
    }
    value = py::ref();
    exc = py::ref();
    drop();
  }

  si::Interpreter home_;
  PyObject* module_;
  PyObject* settle_;
  PyObject* future_;
};

si::Completion completion_for(const std::shared_ptr<Delivery>& delivery) {
  return [delivery](const si::Value& result, const std::exception_ptr& error) {
    delivery->deliver(result, error);
  };
}

// --- Task ------------------------------------------------------------------

PyObject* task_new(PyObject* module, si::Future future) {
  ModuleState* st = state_of(module);
  auto* type = reinterpret_cast<PyTypeObject*>(st->task_type);
  PyObject* self = type->tp_alloc(type, 0);
  if (self == nullptr) py::throw_python_error();
  as_task(self)->future = new si::Future(std::move(future));
  as_task(self)->module = Py_NewRef(module);
  return self;
}

void task_dealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  delete as_task(self)->future;
  Py_CLEAR(as_task(self)->module);
  type->tp_free(self);
  Py_DECREF(type);
}

PyObject* t_cancel(PyObject* self, PyObject*) {
  return PyBool_FromLong(as_task(self)->future->cancel());
}
PyObject* t_done(PyObject* self, PyObject*) {
  return PyBool_FromLong(as_task(self)->future->done());
}
PyObject* t_running(PyObject* self, PyObject*) {
  return PyBool_FromLong(as_task(self)->future->running());
}

// wait(timeout=None) -> bool: true once the task ended and its future was
// settled; the GIL is released meanwhile.
PyObject* t_wait(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("wait", nargs, 0, 1)) return nullptr;
  return entry(as_task(self)->module, [&] {
    std::optional<double> timeout;
    if (nargs == 1 && args[0] != Py_None) {
      double seconds = PyFloat_AsDouble(args[0]);
      if (seconds == -1.0 && PyErr_Occurred()) py::throw_python_error();
      timeout = seconds;
    }
    return PyBool_FromLong(as_task(self)->future->wait(timeout));
  });
}

PyMethodDef task_methods[] = {
    {"cancel", t_cancel, METH_NOARGS, "cancel() -> bool: cancel if no worker started it"},
    {"done", t_done, METH_NOARGS, "done() -> bool"},
    {"running", t_running, METH_NOARGS, "running() -> bool"},
    {"wait", SUBINTERP_FN(t_wait), METH_FASTCALL, "wait(timeout=None) -> bool"},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot task_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(task_dealloc)},
    {Py_tp_methods, task_methods},
    {Py_tp_doc, const_cast<char*>("A task submitted to a worker pool.")},
    {0, nullptr},
};

PyType_Spec task_spec = {"subinterp._subinterp.Task", sizeof(TaskObject), 0,
                         Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE |
                             Py_TPFLAGS_DISALLOW_INSTANTIATION,
                         task_slots};

// --- Pool ------------------------------------------------------------------

void pool_dealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  PoolObject* p = as_pool(self);
  if (p->pool != nullptr) {
    // Without waiting: the last reference may go on a worker thread, in a
    // completion. Queued tasks still run; the workers then end.
    p->pool->shutdown(/*wait=*/false);
    delete p->pool;
  }
  delete p->home;
  Py_CLEAR(p->module);
  Py_CLEAR(p->settle);
  type->tp_free(self);
  Py_DECREF(type);
}

si::Value capture_arg(PyObject* obj, const char* path) {
  try {
    return si::Value::capture(obj);
  } catch (si::NotShareable& e) {
    e.prepend(path);
    throw;
  }
}

// Queues a task with `submit(completion)` whose completion settles
// `future`, and returns its Task object. The references the completion
// holds are dropped here if the task is refused.
template <class Submit>
PyObject* queue_task(PoolObject* p, PyObject* future, Submit&& submit) {
  auto delivery = std::make_shared<Delivery>(*p->home, p->module, p->settle, future);
  try {
    si::Future f = submit(completion_for(delivery));
    return task_new(p->module, std::move(f));
  } catch (...) {
    SUBINTERP_RETHROW_FORCED_UNWIND;
    delivery->drop();
    throw;
  }
}

// submit(future, fn, args, kwargs) -> Task
PyObject* p_submit(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("submit", nargs, 4, 4)) return nullptr;
  PoolObject* p = as_pool(self);
  return entry(p->module, [&] {
    if (!PyTuple_Check(args[2])) {
      PyErr_SetString(PyExc_TypeError, "submit(): args must be a tuple");
      py::throw_python_error();
    }
    if (args[3] != Py_None && !PyDict_Check(args[3])) {
      PyErr_SetString(PyExc_TypeError, "submit(): kwargs must be a dict or None");
      py::throw_python_error();
    }
    si::Value fn = capture_arg(args[1], "fn");
    si::Value positional = capture_arg(args[2], "args");
    si::Value keywords = args[3] == Py_None || PyDict_GET_SIZE(args[3]) == 0
                             ? si::Value()
                             : capture_arg(args[3], "kwargs");
    return queue_task(p, args[0], [&](si::Completion done) {
      return p->pool->submit(std::move(fn), std::move(positional), std::move(keywords),
                             std::move(done));
    });
  });
}

// submit_batch(future, fn, items, unpack) -> Task: calls fn(*item) for
// each tuple of the list items (unpack true), or fn(item) for each item.
PyObject* p_submit_batch(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("submit_batch", nargs, 4, 4)) return nullptr;
  PoolObject* p = as_pool(self);
  return entry(p->module, [&] {
    bool unpack = py::check(PyObject_IsTrue(args[3])) != 0;
    if (!PyList_Check(args[2])) {
      PyErr_SetString(PyExc_TypeError, "submit_batch(): items must be a list");
      py::throw_python_error();
    }
    if (unpack) {
      for (Py_ssize_t i = 0; i < PyList_GET_SIZE(args[2]); ++i) {
        if (!PyTuple_Check(PyList_GET_ITEM(args[2], i))) {
          PyErr_SetString(PyExc_TypeError, "submit_batch(): items must be a list of tuples");
          py::throw_python_error();
        }
      }
    }
    si::Value fn = capture_arg(args[1], "fn");
    si::Value items = capture_arg(args[2], "args");
    return queue_task(p, args[0], [&](si::Completion done) {
      return unpack ? p->pool->submit_batch(std::move(fn), std::move(items), std::move(done))
                    : p->pool->submit_each(std::move(fn), std::move(items), std::move(done));
    });
  });
}

// shutdown(wait, cancel_pending)
PyObject* p_shutdown(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("shutdown", nargs, 2, 2)) return nullptr;
  PoolObject* p = as_pool(self);
  return entry(p->module, [&] {
    bool wait = py::check(PyObject_IsTrue(args[0])) != 0;
    bool cancel = py::check(PyObject_IsTrue(args[1])) != 0;
    p->pool->shutdown(wait, cancel);
    Py_RETURN_NONE;
  });
}

PyObject* p_worker_count(PyObject* self, PyObject*) {
  return PyLong_FromSize_t(as_pool(self)->pool->worker_count());
}

PyObject* p_is_shut_down(PyObject* self, PyObject*) {
  return PyBool_FromLong(as_pool(self)->pool->is_shut_down());
}

PyObject* p_pending(PyObject* self, PyObject*) {
  return PyLong_FromSize_t(as_pool(self)->pool->pending());
}

PyObject* p_interpreter_ids(PyObject* self, PyObject*) {
  PoolObject* p = as_pool(self);
  return entry(p->module, [&] {
    std::vector<std::int64_t> ids = p->pool->interpreter_ids();
    py::ref list = py::check(PyList_New(static_cast<Py_ssize_t>(ids.size())));
    for (std::size_t i = 0; i < ids.size(); ++i) {
      PyList_SET_ITEM(list.get(), static_cast<Py_ssize_t>(i),
                      py::check(PyLong_FromLongLong(ids[i])).release());
    }
    return list.release();
  });
}

// broken() -> str or None: why the pool runs no more tasks (an initializer
// failed), or None.
PyObject* p_broken(PyObject* self, PyObject*) {
  PoolObject* p = as_pool(self);
  return entry(p->module, [&]() -> PyObject* {
    std::optional<si::PoolBroken> broken = p->pool->broken();
    if (!broken) Py_RETURN_NONE;
    return py::check(PyUnicode_FromString(broken->what())).release();
  });
}

PyObject* p_max_workers(PyObject* self, void*) {
  return PyLong_FromSize_t(as_pool(self)->pool->max_workers());
}

PyMethodDef pool_methods[] = {
    {"submit", SUBINTERP_FN(p_submit), METH_FASTCALL, "submit(future, fn, args, kwargs) -> Task"},
    {"submit_batch", SUBINTERP_FN(p_submit_batch), METH_FASTCALL,
     "submit_batch(future, fn, items, unpack) -> Task"},
    {"shutdown", SUBINTERP_FN(p_shutdown), METH_FASTCALL, "shutdown(wait, cancel_pending)"},
    {"worker_count", p_worker_count, METH_NOARGS, "worker_count() -> int"},
    {"pending", p_pending, METH_NOARGS, "pending() -> int"},
    {"is_shut_down", p_is_shut_down, METH_NOARGS, "is_shut_down() -> bool"},
    {"interpreter_ids", p_interpreter_ids, METH_NOARGS, "interpreter_ids() -> [int]"},
    {"broken", p_broken, METH_NOARGS, "broken() -> str or None: why the pool is broken"},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef pool_getset[] = {
    {"max_workers", p_max_workers, nullptr, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot pool_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(pool_dealloc)},
    {Py_tp_methods, pool_methods},
    {Py_tp_getset, pool_getset},
    {Py_tp_doc, const_cast<char*>("A pool of worker interpreters (use subinterp.futures).")},
    {0, nullptr},
};

PyType_Spec pool_spec = {"subinterp._subinterp.Pool", sizeof(PoolObject), 0,
                         Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE |
                             Py_TPFLAGS_DISALLOW_INSTANTIATION,
                         pool_slots};

std::size_t size_arg(PyObject* obj, const char* what) {
  if (obj == Py_None) return 0;
  Py_ssize_t n = PyLong_AsSsize_t(obj);
  if (n == -1 && PyErr_Occurred()) py::throw_python_error();
  if (n <= 0) {
    PyErr_Format(PyExc_ValueError, "%s must be greater than 0", what);
    py::throw_python_error();
  }
  return static_cast<std::size_t>(n);
}

// pool_create(max_workers, init_source, initializer, initargs,
//             max_tasks_per_worker, thread_name_prefix, settle) -> Pool
PyObject* m_pool_create(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("pool_create", nargs, 7, 7)) return nullptr;
  return entry(module, [&] {
    si::PoolOptions options;
    options.max_workers = size_arg(args[0], "max_workers");
    if (args[1] != Py_None) {
      Py_ssize_t size = 0;
      const char* text = PyUnicode_AsUTF8AndSize(args[1], &size);
      if (text == nullptr) py::throw_python_error();
      options.init_source.assign(text, static_cast<std::size_t>(size));
    }
    if (args[2] != Py_None) {
      options.init_callable = capture_arg(args[2], "initializer");
      if (!PyTuple_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "initargs must be a tuple");
        py::throw_python_error();
      }
      options.init_args = capture_arg(args[3], "initargs");
    }
    options.max_tasks_per_worker = size_arg(args[4], "max_tasks_per_worker");
    if (args[5] != Py_None) {
      const char* prefix = PyUnicode_AsUTF8(args[5]);
      if (prefix == nullptr) py::throw_python_error();
      options.thread_name_prefix = prefix;
    }
    if (!PyCallable_Check(args[6])) {
      PyErr_SetString(PyExc_TypeError, "settle must be callable");
      py::throw_python_error();
    }
    auto home = std::make_unique<si::Interpreter>(si::Interpreter::get(si::current_interpreter_id()));
    ModuleState* st = state_of(module);
    auto* type = reinterpret_cast<PyTypeObject*>(st->pool_type);
    py::ref self = py::check(type->tp_alloc(type, 0));
    PoolObject* p = as_pool(self.get());
    p->pool = nullptr;
    p->home = home.release();
    p->module = Py_NewRef(module);
    p->settle = Py_NewRef(args[6]);
    p->pool = new si::Pool(std::move(options));
    return self.release();
  });
}

}  // namespace

PyMethodDef pool_functions[] = {
    {"pool_create", SUBINTERP_FN(m_pool_create), METH_FASTCALL,
     "pool_create(max_workers, init_source, initializer, initargs, max_tasks_per_worker, "
     "thread_name_prefix, settle) -> Pool"},
    {nullptr, nullptr, 0, nullptr},
};

int pool_exec(PyObject* module) {
  ModuleState* st = state_of(module);
  st->pool_type = PyType_FromModuleAndSpec(module, &pool_spec, nullptr);
  if (st->pool_type == nullptr) return -1;
  st->task_type = PyType_FromModuleAndSpec(module, &task_spec, nullptr);
  if (st->task_type == nullptr) return -1;
  if (PyModule_AddObjectRef(module, "Pool", st->pool_type) < 0) return -1;
  if (PyModule_AddObjectRef(module, "Task", st->task_type) < 0) return -1;
  return PyModule_AddFunctions(module, pool_functions);
}

}  // namespace subinterp_ext
