// Errors of the core, as C++ types.
//
// The core never makes Python exception objects for the caller: it throws
// these types, and the boundary (the extension module, or a C++ host) turns
// them into whatever the receiving side needs (DESIGN.md, invariant 5).
#pragma once

#include "subinterp/export.hpp"

#include <Python.h>

#include <exception>
#include <memory>
#include <stdexcept>
#include <string>

#include "subinterp/ref.hpp"
#include "subinterp/snapshot.hpp"

// The first statement of every `catch (...)` that may see a thread being
// ended by CPython at exit: pthread_exit unwinds the thread's C++ frames with
// an exception (abi::__forced_unwind) that must not be swallowed, or glibc
// aborts the process. It is told apart as an exception that is not a C++ one
// (std::current_exception() is empty for those), not with
// `catch (abi::__forced_unwind&)`: __cxa_begin_catch gives a null object for
// it, and binding the reference to it is undefined behaviour that UBSan
// reports (and, with halt_on_error, turns into a failed exit).
#define SUBINTERP_RETHROW_FORCED_UNWIND \
  if (!std::current_exception()) throw

namespace subinterp {

// Base of every error the core reports.
class SUBINTERP_API Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Misuse of an interpreter: closing a running one, running one that is
// already running, touching one the runtime does not own.
class SUBINTERP_API InterpreterError : public Error {
 public:
  using Error::Error;
};

// The interpreter id names no live interpreter (never existed, or closed).
class SUBINTERP_API InterpreterNotFound : public InterpreterError {
 public:
  using InterpreterError::InterpreterError;
};

// A value cannot move between interpreters. `path()` says where it sits in
// the value that was being captured ("args[1]['key']"), `type_name()` what it
// is, `reason()` why (usually the pickling error).
class SUBINTERP_API NotShareable : public Error {
 public:
  NotShareable(std::string type_name, std::string reason, std::string path = {});

  const std::string& type_name() const noexcept { return type_name_; }
  const std::string& reason() const noexcept { return reason_; }
  const std::string& path() const noexcept { return path_; }

  // Adds an outer step ("args", "[1]", "['key']") in front of the path.
  void prepend(std::string_view step);
  const char* what() const noexcept override { return message_.c_str(); }

  // A value captured in one interpreter that the receiving one could not
  // make again (an object whose unpickling fails there): "<what> not
  // shareable", with that failure as the cause.
  static NotShareable not_rebuilt(std::string what, ExceptionSnapshot cause);
  // The receiving interpreter's failure, for not_rebuilt() errors.
  const std::shared_ptr<const ExceptionSnapshot>& cause() const noexcept { return cause_; }

 private:
  void update_message();

  std::string message_;
  std::string type_name_;
  std::string reason_;
  std::string path_;
  std::shared_ptr<const ExceptionSnapshot> cause_;
};

// Code run in another interpreter raised an exception that it did not catch.
class SUBINTERP_API ExecutionFailed : public Error {
 public:
  explicit ExecutionFailed(ExceptionSnapshot snapshot);
  const ExceptionSnapshot& snapshot() const noexcept { return snapshot_; }

 private:
  ExceptionSnapshot snapshot_;
};

namespace py {

// A Python exception that is pending in the interpreter attached on this
// thread, taken out of the thread state so C++ can unwind. It holds a Python
// object: it must be caught and either restored or converted to a snapshot
// before that interpreter's thread state is detached.
class SUBINTERP_API PythonError : public std::exception {
 public:
  // Takes the pending exception (there must be one).
  PythonError() noexcept;
  PythonError(PythonError&&) noexcept = default;
  PythonError& operator=(PythonError&&) noexcept = default;

  const char* what() const noexcept override { return "Python exception"; }
  PyObject* exception() const noexcept { return exc_.get(); }
  bool matches(PyObject* type) const noexcept;
  // Makes the exception pending again; the error is empty afterwards.
  void restore() noexcept;
  ref take() noexcept { return std::move(exc_); }

 private:
  ref exc_;
};

[[noreturn]] SUBINTERP_API void throw_python_error();

// Wraps a C-API call that returns a new reference or NULL with an exception.
inline ref check(PyObject* obj) {
  if (obj == nullptr) throw_python_error();
  return ref::steal(obj);
}
// Wraps a C-API call that returns -1 with an exception set.
inline int check(int rc) {
  if (rc < 0) throw_python_error();
  return rc;
}

}  // namespace py
}  // namespace subinterp
