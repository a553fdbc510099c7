// Queues from C++: plain threads with no Python thread state, blocking and
// timeouts, close(), items of closed interpreters, and queue handles inside
// values (tests/cpp/python_env.hpp sets up Python).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "python_env.hpp"
#include "subinterp/subinterp.hpp"

namespace subinterp_test {
namespace {

using subinterp::Interpreter;
using subinterp::ItemInterpreterDestroyed;
using subinterp::Queue;
using subinterp::QueueEmpty;
using subinterp::QueueFull;
using subinterp::QueueItem;
using subinterp::QueueNotFound;
using subinterp::Unbound;
using subinterp::Value;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Waits whose upper bound is checked may take this much longer than asked
// on a loaded machine or under a sanitizer; the lower bound is exact.
constexpr auto kSlack = std::chrono::seconds(5);

bool listed(std::int64_t id) {
  std::vector<std::int64_t> ids = Queue::list_all();
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

bool found(std::int64_t id) {
  try {
    Queue::find(id);
    return true;
  } catch (const QueueNotFound&) {
    return false;
  }
}

// Runs `fn` on a new thread and returns the error it threw, or "" if none.
template <class Fn>
std::string error_on_thread(Fn fn) {
  std::string error;
  std::thread([&] {
    try {
      fn();
    } catch (const std::exception& e) {
      error = e.what();
    }
  }).join();
  return error;
}

TEST(Queue, FifoFromAThreadWithoutThreadState) {
  std::string error = error_on_thread([] {
    if (subinterp::current_thread_state() != nullptr) throw std::runtime_error("attached");
    Queue q = Queue::create();
    EXPECT_EQ(q.maxsize(), 0);
    EXPECT_EQ(q.default_unbound(), Unbound::Replace);
    EXPECT_TRUE(q.empty());
    EXPECT_FALSE(q.full());
    for (int i = 0; i < 10; ++i) q.put(Value::from_int(i));
    EXPECT_EQ(q.size(), 10u);
    EXPECT_FALSE(q.full());  // unbounded
    for (int i = 0; i < 10; ++i) {
      QueueItem item = q.get(0.0);
      EXPECT_FALSE(item.unbound);
      ASSERT_EQ(item.value.kind(), Value::Kind::Int);
      EXPECT_EQ(item.value.as_int(), i);
    }
    EXPECT_TRUE(q.empty());
    // Other kinds travel unchanged.
    q.put(Value::tuple({Value::from_str("a"), Value::from_bytes(std::string("\0b", 2))}));
    Value got = q.get().value;
    ASSERT_EQ(got.kind(), Value::Kind::Tuple);
    EXPECT_EQ(got.items().at(0).as_string(), "a");
    EXPECT_EQ(got.items().at(1).as_string(), std::string("\0b", 2));
  });
  EXPECT_EQ(error, "");
}

TEST(Queue, MaxsizeFullAndNowait) {
  Queue q = Queue::create(3, Unbound::Error);
  EXPECT_EQ(q.maxsize(), 3);
  EXPECT_EQ(q.default_unbound(), Unbound::Error);
  EXPECT_THROW(q.get(0.0), QueueEmpty);
  EXPECT_THROW(q.get(-1.0), QueueEmpty);  // negative is "no wait" too
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(q.full());
    q.put(Value::from_int(i), 0.0);
  }
  EXPECT_TRUE(q.full());
  EXPECT_EQ(q.size(), 3u);
  EXPECT_THROW(q.put(Value::from_int(99), 0.0), QueueFull);
  EXPECT_EQ(q.size(), 3u);  // the refused item was not added
  EXPECT_EQ(q.get(0.0).value.as_int(), 0);
  EXPECT_FALSE(q.full());
  q.put(Value::from_int(3), 0.0);
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(q.get(0.0).value.as_int(), i);
  EXPECT_THROW(q.get(0.0), QueueEmpty);
  EXPECT_TRUE(q.empty());
}

TEST(Queue, TimeoutsWaitAtLeastTheirTime) {
  Queue q = Queue::create(1);
  auto start = Clock::now();
  EXPECT_THROW(q.get(0.2), QueueEmpty);
  auto waited = Clock::now() - start;
  EXPECT_GE(waited, milliseconds(200));
  EXPECT_LT(waited, milliseconds(200) + kSlack);

  q.put(Value::from_int(1));
  start = Clock::now();
  EXPECT_THROW(q.put(Value::from_int(2), 0.15), QueueFull);
  waited = Clock::now() - start;
  EXPECT_GE(waited, milliseconds(150));
  EXPECT_LT(waited, milliseconds(150) + kSlack);
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(q.get(0.0).value.as_int(), 1);

  // A huge timeout is "forever", not an overflow into the past.
  start = Clock::now();
  std::thread putter([&] {
    std::this_thread::sleep_for(milliseconds(50));
    q.put(Value::from_int(3));
  });
  EXPECT_EQ(q.get(1e300).value.as_int(), 3);
  putter.join();
  EXPECT_GE(Clock::now() - start, milliseconds(50));
}

TEST(Queue, BlockedCallsReturnWhenTheOtherSideActs) {
  Queue q = Queue::create(1);
  // A get waiting with a long timeout returns as soon as an item comes
  // (the clock starts before the other thread does).
  auto start = Clock::now();
  std::thread putter([&] {
    std::this_thread::sleep_for(milliseconds(100));
    q.put(Value::from_int(7));
  });
  EXPECT_EQ(q.get(30.0).value.as_int(), 7);
  auto waited = Clock::now() - start;
  putter.join();
  EXPECT_GE(waited, milliseconds(100));
  EXPECT_LT(waited, milliseconds(100) + kSlack);

  // A put waiting for room returns as soon as a get makes some.
  q.put(Value::from_int(1));
  start = Clock::now();
  std::thread getter([&] {
    std::this_thread::sleep_for(milliseconds(100));
    EXPECT_EQ(q.get().value.as_int(), 1);
  });
  q.put(Value::from_int(2), 30.0);
  waited = Clock::now() - start;
  getter.join();
  EXPECT_GE(waited, milliseconds(100));
  EXPECT_LT(waited, milliseconds(100) + kSlack);
  EXPECT_EQ(q.get(0.0).value.as_int(), 2);
}

TEST(Queue, FindAndListAll) {
  Queue q = Queue::create();
  EXPECT_GT(q.id(), 0);
  EXPECT_EQ(Queue::find(q.id()), q);
  EXPECT_TRUE(listed(q.id()));
  Queue other = Queue::create();
  EXPECT_NE(other.id(), q.id());
  EXPECT_FALSE(other == q);
  EXPECT_TRUE(listed(other.id()));
  // A handle found by id is the same queue.
  Queue::find(q.id()).put(Value::from_int(5));
  EXPECT_EQ(q.get(0.0).value.as_int(), 5);
  EXPECT_THROW(Queue::find(1'000'000'000), QueueNotFound);
  EXPECT_THROW(Queue::find(-1), QueueNotFound);
}

TEST(Queue, NotFoundAfterCloseOrWhenTheLastHandleIsGone) {
  std::int64_t id;
  {
    Queue q = Queue::create();
    id = q.id();
    Queue copy = q;
    q.put(Value::from_int(1));
  }
  EXPECT_FALSE(found(id));
  EXPECT_FALSE(listed(id));

  Queue q = Queue::create();
  q.put(Value::from_int(1));
  q.put(Value::from_int(2));
  EXPECT_FALSE(q.is_closed());
  q.close();
  EXPECT_TRUE(q.is_closed());
  EXPECT_EQ(q.size(), 0u);  // its items were dropped
  EXPECT_FALSE(found(q.id()));
  EXPECT_FALSE(listed(q.id()));
  EXPECT_THROW(q.put(Value::from_int(3)), QueueNotFound);
  EXPECT_THROW(q.put(Value::from_int(3), 0.0), QueueNotFound);
  EXPECT_THROW(q.get(), QueueNotFound);
  EXPECT_THROW(q.get(0.0), QueueNotFound);
  q.close();  // closing again does nothing
  EXPECT_TRUE(q.is_closed());
}

// Threads blocked in get() on an empty queue and in put() on a full one all
// wake when the queue is closed, and throw QueueNotFound.
TEST(Queue, CloseWakesBlockedGettersAndPutters) {
  constexpr int kEach = 3;
  Queue empty = Queue::create();
  Queue full = Queue::create(1);
  full.put(Value::from_int(0));
  std::atomic<int> started{0};
  std::vector<std::string> outcomes(2 * kEach);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2 * kEach; ++t) {
    threads.emplace_back([&, t] {
      ++started;
      try {
        if (t < kEach) {
          empty.get();  // forever
        } else {
          full.put(Value::from_int(t));
        }
        outcomes[t] = "returned";
      } catch (const QueueNotFound&) {
        outcomes[t] = "closed";
      } catch (const std::exception& e) {
        outcomes[t] = e.what();
      }
    });
  }
  while (started.load() < 2 * kEach) std::this_thread::yield();
  // Most likely asleep by now; a thread that is not yet finds the queue
  // closed when it gets there, with the same outcome.
  std::this_thread::sleep_for(milliseconds(100));
  auto start = Clock::now();
  empty.close();
  full.close();
  for (auto& thread : threads) thread.join();
  EXPECT_LT(Clock::now() - start, kSlack);
  for (int t = 0; t < 2 * kEach; ++t) EXPECT_EQ(outcomes[t], "closed") << "thread " << t;
}

// 4 producers and 4 consumers, all plain threads, pass 200k items through a
// queue of 64: each item arrives exactly once, and each consumer sees the
// items of one producer in the order they were put.
TEST(QueueThreads, ManyProducersAndConsumers) {
  constexpr int kProducers = 4;
  constexpr int kConsumers = 4;
  constexpr std::int64_t kPerProducer = 50'000;
  constexpr std::int64_t kStop = -1;
  Queue q = Queue::create(64);
  std::vector<std::string> errors(kProducers + kConsumers);
  std::vector<std::vector<std::int64_t>> received(kConsumers);
  std::vector<std::thread> consumers;
  for (int c = 0; c < kConsumers; ++c) {
    consumers.emplace_back([&, c] {
      try {
        std::vector<std::int64_t> last(kProducers, -1);
        for (;;) {
          QueueItem item = q.get();
          std::int64_t n = item.value.as_int();
          if (n == kStop) break;
          std::int64_t producer = n / kPerProducer;
          if (n % kPerProducer <= last[producer]) {
            errors[kProducers + c] = "out of order: " + std::to_string(n);
            return;
          }
          last[producer] = n % kPerProducer;
          received[c].push_back(n);
        }
      } catch (const std::exception& e) {
        errors[kProducers + c] = e.what();
      }
    });
  }
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      try {
        for (std::int64_t i = 0; i < kPerProducer; ++i) {
          q.put(Value::from_int(p * kPerProducer + i));
        }
      } catch (const std::exception& e) {
        errors[p] = e.what();
      }
    });
  }
  for (auto& thread : producers) thread.join();
  for (int c = 0; c < kConsumers; ++c) q.put(Value::from_int(kStop));
  for (auto& thread : consumers) thread.join();
  for (std::size_t t = 0; t < errors.size(); ++t) EXPECT_EQ(errors[t], "") << "thread " << t;

  std::vector<std::uint8_t> seen(kProducers * kPerProducer, 0);
  std::int64_t duplicates = 0;
  std::int64_t total = 0;
  for (auto& list : received) {
    for (std::int64_t n : list) {
      ASSERT_GE(n, 0);
      ASSERT_LT(n, kProducers * kPerProducer);
      if (seen[n]++ != 0) ++duplicates;
      ++total;
    }
  }
  EXPECT_EQ(duplicates, 0);
  EXPECT_EQ(total, kProducers * kPerProducer);
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 0), 0);
  EXPECT_TRUE(q.empty());
}

// Items put inside an interpreter follow their Unbound policy once it is
// closed; items put by threads with no interpreter, or by one still open,
// stay as they are.
TEST(QueueInterpreters, UnboundPoliciesApplyWhenThePutterIsClosed) {
  Queue q = Queue::create(0, Unbound::Remove);
  Interpreter interp = Interpreter::create();
  Interpreter other = Interpreter::create();
  q.put(Value::from_int(0));  // no interpreter
  interp.run([&] {
    q.put(Value::from_int(1), std::nullopt, Unbound::Replace);
    q.put(Value::from_int(2), std::nullopt, Unbound::Error);
    q.put(Value::from_int(3), std::nullopt, Unbound::Remove);
    q.put(Value::from_int(4));  // the queue's default: Remove
    q.put(Value::from_int(5), 0.0, Unbound::Replace);
  });
  other.run([&] { q.put(Value::from_int(6), std::nullopt, Unbound::Remove); });
  EXPECT_EQ(q.size(), 7u);
  interp.close();
  EXPECT_EQ(q.size(), 5u);

  QueueItem item = q.get(0.0);
  EXPECT_FALSE(item.unbound);
  EXPECT_EQ(item.value.as_int(), 0);
  item = q.get(0.0);  // 1: replaced by the marker
  EXPECT_TRUE(item.unbound);
  EXPECT_TRUE(item.value.is_none());
  EXPECT_THROW(q.get(0.0), ItemInterpreterDestroyed);  // 2
  // 3 and 4 are gone; 5 is replaced.
  item = q.get(0.0);
  EXPECT_TRUE(item.unbound);
  item = q.get(0.0);
  EXPECT_FALSE(item.unbound);
  EXPECT_EQ(item.value.as_int(), 6);  // its interpreter is still open
  EXPECT_THROW(q.get(0.0), QueueEmpty);

  // An item taken before its interpreter closes is an ordinary value.
  other.run([&] { q.put(Value::from_int(7), std::nullopt, Unbound::Error); });
  item = q.get(0.0);
  other.close();
  EXPECT_EQ(item.value.as_int(), 7);
  EXPECT_TRUE(q.empty());
}

// Items removed because their interpreter closed make room for a blocked
// put.
TEST(QueueInterpreters, RemovedItemsWakeABlockedPut) {
  Queue q = Queue::create(2, Unbound::Remove);
  Interpreter interp = Interpreter::create();
  interp.run([&] {
    q.put(Value::from_int(1));
    q.put(Value::from_int(2));
  });
  EXPECT_TRUE(q.full());
  std::string error;
  std::thread putter([&] {
    try {
      q.put(Value::from_int(3), 30.0);
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  std::this_thread::sleep_for(milliseconds(50));
  interp.close();
  putter.join();
  EXPECT_EQ(error, "");
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(q.get(0.0).value.as_int(), 3);
}

// A get blocked inside an interpreter releases that interpreter's GIL: a
// second thread attaches its own thread state of the same interpreter and
// runs code in it meanwhile. If the GIL were held, that thread could attach
// only after the get gave up (QueueEmpty after 20 s): the test would fail,
// not hang.
TEST(QueueInterpreters, BlockedGetReleasesTheInterpretersGil) {
  Queue q = Queue::create();
  Interpreter interp = Interpreter::create();
  std::atomic<PyInterpreterState*> target{nullptr};
  std::string getter_error;
  std::int64_t got = 0;
  std::thread getter([&] {
    try {
      interp.run([&] {
        target.store(PyInterpreterState_Get());
        got = q.get(20.0).value.as_int();
      });
    } catch (const std::exception& e) {
      getter_error = e.what();
    }
  });
  while (target.load() == nullptr) std::this_thread::yield();
  EXPECT_TRUE(interp.is_running());
  std::string error = error_on_thread([&] {
    PyThreadState* tstate = PyThreadState_New(target.load());
    PyEval_RestoreThread(tstate);
    int rc = PyRun_SimpleString("x = 1");
    PyThreadState_Clear(tstate);
    PyThreadState_DeleteCurrent();
    if (rc != 0) throw std::runtime_error("x = 1 failed");
    q.put(Value::from_int(42));
  });
  getter.join();
  EXPECT_EQ(error, "");
  EXPECT_EQ(getter_error, "");
  EXPECT_EQ(got, 42);
  interp.exec("assert x == 1, x");
  interp.close();
}

// A queue lives while a Value holds a handle to it, and no longer.
TEST(QueueValues, HandleInsideAValueKeepsTheQueue) {
  std::optional<Queue> q = Queue::create(5, Unbound::Error);
  std::int64_t id = q->id();
  Value v = Value::from_queue(*q);
  EXPECT_EQ(v.kind(), Value::Kind::Queue);
  EXPECT_EQ(v.as_queue(), *q);
  EXPECT_EQ(v.as_queue().id(), id);
  EXPECT_EQ(v.as_queue().maxsize(), 5);
  q.reset();
  EXPECT_TRUE(found(id));
  EXPECT_TRUE(listed(id));
  EXPECT_EQ(Queue::find(id), v.as_queue());
  // Copies of the value share the queue.
  Value copy = Value::tuple({v});
  v = Value();
  EXPECT_TRUE(found(id));
  copy.items().at(0).as_queue().put(Value::from_int(1));
  EXPECT_EQ(Queue::find(id).get(0.0).value.as_int(), 1);
  copy = Value();
  EXPECT_FALSE(found(id));
  EXPECT_FALSE(listed(id));
}

// A queue whose only handle is an item of another queue: found through
// that item; closing the outer queue drops the item and the inner queue.
TEST(QueueValues, QueueInsideAQueue) {
  Queue outer = Queue::create();
  std::int64_t inner_id;
  {
    Queue inner = Queue::create();
    inner_id = inner.id();
    inner.put(Value::from_str("inside"));
    outer.put(Value::from_queue(inner));
    outer.put(Value::from_queue(inner));
  }
  EXPECT_TRUE(found(inner_id));
  {
    Queue inner = outer.get(0.0).value.as_queue();
    EXPECT_EQ(inner.id(), inner_id);
    EXPECT_EQ(inner.get(0.0).value.as_string(), "inside");
  }
  EXPECT_TRUE(found(inner_id));  // the second item still holds it
  outer.close();
  EXPECT_FALSE(found(inner_id));
}

// A queue crosses between this program and Python code as the same queue,
// both ways: this program and the subinterp package use one core.
TEST(QueueValues, QueuesCrossIntoPythonAndBack) {
  Interpreter interp = Interpreter::create();
  interp.exec(
      "import subinterp\n"
      "def take(q):\n"
      "    assert type(q) is subinterp.Queue, type(q)\n"
      "    q.put(q.get() * 2)\n"
      "def make():\n"
      "    q = subinterp.create_queue(5)\n"
      "    q.put('from python')\n"
      "    return q\n");
  Queue q = Queue::create();
  q.put(Value::from_int(21));
  interp.call(Value::function_ref("__main__", "take"), Value::tuple({Value::from_queue(q)}),
              Value());
  EXPECT_EQ(q.get(0.0).value.as_int(), 42);

  Value made = interp.call(Value::function_ref("__main__", "make"), Value::tuple({}), Value());
  ASSERT_EQ(made.kind(), Value::Kind::Queue);
  Queue from_python = made.as_queue();
  EXPECT_EQ(from_python.maxsize(), 5);
  EXPECT_EQ(from_python.get(0.0).value.as_string(), "from python");
}

}  // namespace
}  // namespace subinterp_test
