// sys._current_frames() and sys._current_exceptions() that are safe to call
// while other interpreters run.
#pragma once

#include "subinterp/export.hpp"

namespace subinterp {

// Replaces sys._current_frames and sys._current_exceptions of the interpreter
// whose thread state is attached on this thread by versions that list that
// interpreter's threads only, with CPython's shapes ({thread id: frame} for
// the threads that run Python code; {thread id: exception being handled, or
// None} for every thread state) and audit events.
//
// CPython 3.12 and 3.13 read the threads of every interpreter without their
// GILs there, and crash the process while another interpreter runs Python.
// The runtime calls this itself in every interpreter it creates, in the main
// interpreter when it creates one, and the `_subinterp` extension in every
// interpreter that imports it. A host that makes interpreters by other means
// (Py_NewInterpreterFromConfig) calls it in each of them.
//
// Requires an attached thread state. Idempotent. Throws py::PythonError.
SUBINTERP_API void protect_thread_listings();

}  // namespace subinterp
