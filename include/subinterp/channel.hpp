// Channels between interpreters (PEP 554).
//
// A `Channel` is a handle to an unbounded FIFO of `Value`s with two ends: a
// sender may wait until its item has been received, and closing tells the
// other side that no more items will come (send end) or be taken (receive
// end). Like queues, channels belong to no interpreter; any thread may use
// them, a channel lives while any handle does, and blocking calls release
// the GIL and answer Ctrl-C in the main thread of the main interpreter.
//
// Items stay valid when the interpreter that sent them is closed: a Value
// belongs to no interpreter.
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
class ChannelState;
}

class SUBINTERP_API ChannelError : public Error {
 public:
  using Error::Error;
};
// No channel has this id (never made, or all handles gone).
class SUBINTERP_API ChannelNotFound : public ChannelError {
 public:
  using ChannelError::ChannelError;
};
// recv_nowait() found no item.
class SUBINTERP_API ChannelEmpty : public ChannelError {
 public:
  using ChannelError::ChannelError;
};
// Sending on a closed channel, or receiving from a closed and drained one.
class SUBINTERP_API ChannelClosed : public ChannelError {
 public:
  using ChannelError::ChannelError;
};
// send() or recv() reached its deadline.
class SUBINTERP_API ChannelTimeout : public ChannelError {
 public:
  using ChannelError::ChannelError;
};

enum class ChannelEnd : std::uint8_t { Recv, Send };

class SUBINTERP_API Channel {
 public:
  static Channel create();
  // The channel with this id. Throws ChannelNotFound.
  static Channel find(std::int64_t id);
  // Ids of the channels that exist now.
  static std::vector<std::int64_t> list_all();

  std::int64_t id() const noexcept;

  // Appends `value` and waits until a receiver takes it, up to `timeout`
  // seconds (nullopt: forever). On timeout the item is withdrawn and
  // ChannelTimeout thrown. Throws ChannelClosed when the channel is closed
  // before (or, from the receive end, while) it waits.
  void send(Value value, std::optional<double> timeout = std::nullopt) const;
  // Appends `value` without waiting; true when a receiver was blocked in
  // recv() waiting for it. Throws ChannelClosed.
  bool send_nowait(Value value) const;
  // Takes the oldest item, waiting up to `timeout` seconds for one. Throws
  // ChannelTimeout, or ChannelClosed once the channel is closed and drained.
  Value recv(std::optional<double> timeout = std::nullopt) const;
  // Takes the oldest item or throws ChannelEmpty (ChannelClosed when closed
  // and drained).
  Value recv_nowait() const;

  std::size_t size() const noexcept;

  // Closes the channel: sends throw ChannelClosed from now on. From the
  // send end, items already sent can still be received; from the receive
  // end, they are dropped and their blocked senders throw ChannelClosed.
  // Blocked receivers wake and throw ChannelClosed once it is drained.
  void close(ChannelEnd end) const;
  bool is_closed() const noexcept;

  bool operator==(const Channel& other) const noexcept { return state_ == other.state_; }

 private:
  explicit Channel(std::shared_ptr<detail::ChannelState> state) : state_(std::move(state)) {}
  friend class Value;
  friend class ValueBuilder;

  std::shared_ptr<detail::ChannelState> state_;
};

}  // namespace subinterp
