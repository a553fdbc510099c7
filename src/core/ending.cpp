// Ending interpreters: off the caller's thread, without holding a lock while
// the interpreter's own threads are waited for, and at process exit even
// when some of its threads never return.
//
// close() used to run Py_EndInterpreter on the one runtime thread under the
// lifecycle lock. Py_EndInterpreter first waits for the interpreter's
// threads and runs its exit functions: a thread that ran for minutes froze
// every create(), listing and close() of the process meanwhile, and an
// interpreter whose exit functions waited for a pool's workers (which end
// their own interpreters) never ended. Now each end runs on a thread of its
// own ("ender"): it waits for the threads and runs the exit functions with
// no lock held, then takes the lifecycle lock only for Py_EndInterpreter
// itself. The closing thread waits for the ender; in the main thread Ctrl-C
// ends that wait (the end goes on).
//
// CPython 3.12 and 3.13 accept Py_EndInterpreter with a thread state made on
// the ending thread for that purpose (CPython 3.13 ends leftover
// interpreters at exit that way); the thread states of other threads are
// deleted first, with the interpreter's GIL held.
#include <pthread.h>

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <cstring>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "internal.hpp"
#include "runtime.hpp"
#include "subinterp/thread_state.hpp"
#include "wait.hpp"

namespace subinterp::detail {

std::atomic<bool> g_exit_started{false};

struct EndJob {
  Mutex mu;
  WaitList waiters;    // guarded by mu
  bool done = false;   // guarded by mu
  bool ended = false;  // guarded by mu
  std::string error;   // guarded by mu; why the end was refused
  // Ends started on the ender thread while it held the lifecycle lock (an
  // Interpreter object dropped during Py_EndInterpreter): the ender waits
  // for them once it has released the lock. Touched by the ender only.
  std::vector<std::shared_ptr<EndJob>> nested;
};

namespace {

thread_local bool t_in_end = false;
thread_local EndJob* t_job = nullptr;  // the job this ender thread runs

std::atomic<std::thread::id> g_exit_thread{};

bool runtime_finalizing() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;  // 3.12 has no public name for it
#endif
}

// Run in the interpreter, on the ender, before Py_EndInterpreter: what that
// would do first (threading's exit callbacks, joining the non-daemon
// threads, atexit), but with no lock held. What is left for
// Py_EndInterpreter to wait for is then nothing.
constexpr const char* kBeforeEnd = R"(
def _subinterp_before_end():
    import sys
    def report():
        try:
            import traceback
            traceback.print_exc()
        except BaseException:
            pass
    threading = sys.modules.get('threading')
    if threading is not None:
        calls = getattr(threading, '_threading_atexits', None)
        while calls:
            call = calls.pop()
            try:
                call()
            except BaseException:
                report()
        try:
            join_all = getattr(threading, '_thread_shutdown', None)
            if join_all is not None:
                join_all()
            else:
                # 3.12: the lock of the thread that imported threading here
                # goes with its thread state, which is deleted after this.
                main = getattr(threading, '_main_thread', None)
                main_lock = getattr(main, '_tstate_lock', None)
                while True:
                    with threading._shutdown_locks_lock:
                        locks = list(threading._shutdown_locks)
                        threading._shutdown_locks.clear()
                    locks = [lock for lock in locks if lock is not main_lock]
                    if not locks:
                        break
                    for lock in locks:
                        lock.acquire()
                        lock.release()
                # When that thread state is gone already (a thread that served
                # the interpreter for a while), threading._shutdown() in
                # Py_EndInterpreter would take this thread, if the system gave
                # it the same thread id, for that main thread, and fail its
                # assertion on the released lock. It is no thread any more.
                if main is not None and main_lock is not None and not main_lock.locked():
                    main._ident = None
        except BaseException:
            report()
    try:
        import atexit
        atexit._run_exitfuncs()
    except BaseException:
        report()
_subinterp_before_end()
)";

// At exit, for an interpreter whose threads never returned: its threading
// module must not wait for them in Py_EndInterpreter.
constexpr const char* kSkipThreadJoin = R"(
import sys
_t = sys.modules.get('threading')
if _t is not None:
    _t._shutdown = lambda: None
del _t
)";

// Runs `source` in a namespace of its own in the attached interpreter;
// errors are printed.
void run_snippet(const char* source) {
  PyObject* ns = PyDict_New();
  PyObject* builtins = ns != nullptr ? PyImport_ImportModule("builtins") : nullptr;
  PyObject* out = nullptr;
  if (builtins != nullptr && PyDict_SetItemString(ns, "__builtins__", builtins) == 0) {
    out = PyRun_String(source, Py_file_input, ns, ns);
  }
  if (out == nullptr) PyErr_Print();
  Py_XDECREF(out);
  Py_XDECREF(builtins);
  Py_XDECREF(ns);
}

// Thread states of `interp` other than `mine` and the ones in `known`
// (the interpreter's GIL held: its threads cannot add or delete one).
std::size_t count_strangers(PyInterpreterState* interp, PyThreadState* mine,
                            PyThreadState* home, const ThreadStates& known) {
  std::size_t n = 0;
  for (PyThreadState* t = PyInterpreterState_ThreadHead(interp); t != nullptr;
       t = PyThreadState_Next(t)) {
    if (t == mine || t == home) continue;
    bool cached = false;
    for (auto& [thread, tstate] : known) cached = cached || tstate == t;
    if (!cached) ++n;
  }
  return n;
}

// Ends the interpreter on this thread (which has no thread state attached).
// False, with `error` set, when threads of its own still run after the
// wait (threads that threading does not know, such as _thread's).
bool end_now(InterpreterState& s, const ThreadStates& others, std::string& error) {
  PyThreadState* fresh = PyThreadState_New(s.interp_);
  if (fresh == nullptr) {
    error = "could not create a thread state to end interpreter " + std::to_string(s.id_);
    return false;
  }
  PyEval_RestoreThread(fresh);
  run_snippet(kBeforeEnd);
  // Lock order: the lifecycle lock, then a GIL.
  PyEval_SaveThread();
  std::unique_lock ending(lifecycle_mutex());
  PyEval_RestoreThread(fresh);
  if (std::size_t n = count_strangers(s.interp_, fresh, s.home_, others); n > 0) {
    PyThreadState_Clear(fresh);
    PyThreadState_DeleteCurrent();
    error = "interpreter " + std::to_string(s.id_) + " still has " + std::to_string(n) +
            " thread(s) running that close() does not wait for (daemon threads, or threads started with _thread): it stays open";
    return false;
  }
  // These belong to threads that attached another thread state after them
  // (see Attachment), or to the runtime thread (the creating one): none is
  // attached anywhere, and none is any thread's PyGILState slot.
  for (auto& [thread, tstate] : others) {
    PyThreadState_Clear(tstate);
    PyThreadState_Delete(tstate);
  }
  _PyInterpreterState_SetNotRunningMain(s.interp_);  // set at creation, with home_
  PyThreadState_Clear(s.home_);
  PyThreadState_Delete(s.home_);
  {
    std::lock_guard lock(s.mu_);
    s.in_end_ = true;
  }
  t_in_end = true;
  Py_EndInterpreter(fresh);
  t_in_end = false;
  return true;
}

void finish(EndJob& job, bool ended, std::string error) {
  Lock lock(job.mu);
  job.done = true;
  job.ended = ended;
  job.error = std::move(error);
  job.waiters.wake_all();
}

void ender_main(std::shared_ptr<InterpreterState> state, std::shared_ptr<EndJob> job,
                ThreadStates others) {
  pthread_setname_np(pthread_self(), "subinterp-end");
  t_job = job.get();
  std::string error;
  bool ended = false;
  try {
    ended = end_now(*state, others, error);
  } catch (std::exception& e) {
    error = e.what();
  }
  for (auto& nested : job->nested) wait_end(nested);
  job->nested.clear();
  if (ended) {
    unregister_owned(state->id_);
    queues_interpreter_closed(state->id_);
  } else {
    std::lock_guard lock(state->mu_);
    state->closed_ = false;
    state->ending_.reset();
    state->tstates_.merge(others);
    state->idle_.notify_all();
  }
  finish(*job, ended, std::move(error));
}

// Ends, on the finalizing thread, an interpreter that shutdown() could not
// end: the runtime is finalizing, so no other thread can take a GIL any more
// (CPython ends such threads, or they never return from C code). Their
// thread states are deleted and the interpreter is ended without joining
// them. False when its end had started already elsewhere.
bool end_stuck(InterpreterState& s) {
  ThreadStates cached;
  {
    std::lock_guard lock(s.mu_);
    if (s.in_end_) return false;
    s.closed_ = true;
    s.in_end_ = true;
    cached.swap(s.tstates_);  // deleted below with every other one
  }
  PyThreadState* mine = PyEval_SaveThread();
  PyThreadState* fresh = PyThreadState_New(s.interp_);
  if (fresh == nullptr) {
    PyEval_RestoreThread(mine);
    return false;
  }
  PyEval_RestoreThread(fresh);
  // Any thread state but the creating one may belong to a thread that still
  // runs here (cached ones too: this end did not wait for attachments). A
  // thread waiting for this GIL notices the finalization when its wait times
  // out (one switch interval) while the GIL is still held, and exits: give
  // such threads that long, several times over, before the GIL goes with
  // the interpreter.
  if (count_strangers(s.interp_, fresh, s.home_, {}) > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  _PyInterpreterState_SetNotRunningMain(s.interp_);
  for (PyThreadState* t = PyInterpreterState_ThreadHead(s.interp_); t != nullptr;) {
    PyThreadState* next = PyThreadState_Next(t);
    if (t != fresh) {
      PyThreadState_Clear(t);
      PyThreadState_Delete(t);
    }
    t = next;
  }
  run_snippet(kSkipThreadJoin);
  t_in_end = true;
  Py_EndInterpreter(fresh);
  t_in_end = false;
  PyEval_RestoreThread(mine);
  unregister_owned(s.id_);
  return true;
}

// Ends what shutdown() could not, on the finalizing thread. CPython calls it
// through the sentinel below, after it has marked the runtime finalizing
// (no other thread can take a GIL from then on) and before it looks for
// leftover sub-interpreters (3.12 aborts on one, 3.13 ends it assuming no
// thread of its own still exists).
void end_leftovers() {
  PyObject* pending = PyErr_GetRaisedException();
  // An end started after shutdown() (a reference dropped by a late
  // thread) finishes on its ender if it can: give it a moment.
  const auto deadline = Clock::now() + std::chrono::seconds(3);
  for (auto& state : all_owned()) {
    std::shared_ptr<EndJob> job;
    {
      std::lock_guard lock(state->mu_);
      job = state->ending_;
    }
    if (job) wait_end(job, deadline);
  }
  for (;;) {
    bool progress = false;
    std::vector<std::shared_ptr<InterpreterState>> left = all_owned();
    for (auto& state : left) {
      if (end_stuck(*state)) {
        progress = true;
      } else {
        std::fprintf(stderr,
                     "subinterp: interpreter %lld could not be ended at exit (its end "
                     "was blocked)\n",
                     static_cast<long long>(state->id_));
      }
    }
    if (!progress || left.empty()) break;
  }
  subinterp_keep_parser_keywords();  // after the last interpreter's end
  PyErr_SetRaisedException(pending);
}

constexpr const char* kSentinel = "subinterp.exit_sentinel";

void sentinel_released(PyObject* capsule) {
  (void)capsule;
  if (std::this_thread::get_id() == g_exit_thread.load() && runtime_finalizing()) {
    end_leftovers();
  }
}

// A thread that holds a thread state of the main interpreter and never
// runs Python again. CPython clears the thread states of such threads on
// the finalizing thread right after it has marked the runtime finalizing;
// the capsule in this one's dict then runs end_leftovers(). (An audit hook
// would come too late on 3.13, which ends leftover interpreters first.)
void start_sentinel() {
  struct Ready {
    std::mutex mu;
    std::condition_variable cv;
    bool ready = false;
  };
  auto ready = std::make_shared<Ready>();
  std::thread([ready] {
    pthread_setname_np(pthread_self(), "subinterp-exit");
    PyThreadState* tstate = PyThreadState_New(PyInterpreterState_Main());
    if (tstate != nullptr) {
      PyEval_RestoreThread(tstate);
      PyObject* dict = PyThreadState_GetDict();
      PyObject* capsule = PyCapsule_New(&g_exit_started, kSentinel, sentinel_released);
      if (dict == nullptr || capsule == nullptr ||
          PyDict_SetItemString(dict, kSentinel, capsule) < 0) {
        PyErr_Print();
      }
      Py_XDECREF(capsule);
      PyEval_SaveThread();
    }
    {
      std::lock_guard lock(ready->mu);
      ready->ready = true;
    }
    ready->cv.notify_all();
    for (;;) pause();  // until the process ends
  }).detach();
  DetachGuard detached;  // the sentinel needs the main GIL
  std::unique_lock lock(ready->mu);
  ready->cv.wait(lock, [&] { return ready->ready; });
}

}  // namespace

void hang_thread() noexcept {
  for (;;) pause();
}

bool python_unusable_here() noexcept {
  return std::this_thread::get_id() != g_exit_thread.load() && runtime_finalizing();
}

void note_exit_thread() {
  g_exit_thread.store(std::this_thread::get_id());
  g_exit_started.store(true);
}

bool in_interpreter_end() noexcept { return t_in_end; }

std::shared_ptr<EndJob> new_end_job() { return std::make_shared<EndJob>(); }

void start_end(const std::shared_ptr<InterpreterState>& state, const std::shared_ptr<EndJob>& job,
               ThreadStates others) {
  try {
    std::thread(ender_main, state, job, others).detach();
  } catch (std::system_error&) {
    // No thread to be had: end it here (the caller's GIL released).
    DetachGuard detached;
    ender_main(state, job, std::move(others));
  }
}

EndWait wait_end(const std::shared_ptr<EndJob>& job, const Deadline& deadline) {
  if (t_in_end) {
    // Waiting here would wait for the lock this thread holds.
    if (t_job != nullptr) t_job->nested.push_back(job);
    return EndWait::NotWaited;
  }
  GilRelease gil;
  Lock lock(job->mu);
  while (!job->done) {
    if (expired(deadline)) return EndWait::TimedOut;
    Waiter w;
    job->waiters.push(&w);
    SleepResult r = sleep(w, lock, deadline, gil);
    if (!w.woken()) job->waiters.remove(&w);
    if (r == SleepResult::Interrupted) return EndWait::Interrupted;
  }
  return job->ended ? EndWait::Ended : EndWait::Refused;
}

std::string end_error(const EndJob& job) {
  Lock lock(const_cast<EndJob&>(job).mu);
  return job.error;
}

void end_at_finalization(std::vector<std::shared_ptr<InterpreterState>> stuck) {
  static std::atomic<bool> started{false};
  if (stuck.empty() || started.exchange(true)) return;
  try {
    start_sentinel();
  } catch (std::system_error&) {
    std::fprintf(stderr, "subinterp: %zu interpreter(s) still run at exit and cannot be ended\n",
                 stuck.size());
  }
}

}  // namespace subinterp::detail
