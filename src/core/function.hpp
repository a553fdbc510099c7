// Functions as Values: by reference when importable, by value otherwise.
#pragma once

#include <Python.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

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
  std::vector<std::int64_t> cell_defs;  // index into FunctionData::defs, or -1
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
  std::vector<std::pair<std::string, std::size_t>> global_defs;
};

namespace detail {

std::shared_ptr<const FunctionData> capture_function(PyObject* func, ValueCapture& capture);
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
