// Interpreter-neutral values.
//
// A `Value` is plain C++ data owned by no interpreter. It is captured from a
// Python object in one interpreter (`Value::capture`) and rebuilt as a new,
// equal object in another (`Value::rebuild`): this is the only way objects
// move between interpreters (DESIGN.md, invariant 1).
//
// Kinds: None, bool, int (any size), float, complex, str, bytes, bytearray
// (copied), tuple, list, dict, set, frozenset; shared buffers (zero copy);
// handles to queues and channel ends (the same queue or channel on both
// sides); modules (by name); code objects (marshalled); functions (by reference when
// importable, else by value: code plus the globals, defaults and closure cells
// they use; `functools.lru_cache` wrappers of them are decorated again);
// classes of `__main__` by value (made again in the target with their
// metaclass, bound in its `__main__`, and reused there for later values); and
// pickled bytes for everything else, with the functions and classes of
// `__main__` the pickle names carried beside it by value.
//
// Values are immutable after capture and may be read from any thread without
// a lock. Capture and rebuild require the attached thread state of the
// interpreter that owns the Python objects involved.
#pragma once

#include "subinterp/export.hpp"

#include <Python.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "subinterp/ref.hpp"

namespace subinterp {

class SharedMemory;
struct FunctionData;
struct BufferData;
class Queue;
class Channel;
enum class ChannelEnd : std::uint8_t;
class Interpreter;
namespace detail {
class QueueState;
class ChannelState;
struct InterpreterHold;
struct PickleData;
}  // namespace detail

class SUBINTERP_API Value {
 public:
  enum class Kind : std::uint8_t {
    None,
    Bool,
    Int,     // fits in int64
    BigInt,  // text in base 16
    Float,
    Complex,
    Str,  // UTF-8 (lone surrogates kept with surrogatepass)
    Bytes,
    ByteArray,
    Tuple,
    List,
    Dict,  // items as key, value, key, value...
    Set,
    FrozenSet,
    Buffer,  // a view of shared memory
    Module,  // module name, imported on rebuild
    Code,    // marshalled code object
    Function,
    Pickled,  // pickle protocol 5 bytes
    Queue,    // a queue handle
    SendChannel,
    RecvChannel,
    PickledRefs,  // pickled, with the functions and classes of __main__ it names by value
    Interpreter,  // an interpreter handle; keeps the interpreter open while it lives
  };

  Value() noexcept = default;  // None

  // Captures `obj`. Throws NotShareable (with the path inside `obj`) when a
  // part of it cannot travel, py::PythonError for other Python errors.
  static Value capture(PyObject* obj);
  // Builds a new object equal to the captured one in the attached interpreter.
  py::ref rebuild() const;
  // True when `obj` can be captured (without raising).
  static bool is_shareable(PyObject* obj);

  static Value from_bool(bool b);
  static Value from_int(std::int64_t i);
  static Value from_double(double d);
  static Value from_str(std::string text);
  static Value from_bytes(std::string data);
  static Value tuple(std::vector<Value> items);
  static Value list(std::vector<Value> items);
  // `items` holds keys and values alternately.
  static Value dict(std::vector<Value> items);
  static Value pickled(std::string data);
  // A callable named by module and qualified name, looked up where it is
  // rebuilt: function_ref("__main__", "work") is the target's own
  // __main__.work, function_ref("math", "sqrt") imports math there.
  static Value function_ref(std::string module, std::string qualname);
  static Value code(std::string marshalled);
  static Value from_queue(const Queue& queue);
  static Value from_channel(const Channel& channel, ChannelEnd end);
  // A handle to the interpreter with this id. While the Value (or a copy)
  // lives, an interpreter that this runtime made stays open, as if the
  // handle held a reference: a handle in transit (a call's result, a queue
  // item) never finds its interpreter closed on arrival.
  static Value from_interpreter(const Interpreter& interp);
  static Value interpreter_handle(std::int64_t id);

  Kind kind() const noexcept { return kind_; }
  bool is_none() const noexcept { return kind_ == Kind::None; }
  bool as_bool() const;
  std::int64_t as_int() const;
  double as_double() const;
  // Text of Str, BigInt, Module, Code, Bytes, ByteArray, Pickled.
  const std::string& as_string() const;
  // Items of Tuple, List, Dict, Set, FrozenSet.
  const std::vector<Value>& items() const;
  // The handle of Queue / SendChannel / RecvChannel values.
  Queue as_queue() const;
  Channel as_channel() const;
  // The id of an Interpreter value.
  std::int64_t interpreter_id() const;

 private:
  using Items = std::vector<Value>;
  using Storage = std::variant<std::monostate, bool, std::int64_t, double, std::string,
                               std::shared_ptr<const Items>, std::shared_ptr<const FunctionData>,
                               std::shared_ptr<const BufferData>, std::pair<double, double>,
                               std::shared_ptr<detail::QueueState>,
                               std::shared_ptr<detail::ChannelState>,
                               std::shared_ptr<const detail::PickleData>,
                               std::shared_ptr<const detail::InterpreterHold>>;

  Value(Kind kind, Storage storage) : kind_(kind), storage_(std::move(storage)) {}

  friend class ValueCapture;
  friend class ValueBuilder;
  friend class WireCodec;

  Kind kind_ = Kind::None;
  Storage storage_;
};

// How handles look in Python. The extension (`subinterp._subinterp`)
// installs these when it is first imported, for the whole process (it uses
// the process's one core): `capture` recognises its queue, channel and
// interpreter objects, `rebuild` makes them in the attached interpreter
// (importing what it needs there). Rebuilding a handle before any import of
// the extension imports it; where the subinterp package cannot be imported,
// that raises TypeError. The functions must be safe in every interpreter.
struct HandleHooks {
  // True (and `out` set) when `obj` is a handle object; may throw.
  bool (*capture)(PyObject* obj, Value& out) = nullptr;
  // A new reference to the Python object for the handle in `v`, or nullptr
  // with an exception set.
  PyObject* (*rebuild)(const Value& v) = nullptr;
};
SUBINTERP_API void set_handle_hooks(const HandleHooks& hooks);

}  // namespace subinterp
