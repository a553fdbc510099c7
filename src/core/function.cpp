#include "function.hpp"

#include <string_view>
#include <unordered_map>

#include <marshal.h>

#include "internal.hpp"
#include "subinterp/error.hpp"

namespace subinterp::detail {
namespace {

// Code caches are dropped when they grow past this (code made at run time,
// e.g. by eval in a loop, would otherwise grow them without end).
constexpr Py_ssize_t kMaxCachedCode = 4096;

void add_names(PyObject* code, PyObject* names) {
  py::ref co_names = py::check(PyObject_GetAttrString(code, "co_names"));
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(co_names.get()); ++i) {
    py::check(PySet_Add(names, PyTuple_GET_ITEM(co_names.get(), i)));
  }
  py::ref consts = py::check(PyObject_GetAttrString(code, "co_consts"));
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts.get()); ++i) {
    PyObject* item = PyTuple_GET_ITEM(consts.get(), i);
    if (PyCode_Check(item)) add_names(item, names);
  }
}

// (code, marshalled bytes, global names used) for a code object, cached by
// identity; the entry holds the code so its address is not reused.
PyObject* code_entry(PyObject* code) {
  InterpCache& c = cache();
  py::ref key = py::check(PyLong_FromVoidPtr(code));
  PyObject* entry = PyDict_GetItemWithError(c.code_out, key.get());
  if (entry != nullptr) return entry;
  if (PyErr_Occurred()) py::throw_python_error();
  py::ref data = py::check(PyMarshal_WriteObjectToString(code, Py_MARSHAL_VERSION));
  py::ref names = py::check(PySet_New(nullptr));
  add_names(code, names.get());
  py::ref names_tuple = py::check(PySequence_Tuple(names.get()));
  py::ref made = py::check(PyTuple_Pack(3, code, data.get(), names_tuple.get()));
  if (PyDict_GET_SIZE(c.code_out) >= kMaxCachedCode) PyDict_Clear(c.code_out);
  py::check(PyDict_SetItem(c.code_out, key.get(), made.get()));
  return made.get();  // borrowed from the cache
}

std::string bytes_text(PyObject* bytes) {
  return std::string(PyBytes_AS_STRING(bytes), static_cast<std::size_t>(PyBytes_GET_SIZE(bytes)));
}

std::string attr_text(PyObject* obj, const char* name) {
  py::ref value = py::check(PyObject_GetAttrString(obj, name));
  if (!PyUnicode_Check(value.get())) return {};
  return utf8(value.get());
}

// True when `func` is reachable as module.qualname in the current process.
bool importable(PyObject* func, const std::string& module, const std::string& qualname) {
  if (module.empty() || module == "__main__" || qualname.find('<') != std::string::npos) {
    return false;
  }
  py::ref name = make_str(module);
  py::ref obj = py::ref::steal(PyImport_GetModule(name.get()));
  if (!obj) {
    if (PyErr_Occurred()) py::throw_python_error();
    return false;
  }
  std::string_view rest = qualname;
  while (!rest.empty()) {
    auto dot = rest.find('.');
    std::string part(rest.substr(0, dot));
    obj = py::ref::steal(PyObject_GetAttrString(obj.get(), part.c_str()));
    if (!obj) {
      PyErr_Clear();
      return false;
    }
    rest = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
  }
  return obj.get() == func;
}

class FunctionCapture {
 public:
  FunctionCapture(ValueCapture& values, PyObject* globals, FunctionData& out)
      : values_(values), globals_(globals), out_(out) {}

  void run(PyObject* func) {
    add_def(func);
    for (std::size_t next = 0; next < pending_.size(); ++next) {
      PyObject* names = PyTuple_GET_ITEM(pending_[next], 2);
      for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); ++i)
        add_global(PyTuple_GET_ITEM(names, i));
    }
  }

 private:
  // A function that can share the namespace: same globals, not importable.
  bool same_namespace(PyObject* obj) {
    return PyFunction_Check(obj) && PyFunction_GetGlobals(obj) == globals_ &&
           !importable(obj, attr_text(obj, "__module__"), attr_text(obj, "__qualname__"));
  }

  std::size_t add_def(PyObject* func) {
    auto found = def_index_.find(func);
    if (found != def_index_.end()) return found->second;
    // Reserve the slot first: closures may add more defs while this one is
    // being filled (a nested function that calls itself, for one).
    std::size_t index = out_.defs.size();
    def_index_.emplace(func, index);
    out_.defs.emplace_back();
    PyObject* entry = code_entry(PyFunction_GetCode(func));
    pending_.push_back(entry);
    FunctionDef def;
    def.code = bytes_text(PyTuple_GET_ITEM(entry, 1));
    std::string where = index == 0 ? "" : ".__globals__['" + attr_text(func, "__name__") + "']";
    def.defaults = nested(PyFunction_GetDefaults(func), where + ".__defaults__");
    def.kwdefaults = nested(PyFunction_GetKwDefaults(func), where + ".__kwdefaults__");
    if (PyObject* closure = PyFunction_GetClosure(func)) {
      for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(closure); ++i) {
        PyObject* content = PyCell_GET(PyTuple_GET_ITEM(closure, i));
        py::ref hold = py::ref::borrow(content);
        def.empty_cells.push_back(content == nullptr);
        if (content != nullptr && same_namespace(content)) {
          def.cell_defs.push_back(static_cast<std::int64_t>(add_def(content)));
          def.cells.emplace_back();
          continue;
        }
        def.cell_defs.push_back(-1);
        def.cells.push_back(content == nullptr ? Value()
                                               : nested(content, where + ".__closure__[" +
                                                                     std::to_string(i) + "]"));
      }
    }
    out_.defs[index] = std::move(def);
    return index;
  }

  void add_global(PyObject* name) {
    if (PySet_Contains(seen_.get(), name) == 1) return;
    py::check(PySet_Add(seen_.get(), name));
    PyObject* value = PyDict_GetItemWithError(globals_, name);  // borrowed
    if (value == nullptr) {
      if (PyErr_Occurred()) py::throw_python_error();
      return;  // a builtin, an attribute name, or not defined yet
    }
    py::ref hold = py::ref::borrow(value);
    std::string key = utf8(name);
    if (same_namespace(value)) {
      out_.global_defs.emplace_back(key, add_def(value));
      return;
    }
    out_.globals.emplace_back(key, nested(value, ".__globals__['" + key + "']"));
  }

  Value nested(PyObject* obj, const std::string& where) {
    if (obj == nullptr) return Value();
    try {
      return capture_nested(values_, obj);
    } catch (NotShareable& e) {
      e.prepend(where);
      throw;
    }
  }

  ValueCapture& values_;
  PyObject* globals_;
  FunctionData& out_;
  py::ref seen_ = py::check(PySet_New(nullptr));
  std::unordered_map<PyObject*, std::size_t> def_index_;
  std::vector<PyObject*> pending_;  // code entries, borrowed from the cache
};

py::ref make_function(const FunctionDef& def, PyObject* globals) {
  py::ref code = unmarshal_code(def.code);
  py::ref func = py::check(PyFunction_New(code.get(), globals));
  if (!def.defaults.is_none()) {
    py::check(PyFunction_SetDefaults(func.get(), def.defaults.rebuild().get()));
  }
  if (!def.kwdefaults.is_none()) {
    py::check(PyFunction_SetKwDefaults(func.get(), def.kwdefaults.rebuild().get()));
  }
  return func;
}

// Closures are set once every function of the namespace exists: a cell may
// hold any of them (itself included).
void set_closure(const FunctionDef& def, PyObject* func, const std::vector<py::ref>& funcs) {
  if (def.cells.empty()) return;
  py::ref closure = py::check(PyTuple_New(static_cast<Py_ssize_t>(def.cells.size())));
  for (std::size_t i = 0; i < def.cells.size(); ++i) {
    py::ref content;
    if (def.cell_defs[i] >= 0) {
      content = funcs[static_cast<std::size_t>(def.cell_defs[i])];
    } else if (!def.empty_cells[i]) {
      content = def.cells[i].rebuild();
    }
    PyTuple_SET_ITEM(closure.get(), static_cast<Py_ssize_t>(i),
                     py::check(PyCell_New(content.get())).release());
  }
  py::check(PyFunction_SetClosure(func, closure.get()));
}

}  // namespace

std::string marshal_code(PyObject* code) {
  return bytes_text(PyTuple_GET_ITEM(code_entry(code), 1));
}

py::ref unmarshal_code(const std::string& data) {
  InterpCache& c = cache();
  py::ref key =
      py::check(PyBytes_FromStringAndSize(data.data(), static_cast<Py_ssize_t>(data.size())));
  PyObject* code = PyDict_GetItemWithError(c.code_in, key.get());
  if (code != nullptr) return py::ref::borrow(code);
  if (PyErr_Occurred()) py::throw_python_error();
  py::ref made =
      py::check(PyMarshal_ReadObjectFromString(data.data(), static_cast<Py_ssize_t>(data.size())));
  if (!PyCode_Check(made.get())) {
    PyErr_SetString(PyExc_TypeError, "marshalled data is not a code object");
    py::throw_python_error();
  }
  if (PyDict_GET_SIZE(c.code_in) >= kMaxCachedCode) PyDict_Clear(c.code_in);
  py::check(PyDict_SetItem(c.code_in, key.get(), made.get()));
  return made;
}

py::ref compile_cached(const std::string& source) {
  InterpCache& c = cache();
  // Keyed by str in the same cache as marshalled bytes: a str key never
  // equals a bytes key.
  py::ref key = make_str(source);
  PyObject* code = PyDict_GetItemWithError(c.code_in, key.get());
  if (code != nullptr) return py::ref::borrow(code);
  if (PyErr_Occurred()) py::throw_python_error();
  py::ref made = py::check(Py_CompileString(source.c_str(), "<string>", Py_file_input));
  if (PyDict_GET_SIZE(c.code_in) >= kMaxCachedCode) PyDict_Clear(c.code_in);
  py::check(PyDict_SetItem(c.code_in, key.get(), made.get()));
  return made;
}

std::shared_ptr<const FunctionData> capture_function(PyObject* func, ValueCapture& capture) {
  auto data = std::make_shared<FunctionData>();
  data->module = attr_text(func, "__module__");
  data->qualname = attr_text(func, "__qualname__");
  if (importable(func, data->module, data->qualname)) {
    data->by_reference = true;
    return data;
  }
  FunctionCapture(capture, PyFunction_GetGlobals(func), *data).run(func);
  return data;
}

std::shared_ptr<const FunctionData> capture_builtin(PyObject* func) {
  py::ref module_attr = py::ref::steal(PyObject_GetAttrString(func, "__module__"));
  py::ref qualname_attr = py::ref::steal(PyObject_GetAttrString(func, "__qualname__"));
  if (!module_attr || !qualname_attr || !PyUnicode_Check(module_attr.get()) ||
      !PyUnicode_Check(qualname_attr.get())) {
    PyErr_Clear();
    return nullptr;
  }
  auto data = std::make_shared<FunctionData>();
  data->module = utf8(module_attr.get());
  data->qualname = utf8(qualname_attr.get());
  if (!importable(func, data->module, data->qualname)) return nullptr;
  data->by_reference = true;
  return data;
}

py::ref build_function(const FunctionData& data) {
  if (data.by_reference) {
    py::ref obj = py::check(PyImport_ImportModule(data.module.c_str()));
    std::string_view rest = data.qualname;
    while (!rest.empty()) {
      auto dot = rest.find('.');
      std::string part(rest.substr(0, dot));
      obj = py::check(PyObject_GetAttrString(obj.get(), part.c_str()));
      rest = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
    }
    return obj;
  }
  InterpCache& c = cache();
  py::ref globals = py::check(PyDict_New());
  py::check(PyDict_SetItem(globals.get(), c.str_builtins, c.builtins));
  py::ref name = make_str(data.module.empty() ? "__main__" : data.module);
  py::check(PyDict_SetItem(globals.get(), c.str_name, name.get()));
  for (const auto& [key, value] : data.globals) {
    py::ref obj = value.rebuild();
    py::check(PyDict_SetItemString(globals.get(), key.c_str(), obj.get()));
  }
  std::vector<py::ref> funcs;
  funcs.reserve(data.defs.size());
  for (const FunctionDef& def : data.defs) funcs.push_back(make_function(def, globals.get()));
  for (std::size_t i = 0; i < funcs.size(); ++i) set_closure(data.defs[i], funcs[i].get(), funcs);
  for (const auto& [key, index] : data.global_defs) {
    py::check(PyDict_SetItemString(globals.get(), key.c_str(), funcs[index].get()));
  }
  return funcs.front();
}

}  // namespace subinterp::detail
