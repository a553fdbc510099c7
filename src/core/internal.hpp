// Helpers shared by the core's source files; not part of the public API.
#pragma once

#include <Python.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "subinterp/ref.hpp"
#include "subinterp/value.hpp"

// CPython 3.12: makes the keyword tuples of Argument Clinic parsers immortal
// before the main interpreter's finalization clears them, since one made by
// an isolated interpreter would abort the process there (arg_parsers.c).
// Nothing on 3.13.
extern "C" void subinterp_keep_parser_keywords(void) noexcept;

namespace subinterp::detail {

// Objects one interpreter keeps for the core, stored in that interpreter's
// state dict (PyInterpreterState_GetDict) and released when it ends. Never
// static: each interpreter has its own (DESIGN.md, invariant 3).
// A source module of functions sent by value (see FunctionData).
struct NamespaceKey {
  std::int64_t interp;
  std::uintptr_t globals;
  std::string module;
  bool operator==(const NamespaceKey&) const = default;
};
struct NamespaceKeyHash {
  std::size_t operator()(const NamespaceKey& k) const noexcept {
    return std::hash<std::uintptr_t>()(k.globals) ^ (static_cast<std::size_t>(k.interp) << 1);
  }
};

struct InterpCache {
  PyObject* pickle_dumps = nullptr;
  PyObject* pickle_loads = nullptr;
  PyObject* value_pickler = nullptr;    // see pickle.cpp
  PyObject* value_unpickler = nullptr;  // see pickle.cpp
  PyObject* bytes_io = nullptr;         // io.BytesIO
  PyObject* builtins = nullptr;
  PyObject* code_out = nullptr;  // {code: (marshalled bytes, names tuple)}
  PyObject* code_in = nullptr;   // {marshalled bytes: code}
  PyObject* classes_in = nullptr;  // {origin: class} of classes rebuilt by value
  // One namespace per source module for the functions rebuilt by value
  // here: (globals dict, {name: sender's object id}) tuples, owned.
  std::unordered_map<NamespaceKey, PyObject*, NamespaceKeyHash> namespaces;
  PyObject* shared_buffer_type = nullptr;
  PyObject* str_builtins = nullptr;  // "__builtins__", interned
  PyObject* str_name = nullptr;      // "__name__", interned
};

// Drops the namespaces of InterpCache (with the attached interpreter's GIL).
void clear_namespaces(InterpCache& c);

// Applies the unbound policies of queue items put by interpreter `id`,
// which has just been closed.
void queues_interpreter_closed(std::int64_t id);

// Wakes every blocked queue and channel call, which then throws (see
// throw_shut_down); later blocking calls throw at once. For shutdown().
void queues_refuse_waits();
void channels_refuse_waits();
[[noreturn]] void throw_shut_down();

// True for exceptions that must reach the caller as themselves, never be
// turned into another error: KeyboardInterrupt, SystemExit and other
// BaseExceptions that are not Exceptions, and MemoryError.
bool is_interruption(PyObject* exc) noexcept;
// Clears the pending Python error, unless it is an interruption: that one
// is thrown (py::PythonError) for the caller to see.
void clear_error_unless_interruption();

// The attached interpreter's cache (made on first use). Throws PythonError.
InterpCache& cache();

// Pickling for values (pickle.cpp). pickle_dumps is plain pickle.dumps with
// protocol 5.
py::ref pickle_dumps(PyObject* obj);
// True when pickled bytes may name something in `__main__`, which the
// receiving interpreter does not have, or a class of a pure-Python fallback
// whose pickle the C module's class cannot load: then the object is pickled
// again with pickle_dumps_refs. A search of the bytes, nothing more.
bool pickle_needs_refs(std::string_view data);

// Decides, for each object pickle_dumps_refs meets, whether it travels beside
// the pickle as a Value (a function or class of `__main__`, say) instead of
// being named by reference. May throw; the pickling then throws that.
class PickleRefs {
 public:
  virtual ~PickleRefs() = default;
  // The index of the Value standing for `obj`, or nullopt to pickle `obj`.
  virtual std::optional<std::size_t> ref(PyObject* obj) = 0;
};
// Pickles `obj` (protocol 5) with `refs.ref()` as its persistent_id.
py::ref pickle_dumps_refs(PyObject* obj, PickleRefs& refs);

// Unpickles `data`; `refs` are the Values of its persistent ids. Pickles that
// name the pure-Python fallback of a stdlib C module (`_pydatetime`, which
// CPython 3.12 loads in isolated interpreters) are loaded as naming the
// module users import (`datetime`), so that this interpreter's own classes
// are made.
py::ref pickle_loads(std::string_view data, const std::vector<Value>* refs = nullptr);

// Pickled bytes with the Values their persistent ids stand for.
struct PickleData {
  std::string bytes;
  std::vector<Value> refs;
};

// UTF-8 text of a str object; throws PythonError.
std::string utf8(PyObject* str);
// A str from UTF-8 text (lone surrogates pass through); throws PythonError.
py::ref make_str(std::string_view text);
// The qualified name of obj's type, for messages. Never throws.
std::string type_qualname(PyObject* obj);
// The same for a class. Never throws.
std::string class_name(PyTypeObject* type);

}  // namespace subinterp::detail
