// A pool of workers: threads that each own one interpreter and run the
// tasks handed to the pool in it, in parallel (one GIL per interpreter).
//
// Each worker thread creates its interpreter and one thread state for it,
// on itself, and keeps both: a task costs no thread-state set-up. Workers
// start when tasks need them (up to `max_workers`), wait for tasks without
// any GIL, and run the initializer first in every interpreter they start.
//
//   subinterp::Pool pool({.max_workers = 4});
//   subinterp::Future f = pool.submit(Value::function_ref("math", "factorial"),
//                                     Value::tuple({Value::from_int(20)}));
//   std::int64_t n = f.get().as_int();
//
// All methods may be called from any thread, with or without a thread state
// attached (one that is attached is detached while a call waits).
#pragma once

#include "subinterp/export.hpp"

#include <Python.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "subinterp/error.hpp"
#include "subinterp/interpreter.hpp"
#include "subinterp/value.hpp"

namespace subinterp {

namespace detail {
class PoolState;
class TaskState;
}  // namespace detail

// The pool cannot run tasks because a worker's initializer failed. `cause()`
// is the initializer's exception.
class SUBINTERP_API PoolBroken : public Error {
 public:
  PoolBroken(const std::string& message, std::shared_ptr<const ExceptionSnapshot> cause)
      : Error(message), cause_(std::move(cause)) {}
  const std::shared_ptr<const ExceptionSnapshot>& cause() const noexcept { return cause_; }

 private:
  std::shared_ptr<const ExceptionSnapshot> cause_;
};

// The pool has been shut down: it takes no new tasks.
class SUBINTERP_API PoolShutDown : public Error {
 public:
  using Error::Error;
};

// The task was cancelled before it started (by Future::cancel() or by
// Pool::shutdown(cancel_pending=true)).
class SUBINTERP_API TaskCancelled : public Error {
 public:
  using Error::Error;
};

// Future::get() waited longer than its timeout.
class SUBINTERP_API TaskTimeout : public Error {
 public:
  using Error::Error;
};

struct PoolOptions {
  // Most workers at a time; 0 means one per CPU.
  std::size_t max_workers = 0;
  // Configuration of every worker interpreter.
  Config config;
  // Run in each new worker interpreter before its first task: the source
  // text `init_source`, then, when it is not None, `init_callable(*init_args)`.
  // If either raises, the pool is broken (see PoolBroken).
  std::string init_source;
  Value init_callable;
  Value init_args = Value::tuple({});
  // A worker replaces its interpreter with a fresh one after this many
  // tasks; 0 means never.
  std::size_t max_tasks_per_worker = 0;
  // Worker threads are named <prefix>_<n> (cut to the 15 bytes Linux keeps).
  std::string thread_name_prefix = "subinterp-pool";
};

// The result of a submitted task, to be waited for.
class SUBINTERP_API Future {
 public:
  // True once the task has finished, failed or been cancelled.
  bool done() const noexcept;
  // True while a worker runs the task.
  bool running() const noexcept;
  bool cancelled() const noexcept;
  // Cancels the task if no worker has started it; returns whether it is
  // cancelled now. A cancelled task never runs.
  bool cancel() noexcept;

  // Waits until done (nullopt: without limit). Returns false on timeout.
  // In the main thread of the main interpreter a signal handler that raises
  // (Ctrl-C) ends the wait with py::PythonError.
  bool wait(std::optional<double> timeout = std::nullopt) const;
  // Waits, then returns the task's result. Throws what the task ended with:
  // ExecutionFailed (it raised), NotShareable (its result cannot travel),
  // TaskCancelled, PoolBroken, PoolShutDown, InterpreterError; and
  // TaskTimeout when `timeout` passes first.
  Value get(std::optional<double> timeout = std::nullopt) const;
  // The error the task ended with, or null (after done()).
  std::exception_ptr error() const;

  // The task's id, unique in the process.
  std::uint64_t id() const noexcept;

 private:
  friend class Pool;
  explicit Future(std::shared_ptr<detail::TaskState> state) : state_(std::move(state)) {}
  std::shared_ptr<detail::TaskState> state_;
};

// Called once for every task when it ends, with its result (None on error)
// and its error (null on success). It runs on the worker thread right after
// the task ran, or, when a thread is waiting for the future at that moment,
// on that thread (with its thread state attached, if it had one); for a
// task that never ran, on the thread that cancels it, shuts the pool down
// or finds it broken. The task's Future becomes done when the completion
// returns. A thread state of some interpreter may be attached: a completion
// that needs Python attaches its own interpreter with Interpreter::visit().
// It must not throw.
using Completion = std::function<void(const Value& result, const std::exception_ptr& error)>;

class SUBINTERP_API Pool {
 public:
  explicit Pool(PoolOptions options = {});
  // Shuts down, waiting for the tasks already submitted (without waiting
  // after an explicit shutdown(), or on one of the pool's own workers).
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Queues callable(*args, **kwargs) (a Tuple and a Dict or None). Throws
  // PoolShutDown after shutdown() and PoolBroken when broken.
  Future submit(Value callable, Value args, Value kwargs = Value(), Completion on_done = {});
  // Queues one task that calls callable(*items[i]) for each tuple of the
  // list `items` and returns the list of results. The first exception ends
  // the batch and is its error.
  Future submit_batch(Value callable, Value items, Completion on_done = {});
  // The same for callable(items[i]): one argument per item of the list.
  Future submit_each(Value callable, Value items, Completion on_done = {});

  // Stops taking tasks. With `cancel_pending`, tasks no worker has started
  // are cancelled. With `wait`, returns when every worker has finished its
  // tasks and ended its interpreter; without, returns at once and the
  // workers end on their own. In the main thread of the main interpreter a
  // signal handler that raises (Ctrl-C) ends the wait with py::PythonError
  // (the pool stays shut down).
  void shutdown(bool wait = true, bool cancel_pending = false);

  std::size_t max_workers() const noexcept;
  // Workers started and not yet ended.
  std::size_t worker_count() const noexcept;
  // Ids of the workers' current interpreters.
  std::vector<std::int64_t> interpreter_ids() const;
  // Tasks submitted and not yet started (nor cancelled).
  std::size_t pending() const noexcept;
  bool is_shut_down() const noexcept;
  // Non-null when an initializer failed: the reason.
  std::optional<PoolBroken> broken() const;

 private:
  std::shared_ptr<detail::PoolState> state_;
};

}  // namespace subinterp
