#include "subinterp/pool.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "internal.hpp"
#include "subinterp/subinterp.hpp"
#include "runtime.hpp"
#include "subinterp/thread_state.hpp"
#include "wait.hpp"

namespace subinterp {
namespace detail {
namespace {

// A task is Pending until a worker claims it, Running while it runs, Ran
// once its result is recorded, Done when its completion has returned.
enum Phase : int { kPending = 0, kRunning = 1, kRan = 2, kDone = 3 };

std::atomic<std::uint64_t> g_next_task{1};

// The pool whose worker this thread is, if any.
thread_local const void* t_worker_of = nullptr;

}  // namespace

class TaskState {
 public:
  enum class Mode : std::uint8_t { Call, Batch, Each };

  TaskState(Value callable, Value args, Value kwargs, Mode mode, Completion on_done)
      : id_(g_next_task.fetch_add(1)),
        callable_(std::move(callable)),
        args_(std::move(args)),
        kwargs_(std::move(kwargs)),
        mode_(mode),
        on_done_(std::move(on_done)) {}

  // Claims the task for a worker; false if it was cancelled.
  bool start() noexcept {
    int expected = kPending;
    return phase_.compare_exchange_strong(expected, kRunning);
  }
  // Ends a task that never started (cancelled, or dropped by its pool) with
  // `error`; false if it had started already.
  bool drop(std::exception_ptr error, bool cancelled) {
    // Claimed as a worker would, so that no worker starts it and no waiter
    // completes it before the outcome is written.
    if (!start()) return false;
    cancelled_.store(cancelled);
    error_ = std::move(error);
    phase_.store(kRan);
    complete();
    return true;
  }

  // Records the worker's outcome. The completion then runs here, unless a
  // thread is spinning in wait(): that thread runs it, so that a completion
  // that needs the waiter's own GIL does not wait for the waiter to hand it
  // over (a sleep and a wake-up on each side).
  void ran(Value result, std::exception_ptr error) {
    result_ = std::move(result);
    error_ = std::move(error);
    callable_ = args_ = kwargs_ = Value();  // freed on the worker's thread
    phase_.store(kRan);
    if (spinners_.load() == 0) complete();
  }

  // Runs the completion once (whoever claims it first), then wakes the
  // waiters. Called after ran() or drop().
  // Not noexcept: the completion runs Python code, and a thread that
  // CPython ends at exit unwinds through it.
  void complete() {
    if (claimed_.exchange(true)) return;
    if (on_done_) {
      on_done_(result_, error_);
      on_done_ = nullptr;  // what it holds goes now, not with the future
    }
    callable_ = args_ = kwargs_ = Value();
    phase_.store(kDone);
    Lock lock(mu_);
    finished_.store(true, std::memory_order_release);
    waiters_.wake_all();
  }

  bool finished() const noexcept { return finished_.load(std::memory_order_acquire); }

  const std::uint64_t id_;
  Value callable_, args_, kwargs_;
  const Mode mode_;
  Completion on_done_;
  std::atomic<int> phase_{kPending};
  std::atomic<int> spinners_{0};  // threads spinning in wait()
  std::atomic<bool> claimed_{false};
  std::atomic<bool> cancelled_{false};
  // Written before phase_ is Ran, read after it is seen.
  Value result_;
  std::exception_ptr error_;
  Mutex mu_;
  WaitList waiters_;  // guarded by mu_
  std::atomic<bool> finished_{false};
};

class PoolState : public std::enable_shared_from_this<PoolState> {
 public:
  explicit PoolState(PoolOptions options) : options_(std::move(options)) {
    max_workers_ = options_.max_workers;
    if (max_workers_ == 0) max_workers_ = std::max(1u, std::thread::hardware_concurrency());
  }
  ~PoolState();

  void submit(const std::shared_ptr<TaskState>& task);
  // With `interruptible`, a signal handler that raises ends the wait
  // (throws py::PythonError).
  void shutdown(bool wait, bool cancel_pending, bool interruptible = true);
  // Runtime shutdown: cancel, interrupt, join if the workers end by the
  // deadline.
  void stop_for_exit(std::chrono::steady_clock::time_point deadline);

  const PoolOptions options_;
  std::size_t max_workers_ = 1;

  Mutex mu_;
  std::condition_variable_any work_cv_;   // a task was queued, or stopping
  std::condition_variable_any ended_cv_;  // a worker ended
  WaitList ended_waiters_;                // shutdown(wait) callers, guarded by mu_
  std::deque<std::shared_ptr<TaskState>> queue_;  // guarded by mu_
  std::atomic<std::size_t> queued_{0};            // queue_.size(), for spinners
  std::size_t idle_ = 0;                          // workers between tasks
  std::size_t sleeping_ = 0;                      // workers asleep in work_cv_
  std::atomic<std::size_t> looking_{0};           // workers spinning for a task
  std::size_t live_ = 0;                          // workers started, not ended
  std::size_t next_index_ = 0;
  bool shut_down_ = false;
  std::atomic<bool> stop_flag_{false};  // shut_down_ or broken_, for spinners
  std::optional<PoolBroken> broken_;
  std::vector<std::thread> threads_;                 // guarded by mu_
  std::vector<std::shared_ptr<InterpreterState>> interps_;  // guarded by mu_

 private:
  void start_worker_locked();
  void worker_main(std::size_t index);
  // The next task, or null when the worker should end.
  std::shared_ptr<TaskState> next_task();
  void run_task(const std::shared_ptr<InterpreterState>& interp, TaskState& task);
  // Makes an interpreter for this worker and runs the initializer; null
  // (and the pool broken) on failure.
  std::shared_ptr<InterpreterState> start_interpreter();
  void end_interpreter(const std::shared_ptr<InterpreterState>& interp);
  void set_broken(PoolBroken reason);
  // Marks the pool shut down and wakes the idle workers.
  void stop_taking();
  // Joins the worker threads (detaching this one, if it is one of them),
  // with this thread's GIL released.
  void join_threads();
  // Drops every queued task with `error`.
  void drop_queued(std::exception_ptr error, bool cancelled);
  // True when the pool takes no more tasks and has none queued.
  bool nothing_left() {
    Lock lock(mu_);
    return (shut_down_ || broken_) && queue_.empty();
  }
};

namespace {

// Live pools, for shutdown(). Weak: a pool's state lives while its Pool
// object or a worker holds it.
struct LivePools {
  std::mutex mu;
  std::vector<std::weak_ptr<PoolState>> pools;
};
LivePools& live_pools() {
  static auto* p = new LivePools();  // never destroyed: used at exit
  return *p;
}

void name_thread(const std::string& prefix, std::size_t index) {
  std::string name = prefix + "_" + std::to_string(index);
  if (name.size() > 15) name.resize(15);
  pthread_setname_np(pthread_self(), name.c_str());
}

}  // namespace

PoolState::~PoolState() {
  // Workers hold the state while they run, so every worker has ended or is
  // returning from its thread function; one of them may be running this.
  join_threads();
}

void PoolState::start_worker_locked() {
  std::size_t index = next_index_++;
  ++live_;
  ++idle_;  // counted idle until it takes its first task
  auto self = shared_from_this();
  threads_.emplace_back([self, index] { self->worker_main(index); });
}

void PoolState::submit(const std::shared_ptr<TaskState>& task) {
  Lock lock(mu_);
  if (broken_) throw *broken_;
  if (shut_down_) throw PoolShutDown("cannot submit tasks after the pool was shut down");
  queue_.push_back(task);
  queued_.store(queue_.size(), std::memory_order_release);
  if (queue_.size() > idle_ && live_ < max_workers_) start_worker_locked();
  // Workers spinning for a task take it without a wake-up; a sleeping one
  // is woken only for the tasks they leave (a futile wake-up costs both
  // threads a context switch).
  bool wake = sleeping_ > 0 && queue_.size() > looking_.load();
  lock.unlock();
  if (wake) work_cv_.notify_one();
}

std::shared_ptr<TaskState> PoolState::next_task() {
  // Spin briefly first: a task submitted right after the last one finished
  // is taken without either side sleeping.
  ++looking_;
  spin_until(
      [&] {
        return queued_.load(std::memory_order_acquire) > 0 ||
               stop_flag_.load(std::memory_order_acquire);
      },
      kSpin);
  Lock lock(mu_);
  --looking_;
  for (;;) {
    if (!queue_.empty()) {
      std::shared_ptr<TaskState> task = std::move(queue_.front());
      queue_.pop_front();
      queued_.store(queue_.size(), std::memory_order_release);
      if (task->start()) {
        --idle_;
        return task;
      }
      continue;  // cancelled: its canceller has completed it
    }
    if (shut_down_ || broken_ || waits_refused()) {
      --idle_;
      return nullptr;
    }
    ++sleeping_;
    work_cv_.wait(lock);
    --sleeping_;
  }
}

void PoolState::run_task(const std::shared_ptr<InterpreterState>& interp, TaskState& task) {
  Value result;
  std::exception_ptr error;
  try {
    Attachment attached(interp, /*run=*/true);
    try {
      result = task.mode_ == TaskState::Mode::Call
                   ? call_attached_consuming(task.callable_, task.args_, task.kwargs_)
                   : call_each_attached(task.callable_, task.args_,
                                        task.mode_ == TaskState::Mode::Batch);
    } catch (py::PythonError& e) {
      py::ref exc = e.take();
      error = std::make_exception_ptr(ExecutionFailed(ExceptionSnapshot::capture(exc.get())));
    } catch (...) {
      SUBINTERP_RETHROW_FORCED_UNWIND;
      error = std::current_exception();
    }
    // Still attached: a completion that visits another interpreter then
    // reuses this thread's thread state for it.
    task.ran(std::move(result), std::move(error));
    return;
  } catch (...) {
    SUBINTERP_RETHROW_FORCED_UNWIND;
    error = std::current_exception();  // the attachment failed
  }
  task.ran(Value(), std::move(error));
}

std::shared_ptr<InterpreterState> PoolState::start_interpreter() {
  std::shared_ptr<InterpreterState> state;
  try {
    state = create_owned(options_.config, std::this_thread::get_id());
    pin_thread_state(state);
    {
      Lock lock(mu_);
      interps_.push_back(state);
    }
  } catch (std::exception& e) {
    if (state) end_interpreter(state);
    set_broken(PoolBroken(std::string("a pool worker could not start its interpreter: ") +
                              e.what(),
                          nullptr));
    return nullptr;
  }
  if (options_.init_source.empty() && options_.init_callable.is_none()) return state;
  std::optional<ExceptionSnapshot> failure;
  std::string other;
  try {
    Attachment attached(state, /*run=*/true);
    try {
      if (!options_.init_source.empty()) exec_attached(options_.init_source);
      if (!options_.init_callable.is_none()) {
        call_attached(options_.init_callable, options_.init_args, Value());
      }
    } catch (py::PythonError& e) {
      py::ref exc = e.take();
      failure = ExceptionSnapshot::capture(exc.get());
    }
  } catch (std::exception& e) {
    other = e.what();
  }
  if (!failure && other.empty()) return state;
  end_interpreter(state);
  std::string message = "a pool worker's initializer failed, the pool is not usable anymore: ";
  if (!failure) {
    set_broken(PoolBroken(message + other, nullptr));
    return nullptr;
  }
  message += failure->formatted.empty() ? failure->type_name : failure->formatted;
  while (!message.empty() && message.back() == '\n') message.pop_back();
  set_broken(PoolBroken(message, std::make_shared<const ExceptionSnapshot>(std::move(*failure))));
  return nullptr;
}

void PoolState::end_interpreter(const std::shared_ptr<InterpreterState>& interp) {
  unpin_thread_state(interp);
  {
    Lock lock(mu_);
    std::erase(interps_, interp);
  }
  try {
    close_pool_interpreter(interp);
  } catch (InterpreterNotFound&) {
    // ended by the runtime's shutdown meanwhile
  } catch (std::exception& e) {
    std::fprintf(stderr, "subinterp: a pool worker could not close interpreter %lld: %s\n",
                 static_cast<long long>(interp->id_), e.what());
  }
}

void PoolState::set_broken(PoolBroken reason) {
  std::exception_ptr error;
  {
    Lock lock(mu_);
    if (!broken_) broken_.emplace(std::move(reason));
    error = std::make_exception_ptr(*broken_);
    stop_flag_.store(true, std::memory_order_release);
  }
  work_cv_.notify_all();
  drop_queued(error, false);
}

void PoolState::drop_queued(std::exception_ptr error, bool cancelled) {
  std::deque<std::shared_ptr<TaskState>> dropped;
  {
    Lock lock(mu_);
    dropped.swap(queue_);
    queued_.store(0, std::memory_order_release);
  }
  for (auto& task : dropped) task->drop(error, cancelled);
}

void PoolState::worker_main(std::size_t index) {
  t_worker_of = this;
  name_thread(options_.thread_name_prefix, index);
  bool more = true;
  for (bool first = true; more; first = false) {
    if (!first && nothing_left()) {
      more = false;  // renewal is due, but no task will come
      Lock lock(mu_);
      --idle_;
      break;
    }
    std::shared_ptr<InterpreterState> interp = start_interpreter();
    if (!interp) break;
    std::size_t done = 0;
    for (;;) {
      std::shared_ptr<TaskState> task = next_task();
      if (!task) {
        more = false;
        break;
      }
      run_task(interp, *task);
      task.reset();
      {
        Lock lock(mu_);
        ++idle_;
      }
      if (options_.max_tasks_per_worker != 0 && ++done >= options_.max_tasks_per_worker) break;
    }
    end_interpreter(interp);
  }
  {
    Lock lock(mu_);
    if (more) --idle_;  // left after a failed start, still counted idle
    --live_;
    if (live_ == 0) ended_waiters_.wake_all();
  }
  ended_cv_.notify_all();
}

void PoolState::stop_taking() {
  {
    Lock lock(mu_);
    shut_down_ = true;
    stop_flag_.store(true, std::memory_order_release);
  }
  work_cv_.notify_all();
}

void PoolState::join_threads() {
  DetachGuard detached;  // an ending thread may need this thread's GIL
  std::vector<std::thread> threads;
  {
    Lock lock(mu_);
    threads.swap(threads_);
  }
  // Inside the end of an interpreter (which dropped the pool) the lifecycle
  // lock is held, and ending workers need it: they finish on their own.
  const bool detach_all = in_interpreter_end();
  for (auto& t : threads) {
    if (detach_all || t.get_id() == std::this_thread::get_id()) {
      t.detach();  // the last owner let go on this worker
    } else if (t.joinable()) {
      t.join();
    }
  }
}

void PoolState::shutdown(bool wait, bool cancel_pending, bool interruptible) {
  stop_taking();
  if (cancel_pending) {
    drop_queued(std::make_exception_ptr(TaskCancelled("the task was cancelled by shutdown")),
                true);
  }
  if (!wait) return;
  if (t_worker_of == this) {
    throw PoolShutDown(
        "the pool is shut down, but a task of the pool cannot wait for the pool's workers "
        "(itself among them) to end");
  }
  if (!interruptible) {
    DetachGuard detached;
    Lock lock(mu_);
    ended_cv_.wait(lock, [&] { return live_ == 0; });
  } else {
    // Workers may need this thread's GIL to finish; in the main thread a
    // signal handler that raises (Ctrl-C) ends the wait.
    GilRelease gil;
    Lock lock(mu_);
    Outcome outcome =
        wait_until(lock, ended_waiters_, std::nullopt, gil, [&] { return live_ == 0; });
    lock.unlock();
    if (outcome == Outcome::Interrupted) py::throw_python_error();
    if (outcome == Outcome::ShutDown) return;  // the runtime's shutdown joins them
  }
  join_threads();
}

void PoolState::stop_for_exit(std::chrono::steady_clock::time_point deadline) {
  stop_taking();
  drop_queued(std::make_exception_ptr(
                  PoolShutDown("the subinterp runtime is shutting down: the task was dropped")),
              false);
  std::vector<std::shared_ptr<InterpreterState>> running;
  {
    Lock lock(mu_);
    running = interps_;
  }
  for (auto& interp : running) interrupt_runs(interp);
  {
    DetachGuard detached;
    Lock lock(mu_);
    if (!ended_cv_.wait_until(lock, deadline, [&] { return live_ == 0; })) {
      // A task blocked in C code, or one that catches SystemExit: its
      // interpreter is ended while Python finalizes (see shutdown()).
      return;  // their threads stay joinable; the state is leaked with them
    }
  }
  join_threads();
}

void pools_shutdown(std::chrono::steady_clock::time_point deadline) {
  std::vector<std::shared_ptr<PoolState>> pools;
  {
    LivePools& live = live_pools();
    std::lock_guard lock(live.mu);
    for (auto& weak : live.pools) {
      if (auto p = weak.lock()) pools.push_back(std::move(p));
    }
    live.pools.clear();
  }
  for (auto& pool : pools) pool->stop_for_exit(deadline);
}

}  // namespace detail

using detail::TaskState;

bool Future::done() const noexcept { return state_->finished(); }
bool Future::running() const noexcept {
  int phase = state_->phase_.load();
  return (phase == detail::kRunning || phase == detail::kRan) && !state_->cancelled_.load();
}
bool Future::cancelled() const noexcept { return state_->finished() && state_->cancelled_; }

bool Future::cancel() noexcept {
  try {
    if (state_->drop(std::make_exception_ptr(TaskCancelled("the task was cancelled")), true)) {
      return true;
    }
  } catch (...) {
    return false;  // could not make the error
  }
  return cancelled();
}

bool Future::wait(std::optional<double> timeout) const {
  TaskState& s = *state_;
  if (s.finished()) return true;
  if (timeout && *timeout <= 0) return false;
  detail::Deadline deadline = detail::deadline_after(timeout);
  {
    // Spin without the GIL: a quick task's completion, which may need it,
    // is then run by this thread as soon as the task has run.
    ++s.spinners_;
    detail::GilRelease gil;
    detail::spin_until([&] { return s.phase_.load() >= detail::kRan; }, detail::kFutureSpin);
    --s.spinners_;
  }
  if (s.phase_.load() == detail::kRan) s.complete();
  if (s.finished()) return true;
  detail::Outcome outcome;
  {
    detail::GilRelease gil;
    detail::Lock lock(s.mu_);
    outcome = detail::wait_until(lock, s.waiters_, deadline, gil, [&] { return s.finished(); });
    lock.unlock();
    if (outcome == detail::Outcome::Interrupted) py::throw_python_error();
  }
  if (outcome == detail::Outcome::ShutDown) detail::throw_shut_down();
  return outcome == detail::Outcome::Ready;
}

Value Future::get(std::optional<double> timeout) const {
  if (!wait(timeout)) throw TaskTimeout("the task did not finish in time");
  if (state_->error_) std::rethrow_exception(state_->error_);
  return state_->result_;
}

std::exception_ptr Future::error() const {
  return state_->finished() ? state_->error_ : nullptr;
}

std::uint64_t Future::id() const noexcept { return state_->id_; }

Pool::Pool(PoolOptions options) {
  detail::require_single_core();
  detail::preload_on_caller();
  state_ = std::make_shared<detail::PoolState>(std::move(options));
  detail::LivePools& live = detail::live_pools();
  std::lock_guard lock(live.mu);
  std::erase_if(live.pools, [](const std::weak_ptr<detail::PoolState>& w) { return w.expired(); });
  live.pools.push_back(state_);
}

Pool::~Pool() {
  bool started;
  {
    detail::Lock lock(state_->mu_);
    started = !state_->shut_down_;
  }
  // After an explicit shutdown the workers end on their own; otherwise wait
  // for the submitted tasks, as shutdown() does, unless this is one of the
  // pool's own workers (which would wait for itself).
  bool own_worker = detail::t_worker_of == state_.get();
  if (started) state_->shutdown(/*wait=*/!own_worker, /*cancel_pending=*/false,
                                /*interruptible=*/false);
}

Future Pool::submit(Value callable, Value args, Value kwargs, Completion on_done) {
  if (args.kind() != Value::Kind::Tuple) throw InterpreterError("submit() takes args as a tuple");
  if (!kwargs.is_none() && kwargs.kind() != Value::Kind::Dict) {
    throw InterpreterError("submit() takes kwargs as a dict or None");
  }
  auto task = std::make_shared<TaskState>(std::move(callable), std::move(args), std::move(kwargs),
                                          TaskState::Mode::Call, std::move(on_done));
  state_->submit(task);
  return Future(task);
}

Future Pool::submit_batch(Value callable, Value items, Completion on_done) {
  if (items.kind() != Value::Kind::List) {
    throw InterpreterError("submit_batch() takes a list of argument tuples");
  }
  for (const Value& item : items.items()) {
    if (item.kind() != Value::Kind::Tuple) {
      throw InterpreterError("submit_batch() takes a list of argument tuples");
    }
  }
  auto task = std::make_shared<TaskState>(std::move(callable), std::move(items), Value(),
                                          TaskState::Mode::Batch, std::move(on_done));
  state_->submit(task);
  return Future(task);
}

Future Pool::submit_each(Value callable, Value items, Completion on_done) {
  if (items.kind() != Value::Kind::List) throw InterpreterError("submit_each() takes a list");
  auto task = std::make_shared<TaskState>(std::move(callable), std::move(items), Value(),
                                          TaskState::Mode::Each, std::move(on_done));
  state_->submit(task);
  return Future(task);
}

void Pool::shutdown(bool wait, bool cancel_pending) { state_->shutdown(wait, cancel_pending); }

std::size_t Pool::max_workers() const noexcept { return state_->max_workers_; }

std::size_t Pool::worker_count() const noexcept {
  detail::Lock lock(state_->mu_);
  return state_->live_;
}

std::vector<std::int64_t> Pool::interpreter_ids() const {
  std::vector<std::int64_t> ids;
  detail::Lock lock(state_->mu_);
  for (auto& interp : state_->interps_) ids.push_back(interp->id_);
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::size_t Pool::pending() const noexcept {
  detail::Lock lock(state_->mu_);
  return static_cast<std::size_t>(
      std::count_if(state_->queue_.begin(), state_->queue_.end(), [](const auto& task) {
        return task->phase_.load() == detail::kPending;
      }));
}

bool Pool::is_shut_down() const noexcept {
  detail::Lock lock(state_->mu_);
  return state_->shut_down_;
}

std::optional<PoolBroken> Pool::broken() const {
  detail::Lock lock(state_->mu_);
  return state_->broken_;
}

}  // namespace subinterp
