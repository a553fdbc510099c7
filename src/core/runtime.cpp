#include "runtime.hpp"

#include <pthread.h>

#include <atomic>
#include <cstdio>
#include <deque>
#include <exception>
#include <utility>

#include "subinterp/thread_state.hpp"

namespace subinterp::detail {
namespace {

// Set once shutdown() has run: from then on nothing touches Python from a
// thread-exit hook.
std::atomic<bool> g_shut_down{false};

// The thread that creates and ends interpreters. CPython 3.12 requires an
// interpreter to be ended on the thread that created it; one thread for all
// of them satisfies that wherever close() is called from. It keeps a thread
// state of the main interpreter (`anchor_`) to create interpreters under.
class RuntimeThread {
 public:
  RuntimeThread() : thread_([this] { loop(); }) {}

  void run(const std::function<void(PyThreadState*)>& job) {
    if (std::this_thread::get_id() == thread_.get_id()) {
      // A job that runs Python code can come back here: ending an
      // interpreter drops the objects in it, and an Interpreter object
      // among them may close another interpreter. Run such a job at once.
      DetachGuard detached;
      job(anchor_);
      return;
    }
    std::exception_ptr error;
    bool done = false;
    {
      DetachGuard detached;
      std::unique_lock lock(mu_);
      jobs_.push_back([&] {
        try {
          job(anchor_);
        } catch (...) {
          SUBINTERP_RETHROW_FORCED_UNWIND;
          error = std::current_exception();
        }
        std::lock_guard done_lock(mu_);
        done = true;
        done_cv_.notify_all();
      });
      cv_.notify_one();
      done_cv_.wait(lock, [&] { return done; });
    }
    if (error) std::rethrow_exception(error);
  }

  // Deletes the anchor thread state and joins. The caller's thread state is
  // detached meanwhile (the anchor needs the main GIL).
  void stop() {
    DetachGuard detached;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      cv_.notify_one();
    }
    thread_.join();
  }

 private:
  void loop() {
    anchor_ = PyThreadState_New(PyInterpreterState_Main());
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) break;
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
    lock.unlock();
    PyEval_RestoreThread(anchor_);
    PyThreadState_Clear(anchor_);
    PyThreadState_DeleteCurrent();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable done_cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  PyThreadState* anchor_ = nullptr;
  std::thread thread_;  // last: started after the other members exist
};

struct Registry {
  std::mutex mu;
  std::map<std::int64_t, std::shared_ptr<InterpreterState>> owned;
  std::shared_ptr<InterpreterState> main;
  std::unique_ptr<RuntimeThread> thread;
};

struct Process {
  Registry* registry = new Registry();
  std::recursive_mutex* lifecycle = new std::recursive_mutex();
};

// In a child made by fork() only the forking thread survives, and CPython
// deletes every interpreter but the main one (PyOS_AfterFork_Child). Start
// afresh there: the old registry and locks may be held by threads that no
// longer exist, and the runtime thread is gone. The old objects are leaked
// on purpose; the states still referenced by handles are marked closed.
void after_fork_in_child();

// Never destroyed: thread-exit hooks may run after static destructors.
Process& process() {
  static Process* p = [] {
    pthread_atfork(nullptr, nullptr, after_fork_in_child);
    return new Process();
  }();
  return *p;
}

Registry& registry() { return *process().registry; }

void after_fork_in_child() {
  Process& p = process();
  for (auto& [id, state] : p.registry->owned) state->closed_ = true;
  if (p.registry->main) p.registry->main->tstates_.clear();
  (void)p.registry->thread.release();  // its thread does not exist here
  p.registry = new Registry();
  p.lifecycle = new std::recursive_mutex();
}

// Interpreters for which this thread has a cached thread state, so the
// thread can delete them, on itself, when it exits.
struct ThreadRecord {
  std::vector<std::weak_ptr<InterpreterState>> used;
  ~ThreadRecord();
};
thread_local ThreadRecord t_record;

void delete_cached(const std::shared_ptr<InterpreterState>& s) {
  PyThreadState* tstate = nullptr;
  {
    std::lock_guard lock(s->mu_);
    if (s->closed_) return;  // close() deleted it already
    auto it = s->tstates_.find(std::this_thread::get_id());
    if (it == s->tstates_.end()) return;
    tstate = it->second;
    s->tstates_.erase(it);
    ++s->attached_;
  }
  PyEval_RestoreThread(tstate);
  PyThreadState_Clear(tstate);
  PyThreadState_DeleteCurrent();
  std::lock_guard lock(s->mu_);
  --s->attached_;
  s->idle_.notify_all();
}

ThreadRecord::~ThreadRecord() {
  if (g_shut_down.load() || !Py_IsInitialized()) return;
  // A thread exits with no thread state attached; if one still is, touching
  // Python here could deadlock, so leave the cached ones to close().
  if (current_thread_state() != nullptr) return;
  for (auto& weak : used) {
    if (auto s = weak.lock()) delete_cached(s);
  }
}

void remember(const std::shared_ptr<InterpreterState>& state) {
  auto& used = t_record.used;
  if (used.size() >= 16) {
    std::erase_if(used, [](const std::weak_ptr<InterpreterState>& w) { return w.expired(); });
  }
  used.push_back(state);
}

}  // namespace

void run_on_runtime_thread(const std::function<void(PyThreadState*)>& job) {
  Registry& r = registry();
  RuntimeThread* thread = nullptr;
  {
    std::lock_guard lock(r.mu);
    if (g_shut_down.load()) throw InterpreterError("the subinterp runtime has been shut down");
    if (!r.thread) r.thread = std::make_unique<RuntimeThread>();
    thread = r.thread.get();
  }
  thread->run(job);
}

std::recursive_mutex& lifecycle_mutex() { return *process().lifecycle; }

std::shared_ptr<InterpreterState> find_owned(std::int64_t id) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  auto it = r.owned.find(id);
  return it == r.owned.end() ? nullptr : it->second;
}

std::shared_ptr<InterpreterState> main_state() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  if (!r.main) {
    PyInterpreterState* interp = PyInterpreterState_Main();
    r.main = std::make_shared<InterpreterState>(interp, PyInterpreterState_GetID(interp),
                                                Whence::Runtime, nullptr);
  }
  return r.main;
}

void register_owned(const std::shared_ptr<InterpreterState>& state) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  r.owned.emplace(state->id_, state);
}

void unregister_owned(std::int64_t id) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  r.owned.erase(id);
}

std::vector<std::shared_ptr<InterpreterState>> all_owned() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  std::vector<std::shared_ptr<InterpreterState>> result;
  for (auto& [id, state] : r.owned) result.push_back(state);
  return result;
}

Attachment::Attachment(const std::shared_ptr<InterpreterState>& state, bool run)
    : state_(state), run_(run) {
  InterpreterState& s = *state_;
  prev_ = current_thread_state();
  bool current = prev_ != nullptr && PyThreadState_GetInterpreter(prev_) == s.interp_;
  {
    std::lock_guard lock(s.mu_);
    if (s.closed_) {
      throw InterpreterNotFound("interpreter " + std::to_string(s.id_) + " has been closed");
    }
    // The main interpreter always runs its own __main__ code; calls into it
    // from other interpreters behave like calls from more threads.
    run_ = run && s.home_ != nullptr;
    if (run_ && s.worker_thread_ != std::thread::id() &&
        s.worker_thread_ != std::this_thread::get_id()) {
      throw InterpreterError("interpreter " + std::to_string(s.id_) +
                             " belongs to a worker pool: submit tasks to the pool instead");
    }
    if (run_ && s.running_) {
      throw InterpreterError("interpreter " + std::to_string(s.id_) + " is already running");
    }
    if (run_) s.running_ = true;
    ++s.attached_;
    if (!current) {
      auto it = s.tstates_.find(std::this_thread::get_id());
      if (it != s.tstates_.end()) tstate_ = it->second;
    }
  }
  if (current) {
    tstate_ = prev_;
    return;
  }
  if (tstate_ == nullptr) {
    tstate_ = PyThreadState_New(s.interp_);
    if (tstate_ == nullptr) {
      std::lock_guard lock(s.mu_);
      --s.attached_;
      if (run_) s.running_ = false;
      s.idle_.notify_all();
      throw InterpreterError("could not create a thread state for interpreter " +
                             std::to_string(s.id_));
    }
    // Attaching binds a thread state to the thread's PyGILState slot until
    // another is attached. When nothing was attached before, this one keeps
    // the slot after we detach; deleting it later from another thread would
    // leave that slot dangling. So such a thread state is used once and
    // deleted here, on its own thread.
    temporary_ = prev_ == nullptr;
    if (!temporary_) {
      std::lock_guard lock(s.mu_);
      s.tstates_.emplace(std::this_thread::get_id(), tstate_);
      remember(state_);
    }
  }
  if (prev_ != nullptr) PyEval_SaveThread();
  PyEval_RestoreThread(tstate_);
  swapped_ = true;
}

Attachment::~Attachment() noexcept(false) {
  if (python_unusable()) hang_thread();  // CPython finalizes: see hang_thread
  if (leave()) close_released(state_);
}

bool Attachment::leave() {
  InterpreterState& s = *state_;
  if (swapped_) {
    if (temporary_) {
      PyThreadState_Clear(tstate_);
      PyThreadState_DeleteCurrent();
    } else {
      PyEval_SaveThread();
    }
    if (prev_ != nullptr) PyEval_RestoreThread(prev_);
  }
  bool close_now = false;
  {
    std::lock_guard lock(s.mu_);
    --s.attached_;
    if (run_) s.running_ = false;
    if (s.attached_ == 0 || run_) s.idle_.notify_all();
    close_now = run_ && s.close_when_released_ && s.refs_ == 0 && s.holds_ == 0 && !s.closed_;
  }
  return close_now;
}

void pin_thread_state(const std::shared_ptr<InterpreterState>& state) {
  InterpreterState& s = *state;
  PyThreadState* tstate = PyThreadState_New(s.interp_);
  if (tstate == nullptr) {
    throw InterpreterError("could not create a thread state for interpreter " +
                           std::to_string(s.id_));
  }
  std::unique_lock lock(s.mu_);
  if (s.closed_) {
    lock.unlock();
    PyThreadState_Delete(tstate);  // never attached
    throw InterpreterNotFound("interpreter " + std::to_string(s.id_) + " has been closed");
  }
  s.tstates_.emplace(std::this_thread::get_id(), tstate);
  remember(state);
}

void unpin_thread_state(const std::shared_ptr<InterpreterState>& state) { delete_cached(state); }

void shutdown_runtime() {
  Registry& r = registry();
  std::unique_ptr<RuntimeThread> thread;
  {
    std::lock_guard lock(r.mu);
    g_shut_down.store(true);
    thread = std::move(r.thread);
  }
  if (thread) thread->stop();
}

}  // namespace subinterp::detail
