// A C++ program that runs Python functions on a pool of interpreters.
//
// Every worker of the pool owns one interpreter, which runs the initializer
// source (defining `collatz_steps`) before its first task. The host submits
// tasks by name, one at a time and as a batch, and reads the results from
// the futures; a completion callback counts the tasks that ended. The
// workers run in parallel, each under its own GIL.
#include <Python.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <subinterp/subinterp.hpp>

using subinterp::Future;
using subinterp::Pool;
using subinterp::PoolOptions;
using subinterp::Value;

constexpr const char* kInit = R"(
def collatz_steps(n):
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps
)";

// The same function in C++, to check the results.
std::int64_t collatz_steps(std::int64_t n) {
  std::int64_t steps = 0;
  for (; n != 1; ++steps) n = n % 2 == 0 ? n / 2 : 3 * n + 1;
  return steps;
}

constexpr std::int64_t kTasks = 200;

int run() {
  PoolOptions options;
  options.max_workers = 2;
  options.init_source = kInit;
  Pool pool(std::move(options));
  const Value steps = Value::function_ref("__main__", "collatz_steps");

  // One task per number, each with a completion that counts it.
  std::atomic<std::int64_t> ended{0};
  std::vector<Future> futures;
  for (std::int64_t n = 1; n <= kTasks; ++n) {
    futures.push_back(pool.submit(steps, Value::tuple({Value::from_int(n)}), Value(),
                                  [&ended](const Value&, const std::exception_ptr&) { ++ended; }));
  }
  std::int64_t wrong = 0, longest = 1;
  for (std::int64_t n = 1; n <= kTasks; ++n) {
    std::int64_t got = futures[n - 1].get().as_int();
    if (got != collatz_steps(n)) ++wrong;
    if (got > collatz_steps(longest)) longest = n;
  }
  std::printf("%lld tasks on %zu workers: %lld wrong, longest chain from %lld (%lld steps)\n",
              static_cast<long long>(kTasks), pool.worker_count(), static_cast<long long>(wrong),
              static_cast<long long>(longest), static_cast<long long>(collatz_steps(longest)));

  // The same numbers as one batch: one task, one list of results.
  std::vector<Value> items;
  for (std::int64_t n = 1; n <= kTasks; ++n) items.push_back(Value::tuple({Value::from_int(n)}));
  // get() returns a reference into the future: keep the future.
  Future batch_future = pool.submit_batch(steps, Value::list(std::move(items)));
  const Value& batch = batch_future.get();
  std::int64_t batch_wrong = 0;
  for (std::int64_t n = 1; n <= kTasks; ++n) {
    if (batch.items().at(n - 1).as_int() != collatz_steps(n)) ++batch_wrong;
  }
  std::printf("a batch of %zu: %lld wrong\n", batch.items().size(),
              static_cast<long long>(batch_wrong));

  // An exception in Python comes back as ExecutionFailed.
  bool raised = false;
  Future bad = pool.submit(steps, Value::tuple({Value()}));
  try {
    bad.get();
  } catch (const subinterp::ExecutionFailed& e) {
    raised = e.snapshot().type_name == "TypeError";
    std::printf("a bad argument raised %s: %s\n", e.snapshot().type_name.c_str(),
                e.snapshot().msg.c_str());
  }

  pool.shutdown();
  std::printf("%lld completions\n", static_cast<long long>(ended.load()));
  return wrong == 0 && batch_wrong == 0 && raised && ended.load() == kTasks ? 0 : 1;
}

int main() {
  Py_InitializeEx(0);
  PyThreadState* main_tstate = PyEval_SaveThread();
  int status = 0;
  try {
    status = run();
  } catch (const subinterp::ExecutionFailed& e) {
    std::fprintf(stderr, "Python failed:\n%s", e.snapshot().errdisplay.c_str());
    status = 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    status = 1;
  }
  subinterp::shutdown();
  PyEval_RestoreThread(main_tstate);
  if (Py_FinalizeEx() < 0) status = 1;
  return status;
}
