#include "subinterp/value.hpp"

#include <algorithm>
#include <atomic>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <unordered_map>
#include <utility>

#include <marshal.h>

#include "function.hpp"
#include "internal.hpp"
#include "runtime.hpp"
#include "subinterp/interpreter.hpp"
#include "subinterp/channel.hpp"
#include "subinterp/error.hpp"
#include "subinterp/queue.hpp"
#include "subinterp/shared_buffer.hpp"

namespace subinterp {
namespace {

// Containers nest at most this deep before the whole value is pickled
// instead (pickle also handles reference cycles).
constexpr std::size_t kMaxDepth = 200;

struct PickleWhole {};  // thrown on a cycle or too deep nesting

std::atomic<bool (*)(PyObject*, Value&)> g_capture_handle{nullptr};
std::atomic<PyObject* (*)(const Value&)> g_rebuild_handle{nullptr};

// Imports the extension, which installs the hooks (it shares this core, one
// per process). Never throws; false when unavailable.
bool load_extension_hooks() {
  PyObject* pending = PyErr_GetRaisedException();
  PyObject* module = PyImport_ImportModule("subinterp._subinterp");
  Py_XDECREF(module);
  PyErr_Clear();
  PyErr_SetRaisedException(pending);
  return g_rebuild_handle.load(std::memory_order_acquire) != nullptr;
}

std::string path_key(PyObject* key) {
  if (PyUnicode_CheckExact(key) || PyLong_CheckExact(key)) {
    py::ref r = py::ref::steal(PyObject_Repr(key));
    if (r) {
      const char* text = PyUnicode_AsUTF8(r.get());
      if (text != nullptr && std::string_view(text).size() <= 60)
        return "[" + std::string(text) + "]";
    }
    PyErr_Clear();
  }
  return "[<" + detail::type_qualname(key) + " key>]";
}

std::string_view as_view(PyObject* bytes) {
  return std::string_view(PyBytes_AS_STRING(bytes),
                          static_cast<std::size_t>(PyBytes_GET_SIZE(bytes)));
}

std::string as_bytes(PyObject* bytes) { return std::string(as_view(bytes)); }

}  // namespace

// Walks a Python object and builds its Value.
class ValueCapture {
 public:
  Value top(PyObject* obj) {
    try {
      return walk(obj);
    } catch (PickleWhole&) {
      stack_.clear();
      return pickled(obj);
    }
  }

  Value walk(PyObject* obj) {
    if (obj == Py_None) return Value();
    PyTypeObject* type = Py_TYPE(obj);
    if (type == &PyBool_Type) return Value(Value::Kind::Bool, obj == Py_True);
    if (type == &PyLong_Type) return integer(obj);
    if (type == &PyFloat_Type) return Value(Value::Kind::Float, PyFloat_AS_DOUBLE(obj));
    if (type == &PyUnicode_Type) return Value(Value::Kind::Str, detail::utf8(obj));
    if (type == &PyBytes_Type) return Value(Value::Kind::Bytes, as_bytes(obj));
    if (type == &PyTuple_Type) return sequence(obj, Value::Kind::Tuple);
    if (type == &PyList_Type) return sequence(obj, Value::Kind::List);
    if (type == &PyDict_Type) return mapping(obj);
    if (type == &PyComplex_Type) {
      Py_complex c = PyComplex_AsCComplex(obj);
      return Value(Value::Kind::Complex, std::pair<double, double>(c.real, c.imag));
    }
    if (type == &PyByteArray_Type) {
      return Value(Value::Kind::ByteArray,
                   std::string(PyByteArray_AS_STRING(obj),
                               static_cast<std::size_t>(PyByteArray_GET_SIZE(obj))));
    }
    if (type == &PySet_Type) return set(obj, Value::Kind::Set);
    if (type == &PyFrozenSet_Type) return set(obj, Value::Kind::FrozenSet);
    if (type == &PyMemoryView_Type) return memoryview(obj);
    if (type == &PyModule_Type) return module(obj);
    if (type == &PyCode_Type) return Value(Value::Kind::Code, detail::marshal_code(obj));
    if (type == &PyFunction_Type) return function(obj);
    if (PyCFunction_Check(obj)) {
      if (auto data = detail::capture_builtin(obj)) return Value(Value::Kind::Function, data);
    }
    if (detail::is_cached_function(obj)) return function(obj);
    if (PyModule_Check(obj) && registered_module(obj)) return module(obj);
    if (detail::class_by_value(obj)) {
      return Value(Value::Kind::Function, detail::capture_class(obj, *this));
    }
    // Handle objects exist only once the extension is loaded, and then the
    // hooks are set.
    auto hook = g_capture_handle.load(std::memory_order_acquire);
    if (hook != nullptr) {
      Value handle;
      if (hook(obj, handle)) return handle;
    }
    BufferData view;
    if (shared_buffer_view(obj, view)) {
      return Value(Value::Kind::Buffer, std::make_shared<const BufferData>(std::move(view)));
    }
    return pickled(obj);
  }

 private:
  static Value integer(PyObject* obj) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow == 0) {
      if (v == -1 && PyErr_Occurred()) py::throw_python_error();
      return Value(Value::Kind::Int, static_cast<std::int64_t>(v));
    }
    py::ref hex = py::check(PyNumber_ToBase(obj, 16));
    return Value(Value::Kind::BigInt, detail::utf8(hex.get()));
  }

  // Marks `obj` as being walked, to find cycles.
  class Enter {
   public:
    Enter(ValueCapture& c, PyObject* obj) : c_(c) {
      if (c.stack_.size() >= kMaxDepth ||
          std::find(c.stack_.begin(), c.stack_.end(), obj) != c.stack_.end()) {
        throw PickleWhole();
      }
      c.stack_.push_back(obj);
    }
    ~Enter() { c_.stack_.pop_back(); }

   private:
    ValueCapture& c_;
  };

  Value sequence(PyObject* obj, Value::Kind kind) {
    Enter enter(*this, obj);
    // A list can change while items are captured (pickling runs Python
    // code), so index it afresh each time.
    std::vector<Value> items;
    items.reserve(static_cast<std::size_t>(Py_SIZE(obj)));
    for (Py_ssize_t i = 0; i < Py_SIZE(obj); ++i) {
      py::ref item = py::ref::borrow(kind == Value::Kind::Tuple ? PyTuple_GET_ITEM(obj, i)
                                                                : PyList_GET_ITEM(obj, i));
      try {
        items.push_back(walk(item.get()));
      } catch (NotShareable& e) {
        e.prepend("[" + std::to_string(i) + "]");
        throw;
      }
    }
    return Value(kind, std::make_shared<const std::vector<Value>>(std::move(items)));
  }

  Value mapping(PyObject* obj) {
    Enter enter(*this, obj);
    std::vector<Value> items;
    items.reserve(static_cast<std::size_t>(PyDict_GET_SIZE(obj)) * 2);
    py::ref snapshot = py::check(PyDict_Items(obj));
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(snapshot.get()); ++i) {
      PyObject* pair = PyList_GET_ITEM(snapshot.get(), i);
      PyObject* key = PyTuple_GET_ITEM(pair, 0);
      try {
        items.push_back(walk(key));
      } catch (NotShareable& e) {
        e.prepend(path_key(key) + "<key>");
        throw;
      }
      try {
        items.push_back(walk(PyTuple_GET_ITEM(pair, 1)));
      } catch (NotShareable& e) {
        e.prepend(path_key(key));
        throw;
      }
    }
    return Value(Value::Kind::Dict, std::make_shared<const std::vector<Value>>(std::move(items)));
  }

  Value set(PyObject* obj, Value::Kind kind) {
    Enter enter(*this, obj);
    std::vector<Value> items;
    py::ref it = py::check(PyObject_GetIter(obj));
    while (py::ref item = py::ref::steal(PyIter_Next(it.get()))) {
      try {
        items.push_back(walk(item.get()));
      } catch (NotShareable& e) {
        e.prepend("{" + path_key(item.get()).substr(1, std::string::npos));
        throw;
      }
    }
    if (PyErr_Occurred()) py::throw_python_error();
    return Value(kind, std::make_shared<const std::vector<Value>>(std::move(items)));
  }

  static Value memoryview(PyObject* obj) {
    Py_buffer* view = PyMemoryView_GET_BUFFER(obj);
    if (!PyBuffer_IsContiguous(view, 'C')) {
      throw NotShareable("memoryview", "the memoryview is not C-contiguous");
    }
    BufferData data;
    if (view->obj == nullptr || !shared_buffer_view(view->obj, data)) {
      // Memory owned by an object of this interpreter cannot be shared. A
      // read-only view is copied into runtime memory (it looks the same on
      // the other side); a writable one would silently lose writes.
      if (!view->readonly) {
        throw NotShareable("memoryview",
                           "a writable memoryview travels only over a SharedBuffer; "
                           "pass bytes(view) to send a copy");
      }
      data.memory = SharedMemory::allocate(static_cast<std::size_t>(view->len));
      py::check(PyBuffer_ToContiguous(data.memory->data(), view, view->len, 'C'));
      data.offset = 0;
    } else {
      const char* base = data.memory->data() + data.offset;
      data.offset += static_cast<std::size_t>(static_cast<const char*>(view->buf) - base);
    }
    data.length = static_cast<std::size_t>(view->len);
    data.readonly = view->readonly != 0;
    data.memoryview = true;
    data.format = view->format != nullptr ? view->format : "B";
    if (view->ndim == 0) {
      data.shape.push_back(-1);  // a 0-dimensional view
    } else if (view->ndim > 1 || view->shape[0] * view->itemsize != view->len ||
               data.format != "B") {
      data.shape.assign(view->shape, view->shape + view->ndim);
    }
    return Value(Value::Kind::Buffer, std::make_shared<const BufferData>(std::move(data)));
  }

  // True for a module (of a ModuleType subclass, say a lazy module) that is
  // the one sys.modules holds under its name: importing the name elsewhere
  // gives that interpreter's copy.
  static bool registered_module(PyObject* obj) {
    py::ref name = py::ref::steal(PyModule_GetNameObject(obj));
    if (!name) {
      PyErr_Clear();
      return false;
    }
    py::ref registered = py::ref::steal(PyImport_GetModule(name.get()));
    if (!registered && PyErr_Occurred()) py::throw_python_error();
    return registered.get() == obj;
  }

  static Value module(PyObject* obj) {
    PyObject* name = PyModule_GetNameObject(obj);
    if (name == nullptr) py::throw_python_error();
    py::ref owned = py::ref::steal(name);
    return Value(Value::Kind::Module, detail::utf8(name));
  }

  Value function(PyObject* obj) {
    if (std::find(functions_.begin(), functions_.end(), obj) != functions_.end()) {
      throw NotShareable("function",
                         "the function refers to itself through its defaults or closure");
    }
    functions_.push_back(obj);
    struct Pop {
      std::vector<PyObject*>& v;
      ~Pop() { v.pop_back(); }
    } pop{functions_};
    if (detail::is_cached_function(obj)) {
      return Value(Value::Kind::Function, detail::capture_cached(obj, *this));
    }
    return Value(Value::Kind::Function, detail::capture_function(obj, *this));
  }

  // Pickled bytes. A pickle that names `__main__` (or fails) is made again
  // with the functions and classes of `__main__` it meets captured by value
  // beside it (detail::PickleRefs), so that the target has them; see
  // pickle_needs_refs for the other case.
  Value pickled(PyObject* obj) {
    py::ref data;
    try {
      data = detail::pickle_dumps(obj);
    } catch (py::PythonError& e) {
      // Lambdas and closures do not pickle: retried below. Ctrl-C is not
      // retried.
      if (detail::is_interruption(e.exception())) throw;
    }
    if (data && !detail::pickle_needs_refs(as_view(data.get()))) {
      return Value(Value::Kind::Pickled, as_bytes(data.get()));
    }
    ByValue refs(*this);
    try {
      data = detail::pickle_dumps_refs(obj, refs);
    } catch (py::PythonError& e) {
      // Ctrl-C or SystemExit while pickling ran Python code: not a reason
      // to call the value unshareable.
      if (detail::is_interruption(e.exception())) throw;
      py::ref exc = e.take();
      py::ref text = py::ref::steal(PyObject_Str(exc.get()));
      std::string reason = text ? detail::utf8(text.get()) : "it cannot be pickled";
      PyErr_Clear();
      throw NotShareable(detail::type_qualname(obj), reason);
    }
    if (refs.values.empty()) return Value(Value::Kind::Pickled, as_bytes(data.get()));
    auto made = std::make_shared<detail::PickleData>();
    made->bytes = as_bytes(data.get());
    made->refs = std::move(refs.values);
    return Value(Value::Kind::PickledRefs, std::shared_ptr<const detail::PickleData>(made));
  }

  // The persistent ids of a pickle: functions and classes that pickle would
  // name by reference but that travel by value (see detail::class_by_value
  // and detail::capture_function).
  class ByValue final : public detail::PickleRefs {
   public:
    explicit ByValue(ValueCapture& capture) : capture_(capture) {}

    std::optional<std::size_t> ref(PyObject* obj) override {
      PyTypeObject* type = Py_TYPE(obj);
      bool is_class = PyType_Check(obj);
      if (!is_class && type != &PyFunction_Type && !detail::is_cached_function(obj)) {
        // Interpreter, queue and channel objects inside pickled ones travel
        // as handles too (an interpreter handle keeps its interpreter open).
        auto hook = g_capture_handle.load(std::memory_order_acquire);
        Value handle;
        if (hook == nullptr || !hook(obj, handle)) return std::nullopt;
        if (auto found = index_.find(obj); found != index_.end()) return found->second;
        std::size_t index = values.size();
        values.push_back(std::move(handle));
        held_.push_back(py::ref::borrow(obj));
        index_.emplace(obj, index);
        return index;
      }
      if (auto found = index_.find(obj); found != index_.end()) return found->second;
      Value v;
      if (is_class) {
        if (!detail::class_by_value(obj)) return std::nullopt;
        auto& classes = capture_.classes_;
        if (std::find(classes.begin(), classes.end(), obj) != classes.end()) {
          // Its attributes hold instances of it: it would be needed to make itself.
          throw detail::ClassRefused(detail::class_name(reinterpret_cast<PyTypeObject*>(obj)),
                                     "the class holds instances of itself in its attributes, "
                                     "so it cannot be made again by value");
        }
        classes.push_back(obj);
        struct Pop {
          std::vector<PyObject*>& v;
          ~Pop() { v.pop_back(); }
        } pop{classes};
        try {
          v = capture_.walk(obj);
        } catch (detail::ClassRefused&) {
          throw;
        } catch (NotShareable&) {
          // Named by reference, as before classes travelled: that works
          // where the target defines the class itself.
          return std::nullopt;
        }
      } else {
        v = capture_.walk(obj);
        if (by_reference(v)) return std::nullopt;
      }
      std::size_t index = values.size();
      values.push_back(std::move(v));
      held_.push_back(py::ref::borrow(obj));  // its address stays its own
      index_.emplace(obj, index);
      return index;
    }

    std::vector<Value> values;

   private:
    ValueCapture& capture_;
    std::vector<py::ref> held_;
    std::unordered_map<PyObject*, std::size_t> index_;
  };

  static bool by_reference(const Value& v) {
    return v.kind() == Value::Kind::Function &&
           std::get<std::shared_ptr<const FunctionData>>(v.storage_)->by_reference;
  }

  friend Value detail::capture_nested(ValueCapture&, PyObject*);

  std::vector<PyObject*> stack_;
  std::vector<PyObject*> functions_;
  std::vector<PyObject*> classes_;  // classes being captured for a pickle
};

namespace detail {
Value capture_nested(ValueCapture& capture, PyObject* obj) { return capture.walk(obj); }
}  // namespace detail

Value Value::capture(PyObject* obj) { return ValueCapture().top(obj); }

bool Value::is_shareable(PyObject* obj) {
  try {
    capture(obj);
    return true;
  } catch (NotShareable&) {
    return false;
  } catch (py::PythonError& e) {
    if (detail::is_interruption(e.exception())) throw;
    return false;
  }
}

Value Value::from_bool(bool b) { return Value(Kind::Bool, b); }
Value Value::from_int(std::int64_t i) { return Value(Kind::Int, i); }
Value Value::from_double(double d) { return Value(Kind::Float, d); }
Value Value::from_str(std::string text) { return Value(Kind::Str, std::move(text)); }
Value Value::from_bytes(std::string data) { return Value(Kind::Bytes, std::move(data)); }
Value Value::pickled(std::string data) { return Value(Kind::Pickled, std::move(data)); }
Value Value::function_ref(std::string module, std::string qualname) {
  auto data = std::make_shared<FunctionData>();
  data->by_reference = true;
  data->module = std::move(module);
  data->qualname = std::move(qualname);
  return Value(Kind::Function, std::shared_ptr<const FunctionData>(std::move(data)));
}
Value Value::code(std::string marshalled) { return Value(Kind::Code, std::move(marshalled)); }
Value Value::tuple(std::vector<Value> items) {
  return Value(Kind::Tuple, std::make_shared<const Items>(std::move(items)));
}
Value Value::list(std::vector<Value> items) {
  return Value(Kind::List, std::make_shared<const Items>(std::move(items)));
}
Value Value::dict(std::vector<Value> items) {
  if (items.size() % 2 != 0) throw std::invalid_argument("dict Value needs key/value pairs");
  return Value(Kind::Dict, std::make_shared<const Items>(std::move(items)));
}

Value Value::from_queue(const Queue& queue) { return Value(Kind::Queue, queue.state_); }
Value Value::from_interpreter(const Interpreter& interp) {
  const auto& state = interp.state_;
  bool ours = state->home_ != nullptr;
  return Value(Kind::Interpreter, std::make_shared<const detail::InterpreterHold>(
                                      state->id_, ours ? state : nullptr));
}
Value Value::interpreter_handle(std::int64_t id) {
  if (auto state = detail::find_owned(id)) return from_interpreter(Interpreter(state));
  // The main interpreter, or one this runtime does not own: nothing to keep.
  return Value(Kind::Interpreter, std::make_shared<const detail::InterpreterHold>(id, nullptr));
}
std::int64_t Value::interpreter_id() const {
  return std::get<std::shared_ptr<const detail::InterpreterHold>>(storage_)->id;
}
Value Value::from_channel(const Channel& channel, ChannelEnd end) {
  return Value(end == ChannelEnd::Send ? Kind::SendChannel : Kind::RecvChannel, channel.state_);
}
Queue Value::as_queue() const {
  return Queue(std::get<std::shared_ptr<detail::QueueState>>(storage_));
}
Channel Value::as_channel() const {
  return Channel(std::get<std::shared_ptr<detail::ChannelState>>(storage_));
}

void set_handle_hooks(const HandleHooks& hooks) {
  g_rebuild_handle.store(hooks.rebuild, std::memory_order_release);
  g_capture_handle.store(hooks.capture, std::memory_order_release);
}

bool Value::as_bool() const { return std::get<bool>(storage_); }
std::int64_t Value::as_int() const { return std::get<std::int64_t>(storage_); }
double Value::as_double() const { return std::get<double>(storage_); }
const std::string& Value::as_string() const { return std::get<std::string>(storage_); }
const std::vector<Value>& Value::items() const {
  return *std::get<std::shared_ptr<const Items>>(storage_);
}

// Builds Python objects from Values in the attached interpreter.
class ValueBuilder {
 public:
  static py::ref build(const Value& v) {
    using K = Value::Kind;
    switch (v.kind_) {
      case K::None:
        return py::ref::borrow(Py_None);
      case K::Bool:
        return py::ref::borrow(v.as_bool() ? Py_True : Py_False);
      case K::Int:
        return py::check(PyLong_FromLongLong(v.as_int()));
      case K::BigInt:
        return py::check(PyLong_FromString(v.as_string().c_str(), nullptr, 0));
      case K::Float:
        return py::check(PyFloat_FromDouble(v.as_double()));
      case K::Complex: {
        auto c = std::get<std::pair<double, double>>(v.storage_);
        return py::check(PyComplex_FromDoubles(c.first, c.second));
      }
      case K::Str:
        return detail::make_str(v.as_string());
      case K::Bytes:
        return bytes(v.as_string());
      case K::ByteArray:
        return py::check(PyByteArray_FromStringAndSize(
            v.as_string().data(), static_cast<Py_ssize_t>(v.as_string().size())));
      case K::Tuple:
        return tuple(v.items());
      case K::List:
        return list(v.items());
      case K::Dict:
        return dict(v.items());
      case K::Set:
        return set(v.items(), false);
      case K::FrozenSet:
        return set(v.items(), true);
      case K::Buffer:
        return buffer(*std::get<std::shared_ptr<const BufferData>>(v.storage_));
      case K::Module:
        return py::check(PyImport_ImportModule(v.as_string().c_str()));
      case K::Code:
        return detail::unmarshal_code(v.as_string());
      case K::Function:
        return detail::build_function(*std::get<std::shared_ptr<const FunctionData>>(v.storage_));
      case K::Pickled:
        return detail::pickle_loads(v.as_string());
      case K::PickledRefs: {
        const auto& data = *std::get<std::shared_ptr<const detail::PickleData>>(v.storage_);
        return detail::pickle_loads(data.bytes, &data.refs);
      }
      case K::Queue:
      case K::SendChannel:
      case K::RecvChannel:
      case K::Interpreter:
        return handle(v);
    }
    PyErr_SetString(PyExc_SystemError, "unknown Value kind");
    py::throw_python_error();
  }

 private:
  static py::ref handle(const Value& v) {
    auto hook = g_rebuild_handle.load(std::memory_order_acquire);
    if (hook == nullptr) {
      if (!load_extension_hooks()) {
        PyErr_SetString(PyExc_TypeError,
                        "queue, channel and interpreter handles become Python objects "
                        "through the subinterp package, which cannot be imported here");
        py::throw_python_error();
      }
      hook = g_rebuild_handle.load(std::memory_order_acquire);
    }
    return py::check(hook(v));
  }
  static py::ref bytes(const std::string& s) {
    return py::check(PyBytes_FromStringAndSize(s.data(), static_cast<Py_ssize_t>(s.size())));
  }
  static py::ref tuple(const std::vector<Value>& items) {
    py::ref t = py::check(PyTuple_New(static_cast<Py_ssize_t>(items.size())));
    for (std::size_t i = 0; i < items.size(); ++i) {
      PyTuple_SET_ITEM(t.get(), static_cast<Py_ssize_t>(i), build(items[i]).release());
    }
    return t;
  }
  static py::ref list(const std::vector<Value>& items) {
    py::ref l = py::check(PyList_New(static_cast<Py_ssize_t>(items.size())));
    for (std::size_t i = 0; i < items.size(); ++i) {
      PyList_SET_ITEM(l.get(), static_cast<Py_ssize_t>(i), build(items[i]).release());
    }
    return l;
  }
  static py::ref dict(const std::vector<Value>& items) {
    py::ref d = py::check(PyDict_New());
    for (std::size_t i = 0; i + 1 < items.size(); i += 2) {
      py::ref key = build(items[i]);
      py::ref value = build(items[i + 1]);
      py::check(PyDict_SetItem(d.get(), key.get(), value.get()));
    }
    return d;
  }
  static py::ref set(const std::vector<Value>& items, bool frozen) {
    py::ref s = py::check(frozen ? PyFrozenSet_New(nullptr) : PySet_New(nullptr));
    for (const Value& item : items) {
      py::ref obj = build(item);
      py::check(PySet_Add(s.get(), obj.get()));
    }
    return s;
  }
  static py::ref buffer(const BufferData& data) {
    py::ref obj = make_shared_buffer(data.memory, data.offset, data.length);
    if (!data.memoryview) return obj;
    py::ref view = py::check(PyMemoryView_FromObject(obj.get()));
    bool plain = data.format == "B" && data.shape.empty();
    if (!plain) {
      py::ref format = detail::make_str(data.format);
      py::ref shaped;
      if (data.shape.size() == 1 && data.shape[0] == -1) {
        shaped = py::check(PyObject_CallMethod(view.get(), "cast", "O()", format.get()));
      } else if (data.shape.empty()) {
        shaped = py::check(PyObject_CallMethod(view.get(), "cast", "O", format.get()));
      } else {
        py::ref shape = py::check(PyTuple_New(static_cast<Py_ssize_t>(data.shape.size())));
        for (std::size_t i = 0; i < data.shape.size(); ++i) {
          PyTuple_SET_ITEM(shape.get(), static_cast<Py_ssize_t>(i),
                           py::check(PyLong_FromSsize_t(data.shape[i])).release());
        }
        shaped =
            py::check(PyObject_CallMethod(view.get(), "cast", "OO", format.get(), shape.get()));
      }
      view = std::move(shaped);
    }
    if (data.readonly) view = py::check(PyObject_CallMethod(view.get(), "toreadonly", nullptr));
    return view;
  }
};

py::ref Value::rebuild() const { return ValueBuilder::build(*this); }

namespace detail {
py::ref build_nested(const Value& v) { return v.rebuild(); }
}  // namespace detail

}  // namespace subinterp
