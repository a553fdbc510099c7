#include "access_log.hpp"

#include <unistd.h>

#include <boost/beast/core/string.hpp>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <stdexcept>

namespace subinterp::server::detail {
namespace {

constexpr std::string_view kAtoms[] = {"h", "l", "u", "t", "r", "m", "U", "q", "H", "s",
                                       "B", "b", "f", "a", "T", "M", "D", "L", "p"};

std::string_view header(const std::vector<std::pair<std::string, std::string>>* headers,
                        std::string_view name) {
  if (headers != nullptr) {
    for (const auto& [n, v] : *headers) {
      if (boost::beast::iequals(n, name)) return v;
    }
  }
  return "-";
}

}  // namespace

std::string local_time(const char* format) {
  char buf[64];
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  std::size_t n = std::strftime(buf, sizeof buf, format, &tm);
  return std::string(buf, n);
}

AccessLogFormat::AccessLogFormat(std::string_view format) {
  std::string literal;
  std::size_t i = 0;
  while (i < format.size()) {
    if (format[i] == '%' && i + 1 < format.size() && format[i + 1] == '%') {
      literal.push_back('%');
      i += 2;
      continue;
    }
    if (format[i] != '%' || i + 1 >= format.size() || format[i + 1] != '(') {
      literal.push_back(format[i++]);
      continue;
    }
    std::size_t close = format.find(")s", i + 2);
    if (close == std::string_view::npos) {
      throw std::invalid_argument("access log format: '%(' without ')s' at " +
                                  std::to_string(i));
    }
    std::string_view name = format.substr(i + 2, close - i - 2);
    if (!literal.empty()) parts_.push_back({Part::literal, std::move(literal)});
    literal.clear();
    if (name.size() > 3 && name.front() == '{' && name[name.size() - 2] == '}') {
      char kind = name.back();
      std::string inner(name.substr(1, name.size() - 3));
      if (kind == 'i') {
        parts_.push_back({Part::request_header, inner});
      } else if (kind == 'o') {
        parts_.push_back({Part::response_header, inner});
      } else if (kind == 'e') {
        parts_.push_back({Part::environ, inner});
      } else {
        throw std::invalid_argument("access log format: unknown atom '" + std::string(name) +
                                    "' ({name}i, {name}o or {name}e)");
      }
    } else {
      bool known = false;
      for (auto a : kAtoms) known = known || a == name;
      if (!known) {
        throw std::invalid_argument("access log format: unknown atom '" + std::string(name) +
                                    "'");
      }
      parts_.push_back({Part::atom, std::string(name)});
    }
    i = close + 2;
  }
  if (!literal.empty()) parts_.push_back({Part::literal, std::move(literal)});
}

std::string AccessLogFormat::format(const AccessRecord& r) const {
  std::string out;
  const char* protocol = r.version == 10 ? "HTTP/1.0" : "HTTP/1.1";
  std::string_view path = r.target.substr(0, r.target.find('?'));
  std::size_t q = r.target.find('?');
  std::string_view query = q == std::string_view::npos ? std::string_view() : r.target.substr(q + 1);
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(r.duration).count();
  char num[64];
  for (const Part& p : parts_) {
    switch (p.kind) {
      case Part::literal: out += p.text; break;
      case Part::request_header: out += header(r.request_headers, p.text); break;
      case Part::response_header: out += header(r.response_headers, p.text); break;
      case Part::environ: {
        const char* v = std::getenv(p.text.c_str());
        out += v ? v : "-";
        break;
      }
      case Part::atom: {
        const std::string& a = p.text;
        if (a == "h") out += r.remote_addr.empty() ? std::string_view("-") : r.remote_addr;
        else if (a == "l" || a == "u") out += '-';
        else if (a == "t") out += local_time("[%d/%b/%Y:%H:%M:%S %z]");
        else if (a == "r") {
          out.append(r.method).append(" ").append(r.target).append(" ").append(protocol);
        } else if (a == "m") out += r.method;
        else if (a == "U") out += path;
        else if (a == "q") out += query;
        else if (a == "H") out += protocol;
        else if (a == "s") out += std::to_string(r.status);
        else if (a == "B") out += std::to_string(r.bodyless ? 0 : r.body_bytes);
        else if (a == "b") out += r.bodyless ? "-" : std::to_string(r.body_bytes);
        else if (a == "f") out += header(r.request_headers, "referer");
        else if (a == "a") out += header(r.request_headers, "user-agent");
        else if (a == "T") out += std::to_string(us / 1000000);
        else if (a == "M") out += std::to_string(us / 1000);
        else if (a == "D") out += std::to_string(us);
        else if (a == "L") {
          std::snprintf(num, sizeof num, "%.6f", static_cast<double>(us) / 1e6);
          out += num;
        } else if (a == "p") out += "<" + std::to_string(getpid()) + ">";
        break;
      }
    }
  }
  return out;
}

}  // namespace subinterp::server::detail
