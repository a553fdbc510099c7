// The whole public C++ API of subinterp.
#pragma once

#include "subinterp/export.hpp"

#include "subinterp/error.hpp"
#include "subinterp/channel.hpp"
#include "subinterp/frames.hpp"
#include "subinterp/interpreter.hpp"
#include "subinterp/pool.hpp"
#include "subinterp/queue.hpp"
#include "subinterp/ref.hpp"
#include "subinterp/shared_buffer.hpp"
#include "subinterp/snapshot.hpp"
#include "subinterp/thread_state.hpp"
#include "subinterp/value.hpp"
#include "subinterp/version.hpp"

#include <string>

namespace subinterp {

// The library version, "MAJOR.MINOR.PATCH".
SUBINTERP_API const char* version() noexcept;

// One core per process. The core (libsubinterp.so) holds the registry of
// interpreters, queues and pools; the `subinterp` Python package and every
// C++ host in a process must use the same copy, which the dynamic loader
// ensures for one build (one SONAME). Two different copies (a host linked
// with the static core, or two releases) are refused: the second copy that
// is used throws subinterp::Error naming both files.

// The build of the core loaded in this process (SUBINTERP_BUILD_ID of the
// headers it was compiled with: version and CPython ABI), and its file.
SUBINTERP_API const char* core_build() noexcept;
SUBINTERP_API std::string core_path();

namespace detail {
SUBINTERP_API void require_core_build(const char* expected_build, const void* user_address);
SUBINTERP_API void require_single_core();
}  // namespace detail

// Throws subinterp::Error, naming the files and builds involved, unless the
// core loaded in this process is the build these headers belong to and the
// only core in the process. The _subinterp extension calls it when it loads;
// a host may call it first thing (creating interpreters, queues, channels
// and pools checks the second condition too). `user_address` is any address
// in the caller's binary, used to name it.
inline void require_core_build(const void* user_address = nullptr) {
  detail::require_core_build(SUBINTERP_BUILD_ID, user_address);
}

}  // namespace subinterp
