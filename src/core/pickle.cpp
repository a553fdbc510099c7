// Pickling for values: protocol 5, plus two things done only when a pickle
// needs them, so that ordinary pickles pay one search of their bytes.
//
// Sending: pickle names functions and classes by reference (module and
// qualified name). Those of `__main__`, lambdas and closures are not found
// that way in another interpreter. A pickle that names `__main__`, or that
// fails, is made again by a Pickler whose persistent_id hands such objects to
// the by-value machinery (PickleRefs): they travel beside the bytes as Values
// and are rebuilt by the Unpickler's persistent_load.
//
// Receiving: CPython 3.12 refuses `_datetime`, `_decimal` and `_zoneinfo` in
// isolated interpreters, which then load the pure-Python fallbacks; their
// classes pickle under the fallback's name (`_pydatetime.datetime`). Such
// names are looked up in the module users import (`datetime`), so each
// interpreter rebuilds its own type.
//
// The Pickler and Unpickler subclasses are made once per interpreter; their
// hooks are builtin functions (not descriptors, so pickle calls them without
// `self`) that find the pickling in progress through a thread-local pointer:
// pickling runs on one thread, and nested picklings save and restore it.
#include <Python.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <string_view>
#include <utility>

#include "internal.hpp"
#include "subinterp/error.hpp"

namespace subinterp::detail {
namespace {

// Pure-Python fallbacks of stdlib C modules, and the module that exports
// their classes under the name users know.
struct Rename {
  std::string_view fallback;
  const char* module;
};
constexpr Rename kRenames[] = {
    {"_pydatetime", "datetime"},
    {"_pydecimal", "decimal"},
    {"zoneinfo._zoneinfo", "zoneinfo"},
};

bool contains(std::string_view data, std::string_view needle) {
  return memmem(data.data(), data.size(), needle.data(), needle.size()) != nullptr;
}

std::uint64_t little_endian(std::string_view data, std::size_t at, std::size_t size) {
  std::uint64_t n = 0;
  for (std::size_t i = size; i-- > 0;) n = (n << 8) | static_cast<unsigned char>(data[at + i]);
  return n;
}

// Where the next frame starts when a large bytes, bytearray or str object
// (64 KiB or more) starts at `at`: pickle writes its header and payload
// between frames. Zero when that is not what is there.
std::size_t after_payload(std::string_view data, std::size_t at) {
  constexpr unsigned char kFrame = 0x95;
  struct Header {
    unsigned char opcode;
    std::size_t size;
  };
  // BINBYTES8, BYTEARRAY8, BINUNICODE8; BINBYTES, BINUNICODE.
  constexpr Header kHeaders[] = {{0x8e, 8}, {0x96, 8}, {0x8d, 8}, {0x42, 4}, {0x58, 4}};
  for (const Header& h : kHeaders) {
    if (static_cast<unsigned char>(data[at]) != h.opcode) continue;
    if (data.size() - at < 1 + h.size) return 0;
    std::uint64_t length = little_endian(data, at + 1, h.size);
    std::size_t start = at + 1 + h.size;
    if (length > data.size() - start) return 0;
    std::size_t next = start + static_cast<std::size_t>(length);
    if (next == data.size() || static_cast<unsigned char>(data[next]) == kFrame) return next;
    return 0;
  }
  return 0;
}

// Whether `needle` is in the parts of a pickle where names are written: a
// protocol 4+ pickle's frames, without the large payloads between them
// (which would make a search of an 8 MiB array cost milliseconds). Other
// pickles are searched whole.
template <std::size_t N>
bool names_any(std::string_view data, const std::string_view (&needles)[N]) {
  auto search = [&](std::string_view part) {
    for (std::string_view needle : needles) {
      if (contains(part, needle)) return true;
    }
    return false;
  };
  constexpr unsigned char kProto = 0x80, kFrame = 0x95;
  if (data.size() < 2 || static_cast<unsigned char>(data[0]) != kProto || data[1] < 4) {
    return search(data);
  }
  std::size_t at = 2;
  while (at < data.size()) {
    if (static_cast<unsigned char>(data[at]) != kFrame || data.size() - at < 9) {
      return search(data.substr(at));
    }
    std::uint64_t length = little_endian(data, at + 1, 8);
    if (length > data.size() - at - 9) return search(data.substr(at));
    std::string_view frame = data.substr(at + 9, static_cast<std::size_t>(length));
    if (search(frame)) return true;
    at += 9 + frame.size();
    if (at < data.size() && static_cast<unsigned char>(data[at]) != kFrame) {
      std::size_t next = after_payload(data, at);
      if (next == 0) return search(data.substr(at));
      at = next;
    }
  }
  return false;
}

constexpr std::string_view kFallbackNames[] = {"_pydatetime", "_pydecimal", "zoneinfo._zoneinfo"};
// "_interpreter_from_id": what subinterp.Interpreter objects pickle as.
constexpr std::string_view kRefNames[] = {"__main__", "_pydatetime", "_interpreter_from_id"};

bool names_fallback(std::string_view data) { return names_any(data, kFallbackNames); }

struct DumpContext {
  PickleRefs* refs;
  std::exception_ptr error;  // thrown by refs->ref(), rethrown after pickling
};
struct LoadContext {
  const std::vector<Value>* refs;
  std::vector<py::ref> built;  // one object per ref, however often it is named
};
thread_local DumpContext* t_dump = nullptr;
thread_local LoadContext* t_load = nullptr;

template <class T>
class Current {
 public:
  Current(T*& slot, T* value) : slot_(slot), saved_(std::exchange(slot, value)) {}
  ~Current() { slot_ = saved_; }
  Current(const Current&) = delete;
  Current& operator=(const Current&) = delete;

 private:
  T*& slot_;
  T* saved_;
};

PyObject* persistent_id(PyObject*, PyObject* obj) {
  DumpContext* ctx = t_dump;
  if (ctx == nullptr) Py_RETURN_NONE;
  try {
    std::optional<std::size_t> index = ctx->refs->ref(obj);
    if (!index) Py_RETURN_NONE;
    return PyLong_FromSize_t(*index);
  } catch (py::PythonError& e) {
    e.restore();
  } catch (...) {
    SUBINTERP_RETHROW_FORCED_UNWIND;
    ctx->error = std::current_exception();
    PyErr_SetString(PyExc_RuntimeError, "subinterp: an object could not be captured");
  }
  return nullptr;
}

// A class rebuilt by value stands for the class of that name in this
// interpreter's `__main__` when there is one (defined there by its own code,
// or bound by an earlier rebuild), as pickle would name it.
py::ref prefer_main_binding(py::ref obj) {
  if (!PyType_Check(obj.get())) return obj;
  auto* type = reinterpret_cast<PyTypeObject*>(obj.get());
  PyObject* module = PyDict_GetItemString(type->tp_dict, "__module__");  // borrowed
  if (module == nullptr || !PyUnicode_Check(module) ||
      PyUnicode_CompareWithASCIIString(module, "__main__") != 0) {
    return obj;
  }
  py::ref name = py::ref::steal(PyType_GetName(type));
  py::ref qualname = py::ref::steal(PyType_GetQualName(type));
  if (!name || !qualname) py::throw_python_error();
  if (PyUnicode_Compare(name.get(), qualname.get()) != 0) return obj;
  PyObject* main = PyImport_AddModule("__main__");  // borrowed
  if (main == nullptr) py::throw_python_error();
  PyObject* bound = PyDict_GetItemWithError(PyModule_GetDict(main), name.get());  // borrowed
  if (bound == nullptr) {
    if (PyErr_Occurred()) py::throw_python_error();
    return obj;
  }
  return PyType_Check(bound) ? py::ref::borrow(bound) : obj;
}

PyObject* persistent_load(PyObject*, PyObject* pid) {
  LoadContext* ctx = t_load;
  Py_ssize_t index = PyLong_Check(pid) ? PyLong_AsSsize_t(pid) : -1;
  if (index == -1 && PyErr_Occurred()) return nullptr;
  if (ctx == nullptr || index < 0 || static_cast<std::size_t>(index) >= ctx->refs->size()) {
    PyErr_SetString(PyExc_ValueError, "subinterp: unknown persistent id in a pickle");
    return nullptr;
  }
  auto i = static_cast<std::size_t>(index);
  try {
    if (!ctx->built[i]) ctx->built[i] = prefer_main_binding((*ctx->refs)[i].rebuild());
    return py::ref(ctx->built[i]).release();
  } catch (py::PythonError& e) {
    e.restore();
  } catch (std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

// module.qualname (dotted for nested classes, as protocol 4 names them).
PyObject* lookup(PyObject* module_name, PyObject* qualname) {
  py::ref obj = py::ref::steal(PyImport_Import(module_name));
  if (!obj) return nullptr;
  py::ref dot = py::ref::steal(PyUnicode_FromString("."));
  if (!dot) return nullptr;
  py::ref parts = py::ref::steal(PyUnicode_Split(qualname, dot.get(), -1));
  if (!parts) return nullptr;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts.get()); ++i) {
    obj = py::ref::steal(PyObject_GetAttr(obj.get(), PyList_GET_ITEM(parts.get(), i)));
    if (!obj) return nullptr;
  }
  return obj.release();
}

// Unpickler.find_class(module, name), with the fallback modules renamed.
PyObject* find_class(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1])) {
    PyErr_SetString(PyExc_TypeError, "find_class(module, name) takes two str");
    return nullptr;
  }
  if (PySys_Audit("pickle.find_class", "OO", args[0], args[1]) < 0) return nullptr;
  for (const Rename& r : kRenames) {
    if (PyUnicode_CompareWithASCIIString(args[0], r.fallback.data()) != 0) continue;
    py::ref module = py::ref::steal(PyUnicode_FromString(r.module));
    if (!module) return nullptr;
    if (PyObject* found = lookup(module.get(), args[1])) return found;
    // Not exported there: the fallback's own object, as pickle would.
    if (!PyErr_ExceptionMatches(PyExc_AttributeError) &&
        !PyErr_ExceptionMatches(PyExc_ImportError)) {
      return nullptr;
    }
    PyErr_Clear();
    break;
  }
  return lookup(args[0], args[1]);
}

// Pickler.reducer_override: objects of a fallback's class whose default
// pickle the C type cannot load. _pydatetime.timezone pickles its slots as
// state, which C timezone objects refuse (they have no such attributes);
// its constructor arguments are all it needs.
PyObject* reducer_override(PyObject*, PyObject* obj) {
  PyTypeObject* type = Py_TYPE(obj);
  // tp_dict is read only for heap types: a static type's may be NULL here.
  if (std::strcmp(type->tp_name, "timezone") != 0 ||
      !PyType_HasFeature(type, Py_TPFLAGS_HEAPTYPE)) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  PyObject* module = PyDict_GetItemString(type->tp_dict, "__module__");  // borrowed
  if (module == nullptr || !PyUnicode_Check(module) ||
      PyUnicode_CompareWithASCIIString(module, "_pydatetime") != 0) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  py::ref args = py::ref::steal(PyObject_CallMethod(obj, "__getinitargs__", nullptr));
  if (!args) return nullptr;
  return PyTuple_Pack(2, reinterpret_cast<PyObject*>(type), args.get());
}

PyMethodDef kPersistentId = {"persistent_id", persistent_id, METH_O, nullptr};
PyMethodDef kReducerOverride = {"reducer_override", reducer_override, METH_O, nullptr};
PyMethodDef kPersistentLoad = {"persistent_load", persistent_load, METH_O, nullptr};
PyMethodDef kFindClass = {"find_class",
                          reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(find_class)),
                          METH_FASTCALL, nullptr};

// class <name>(base) with the given hooks as class attributes.
py::ref make_subclass(const char* name, PyObject* base, std::initializer_list<PyMethodDef*> hooks) {
  py::ref ns = py::check(PyDict_New());
  py::ref module = py::check(PyUnicode_FromString("subinterp"));
  py::check(PyDict_SetItemString(ns.get(), "__module__", module.get()));
  for (PyMethodDef* def : hooks) {
    py::ref func = py::check(PyCFunction_NewEx(def, nullptr, nullptr));
    py::check(PyDict_SetItemString(ns.get(), def->ml_name, func.get()));
  }
  py::ref bases = py::check(PyTuple_Pack(1, base));
  return py::check(PyObject_CallFunction(reinterpret_cast<PyObject*>(&PyType_Type), "sOO", name,
                                         bases.get(), ns.get()));
}

void load_pickle(InterpCache& c) {
  if (c.pickle_dumps != nullptr) return;
  py::ref pickle = py::check(PyImport_ImportModule("pickle"));
  py::ref dumps = py::check(PyObject_GetAttrString(pickle.get(), "dumps"));
  py::ref loads = py::check(PyObject_GetAttrString(pickle.get(), "loads"));
  c.pickle_loads = loads.release();
  c.pickle_dumps = dumps.release();
}

void load_value_pickling(InterpCache& c) {
  if (c.value_unpickler != nullptr) return;
  py::ref pickle = py::check(PyImport_ImportModule("_pickle"));
  py::ref io = py::check(PyImport_ImportModule("io"));
  py::ref bytes_io = py::check(PyObject_GetAttrString(io.get(), "BytesIO"));
  py::ref pickler_base = py::check(PyObject_GetAttrString(pickle.get(), "Pickler"));
  py::ref unpickler_base = py::check(PyObject_GetAttrString(pickle.get(), "Unpickler"));
  py::ref pickler =
      make_subclass("ValuePickler", pickler_base.get(), {&kPersistentId, &kReducerOverride});
  py::ref unpickler =
      make_subclass("ValueUnpickler", unpickler_base.get(), {&kPersistentLoad, &kFindClass});
  c.bytes_io = bytes_io.release();
  c.value_pickler = pickler.release();
  c.value_unpickler = unpickler.release();
}

}  // namespace

py::ref pickle_dumps(PyObject* obj) {
  InterpCache& c = cache();
  load_pickle(c);
  py::ref protocol = py::check(PyLong_FromLong(5));
  return py::check(PyObject_CallFunctionObjArgs(c.pickle_dumps, obj, protocol.get(), nullptr));
}

bool pickle_needs_refs(std::string_view data) { return names_any(data, kRefNames); }

py::ref pickle_dumps_refs(PyObject* obj, PickleRefs& refs) {
  InterpCache& c = cache();
  load_value_pickling(c);
  py::ref file = py::check(PyObject_CallNoArgs(c.bytes_io));
  py::ref protocol = py::check(PyLong_FromLong(5));
  py::ref pickler =
      py::check(PyObject_CallFunctionObjArgs(c.value_pickler, file.get(), protocol.get(), nullptr));
  py::ref dump = py::check(PyObject_GetAttrString(pickler.get(), "dump"));
  DumpContext ctx{&refs, nullptr};
  py::ref done;
  {
    Current<DumpContext> current(t_dump, &ctx);
    done = py::ref::steal(PyObject_CallOneArg(dump.get(), obj));
  }
  if (!done) {
    if (ctx.error) {
      PyErr_Clear();
      std::rethrow_exception(ctx.error);
    }
    py::throw_python_error();
  }
  return py::check(PyObject_CallMethod(file.get(), "getvalue", nullptr));
}

py::ref pickle_loads(std::string_view data, const std::vector<Value>* refs) {
  InterpCache& c = cache();
  py::ref bytes =
      py::check(PyBytes_FromStringAndSize(data.data(), static_cast<Py_ssize_t>(data.size())));
  bool has_refs = refs != nullptr && !refs->empty();
  if (!has_refs && !names_fallback(data)) {
    load_pickle(c);
    return py::check(PyObject_CallOneArg(c.pickle_loads, bytes.get()));
  }
  load_value_pickling(c);
  py::ref file = py::check(PyObject_CallOneArg(c.bytes_io, bytes.get()));
  py::ref unpickler = py::check(PyObject_CallOneArg(c.value_unpickler, file.get()));
  static const std::vector<Value> kNone;
  LoadContext ctx{has_refs ? refs : &kNone, {}};
  ctx.built.resize(ctx.refs->size());
  Current<LoadContext> current(t_load, &ctx);
  return py::check(PyObject_CallMethod(unpickler.get(), "load", nullptr));
}

}  // namespace subinterp::detail
