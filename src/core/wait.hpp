// Blocking waits for queues and channels (internal).
//
// A blocked thread sleeps on its own semaphore, not on a condition variable:
// a semaphore wait returns EINTR when a signal handler runs, so a wait in the
// main interpreter's main thread can run Python's signal handlers and stop on
// Ctrl-C (glibc's condition variables swallow EINTR). The GIL is released
// while asleep (DESIGN.md, invariant 4).
//
// Lock order: a GIL first, then a container's mutex. A thread that holds a
// container's mutex never waits for a GIL, so the GIL is only taken back
// after the mutex is released, or while the mutex is not held.
#pragma once

#include <Python.h>
#include <pthread.h>
#include <semaphore.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>

namespace subinterp::detail {

using Clock = std::chrono::steady_clock;
using Deadline = std::optional<Clock::time_point>;  // nullopt: wait forever

// The mutex of a queue or channel. Its critical sections are a few dozen
// instructions, and two busy threads (a producer and a consumer) take it in
// turn for every item: a collision should spin, not sleep. glibc's adaptive
// mutex spins briefly before it blocks; std::mutex goes to the kernel at once,
// which costs both sides a context switch.
class Mutex {
 public:
  Mutex() noexcept {
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&mu_, &attr);
    pthread_mutexattr_destroy(&attr);
  }
  ~Mutex() { pthread_mutex_destroy(&mu_); }
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() noexcept { pthread_mutex_lock(&mu_); }
  void unlock() noexcept { pthread_mutex_unlock(&mu_); }
  bool try_lock() noexcept { return pthread_mutex_trylock(&mu_) == 0; }

 private:
  pthread_mutex_t mu_;
};

using Lock = std::unique_lock<Mutex>;

// The deadline `timeout` seconds from now (nullopt: none). Timeouts too
// large to represent wait forever.
Deadline deadline_after(std::optional<double> timeout);
bool expired(const Deadline& deadline);

// One sleeping thread, linked into a container's list of waiters. Lives on
// the waiting thread's stack for one sleep; its fields are guarded by the
// container's mutex (woken() may also be polled without it).
class Waiter {
 public:
  Waiter() noexcept { sem_init(&sem_, 0, 0); }
  ~Waiter() { sem_destroy(&sem_); }
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  // Wakes the waiter; call with the container's mutex held. `status` tells
  // the waiter why (containers give their own meanings; 0 is "go on").
  void wake(int status = 0) noexcept {
    status_ = status;
    woken_.store(true, std::memory_order_release);
    sem_post(&sem_);
  }
  // Also read without the mutex, by a thread spinning before it sleeps; it
  // must then take the mutex before it trusts status() or ends the waiter.
  bool woken() const noexcept { return woken_.load(std::memory_order_acquire); }
  int status() const noexcept { return status_; }

  sem_t* semaphore() noexcept { return &sem_; }

  Waiter* prev = nullptr;
  Waiter* next = nullptr;

 private:
  sem_t sem_;
  std::atomic<bool> woken_{false};
  int status_ = 0;
};

// Waiters in arrival order. Guarded by the container's mutex.
class WaitList {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  void push(Waiter* w) noexcept;
  void remove(Waiter* w) noexcept;  // w must be in the list
  // Wakes (and unlinks) the oldest waiter; false when there is none.
  bool wake_one(int status = 0) noexcept;
  void wake_all(int status = 0) noexcept;

 private:
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
};

// Releases the GIL of the thread state attached on this thread (if any) for
// the object's lifetime, and lets a sleep take it back briefly to run signal
// handlers. Constructed with the container's mutex not held.
class GilRelease {
 public:
  GilRelease() noexcept;
  ~GilRelease() noexcept(false) { acquire(); }  // see ~ThreadStateGuard
  GilRelease(const GilRelease&) = delete;
  GilRelease& operator=(const GilRelease&) = delete;

  bool has_thread_state() const noexcept { return tstate_ != nullptr; }
  void acquire();
  void release() noexcept;

 private:
  PyThreadState* tstate_;              // attached at construction, or null
  PyThreadState* released_ = nullptr;  // set while released
};

enum class SleepResult {
  Woken,        // wake() was called
  TimedOut,     // the deadline passed first
  Interrupted,  // a signal handler raised; the GIL is held, the error pending
};

// Releases `lock` and the GIL, sleeps until `w` is woken, the deadline
// passes or a signal handler raises, then retakes `lock`. The caller linked
// `w` into a list before; on TimedOut / Interrupted it is still linked
// unless it was woken meanwhile (then the result is Woken, or Interrupted
// with w.woken() true).
SleepResult sleep(Waiter& w, Lock& lock, const Deadline& deadline,
                  GilRelease& gil);

// Set by shutdown(): blocking calls of queues and channels stop waiting.
extern std::atomic<bool> g_waits_refused;
inline bool waits_refused() noexcept { return g_waits_refused.load(std::memory_order_acquire); }

enum class Outcome { Ready, TimedOut, Interrupted, ShutDown };

// Sleeps in `list` until `ready()` (checked with `lock` held) is true, the
// deadline passes or a signal handler raises. Returns with `lock` held.
template <class Ready>
Outcome wait_until(Lock& lock, WaitList& list, const Deadline& deadline,
                   GilRelease& gil, Ready ready) {
  for (;;) {
    if (ready()) return Outcome::Ready;
    if (waits_refused()) return Outcome::ShutDown;
    if (expired(deadline)) return Outcome::TimedOut;
    Waiter w;
    list.push(&w);
    SleepResult r = sleep(w, lock, deadline, gil);
    if (!w.woken()) list.remove(&w);
    if (r == SleepResult::Interrupted) {
      // A wake-up meant for this thread is passed on, not lost.
      if (w.woken()) list.wake_one();
      return Outcome::Interrupted;
    }
  }
}

// How long a blocking call spins before it sleeps: a hand-off between two
// running interpreters then needs no system call on either side.
constexpr std::chrono::microseconds kSpin{20};
// How long a wait for a pool task's result spins: about one short task's
// round trip, so that a caller waiting for a quick task does not sleep.
constexpr std::chrono::microseconds kFutureSpin{50};

// Spins briefly (GIL held) until `ready()` is true or about `budget` passes.
// Hand-offs between two running interpreters then cost no system call.
template <class Ready>
bool spin_until(Ready ready, std::chrono::nanoseconds budget) {
  auto start = Clock::now();
  for (unsigned i = 1;; ++i) {
    if (ready()) return true;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
    if ((i & 63) == 0 && Clock::now() - start > budget) return false;
  }
}

}  // namespace subinterp::detail
