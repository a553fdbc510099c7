// Queues between interpreters (PEP 734).
//
// A `Queue` is a handle to a FIFO of `Value`s that belongs to no
// interpreter: any thread, with any interpreter's thread state attached or
// none, may put and get. Handles are cheap to copy; the queue lives while
// any handle does (including handles inside Values that sit in other queues
// or travel to other interpreters), or until close().
//
// Blocking calls release the GIL of the attached thread state while they
// wait, and wake on a put/get, the deadline, close(), or (in the main
// thread of the main interpreter) a signal handler that raises, such as
// Ctrl-C's KeyboardInterrupt, which comes out as py::PythonError.
//
// Items remember the interpreter that put them. When that interpreter is
// closed, each item follows its `Unbound` policy.
#pragma once

#include "subinterp/export.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "subinterp/error.hpp"
#include "subinterp/value.hpp"

namespace subinterp {

namespace detail {
class QueueState;
}

// What happens to an item whose putting interpreter was closed (the values
// are those of CPython's queues module).
enum class Unbound : std::uint8_t {
  Remove = 1,   // the item is dropped from the queue
  Error = 2,    // getting it throws ItemInterpreterDestroyed
  Replace = 3,  // getting it returns the "unbound" marker (see QueueItem)
};

class SUBINTERP_API QueueError : public Error {
 public:
  using Error::Error;
};
// get() found no item (without blocking, or before its deadline).
class SUBINTERP_API QueueEmpty : public QueueError {
 public:
  using QueueError::QueueError;
};
// put() found no room (without blocking, or before its deadline).
class SUBINTERP_API QueueFull : public QueueError {
 public:
  using QueueError::QueueError;
};
// No queue has this id (never made, or all handles gone), or it was closed.
class SUBINTERP_API QueueNotFound : public QueueError {
 public:
  using QueueError::QueueError;
};
// The item got was put by an interpreter since closed, with Unbound::Error.
class SUBINTERP_API ItemInterpreterDestroyed : public QueueError {
 public:
  using QueueError::QueueError;
};

// One item taken from a queue: the value, or `unbound` set (and value None)
// when the item's interpreter was closed and its policy is Unbound::Replace.
struct QueueItem {
  Value value;
  bool unbound = false;
};

class SUBINTERP_API Queue {
 public:
  // maxsize 0 or less means unbounded (maxsize() still reports the value
  // given, as Python's queues do). `unbound` is the policy of put() calls
  // that give none.
  static Queue create(std::int64_t maxsize = 0, Unbound unbound = Unbound::Replace);
  // The queue with this id. Throws QueueNotFound.
  static Queue find(std::int64_t id);
  // Ids of the queues that exist now.
  static std::vector<std::int64_t> list_all();

  std::int64_t id() const noexcept;
  std::int64_t maxsize() const noexcept;
  Unbound default_unbound() const noexcept;

  // Appends `value`; while the queue is full, waits up to `timeout` seconds
  // (nullopt: forever; 0: not at all). Throws QueueFull on timeout,
  // QueueNotFound when closed.
  void put(Value value, std::optional<double> timeout = std::nullopt,
           std::optional<Unbound> unbound = std::nullopt) const;
  // Takes the oldest item; while there is none, waits up to `timeout`
  // seconds. Throws QueueEmpty on timeout, QueueNotFound when closed,
  // ItemInterpreterDestroyed for an unbound item with Unbound::Error.
  QueueItem get(std::optional<double> timeout = std::nullopt) const;

  std::size_t size() const noexcept;
  bool empty() const noexcept { return size() == 0; }
  bool full() const noexcept;

  // Drops the items, wakes every blocked put and get (they throw
  // QueueNotFound) and removes the id; later calls throw QueueNotFound.
  void close() const;
  bool is_closed() const noexcept;

  bool operator==(const Queue& other) const noexcept { return state_ == other.state_; }

 private:
  explicit Queue(std::shared_ptr<detail::QueueState> state) : state_(std::move(state)) {}
  friend class Value;
  friend class ValueBuilder;

  std::shared_ptr<detail::QueueState> state_;
};

}  // namespace subinterp
