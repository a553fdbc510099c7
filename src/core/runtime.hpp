// The runtime's process-wide state: the registry of interpreters, the thread
// that creates and ends them, and per-thread thread-state bookkeeping.
#pragma once

#include <Python.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "subinterp/interpreter.hpp"

// Exported by CPython 3.12 and 3.13 for their own _interpreters /
// _xxsubinterpreters modules (declared in internal headers only): the mark
// by which those modules know that an interpreter runs code.
extern "C" {
PyAPI_FUNC(int) _PyInterpreterState_SetRunningMain(PyInterpreterState*);
PyAPI_FUNC(void) _PyInterpreterState_SetNotRunningMain(PyInterpreterState*);
PyAPI_FUNC(int) _PyInterpreterState_IsRunningMain(PyInterpreterState*);
}

namespace subinterp::detail {

struct EndJob;

class InterpreterState {
 public:
  InterpreterState(PyInterpreterState* interp, std::int64_t id, Whence whence, PyThreadState* home)
      : interp_(interp), id_(id), whence_(whence), home_(home) {}

  PyInterpreterState* const interp_;
  const std::int64_t id_;
  const Whence whence_;
  // The thread state that created the interpreter, on the runtime thread;
  // the interpreter is ended with it. Null for the main interpreter.
  PyThreadState* const home_;

  std::mutex mu_;
  std::condition_variable idle_;  // attached_ dropped to zero
  bool running_ = false;          // exec/call/set_main_attrs in progress
  int attached_ = 0;              // threads with a thread state of it attached
  bool closed_ = false;
  std::int64_t refs_ = 0;
  bool counted_ = false;   // Config::close_when_unreferenced: refs_ govern its life
  std::int64_t holds_ = 0;  // handles in transit (InterpreterHold)
  bool close_when_released_ = false;  // refs_ went to zero while running
  // Set for the interpreter of a pool worker: only that thread runs code in
  // it, and only the pool closes it.
  std::thread::id worker_thread_;
  // Cached thread states of other threads (one per thread).
  std::unordered_map<std::thread::id, PyThreadState*> tstates_;
  // Set when a close starts (closed_ is set then too): the interpreter is
  // ended on a thread of its own (see ending.cpp). Reset if the close is
  // refused (threads of the interpreter still run).
  std::shared_ptr<EndJob> ending_;
  bool in_end_ = false;  // Py_EndInterpreter has started: nothing can stop it
};

using ThreadStates = std::unordered_map<std::thread::id, PyThreadState*>;

// What an Interpreter Value holds: the interpreter stays open while a hold
// lives. When the last hold and the last reference are gone (and references
// had been taken), the interpreter is closed, as by Interpreter::decref().
struct InterpreterHold {
  InterpreterHold(std::int64_t id, std::shared_ptr<InterpreterState> state);
  ~InterpreterHold();
  InterpreterHold(const InterpreterHold&) = delete;
  InterpreterHold& operator=(const InterpreterHold&) = delete;
  const std::int64_t id;
  const std::shared_ptr<InterpreterState> state;  // null unless ours
};

// Closes `state` if no reference or hold keeps it (see InterpreterHold):
// at once if idle, else when its current run ends. Call without its mu_.
void close_if_unreferenced(const std::shared_ptr<InterpreterState>& state);

// --- ending interpreters (ending.cpp) ---------------------------------------

// How a wait for an interpreter's end came out.
enum class EndWait { Ended, Refused, Interrupted, TimedOut, NotWaited };

// Starts ending `state` on a thread of its own and returns the job. The
// caller has set closed_ and ending_ = job, seen attached_ drop to zero and
// taken `others` (the cached thread states of other threads) out of it.
// The ender waits for the interpreter's own threads and runs its exit
// functions without any lock held, then ends it under the lifecycle lock;
// if threads the runtime cannot join still run, it reopens the interpreter
// and the job fails.
std::shared_ptr<EndJob> new_end_job();
void start_end(const std::shared_ptr<InterpreterState>& state,
               const std::shared_ptr<EndJob>& job, ThreadStates others);
// Waits for `job` with this thread's GIL released. In the main thread a
// signal handler that raises ends the wait (Interrupted, the error pending,
// the end goes on). On a thread that is ending another interpreter under the
// lifecycle lock, does not wait (NotWaited): that end waits for this one
// once it has released the lock.
EndWait wait_end(const std::shared_ptr<EndJob>& job, const std::optional<
                 std::chrono::steady_clock::time_point>& deadline = std::nullopt);
// The reason a refused end gave.
std::string end_error(const EndJob& job);
// True on a thread inside Py_EndInterpreter of one of our interpreters
// (it holds the lifecycle lock): it must not wait for other ends, pools'
// workers or the runtime thread.
bool in_interpreter_end() noexcept;
// For shutdown(): interpreters that could not be ended in time (a thread
// blocked in C code, a loop that catches SystemExit) are ended while CPython
// finalizes, once no other thread can take a GIL any more.
void end_at_finalization(std::vector<std::shared_ptr<InterpreterState>> stuck);
// Records the thread that runs shutdown() (and then finalizes Python).
void note_exit_thread();

// Attaches a thread state of `state` on this thread for the object's
// lifetime. With `run`, marks the interpreter running (and refuses if it
// already is). Throws InterpreterNotFound / InterpreterError.
class Attachment {
 public:
  Attachment(const std::shared_ptr<InterpreterState>& state, bool run);
  ~Attachment() noexcept(false);  // see ~ThreadStateGuard
  Attachment(const Attachment&) = delete;
  Attachment& operator=(const Attachment&) = delete;

 private:
  // Detaches and updates the counters; true when the interpreter is to be
  // closed now (its last reference went during the run).
  bool leave();

  std::shared_ptr<InterpreterState> state_;
  bool run_;
  PyThreadState* tstate_ = nullptr;
  PyThreadState* prev_ = nullptr;
  bool swapped_ = false;    // a different thread state was attached before
  bool temporary_ = false;  // made for this attachment alone; deleted after
};

// Runs `job` on the runtime thread and waits for it (with any thread state
// of the caller detached). The job gets the runtime thread's main-interpreter
// thread state, detached. Exceptions thrown by `job` are rethrown here.
void run_on_runtime_thread(const std::function<void(PyThreadState* anchor)>& job);

// Ends an interpreter whose last reference went away (from decref, or from
// the end of the run that was in progress then), or that is still open at
// shutdown. Reports failures on stderr: there is no caller to raise to.
// A running interpreter is given `grace` to finish its run.
// Creates and registers an interpreter (Interpreter::create). A non-empty
// `worker` makes it a pool worker's interpreter from the start.
std::shared_ptr<InterpreterState> create_owned(const Config& config, std::thread::id worker);

// Makes a thread state of `state` on this thread and keeps it for the
// thread (Attachment reuses it) until unpin_thread_state() on this thread.
// For threads that own an interpreter, such as pool workers.
void pin_thread_state(const std::shared_ptr<InterpreterState>& state);
void unpin_thread_state(const std::shared_ptr<InterpreterState>& state);

// Never throws; Ctrl-C that ends its wait is delivered again.
void close_released(const std::shared_ptr<InterpreterState>& state);
// Raises SystemExit in every thread of `state` (for shutdown); reports
// failures on stderr.
void interrupt_runs(const std::shared_ptr<InterpreterState>& state);
// Ends a pool worker's interpreter (which close() refuses). Throws as close().
void close_pool_interpreter(const std::shared_ptr<InterpreterState>& state);
// With a thread state of the target attached: runs source in __main__;
// calls callable(*args, **kwargs) and captures the result; calls
// callable(*item) (with `unpack`) or callable(item) for each item of the
// list `items` and captures the list of results. Throw py::PythonError,
// NotShareable (path "result").
void exec_attached(const std::string& source);
Value call_attached(const Value& callable, const Value& args, const Value& kwargs);
// The same, emptying the three Values once they are rebuilt (their memory
// is not needed while the call runs).
Value call_attached_consuming(Value& callable, Value& args, Value& kwargs);
Value call_each_attached(const Value& callable, const Value& items, bool unpack);
// Stops every live pool (for shutdown()): no new tasks, queued ones
// cancelled, running ones interrupted, workers joined if they end by the
// deadline.
void pools_shutdown(std::chrono::steady_clock::time_point deadline);
// Imports, in the main interpreter, the stdlib modules that an isolated
// interpreter must not be the first to import (see interpreter.cpp), when
// the caller runs the main interpreter; create() does the rest.
void preload_on_caller();

// Stops the runtime thread; thread-exit hooks stop touching Python.
void shutdown_runtime();

// Held by the runtime thread while it creates and registers an interpreter
// or ends one, so that listings (which walk CPython's list of interpreters)
// never see one of ours half made, unregistered, or freed under them. Lock
// order: this mutex first, then a GIL.
std::recursive_mutex& lifecycle_mutex();

std::shared_ptr<InterpreterState> find_owned(std::int64_t id);
std::shared_ptr<InterpreterState> main_state();
void register_owned(const std::shared_ptr<InterpreterState>& state);
void unregister_owned(std::int64_t id);
std::vector<std::shared_ptr<InterpreterState>> all_owned();

}  // namespace subinterp::detail
