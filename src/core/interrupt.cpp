// Ctrl-C while the main thread runs code in a sub-interpreter.
//
// CPython runs signal handlers only in the main thread, and only while it
// runs the main interpreter: a SIGINT that arrives while the main thread
// runs a long loop in a sub-interpreter (Interpreter.call / exec) would be
// seen only when that loop ends. So for the time of such a run, a signal
// handler of ours sits in front of CPython's (which still runs first and
// records the signal), and wakes a watcher thread. The watcher raises
// KeyboardInterrupt in the sub-interpreter's code, as the main interpreter
// would in its own, when the main interpreter's SIGINT handler is Python's
// default one (a handler of the program's own runs when the call returns, as
// before). The caller then gets KeyboardInterrupt, not ExecutionFailed.
//
// A call blocked in C code (time.sleep, a lock) sees the exception when that
// returns: CPython does not interrupt C calls of other interpreters.
#include "interrupt.hpp"

#include <pthread.h>
#include <semaphore.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <mutex>
#include <thread>

#include "internal.hpp"
#include "wait.hpp"
#include "subinterp/error.hpp"

namespace subinterp::detail {
namespace {

struct Watch {
  std::mutex mu;  // held by the watcher while it interrupts a run
  std::shared_ptr<InterpreterState> target;  // guarded by mu
  unsigned long thread = 0;                  // guarded by mu
  bool injected = false;                     // guarded by mu
  sem_t wake;
  struct sigaction previous {};
  std::atomic<bool> watcher_started{false};
};

Watch& watch() {
  static Watch* w = [] {
    auto* made = new Watch();  // never destroyed: used by a signal handler
    sem_init(&made->wake, 0, 0);
    return made;
  }();
  return *w;
}

// Read by the signal handler: a run of the main thread is being watched.
std::atomic<bool> g_watching{false};

bool on_main_thread() noexcept {
  thread_local const bool main = syscall(SYS_gettid) == getpid();
  return main;
}

void on_sigint(int sig, siginfo_t* info, void* context) {
  int saved = errno;
  const struct sigaction& prev = watch().previous;
  if ((prev.sa_flags & SA_SIGINFO) != 0) {
    if (prev.sa_sigaction != nullptr) prev.sa_sigaction(sig, info, context);
  } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN &&
             prev.sa_handler != nullptr) {
    prev.sa_handler(sig);
  }
  if (g_watching.load(std::memory_order_acquire)) sem_post(&watch().wake);
  errno = saved;
}

// True when the main interpreter's Python-level SIGINT handler is Python's
// default one (which raises KeyboardInterrupt). With the main interpreter
// attached.
bool default_sigint_handler() {
  py::ref name = py::check(PyUnicode_FromString("signal"));
  py::ref module = py::ref::steal(PyImport_GetModule(name.get()));
  if (!module) {
    PyErr_Clear();
    return false;
  }
  py::ref getsignal = py::check(PyObject_GetAttrString(module.get(), "getsignal"));
  py::ref number = py::check(PyLong_FromLong(SIGINT));
  py::ref current = py::check(PyObject_CallOneArg(getsignal.get(), number.get()));
  py::ref fallback = py::check(PyObject_GetAttrString(module.get(), "default_int_handler"));
  return current.get() == fallback.get();
}

void interrupt_watched_run() {
  Watch& w = watch();
  std::lock_guard lock(w.mu);
  if (!w.target) return;
  try {
    {
      Attachment main(main_state(), /*run=*/false);
      if (!default_sigint_handler()) return;
    }
    Attachment sub(w.target, /*run=*/false);
    if (PyThreadState_SetAsyncExc(w.thread, PyExc_KeyboardInterrupt) > 0) w.injected = true;
  } catch (py::PythonError& e) {
    e.restore();
    PyErr_Clear();
  } catch (std::exception&) {
    // the interpreter was closed meanwhile: nothing to interrupt
  }
}

void watcher_main() {
  pthread_setname_np(pthread_self(), "subinterp-sigint");
  for (;;) {
    while (sem_wait(&watch().wake) != 0) {
    }
    if (python_unusable() || g_exit_started.load()) continue;
    interrupt_watched_run();
  }
}

// Puts on_sigint in front of the current SIGINT handler, if that is a
// function (CPython's, when Python handles SIGINT) and not on_sigint
// already (a later signal.signal() call puts CPython's back).
bool ensure_handler() {
  struct sigaction current {};
  if (sigaction(SIGINT, nullptr, &current) != 0) return false;
  if ((current.sa_flags & SA_SIGINFO) != 0 && current.sa_sigaction == on_sigint) return true;
  if ((current.sa_flags & SA_SIGINFO) == 0 &&
      (current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN)) {
    return false;  // Python does not handle SIGINT here
  }
  Watch& w = watch();
  if (!w.watcher_started.exchange(true)) {
    try {
      std::thread(watcher_main).detach();
    } catch (std::system_error&) {
      w.watcher_started.store(false);
      return false;
    }
  }
  w.previous = current;
  struct sigaction mine = current;
  mine.sa_sigaction = on_sigint;
  mine.sa_flags = (current.sa_flags | SA_SIGINFO) & ~SA_RESETHAND;
  return sigaction(SIGINT, &mine, nullptr) == 0;
}

// Whether on_sigint is in place, as last checked (a system call, so not on
// every run: at most every kRecheck). A handler change that Python makes
// (signal.signal, asyncio) is seen by the first run after it that starts
// kRecheck or more after the previous check.
constexpr std::chrono::milliseconds kRecheck{20};
std::atomic<bool> g_handler_in_place{false};
std::atomic<Clock::rep> g_checked_at{0};

bool handler_in_place() {
  Clock::rep now = Clock::now().time_since_epoch().count();
  Clock::rep last = g_checked_at.load(std::memory_order_relaxed);
  if (last != 0 && now - last < std::chrono::duration_cast<Clock::duration>(kRecheck).count()) {
    return g_handler_in_place.load(std::memory_order_relaxed);
  }
  bool in_place = ensure_handler();
  g_handler_in_place.store(in_place, std::memory_order_relaxed);
  g_checked_at.store(now, std::memory_order_relaxed);
  return in_place;
}

}  // namespace

MainRunWatch::MainRunWatch(const std::shared_ptr<InterpreterState>& state) {
  if (!on_main_thread() || g_exit_started.load(std::memory_order_relaxed)) return;
  if (!handler_in_place()) return;
  Watch& w = watch();
  std::lock_guard lock(w.mu);
  outer_ = std::move(w.target);
  outer_injected_ = w.injected;
  w.target = state;
  w.thread = PyThread_get_thread_ident();
  w.injected = false;
  g_watching.store(true, std::memory_order_release);
  active_ = true;
}

void MainRunWatch::end() {
  if (!active_) return;
  active_ = false;
  Watch& w = watch();
  std::shared_ptr<InterpreterState> target;
  {
    // Not with the sub-interpreter's GIL held: the watcher holds this lock
    // while it waits for that GIL.
    std::lock_guard lock(w.mu);
    target.swap(w.target);
    injected_ = w.injected;
    w.target = std::move(outer_);
    w.injected = outer_injected_;
    g_watching.store(w.target != nullptr, std::memory_order_release);
  }
}

MainRunWatch::~MainRunWatch() {
  if (!python_unusable()) end();
}

void MainRunWatch::clear_pending(const std::shared_ptr<InterpreterState>& state) {
  // The exception was set after the code had returned: it would fire in the
  // next run of this thread there.
  try {
    Attachment sub(state, /*run=*/false);
    PyThreadState_SetAsyncExc(PyThread_get_thread_ident(), nullptr);
  } catch (std::exception&) {
    // closed meanwhile: its thread states are gone
  }
}

[[noreturn]] void MainRunWatch::raise_keyboard_interrupt() {
  // The main interpreter has the signal pending: its handler raises
  // KeyboardInterrupt (or whatever the program's handler raises).
  if (PyErr_CheckSignals() < 0) py::throw_python_error();
  PyErr_SetNone(PyExc_KeyboardInterrupt);
  py::throw_python_error();
}

}  // namespace subinterp::detail
