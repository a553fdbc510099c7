// Interpreters, and running code in them from any thread.
//
// `Interpreter` is a shared handle to an interpreter that this runtime
// created (or to the main interpreter). Every method may be called from any
// thread, with or without a Python thread state attached: when one is
// attached it is detached while the call waits or runs elsewhere, and
// attached again before the call returns (DESIGN.md, invariants 2 and 4).
//
// Each thread that runs code in an interpreter gets one thread state for it,
// made on first use and kept until the thread exits or the interpreter is
// closed. Interpreters are created and ended on one runtime thread: CPython
// 3.12 requires an interpreter to be ended on the thread that created it.
#pragma once

#include "subinterp/export.hpp"

#include <Python.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "subinterp/error.hpp"
#include "subinterp/value.hpp"

namespace subinterp {

namespace detail {
class InterpreterState;
}

struct Config {
  // true: own GIL, own allocator, extensions must support multiple
  // interpreters (the isolated config of PEP 684). false: the legacy config,
  // sharing the main interpreter's GIL, for extensions that need it.
  bool isolated = true;
  // true: incref()/decref() govern its life: it is closed when the count
  // returns to zero (the Python package's create() makes such interpreters:
  // its Interpreter objects hold the references). false: it lives until
  // close() or shutdown(), whatever the count (a C++ host's, or a pool's).
  bool close_when_unreferenced = false;
};

enum class Whence : int {
  Unknown = 0,
  Runtime = 1,    // the main interpreter
  CApi = 3,       // made by someone else through the C API
  Subinterp = 5,  // made by this runtime
};

class SUBINTERP_API Interpreter {
 public:
  // Creates an interpreter. Throws InterpreterError when CPython refuses.
  static Interpreter create(const Config& config = {});
  // The main interpreter.
  static Interpreter main();
  // The interpreter with this id, if this runtime made it (or it is the main
  // one). Throws InterpreterNotFound.
  static Interpreter get(std::int64_t id);
  // Ids of the interpreters this runtime made and has not closed.
  static std::vector<std::int64_t> owned_ids();

  std::int64_t id() const noexcept;
  Whence whence() const noexcept;
  bool is_main() const noexcept;
  // True while exec() or call() runs in it, on any thread.
  bool is_running() const noexcept;
  bool is_closed() const noexcept;

  // Runs Python source, or a code Value, in the __main__ namespace.
  // Throws ExecutionFailed for an uncaught exception, InterpreterError if the
  // interpreter is already running, InterpreterNotFound if it is closed.
  void exec(std::string_view source);
  void exec(const Value& code);
  // Calls callable(*args, **kwargs) and returns the result. Throws as exec(),
  // and NotShareable (path "result") when the result cannot travel.
  Value call(const Value& callable, const Value& args, const Value& kwargs);
  // The same, taking the Values over: they are freed as soon as they are
  // objects in the interpreter, before the call runs (a large argument is
  // then not held twice while it runs).
  Value call(Value&& callable, Value&& args, Value&& kwargs);
  // Binds name -> value items of a dict Value in __main__.
  void set_main_attrs(const Value& ns);
  // Runs `fn` on the calling thread with this interpreter's thread state
  // attached, as a run (refused while another runs), for hosts that use the
  // C API there directly. A py::PythonError escaping `fn` becomes
  // ExecutionFailed; other exceptions pass through. Python objects made by
  // `fn` must not outlive it (capture what should leave as a Value).
  void run(const std::function<void()>& fn);
  // Runs `fn` on the calling thread with a thread state of this interpreter
  // attached, without making it a run: any number of threads may visit, also
  // while the interpreter runs. For callbacks that hand results back into an
  // interpreter (pool completions). Exceptions from `fn` pass through; a
  // py::PythonError must be handled inside `fn`. Throws InterpreterNotFound
  // when the interpreter is closed.
  void visit(const std::function<void()>& fn);

  // Gives the calling thread a thread state of this interpreter that it keeps
  // until unpin_thread() on this thread, the thread's exit, or the
  // interpreter's end: visit(), exec() and call() on this thread reuse it
  // instead of making one per call (which a thread with no thread state
  // attached otherwise gets). For threads that serve one interpreter for a
  // long time, such as a server's workers. Must be called with no thread
  // state of this interpreter attached.
  void pin_thread();
  void unpin_thread();

  // Ends the interpreter. Throws InterpreterError if it is running or is the
  // main interpreter, InterpreterNotFound if already closed. Waits for
  // short-lived attachments (value rebuilds) to finish.
  void close();

  // Reference counting for owners such as Python `Interpreter` objects: for
  // an interpreter created with Config::close_when_unreferenced, when the
  // count returns to zero the interpreter is closed (at once if idle, else
  // when its current run ends). Others only count.
  void incref();
  void decref();

  friend class Value;
  friend bool operator==(const Interpreter& a, const Interpreter& b) noexcept {
    return a.state_ == b.state_;
  }

 private:
  explicit Interpreter(std::shared_ptr<detail::InterpreterState> state)
      : state_(std::move(state)) {}
  std::shared_ptr<detail::InterpreterState> state_;
};

// Id and origin of the interpreter attached on this thread (a thread state
// must be attached).
SUBINTERP_API std::int64_t current_interpreter_id();
SUBINTERP_API Whence whence_of(std::int64_t id);
// Whether the interpreter with this id runs code: through this runtime or,
// for any interpreter, through CPython's own modules (_interpreters). The
// main interpreter always does. Throws InterpreterNotFound.
SUBINTERP_API bool is_running(std::int64_t id);
// (id, whence) of every interpreter in the process.
SUBINTERP_API std::vector<std::pair<std::int64_t, Whence>> list_interpreters();

// Ends every interpreter this runtime made, and the pools, and stops the
// runtime thread. Call it before Py_FinalizeEx (the Python package does it
// at exit, from the main interpreter's atexit). It runs once per process:
// the host and the package share one core, so whichever calls it first ends
// everything, and later calls (also after Py_FinalizeEx) return at once.
// Calls blocked in queues and channels are woken and throw InterpreterError
// (as do later blocking calls); threads still running Python code in those
// interpreters get SystemExit, and all of them share a 3 s grace period.
// Interpreters still running after that are ended while Python finalizes.
// Creating interpreters afterwards throws InterpreterError.
SUBINTERP_API void shutdown();

}  // namespace subinterp
