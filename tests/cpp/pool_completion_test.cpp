// The worker pool from C++: completions, many submitting threads, and the
// workers' interpreters seen from outside (tests/cpp/python_env.hpp sets up
// Python; pool_helpers.hpp has the workers' functions).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <pthread.h>

#include "pool_helpers.hpp"
#include "python_env.hpp"
#include "subinterp/subinterp.hpp"

namespace subinterp_test {
namespace {

using namespace pool;

// --- completions --------------------------------------------------------

// Counts the calls of each task's completion and checks that its future is
// not done before the completion returns.
struct Completions {
  struct Record {
    std::atomic<int> calls{0};
    std::atomic<bool> returned{false};
    std::optional<std::int64_t> result;  // set before `returned`
    std::exception_ptr error;
  };
  std::vector<Record> records;
  explicit Completions(std::size_t n) : records(n) {}

  subinterp::Completion on_done(std::size_t i) {
    return [this, i](const Value& result, const std::exception_ptr& error) {
      Record& r = records[i];
      r.calls.fetch_add(1);
      if (result.kind() == Value::Kind::Int) r.result = result.as_int();
      r.error = error;
      // Slow enough that a future made done before its completion returns
      // is seen done here.
      std::this_thread::sleep_for(milliseconds(20));
      r.returned.store(true);
    };
  }
};

template <class E>
bool holds(const std::exception_ptr& error) {
  if (!error) return false;
  try {
    std::rethrow_exception(error);
  } catch (const E&) {
    return true;
  } catch (...) {
    return false;
  }
}

TEST(Completion, RunsOnceForEveryKindOfEnd) {
  Completions c(5);
  Pool pool(helpers(1));
  Queue gate = Queue::create();
  Future ok = pool.submit(fn("square"), ints({6}), Value(), c.on_done(0));
  Future failed =
      pool.submit(fn("raise_custom"), Value::tuple({Value::from_str("x")}), Value(), c.on_done(1));
  Future blocked =
      pool.submit(fn("wait_for"), Value::tuple({Value::from_queue(gate)}), Value(), c.on_done(2));
  ASSERT_TRUE(eventually([&] { return blocked.running(); }));
  Future cancelled = pool.submit(fn("square"), ints({1}), Value(), c.on_done(3));
  Future dropped = pool.submit(fn("square"), ints({2}), Value(), c.on_done(4));
  EXPECT_TRUE(cancelled.cancel());
  // A cancelled task's completion has run on the cancelling thread.
  EXPECT_EQ(c.records[3].calls.load(), 1);
  EXPECT_TRUE(c.records[3].returned.load());
  pool.shutdown(/*wait=*/false, /*cancel_pending=*/true);
  EXPECT_EQ(c.records[4].calls.load(), 1);
  gate.put(Value::from_int(9));
  std::vector<Future> all = {ok, failed, blocked, cancelled, dropped};
  for (std::size_t i = 0; i < all.size(); ++i) {
    ASSERT_TRUE(all[i].wait(30.0)) << i;
    EXPECT_TRUE(c.records[i].returned.load()) << "future " << i << " done before its completion";
  }
  pool.shutdown();
  for (std::size_t i = 0; i < all.size(); ++i) EXPECT_EQ(c.records[i].calls.load(), 1) << i;
  EXPECT_EQ(c.records[0].result, 36);
  EXPECT_EQ(c.records[0].error, nullptr);
  EXPECT_FALSE(c.records[1].result.has_value());  // None on error
  EXPECT_TRUE(holds<ExecutionFailed>(c.records[1].error));
  EXPECT_EQ(c.records[2].result, 9);
  EXPECT_TRUE(holds<TaskCancelled>(c.records[3].error));
  EXPECT_TRUE(holds<TaskCancelled>(c.records[4].error));
}

TEST(Completion, RunsOnceForTasksOfABrokenPool) {
  Completions c(3);
  Pool pool(options_of(2, "raise KeyError('nope')"));
  std::vector<Future> futures;
  for (std::size_t i = 0; i < 3; ++i) {
    futures.push_back(
        pool.submit(Value::function_ref("math", "sqrt"), ints({4}), Value(), c.on_done(i)));
  }
  for (std::size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(futures[i].wait(30.0));
    EXPECT_TRUE(c.records[i].returned.load()) << i;
    EXPECT_THROW(futures[i].get(), PoolBroken);
  }
  pool.shutdown();
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(c.records[i].calls.load(), 1) << i;
    EXPECT_TRUE(holds<PoolBroken>(c.records[i].error)) << i;
  }
}

TEST(Completion, CanVisitTheMainInterpreter) {
  // A completion hands each result into the main interpreter's Python.
  {
    MainThreadState attached;
    ASSERT_EQ(PyRun_SimpleString("import sys\nsys.pool_results = []"), 0);
  }
  Pool pool(helpers(2));
  std::vector<Future> futures;
  for (int i = 0; i < 10; ++i) {
    futures.push_back(pool.submit(fn("square"), ints({i}), Value(),
                                  [](const Value& result, const std::exception_ptr&) {
                                    Interpreter::main().visit([&] {
                                      subinterp::py::ref obj = result.rebuild();
                                      PyObject* list = PySys_GetObject("pool_results");  // borrowed
                                      if (list == nullptr || PyList_Append(list, obj.get()) < 0)
                                        PyErr_Print();
                                    });
                                  }));
  }
  for (auto& f : futures) f.get(30.0);
  pool.shutdown();
  MainThreadState attached;
  subinterp::py::ref total = eval("sum(sys.pool_results), len(sys.pool_results)", "import sys");
  EXPECT_EQ(py_repr(total.get()), "(285, 10)");
  PyRun_SimpleString("del sys.pool_results");
}

// --- many threads -------------------------------------------------------

TEST(PoolThreads, ManyTasksFromFourThreads) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 500;
  Pool pool(helpers(2));
  std::atomic<int> wrong{0};
  std::atomic<int> checked_ok{0};
  std::atomic<bool> stop{false};
  std::atomic<int> too_many{0};
  // Reads the pool's counters while tasks come and go.
  std::thread monitor([&] {
    while (!stop.load()) {
      if (pool.worker_count() > 2 || pool.interpreter_ids().size() > 2) too_many.fetch_add(1);
      (void)pool.pending();
      std::this_thread::sleep_for(milliseconds(1));
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<Future> futures;
      futures.reserve(kPerThread);
      for (int i = 0; i < kPerThread; ++i) {
        std::int64_t x = t * kPerThread + i;
        if (i % 2 == 0) {
          futures.push_back(pool.submit(fn("square"), ints({x})));
        } else {
          futures.push_back(
              pool.submit(fn("affine"), ints({x}),
                          Value::dict({Value::from_str("offset"), Value::from_int(t)})));
        }
      }
      for (int i = 0; i < kPerThread; ++i) {
        std::int64_t x = t * kPerThread + i;
        std::int64_t expected = i % 2 == 0 ? x * x : x + t;
        try {
          if (futures[i].get(60.0).as_int() == expected) {
            checked_ok.fetch_add(1);
          } else {
            wrong.fetch_add(1);
          }
        } catch (const std::exception&) {
          wrong.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  stop.store(true);
  monitor.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(checked_ok.load(), kThreads * kPerThread);
  EXPECT_EQ(too_many.load(), 0);
  EXPECT_EQ(pool.pending(), 0u);
}

TEST(PoolThreads, SubmitAndShutdownRace) {
  // Submitters racing a shutdown: every submit either throws PoolShutDown or
  // returns a future that ends (run, since shutdown does not cancel).
  for (int round = 0; round < 5; ++round) {
    Pool pool(helpers(2));
    std::atomic<int> refused{0}, ran{0}, bad{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t) {
      threads.emplace_back([&] {
        std::vector<Future> futures;
        for (int i = 0; i < 100; ++i) {
          try {
            futures.push_back(pool.submit(fn("square"), ints({i})));
          } catch (const PoolShutDown&) {
            refused.fetch_add(1);
          }
        }
        for (std::size_t i = 0; i < futures.size(); ++i) {
          try {
            futures[i].get(60.0);
            ran.fetch_add(1);
          } catch (...) {
            bad.fetch_add(1);
          }
        }
      });
    }
    std::this_thread::sleep_for(milliseconds(round * 3));
    pool.shutdown();
    for (auto& t : threads) t.join();
    EXPECT_EQ(bad.load(), 0);
    EXPECT_EQ(refused.load() + ran.load(), 300);
  }
}

TEST(PoolThreads, RenewalUnderLoad) {
  // Workers replace their interpreters every 3 tasks while two threads
  // submit: every task runs once, in a fresh enough interpreter.
  PoolOptions options = helpers(2);
  options.init_source +=
      "runs = 0\ndef count(x):\n    global runs\n    runs += 1\n"
      "    return (x, runs)\n";
  options.max_tasks_per_worker = 3;
  Pool pool(std::move(options));
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      std::vector<Future> futures;
      for (int i = 0; i < 30; ++i) futures.push_back(pool.submit(fn("count"), ints({t * 100 + i})));
      for (int i = 0; i < 30; ++i) {
        Value got = futures[i].get(60.0);
        std::int64_t runs = got.items().at(1).as_int();
        if (got.items().at(0).as_int() != t * 100 + i || runs < 1 || runs > 3) wrong.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_LE(pool.interpreter_ids().size(), 2u);
  pool.shutdown();
  EXPECT_TRUE(pool.interpreter_ids().empty());
}

TEST(Pool, WorkersEndInterpretersThatImportedHashlibAndAsyncio) {
  // On CPython 3.12, ending an isolated interpreter that imported these
  // aborts the process unless the runtime protects it (DESIGN.md); here
  // each task's interpreter is ended right after it, on its worker thread.
  PoolOptions options = options_of(2,
                                   "def digest(data):\n"
                                   "    import asyncio, hashlib\n"
                                   "    try:\n"
                                   "        import ssl\n"
                                   "    except ImportError:\n"
                                   "        pass\n"
                                   "    return hashlib.sha256(data).hexdigest()\n");
  options.max_tasks_per_worker = 1;
  Pool pool(std::move(options));
  std::vector<Future> futures;
  for (int i = 0; i < 4; ++i) {
    futures.push_back(pool.submit(fn("digest"), Value::tuple({Value::from_bytes("abc")})));
  }
  for (const Future& f : futures) {
    EXPECT_EQ(f.get(60.0).as_string(),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  }
  pool.shutdown();
  EXPECT_TRUE(pool.interpreter_ids().empty());
}

// --- the workers' interpreters seen from outside ------------------------

TEST(Pool, WorkerInterpretersBelongToThePool) {
  Pool pool(helpers(1));
  EXPECT_EQ(pool.submit(fn("square"), ints({4})).get(30.0).as_int(), 16);
  std::vector<std::int64_t> ids = pool.interpreter_ids();
  ASSERT_EQ(ids.size(), 1u);
  Interpreter interp = Interpreter::get(ids[0]);
  EXPECT_FALSE(interp.is_closed());
  try {
    interp.close();
    ADD_FAILURE() << "closed a pool worker's interpreter";
  } catch (const InterpreterNotFound& e) {
    ADD_FAILURE() << "wrong error: " << e.what();
  } catch (const InterpreterError&) {
  }
  EXPECT_FALSE(interp.is_closed());
  // Running code in it from another thread is refused too.
  std::string exec_error, call_error;
  std::thread([&] {
    try {
      interp.exec("hijacked = True");
    } catch (const InterpreterError& e) {
      exec_error = e.what();
    }
    try {
      interp.call(fn("square"), ints({2}), Value());
    } catch (const InterpreterError& e) {
      call_error = e.what();
    }
  }).join();
  EXPECT_NE(exec_error, "");
  EXPECT_NE(call_error, "");
  EXPECT_THROW(interp.exec("hijacked = True"), InterpreterError);
  // Dropping the last reference count does not close it either.
  interp.incref();
  interp.decref();
  EXPECT_FALSE(interp.is_closed());
  // The pool still works, in the same interpreter, which never ran the code.
  Future f = pool.submit(fn("has_global"), Value::tuple({Value::from_str("hijacked")}));
  EXPECT_FALSE(f.get(30.0).as_bool());
  EXPECT_EQ(pool.interpreter_ids(), ids);
  pool.shutdown();
  EXPECT_TRUE(interp.is_closed());
  EXPECT_THROW(Interpreter::get(ids[0]), InterpreterNotFound);
}

TEST(Completion, ShutdownWithWaitOnAWorkerIsRefused) {
  // A completion that runs on a worker thread cannot wait for the workers
  // (itself among them) to end: shutdown() shuts the pool down and then
  // throws PoolShutDown instead of waiting for ever.
  Pool pool(helpers(1));
  std::atomic<int> outcome{0};  // 1 refused, 2 returned
  Future f = pool.submit(fn("nap"), Value::tuple({Value::from_double(0.05), Value::from_int(3)}),
                         Value(), [&](const Value&, const std::exception_ptr&) {
                           try {
                             pool.shutdown(/*wait=*/true);
                             outcome.store(2);
                           } catch (const PoolShutDown&) {
                             outcome.store(1);
                           }
                         });
  // Polled, not waited for: a waiting thread would run the completion itself.
  ASSERT_TRUE(eventually([&] { return f.done(); }));
  EXPECT_EQ(outcome.load(), 1);
  EXPECT_EQ(f.get(0.0).as_int(), 3);
  EXPECT_TRUE(pool.is_shut_down());
  EXPECT_THROW(pool.submit(fn("square"), ints({1})), PoolShutDown);
  pool.shutdown();  // from here it waits
  EXPECT_EQ(pool.worker_count(), 0u);
}

TEST(Completion, PoolDestroyedInItsOwnCompletion) {
  // The last owner of a pool may drop it in a completion, on one of its
  // workers: the destructor then shuts down without waiting for itself.
  auto owner = std::make_shared<std::unique_ptr<Pool>>(std::make_unique<Pool>(helpers(1)));
  std::atomic<bool> destroyed{false};
  Future f = (*owner)->submit(fn("nap"), Value::tuple({Value::from_double(0.05), Value::from_int(4)}),
                              Value(), [owner, &destroyed](const Value&, const std::exception_ptr&) {
                                owner->reset();
                                destroyed.store(true);
                              });
  // Polled, not waited for: a waiting thread would run the completion itself.
  ASSERT_TRUE(eventually([&] { return f.done(); }));
  EXPECT_TRUE(destroyed.load());
  EXPECT_EQ(f.get(0.0).as_int(), 4);
  EXPECT_EQ(*owner, nullptr);
}

}  // namespace
}  // namespace subinterp_test
