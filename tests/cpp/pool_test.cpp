// The worker pool from C++: tasks by reference and by initializer, errors,
// broken pools, shutdown and cancellation, waits, parallelism, interpreter
// renewal and batches (tests/cpp/python_env.hpp sets up Python; completions
// and threads are in pool_completion_test.cpp).
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

// --- submitting and getting results -------------------------------------

TEST(Pool, FunctionByReference) {
  Pool pool(options_of(2));
  EXPECT_EQ(pool.max_workers(), 2u);
  EXPECT_EQ(pool.worker_count(), 0u);  // workers start with the first tasks
  Future f = pool.submit(Value::function_ref("math", "factorial"), ints({20}));
  const Value& result = f.get(30.0);
  ASSERT_EQ(result.kind(), Value::Kind::Int);
  EXPECT_EQ(result.as_int(), 2432902008176640000);
  EXPECT_TRUE(f.done());
  EXPECT_FALSE(f.running());
  EXPECT_FALSE(f.cancelled());
  EXPECT_EQ(f.error(), nullptr);
  EXPECT_FALSE(f.cancel());  // done: too late
  EXPECT_GE(pool.worker_count(), 1u);

  // Keyword arguments, and results bigger than int64.
  Future parsed =
      pool.submit(Value::function_ref("builtins", "int"), Value::tuple({Value::from_str("ff")}),
                  Value::dict({Value::from_str("base"), Value::from_int(16)}));
  Future big = pool.submit(Value::function_ref("math", "factorial"), ints({30}));
  EXPECT_EQ(parsed.get(30.0).as_int(), 255);
  ASSERT_EQ(big.get(30.0).kind(), Value::Kind::BigInt);
  EXPECT_NE(f.id(), parsed.id());
  EXPECT_NE(parsed.id(), big.id());
}

TEST(Pool, FunctionDefinedByTheInitSource) {
  PoolOptions options = helpers(2);
  options.init_source += "OFFSET = 7\ndef work(x):\n    return x * x + OFFSET\n";
  Pool pool(std::move(options));
  std::vector<Future> futures;
  for (int i = 0; i < 20; ++i) futures.push_back(pool.submit(fn("work"), ints({i})));
  for (int i = 0; i < 20; ++i) EXPECT_EQ(futures[i].get(30.0).as_int(), i * i + 7) << i;
  // Keyword arguments reach functions of the init source too.
  Future f = pool.submit(fn("affine"), ints({5}),
                         Value::dict({Value::from_str("scale"), Value::from_int(3),
                                      Value::from_str("offset"), Value::from_int(1)}));
  EXPECT_EQ(f.get(30.0).as_int(), 16);
}

TEST(Pool, InitCallableRunsAfterTheSourceWithItsArgs) {
  PoolOptions options;
  options.max_workers = 1;
  options.init_source =
      "N = 1\ndef setup(k, tag):\n    global N, TAG\n    N = N * 10 + k\n"
      "    TAG = tag\ndef get():\n    return (N, TAG)\n";
  options.init_callable = fn("setup");
  options.init_args = Value::tuple({Value::from_int(7), Value::from_str("ready")});
  Pool pool(std::move(options));
  Value got = pool.submit(fn("get"), Value::tuple({})).get(30.0);
  ASSERT_EQ(got.kind(), Value::Kind::Tuple);
  EXPECT_EQ(got.items().at(0).as_int(), 17);  // the source ran first, once
  EXPECT_EQ(got.items().at(1).as_string(), "ready");
}

TEST(Pool, InitCallableAloneByValue) {
  // A lambda of the main interpreter travels by value and runs in each
  // worker; it leaves a function in the worker's __main__.
  PoolOptions options;
  options.max_workers = 1;
  options.init_callable =
      capture_main("lambda n: setattr(__import__('__main__'), 'get_n', lambda: n * 2)");
  options.init_args = ints({21});
  Pool pool(std::move(options));
  EXPECT_EQ(pool.submit(fn("get_n"), Value::tuple({})).get(30.0).as_int(), 42);
}

TEST(Pool, BadArgumentsAreRefusedAtSubmit) {
  Pool pool(options_of(1));
  EXPECT_THROW(pool.submit(fn("f"), Value::list({})), subinterp::Error);
  EXPECT_THROW(pool.submit(fn("f"), Value::from_int(1)), subinterp::Error);
  EXPECT_THROW(pool.submit(fn("f"), Value::tuple({}), Value::list({})), subinterp::Error);
  EXPECT_EQ(pool.pending(), 0u);
  EXPECT_EQ(pool.worker_count(), 0u);
}

// --- errors of tasks ----------------------------------------------------

TEST(Pool, RaisingTaskFailsWithExecutionFailed) {
  Pool pool(helpers(1));
  Future f = pool.submit(Value::function_ref("math", "factorial"), ints({-1}));
  subinterp::ExceptionSnapshot s = failure_of(f);
  EXPECT_EQ(s.type_name, "ValueError");
  EXPECT_TRUE(contains(s.msg, "factorial")) << s.msg;
  EXPECT_TRUE(f.done());
  EXPECT_FALSE(f.cancelled());
  EXPECT_NE(f.error(), nullptr);

  // A class of the worker's own __main__.
  s = failure_of(pool.submit(fn("raise_custom"), Value::tuple({Value::from_str("boom")})));
  EXPECT_EQ(s.type_name, "Custom");
  EXPECT_EQ(s.type_module, "__main__");
  EXPECT_EQ(s.msg, "boom");
  EXPECT_TRUE(contains(s.errdisplay, "raise_custom")) << s.errdisplay;

  // A name the worker does not have.
  EXPECT_EQ(failure_of(pool.submit(fn("missing"), Value::tuple({}))).type_name, "AttributeError");

  // The worker goes on.
  EXPECT_EQ(pool.submit(fn("square"), ints({9})).get(30.0).as_int(), 81);
}

TEST(Pool, ResultThatCannotTravelFailsWithNotShareable) {
  Pool pool(helpers(1));
  Future f = pool.submit(fn("make_lock"), Value::tuple({}));
  try {
    f.get(30.0);
    FAIL() << "a lock came out of a worker";
  } catch (const NotShareable& e) {
    EXPECT_EQ(e.path(), "result");
    EXPECT_TRUE(contains(e.type_name(), "lock")) << e.type_name();
  }
  EXPECT_EQ(pool.submit(fn("square"), ints({3})).get(30.0).as_int(), 9);
}

// --- broken pools -------------------------------------------------------

void expect_broken_by(Pool& pool, const std::vector<Future>& futures, const std::string& type,
                      const std::string& text) {
  for (const Future& f : futures) {
    try {
      f.get(30.0);
      ADD_FAILURE() << "a task ran in a broken pool";
    } catch (const PoolBroken& e) {
      ASSERT_NE(e.cause(), nullptr) << e.what();
      EXPECT_EQ(e.cause()->type_name, type);
      EXPECT_TRUE(contains(e.cause()->msg, text)) << e.cause()->msg;
      EXPECT_TRUE(contains(e.what(), type)) << e.what();
    }
    EXPECT_TRUE(f.done());
    EXPECT_FALSE(f.cancelled());
  }
  ASSERT_TRUE(pool.broken().has_value());
  ASSERT_NE(pool.broken()->cause(), nullptr);
  EXPECT_EQ(pool.broken()->cause()->type_name, type);
  EXPECT_THROW(pool.submit(Value::function_ref("math", "sqrt"), ints({4})), PoolBroken);
  EXPECT_THROW(pool.submit_batch(Value::function_ref("math", "sqrt"), Value::list({ints({4})})),
               PoolBroken);
  EXPECT_EQ(pool.pending(), 0u);
  EXPECT_TRUE(eventually([&] { return pool.worker_count() == 0; }));
  EXPECT_TRUE(pool.interpreter_ids().empty());  // the failed ones were ended
}

TEST(Pool, RaisingInitSourceBreaksThePool) {
  Pool pool(options_of(2, "raise RuntimeError('init failed on purpose')"));
  EXPECT_FALSE(pool.broken().has_value());
  std::vector<Future> futures;
  for (int i = 0; i < 3; ++i) {
    futures.push_back(pool.submit(Value::function_ref("math", "sqrt"), ints({4})));
  }
  expect_broken_by(pool, futures, "RuntimeError", "init failed on purpose");
}

TEST(Pool, RaisingInitCallableBreaksThePool) {
  PoolOptions options;
  options.max_workers = 1;
  options.init_callable = Value::function_ref("math", "factorial");
  options.init_args = ints({-1});
  Pool pool(std::move(options));
  Future f = pool.submit(Value::function_ref("math", "sqrt"), ints({4}));
  expect_broken_by(pool, {f}, "ValueError", "factorial");
}

// --- shutdown and cancellation ------------------------------------------

TEST(Pool, SubmitAfterShutdownIsRefused) {
  Pool pool(helpers(1));
  EXPECT_EQ(pool.submit(fn("square"), ints({2})).get(30.0).as_int(), 4);
  pool.shutdown();
  EXPECT_TRUE(pool.is_shut_down());
  EXPECT_EQ(pool.worker_count(), 0u);
  EXPECT_TRUE(pool.interpreter_ids().empty());
  EXPECT_THROW(pool.submit(fn("square"), ints({2})), PoolShutDown);
  EXPECT_THROW(pool.submit_batch(fn("square"), Value::list({ints({2})})), PoolShutDown);
  pool.shutdown();  // again: nothing to do
  EXPECT_FALSE(pool.broken().has_value());
}

TEST(Pool, ShutdownWithoutTasksNeverStartsAWorker) {
  Pool pool(options_of(2));
  pool.shutdown();
  EXPECT_EQ(pool.worker_count(), 0u);
  EXPECT_THROW(pool.submit(fn("square"), ints({2})), PoolShutDown);
}

TEST(Pool, ShutdownRunsTheQueuedTasksByDefault) {
  Pool pool(helpers(1));
  Queue gate = Queue::create();
  Future blocked = pool.submit(fn("wait_for"), Value::tuple({Value::from_queue(gate)}));
  std::vector<Future> queued;
  for (int i = 0; i < 3; ++i) queued.push_back(pool.submit(fn("square"), ints({i})));
  std::thread opener([&] {
    std::this_thread::sleep_for(milliseconds(50));
    gate.put(Value::from_int(1));
  });
  pool.shutdown();  // waits for all four
  opener.join();
  EXPECT_EQ(blocked.get(0.0).as_int(), 1);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(queued[i].done());
    EXPECT_EQ(queued[i].get(0.0).as_int(), i * i);
  }
}

TEST(Pool, ShutdownCancelsPendingTasks) {
  Pool pool(helpers(1));
  Queue gate = Queue::create();
  Queue log = Queue::create();
  Future blocked = pool.submit(fn("wait_for"), Value::tuple({Value::from_queue(gate)}));
  ASSERT_TRUE(eventually([&] { return blocked.running(); }));
  std::vector<Future> queued;
  for (int i = 0; i < 4; ++i) {
    queued.push_back(
        pool.submit(fn("record"), Value::tuple({Value::from_queue(log), Value::from_int(i)})));
  }
  EXPECT_EQ(pool.pending(), 4u);
  pool.shutdown(/*wait=*/false, /*cancel_pending=*/true);
  EXPECT_EQ(pool.pending(), 0u);
  for (const Future& f : queued) {
    EXPECT_TRUE(f.done());
    EXPECT_TRUE(f.cancelled());
    EXPECT_THROW(f.get(0.0), TaskCancelled);
    EXPECT_NE(f.error(), nullptr);
  }
  EXPECT_FALSE(blocked.done());  // a running task is not cancelled
  EXPECT_FALSE(blocked.cancel());
  gate.put(Value::from_str("open"));
  EXPECT_EQ(blocked.get(30.0).as_string(), "open");
  pool.shutdown();  // now wait for the worker to end
  EXPECT_EQ(pool.worker_count(), 0u);
  EXPECT_THROW(log.get(0.0), QueueEmpty);  // no cancelled task ran
  for (const Future& f : queued) {         // and none was settled again
    EXPECT_TRUE(f.cancelled());
    EXPECT_THROW(f.get(0.0), TaskCancelled);
  }
}

TEST(Future, CancelOfAQueuedTask) {
  Pool pool(helpers(1));
  Queue gate = Queue::create();
  Queue log = Queue::create();
  Future blocked = pool.submit(fn("wait_for"), Value::tuple({Value::from_queue(gate)}));
  ASSERT_TRUE(eventually([&] { return blocked.running(); }));
  EXPECT_FALSE(blocked.cancel());  // started: cannot be cancelled
  EXPECT_FALSE(blocked.cancelled());
  Future victim =
      pool.submit(fn("record"), Value::tuple({Value::from_queue(log), Value::from_int(1)}));
  EXPECT_FALSE(victim.running());
  EXPECT_FALSE(victim.done());
  EXPECT_TRUE(victim.cancel());
  EXPECT_TRUE(victim.cancel());  // cancelled already: still true
  EXPECT_TRUE(victim.done());
  EXPECT_TRUE(victim.cancelled());
  EXPECT_THROW(victim.get(), TaskCancelled);  // done: no wait
  // The task after it runs; the cancelled one, queued before it, did not.
  Future after =
      pool.submit(fn("record"), Value::tuple({Value::from_queue(log), Value::from_int(2)}));
  gate.put(Value::from_int(0));
  EXPECT_EQ(blocked.get(30.0).as_int(), 0);
  EXPECT_EQ(after.get(30.0).as_int(), 2);
  EXPECT_EQ(log.get(0.0).value.as_int(), 2);
  EXPECT_THROW(log.get(0.0), QueueEmpty);
  EXPECT_FALSE(after.cancel());
  EXPECT_FALSE(after.cancelled());
  // The worker passed the cancelled task: it is still cancelled.
  EXPECT_TRUE(victim.cancelled());
  EXPECT_THROW(victim.get(0.0), TaskCancelled);
}

TEST(Pool, ShutdownWithoutWaitReturnsWhileATaskIsBlocked) {
  Pool pool(helpers(1));
  Queue gate = Queue::create();
  Future blocked = pool.submit(fn("wait_for"), Value::tuple({Value::from_queue(gate)}));
  ASSERT_TRUE(eventually([&] { return blocked.running(); }));
  auto start = Clock::now();
  pool.shutdown(/*wait=*/false);
  EXPECT_LT(Clock::now() - start, kSlack);  // the task waits up to 10 s
  EXPECT_TRUE(pool.is_shut_down());
  EXPECT_FALSE(blocked.done());
  EXPECT_THROW(pool.submit(fn("square"), ints({1})), PoolShutDown);
  gate.put(Value::from_int(5));
  EXPECT_EQ(blocked.get(30.0).as_int(), 5);
  // The worker then ends on its own.
  EXPECT_TRUE(eventually([&] { return pool.worker_count() == 0; }));
  EXPECT_TRUE(pool.interpreter_ids().empty());
}

TEST(Pool, DestroyedWithoutShutdownWaitsForItsTasks) {
  std::vector<Future> futures;
  {
    Pool pool(helpers(2));
    for (int i = 0; i < 6; ++i) {
      futures.push_back(
          pool.submit(fn("nap"), Value::tuple({Value::from_double(0.02), Value::from_int(i)})));
    }
  }
  for (int i = 0; i < 6; ++i) {
    EXPECT_TRUE(futures[i].done()) << i;  // before any wait
    EXPECT_EQ(futures[i].get(0.0).as_int(), i);
  }
}

TEST(Pool, DestroyedAfterShutdownWithoutWaitLetsTheTaskFinish) {
  Queue gate = Queue::create();
  std::optional<Future> blocked;
  {
    Pool pool(helpers(1));
    blocked = pool.submit(fn("wait_for"), Value::tuple({Value::from_queue(gate)}));
    ASSERT_TRUE(eventually([&] { return blocked->running(); }));
    pool.shutdown(/*wait=*/false);
  }  // returns at once: the worker keeps what it needs
  EXPECT_FALSE(blocked->done());
  gate.put(Value::from_int(3));
  EXPECT_EQ(blocked->get(30.0).as_int(), 3);
}

// --- Future waits -------------------------------------------------------

TEST(Future, GetWithTimeoutOnALongTask) {
  Pool pool(helpers(1));
  Queue gate = Queue::create();
  Future f = pool.submit(fn("wait_for"), Value::tuple({Value::from_queue(gate)}));
  EXPECT_FALSE(f.wait(0.0));
  EXPECT_FALSE(f.wait(-1.0));
  auto start = Clock::now();
  EXPECT_THROW(f.get(0.1), TaskTimeout);
  auto waited = Clock::now() - start;
  EXPECT_GE(waited, milliseconds(100));
  EXPECT_LT(waited, milliseconds(100) + kSlack);
  EXPECT_FALSE(f.wait(0.02));
  EXPECT_FALSE(f.done());
  EXPECT_EQ(f.error(), nullptr);  // not done: no error yet
  gate.put(Value::from_int(8));
  EXPECT_TRUE(f.wait(30.0));
  EXPECT_TRUE(f.wait(0.0));
  EXPECT_EQ(f.get(0.0).as_int(), 8);
}

TEST(Future, WaitFromManyThreads) {
  Pool pool(helpers(1));
  Queue gate = Queue::create();
  Future f = pool.submit(fn("wait_for"), Value::tuple({Value::from_queue(gate)}));
  std::atomic<int> woke{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 4; ++i) {
    waiters.emplace_back([&] {
      if (f.get(30.0).as_int() == 6) woke.fetch_add(1);
    });
  }
  std::this_thread::sleep_for(milliseconds(20));
  gate.put(Value::from_int(6));
  for (auto& t : waiters) t.join();
  EXPECT_EQ(woke.load(), 4);
}

// --- parallelism and workers --------------------------------------------

TEST(Pool, TwoWorkersRunInParallel) {
  // Each task puts to one queue and waits for the other's token: run one
  // after the other, the first would time out.
  Pool pool(helpers(2));
  Queue a = Queue::create();
  Queue b = Queue::create();
  Future first = pool.submit(
      fn("meet"), Value::tuple({Value::from_queue(a), Value::from_queue(b), Value::from_int(1)}));
  Future second = pool.submit(
      fn("meet"), Value::tuple({Value::from_queue(b), Value::from_queue(a), Value::from_int(2)}));
  EXPECT_EQ(first.get(30.0).as_int(), 2);
  EXPECT_EQ(second.get(30.0).as_int(), 1);
  EXPECT_EQ(pool.worker_count(), 2u);
  std::vector<std::int64_t> ids = pool.interpreter_ids();
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_NE(ids[0], ids[1]);
}

TEST(Pool, NeverMoreWorkersThanMax) {
  Pool pool(helpers(2));
  std::vector<Future> futures;
  for (int i = 0; i < 20; ++i) {
    futures.push_back(
        pool.submit(fn("nap"), Value::tuple({Value::from_double(0.002), Value::from_int(i)})));
    EXPECT_LE(pool.worker_count(), 2u);
  }
  for (int i = 0; i < 20; ++i) EXPECT_EQ(futures[i].get(30.0).as_int(), i);
  EXPECT_LE(pool.worker_count(), 2u);
  EXPECT_LE(pool.interpreter_ids().size(), 2u);
}

TEST(Pool, MaxWorkersZeroMeansOnePerCpu) {
  Pool pool;
  EXPECT_EQ(pool.max_workers(), std::max(1u, std::thread::hardware_concurrency()));
}

TEST(Pool, MaxTasksPerWorkerRenewsTheInterpreter) {
  PoolOptions options;
  options.max_workers = 1;
  options.max_tasks_per_worker = 3;
  options.init_source =
      "from subinterp import _subinterp\ncount = 0\ndef bump():\n    global count\n    count += 1\n"
      "    return (count, _subinterp.get_current()[0])\n";
  Pool pool(std::move(options));
  std::vector<std::int64_t> counts, ids;
  for (int i = 0; i < 7; ++i) {
    Value got = pool.submit(fn("bump"), Value::tuple({})).get(30.0);
    counts.push_back(got.items().at(0).as_int());
    ids.push_back(got.items().at(1).as_int());
  }
  EXPECT_EQ(counts, (std::vector<std::int64_t>{1, 2, 3, 1, 2, 3, 1}));
  EXPECT_EQ(ids[0], ids[1]);
  EXPECT_EQ(ids[1], ids[2]);
  EXPECT_NE(ids[2], ids[3]);
  EXPECT_EQ(ids[3], ids[4]);
  EXPECT_EQ(ids[4], ids[5]);
  EXPECT_NE(ids[5], ids[6]);
  EXPECT_NE(ids[0], ids[6]);
  // A replaced interpreter is ended, not left behind.
  EXPECT_THROW(Interpreter::get(ids[0]), InterpreterNotFound);
  EXPECT_THROW(Interpreter::get(ids[3]), InterpreterNotFound);
  EXPECT_EQ(pool.interpreter_ids(), std::vector<std::int64_t>{ids[6]});
}

TEST(Pool, ThreadsAreNamedAfterThePrefix) {
  std::mutex mu;
  std::string name;
  PoolOptions options = options_of(1);
  options.thread_name_prefix = "calc";
  Pool pool(std::move(options));
  Future f = pool.submit(Value::function_ref("math", "sqrt"), ints({4}), Value(),
                         [&](const Value&, const std::exception_ptr&) {
                           char buf[16] = {};
                           pthread_getname_np(pthread_self(), buf, sizeof buf);
                           std::lock_guard lock(mu);
                           name = buf;
                         });
  f.get(30.0);
  std::lock_guard lock(mu);
  EXPECT_EQ(name, "calc_0");
}

// --- batches ------------------------------------------------------------

TEST(Pool, SubmitBatch) {
  Pool pool(helpers(1));
  std::vector<Value> items;
  for (int i = 0; i < 50; ++i) items.push_back(ints({i}));
  Value got = pool.submit_batch(fn("square"), Value::list(items)).get(30.0);
  ASSERT_EQ(got.kind(), Value::Kind::List);
  ASSERT_EQ(got.items().size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(got.items()[i].as_int(), i * i);
  // Tuples of several arguments; an empty batch.
  got = pool.submit_batch(fn("affine"), Value::list({ints({1, 2, 3}), ints({4, 5})})).get(30.0);
  ASSERT_EQ(got.items().size(), 2u);
  EXPECT_EQ(got.items()[0].as_int(), 5);
  EXPECT_EQ(got.items()[1].as_int(), 20);
  got = pool.submit_batch(fn("square"), Value::list({})).get(30.0);
  ASSERT_EQ(got.kind(), Value::Kind::List);
  EXPECT_TRUE(got.items().empty());
}

TEST(Pool, SubmitEachPassesOneArgumentPerItem) {
  Pool pool(helpers(1));
  Value got = pool.submit_each(fn("square"), Value::list({Value::from_int(3), Value::from_int(4)}))
                  .get(30.0);
  ASSERT_EQ(got.kind(), Value::Kind::List);
  ASSERT_EQ(got.items().size(), 2u);
  EXPECT_EQ(got.items()[0].as_int(), 9);
  EXPECT_EQ(got.items()[1].as_int(), 16);
  // A tuple item is one argument, not unpacked.
  got = pool.submit_each(Value::function_ref("builtins", "len"), Value::list({ints({1, 2, 3})}))
            .get(30.0);
  EXPECT_EQ(got.items().at(0).as_int(), 3);
  EXPECT_THROW(pool.submit_each(fn("square"), ints({1})), subinterp::Error);  // not a list
  EXPECT_EQ(
      failure_of(pool.submit_each(fn("square"), Value::list({Value::from_str("x")}))).type_name,
      "TypeError");
}

TEST(Pool, ExceptionEndsTheBatch) {
  Pool pool(helpers(1));
  Queue log = Queue::create();
  Value q = Value::from_queue(log);
  Future f = pool.submit_batch(
      fn("record_or_fail"),
      Value::list({Value::tuple({q, Value::from_int(1)}), Value::tuple({q, Value::from_int(-2)}),
                   Value::tuple({q, Value::from_int(3)})}));
  subinterp::ExceptionSnapshot s = failure_of(f);
  EXPECT_EQ(s.type_name, "ValueError");
  EXPECT_EQ(s.msg, "negative: -2");
  EXPECT_EQ(log.get(0.0).value.as_int(), 1);
  EXPECT_EQ(log.get(0.0).value.as_int(), -2);
  EXPECT_THROW(log.get(0.0), QueueEmpty);  // the item after the failure never ran
  // A result that cannot travel fails the batch too.
  Future lock = pool.submit_batch(fn("make_lock"), Value::list({Value::tuple({})}));
  EXPECT_THROW(lock.get(30.0), NotShareable);
}

TEST(Pool, BatchOfBadItemsIsRefused) {
  Pool pool(helpers(1));
  EXPECT_THROW(pool.submit_batch(fn("square"), ints({1, 2})), subinterp::Error);  // not a list
  EXPECT_THROW(pool.submit_batch(fn("square"), Value::from_int(3)), subinterp::Error);
  EXPECT_THROW(pool.submit_batch(fn("square"), Value::list({ints({1}), Value::from_int(2)})),
               subinterp::Error);
  EXPECT_THROW(pool.submit_batch(fn("square"), Value::list({Value::list({Value::from_int(1)})})),
               subinterp::Error);
  EXPECT_EQ(pool.pending(), 0u);
  EXPECT_EQ(pool.submit_batch(fn("square"), Value::list({ints({7})})).get(30.0).items()[0].as_int(),
            49);
}

}  // namespace
}  // namespace subinterp_test
