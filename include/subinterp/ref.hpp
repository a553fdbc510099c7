// Owning references to Python objects.
//
// A `py::ref` owns one strong reference to a PyObject of the interpreter whose
// thread state is attached on the current thread. It must be created, copied
// and destroyed only while that interpreter's thread state is attached: a ref
// never outlives the `ThreadStateGuard` it was made under, and never crosses
// interpreters (DESIGN.md, invariant 1).
#pragma once

#include <Python.h>

#include <utility>

namespace subinterp::py {

class ref {
 public:
  ref() noexcept = default;
  ref(const ref& other) noexcept : ptr_(other.ptr_) { Py_XINCREF(ptr_); }
  ref(ref&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
  ~ref() { Py_XDECREF(ptr_); }

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
