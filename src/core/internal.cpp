#include "internal.hpp"

#include <atomic>

#include "subinterp/error.hpp"

namespace subinterp::detail {
namespace {

constexpr const char* kCacheKey = "subinterp.core.cache";

// Raised whenever a cache is released; threads drop what they remember when
// it moves.
std::atomic<std::uint64_t> g_cache_epoch{0};

void release_cache(PyObject* capsule) {
  auto* c = static_cast<InterpCache*>(PyCapsule_GetPointer(capsule, kCacheKey));
  if (c == nullptr) {
    PyErr_Clear();
    return;
  }
  Py_CLEAR(c->pickle_dumps);
  Py_CLEAR(c->pickle_loads);
  Py_CLEAR(c->value_pickler);
  Py_CLEAR(c->value_unpickler);
  Py_CLEAR(c->bytes_io);
  Py_CLEAR(c->builtins);
  Py_CLEAR(c->code_out);
  Py_CLEAR(c->code_in);
  Py_CLEAR(c->classes_in);
  clear_namespaces(*c);
  Py_CLEAR(c->shared_buffer_type);
  Py_CLEAR(c->str_builtins);
  Py_CLEAR(c->str_name);
  // Threads forget the caches they remember (see cache()) before this one
  // is freed. Nobody else is attached to its interpreter: it is ending.
  g_cache_epoch.fetch_add(1);
  delete c;
}

}  // namespace

void clear_namespaces(InterpCache& c) {
  auto dropped = std::move(c.namespaces);
  c.namespaces.clear();
  for (auto& [key, entry] : dropped) Py_DECREF(entry);
}

InterpCache& find_cache(PyInterpreterState* interp);

InterpCache& cache() {
  // A thread moves between a few interpreters per call (caller, target,
  // caller); remember the last few caches it found, matched by interpreter
  // address and id.
  struct Seen {
    PyInterpreterState* interp = nullptr;
    std::int64_t id = -1;
    InterpCache* cache = nullptr;
  };
  thread_local Seen seen[4];
  thread_local unsigned next = 0;
  thread_local std::uint64_t seen_epoch = 0;
  std::uint64_t epoch = g_cache_epoch.load();
  if (epoch != seen_epoch) {
    for (Seen& s : seen) s = Seen{};
    seen_epoch = epoch;
  }
  PyInterpreterState* interp = PyInterpreterState_Get();
  std::int64_t id = PyInterpreterState_GetID(interp);
  for (const Seen& s : seen) {
    if (s.interp == interp && s.id == id) return *s.cache;
  }
  InterpCache& found = find_cache(interp);
  seen[next++ % 4] = Seen{interp, id, &found};
  return found;
}

InterpCache& find_cache(PyInterpreterState* interp) {
  PyObject* dict = PyInterpreterState_GetDict(interp);
  if (dict == nullptr) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "no interpreter state dict");
    py::throw_python_error();
  }
  PyObject* capsule = PyDict_GetItemString(dict, kCacheKey);  // borrowed
  if (capsule != nullptr) {
    return *static_cast<InterpCache*>(PyCapsule_GetPointer(capsule, kCacheKey));
  }
  auto* c = new InterpCache();
  py::ref made = py::ref::steal(PyCapsule_New(c, kCacheKey, release_cache));
  if (!made) {
    delete c;
    py::throw_python_error();
  }
  py::check(PyDict_SetItemString(dict, kCacheKey, made.get()));
  py::ref builtins = py::check(PyImport_ImportModule("builtins"));
  c->builtins = builtins.release();
  c->str_builtins = py::check(PyUnicode_InternFromString("__builtins__")).release();
  c->str_name = py::check(PyUnicode_InternFromString("__name__")).release();
  c->code_out = py::check(PyDict_New()).release();
  c->code_in = py::check(PyDict_New()).release();
  c->classes_in = py::check(PyDict_New()).release();

  return *c;
}

bool is_interruption(PyObject* exc) noexcept {
  return exc != nullptr && (!PyErr_GivenExceptionMatches(exc, PyExc_Exception) ||
                            PyErr_GivenExceptionMatches(exc, PyExc_MemoryError));
}

void clear_error_unless_interruption() {
  PyObject* exc = PyErr_GetRaisedException();
  if (is_interruption(exc)) {
    PyErr_SetRaisedException(exc);
    py::throw_python_error();
  }
  Py_XDECREF(exc);
}

std::string utf8(PyObject* str) {
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(str, &size);
  if (data != nullptr) return std::string(data, static_cast<std::size_t>(size));
  if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) py::throw_python_error();
  // Lone surrogates: keep them, as Python's own surrogatepass does.
  PyErr_Clear();
  py::ref bytes = py::check(PyUnicode_AsEncodedString(str, "utf-8", "surrogatepass"));
  return std::string(PyBytes_AS_STRING(bytes.get()),
                     static_cast<std::size_t>(PyBytes_GET_SIZE(bytes.get())));
}

py::ref make_str(std::string_view text) {
  return py::check(
      PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "surrogatepass"));
}

std::string type_qualname(PyObject* obj) { return class_name(Py_TYPE(obj)); }

std::string class_name(PyTypeObject* type) {
  py::ref pending = py::ref::steal(PyErr_GetRaisedException());
  std::string result = type->tp_name;
  py::ref name = py::ref::steal(PyType_GetQualName(type));
  py::ref module =
      py::ref::steal(PyObject_GetAttrString(reinterpret_cast<PyObject*>(type), "__module__"));
  if (name && PyUnicode_Check(name.get())) {
    const char* q = PyUnicode_AsUTF8(name.get());
    if (q != nullptr) result = q;
    if (module && PyUnicode_Check(module.get())) {
      const char* m = PyUnicode_AsUTF8(module.get());
      if (m != nullptr && std::string_view(m) != "builtins") result = std::string(m) + "." + result;
    }
  }
  PyErr_Clear();
  PyErr_SetRaisedException(pending.release());
  return result;
}

}  // namespace subinterp::detail
