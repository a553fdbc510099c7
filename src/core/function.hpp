// Functions as Values: by reference when importable, by value otherwise.
#pragma once

#include <Python.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "subinterp/error.hpp"
#include "subinterp/value.hpp"

namespace subinterp {

class ValueCapture;

// One function shipped by value.
struct FunctionDef {
  std::string code;          // marshalled code object
  Value defaults;            // None or a tuple
  Value kwdefaults;          // None or a dict
  std::vector<Value> cells;  // closure cell contents
  std::vector<bool> empty_cells;
  std::vector<std::int64_t> cell_defs;     // index into FunctionData::defs, or -1
  std::vector<std::int64_t> cell_classes;  // index into FunctionData::classes, or -1
};

// One class of `__main__` shipped by value: made again in the target with
// type(name, bases, namespace). Its methods are FunctionDefs of the same
// namespace.
struct ClassDef {
  enum class Wrap : std::uint8_t { Plain, Static, Class };
  struct Method {
    std::string name;
    Wrap wrap;
    std::size_t def;  // index into FunctionData::defs
  };
  struct Property {
    std::string name;
    std::int64_t fget, fset, fdel;  // indices into FunctionData::defs, or -1
    Value doc;
  };
  // A staticmethod or classmethod around a function of another namespace
  // (by reference, or by value on its own), as namedtuple's __new__ and _make.
  struct Wrapped {
    std::string name;
    Wrap wrap;
    Value func;
  };
  std::string name;
  std::string qualname;
  std::string module;
  // Identifies the original class in this process: a class rebuilt once in
  // an interpreter is reused there for later values.
  std::string origin;
  std::vector<Value> bases;
  std::vector<std::int64_t> base_classes;  // index into FunctionData::classes, or -1
  std::vector<std::pair<std::string, Value>> attrs;
  std::vector<std::pair<std::string, std::size_t>> nested_classes;
  std::vector<Method> methods;
  std::vector<Property> properties;
  std::vector<Wrapped> wrapped;
  // None for `type`; else the metaclass: the class is made with
  // metaclass.__prepare__(name, bases, **keywords) and
  // metaclass(name, bases, namespace, **keywords). The attributes the
  // metaclass makes itself (ABCs' _abc_impl, enums' member maps) are left
  // out; enum members are sent as their values.
  Value metaclass;
  Value keywords;  // None or a dict
  // Names of its abstract methods (functions carry no attributes by value:
  // their __isabstractmethod__ is set again before the metaclass runs).
  std::vector<std::string> abstract;
  // A dataclass is sent as written (its generated methods left out) and
  // decorated again in the target: dataclasses.dataclass(**params), with
  // each field as dataclasses.field(**field_args).
  bool dataclass = false;
  Value dataclass_params;                                // dict
  std::vector<std::pair<std::string, Value>> dataclass_fields;  // name, kwargs dict
};

// A function in transit. By reference: `module` and `qualname` name it. By
// value: `defs[0]` is the function; the globals it (and the functions of the
// same module it calls, in `defs[1:]`) reads are rebuilt into one fresh
// namespace in the target, so mutual recursion works without cycles here.
struct FunctionData {
  bool by_reference = false;
  std::string module;
  std::string qualname;
  std::vector<FunctionDef> defs;
  std::vector<std::pair<std::string, Value>> globals;
  // The address of each of `globals` in the sender: a value the sender has
  // not rebound since it was last sent is not sent again into the target's
  // namespace, so what the target's code did to it stays.
  std::vector<std::uintptr_t> global_ids;
  // Name the source module (its interpreter and globals dict, with
  // `module`): functions of one module share one namespace in each target
  // interpreter, which lives as long as that interpreter, as a module's
  // globals do. ns_interp < 0: a namespace of its own.
  std::int64_t ns_interp = -1;
  std::uintptr_t ns_globals = 0;
  std::vector<std::pair<std::string, std::size_t>> global_defs;
  // Classes of `__main__` the functions use, by value (bases first).
  std::vector<ClassDef> classes;
  std::vector<std::pair<std::string, std::size_t>> global_classes;
  // When >= 0, the value is this class, not defs[0].
  std::int64_t root_class = -1;
  // functools.lru_cache wrappers of defs, decorated again in the target.
  struct Cached {
    std::size_t def;  // index into defs
    Value maxsize;    // int or None
    bool typed;
  };
  std::vector<Cached> cached;
  std::vector<std::pair<std::string, std::size_t>> global_cached;
  // When >= 0, the value is this wrapper, not defs[0].
  std::int64_t root_cached = -1;
};

namespace detail {

// A class of `__main__` that cannot be made again by value at all (an enum
// with its own __new__, a class holding instances of itself), as opposed to
// one with an attribute value that cannot travel, which is named by
// reference instead. Refused wherever it is met.
class ClassRefused : public NotShareable {
 public:
  using NotShareable::NotShareable;
};

std::shared_ptr<const FunctionData> capture_function(PyObject* func, ValueCapture& capture);
// True for a class defined in `__main__` (at the top level or in a function
// there): such a class travels by value, with its metaclass.
bool class_by_value(PyObject* obj);
std::shared_ptr<const FunctionData> capture_class(PyObject* cls, ValueCapture& capture);
// True for a functools.lru_cache (or functools.cache) wrapper.
bool is_cached_function(PyObject* obj);
// An lru_cache wrapper: by reference when importable, else the function it
// wraps by value, decorated again with the same maxsize and typed.
std::shared_ptr<const FunctionData> capture_cached(PyObject* wrapper, ValueCapture& capture);
// A builtin function reachable as module.qualname, by reference; null when
// it is not (a bound method of an object, say).
std::shared_ptr<const FunctionData> capture_builtin(PyObject* func);
py::ref build_function(const FunctionData& data);
// Marshalled code, cached per code object in the attached interpreter.
std::string marshal_code(PyObject* code);
// A code object from marshalled bytes, cached per bytes in the attached
// interpreter.
py::ref unmarshal_code(const std::string& data);
Value capture_nested(ValueCapture& capture, PyObject* obj);
// Source text compiled as a module ("<string>"), cached per text in the
// attached interpreter: a script run again is not compiled again.
py::ref compile_cached(const std::string& source);

}  // namespace detail
}  // namespace subinterp
