// A C++ program that embeds Python and runs Python code on two cores at once.
//
// Each subinterpreter has its own GIL (PEP 684), so two C++ threads calling
// into two interpreters run Python in parallel. No thread-state juggling: the
// Interpreter methods attach and detach what they need, from any thread.
#include <Python.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <future>
#include <vector>

#include <subinterp/subinterp.hpp>

using subinterp::Interpreter;
using subinterp::Value;

// The CPU-bound work, in Python.
constexpr const char* kSource = R"(
def count_primes(limit):
    return sum(1 for n in range(2, limit)
               if all(n % d for d in range(2, int(n ** 0.5) + 1)))
)";

constexpr std::int64_t kLimit = 150'000;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int main() {
  Py_InitializeEx(0);
  // Release the main GIL, as a C++ host does before starting its threads.
  PyThreadState* main_tstate = PyEval_SaveThread();
  int status = 0;
  try {
    std::vector<Interpreter> interps = {Interpreter::create(), Interpreter::create()};
    for (Interpreter& interp : interps) interp.exec(kSource);
    // Names the function where it is called: each interpreter's own
    // __main__.count_primes. A Value is plain C++ data, shareable by threads.
    const Value count_primes = Value::function_ref("__main__", "count_primes");
    const Value args = Value::tuple({Value::from_int(kLimit)});

    // One after the other, from this thread.
    auto start = std::chrono::steady_clock::now();
    for (Interpreter& interp : interps) interp.call(count_primes, args, Value());
    double serial = seconds_since(start);

    // At the same time, one thread per interpreter. A future carries an
    // exception (ExecutionFailed, ...) back to the thread that waits on it.
    start = std::chrono::steady_clock::now();
    std::vector<std::future<Value>> running;
    for (Interpreter interp : interps) {  // a shared handle: cheap to copy
      running.push_back(std::async(std::launch::async, [interp, &count_primes, &args]() mutable {
        return interp.call(count_primes, args, Value());
      }));
    }
    std::vector<std::int64_t> results;
    for (auto& result : running) results.push_back(result.get().as_int());
    double parallel = seconds_since(start);

    for (std::size_t i = 0; i < interps.size(); ++i) {
      std::printf("interpreter %lld: %lld primes below %lld\n",
                  static_cast<long long>(interps[i].id()), static_cast<long long>(results[i]),
                  static_cast<long long>(kLimit));
    }
    std::printf("one after the other: %.3f s, in parallel: %.3f s (%.2fx)\n", serial, parallel,
                serial / parallel);
    for (Interpreter& interp : interps) interp.close();
  } catch (const subinterp::ExecutionFailed& e) {
    std::fprintf(stderr, "Python error:\n%s", e.snapshot().errdisplay.c_str());
    status = 1;
  } catch (const subinterp::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    status = 1;
  }
  // End every interpreter subinterp made, then Python itself.
  PyEval_RestoreThread(main_tstate);
  subinterp::shutdown();
  if (Py_FinalizeEx() < 0) status = 1;
  return status;
}
