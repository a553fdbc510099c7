// Access log lines in gunicorn's format language (`--access-logformat`):
// %(atom)s with gunicorn's atoms; the default is gunicorn's default,
//   %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace subinterp::server::detail {

inline constexpr const char* kDefaultAccessLogFormat =
    R"(%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s")";

// What a line can show about one request.
struct AccessRecord {
  std::string_view remote_addr;
  std::string_view method;
  std::string_view target;  // path and query as received
  int version = 11;
  int status = 0;
  std::size_t body_bytes = 0;
  bool bodyless = false;
  const std::vector<std::pair<std::string, std::string>>* request_headers = nullptr;
  const std::vector<std::pair<std::string, std::string>>* response_headers = nullptr;
  std::chrono::nanoseconds duration{0};
};

// The local time now, in strftime's `format`.
std::string local_time(const char* format);

class AccessLogFormat {
 public:
  // Throws std::invalid_argument for an unknown atom or a malformed format.
  explicit AccessLogFormat(std::string_view format = kDefaultAccessLogFormat);
  std::string format(const AccessRecord& r) const;

 private:
  struct Part {
    enum Kind { literal, atom, request_header, response_header, environ } kind;
    std::string text;  // the literal, the atom's letter(s), or the header name
  };
  std::vector<Part> parts_;
};

}  // namespace subinterp::server::detail
