// A response streamed while the application runs: the header goes out with
// the first non-empty piece of the body (PEP 3333), each later piece as it
// comes (chunked on HTTP/1.1 when the application gave no Content-Length),
// a file from wsgi.file_wrapper by sendfile(2). The serving thread is the
// request's while the application runs, so it writes to the socket itself,
// with the worker's GIL released and a time limit on each wait for the
// client.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace subinterp::server::detail {

class Output {
 public:
  // fd: the connection's socket. version: the request's (10 or 11).
  // head: a HEAD request (no body goes out). keep_alive: whether the request
  // allows another one on the connection. wait_limit_s: the longest the
  // client may leave a write waiting.
  Output(int fd, int version, bool head, bool keep_alive, double wait_limit_s)
      : fd_(fd), version_(version), head_(head), wait_limit_s_(wait_limit_s),
        keep_alive_(keep_alive) {}

  // The response's head, before the first piece of the body. status: 100 to
  // 999; headers: checked already, without hop-by-hop fields.
  void set_head(int status, std::string reason,
                std::vector<std::pair<std::string, std::string>> headers, bool has_length,
                std::uint64_t length);
  bool has_head() const { return have_head_; }
  bool started() const { return started_; }

  // Each returns false once the client is gone or too slow (failed() then
  // says why; later calls fail at once). Call with no GIL held.
  bool write(std::string_view data);
  // `count` bytes of `file_fd` from `offset` (a regular file).
  bool send_file(int file_fd, std::uint64_t offset, std::uint64_t count);
  // Ends the body (the last chunk); after it, keep_alive() says whether the
  // connection can serve another request.
  bool finish();

  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  int error_number() const { return errno_; }
  bool keep_alive() const { return keep_alive_; }
  // More body than the Content-Length: the rest was not sent.
  bool truncated() const { return truncated_; }

  // For the access log.
  int status() const { return status_; }
  std::uint64_t body_bytes() const { return body_bytes_; }
  const std::vector<std::pair<std::string, std::string>>& headers() const { return headers_; }

  // Whether the request forbids a body (HEAD, 1xx, 204, 304).
  bool bodyless() const { return head_ || status_ < 200 || status_ == 204 || status_ == 304; }

 private:
  std::string header();
  std::uint64_t room(std::uint64_t want);
  bool send_all(std::initializer_list<std::string_view> parts);
  bool wait_writable();
  bool again_after_error();
  void fail(int err, std::string why);

  int fd_;
  int version_;
  bool head_;
  double wait_limit_s_;
  bool have_head_ = false;
  bool started_ = false;
  bool finished_ = false;
  bool chunked_ = false;
  bool keep_alive_ = true;
  bool has_length_ = false;
  std::uint64_t length_ = 0;       // the declared Content-Length
  std::uint64_t body_bytes_ = 0;   // body bytes sent (without chunk framing)
  bool truncated_ = false;
  int status_ = 0;
  std::string reason_;
  std::vector<std::pair<std::string, std::string>> headers_;
  std::string error_;
  int errno_ = 0;
};

// The Output of the request the calling thread serves now, if any.
Output* current_output() noexcept;

class OutputScope {
 public:
  explicit OutputScope(Output* out);
  ~OutputScope();
  OutputScope(const OutputScope&) = delete;
  OutputScope& operator=(const OutputScope&) = delete;

 private:
  Output* previous_;
};

}  // namespace subinterp::server::detail
