// A worker: an isolated interpreter that has imported the WSGI application,
// and runs requests in it on the threads that serve it.
#pragma once

#include <Python.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "parser.hpp"
#include "subinterp/interpreter.hpp"
#include "subinterp/ref.hpp"
#include "subinterp/server.hpp"

namespace subinterp::server::detail {

// Where a request came from and arrived.
struct Peer {
  std::string remote_addr;  // "" for a unix socket
  std::string remote_port;
  std::string server_name;
  std::string server_port;
  bool unix_socket = false;
};

struct Response {
  int status = 500;
  std::string reason = "Internal Server Error";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool has_length = false;  // the app gave Content-Length
  std::uint64_t length = 0;  // its value
  // The body went out while the application ran (through the thread's
  // Output); what is left to do is its end.
  bool streamed = false;
  // The application failed: the traceback (logged), and a 500 goes out.
  std::string error;
};

class Worker {
 public:
  // Creates the interpreter and imports the application there. Throws
  // ExecutionFailed (the import's error) or InterpreterError.
  Worker(const Options& options, std::size_t index, std::uint64_t max_requests = 0);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // On a thread that will serve this worker: keep one thread state.
  void begin_thread() { interp_.pin_thread(); }
  void end_thread() { interp_.unpin_thread(); }
  // Threads on this worker: join() after begin_thread(); leave() returns
  // how many are left.
  void join() { threads_.fetch_add(1); }
  int leave() { return threads_.fetch_sub(1) - 1; }

  // Counts a request; true once, when the worker has served its share and
  // is to be replaced.
  bool count_request() {
    std::uint64_t n = handled_.fetch_add(1) + 1;
    return limit_ != 0 && n >= limit_ && !retiring_.exchange(true);
  }
  std::uint64_t handled() const { return handled_.load(); }
  std::uint64_t limit() const { return limit_; }
  void retire() { retiring_.store(true); }
  void keep_serving() { retiring_.store(false); }

  // Runs the application for one request on the calling thread. `since`
  // and `stage`, when given, are the watchdog's marks of this request:
  // `since` is cleared as soon as the application returns (with the GIL
  // held, so an interruption decided for this request never lands in the
  // next one), and if `stage` says it was interrupted, a TimeoutError still
  // pending is dropped.
  Response handle(const RequestParser& request, const Peer& peer, bool https,
                  std::atomic<std::int64_t>* since = nullptr,
                  const std::atomic<int>* stage = nullptr);

  // Raises exc_type (TimeoutError, SystemExit) in the thread `ident` (pthread_self()) when it next
  // runs Python code in this worker, if `still()` (asked with the worker's
  // GIL held, when that thread cannot move on to another request) says the
  // request is still the one to interrupt. Blocks until the GIL is free.
  void interrupt(unsigned long ident, PyObject* exc_type, const std::function<bool()>& still);

  // Ends the interpreter (after every serving thread has ended).
  void close();

 private:
  py::ref environ(const RequestParser& request, const Peer& peer, bool https);
  Response response_from(PyObject* result);

  Interpreter interp_;
  std::size_t index_;
  std::uint64_t limit_;
  std::atomic<std::uint64_t> handled_{0};
  std::atomic<int> threads_{0};
  std::atomic<bool> retiring_{false};
  bool serial_;
  std::mutex serial_mu_;
  // Objects of this worker's interpreter, used only with it attached.
  py::ref handler_;  // the glue that calls the application
  py::ref base_environ_;
  py::ref bytes_io_;
  // Interned keys and values made once, not per request (guarded by the
  // worker's GIL, like every object here).
  enum Key {
    kRequestMethod, kPathInfo, kQueryString, kRawUri, kServerProtocol, kServerName,
    kServerPort, kRemoteAddr, kRemotePort, kUrlScheme, kInput, kContentType, kContentLength,
    kKeyCount
  };
  py::ref keys_[kKeyCount];
  py::ref http10_, http11_, scheme_http_, scheme_https_;
  std::vector<std::pair<std::string, py::ref>> methods_;  // GET, HEAD, POST, ...
  std::unordered_map<std::string, py::ref> field_keys_;  // "User-Agent" -> HTTP_USER_AGENT
  // The last value of each of these, which rarely change from one request
  // to the next.
  std::pair<std::string, py::ref> last_server_name_, last_server_port_, last_remote_addr_;
  bool closed_ = false;
};

}  // namespace subinterp::server::detail
