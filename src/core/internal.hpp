// Helpers shared by the core's source files; not part of the public API.
#pragma once

#include <Python.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "subinterp/ref.hpp"

namespace subinterp::detail {

// Objects one interpreter keeps for the core, stored in that interpreter's
// state dict (PyInterpreterState_GetDict) and released when it ends. Never
// static: each interpreter has its own (DESIGN.md, invariant 3).
struct InterpCache {
  PyObject* pickle_dumps = nullptr;
  PyObject* pickle_loads = nullptr;
  PyObject* builtins = nullptr;
  PyObject* code_out = nullptr;  // {code: (marshalled bytes, names tuple)}
  PyObject* code_in = nullptr;   // {marshalled bytes: code}
  PyObject* classes_in = nullptr;  // {origin: class} of classes rebuilt by value
  PyObject* shared_buffer_type = nullptr;
  PyObject* str_builtins = nullptr;  // "__builtins__", interned
  PyObject* str_name = nullptr;      // "__name__", interned
};

// Applies the unbound policies of queue items put by interpreter `id`,
// which has just been closed.
void queues_interpreter_closed(std::int64_t id);

// Wakes every blocked queue and channel call, which then throws (see
// throw_shut_down); later blocking calls throw at once. For shutdown().
void queues_refuse_waits();
void channels_refuse_waits();
[[noreturn]] void throw_shut_down();

// True for exceptions that must reach the caller as themselves, never be
// turned into another error: KeyboardInterrupt, SystemExit and other
// BaseExceptions that are not Exceptions, and MemoryError.
bool is_interruption(PyObject* exc) noexcept;
// Clears the pending Python error, unless it is an interruption: that one
// is thrown (py::PythonError) for the caller to see.
void clear_error_unless_interruption();

// The attached interpreter's cache (made on first use). Throws PythonError.
InterpCache& cache();

py::ref pickle_dumps(PyObject* obj);
py::ref pickle_loads(std::string_view data);

// UTF-8 text of a str object; throws PythonError.
std::string utf8(PyObject* str);
// A str from UTF-8 text (lone surrogates pass through); throws PythonError.
py::ref make_str(std::string_view text);
// The qualified name of obj's type, for messages. Never throws.
std::string type_qualname(PyObject* obj);

}  // namespace subinterp::detail
