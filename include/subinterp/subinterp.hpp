// The whole public C++ API of subinterp.
#pragma once

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

namespace subinterp {

// The library version, "MAJOR.MINOR.PATCH".
const char* version() noexcept;

}  // namespace subinterp
