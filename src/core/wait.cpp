#include "wait.hpp"

#include <cerrno>
#include <cmath>
#include <ctime>

#include "internal.hpp"
#include "subinterp/error.hpp"
#include "subinterp/thread_state.hpp"

namespace subinterp::detail {

std::atomic<bool> g_waits_refused{false};

Deadline deadline_after(std::optional<double> timeout) {
  if (!timeout) return std::nullopt;
  // About 30 years: beyond that, a wait is as good as forever and the
  // arithmetic below could overflow.
  constexpr double kForever = 1e9;
  if (!(*timeout < kForever)) return std::nullopt;
  double seconds = *timeout > 0 ? *timeout : 0.0;
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(seconds));
}

bool expired(const Deadline& deadline) { return deadline && Clock::now() >= *deadline; }

void WaitList::push(Waiter* w) noexcept {
  w->next = nullptr;
  w->prev = tail_;
  if (tail_ != nullptr) {
    tail_->next = w;
  } else {
    head_ = w;
  }
  tail_ = w;
}

void WaitList::remove(Waiter* w) noexcept {
  (w->prev != nullptr ? w->prev->next : head_) = w->next;
  (w->next != nullptr ? w->next->prev : tail_) = w->prev;
  w->prev = w->next = nullptr;
}

bool WaitList::wake_one(int status) noexcept {
  Waiter* w = head_;
  if (w == nullptr) return false;
  remove(w);
  w->wake(status);
  return true;
}

void WaitList::wake_all(int status) noexcept {
  while (wake_one(status)) {
  }
}

GilRelease::GilRelease() noexcept : tstate_(current_thread_state()) { release(); }

void GilRelease::release() noexcept {
  if (tstate_ != nullptr && released_ == nullptr) released_ = PyEval_SaveThread();
}

void GilRelease::acquire() {
  if (released_ == nullptr) return;
  if (python_unusable()) hang_thread();
  PyEval_RestoreThread(released_);
  released_ = nullptr;
}

namespace {

// One semaphore wait: 0 when posted, else ETIMEDOUT or EINTR.
int wait_once(sem_t* sem, const Deadline& deadline) {
  int rc;
  if (!deadline) {
    rc = sem_wait(sem);
  } else {
    auto since_epoch = deadline->time_since_epoch();
    auto secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(secs.count());
    ts.tv_nsec = static_cast<long>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch - secs).count());
    // steady_clock is CLOCK_MONOTONIC on Linux.
    rc = sem_clockwait(sem, CLOCK_MONOTONIC, &ts);
  }
  return rc == 0 ? 0 : errno;
}

}  // namespace

SleepResult sleep(Waiter& w, Lock& lock, const Deadline& deadline,
                  GilRelease& gil) {
  lock.unlock();
  gil.release();
  bool interrupted = false;
  for (;;) {
    int rc = wait_once(w.semaphore(), deadline);
    if (rc != EINTR) break;
    // A signal handler ran on this thread. Python runs its handlers only in
    // the main thread of the main interpreter; elsewhere this is a no-op.
    if (!gil.has_thread_state()) continue;
    gil.acquire();
    if (PyErr_CheckSignals() < 0) {
      interrupted = true;
      break;
    }
    gil.release();
  }
  lock.lock();
  if (interrupted) return SleepResult::Interrupted;
  return w.woken() ? SleepResult::Woken : SleepResult::TimedOut;
}

void throw_shut_down() {
  throw InterpreterError("the subinterp runtime is shutting down: blocking calls are refused");
}

}  // namespace subinterp::detail
