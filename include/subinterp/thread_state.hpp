// Attaching a thread state on the current thread.
#pragma once

#include "subinterp/export.hpp"

#include <Python.h>

#include "subinterp/ref.hpp"

namespace subinterp {

// The thread state attached on this thread, or nullptr.
inline PyThreadState* current_thread_state() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
  return PyThreadState_GetUnchecked();
#else
  // 3.12 has no public unchecked getter; PyThreadState_Get() aborts on NULL.
  return _PyThreadState_UncheckedGet();
#endif
}

// Attaches `target` on this thread for the guard's lifetime, detaching the
// thread state that was attached before (if any) and attaching it again on
// destruction. With per-interpreter GILs this releases the previous
// interpreter's GIL while the target runs. Not copyable; strictly nested.
class SUBINTERP_API ThreadStateGuard {
 public:
  // Not noexcept, nor the destructor: while Python finalizes, CPython ends
  // a thread that takes a GIL with pthread_exit, which must unwind through.
  explicit ThreadStateGuard(PyThreadState* target)
      : target_(target), prev_(current_thread_state()) {
    if (prev_ == target_) return;
    if (prev_ != nullptr) PyEval_SaveThread();
    PyEval_RestoreThread(target_);
  }
  ~ThreadStateGuard() noexcept(false) {
    if (prev_ == target_) return;
    if (python_unusable()) detail::hang_thread();
    PyEval_SaveThread();
    if (prev_ != nullptr) PyEval_RestoreThread(prev_);
  }
  ThreadStateGuard(const ThreadStateGuard&) = delete;
  ThreadStateGuard& operator=(const ThreadStateGuard&) = delete;

 private:
  PyThreadState* target_ = nullptr;
  PyThreadState* prev_ = nullptr;
};

// Detaches whatever thread state is attached for the guard's lifetime (to
// block without holding a GIL) and attaches it again afterwards.
class SUBINTERP_API DetachGuard {
 public:
  DetachGuard() noexcept : saved_(current_thread_state()) {
    if (saved_ != nullptr) PyEval_SaveThread();
  }
  ~DetachGuard() noexcept(false) {  // see ~ThreadStateGuard
    if (saved_ == nullptr) return;
    if (python_unusable()) detail::hang_thread();
    PyEval_RestoreThread(saved_);
  }
  DetachGuard(const DetachGuard&) = delete;
  DetachGuard& operator=(const DetachGuard&) = delete;

 private:
  PyThreadState* saved_;
};

}  // namespace subinterp
