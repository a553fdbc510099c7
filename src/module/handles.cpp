// Queue and channel-end objects of the _subinterp extension.
//
// Each object holds a core handle; put/get/send/recv run in C++ without a
// Python frame (the hot paths). There is one object per queue or channel end
// in each interpreter, so identity and hashing work as in CPython's module.
// The package registers subclasses (with repr, pickling and docs) that the
// module instantiates instead of these base types.
#include <Python.h>

#include <optional>

#include "module.hpp"

namespace subinterp_ext {
namespace {

// Each object holds its module (a strong reference): dealloc finds the
// module state there, not through its type, whose MRO and module the
// garbage collector may have cleared already when an interpreter ends.
struct QueueObject {
  PyObject_HEAD si::Queue* queue;  // owned
  PyObject* module;
};

struct ChannelObject {
  PyObject_HEAD si::Channel* channel;  // owned
  PyObject* module;
  si::ChannelEnd end;
};

QueueObject* as_queue(PyObject* self) { return reinterpret_cast<QueueObject*>(self); }
ChannelObject* as_channel(PyObject* self) { return reinterpret_cast<ChannelObject*>(self); }

// Keys of ModuleState::known: queue and channel ids are separate counters.
std::int64_t queue_key(std::int64_t id) { return id * 4; }
std::int64_t channel_key(std::int64_t id, si::ChannelEnd end) {
  return id * 4 + (end == si::ChannelEnd::Send ? 1 : 2);
}

// Like entry(), for methods: the module is found only when an error needs
// translating.
template <class Body>
PyObject* method_entry(PyTypeObject* defining_class, Body&& body) {
  try {
    return body();
  } catch (...) {
    SUBINTERP_RETHROW_FORCED_UNWIND;
    PyObject* module = PyType_GetModule(defining_class);
    if (module == nullptr) return nullptr;
    translate(module);
    return nullptr;
  }
}

// Binds vectorcall arguments to `names`: the first `max_positional` may come
// by position, the first `required` must be given. Missing ones stay null.
template <std::size_t N>
bool bind(const char* fname, PyObject* const* args, std::size_t nargsf, PyObject* kwnames,
          const char* const (&names)[N], Py_ssize_t max_positional, Py_ssize_t required,
          PyObject* (&out)[N]) {
  Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  for (auto& o : out) o = nullptr;
  if (nargs > max_positional) {
    PyErr_Format(PyExc_TypeError, "%s() takes at most %zd positional arguments (%zd given)", fname,
                 max_positional, nargs);
    return false;
  }
  for (Py_ssize_t i = 0; i < nargs; ++i) out[i] = args[i];
  Py_ssize_t nkw = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
  for (Py_ssize_t k = 0; k < nkw; ++k) {
    PyObject* key = PyTuple_GET_ITEM(kwnames, k);
    std::size_t found = N;
    for (std::size_t i = 0; i < N; ++i) {
      if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) found = i;
    }
    if (found == N) {
      PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", fname, key);
      return false;
    }
    if (out[found] != nullptr) {
      PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname,
                   names[found]);
      return false;
    }
    out[found] = args[nargs + k];
  }
  for (Py_ssize_t i = 0; i < required; ++i) {
    if (out[i] == nullptr) {
      PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
      return false;
    }
  }
  return true;
}

// `timeout` (None or seconds) of a call that blocks when `block` is true.
std::optional<double> timeout_arg(PyObject* block, PyObject* timeout) {
  if (block != nullptr && !py::check(PyObject_IsTrue(block))) return 0.0;
  if (timeout == nullptr || timeout == Py_None) return std::nullopt;
  double seconds = PyFloat_AsDouble(timeout);
  if (seconds == -1.0 && PyErr_Occurred()) py::throw_python_error();
  if (!(seconds >= 0)) {
    PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
    py::throw_python_error();
  }
  return seconds;
}

ModuleState* state_of_type(PyTypeObject* defining_class) {
  PyObject* module = PyType_GetModule(defining_class);
  if (module == nullptr) py::throw_python_error();
  return state_of(module);
}

std::optional<si::Unbound> unbound_arg(ModuleState* st, PyObject* obj) {
  if (obj == nullptr || obj == Py_None) return std::nullopt;
  if (obj == st->unbound) return si::Unbound::Replace;
  if (obj == st->unbound_error) return si::Unbound::Error;
  if (obj == st->unbound_remove) return si::Unbound::Remove;
  PyErr_Format(PyExc_ValueError,
               "unbounditems must be UNBOUND, UNBOUND_ERROR or UNBOUND_REMOVE, not %R", obj);
  py::throw_python_error();
}

PyObject* unbound_marker(ModuleState* st, si::Unbound u) {
  PyObject* marker = u == si::Unbound::Replace ? st->unbound
                     : u == si::Unbound::Error ? st->unbound_error
                                               : st->unbound_remove;
  return Py_NewRef(marker != nullptr ? marker : Py_None);
}

// --- objects, one per queue / channel end in this interpreter --------------

PyObject* known_or_null(ModuleState* st, std::int64_t key) {
  auto it = st->known->find(key);
  return it == st->known->end() ? nullptr : Py_NewRef(it->second);
}

PyTypeObject* class_or_type(PyObject* cls, PyObject* type) {
  return reinterpret_cast<PyTypeObject*>(cls != nullptr ? cls : type);
}

py::ref queue_object(PyObject* module, const si::Queue& queue) {
  ModuleState* st = state_of(module);
  std::int64_t key = queue_key(queue.id());
  if (PyObject* obj = known_or_null(st, key)) return py::ref::steal(obj);
  PyTypeObject* cls = class_or_type(st->queue_class, st->queue_type);
  py::ref obj = py::check(cls->tp_alloc(cls, 0));
  as_queue(obj.get())->queue = new si::Queue(queue);
  as_queue(obj.get())->module = Py_NewRef(module);
  (*st->known)[key] = obj.get();
  return obj;
}

py::ref channel_object(PyObject* module, const si::Channel& channel, si::ChannelEnd end) {
  ModuleState* st = state_of(module);
  std::int64_t key = channel_key(channel.id(), end);
  if (PyObject* obj = known_or_null(st, key)) return py::ref::steal(obj);
  bool send = end == si::ChannelEnd::Send;
  PyTypeObject* cls = send ? class_or_type(st->send_class, st->send_type)
                           : class_or_type(st->recv_class, st->recv_type);
  py::ref obj = py::check(cls->tp_alloc(cls, 0));
  as_channel(obj.get())->channel = new si::Channel(channel);
  as_channel(obj.get())->module = Py_NewRef(module);
  as_channel(obj.get())->end = end;
  (*st->known)[key] = obj.get();
  return obj;
}

// Removes `self` from its module's `known`.
void forget(PyObject* self, PyObject* module, std::int64_t key) {
  if (module == nullptr) return;
  ModuleState* st = state_of(module);
  if (st->known == nullptr) return;
  auto it = st->known->find(key);
  if (it != st->known->end() && it->second == self) st->known->erase(it);
}

// The module reference goes last: it may be the module's last one.
void queue_dealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  QueueObject* q = as_queue(self);
  PyObject* module = q->module;
  if (q->queue != nullptr) {
    forget(self, module, queue_key(q->queue->id()));
    delete q->queue;
  }
  type->tp_free(self);
  Py_DECREF(type);
  Py_XDECREF(module);
}

void channel_dealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  ChannelObject* c = as_channel(self);
  PyObject* module = c->module;
  if (c->channel != nullptr) {
    forget(self, module, channel_key(c->channel->id(), c->end));
    delete c->channel;
  }
  type->tp_free(self);
  Py_DECREF(type);
  Py_XDECREF(module);
}

// --- Queue methods ------------------------------------------------------

PyObject* q_put(PyObject* self, PyTypeObject* cls, PyObject* const* args, std::size_t nargsf,
                PyObject* kwnames) {
  return method_entry(cls, [&]() -> PyObject* {
    const si::Queue& q = *as_queue(self)->queue;
    if (PyVectorcall_NARGS(nargsf) == 1 && kwnames == nullptr) {
      q.put(si::Value::capture(args[0]));  // the common case, parsed by hand
      Py_RETURN_NONE;
    }
    static const char* const names[] = {"obj", "block", "timeout", "unbounditems"};
    PyObject* a[4];
    if (!bind("put", args, nargsf, kwnames, names, 3, 1, a)) return nullptr;
    std::optional<si::Unbound> unbound =
        a[3] != nullptr ? unbound_arg(state_of_type(cls), a[3]) : std::nullopt;
    std::optional<double> timeout = timeout_arg(a[1], a[2]);
    q.put(si::Value::capture(a[0]), timeout, unbound);
    Py_RETURN_NONE;
  });
}

PyObject* q_put_nowait(PyObject* self, PyTypeObject* cls, PyObject* const* args,
                       std::size_t nargsf, PyObject* kwnames) {
  return method_entry(cls, [&]() -> PyObject* {
    static const char* const names[] = {"obj", "unbounditems"};
    PyObject* a[2];
    if (!bind("put_nowait", args, nargsf, kwnames, names, 1, 1, a)) return nullptr;
    std::optional<si::Unbound> unbound =
        a[1] != nullptr ? unbound_arg(state_of_type(cls), a[1]) : std::nullopt;
    as_queue(self)->queue->put(si::Value::capture(a[0]), 0.0, unbound);
    Py_RETURN_NONE;
  });
}

PyObject* item_object(PyTypeObject* cls, si::QueueItem&& item) {
  if (item.unbound) return unbound_marker(state_of_type(cls), si::Unbound::Replace);
  return item.value.rebuild().release();
}

PyObject* q_get(PyObject* self, PyTypeObject* cls, PyObject* const* args, std::size_t nargsf,
                PyObject* kwnames) {
  return method_entry(cls, [&]() -> PyObject* {
    const si::Queue& q = *as_queue(self)->queue;
    if (PyVectorcall_NARGS(nargsf) == 0 && kwnames == nullptr) return item_object(cls, q.get());
    static const char* const names[] = {"block", "timeout"};
    PyObject* a[2];
    if (!bind("get", args, nargsf, kwnames, names, 2, 0, a)) return nullptr;
    return item_object(cls, q.get(timeout_arg(a[0], a[1])));
  });
}

PyObject* q_get_nowait(PyObject* self, PyTypeObject* cls, PyObject* const*, std::size_t nargsf,
                       PyObject* kwnames) {
  if (PyVectorcall_NARGS(nargsf) != 0 || kwnames != nullptr) {
    PyErr_SetString(PyExc_TypeError, "get_nowait() takes no arguments");
    return nullptr;
  }
  return method_entry(cls, [&] { return item_object(cls, as_queue(self)->queue->get(0.0)); });
}

PyObject* q_qsize(PyObject* self, PyObject*) {
  return PyLong_FromSize_t(as_queue(self)->queue->size());
}
PyObject* q_empty(PyObject* self, PyObject*) {
  return PyBool_FromLong(as_queue(self)->queue->empty());
}
PyObject* q_full(PyObject* self, PyObject*) {
  return PyBool_FromLong(as_queue(self)->queue->full());
}
// For methods whose core call fails only on resource exhaustion.
template <class Body>
PyObject* guarded(Body&& body) {
  try {
    body();
    Py_RETURN_NONE;
  } catch (std::bad_alloc&) {
    return PyErr_NoMemory();
  } catch (std::exception& e) {
    PyErr_SetString(PyExc_SystemError, e.what());
    return nullptr;
  }
}

PyObject* q_close(PyObject* self, PyObject*) {
  return guarded([&] { as_queue(self)->queue->close(); });
}
PyObject* q_id(PyObject* self, void*) { return PyLong_FromLongLong(as_queue(self)->queue->id()); }
PyObject* q_maxsize(PyObject* self, void*) {
  return PyLong_FromLongLong(as_queue(self)->queue->maxsize());
}
PyObject* q_is_closed(PyObject* self, void*) {
  return PyBool_FromLong(as_queue(self)->queue->is_closed());
}
PyObject* q_unbounditems(PyObject* self, void*) {
  PyObject* module = PyType_GetModuleByDef(Py_TYPE(self), &module_def);
  if (module == nullptr) return nullptr;
  return unbound_marker(state_of(module), as_queue(self)->queue->default_unbound());
}
Py_hash_t q_hash(PyObject* self) {
  Py_hash_t h = static_cast<Py_hash_t>(as_queue(self)->queue->id());
  return h == -1 ? -2 : h;
}

#define SUBINTERP_METHOD(f) reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f))
constexpr int kFast = METH_METHOD | METH_FASTCALL | METH_KEYWORDS;

PyMethodDef queue_methods[] = {
    {"put", SUBINTERP_METHOD(q_put), kFast, nullptr},
    {"put_nowait", SUBINTERP_METHOD(q_put_nowait), kFast, nullptr},
    {"get", SUBINTERP_METHOD(q_get), kFast, nullptr},
    {"get_nowait", SUBINTERP_METHOD(q_get_nowait), kFast, nullptr},
    {"qsize", q_qsize, METH_NOARGS, nullptr},
    {"empty", q_empty, METH_NOARGS, nullptr},
    {"full", q_full, METH_NOARGS, nullptr},
    {"close", q_close, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef queue_getset[] = {
    {"id", q_id, nullptr, nullptr, nullptr},
    {"maxsize", q_maxsize, nullptr, nullptr, nullptr},
    {"unbounditems", q_unbounditems, nullptr, nullptr, nullptr},
    {"is_closed", q_is_closed, nullptr, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot queue_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(queue_dealloc)},
    {Py_tp_methods, queue_methods},
    {Py_tp_getset, queue_getset},
    {Py_tp_hash, reinterpret_cast<void*>(q_hash)},
    {Py_tp_doc, const_cast<char*>("A queue shared by interpreters (use subinterp.Queue).")},
    {0, nullptr},
};

PyType_Spec queue_spec = {"subinterp._subinterp.Queue", sizeof(QueueObject), 0,
                          Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_IMMUTABLETYPE |
                              Py_TPFLAGS_DISALLOW_INSTANTIATION,
                          queue_slots};

// --- channel ends -------------------------------------------------------

const si::Channel& channel_of(PyObject* self) { return *as_channel(self)->channel; }

PyObject* c_send_impl(const char* fname, bool buffer, bool wait, PyObject* self, PyTypeObject* cls,
                      PyObject* const* args, std::size_t nargsf, PyObject* kwnames) {
  return method_entry(cls, [&]() -> PyObject* {
    static const char* const names[] = {"obj", "timeout"};
    PyObject* a[2];
    if (!bind(fname, args, nargsf, kwnames, names, 1, 1, a)) return nullptr;
    if (!wait && a[1] != nullptr) {
      PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument 'timeout'", fname);
      return nullptr;
    }
    si::Value value;
    if (buffer) {
      py::ref view = py::check(PyMemoryView_FromObject(a[0]));
      value = si::Value::capture(view.get());
    } else {
      value = si::Value::capture(a[0]);
    }
    if (!wait) return PyBool_FromLong(channel_of(self).send_nowait(std::move(value)));
    channel_of(self).send(std::move(value), timeout_arg(nullptr, a[1]));
    Py_RETURN_NONE;
  });
}

PyObject* c_send(PyObject* self, PyTypeObject* cls, PyObject* const* args, std::size_t nargsf,
                 PyObject* kwnames) {
  return c_send_impl("send", false, true, self, cls, args, nargsf, kwnames);
}
PyObject* c_send_nowait(PyObject* self, PyTypeObject* cls, PyObject* const* args,
                        std::size_t nargsf, PyObject* kwnames) {
  return c_send_impl("send_nowait", false, false, self, cls, args, nargsf, kwnames);
}
PyObject* c_send_buffer(PyObject* self, PyTypeObject* cls, PyObject* const* args,
                        std::size_t nargsf, PyObject* kwnames) {
  return c_send_impl("send_buffer", true, true, self, cls, args, nargsf, kwnames);
}
PyObject* c_send_buffer_nowait(PyObject* self, PyTypeObject* cls, PyObject* const* args,
                               std::size_t nargsf, PyObject* kwnames) {
  return c_send_impl("send_buffer_nowait", true, false, self, cls, args, nargsf, kwnames);
}

PyObject* c_recv(PyObject* self, PyTypeObject* cls, PyObject* const* args, std::size_t nargsf,
                 PyObject* kwnames) {
  return method_entry(cls, [&]() -> PyObject* {
    static const char* const names[] = {"timeout"};
    PyObject* a[1];
    if (!bind("recv", args, nargsf, kwnames, names, 0, 0, a)) return nullptr;
    return channel_of(self).recv(timeout_arg(nullptr, a[0])).rebuild().release();
  });
}

PyObject* c_recv_nowait(PyObject* self, PyTypeObject* cls, PyObject* const* args,
                        std::size_t nargsf, PyObject* kwnames) {
  return method_entry(cls, [&]() -> PyObject* {
    static const char* const names[] = {"default"};
    PyObject* a[1];
    if (!bind("recv_nowait", args, nargsf, kwnames, names, 1, 0, a)) return nullptr;
    try {
      return channel_of(self).recv_nowait().rebuild().release();
    } catch (si::ChannelEmpty&) {
      if (a[0] == nullptr) throw;
      return Py_NewRef(a[0]);
    }
  });
}

PyObject* c_close(PyObject* self, PyObject*) {
  return guarded([&] { channel_of(self).close(as_channel(self)->end); });
}
PyObject* c_id(PyObject* self, void*) { return PyLong_FromLongLong(channel_of(self).id()); }
PyObject* c_is_closed(PyObject* self, void*) {
  return PyBool_FromLong(channel_of(self).is_closed());
}
Py_hash_t c_hash(PyObject* self) {
  Py_hash_t h = static_cast<Py_hash_t>(channel_of(self).id() * 2 +
                                       (as_channel(self)->end == si::ChannelEnd::Send));
  return h == -1 ? -2 : h;
}

// Iterating a receive end yields items until the channel is closed.
PyObject* c_next(PyObject* self) {
  PyObject* module = PyType_GetModuleByDef(Py_TYPE(self), &module_def);
  if (module == nullptr) return nullptr;
  return entry(module, [&]() -> PyObject* {
    try {
      return channel_of(self).recv().rebuild().release();
    } catch (si::ChannelClosed&) {
      return nullptr;  // StopIteration, without an exception set
    }
  });
}

PyGetSetDef channel_getset[] = {
    {"id", c_id, nullptr, nullptr, nullptr},
    {"is_closed", c_is_closed, nullptr, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyMethodDef send_methods[] = {
    {"send", SUBINTERP_METHOD(c_send), kFast, nullptr},
    {"send_nowait", SUBINTERP_METHOD(c_send_nowait), kFast, nullptr},
    {"send_buffer", SUBINTERP_METHOD(c_send_buffer), kFast, nullptr},
    {"send_buffer_nowait", SUBINTERP_METHOD(c_send_buffer_nowait), kFast, nullptr},
    {"close", c_close, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyMethodDef recv_methods[] = {
    {"recv", SUBINTERP_METHOD(c_recv), kFast, nullptr},
    {"recv_nowait", SUBINTERP_METHOD(c_recv_nowait), kFast, nullptr},
    {"close", c_close, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot send_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(channel_dealloc)},
    {Py_tp_methods, send_methods},
    {Py_tp_getset, channel_getset},
    {Py_tp_hash, reinterpret_cast<void*>(c_hash)},
    {Py_tp_doc, const_cast<char*>("The sending end of a channel (use subinterp.channels).")},
    {0, nullptr},
};

PyType_Slot recv_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(channel_dealloc)},
    {Py_tp_methods, recv_methods},
    {Py_tp_getset, channel_getset},
    {Py_tp_hash, reinterpret_cast<void*>(c_hash)},
    {Py_tp_iter, reinterpret_cast<void*>(PyObject_SelfIter)},
    {Py_tp_iternext, reinterpret_cast<void*>(c_next)},
    {Py_tp_doc, const_cast<char*>("The receiving end of a channel (use subinterp.channels).")},
    {0, nullptr},
};

constexpr unsigned kHandleFlags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE |
                                  Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION;
PyType_Spec send_spec = {"subinterp._subinterp.SendChannel", sizeof(ChannelObject), 0, kHandleFlags,
                         send_slots};
PyType_Spec recv_spec = {"subinterp._subinterp.RecvChannel", sizeof(ChannelObject), 0, kHandleFlags,
                         recv_slots};

// --- InterpreterBase: the base class of subinterp.Interpreter ------------
//
// Empty; its dealloc function marks instances (of subclasses) as interpreter
// handles for capture_handle, as queue_dealloc marks queues.

void interpreter_base_dealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  type->tp_free(self);
  Py_DECREF(type);
}

PyType_Slot interpreter_base_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(interpreter_base_dealloc)},
    {Py_tp_new, reinterpret_cast<void*>(PyType_GenericNew)},
    {Py_tp_doc, const_cast<char*>("Base of subinterp.Interpreter.")},
    {0, nullptr},
};

PyType_Spec interpreter_base_spec = {
    "subinterp._subinterp.InterpreterBase", sizeof(PyObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_IMMUTABLETYPE, interpreter_base_slots};

// --- values: how handles cross interpreters -----------------------------

bool capture_handle(PyObject* obj, si::Value& out) {
  for (PyTypeObject* t = Py_TYPE(obj); t != nullptr; t = t->tp_base) {
    if (t->tp_dealloc == queue_dealloc) {
      out = si::Value::from_queue(*as_queue(obj)->queue);
      return true;
    }
    if (t->tp_dealloc == channel_dealloc) {
      out = si::Value::from_channel(channel_of(obj), as_channel(obj)->end);
      return true;
    }
    if (t->tp_dealloc == interpreter_base_dealloc) {
      py::ref id = py::ref::steal(PyObject_GetAttrString(obj, "_id"));
      if (!id || !PyLong_Check(id.get())) {
        PyErr_Clear();
        return false;  // not set up as an Interpreter: pickled as any object
      }
      long long n = PyLong_AsLongLong(id.get());
      if (n == -1 && PyErr_Occurred()) py::throw_python_error();
      out = si::Value::interpreter_handle(n);
      return true;
    }
  }
  return false;
}

// This interpreter's module, importing the package (which registers its
// classes) when needed.
py::ref import_module() {
  // Importing the extension imports the package first, which registers its
  // classes.
  return py::check(PyImport_ImportModule("subinterp._subinterp"));
}

PyObject* rebuild_handle(const si::Value& v) {
  try {
    py::ref module = import_module();
    if (v.kind() == si::Value::Kind::Interpreter) {
      PyObject* cls = state_of(module.get())->interpreter_class;
      if (cls == nullptr) {
        PyErr_SetString(PyExc_TypeError,
                        "interpreter handles become objects through the subinterp package, "
                        "which cannot be imported here");
        return nullptr;
      }
      py::ref id = py::check(PyLong_FromLongLong(v.interpreter_id()));
      return PyObject_CallOneArg(cls, id.get());
    }
    if (v.kind() == si::Value::Kind::Queue) {
      return queue_object(module.get(), v.as_queue()).release();
    }
    si::ChannelEnd end =
        v.kind() == si::Value::Kind::SendChannel ? si::ChannelEnd::Send : si::ChannelEnd::Recv;
    return channel_object(module.get(), v.as_channel(), end).release();
  } catch (py::PythonError& e) {
    e.restore();
    return nullptr;
  } catch (std::bad_alloc&) {
    return PyErr_NoMemory();
  }
}

// --- module functions ---------------------------------------------------

PyObject* m_queue_create(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("queue_create", nargs, 1, 2)) return nullptr;
  return entry(module, [&] {
    ModuleState* st = state_of(module);
    Py_ssize_t maxsize = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
    if (maxsize == -1 && PyErr_Occurred()) py::throw_python_error();
    si::Unbound unbound =
        unbound_arg(st, nargs > 1 ? args[1] : nullptr).value_or(si::Unbound::Replace);
    si::Queue q = si::Queue::create(maxsize, unbound);
    return queue_object(module, q).release();
  });
}

PyObject* m_queue_from_id(PyObject* module, PyObject* id) {
  return entry(module, [&] {
    return queue_object(module, si::Queue::find(id_arg(id, "queue id"))).release();
  });
}

py::ref id_list(const std::vector<std::int64_t>& ids) {
  py::ref list = py::check(PyList_New(static_cast<Py_ssize_t>(ids.size())));
  for (std::size_t i = 0; i < ids.size(); ++i) {
    PyList_SET_ITEM(list.get(), static_cast<Py_ssize_t>(i),
                    py::check(PyLong_FromLongLong(ids[i])).release());
  }
  return list;
}

PyObject* m_queue_list_all(PyObject* module, PyObject*) {
  return entry(module, [&] { return id_list(si::Queue::list_all()).release(); });
}

PyObject* m_channel_create(PyObject* module, PyObject*) {
  return entry(module, [&] {
    si::Channel c = si::Channel::create();
    py::ref recv = channel_object(module, c, si::ChannelEnd::Recv);
    py::ref send = channel_object(module, c, si::ChannelEnd::Send);
    return py::check(PyTuple_Pack(2, recv.get(), send.get())).release();
  });
}

PyObject* m_channel_from_id(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("channel_from_id", nargs, 2, 2)) return nullptr;
  return entry(module, [&] {
    int send = py::check(PyObject_IsTrue(args[1]));
    si::Channel c = si::Channel::find(id_arg(args[0], "channel id"));
    return channel_object(module, c, send ? si::ChannelEnd::Send : si::ChannelEnd::Recv).release();
  });
}

PyObject* m_channel_list_all(PyObject* module, PyObject*) {
  return entry(module, [&] { return id_list(si::Channel::list_all()).release(); });
}

}  // namespace

PyMethodDef handle_functions[] = {
    {"queue_create", SUBINTERP_METHOD(m_queue_create), METH_FASTCALL,
     "queue_create(maxsize, unbounditems=UNBOUND) -> Queue"},
    {"queue_from_id", m_queue_from_id, METH_O, "queue_from_id(id) -> Queue"},
    {"queue_list_all", m_queue_list_all, METH_NOARGS, "queue_list_all() -> [id]"},
    {"channel_create", m_channel_create, METH_NOARGS,
     "channel_create() -> (RecvChannel, SendChannel)"},
    {"channel_from_id", SUBINTERP_METHOD(m_channel_from_id), METH_FASTCALL,
     "channel_from_id(id, send) -> SendChannel if send else RecvChannel"},
    {"channel_list_all", m_channel_list_all, METH_NOARGS, "channel_list_all() -> [id]"},
    {nullptr, nullptr, 0, nullptr},
};

int handles_exec(PyObject* module) {
  ModuleState* st = state_of(module);
  struct {
    PyType_Spec* spec;
    PyObject* ModuleState::*field;
    const char* name;
  } types[] = {{&interpreter_base_spec, &ModuleState::interpreter_base, "InterpreterBase"},
               {&queue_spec, &ModuleState::queue_type, "Queue"},
               {&send_spec, &ModuleState::send_type, "SendChannel"},
               {&recv_spec, &ModuleState::recv_type, "RecvChannel"}};
  for (auto& t : types) {
    st->*t.field = PyType_FromModuleAndSpec(module, t.spec, nullptr);
    if (st->*t.field == nullptr) return -1;
    if (PyModule_AddObjectRef(module, t.name, st->*t.field) < 0) return -1;
  }
  // The core is shared with every host in the process (one libsubinterp),
  // so this makes handles work for all of them.
  si::set_handle_hooks({capture_handle, rebuild_handle});
  return PyModule_AddFunctions(module, handle_functions);
}

}  // namespace subinterp_ext
