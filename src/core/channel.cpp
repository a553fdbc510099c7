#include "subinterp/channel.hpp"

#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>
#include <string>

#include "internal.hpp"
#include "subinterp/subinterp.hpp"
#include "registry.hpp"
#include "wait.hpp"

namespace subinterp {
namespace detail {
namespace {

// Why a blocked sender was woken.
constexpr int kReceived = 0;
constexpr int kDropped = 1;   // closed from the receive end
constexpr int kShutDown = 2;  // the runtime is shutting down

struct ChannelEntry {
  Value value;
  Waiter* sender = nullptr;  // a send() waiting for this item to be received
};

Registry<ChannelState>& channel_registry() {
  static auto* r = new Registry<ChannelState>();  // never destroyed: used at exit
  return *r;
}

std::string channel_name(std::int64_t id) { return "channel " + std::to_string(id); }

}  // namespace

class ChannelState {
 public:
  explicit ChannelState(std::int64_t id) : id_(id) {}
  ~ChannelState() { channel_registry().remove(id_, false); }

  [[noreturn]] void throw_closed() const {
    throw ChannelClosed(channel_name(id_) + " is closed");
  }

  // Takes the oldest item and tells its sender. Requires mu_ and an item.
  Value pop() {
    ChannelEntry e = std::move(items_.front());
    items_.pop_front();
    count_.store(items_.size(), std::memory_order_relaxed);
    if (e.sender != nullptr) e.sender->wake(kReceived);
    return std::move(e.value);
  }

  const std::int64_t id_;
  Mutex mu_;
  std::deque<ChannelEntry> items_;  // guarded by mu_
  WaitList receivers_;              // guarded by mu_
  bool closed_ = false;             // guarded by mu_
  std::atomic<std::size_t> count_{0};
  std::atomic<bool> closed_flag_{false};
};

void channels_refuse_waits() {
  for (auto& c : channel_registry().live()) {
    std::lock_guard<Mutex> lock(c->mu_);
    c->receivers_.wake_all();
    for (ChannelEntry& e : c->items_) {
      if (e.sender != nullptr) {
        e.sender->wake(kShutDown);
        e.sender = nullptr;
      }
    }
  }
}

}  // namespace detail

using detail::ChannelEntry;
using detail::ChannelState;

Channel Channel::create() {
  detail::require_single_core();
  return Channel(detail::channel_registry().create());
}

Channel Channel::find(std::int64_t id) {
  std::shared_ptr<ChannelState> state = detail::channel_registry().find(id);
  if (!state) throw ChannelNotFound(detail::channel_name(id) + " not found");
  return Channel(std::move(state));
}

std::vector<std::int64_t> Channel::list_all() { return detail::channel_registry().ids(); }

std::int64_t Channel::id() const noexcept { return state_->id_; }
std::size_t Channel::size() const noexcept {
  return state_->count_.load(std::memory_order_relaxed);
}
bool Channel::is_closed() const noexcept { return state_->closed_flag_.load(); }

bool Channel::send_nowait(Value value) const {
  ChannelState& s = *state_;
  std::lock_guard<detail::Mutex> lock(s.mu_);
  if (s.closed_) s.throw_closed();
  s.items_.push_back(ChannelEntry{std::move(value), nullptr});
  s.count_.store(s.items_.size(), std::memory_order_relaxed);
  return s.receivers_.wake_one();
}

void Channel::send(Value value, std::optional<double> timeout) const {
  ChannelState& s = *state_;
  detail::Deadline deadline = detail::deadline_after(timeout);
  detail::Waiter receipt;
  detail::SleepResult result = detail::SleepResult::Woken;
  Value withdrawn;  // destroyed after the unlock
  {
    detail::GilRelease gil;
    detail::Lock lock(s.mu_);
    if (s.closed_) {
      lock.unlock();
      gil.acquire();
      s.throw_closed();
    }
    s.items_.push_back(ChannelEntry{std::move(value), &receipt});
    s.count_.store(s.items_.size(), std::memory_order_relaxed);
    s.receivers_.wake_one();
    // A receiver that is running takes it within microseconds: wait for that
    // without a system call before sleeping.
    lock.unlock();
    detail::spin_until([&] { return receipt.woken(); }, detail::kSpin);
    lock.lock();
    while (!receipt.woken() && !detail::waits_refused()) {
      result = detail::sleep(receipt, lock, deadline, gil);
      if (result != detail::SleepResult::Woken) break;
    }
    if (!receipt.woken()) {
      // Timed out or interrupted before anyone took it: withdraw it.
      auto it = std::find_if(s.items_.begin(), s.items_.end(),
                             [&](const ChannelEntry& e) { return e.sender == &receipt; });
      if (it != s.items_.end()) {
        withdrawn = std::move(it->value);
        s.items_.erase(it);
        s.count_.store(s.items_.size(), std::memory_order_relaxed);
      }
    }
    lock.unlock();
    // Raised by a signal handler (the item may have been received meanwhile).
    if (result == detail::SleepResult::Interrupted) py::throw_python_error();
  }
  if (receipt.woken()) {
    if (receipt.status() == detail::kDropped) s.throw_closed();
    if (receipt.status() == detail::kShutDown) detail::throw_shut_down();
    return;
  }
  if (detail::waits_refused()) detail::throw_shut_down();
  throw ChannelTimeout(detail::channel_name(s.id_) + ": the item was not received in time");
}

Value Channel::recv_nowait() const {
  ChannelState& s = *state_;
  std::lock_guard<detail::Mutex> lock(s.mu_);
  if (!s.items_.empty()) return s.pop();
  if (s.closed_) s.throw_closed();
  throw ChannelEmpty(detail::channel_name(s.id_) + " is empty");
}

Value Channel::recv(std::optional<double> timeout) const {
  ChannelState& s = *state_;
  {
    std::lock_guard<detail::Mutex> lock(s.mu_);
    if (!s.items_.empty()) return s.pop();
    if (s.closed_) s.throw_closed();
  }
  detail::Deadline deadline = detail::deadline_after(timeout);
  detail::spin_until(
      [&] {
        return s.count_.load(std::memory_order_relaxed) > 0 ||
               s.closed_flag_.load(std::memory_order_relaxed) || detail::expired(deadline);
      },
      detail::kSpin);
  std::optional<Value> got;
  detail::Outcome outcome;
  {
    detail::GilRelease gil;
    detail::Lock lock(s.mu_);
    outcome = detail::wait_until(lock, s.receivers_, deadline, gil,
                                 [&] { return s.closed_ || !s.items_.empty(); });
    if (outcome != detail::Outcome::Interrupted && !s.items_.empty()) got.emplace(s.pop());
    lock.unlock();
    if (outcome == detail::Outcome::Interrupted) py::throw_python_error();
  }
  if (got) return std::move(*got);
  if (outcome == detail::Outcome::TimedOut) {
    throw ChannelTimeout(detail::channel_name(s.id_) + ": nothing received in time");
  }
  if (outcome == detail::Outcome::ShutDown) detail::throw_shut_down();
  s.throw_closed();
}

void Channel::close(ChannelEnd end) const {
  ChannelState& s = *state_;
  std::deque<ChannelEntry> dropped;  // destroyed after the unlock
  std::lock_guard<detail::Mutex> lock(s.mu_);
  s.closed_ = true;
  s.closed_flag_.store(true);
  if (end == ChannelEnd::Recv) {
    dropped.swap(s.items_);
    s.count_.store(0, std::memory_order_relaxed);
    for (ChannelEntry& e : dropped) {
      if (e.sender != nullptr) e.sender->wake(detail::kDropped);
    }
  }
  s.receivers_.wake_all();
}

}  // namespace subinterp
