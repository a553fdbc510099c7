// Shared parts of the pool tests (pool_test.cpp, pool_completion_test.cpp):
// the Python functions the workers run, and small helpers.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "python_env.hpp"
#include "subinterp/subinterp.hpp"

namespace subinterp_test {
namespace pool {


using subinterp::ExecutionFailed;
using subinterp::Future;
using subinterp::Interpreter;
using subinterp::InterpreterError;
using subinterp::InterpreterNotFound;
using subinterp::NotShareable;
using subinterp::Pool;
using subinterp::PoolBroken;
using subinterp::PoolOptions;
using subinterp::PoolShutDown;
using subinterp::Queue;
using subinterp::QueueEmpty;
using subinterp::TaskCancelled;
using subinterp::TaskTimeout;
using subinterp::Value;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Waits whose upper bound is checked may take this much longer than asked
// on a loaded machine or under a sanitizer; lower bounds are exact.
constexpr auto kSlack = std::chrono::seconds(5);

// Functions the tests call in the workers, by name (function_ref("__main__", ...)).
// Every blocking call has a timeout, so that a broken pool fails a test
// instead of hanging it.
constexpr const char* kHelpers = R"(
import time

def square(x):
    return x * x

def affine(x, scale=1, offset=0):
    return x * scale + offset

def wait_for(gate):
    return gate.get(timeout=10)

def record(log, x):
    log.put(x)
    return x

def record_or_fail(log, x):
    log.put(x)
    if x < 0:
        raise ValueError(f'negative: {x}')
    return x

class Custom(Exception):
    pass

def raise_custom(text):
    raise Custom(text)

def nap(seconds, x):
    time.sleep(seconds)
    return x

def meet(mine, theirs, token):
    mine.put(token)
    return theirs.get(timeout=5)

def has_global(name):
    return name in globals()

def make_lock():
    import threading
    return threading.Lock()
)";

inline Value fn(const char* name) { return Value::function_ref("__main__", name); }

inline Value ints(std::initializer_list<std::int64_t> values) {
  std::vector<Value> items;
  for (std::int64_t v : values) items.push_back(Value::from_int(v));
  return Value::tuple(std::move(items));
}

inline PoolOptions options_of(std::size_t workers, std::string init_source = {}) {
  PoolOptions options;
  options.max_workers = workers;
  options.init_source = std::move(init_source);
  return options;
}

// Options of a pool whose workers have the functions of kHelpers.
inline PoolOptions helpers(std::size_t workers) { return options_of(workers, kHelpers); }

// Polls `pred` (test code only) until it holds or `limit` passes.
inline bool eventually(const std::function<bool()>& pred, Clock::duration limit = kSlack * 2) {
  auto end = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() > end) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

// What `get()` of a failed future throws, as the snapshot of ExecutionFailed.
inline subinterp::ExceptionSnapshot failure_of(const Future& f) {
  try {
    f.get(30.0);
  } catch (const ExecutionFailed& e) {
    return e.snapshot();
  }
  ADD_FAILURE() << "the task did not fail with ExecutionFailed";
  return {};
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace pool
}  // namespace subinterp_test
