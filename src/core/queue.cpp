#include "subinterp/queue.hpp"

#include <atomic>
#include <deque>
#include <mutex>
#include <string>

#include "internal.hpp"
#include "subinterp/subinterp.hpp"
#include "registry.hpp"
#include "subinterp/thread_state.hpp"
#include "wait.hpp"

namespace subinterp {
namespace detail {
namespace {

struct Entry {
  Value value;
  std::int64_t owner;  // interpreter that put it; -1 for none
  Unbound policy;
  bool orphaned = false;  // its interpreter was closed (Error / Replace)
};

Registry<QueueState>& queue_registry() {
  static auto* r = new Registry<QueueState>();  // never destroyed: used at exit
  return *r;
}

std::int64_t owner_id() {
  PyThreadState* tstate = current_thread_state();
  return tstate == nullptr ? -1 : PyInterpreterState_GetID(PyThreadState_GetInterpreter(tstate));
}

std::string queue_name(std::int64_t id) { return "queue " + std::to_string(id); }

}  // namespace

// Cache-line aligned, with the mirrors on a line of their own: threads that
// spin on them (a getter waiting for an item) then do not pull the line of
// the mutex and the items from the thread that holds it, and the queue's
// speed does not depend on where the allocator happened to put it.
class alignas(64) QueueState {
 public:
  QueueState(std::int64_t id, std::int64_t maxsize, Unbound unbound)
      : id_(id),
        maxsize_(maxsize),
        capacity_(maxsize > 0 ? static_cast<std::size_t>(maxsize) : 0),
        unbound_(unbound) {}
  ~QueueState() { unregister(); }

  // A closed queue is forgotten at once; otherwise when its last handle goes.
  void unregister() { queue_registry().remove(id_, closed_flag_.load()); }

  bool has_room() const { return capacity_ == 0 || items_.size() < capacity_; }
  void update_count() { count_.store(items_.size(), std::memory_order_relaxed); }

  [[noreturn]] void throw_closed() const { throw QueueNotFound(queue_name(id_) + " was closed"); }

  const std::int64_t id_;
  const std::int64_t maxsize_;   // as given (Python 3.14 reports it back)
  const std::size_t capacity_;   // 0: unbounded (maxsize <= 0)
  const Unbound unbound_;

  Mutex mu_;
  std::deque<Entry> items_;  // guarded by mu_
  WaitList getters_;         // guarded by mu_
  WaitList putters_;         // guarded by mu_
  bool closed_ = false;      // guarded by mu_
  // Mirrors, read without the mutex by spinning threads and size().
  alignas(64) std::atomic<std::size_t> count_{0};
  std::atomic<bool> closed_flag_{false};
};

// Items put by interpreter `id`, which is being closed, follow their policy.
void queues_interpreter_closed(std::int64_t id) {
  std::vector<std::shared_ptr<QueueState>> live = queue_registry().live();
  for (auto& q : live) {
    std::deque<Entry> dropped, kept;  // destroyed after the unlock
    std::lock_guard<Mutex> lock(q->mu_);
    for (Entry& e : q->items_) {
      if (e.owner != id || e.orphaned) {
        kept.push_back(std::move(e));
      } else if (e.policy == Unbound::Remove) {
        dropped.push_back(std::move(e));
      } else {
        dropped.push_back(Entry{std::move(e.value), -1, e.policy});
        kept.push_back(Entry{Value(), -1, e.policy, true});
      }
    }
    q->items_.swap(kept);
    q->update_count();
    while (q->has_room() && q->putters_.wake_one()) {
    }
  }
}

void queues_refuse_waits() {
  for (auto& q : queue_registry().live()) {
    std::lock_guard<Mutex> lock(q->mu_);
    q->getters_.wake_all();
    q->putters_.wake_all();
  }
}

}  // namespace detail

using detail::Entry;
using detail::QueueState;

Queue Queue::create(std::int64_t maxsize, Unbound unbound) {
  detail::require_single_core();
  return Queue(detail::queue_registry().create(maxsize, unbound));
}

Queue Queue::find(std::int64_t id) {
  std::shared_ptr<QueueState> state = detail::queue_registry().find(id);
  if (!state || state->closed_flag_.load()) {
    throw QueueNotFound(detail::queue_name(id) + " not found");
  }
  return Queue(std::move(state));
}

std::vector<std::int64_t> Queue::list_all() { return detail::queue_registry().ids(); }

std::int64_t Queue::id() const noexcept { return state_->id_; }
std::int64_t Queue::maxsize() const noexcept { return state_->maxsize_; }
Unbound Queue::default_unbound() const noexcept { return state_->unbound_; }
std::size_t Queue::size() const noexcept {
  return state_->count_.load(std::memory_order_relaxed);
}
bool Queue::full() const noexcept {
  return state_->capacity_ != 0 && size() >= state_->capacity_;
}
bool Queue::is_closed() const noexcept { return state_->closed_flag_.load(); }

void Queue::put(Value value, std::optional<double> timeout, std::optional<Unbound> unbound) const {
  QueueState& s = *state_;
  Entry entry{std::move(value), detail::owner_id(), unbound.value_or(s.unbound_)};
  detail::Lock lock(s.mu_);
  if (s.closed_) s.throw_closed();
  if (!s.has_room()) {
    if (timeout && *timeout <= 0) throw QueueFull(detail::queue_name(s.id_) + " is full");
    detail::Deadline deadline = detail::deadline_after(timeout);
    lock.unlock();
    detail::spin_until(
        [&] {
          return s.count_.load(std::memory_order_relaxed) < s.capacity_ ||
                 s.closed_flag_.load(std::memory_order_relaxed);
        },
        detail::kSpin);
    detail::Outcome outcome;
    bool added = false;
    {
      detail::GilRelease gil;
      lock.lock();
      outcome = detail::wait_until(lock, s.putters_, deadline, gil,
                                   [&] { return s.closed_ || s.has_room(); });
      if (outcome == detail::Outcome::Ready && !s.closed_) {
        s.items_.push_back(std::move(entry));
        s.update_count();
        s.getters_.wake_one();
        added = true;
      }
      lock.unlock();
      if (outcome == detail::Outcome::Interrupted) py::throw_python_error();
    }
    if (added) return;
    if (outcome == detail::Outcome::TimedOut) {
      throw QueueFull(detail::queue_name(s.id_) + " is full");
    }
    if (outcome == detail::Outcome::ShutDown) detail::throw_shut_down();
    s.throw_closed();
  }
  s.items_.push_back(std::move(entry));
  s.update_count();
  s.getters_.wake_one();
}

namespace {

QueueItem finish(Entry&& entry) {
  if (!entry.orphaned) return QueueItem{std::move(entry.value), false};
  if (entry.policy == Unbound::Error) {
    throw ItemInterpreterDestroyed("the item's interpreter was closed");
  }
  return QueueItem{Value(), true};
}

}  // namespace

QueueItem Queue::get(std::optional<double> timeout) const {
  QueueState& s = *state_;
  detail::Lock lock(s.mu_);
  auto pop = [&] {
    Entry e = std::move(s.items_.front());
    s.items_.pop_front();
    s.update_count();
    if (!s.putters_.empty()) s.putters_.wake_one();
    return e;
  };
  if (s.closed_) s.throw_closed();
  if (!s.items_.empty()) {
    Entry e = pop();
    lock.unlock();
    return finish(std::move(e));
  }
  if (timeout && *timeout <= 0) throw QueueEmpty(detail::queue_name(s.id_) + " is empty");
  detail::Deadline deadline = detail::deadline_after(timeout);
  lock.unlock();
  detail::spin_until(
      [&] {
        return s.count_.load(std::memory_order_relaxed) > 0 ||
               s.closed_flag_.load(std::memory_order_relaxed);
      },
      detail::kSpin);
  std::optional<Entry> got;
  detail::Outcome outcome;
  {
    detail::GilRelease gil;
    lock.lock();
    outcome = detail::wait_until(lock, s.getters_, deadline, gil,
                                 [&] { return s.closed_ || !s.items_.empty(); });
    if (outcome == detail::Outcome::Ready && !s.closed_) got.emplace(pop());
    lock.unlock();
    if (outcome == detail::Outcome::Interrupted) py::throw_python_error();
  }
  if (got) return finish(std::move(*got));
  if (outcome == detail::Outcome::TimedOut) {
    throw QueueEmpty(detail::queue_name(s.id_) + " is empty");
  }
  if (outcome == detail::Outcome::ShutDown) detail::throw_shut_down();
  s.throw_closed();
}

void Queue::close() const {
  QueueState& s = *state_;
  std::deque<Entry> dropped;
  {
    std::lock_guard<detail::Mutex> lock(s.mu_);
    if (s.closed_) return;
    s.closed_ = true;
    s.closed_flag_.store(true);
    dropped.swap(s.items_);
    s.update_count();
    s.getters_.wake_all();
    s.putters_.wake_all();
  }
  s.unregister();
}

}  // namespace subinterp
