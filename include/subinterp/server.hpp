// A WSGI server whose workers are sub-interpreters (libsubinterp_server).
//
// One process serves a WSGI application (PEP 3333) on every core: each
// worker is an isolated interpreter that imports the application once, and
// runs it on `threads` threads of its own, each keeping one thread state.
// HTTP is Boost.Beast's. Each thread serves the connections on its own event
// loop (the thread that reads a request runs it and writes the answer);
// while a thread is in a slow request, helper threads serve its other
// connections, so a slow request holds up only itself.
//
// The Python entry points (`python -m subinterp serve`, subinterp.serve())
// wrap this class. A C++ host that embeds Python uses it directly:
//
//   subinterp::server::Options options;
//   options.app = "myapp:application";
//   options.binds = {"127.0.0.1:8000"};
//   subinterp::server::Server server(options);
//   for (auto& a : server.start()) std::printf("Listening at: %s\n", a.c_str());
//   server.wait();                  // until stop() (from a signal handler, say)
//
// Python must be initialized, with no thread state attached on the calling
// thread during start(), wait() and stop().
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "subinterp/export.hpp"

namespace subinterp::server {

struct Options {
  // "MODULE:VARIABLE": the WSGI callable (VARIABLE defaults to
  // "application"; "MODULE:func()" calls func to make it).
  std::string app;
  // "HOST:PORT", "[IPv6]:PORT", "unix:PATH"; port 0 picks a free port.
  std::vector<std::string> binds = {"127.0.0.1:8000"};
  std::size_t workers = 0;  // 0: one per core
  std::size_t threads = 1;  // per worker, sharing its GIL
  int backlog = 2048;
  double keep_alive = 2.0;          // s an idle connection is kept
  double graceful_timeout = 30.0;   // s in-flight requests get on a graceful stop
  double read_timeout = 30.0;       // s a client may take to send a request
  // s a request may run in the application (0: no limit). Past it the
  // request gets TimeoutError raised inside it (the client then gets a 500);
  // still running at twice the time (stuck in C code), its worker is given
  // up: a new interpreter and a new thread take its place.
  double timeout = 30.0;
  // gunicorn's limits (0: no limit).
  std::size_t limit_request_line = 4094;
  std::size_t limit_request_fields = 100;
  std::size_t limit_request_field_size = 8190;
  std::uint64_t limit_request_body = 0;
  // A worker's interpreter is replaced by a fresh one after this many
  // requests, plus a random 0..jitter (0: never).
  std::uint64_t max_requests = 0;
  std::uint64_t max_requests_jitter = 0;
  // Folders put first on sys.path in every worker, and the working folder.
  std::vector<std::string> pythonpath;
  // Where log lines go (each without its newline); empty: stderr.
  std::function<void(std::string_view)> error_log;
  // Access log lines; empty: none. Their format is gunicorn's language
  // (%(h)s, %(r)s, %(s)s, %({header}i)s, ...); empty: gunicorn's default.
  std::function<void(std::string_view)> access_log;
  std::string access_log_format;
  // Remote addresses whose X-Forwarded-For / X-Forwarded-Proto are honoured
  // ("*" for all).
  std::vector<std::string> forwarded_allow_ips = {"127.0.0.1", "::1"};
};

class ServerState;

class SUBINTERP_API Server {
 public:
  explicit Server(Options options);
  // Stops (quickly) if still running.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Creates the workers (each imports the application: an import error is
  // thrown as subinterp::ExecutionFailed), binds and listens, starts the
  // threads. Returns the addresses it listens at, as URLs
  // ("http://127.0.0.1:43121", "unix:/run/app.sock"), real ports included.
  std::vector<std::string> start();
  // Stops accepting. Graceful: requests in flight finish (within the
  // graceful timeout), idle connections are closed. Otherwise connections
  // are closed at once. Returns at once; wait() waits. Any thread, also a
  // signal handler's (async-signal-safe: it only writes to a pipe).
  void stop(bool graceful) noexcept;
  // New workers import the application again; each slot's threads move to
  // the new worker after their current request, and the old ones are closed
  // when their last thread has left. Connections and sockets stay open. Any
  // thread, also a signal handler's.
  void reload() noexcept;
  // Blocks until stopped and every thread and worker has ended.
  void wait();
  // Requests answered so far.
  std::uint64_t requests() const noexcept;

 private:
  std::shared_ptr<ServerState> state_;
};

}  // namespace subinterp::server
