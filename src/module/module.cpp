// _subinterp: the low-level extension behind the `subinterp` package.
//
// Thin: each function turns its Python arguments into core calls and the
// core's results and C++ errors back into Python objects and exceptions of
// the calling interpreter (docs/extension.md). Per-interpreter safe: multi-
// phase init, all Python objects in module state.
#include <Python.h>

#include <new>
#include <string>

#include "module.hpp"

namespace subinterp_ext {
namespace {

py::ref snapshot_tuple(const si::ExceptionSnapshot& s);

py::ref optional_snapshot(const std::shared_ptr<const si::ExceptionSnapshot>& s) {
  return s ? snapshot_tuple(*s) : py::ref::borrow(Py_None);
}

py::ref text(const std::string& s) {
  return py::check(PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace"));
}

py::ref snapshot_tuple(const si::ExceptionSnapshot& s) {
  py::ref pickled = s.pickled ? py::check(PyBytes_FromStringAndSize(
                                    s.pickled->data(), static_cast<Py_ssize_t>(s.pickled->size())))
                              : py::ref::borrow(Py_None);
  py::ref cause = optional_snapshot(s.cause);
  py::ref context = optional_snapshot(s.context);
  py::ref parts[] = {text(s.type_name), text(s.type_qualname), text(s.type_module),
                     text(s.msg),       text(s.formatted),     text(s.errdisplay)};
  return py::check(PyTuple_Pack(9, parts[0].get(), parts[1].get(), parts[2].get(), parts[3].get(),
                                parts[4].get(), parts[5].get(), cause.get(), context.get(),
                                pickled.get()));
}

// An ExecutionFailed instance for `snapshot` (a RuntimeError before the
// package registered its classes).
py::ref execution_failed(ModuleState* st, const si::ExceptionSnapshot& snapshot) {
  if (st->execution_failed == nullptr || st->make_excinfo == nullptr) {
    py::ref msg = py::check(
        PyUnicode_FromFormat("uncaught in the interpreter: %s", snapshot.errdisplay.c_str()));
    return py::check(PyObject_CallOneArg(PyExc_RuntimeError, msg.get()));
  }
  py::ref raw = snapshot_tuple(snapshot);
  py::ref excinfo = py::check(PyObject_CallOneArg(st->make_excinfo, raw.get()));
  return py::check(PyObject_CallOneArg(st->execution_failed, excinfo.get()));
}

void raise_object(const py::ref& exc) {
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.get())), exc.get());
}

void raise_execution_failed(ModuleState* st, const si::ExceptionSnapshot& snapshot) {
  raise_object(execution_failed(st, snapshot));
}

// BrokenInterpreterPool(message), raised from the initializer's failure.
void raise_broken(ModuleState* st, const si::PoolBroken& e) {
  PyObject* cls = or_default(st->broken_pool, PyExc_RuntimeError);
  py::ref msg = py::check(PyUnicode_FromString(e.what()));
  py::ref exc = py::check(PyObject_CallOneArg(cls, msg.get()));
  if (e.cause()) {
    py::ref cause = execution_failed(st, *e.cause());
    PyException_SetCause(exc.get(), cause.release());
  }
  raise_object(exc);
}

}  // namespace

void translate(PyObject* module) noexcept {
  ModuleState* st = state_of(module);
  try {
    throw;
  } catch (py::PythonError& e) {
    e.restore();
  } catch (si::ExecutionFailed& e) {
    try {
      raise_execution_failed(st, e.snapshot());
    } catch (py::PythonError& inner) {
      inner.restore();
    }
  } catch (si::NotShareable& e) {
    PyErr_SetString(or_default(st->not_shareable_error, PyExc_TypeError), e.what());
    if (e.cause()) {
      // The receiving interpreter's failure, as ExecutionFailed (3.14 gives
      // its NotShareableError that __cause__ too).
      PyObject* exc = PyErr_GetRaisedException();
      try {
        py::ref cause = execution_failed(st, *e.cause());
        PyException_SetCause(exc, cause.release());
      } catch (py::PythonError&) {
        PyErr_Clear();
      }
      PyErr_SetRaisedException(exc);
    }
  } catch (si::PoolBroken& e) {
    try {
      raise_broken(st, e);
    } catch (py::PythonError& inner) {
      inner.restore();
    }
  } catch (si::PoolShutDown& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  } catch (si::TaskCancelled& e) {
    PyErr_SetString(or_default(st->cancelled_error, PyExc_RuntimeError), e.what());
  } catch (si::TaskTimeout& e) {
    PyErr_SetString(PyExc_TimeoutError, e.what());
  } catch (si::QueueEmpty& e) {
    PyErr_SetString(or_default(st->queue_empty, PyExc_RuntimeError), e.what());
  } catch (si::QueueFull& e) {
    PyErr_SetString(or_default(st->queue_full, PyExc_RuntimeError), e.what());
  } catch (si::QueueNotFound& e) {
    PyErr_SetString(or_default(st->queue_not_found, PyExc_RuntimeError), e.what());
  } catch (si::ItemInterpreterDestroyed& e) {
    PyErr_SetString(or_default(st->item_destroyed, PyExc_RuntimeError), e.what());
  } catch (si::QueueError& e) {
    PyErr_SetString(or_default(st->queue_error, PyExc_RuntimeError), e.what());
  } catch (si::ChannelTimeout& e) {
    PyErr_SetString(PyExc_TimeoutError, e.what());
  } catch (si::ChannelEmpty& e) {
    PyErr_SetString(or_default(st->channel_empty, PyExc_RuntimeError), e.what());
  } catch (si::ChannelClosed& e) {
    PyErr_SetString(or_default(st->channel_closed, PyExc_RuntimeError), e.what());
  } catch (si::ChannelNotFound& e) {
    PyErr_SetString(or_default(st->channel_not_found, PyExc_RuntimeError), e.what());
  } catch (si::ChannelError& e) {
    PyErr_SetString(or_default(st->channel_error, PyExc_RuntimeError), e.what());
  } catch (si::InterpreterNotFound& e) {
    PyErr_SetString(or_default(st->not_found_error, PyExc_RuntimeError), e.what());
  } catch (si::InterpreterError& e) {
    PyErr_SetString(or_default(st->interpreter_error, PyExc_RuntimeError), e.what());
  } catch (std::bad_alloc&) {
    PyErr_NoMemory();
  } catch (std::exception& e) {
    PyErr_SetString(PyExc_SystemError, e.what());
  } catch (...) {
    PyErr_SetString(PyExc_SystemError, "unknown C++ exception in _subinterp");
  }
}

std::int64_t id_arg(PyObject* obj, const char* what) {
  if (!PyLong_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what, Py_TYPE(obj)->tp_name);
    py::throw_python_error();
  }
  long long id = PyLong_AsLongLong(obj);
  if (id == -1 && PyErr_Occurred()) py::throw_python_error();
  if (id < 0) {
    PyErr_Format(PyExc_ValueError, "%s must be a non-negative int", what);
    py::throw_python_error();
  }
  return id;
}

bool check_nargs(const char* name, Py_ssize_t nargs, Py_ssize_t min, Py_ssize_t max) {
  if (nargs >= min && nargs <= max) return true;
  PyErr_Format(PyExc_TypeError, "%s() takes %zd to %zd positional arguments (%zd given)", name, min,
               max, nargs);
  return false;
}

namespace {

si::Value capture_at(PyObject* obj, const char* path) {
  try {
    return si::Value::capture(obj);
  } catch (si::NotShareable& e) {
    e.prepend(path);
    throw;
  }
}

py::ref id_whence(std::int64_t id, si::Whence whence) {
  return py::check(Py_BuildValue("(Li)", static_cast<long long>(id), static_cast<int>(whence)));
}

PyObject* m_create(PyObject* module, PyObject* args, PyObject* kwargs) {
  static const char* kwlist[] = {"isolated", nullptr};
  int isolated = 1;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|p:create", const_cast<char**>(kwlist),
                                   &isolated)) {
    return nullptr;
  }
  return entry(module, [&] {
    si::Config config;
    config.isolated = isolated != 0;
    // Its Python objects (subinterp.Interpreter) hold references to it.
    config.close_when_unreferenced = true;
    si::Interpreter interp = si::Interpreter::create(config);
    return PyLong_FromLongLong(interp.id());
  });
}

PyObject* m_destroy(PyObject* module, PyObject* id) {
  return entry(module, [&] {
    si::Interpreter::get(id_arg(id)).close();
    Py_RETURN_NONE;
  });
}

PyObject* m_list_all(PyObject* module, PyObject*) {
  return entry(module, [&] {
    py::ref result = py::check(PyList_New(0));
    for (auto& [id, whence] : si::list_interpreters()) {
      py::check(PyList_Append(result.get(), id_whence(id, whence).get()));
    }
    return result.release();
  });
}

PyObject* m_get_current(PyObject* module, PyObject*) {
  return entry(module, [&] {
    std::int64_t id = si::current_interpreter_id();
    return id_whence(id, si::whence_of(id)).release();
  });
}

PyObject* m_get_main(PyObject* module, PyObject*) {
  return entry(module, [&] {
    std::int64_t id = si::Interpreter::main().id();
    return id_whence(id, si::Whence::Runtime).release();
  });
}

PyObject* m_whence(PyObject* module, PyObject* id) {
  return entry(module, [&] {
    std::int64_t n = id_arg(id);
    for (auto& [other, whence] : si::list_interpreters()) {
      if (other == n) return PyLong_FromLong(static_cast<long>(whence));
    }
    throw si::InterpreterNotFound("interpreter " + std::to_string(n) + " does not exist");
  });
}

PyObject* m_is_running(PyObject* module, PyObject* id) {
  return entry(module, [&] { return PyBool_FromLong(si::is_running(id_arg(id))); });
}

// Code to run: source text, a code object, or a function without
// parameters, whose body runs.
si::Value exec_code(PyObject* code) {
  if (PyCode_Check(code) && PyCode_GetNumFree(reinterpret_cast<PyCodeObject*>(code)) > 0) {
    PyErr_SetString(PyExc_TypeError, "code object passed to exec() may not contain free variables");
    py::throw_python_error();
  }
  if (PyUnicode_Check(code) || PyCode_Check(code)) return si::Value::capture(code);
  if (PyFunction_Check(code)) {
    PyCodeObject* co = reinterpret_cast<PyCodeObject*>(PyFunction_GetCode(code));
    py::ref argcount =
        py::check(PyObject_GetAttrString(reinterpret_cast<PyObject*>(co), "co_argcount"));
    py::ref kwonly =
        py::check(PyObject_GetAttrString(reinterpret_cast<PyObject*>(co), "co_kwonlyargcount"));
    py::ref flags = py::check(PyObject_GetAttrString(reinterpret_cast<PyObject*>(co), "co_flags"));
    long f = PyLong_AsLong(flags.get());
    if (PyLong_AsLong(argcount.get()) != 0 || PyLong_AsLong(kwonly.get()) != 0 ||
        (f & (CO_VARARGS | CO_VARKEYWORDS)) != 0) {
      PyErr_SetString(PyExc_ValueError, "exec() takes a function without parameters; use call()");
      py::throw_python_error();
    }
    if (PyFunction_GetClosure(code) != nullptr) {
      PyErr_SetString(PyExc_ValueError, "exec() takes a function without a closure; use call()");
      py::throw_python_error();
    }
    return si::Value::capture(reinterpret_cast<PyObject*>(co));
  }
  PyErr_Format(PyExc_TypeError, "exec() takes source text, a code object or a function, not %.100s",
               Py_TYPE(code)->tp_name);
  py::throw_python_error();
}

PyObject* m_exec(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("exec", nargs, 2, 2)) return nullptr;
  return entry(module, [&] {
    si::Interpreter interp = si::Interpreter::get(id_arg(args[0]));
    si::Value code = exec_code(args[1]);
    interp.exec(code);
    Py_RETURN_NONE;
  });
}

// raise_in(id, thread_ident, name): raises the built-in exception `name`
// (TimeoutError, SystemExit, KeyboardInterrupt or MemoryError) in the thread
// `thread_ident` the next time it runs Python code in interpreter `id`.
// Blocks until that interpreter's GIL is free: code holding it in C delays
// this call as long. Returns whether such a thread was found there.
PyObject* m_raise_in(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("raise_in", nargs, 3, 3)) return nullptr;
  return entry(module, [&] {
    si::Interpreter interp = si::Interpreter::get(id_arg(args[0]));
    unsigned long ident = PyLong_AsUnsignedLong(args[1]);
    if (ident == static_cast<unsigned long>(-1) && PyErr_Occurred()) py::throw_python_error();
    static const std::pair<const char*, PyObject**> kTypes[] = {
        {"TimeoutError", &PyExc_TimeoutError},
        {"SystemExit", &PyExc_SystemExit},
        {"KeyboardInterrupt", &PyExc_KeyboardInterrupt},
        {"MemoryError", &PyExc_MemoryError},
    };
    PyObject* type = nullptr;  // a static built-in type: the same in every interpreter
    std::string module_name, qualname;  // or a class of the target interpreter
    const bool clear = args[2] == Py_None;
    if (!clear && PyUnicode_Check(args[2])) {
      for (const auto& [name, exc] : kTypes) {
        if (PyUnicode_CompareWithASCIIString(args[2], name) == 0) type = *exc;
      }
      if (type == nullptr) {
        Py_ssize_t size = 0;
        const char* text = PyUnicode_AsUTF8AndSize(args[2], &size);
        if (text == nullptr) py::throw_python_error();
        std::string spec(text, static_cast<std::size_t>(size));
        const auto colon = spec.find(':');
        if (colon != std::string::npos && colon > 0 && colon + 1 < spec.size()) {
          module_name = spec.substr(0, colon);
          qualname = spec.substr(colon + 1);
        }
      }
    }
    if (!clear && type == nullptr && module_name.empty()) {
      PyErr_SetString(PyExc_ValueError,
                      "raise_in() raises TimeoutError, SystemExit, KeyboardInterrupt, "
                      "MemoryError or 'module:qualname' (an exception class of a module the "
                      "target interpreter has imported); None clears a pending one");
      py::throw_python_error();
    }
    if (!module_name.empty()) {
      // Found in the target interpreter, never imported there: a class of
      // this interpreter must not be raised in another one.
      std::string problem;
      int found = 0;
      interp.visit([&] {
        PyObject* modules = PyImport_GetModuleDict();
        PyObject* obj = PyDict_GetItemString(modules, module_name.c_str());  // borrowed
        Py_XINCREF(obj);
        std::size_t start = 0;
        while (obj != nullptr && start <= qualname.size()) {
          const std::size_t dot = qualname.find('.', start);
          const std::string part =
              qualname.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
          PyObject* next = PyObject_GetAttrString(obj, part.c_str());
          Py_DECREF(obj);
          obj = next;
          if (dot == std::string::npos) break;
          start = dot + 1;
        }
        if (obj == nullptr) {
          PyErr_Clear();
          problem = "no " + qualname + " in module " + module_name + " of that interpreter";
        } else if (!PyExceptionClass_Check(obj)) {
          problem = module_name + ":" + qualname + " is not an exception class";
        } else {
          found = PyThreadState_SetAsyncExc(ident, obj);
        }
        Py_XDECREF(obj);
      });
      if (!problem.empty()) {
        PyErr_SetString(PyExc_LookupError, problem.c_str());
        py::throw_python_error();
      }
      return PyBool_FromLong(found > 0);
    }
    int found = 0;
    interp.visit([&] { found = PyThreadState_SetAsyncExc(ident, type); });
    return PyBool_FromLong(found > 0);
  });
}

PyObject* m_call(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("call", nargs, 2, 4)) return nullptr;
  return entry(module, [&] {
    si::Interpreter interp = si::Interpreter::get(id_arg(args[0]));
    PyObject* callable = args[1];
    if (!PyCallable_Check(callable)) {
      PyErr_Format(PyExc_TypeError, "'%.100s' object is not callable", Py_TYPE(callable)->tp_name);
      py::throw_python_error();
    }
    PyObject* call_args = nargs > 2 ? args[2] : nullptr;
    PyObject* call_kwargs = nargs > 3 ? args[3] : Py_None;
    if (call_args != nullptr && !PyTuple_Check(call_args)) {
      PyErr_SetString(PyExc_TypeError, "call() args must be a tuple");
      py::throw_python_error();
    }
    if (call_kwargs != Py_None && !PyDict_Check(call_kwargs)) {
      PyErr_SetString(PyExc_TypeError, "call() kwargs must be a dict or None");
      py::throw_python_error();
    }
    si::Value fn = capture_at(callable, "callable");
    si::Value positional =
        call_args != nullptr ? capture_at(call_args, "args") : si::Value::tuple({});
    si::Value keywords = call_kwargs != Py_None && PyDict_GET_SIZE(call_kwargs) > 0
                             ? capture_at(call_kwargs, "kwargs")
                             : si::Value();
    si::Value result = interp.call(std::move(fn), std::move(positional), std::move(keywords));
    py::ref out = result.rebuild();
    return out.release();
  });
}

PyObject* m_set_main_attrs(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("set_main_attrs", nargs, 2, 2)) return nullptr;
  return entry(module, [&] {
    si::Interpreter interp = si::Interpreter::get(id_arg(args[0]));
    if (!PyDict_Check(args[1])) {
      PyErr_SetString(PyExc_TypeError, "set_main_attrs() takes a dict");
      py::throw_python_error();
    }
    PyObject* key = nullptr;
    PyObject* value = nullptr;
    Py_ssize_t pos = 0;
    while (PyDict_Next(args[1], &pos, &key, &value)) {
      if (!PyUnicode_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "__main__ attribute names must be str");
        py::throw_python_error();
      }
    }
    interp.set_main_attrs(capture_at(args[1], "ns"));
    Py_RETURN_NONE;
  });
}

PyObject* m_is_shareable(PyObject* module, PyObject* obj) {
  return entry(module, [&] { return PyBool_FromLong(si::Value::is_shareable(obj)); });
}

// pickle.loads as values are unpickled: the pure-Python fallbacks of stdlib
// C modules are loaded as this interpreter's own classes.
PyObject* m_unpickle(PyObject* module, PyObject* data) {
  return entry(module, [&] {
    char* buf = nullptr;
    Py_ssize_t size = 0;
    py::check(PyBytes_AsStringAndSize(data, &buf, &size));
    return si::Value::pickled(std::string(buf, static_cast<std::size_t>(size))).rebuild().release();
  });
}

PyObject* m_incref(PyObject* module, PyObject* id) {
  return entry(module, [&] {
    si::Interpreter::get(id_arg(id)).incref();
    Py_RETURN_NONE;
  });
}

PyObject* m_decref(PyObject* module, PyObject* id) {
  return entry(module, [&] {
    si::Interpreter::get(id_arg(id)).decref();
    Py_RETURN_NONE;
  });
}

PyObject* m_shutdown(PyObject* module, PyObject*) {
  return entry(module, [&] {
    si::shutdown();
    Py_RETURN_NONE;
  });
}

// The fields of ModuleState that register() fills, by keyword.
struct Slot {
  const char* name;
  PyObject* ModuleState::*field;
  enum { Object, Exception, HandleClass } check;
  PyObject* ModuleState::*base;  // for HandleClass: the type it must subclass
};

constexpr Slot kSlots[] = {
    {"InterpreterError", &ModuleState::interpreter_error, Slot::Exception, nullptr},
    {"InterpreterNotFoundError", &ModuleState::not_found_error, Slot::Exception, nullptr},
    {"ExecutionFailed", &ModuleState::execution_failed, Slot::Exception, nullptr},
    {"NotShareableError", &ModuleState::not_shareable_error, Slot::Exception, nullptr},
    {"make_excinfo", &ModuleState::make_excinfo, Slot::Object, nullptr},
    {"QueueError", &ModuleState::queue_error, Slot::Exception, nullptr},
    {"QueueNotFoundError", &ModuleState::queue_not_found, Slot::Exception, nullptr},
    {"QueueEmpty", &ModuleState::queue_empty, Slot::Exception, nullptr},
    {"QueueFull", &ModuleState::queue_full, Slot::Exception, nullptr},
    {"ItemInterpreterDestroyed", &ModuleState::item_destroyed, Slot::Exception, nullptr},
    {"ChannelError", &ModuleState::channel_error, Slot::Exception, nullptr},
    {"ChannelNotFoundError", &ModuleState::channel_not_found, Slot::Exception, nullptr},
    {"ChannelEmptyError", &ModuleState::channel_empty, Slot::Exception, nullptr},
    {"ChannelClosedError", &ModuleState::channel_closed, Slot::Exception, nullptr},
    {"UNBOUND", &ModuleState::unbound, Slot::Object, nullptr},
    {"UNBOUND_ERROR", &ModuleState::unbound_error, Slot::Object, nullptr},
    {"UNBOUND_REMOVE", &ModuleState::unbound_remove, Slot::Object, nullptr},
    {"Queue", &ModuleState::queue_class, Slot::HandleClass, &ModuleState::queue_type},
    {"Interpreter", &ModuleState::interpreter_class, Slot::HandleClass,
     &ModuleState::interpreter_base},
    {"SendChannel", &ModuleState::send_class, Slot::HandleClass, &ModuleState::send_type},
    {"RecvChannel", &ModuleState::recv_class, Slot::HandleClass, &ModuleState::recv_type},
    {"CancelledError", &ModuleState::cancelled_error, Slot::Exception, nullptr},
    {"BrokenInterpreterPool", &ModuleState::broken_pool, Slot::Exception, nullptr},
};

bool slot_value_ok(ModuleState* st, const Slot& slot, PyObject* key, PyObject* value) {
  PyObject* base = slot.check == Slot::Exception   ? PyExc_Exception
                   : slot.check == Slot::HandleClass ? st->*slot.base
                                                     : nullptr;
  if (base == nullptr) return true;
  if (PyType_Check(value) && PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(value),
                                              reinterpret_cast<PyTypeObject*>(base))) {
    return true;
  }
  PyErr_Format(PyExc_TypeError, "register(): %U must be a subclass of %s", key,
               reinterpret_cast<PyTypeObject*>(base)->tp_name);
  return false;
}

PyObject* m_register(PyObject* module, PyObject* args, PyObject* kwargs) {
  if (PyTuple_GET_SIZE(args) != 0 || kwargs == nullptr) {
    PyErr_SetString(PyExc_TypeError, "register() takes keyword arguments only");
    return nullptr;
  }
  ModuleState* st = state_of(module);
  PyObject* key = nullptr;
  PyObject* value = nullptr;
  Py_ssize_t pos = 0;
  while (PyDict_Next(kwargs, &pos, &key, &value)) {
    const Slot* found = nullptr;
    for (const Slot& slot : kSlots) {
      if (PyUnicode_CompareWithASCIIString(key, slot.name) == 0) found = &slot;
    }
    if (found == nullptr) {
      PyErr_Format(PyExc_TypeError, "register() got an unexpected keyword argument %R", key);
      return nullptr;
    }
    if (!slot_value_ok(st, *found, key, value)) return nullptr;
    Py_INCREF(value);
    Py_XSETREF(st->*found->field, value);
  }
  Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"create", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(m_create)),
     METH_VARARGS | METH_KEYWORDS, "create(isolated=True) -> id"},
    {"destroy", m_destroy, METH_O, "destroy(id)"},
    {"list_all", m_list_all, METH_NOARGS, "list_all() -> [(id, whence)]"},
    {"get_current", m_get_current, METH_NOARGS, "get_current() -> (id, whence)"},
    {"get_main", m_get_main, METH_NOARGS, "get_main() -> (id, whence)"},
    {"whence", m_whence, METH_O, "whence(id) -> int"},
    {"is_running", m_is_running, METH_O, "is_running(id) -> bool"},
    {"raise_in", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(m_raise_in)),
     METH_FASTCALL, "raise_in(id, thread_ident, name) -> bool: raise an exception in a thread of an "
     "interpreter at its next check (name: a built-in exception's name, 'module:qualname', "
     "or None to clear a pending one)"},
    {"exec", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(m_exec)), METH_FASTCALL,
     "exec(id, code)"},
    {"call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(m_call)), METH_FASTCALL,
     "call(id, callable, args=(), kwargs=None) -> result"},
    {"set_main_attrs",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(m_set_main_attrs)), METH_FASTCALL,
     "set_main_attrs(id, ns)"},
    {"is_shareable", m_is_shareable, METH_O, "is_shareable(obj) -> bool"},
    {"unpickle", m_unpickle, METH_O, "unpickle(bytes) -> object"},
    {"incref", m_incref, METH_O, "incref(id)"},
    {"decref", m_decref, METH_O, "decref(id)"},
    {"register", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(m_register)),
     METH_VARARGS | METH_KEYWORDS, "register(**classes)"},
    {"shutdown", m_shutdown, METH_NOARGS, "shutdown()"},
    {nullptr, nullptr, 0, nullptr},
};


int module_exec(PyObject* module) {
  // One core per process: refuse to load where the process has another core
  // than the one this extension was built for. Here rather than in
  // PyInit__subinterp: CPython 3.13 runs that in the main interpreter for an
  // import in a sub-interpreter, and an exception raised there crashes the
  // process when it reaches the sub-interpreter.
  try {
    subinterp::require_core_build(&module_def);
  } catch (const subinterp::Error& e) {
    PyErr_SetString(PyExc_ImportError, e.what());
    return -1;
  }
  ModuleState* st = state_of(module);
  *st = ModuleState{};
  st->known = new (std::nothrow) std::unordered_map<std::int64_t, PyObject*>();
  if (st->known == nullptr) {
    PyErr_NoMemory();
    return -1;
  }
  if (handles_exec(module) < 0) return -1;
  if (pool_exec(module) < 0) return -1;
  if (PyModule_AddFunctions(module, sandbox_functions) < 0) return -1;
  try {
    // `import subinterp` makes these safe in whatever interpreter runs it.
    si::protect_thread_listings();
    PyObject* type = reinterpret_cast<PyObject*>(si::shared_buffer_type());
    py::check(PyModule_AddObjectRef(module, "SharedBuffer", type));
  } catch (py::PythonError& e) {
    e.restore();
    return -1;
  }
  struct {
    const char* name;
    si::Whence value;
  } constants[] = {{"WHENCE_UNKNOWN", si::Whence::Unknown},
                   {"WHENCE_RUNTIME", si::Whence::Runtime},
                   {"WHENCE_CAPI", si::Whence::CApi},
                   {"WHENCE_SUBINTERP", si::Whence::Subinterp}};
  for (auto& c : constants) {
    if (PyModule_AddIntConstant(module, c.name, static_cast<long>(c.value)) < 0) return -1;
  }
  return PyModule_AddStringConstant(module, "__version__", si::version());
}

// Every PyObject* field of ModuleState.
constexpr PyObject* ModuleState::*kObjectFields[] = {
    &ModuleState::interpreter_error, &ModuleState::not_found_error,
    &ModuleState::execution_failed,  &ModuleState::not_shareable_error,
    &ModuleState::make_excinfo,      &ModuleState::queue_error,
    &ModuleState::queue_not_found,   &ModuleState::queue_empty,
    &ModuleState::queue_full,        &ModuleState::item_destroyed,
    &ModuleState::channel_error,     &ModuleState::channel_not_found,
    &ModuleState::channel_empty,     &ModuleState::channel_closed,
    &ModuleState::unbound,           &ModuleState::unbound_error,
    &ModuleState::unbound_remove,    &ModuleState::queue_class,
    &ModuleState::send_class,        &ModuleState::recv_class,
    &ModuleState::queue_type,        &ModuleState::send_type,
    &ModuleState::recv_type,         &ModuleState::cancelled_error,
    &ModuleState::broken_pool,       &ModuleState::pool_type,
    &ModuleState::task_type,         &ModuleState::interpreter_class,
    &ModuleState::interpreter_base,
};

int module_traverse(PyObject* module, visitproc visit, void* arg) {
  ModuleState* st = state_of(module);
  for (auto field : kObjectFields) Py_VISIT(st->*field);
  return 0;
}

int module_clear(PyObject* module) {
  ModuleState* st = state_of(module);
  for (auto field : kObjectFields) Py_CLEAR(st->*field);
  return 0;
}

void module_free(void* module) {
  module_clear(static_cast<PyObject*>(module));
  ModuleState* st = state_of(static_cast<PyObject*>(module));
  delete st->known;
  st->known = nullptr;
}

PyModuleDef_Slot slots[] = {
    {Py_mod_exec, reinterpret_cast<void*>(module_exec)},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {0, nullptr},
};

}  // namespace

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "subinterp._subinterp",
    "Low-level interface to the subinterp runtime; use the subinterp package.",
    sizeof(ModuleState),
    methods,
    slots,
    module_traverse,
    module_clear,
    module_free,
};

}  // namespace subinterp_ext

PyMODINIT_FUNC PyInit__subinterp() { return PyModuleDef_Init(&subinterp_ext::module_def); }
