#include "output.hpp"

#include <poll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <sys/uio.h>

#include <utility>  // before Asio: 1.74 uses std::exchange without it

#include <boost/asio/buffer.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <initializer_list>

namespace subinterp::server::detail {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

thread_local Output* t_output = nullptr;

// A SyncWriteStream that collects what Beast serializes.
struct StringSink {
  std::string out;
  template <class Buffers>
  std::size_t write_some(const Buffers& buffers, beast::error_code& ec) {
    ec = {};
    std::size_t n = 0;
    for (auto it = net::buffer_sequence_begin(buffers); it != net::buffer_sequence_end(buffers);
         ++it) {
      net::const_buffer b = *it;
      out.append(static_cast<const char*>(b.data()), b.size());
      n += b.size();
    }
    return n;
  }
  template <class Buffers>
  std::size_t write_some(const Buffers& buffers) {
    beast::error_code ec;
    return write_some(buffers, ec);
  }
};

template <class Buffers>
std::string serialize(const Buffers& buffers) {
  StringSink sink;
  sink.write_some(buffers);
  return std::move(sink.out);
}

}  // namespace

Output* current_output() noexcept { return t_output; }

OutputScope::OutputScope(Output* out) : previous_(t_output) { t_output = out; }
OutputScope::~OutputScope() { t_output = previous_; }

void Output::set_head(int status, std::string reason,
                      std::vector<std::pair<std::string, std::string>> headers, bool has_length,
                      std::uint64_t length) {
  status_ = status;
  reason_ = std::move(reason);
  headers_ = std::move(headers);
  has_length_ = has_length;
  length_ = length;
  have_head_ = true;
}

void Output::fail(int err, std::string why) {
  if (error_.empty()) {
    error_ = std::move(why);
    errno_ = err;
  }
  keep_alive_ = false;
}

bool Output::wait_writable() {
  pollfd p{fd_, POLLOUT, 0};
  int ms = static_cast<int>(wait_limit_s_ * 1000);
  for (;;) {
    int n = ::poll(&p, 1, ms > 0 ? ms : -1);
    if (n > 0) return true;
    if (n == 0) {
      fail(ETIMEDOUT, "the client took no response data for " +
                          std::to_string(static_cast<long>(wait_limit_s_)) + " s");
      return false;
    }
    if (errno != EINTR) {
      fail(errno, std::strerror(errno));
      return false;
    }
  }
}

// After a send that failed (errno): true to try again (interrupted, or the
// socket is writable again), false once the client is gone or too slow.
bool Output::again_after_error() {
  if (errno == EINTR) return true;
  if (errno == EAGAIN || errno == EWOULDBLOCK) return wait_writable();
  fail(errno, std::strerror(errno));
  return false;
}

// Sends the parts in order, in as few system calls as the socket allows.
bool Output::send_all(std::initializer_list<std::string_view> parts) {
  if (failed()) return false;
  iovec iov[4];
  int count = 0;
  for (std::string_view part : parts) {
    if (!part.empty() && count < 4) {
      iov[count].iov_base = const_cast<char*>(part.data());
      iov[count].iov_len = part.size();
      ++count;
    }
  }
  iovec* next = iov;
  while (count > 0) {
    msghdr msg{};
    msg.msg_iov = next;
    msg.msg_iovlen = static_cast<std::size_t>(count);
    ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (again_after_error()) continue;
      return false;
    }
    auto left = static_cast<std::size_t>(n);
    while (count > 0 && left >= next->iov_len) {
      left -= next->iov_len;
      ++next;
      --count;
    }
    if (count > 0) {
      next->iov_base = static_cast<char*>(next->iov_base) + left;
      next->iov_len -= left;
    }
  }
  return true;
}

// The header, serialized by Beast; decides the body's framing.
std::string Output::header() {
  started_ = true;
  http::response<http::empty_body> res;
  res.version(version_ == 10 ? 10 : 11);
  res.result(static_cast<unsigned>(status_));
  res.reason(reason_);
  bool has_server = false;
  for (auto& [name, value] : headers_) {
    has_server = has_server || beast::iequals(name, "server");
    res.insert(name, value);
  }
  if (!has_server) res.set(http::field::server, "subinterp");
  if (!bodyless() && !has_length_) {
    if (version_ >= 11) {
      chunked_ = true;
      res.chunked(true);
    } else {
      keep_alive_ = false;  // HTTP/1.0: the end of the body is the end of the connection
    }
  }
  res.keep_alive(keep_alive_);
  http::serializer<false, http::empty_body> sr(res);
  sr.split(true);
  StringSink sink;
  beast::error_code ec;
  http::write_header(sink, sr, ec);
  if (ec) fail(EINVAL, "serializing the response header: " + ec.message());
  return std::move(sink.out);
}

// How much of `want` bytes the declared Content-Length still has room for.
std::uint64_t Output::room(std::uint64_t want) {
  if (!has_length_) return want;
  std::uint64_t left = length_ > body_bytes_ ? length_ - body_bytes_ : 0;
  if (want > left) {
    truncated_ = true;
    return left;
  }
  return want;
}

bool Output::write(std::string_view data) {
  if (failed()) return false;
  if (data.empty()) return true;  // the header waits for a non-empty piece
  std::string head = started_ ? std::string() : header();
  if (failed()) return false;
  if (bodyless()) return head.empty() || send_all({head});
  data = data.substr(0, static_cast<std::size_t>(room(data.size())));
  body_bytes_ += data.size();
  if (chunked_ && !data.empty()) {
    std::string framing = serialize(http::chunk_header(data.size()));
    return send_all({head, framing, data, "\r\n"});
  }
  return send_all({head, data});
}

bool Output::send_file(int file_fd, std::uint64_t offset, std::uint64_t count) {
  if (failed()) return false;
  std::string head;
  if (!started_) {
    if (!has_length_) {
      // The exact length is known: no chunks needed.
      has_length_ = true;
      length_ = count;
      headers_.emplace_back("Content-Length", std::to_string(count));
    }
    head = header();
    if (failed()) return false;
  }
  if (bodyless()) return head.empty() || send_all({head});
  count = room(count);
  std::string framing = chunked_ && count != 0 ? serialize(http::chunk_header(count)) : "";
  if (!send_all({head, framing})) return false;
  int flags = ::fcntl(fd_, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK) == 0) ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
  auto off = static_cast<off_t>(offset);
  std::uint64_t left = count;
  while (left > 0) {
    ssize_t n = ::sendfile(fd_, file_fd, &off,
                           static_cast<std::size_t>(std::min<std::uint64_t>(left, 1u << 30)));
    if (n < 0) {
      if (again_after_error()) continue;
      return false;
    }
    if (n == 0) {
      // The file is shorter than it was: the body ends short, and so does
      // the connection (the client must not take what follows for it).
      fail(EIO, "the file ended before its length");
      return false;
    }
    left -= static_cast<std::uint64_t>(n);
    body_bytes_ += static_cast<std::uint64_t>(n);
  }
  return chunked_ && count != 0 ? send_all({"\r\n"}) : true;
}

bool Output::finish() {
  if (failed()) return false;
  std::string head = started_ ? std::string() : header();
  if (failed()) return false;
  std::string tail = chunked_ ? serialize(http::make_chunk_last()) : "";
  // A body shorter than its Content-Length: only closing the connection
  // tells the client.
  if (has_length_ && !bodyless() && body_bytes_ < length_) keep_alive_ = false;
  return send_all({head, tail});
}

}  // namespace subinterp::server::detail
