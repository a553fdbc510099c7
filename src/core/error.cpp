#include "subinterp/error.hpp"

#include <string_view>
#include <utility>

namespace subinterp {

NotShareable::NotShareable(std::string type_name, std::string reason, std::string path)
    : Error(""),
      type_name_(std::move(type_name)),
      reason_(std::move(reason)),
      path_(std::move(path)) {
  update_message();
}

void NotShareable::prepend(std::string_view step) {
  path_.insert(0, step);
  update_message();
}

NotShareable NotShareable::not_rebuilt(std::string what, ExceptionSnapshot cause) {
  NotShareable e{std::string(), std::string()};
  e.message_ = what + " not shareable: the receiving interpreter could not make them again (" +
               cause.type_name + ": " + cause.msg + ")";
  e.cause_ = std::make_shared<const ExceptionSnapshot>(std::move(cause));
  return e;
}

void NotShareable::update_message() {
  if (cause_) return;  // not_rebuilt()'s message stays
  std::string msg = "cannot share object of type '" + type_name_ + "'";
  if (!path_.empty()) msg += " at " + path_;
  if (!reason_.empty()) msg += ": " + reason_;
  message_ = std::move(msg);
}

ExecutionFailed::ExecutionFailed(ExceptionSnapshot snapshot)
    : Error(snapshot.type_name + ": " + snapshot.msg), snapshot_(std::move(snapshot)) {}

namespace py {

PythonError::PythonError() noexcept : exc_(ref::steal(PyErr_GetRaisedException())) {}

bool PythonError::matches(PyObject* type) const noexcept {
  return exc_ && PyErr_GivenExceptionMatches(exc_.get(), type);
}

void PythonError::restore() noexcept { PyErr_SetRaisedException(exc_.release()); }

void throw_python_error() {
  if (!PyErr_Occurred()) {
    PyErr_SetString(PyExc_SystemError, "error return without exception set");
  }
  throw PythonError();
}

}  // namespace py
}  // namespace subinterp
