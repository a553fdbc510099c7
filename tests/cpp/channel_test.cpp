// Channels from C++: sends that wait for their receiver, timeouts, closing
// either end, and use from many plain threads and from interpreters
// (tests/cpp/python_env.hpp sets up Python).
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

using subinterp::Channel;
using subinterp::ChannelClosed;
using subinterp::ChannelEmpty;
using subinterp::ChannelEnd;
using subinterp::ChannelNotFound;
using subinterp::ChannelTimeout;
using subinterp::Interpreter;
using subinterp::Value;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Waits whose upper bound is checked may take this much longer than asked
// on a loaded machine or under a sanitizer; the lower bound is exact.
constexpr auto kSlack = std::chrono::seconds(5);

bool found(std::int64_t id) {
  try {
    Channel::find(id);
    return true;
  } catch (const ChannelNotFound&) {
    return false;
  }
}

bool listed(std::int64_t id) {
  std::vector<std::int64_t> ids = Channel::list_all();
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// Waits (without sleeping long) until `done()`, for at most 30 s.
template <class Done>
bool eventually(Done done) {
  auto give_up = Clock::now() + std::chrono::seconds(30);
  while (!done()) {
    if (Clock::now() > give_up) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

TEST(Channel, FindListAllAndHandles) {
  std::int64_t id;
  {
    Channel c = Channel::create();
    id = c.id();
    EXPECT_EQ(Channel::find(id), c);
    EXPECT_TRUE(listed(id));
    EXPECT_EQ(c.size(), 0u);
    EXPECT_FALSE(c.is_closed());
    Value send_end = Value::from_channel(c, ChannelEnd::Send);
    Value recv_end = Value::from_channel(c, ChannelEnd::Recv);
    EXPECT_EQ(send_end.kind(), Value::Kind::SendChannel);
    EXPECT_EQ(recv_end.kind(), Value::Kind::RecvChannel);
    EXPECT_EQ(send_end.as_channel(), c);
    EXPECT_EQ(recv_end.as_channel(), c);
    // A value alone keeps the channel.
    c = Channel::create();
    EXPECT_NE(c.id(), id);
    EXPECT_TRUE(found(id));
    send_end.as_channel().send_nowait(Value::from_int(3));
    EXPECT_EQ(Channel::find(id).recv_nowait().as_int(), 3);
  }
  EXPECT_FALSE(found(id));
  EXPECT_FALSE(listed(id));
  EXPECT_THROW(Channel::find(1'000'000'000), ChannelNotFound);
}

// send() returns only once a receiver has taken its item.
TEST(Channel, SendWaitsUntilReceived) {
  Channel c = Channel::create();
  std::atomic<bool> receiving{false};
  std::string error;
  auto start = Clock::now();
  std::thread receiver([&] {
    try {
      std::this_thread::sleep_for(milliseconds(200));
      if (!eventually([&] { return c.size() == 1; })) throw std::runtime_error("nothing sent");
      receiving.store(true);
      if (c.recv().as_int() != 11) throw std::runtime_error("wrong item");
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  c.send(Value::from_int(11), 60.0);
  auto waited = Clock::now() - start;
  EXPECT_TRUE(receiving.load());
  receiver.join();
  EXPECT_EQ(error, "");
  EXPECT_GE(waited, milliseconds(200));
  EXPECT_LT(waited, milliseconds(200) + kSlack);
  EXPECT_EQ(c.size(), 0u);
}

TEST(Channel, SendTimeoutWithdrawsTheItem) {
  Channel c = Channel::create();
  c.send_nowait(Value::from_int(1));  // not withdrawn by the send below
  auto start = Clock::now();
  EXPECT_THROW(c.send(Value::from_int(2), 0.2), ChannelTimeout);
  auto waited = Clock::now() - start;
  EXPECT_GE(waited, milliseconds(200));
  EXPECT_LT(waited, milliseconds(200) + kSlack);
  EXPECT_EQ(c.size(), 1u);
  EXPECT_EQ(c.recv_nowait().as_int(), 1);
  EXPECT_EQ(c.size(), 0u);
  EXPECT_THROW(c.recv_nowait(), ChannelEmpty);
  // A zero timeout withdraws at once.
  EXPECT_THROW(c.send(Value::from_int(3), 0.0), ChannelTimeout);
  EXPECT_EQ(c.size(), 0u);
}

TEST(Channel, RecvNowaitAndRecvTimeout) {
  Channel c = Channel::create();
  EXPECT_THROW(c.recv_nowait(), ChannelEmpty);
  auto start = Clock::now();
  EXPECT_THROW(c.recv(0.15), ChannelTimeout);
  auto waited = Clock::now() - start;
  EXPECT_GE(waited, milliseconds(150));
  EXPECT_LT(waited, milliseconds(150) + kSlack);
  EXPECT_THROW(c.recv(0.0), ChannelTimeout);
  // Items come out in order.
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(c.send_nowait(Value::from_int(i)));
  EXPECT_EQ(c.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(c.recv(0.0).as_int(), i);
  EXPECT_THROW(c.recv_nowait(), ChannelEmpty);
}

// send_nowait() reports whether a receiver was waiting for the item. No
// call says when a receiver has gone to sleep, so a few rounds are tried:
// in each, the receiver gets the item either way.
TEST(Channel, SendNowaitTellsWhetherAReceiverWaited) {
  Channel c = Channel::create();
  EXPECT_FALSE(c.send_nowait(Value::from_int(0)));
  EXPECT_EQ(c.recv_nowait().as_int(), 0);

  bool waited = false;
  for (int round = 1; round <= 10 && !waited; ++round) {
    std::int64_t got = -1;
    std::thread receiver([&] { got = c.recv(30.0).as_int(); });
    std::this_thread::sleep_for(milliseconds(50 * round));
    waited = c.send_nowait(Value::from_int(round));
    receiver.join();
    EXPECT_EQ(got, round);
  }
  EXPECT_TRUE(waited);
  EXPECT_EQ(c.size(), 0u);
}

TEST(Channel, CloseFromTheSendEndLetsItemsDrain) {
  Channel c = Channel::create();
  c.send_nowait(Value::from_int(1));
  c.send_nowait(Value::from_int(2));
  c.close(ChannelEnd::Send);
  EXPECT_TRUE(c.is_closed());
  EXPECT_THROW(c.send_nowait(Value::from_int(3)), ChannelClosed);
  EXPECT_THROW(c.send(Value::from_int(3), 1.0), ChannelClosed);
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c.recv().as_int(), 1);
  EXPECT_EQ(c.recv_nowait().as_int(), 2);
  EXPECT_THROW(c.recv(), ChannelClosed);
  EXPECT_THROW(c.recv(1.0), ChannelClosed);
  EXPECT_THROW(c.recv_nowait(), ChannelClosed);
  // Still found by id (PEP 554: a closed channel is not released).
  EXPECT_EQ(Channel::find(c.id()), c);
}

// A sender blocked when the send end closes still completes once its item
// is received.
TEST(Channel, CloseFromTheSendEndKeepsABlockedSend) {
  Channel c = Channel::create();
  std::string error = "not run";
  std::thread sender([&] {
    try {
      c.send(Value::from_int(5), 30.0);
      error = "";
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  ASSERT_TRUE(eventually([&] { return c.size() == 1; }));
  c.close(ChannelEnd::Send);
  EXPECT_EQ(c.recv(5.0).as_int(), 5);
  sender.join();
  EXPECT_EQ(error, "");
  EXPECT_THROW(c.recv_nowait(), ChannelClosed);
}

// Closing the receive end drops the items: a blocked sender throws
// ChannelClosed.
TEST(Channel, CloseFromTheRecvEndFailsABlockedSend) {
  Channel c = Channel::create();
  std::string outcome;
  std::thread sender([&] {
    try {
      c.send(Value::from_int(5));  // forever
      outcome = "returned";
    } catch (const ChannelClosed&) {
      outcome = "closed";
    } catch (const std::exception& e) {
      outcome = e.what();
    }
  });
  ASSERT_TRUE(eventually([&] { return c.size() == 1; }));
  c.send_nowait(Value::from_int(6));
  c.close(ChannelEnd::Recv);
  sender.join();
  EXPECT_EQ(outcome, "closed");
  EXPECT_EQ(c.size(), 0u);
  EXPECT_THROW(c.recv_nowait(), ChannelClosed);
  EXPECT_THROW(c.send_nowait(Value::from_int(7)), ChannelClosed);
}

// Receivers blocked on an empty channel wake with ChannelClosed when either
// end closes.
TEST(Channel, CloseWakesBlockedReceivers) {
  for (ChannelEnd end : {ChannelEnd::Send, ChannelEnd::Recv}) {
    constexpr int kReceivers = 3;
    Channel c = Channel::create();
    std::atomic<int> started{0};
    std::vector<std::string> outcomes(kReceivers);
    std::vector<std::thread> receivers;
    for (int t = 0; t < kReceivers; ++t) {
      receivers.emplace_back([&, t] {
        ++started;
        try {
          c.recv(t == 0 ? std::nullopt : std::optional<double>(60.0));
          outcomes[t] = "returned";
        } catch (const ChannelClosed&) {
          outcomes[t] = "closed";
        } catch (const std::exception& e) {
          outcomes[t] = e.what();
        }
      });
    }
    while (started.load() < kReceivers) std::this_thread::yield();
    std::this_thread::sleep_for(milliseconds(100));
    auto start = Clock::now();
    c.close(end);
    for (auto& thread : receivers) thread.join();
    EXPECT_LT(Clock::now() - start, kSlack);
    for (int t = 0; t < kReceivers; ++t) {
      EXPECT_EQ(outcomes[t], "closed") << "receiver " << t << ", end " << static_cast<int>(end);
    }
  }
}

// 4 senders (half of their items with send(), half with send_nowait()) and
// 4 receivers, all plain threads: each item arrives exactly once; closing
// the send end after the senders finish lets the receivers drain and stop.
TEST(ChannelThreads, ManySendersAndReceivers) {
  constexpr int kSenders = 4;
  constexpr int kReceivers = 4;
  constexpr std::int64_t kPerSender = 5'000;
  Channel c = Channel::create();
  std::vector<std::string> errors(kSenders + kReceivers);
  std::vector<std::vector<std::int64_t>> received(kReceivers);
  std::vector<std::thread> receivers;
  for (int r = 0; r < kReceivers; ++r) {
    receivers.emplace_back([&, r] {
      try {
        for (;;) received[r].push_back(c.recv().as_int());
      } catch (const ChannelClosed&) {
      } catch (const std::exception& e) {
        errors[kSenders + r] = e.what();
      }
    });
  }
  std::vector<std::thread> senders;
  for (int s = 0; s < kSenders; ++s) {
    senders.emplace_back([&, s] {
      try {
        for (std::int64_t i = 0; i < kPerSender; ++i) {
          Value v = Value::from_int(s * kPerSender + i);
          if (i % 2 == 0) {
            c.send(std::move(v));
          } else {
            c.send_nowait(std::move(v));
          }
        }
      } catch (const std::exception& e) {
        errors[s] = e.what();
      }
    });
  }
  for (auto& thread : senders) thread.join();
  c.close(ChannelEnd::Send);
  for (auto& thread : receivers) thread.join();
  for (std::size_t t = 0; t < errors.size(); ++t) EXPECT_EQ(errors[t], "") << "thread " << t;

  std::vector<std::uint8_t> seen(kSenders * kPerSender, 0);
  std::int64_t duplicates = 0;
  std::int64_t total = 0;
  for (auto& list : received) {
    for (std::int64_t n : list) {
      ASSERT_GE(n, 0);
      ASSERT_LT(n, kSenders * kPerSender);
      if (seen[n]++ != 0) ++duplicates;
      ++total;
    }
  }
  EXPECT_EQ(duplicates, 0);
  EXPECT_EQ(total, kSenders * kPerSender);
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 0), 0);
  EXPECT_EQ(c.size(), 0u);
}

// Items stay valid after the interpreter that sent them closes, and a send
// inside an interpreter waits for a receiver on a plain thread.
TEST(ChannelInterpreters, ItemsOutliveTheirInterpreter) {
  Channel c = Channel::create();
  Interpreter interp = Interpreter::create();
  interp.run([&] {
    c.send_nowait(Value::from_str("from the interpreter"));
    c.send_nowait(Value::list({Value::from_int(1), Value::from_int(2)}));
  });
  std::string error;
  std::thread receiver([&] {
    try {
      if (c.recv(30.0).as_string() != "from the interpreter") throw std::runtime_error("wrong");
      if (c.recv(30.0).items().size() != 2) throw std::runtime_error("wrong list");
      if (c.recv(30.0).as_int() != 3) throw std::runtime_error("wrong int");
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  interp.run([&] { c.send(Value::from_int(3), 30.0); });
  receiver.join();
  EXPECT_EQ(error, "");

  interp.run([&] { c.send_nowait(Value::from_str("left behind")); });
  interp.close();
  EXPECT_EQ(c.recv_nowait().as_string(), "left behind");
}

}  // namespace
}  // namespace subinterp_test
