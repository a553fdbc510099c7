#include "function.hpp"

#include <cstdint>
#include <cstring>
#include <optional>
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
      clear_error_unless_interruption();
      return false;
    }
    rest = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
  }
  return obj.get() == func;
}

class FunctionCapture {
 public:
  // Without `classes`, classes of `__main__` the functions use travel as
  // any other value (by pickle, which names them by reference).
  FunctionCapture(ValueCapture& values, PyObject* globals, FunctionData& out, bool classes = true)
      : values_(values), globals_(globals), out_(out), classes_(classes) {
    out_.ns_interp = PyInterpreterState_GetID(PyInterpreterState_Get());
    out_.ns_globals = reinterpret_cast<std::uintptr_t>(globals);
  }

  void run(PyObject* func) {
    add_def(func);
    add_pending_globals();
  }

  void run_class(PyObject* cls) {
    out_.root_class = static_cast<std::int64_t>(add_class(cls, ""));
    add_pending_globals();
  }

  void run_cached(PyObject* wrapper) {
    out_.root_cached = static_cast<std::int64_t>(add_cached(wrapper));
    add_pending_globals();
  }

 private:
  void add_pending_globals() {
    for (std::size_t next = 0; next < pending_.size(); ++next) {
      PyObject* names = PyTuple_GET_ITEM(pending_[next], 2);
      for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); ++i)
        add_global(PyTuple_GET_ITEM(names, i));
    }
  }
  // A function that can share the namespace: same globals, not importable.
  bool same_namespace(PyObject* obj) {
    return PyFunction_Check(obj) && PyFunction_GetGlobals(obj) == globals_ &&
           !importable(obj, attr_text(obj, "__module__"), attr_text(obj, "__qualname__"));
  }

  // A class of this namespace that travels by value with it.
  bool own_class(PyObject* obj) {
    if (!classes_ || !class_by_value(obj)) return false;
    PyObject* name = PyDict_GetItemString(globals_, "__name__");  // borrowed
    return name != nullptr && PyUnicode_Check(name) &&
           PyUnicode_CompareWithASCIIString(name, "__main__") == 0;
  }

  // A function of this namespace inside a class's dict (a method, or the
  // function a staticmethod or classmethod wraps), or -1.
  std::int64_t method_def(PyObject* obj) {
    if (obj == nullptr || obj == Py_None || !same_namespace(obj)) return -1;
    return static_cast<std::int64_t>(add_def(obj));
  }

  // An lru_cache wrapper of a function of this namespace (a cached function
  // that calls itself through its global name, say).
  bool cached_here(PyObject* obj) {
    if (!is_cached_function(obj)) return false;
    py::ref wrapped = py::check(PyObject_GetAttrString(obj, "__wrapped__"));
    return same_namespace(wrapped.get()) &&
           !importable(obj, attr_text(obj, "__module__"), attr_text(obj, "__qualname__"));
  }

  std::size_t add_cached(PyObject* wrapper) {
    auto found = cached_index_.find(wrapper);
    if (found != cached_index_.end()) return found->second;
    py::ref wrapped = py::check(PyObject_GetAttrString(wrapper, "__wrapped__"));
    if (!PyFunction_Check(wrapped.get())) {
      throw NotShareable(type_qualname(wrapper), "it caches a callable that is not a function");
    }
    py::ref params = py::check(PyObject_CallMethod(wrapper, "cache_parameters", nullptr));
    PyObject* maxsize = PyDict_GetItemString(params.get(), "maxsize");  // borrowed
    PyObject* typed = PyDict_GetItemString(params.get(), "typed");      // borrowed
    if (maxsize == nullptr || typed == nullptr) {
      throw NotShareable(type_qualname(wrapper), "its cache_parameters() are not known");
    }
    std::size_t index = out_.cached.size();
    cached_index_.emplace(wrapper, index);
    out_.cached.push_back({0, nested(maxsize, ".cache_parameters()"), PyObject_IsTrue(typed) == 1});
    out_.cached[index].def = add_def(wrapped.get());
    return index;
  }

  std::size_t add_class(PyObject* cls, const std::string& where) {
    auto found = class_index_.find(cls);
    if (found != class_index_.end()) return found->second;
    ClassDef def;
    def.name = attr_text(cls, "__name__");
    def.qualname = attr_text(cls, "__qualname__");
    def.module = attr_text(cls, "__module__");
    std::string here = where.empty() ? "" : where;
    // Bases first, so that they are made first in the target.
    PyObject* bases = reinterpret_cast<PyTypeObject*>(cls)->tp_bases;  // a tuple
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(bases); ++i) {
      PyObject* base = PyTuple_GET_ITEM(bases, i);
      if (own_class(base)) {
        def.base_classes.push_back(static_cast<std::int64_t>(
            add_class(base, here + ".__bases__[" + std::to_string(i) + "]")));
        def.bases.emplace_back();
      } else {
        def.base_classes.push_back(-1);
        def.bases.push_back(nested(base, here + ".__bases__[" + std::to_string(i) + "]"));
      }
    }
    std::size_t index = out_.classes.size();
    class_index_.emplace(cls, index);
    out_.classes.emplace_back();
    def.origin = std::to_string(PyInterpreterState_GetID(PyInterpreterState_Get())) + ":" +
                 std::to_string(reinterpret_cast<std::uintptr_t>(cls)) + ":" + def.qualname;
    py::ref dict = py::check(PyObject_GetAttrString(cls, "__dict__"));
    if (PyMapping_HasKeyString(dict.get(), "__dataclass_params__") == 1 &&
        PyMapping_HasKeyString(dict.get(), "__dataclass_fields__") == 1) {
      add_dataclass(dict.get(), def, here);
    }
    bool is_enum = add_metaclass(cls, dict.get(), def, here);
    py::ref items = py::check(PyMapping_Items(dict.get()));
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items.get()); ++i) {
      PyObject* item = PyList_GET_ITEM(items.get(), i);
      PyObject* key = PyTuple_GET_ITEM(item, 0);
      PyObject* value = PyTuple_GET_ITEM(item, 1);
      if (!PyUnicode_Check(key)) continue;
      std::string name = utf8(key);
      if (name == "__dict__" || name == "__weakref__" || name == "__module__" ||
          name == "__qualname__") {
        continue;
      }
      // Slots: type() makes their descriptors again from __slots__.
      if (Py_IS_TYPE(value, &PyMemberDescr_Type) || Py_IS_TYPE(value, &PyGetSetDescr_Type)) {
        continue;
      }
      std::string at = here + ".__dict__['" + name + "']";
      if (def.dataclass && made_by_dataclass(name, value)) continue;
      if (!def.metaclass.is_none()) {
        if (made_by_metaclass(cls, key, name, value, is_enum)) continue;
        py::ref abstract = py::ref::steal(PyObject_GetAttrString(value, "__isabstractmethod__"));
        if (!abstract) PyErr_Clear();
        if (abstract && PyObject_IsTrue(abstract.get()) == 1) def.abstract.push_back(name);
        if (is_enum && PyObject_TypeCheck(value, reinterpret_cast<PyTypeObject*>(cls))) {
          py::ref member_value = py::check(PyObject_GetAttrString(value, "_value_"));
          def.attrs.emplace_back(name, nested(member_value.get(), at + "._value_"));
          continue;
        }
      }
      if (std::int64_t d = method_def(value); d >= 0) {
        def.methods.push_back({name, ClassDef::Wrap::Plain, static_cast<std::size_t>(d)});
        continue;
      }
      bool is_static = Py_IS_TYPE(value, &PyStaticMethod_Type);
      if (is_static || Py_IS_TYPE(value, &PyClassMethod_Type)) {
        py::ref inner = py::check(PyObject_GetAttrString(value, "__func__"));
        ClassDef::Wrap wrap = is_static ? ClassDef::Wrap::Static : ClassDef::Wrap::Class;
        if (std::int64_t d = method_def(inner.get()); d >= 0) {
          def.methods.push_back({name, wrap, static_cast<std::size_t>(d)});
          continue;
        }
        if (PyFunction_Check(inner.get()) || PyCFunction_Check(inner.get())) {
          def.wrapped.push_back({name, wrap, nested(inner.get(), at + ".__func__")});
          continue;
        }
      }
      if (Py_IS_TYPE(value, &PyProperty_Type)) {
        py::ref fget = py::check(PyObject_GetAttrString(value, "fget"));
        py::ref fset = py::check(PyObject_GetAttrString(value, "fset"));
        py::ref fdel = py::check(PyObject_GetAttrString(value, "fdel"));
        py::ref doc = py::check(PyObject_GetAttrString(value, "__doc__"));
        auto part = [&](PyObject* f) -> std::optional<std::int64_t> {
          if (f == Py_None) return -1;
          std::int64_t d = method_def(f);
          if (d < 0) return std::nullopt;
          return d;
        };
        auto g = part(fget.get()), st = part(fset.get()), dl = part(fdel.get());
        if (g && st && dl) {
          def.properties.push_back({name, *g, *st, *dl, nested(doc.get(), at + ".__doc__")});
          continue;
        }
      }
      if (own_class(value)) {
        def.nested_classes.emplace_back(name, add_class(value, at));
        continue;
      }
      def.attrs.emplace_back(name, nested(value, at));
    }
    out_.classes[index] = std::move(def);
    return index;
  }

  // The metaclass of `cls` when it is not `type` (and, for an enum, the
  // keywords its metaclass takes). True for an enum.
  bool add_metaclass(PyObject* cls, PyObject* dict, ClassDef& def, const std::string& where) {
    PyObject* meta = reinterpret_cast<PyObject*>(Py_TYPE(cls));
    if (meta == reinterpret_cast<PyObject*>(&PyType_Type)) return false;
    def.metaclass = nested(meta, where + ".__class__");
    py::ref enum_module = py::check(PyImport_ImportModule("enum"));
    py::ref enum_type = py::check(PyObject_GetAttrString(enum_module.get(), "EnumType"));
    int is_enum = PyObject_IsSubclass(meta, enum_type.get());
    if (is_enum < 0) py::throw_python_error();
    if (is_enum == 0) return false;
    if (PyMapping_HasKeyString(dict, "__new_member__") == 1) {
      throw ClassRefused(type_qualname(cls),
                         "the enum " + def.module + "." + def.qualname +
                             " has its own __new__, so it cannot be made again from its "
                             "members' values; define it in a module");
    }
    if (PyMapping_HasKeyString(dict, "_boundary_") == 1) {
      py::ref boundary = py::check(PyMapping_GetItemString(dict, "_boundary_"));
      if (boundary.get() != Py_None) {
        py::ref keywords = py::check(PyDict_New());
        py::check(PyDict_SetItemString(keywords.get(), "boundary", boundary.get()));
        def.keywords = nested(keywords.get(), where + "._boundary_");
      }
    }
    return true;
  }

  // True for an attribute the metaclass makes itself when it makes the
  // class: ABCs' _abc_impl, an enum's member maps and masks (its
  // _sunder_ names other than those users define), and what a metaclass
  // copies from a base (enum's __new__).
  static bool made_by_metaclass(PyObject* cls, PyObject* key, const std::string& name,
                                PyObject* value, bool is_enum) {
    if (name == "_abc_impl" || name == "__abstractmethods__") return true;
    if (is_enum && name.size() > 2 && name.front() == '_' && name.back() == '_' &&
        name[1] != '_' && name != "_generate_next_value_" && name != "_missing_" &&
        name != "_numeric_repr_") {
      return true;
    }
    PyObject* mro = reinterpret_cast<PyTypeObject*>(cls)->tp_mro;  // a tuple
    for (Py_ssize_t i = 1; i < PyTuple_GET_SIZE(mro); ++i) {
      py::ref base_dict = py::ref::steal(
          PyType_GetDict(reinterpret_cast<PyTypeObject*>(PyTuple_GET_ITEM(mro, i))));
      PyObject* inherited = PyDict_GetItemWithError(base_dict.get(), key);  // borrowed
      if (inherited != nullptr) return unwrapped(inherited) == unwrapped(value);
      if (PyErr_Occurred()) py::throw_python_error();
    }
    return false;
  }

  // The function a staticmethod or classmethod holds, else `obj` (borrowed).
  static PyObject* unwrapped(PyObject* obj) {
    if (!Py_IS_TYPE(obj, &PyStaticMethod_Type) && !Py_IS_TYPE(obj, &PyClassMethod_Type)) {
      return obj;
    }
    py::ref func = py::check(PyObject_GetAttrString(obj, "__func__"));
    return func.get();  // still held by the wrapper
  }

  // The parameters and fields of a dataclass (`dict` is its __dict__).
  void add_dataclass(PyObject* dict, ClassDef& def, const std::string& where) {
    py::ref dataclasses = py::check(PyImport_ImportModule("dataclasses"));
    py::ref missing = py::check(PyObject_GetAttrString(dataclasses.get(), "MISSING"));
    py::ref params = py::check(PyMapping_GetItemString(dict, "__dataclass_params__"));
    py::ref fields = py::check(PyMapping_GetItemString(dict, "__dataclass_fields__"));
    static const char* const kParams[] = {"init",     "repr",        "eq",    "order",
                                          "unsafe_hash", "frozen",   "match_args",
                                          "kw_only",  "slots",       "weakref_slot"};
    py::ref param_dict = py::check(PyDict_New());
    for (const char* name : kParams) {
      py::ref value = py::ref::steal(PyObject_GetAttrString(params.get(), name));
      if (!value) {
        PyErr_Clear();  // not in this Python version
        continue;
      }
      py::check(PyDict_SetItemString(param_dict.get(), name, value.get()));
    }
    def.dataclass_params = nested(param_dict.get(), where + ".__dataclass_params__");
    static const char* const kFieldArgs[] = {"default", "default_factory", "init",   "repr",
                                             "hash",    "compare",         "kw_only"};
    py::ref items = py::check(PyMapping_Items(fields.get()));
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items.get()); ++i) {
      PyObject* name = PyTuple_GET_ITEM(PyList_GET_ITEM(items.get(), i), 0);
      PyObject* field = PyTuple_GET_ITEM(PyList_GET_ITEM(items.get(), i), 1);
      py::ref kind = py::check(PyObject_GetAttrString(field, "_field_type"));
      py::ref kind_name = py::check(PyObject_GetAttrString(kind.get(), "name"));
      if (PyUnicode_CompareWithASCIIString(kind_name.get(), "_FIELD_CLASSVAR") == 0) continue;
      py::ref args = py::check(PyDict_New());
      for (const char* arg : kFieldArgs) {
        py::ref value = py::check(PyObject_GetAttrString(field, arg));
        if (value.get() == missing.get()) continue;
        py::check(PyDict_SetItemString(args.get(), arg, value.get()));
      }
      py::ref metadata = py::check(PyObject_GetAttrString(field, "metadata"));
      if (PyObject_Length(metadata.get()) > 0) {
        py::ref copy = py::check(PyDict_New());
        py::check(PyDict_Update(copy.get(), metadata.get()));
        py::check(PyDict_SetItemString(args.get(), "metadata", copy.get()));
      }
      std::string key = utf8(name);
      def.dataclass_fields.emplace_back(
          key, nested(args.get(), where + ".__dataclass_fields__['" + key + "']"));
    }
    def.dataclass = true;
  }

  // True for what dataclasses.dataclass() added to a class dict (it adds
  // them again in the target); methods written in the class are kept.
  bool made_by_dataclass(const std::string& name, PyObject* value) {
    static const char* const kMade[] = {
        "__init__",     "__repr__",     "__eq__",     "__lt__",         "__le__",
        "__gt__",       "__ge__",       "__setattr__", "__delattr__",   "__hash__",
        "__match_args__", "__replace__", "__dataclass_params__", "__dataclass_fields__",
        "__getstate__", "__setstate__", "__slots__"};
    bool listed = false;
    for (const char* made : kMade) listed = listed || name == made;
    if (!listed) return false;
    if (!PyFunction_Check(value) || !same_namespace(value)) return true;
    py::ref code = py::ref::borrow(PyFunction_GetCode(value));
    py::ref filename = py::check(PyObject_GetAttrString(code.get(), "co_filename"));
    return PyUnicode_CompareWithASCIIString(filename.get(), "<string>") == 0;
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
          def.cell_classes.push_back(-1);
          def.cells.emplace_back();
          continue;
        }
        def.cell_defs.push_back(-1);
        if (content != nullptr && own_class(content)) {
          // The __class__ cell of a method that uses super(), for one.
          def.cell_classes.push_back(static_cast<std::int64_t>(add_class(content, "")));
          def.cells.emplace_back();
          continue;
        }
        def.cell_classes.push_back(-1);
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
    if (cached_here(value)) {
      out_.global_cached.emplace_back(key, add_cached(value));
      return;
    }
    if (own_class(value)) {
      out_.global_classes.emplace_back(key, add_class(value, ".__globals__['" + key + "']"));
      return;
    }
    out_.globals.emplace_back(key, nested(value, ".__globals__['" + key + "']"));
    out_.global_ids.push_back(reinterpret_cast<std::uintptr_t>(value));
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
  std::unordered_map<PyObject*, std::size_t> class_index_;
  std::unordered_map<PyObject*, std::size_t> cached_index_;
  bool classes_;
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
// Cells that hold a class (a method's __class__ cell) stay empty until
// fill_class_cells: the functions run while classes are made (a metaclass's
// __new__, __init_subclass__, __set_name__), before every class exists.
void set_closure(const FunctionDef& def, PyObject* func, const std::vector<py::ref>& funcs) {
  if (def.cells.empty()) return;
  py::ref closure = py::check(PyTuple_New(static_cast<Py_ssize_t>(def.cells.size())));
  for (std::size_t i = 0; i < def.cells.size(); ++i) {
    py::ref content;
    if (def.cell_defs[i] >= 0) {
      content = funcs[static_cast<std::size_t>(def.cell_defs[i])];
    } else if (i < def.cell_classes.size() && def.cell_classes[i] >= 0) {
      // Filled by fill_class_cells once the class is made.
    } else if (!def.empty_cells[i]) {
      content = def.cells[i].rebuild();
    }
    PyTuple_SET_ITEM(closure.get(), static_cast<Py_ssize_t>(i),
                     py::check(PyCell_New(content.get())).release());
  }
  py::check(PyFunction_SetClosure(func, closure.get()));
}

// Puts class `index`, just made, in the cells that hold it.
void fill_class_cells(const FunctionData& data, const std::vector<py::ref>& funcs,
                      std::size_t index, PyObject* cls) {
  for (std::size_t f = 0; f < data.defs.size(); ++f) {
    const std::vector<std::int64_t>& cell_classes = data.defs[f].cell_classes;
    for (std::size_t i = 0; i < cell_classes.size(); ++i) {
      if (cell_classes[i] != static_cast<std::int64_t>(index)) continue;
      PyObject* closure = PyFunction_GetClosure(funcs[f].get());  // borrowed
      if (PyCell_Set(PyTuple_GET_ITEM(closure, static_cast<Py_ssize_t>(i)), cls) < 0) {
        py::throw_python_error();
      }
    }
  }
}

// metaclass(name, bases, namespace, **keywords), the namespace made by
// metaclass.__prepare__ and filled from `ns` in order (enum members keep
// theirs).
py::ref make_with_metaclass(const ClassDef& def, PyObject* name, PyObject* bases, PyObject* ns) {
  for (const std::string& abstract : def.abstract) {
    PyObject* obj = PyDict_GetItemString(ns, abstract.c_str());  // borrowed
    if (obj == nullptr) continue;
    py::ref target = py::ref::borrow(obj);
    if (Py_IS_TYPE(obj, &PyStaticMethod_Type) || Py_IS_TYPE(obj, &PyClassMethod_Type)) {
      target = py::check(PyObject_GetAttrString(obj, "__func__"));
    } else if (Py_IS_TYPE(obj, &PyProperty_Type)) {
      target = py::check(PyObject_GetAttrString(obj, "fget"));
    }
    if (PyFunction_Check(target.get())) {
      if (PyObject_SetAttrString(target.get(), "__isabstractmethod__", Py_True) < 0) {
        py::throw_python_error();
      }
    }
  }
  py::ref meta = def.metaclass.rebuild();
  py::ref keywords = def.keywords.is_none() ? py::ref() : def.keywords.rebuild();
  py::ref prepare = py::check(PyObject_GetAttrString(meta.get(), "__prepare__"));
  py::ref args = py::check(PyTuple_Pack(2, name, bases));
  py::ref prepared = py::check(PyObject_Call(prepare.get(), args.get(), keywords.get()));
  PyObject* key = nullptr;
  PyObject* value = nullptr;
  Py_ssize_t pos = 0;
  while (PyDict_Next(ns, &pos, &key, &value)) {
    py::check(PyObject_SetItem(prepared.get(), key, value));
  }
  py::ref call_args = py::check(PyTuple_Pack(3, name, bases, prepared.get()));
  return py::check(PyObject_Call(meta.get(), call_args.get(), keywords.get()));
}

// The lru_cache wrappers of `data`, made around its functions.
std::vector<py::ref> make_cached(const FunctionData& data, const std::vector<py::ref>& funcs) {
  std::vector<py::ref> made;
  if (data.cached.empty()) return made;
  py::ref functools = py::check(PyImport_ImportModule("functools"));
  py::ref lru_cache = py::check(PyObject_GetAttrString(functools.get(), "lru_cache"));
  for (const FunctionData::Cached& c : data.cached) {
    py::ref maxsize = c.maxsize.rebuild();
    py::ref decorator = py::check(PyObject_CallFunctionObjArgs(
        lru_cache.get(), maxsize.get(), c.typed ? Py_True : Py_False, nullptr));
    made.push_back(py::check(PyObject_CallOneArg(decorator.get(), funcs[c.def].get())));
  }
  return made;
}

// The class `def` describes, made in the attached interpreter with the
// functions already made for its methods. A class made earlier in this
// interpreter from the same original is reused: instances then keep one
// class across calls, and pickle finds it. A top-level class of `__main__`
// is also bound there under its name (unless that name holds something
// else), so that pickled instances of it are rebuilt here as instances.
py::ref make_class(const ClassDef& def, const std::vector<py::ref>& funcs,
                   const std::vector<py::ref>& classes) {
  InterpCache& c = cache();
  py::ref origin = make_str(def.origin);
  if (PyObject* known = PyDict_GetItemWithError(c.classes_in, origin.get())) {
    return py::ref::borrow(known);
  }
  if (PyErr_Occurred()) py::throw_python_error();
  py::ref bases = py::check(PyTuple_New(static_cast<Py_ssize_t>(def.bases.size())));
  for (std::size_t i = 0; i < def.bases.size(); ++i) {
    py::ref base = def.base_classes[i] >= 0 ? classes[static_cast<std::size_t>(def.base_classes[i])]
                                            : def.bases[i].rebuild();
    PyTuple_SET_ITEM(bases.get(), static_cast<Py_ssize_t>(i), base.release());
  }
  py::ref ns = py::check(PyDict_New());
  py::ref module = make_str(def.module);
  py::ref qualname = make_str(def.qualname);
  py::check(PyDict_SetItemString(ns.get(), "__module__", module.get()));
  py::check(PyDict_SetItemString(ns.get(), "__qualname__", qualname.get()));
  for (const auto& [name, value] : def.attrs) {
    py::check(PyDict_SetItemString(ns.get(), name.c_str(), value.rebuild().get()));
  }
  for (const auto& [name, index] : def.nested_classes) {
    py::check(PyDict_SetItemString(ns.get(), name.c_str(), classes[index].get()));
  }
  for (const ClassDef::Method& m : def.methods) {
    py::ref func = funcs[m.def];
    if (m.wrap == ClassDef::Wrap::Static) func = py::check(PyStaticMethod_New(func.get()));
    if (m.wrap == ClassDef::Wrap::Class) func = py::check(PyClassMethod_New(func.get()));
    py::check(PyDict_SetItemString(ns.get(), m.name.c_str(), func.get()));
  }
  for (const ClassDef::Wrapped& w : def.wrapped) {
    py::ref func = w.func.rebuild();
    func = py::check(w.wrap == ClassDef::Wrap::Static ? PyStaticMethod_New(func.get())
                                                      : PyClassMethod_New(func.get()));
    py::check(PyDict_SetItemString(ns.get(), w.name.c_str(), func.get()));
  }
  for (const ClassDef::Property& p : def.properties) {
    auto part = [&](std::int64_t index) {
      return index >= 0 ? funcs[static_cast<std::size_t>(index)] : py::ref::borrow(Py_None);
    };
    py::ref doc = p.doc.rebuild();
    py::ref prop = py::check(PyObject_CallFunctionObjArgs(
        reinterpret_cast<PyObject*>(&PyProperty_Type), part(p.fget).get(), part(p.fset).get(),
        part(p.fdel).get(), doc.get(), nullptr));
    py::check(PyDict_SetItemString(ns.get(), p.name.c_str(), prop.get()));
  }
  py::ref dataclasses;
  if (def.dataclass) {
    dataclasses = py::check(PyImport_ImportModule("dataclasses"));
    py::ref field = py::check(PyObject_GetAttrString(dataclasses.get(), "field"));
    py::ref no_args = py::check(PyTuple_New(0));
    for (const auto& [field_name, args] : def.dataclass_fields) {
      py::ref kwargs = args.rebuild();
      py::ref made = py::check(PyObject_Call(field.get(), no_args.get(), kwargs.get()));
      py::check(PyDict_SetItemString(ns.get(), field_name.c_str(), made.get()));
    }
  }
  py::ref name = make_str(def.name);
  py::ref cls = def.metaclass.is_none()
                    ? py::check(PyObject_CallFunctionObjArgs(
                          reinterpret_cast<PyObject*>(&PyType_Type), name.get(), bases.get(),
                          ns.get(), nullptr))
                    : make_with_metaclass(def, name.get(), bases.get(), ns.get());
  if (def.dataclass) {
    py::ref decorate = py::check(PyObject_GetAttrString(dataclasses.get(), "dataclass"));
    py::ref no_args = py::check(PyTuple_New(0));
    py::ref params = def.dataclass_params.rebuild();
    py::ref decorator = py::check(PyObject_Call(decorate.get(), no_args.get(), params.get()));
    cls = py::check(PyObject_CallOneArg(decorator.get(), cls.get()));
  }
  if (PyDict_GET_SIZE(c.classes_in) >= kMaxCachedCode) PyDict_Clear(c.classes_in);
  py::check(PyDict_SetItem(c.classes_in, origin.get(), cls.get()));
  if (def.module == "__main__" && def.qualname == def.name) {
    PyObject* main = PyImport_AddModule("__main__");  // borrowed
    if (main == nullptr) py::throw_python_error();
    py::ref current = py::ref::steal(PyObject_GetAttr(main, name.get()));
    if (!current) PyErr_Clear();
    bool ours = false;
    if (current) {
      // Bound by an earlier rebuild of a class of that name?
      PyObject* key = nullptr;
      PyObject* value = nullptr;
      Py_ssize_t pos = 0;
      while (!ours && PyDict_Next(c.classes_in, &pos, &key, &value)) ours = value == current.get();
    }
    if (!current || ours) py::check(PyObject_SetAttr(main, name.get(), cls.get()));
  }
  return cls;
}

}  // namespace

// The namespace of a class's methods: that of `__main__` for a class
// defined there, the one its methods were made with for a class rebuilt by
// value (which may travel on, say as the class of a result).
PyObject* class_globals(PyObject* cls) {
  PyObject* dict = reinterpret_cast<PyTypeObject*>(cls)->tp_dict;
  PyObject* key = nullptr;
  PyObject* value = nullptr;
  Py_ssize_t pos = 0;
  while (PyDict_Next(dict, &pos, &key, &value)) {
    PyObject* func = value;
    if (Py_IS_TYPE(value, &PyStaticMethod_Type) || Py_IS_TYPE(value, &PyClassMethod_Type)) {
      func = PyObject_GetAttrString(value, "__func__");
      if (func == nullptr) {
        PyErr_Clear();
        continue;
      }
      Py_DECREF(func);  // still held by the wrapper
    }
    if (PyFunction_Check(func)) return PyFunction_GetGlobals(func);
  }
  PyObject* main = PyImport_AddModule("__main__");  // borrowed
  if (main == nullptr) py::throw_python_error();
  return PyModule_GetDict(main);
}

bool class_by_value(PyObject* obj) {
  if (!PyType_Check(obj)) return false;
  if (!PyType_HasFeature(reinterpret_cast<PyTypeObject*>(obj), Py_TPFLAGS_HEAPTYPE)) return false;
  PyObject* module = PyDict_GetItemString(reinterpret_cast<PyTypeObject*>(obj)->tp_dict,
                                          "__module__");  // borrowed
  return module != nullptr && PyUnicode_Check(module) &&
         PyUnicode_CompareWithASCIIString(module, "__main__") == 0;
}

std::shared_ptr<const FunctionData> capture_class(PyObject* cls, ValueCapture& capture) {
  auto data = std::make_shared<FunctionData>();
  data->module = "__main__";
  data->qualname = attr_text(cls, "__qualname__");
  FunctionCapture(capture, class_globals(cls), *data).run_class(cls);
  return data;
}

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
  // Py_CompileString reads a C string: text after a NUL would be dropped
  // silently. CPython's compile() and exec() refuse such source.
  if (source.find('\0') != std::string::npos) {
    PyErr_SetString(PyExc_SyntaxError, "source code string cannot contain null bytes");
    py::throw_python_error();
  }
  py::ref made = py::check(Py_CompileString(source.c_str(), "<string>", Py_file_input));
  if (PyDict_GET_SIZE(c.code_in) >= kMaxCachedCode) PyDict_Clear(c.code_in);
  py::check(PyDict_SetItem(c.code_in, key.get(), made.get()));
  return made;
}

namespace {

// FunctionData naming `obj` (a function, or an lru_cache wrapper) by module
// and qualified name; by_reference when it is importable there.
std::shared_ptr<FunctionData> named(PyObject* obj) {
  auto data = std::make_shared<FunctionData>();
  data->module = attr_text(obj, "__module__");
  data->qualname = attr_text(obj, "__qualname__");
  data->by_reference = importable(obj, data->module, data->qualname);
  return data;
}

// Fills `data` by value: run(capture) with a FunctionCapture over `globals`.
// When a class the functions use cannot travel by value (one of its
// attributes cannot), the value is made again as before classes travelled,
// naming such classes by reference, which works where the target defines
// them itself.
template <class Run>
std::shared_ptr<const FunctionData> by_value(std::shared_ptr<FunctionData> data,
                                             ValueCapture& capture, PyObject* globals, Run run) {
  try {
    FunctionCapture values(capture, globals, *data);
    run(values);
  } catch (ClassRefused&) {
    throw;
  } catch (NotShareable&) {
    auto plain = std::make_shared<FunctionData>();
    plain->module = data->module;
    plain->qualname = data->qualname;
    FunctionCapture values(capture, globals, *plain, /*classes=*/false);
    run(values);
    return plain;
  }
  return data;
}

}  // namespace

std::shared_ptr<const FunctionData> capture_function(PyObject* func, ValueCapture& capture) {
  std::shared_ptr<FunctionData> data = named(func);
  if (data->by_reference) return data;
  return by_value(std::move(data), capture, PyFunction_GetGlobals(func),
                  [&](FunctionCapture& values) { values.run(func); });
}

bool is_cached_function(PyObject* obj) {
  return std::strcmp(Py_TYPE(obj)->tp_name, "functools._lru_cache_wrapper") == 0;
}

std::shared_ptr<const FunctionData> capture_cached(PyObject* wrapper, ValueCapture& capture) {
  std::shared_ptr<FunctionData> data = named(wrapper);
  if (data->by_reference) return data;
  py::ref wrapped = py::check(PyObject_GetAttrString(wrapper, "__wrapped__"));
  if (!PyFunction_Check(wrapped.get())) {
    throw NotShareable(type_qualname(wrapper), "it caches a callable that is not a function");
  }
  return by_value(std::move(data), capture, PyFunction_GetGlobals(wrapped.get()),
                  [&](FunctionCapture& values) { values.run_cached(wrapper); });
}

std::shared_ptr<const FunctionData> capture_builtin(PyObject* func) {
  py::ref module_attr = py::ref::steal(PyObject_GetAttrString(func, "__module__"));
  py::ref qualname_attr = py::ref::steal(PyObject_GetAttrString(func, "__qualname__"));
  if (!module_attr || !qualname_attr || !PyUnicode_Check(module_attr.get()) ||
      !PyUnicode_Check(qualname_attr.get())) {
    clear_error_unless_interruption();
    return nullptr;
  }
  auto data = std::make_shared<FunctionData>();
  data->module = utf8(module_attr.get());
  data->qualname = utf8(qualname_attr.get());
  if (!importable(func, data->module, data->qualname)) return nullptr;
  data->by_reference = true;
  return data;
}

// The namespace that functions of data's source module share in the
// attached interpreter, and its {name: sender's object id} of the values
// sent into it. Made on first use with __builtins__ and __name__.
std::pair<py::ref, py::ref> namespace_for(const FunctionData& data) {
  InterpCache& c = cache();
  NamespaceKey key{data.ns_interp, data.ns_globals, data.module};
  if (data.ns_interp >= 0) {
    auto found = c.namespaces.find(key);
    if (found != c.namespaces.end()) {
      return {py::ref::borrow(PyTuple_GET_ITEM(found->second, 0)),
              py::ref::borrow(PyTuple_GET_ITEM(found->second, 1))};
    }
  }
  py::ref globals = py::check(PyDict_New());
  py::check(PyDict_SetItem(globals.get(), c.str_builtins, c.builtins));
  py::ref name = make_str(data.module.empty() ? "__main__" : data.module);
  py::check(PyDict_SetItem(globals.get(), c.str_name, name.get()));
  py::ref sent = py::check(PyDict_New());
  if (data.ns_interp >= 0) {
    if (c.namespaces.size() >= static_cast<std::size_t>(kMaxCachedCode)) clear_namespaces(c);
    py::ref entry = py::check(PyTuple_Pack(2, globals.get(), sent.get()));
    c.namespaces.emplace(std::move(key), entry.release());
  }
  return {std::move(globals), std::move(sent)};
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
  auto [globals, sent] = namespace_for(data);
  const bool tracked = data.global_ids.size() == data.globals.size();
  for (std::size_t i = 0; i < data.globals.size(); ++i) {
    const auto& [key, value] = data.globals[i];
    py::ref name = make_str(key);
    py::ref id;
    if (tracked) {
      id = py::check(PyLong_FromUnsignedLongLong(data.global_ids[i]));
      PyObject* last = PyDict_GetItemWithError(sent.get(), name.get());  // borrowed
      if (last == nullptr && PyErr_Occurred()) py::throw_python_error();
      if (last != nullptr && py::check(PyObject_RichCompareBool(last, id.get(), Py_EQ)) == 1 &&
          py::check(PyDict_Contains(globals.get(), name.get())) == 1) {
        continue;  // the sender's value was sent before: the target's stays
      }
    }
    py::ref obj = value.rebuild();
    py::check(PyDict_SetItem(globals.get(), name.get(), obj.get()));
    if (tracked) py::check(PyDict_SetItem(sent.get(), name.get(), id.get()));
  }
  std::vector<py::ref> funcs;
  funcs.reserve(data.defs.size());
  for (const FunctionDef& def : data.defs) funcs.push_back(make_function(def, globals.get()));
  // Closures and functions' globals before the classes, whose making may
  // run them; classes after the functions their methods are.
  for (std::size_t i = 0; i < funcs.size(); ++i) set_closure(data.defs[i], funcs[i].get(), funcs);
  for (const auto& [key, index] : data.global_defs) {
    py::check(PyDict_SetItemString(globals.get(), key.c_str(), funcs[index].get()));
  }
  std::vector<py::ref> classes;
  classes.reserve(data.classes.size());
  for (const ClassDef& def : data.classes) {
    classes.push_back(make_class(def, funcs, classes));
    fill_class_cells(data, funcs, classes.size() - 1, classes.back().get());
  }
  for (const auto& [key, index] : data.global_classes) {
    py::check(PyDict_SetItemString(globals.get(), key.c_str(), classes[index].get()));
  }
  std::vector<py::ref> cached = make_cached(data, funcs);
  for (const auto& [key, index] : data.global_cached) {
    py::check(PyDict_SetItemString(globals.get(), key.c_str(), cached[index].get()));
  }
  if (data.root_class >= 0) return classes[static_cast<std::size_t>(data.root_class)];
  if (data.root_cached >= 0) return cached[static_cast<std::size_t>(data.root_cached)];
  return funcs.front();
}

}  // namespace subinterp::detail
