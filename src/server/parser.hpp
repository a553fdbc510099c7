// The request parser: Boost.Beast's HTTP/1 parser (basic_parser), with the
// request kept as the pieces the worker needs (method, target, fields as
// received, body), and gunicorn's limits on the request line, the number of
// fields and each field's size checked as the pieces arrive.
#pragma once

#include <boost/beast/http.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace subinterp::server::detail {

namespace http = boost::beast::http;
using boost::beast::error_code;
using boost::beast::string_view;

// Why a request was refused, beyond Beast's own errors.
enum class Refusal { none, line_too_long, too_many_fields, field_too_large };

struct Limits {
  std::size_t request_line = 4094;
  std::size_t fields = 100;
  std::size_t field_size = 8190;
  std::uint64_t body = 0;  // 0: none
};

class RequestParser : public http::basic_parser<true> {
 public:
  RequestParser(const Limits& limits) : limits_(limits) {
    // The whole header: the request line and every field at their limits.
    std::uint64_t header = limits.request_line + 2 + limits.fields * (limits.field_size + 4) + 2;
    header_limit(header > UINT32_MAX || limits.request_line == 0 || limits.fields == 0 ||
                         limits.field_size == 0
                     ? UINT32_MAX
                     : static_cast<std::uint32_t>(header));
    // No limit is the largest one: Boost 1.74 compares the length with the
    // optional limit, and an empty optional is below every length.
    body_limit(limits.body != 0 ? limits.body : UINT64_MAX);
  }

  std::string method;
  std::string target;
  int version = 11;
  std::vector<std::pair<std::string, std::string>> fields;
  std::string body;
  bool expect_continue = false;
  Refusal refusal = Refusal::none;

 private:
  void on_request_impl(http::verb, string_view method_str, string_view target_str, int ver,
                       error_code& ec) override {
    // "METHOD SP TARGET SP HTTP/1.1"
    if (limits_.request_line != 0 &&
        method_str.size() + target_str.size() + 10 > limits_.request_line) {
      refusal = Refusal::line_too_long;
      ec = http::error::bad_target;
      return;
    }
    method.assign(method_str.data(), method_str.size());
    target.assign(target_str.data(), target_str.size());
    version = ver;
  }
  void on_response_impl(int, string_view, int, error_code& ec) override {
    ec = http::error::bad_version;
  }
  void on_field_impl(http::field name, string_view name_str, string_view value,
                     error_code& ec) override {
    if (limits_.fields != 0 && fields.size() >= limits_.fields) {
      refusal = Refusal::too_many_fields;
      ec = http::error::header_limit;
      return;
    }
    if (limits_.field_size != 0 && name_str.size() + value.size() + 2 > limits_.field_size) {
      refusal = Refusal::field_too_large;
      ec = http::error::header_limit;
      return;
    }
    if (name == http::field::expect && boost::beast::iequals(value, "100-continue")) {
      expect_continue = true;
    }
    fields.emplace_back(std::string(name_str.data(), name_str.size()),
                        std::string(value.data(), value.size()));
  }
  void on_header_impl(error_code&) override {}
  void on_body_init_impl(const boost::optional<std::uint64_t>& length, error_code&) override {
    if (length && *length < (64u << 20)) body.reserve(static_cast<std::size_t>(*length));
  }
  std::size_t on_body_impl(string_view data, error_code&) override {
    body.append(data.data(), data.size());
    return data.size();
  }
  void on_chunk_header_impl(std::uint64_t, string_view, error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, string_view data, error_code&) override {
    body.append(data.data(), data.size());
    return data.size();
  }
  void on_finish_impl(error_code&) override {}

  Limits limits_;
};

}  // namespace subinterp::server::detail
