// Owning references to Python objects.
//
// A `py::ref` owns one strong reference to a PyObject of the interpreter whose
// thread state is attached on the current thread. It must be created, copied
// and destroyed only while that interpreter's thread state is attached: a ref
// never outlives the `ThreadStateGuard` it was made under, and never crosses
// interpreters (DESIGN.md, invariant 1).
#pragma once

#include "subinterp/export.hpp"

#include <Python.h>

#include <atomic>
#include <utility>

namespace subinterp {
namespace detail {
// Set by shutdown(). While CPython finalizes the process, a thread other
// than the finalizing one that tries to take a GIL is ended by CPython
// (pthread_exit), which unwinds the C++ frames on its stack: their
// destructors must then leave Python alone (its objects may be gone).
extern SUBINTERP_API std::atomic<bool> g_exit_started;
SUBINTERP_API bool python_unusable_here() noexcept;
// Blocks the calling thread until the process ends, as CPython 3.14 does with
// threads that try to run Python while it finalizes: neither returning into
// Python code without a thread state nor taking a GIL (which CPython answers
// with pthread_exit, fatal inside a destructor) is possible then.
[[noreturn]] SUBINTERP_API void hang_thread() noexcept;
}  // namespace detail

// True on a thread that must not touch Python any more (see above): guards
// that would attach a thread state again call detail::hang_thread() instead.
// Cheap: one relaxed load until shutdown() has run.
inline bool python_unusable() noexcept {
  return detail::g_exit_started.load(std::memory_order_relaxed) &&
         detail::python_unusable_here();
}

}  // namespace subinterp

namespace subinterp::py {

class SUBINTERP_API ref {
 public:
  ref() noexcept = default;
  ref(const ref& other) noexcept : ptr_(other.ptr_) { Py_XINCREF(ptr_); }
  ref(ref&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
  ~ref() {
    if (ptr_ != nullptr && !python_unusable()) Py_DECREF(ptr_);
  }

  // Installs the new pointer before dropping the old one: the decref can run
  // arbitrary code that may look at this ref again.
  ref& operator=(ref other) noexcept {
    PyObject* old = std::exchange(ptr_, std::exchange(other.ptr_, nullptr));
    Py_XDECREF(old);
    return *this;
  }

  // Takes over a new reference (the result of most C-API calls).
  static ref steal(PyObject* obj) noexcept {
    ref r;
    r.ptr_ = obj;
    return r;
  }
  // Adds a reference to a borrowed pointer.
  static ref borrow(PyObject* obj) noexcept {
    Py_XINCREF(obj);
    return steal(obj);
  }

  PyObject* get() const noexcept { return ptr_; }
  PyObject* release() noexcept { return std::exchange(ptr_, nullptr); }
  explicit operator bool() const noexcept { return ptr_ != nullptr; }

 private:
  PyObject* ptr_ = nullptr;
};

}  // namespace subinterp::py
