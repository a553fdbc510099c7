// The runtime's side of subinterp/frames.hpp.
#pragma once

namespace subinterp::detail {

// protect_thread_listings() for the runtime thread while it creates an
// interpreter: a failure throws InterpreterError and leaves no Python error
// pending (a py::PythonError could not leave the thread that holds its
// interpreter's GIL).
void protect_thread_listings_or_fail();

}  // namespace subinterp::detail
