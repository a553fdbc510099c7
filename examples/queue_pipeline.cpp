// A C++ program that hands work to Python interpreters through queues.
//
// The host puts tasks on a Queue; two interpreters, each on its own thread,
// take them in Python (`tasks.get()`) and put results on a second queue that
// the host reads. The queues cross into Python as Values: both sides use the
// same queues, and an empty queue blocks its caller without holding any GIL.
#include <Python.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <vector>

#include <subinterp/subinterp.hpp>

using subinterp::Interpreter;
using subinterp::Queue;
using subinterp::Value;

constexpr const char* kWorker = R"(
def work(tasks, results):
    done = 0
    while (n := tasks.get()) is not None:
        results.put((n, sum(i * i for i in range(n))))
        done += 1
    return done
)";

constexpr std::int64_t kTasks = 2000;

// 0^2 + 1^2 + ... + (n-1)^2
std::int64_t expected(std::int64_t n) { return (n - 1) * n * (2 * n - 1) / 6; }

int main() {
#ifdef SUBINTERP_BUILD_PYTHONPATH
  // Where this build keeps the subinterp package (and its extension), which
  // turns queue handles into Python objects.
  setenv("PYTHONPATH", SUBINTERP_BUILD_PYTHONPATH, 0);
#endif
  Py_InitializeEx(0);
  PyThreadState* main_tstate = PyEval_SaveThread();
  int status = 0;
  try {
    Queue tasks = Queue::create();
    Queue results = Queue::create();
    std::vector<Interpreter> interps = {Interpreter::create(), Interpreter::create()};
    const Value work = Value::function_ref("__main__", "work");
    const Value args = Value::tuple({Value::from_queue(tasks), Value::from_queue(results)});
    std::vector<std::future<Value>> workers;
    for (Interpreter interp : interps) {
      interp.exec(kWorker);
      workers.push_back(std::async(std::launch::async, [interp, &work, &args]() mutable {
        return interp.call(work, args, Value());
      }));
    }

    for (std::int64_t n = 0; n < kTasks; ++n) tasks.put(Value::from_int(n));
    for (std::size_t i = 0; i < interps.size(); ++i) tasks.put(Value());  // None: stop

    std::int64_t wrong = 0;
    try {
      for (std::int64_t i = 0; i < kTasks; ++i) {
        subinterp::QueueItem item = results.get(/*timeout=*/30.0);
        const std::vector<Value>& pair = item.value.items();
        if (pair[1].as_int() != expected(pair[0].as_int())) ++wrong;
      }
    } catch (const subinterp::QueueEmpty&) {
      std::fprintf(stderr, "no result for 30 s\n");  // a worker failed: see below
      status = 1;
    }
    std::int64_t done = 0;
    for (auto& worker : workers) {
      std::int64_t n = worker.get().as_int();
      std::printf("an interpreter did %lld tasks\n", static_cast<long long>(n));
      done += n;
    }
    std::printf("%lld tasks, %lld wrong results\n", static_cast<long long>(done),
                static_cast<long long>(wrong));
    if (done != kTasks || wrong != 0) status = 1;
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
