// Snapshots of Python exceptions, owned by no interpreter.
#pragma once

#include "subinterp/export.hpp"

#include <Python.h>

#include <memory>
#include <optional>
#include <string>

namespace subinterp {

// What the caller needs to know about an exception raised in another
// interpreter, as plain data: the type's name, qualified name and module, its
// message, the formatted traceback, its cause and context (snapshots too), and
// the pickled exception when it could be pickled where it was raised.
struct SUBINTERP_API ExceptionSnapshot {
  std::string type_name;
  std::string type_qualname;
  std::string type_module;
  std::string msg;         // str(exc)
  std::string formatted;   // traceback.format_exception_only(exc), joined
  std::string errdisplay;  // traceback.format_exception(exc), joined
  std::shared_ptr<const ExceptionSnapshot> cause;
  std::shared_ptr<const ExceptionSnapshot> context;
  std::optional<std::string> pickled;

  // Captures `exc` (an exception instance) of the attached interpreter.
  // Never throws a Python error: parts that cannot be read are left with a
  // placeholder text, and a pending error is cleared.
  static ExceptionSnapshot capture(PyObject* exc);

  // Makes a snapshot from C++ data alone, for errors found outside Python.
  static ExceptionSnapshot make(std::string module, std::string qualname, std::string msg);
};

}  // namespace subinterp
