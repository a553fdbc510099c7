// A worker: an isolated interpreter that has imported the WSGI application,
// and runs requests in it on the threads that serve it.
#pragma once

#include <Python.h>

#include <cstdint>
#include <string>
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
  // The application failed: the traceback (logged), and a 500 goes out.
  std::string error;
};

class Worker {
 public:
  // Creates the interpreter and imports the application there. Throws
  // ExecutionFailed (the import's error) or InterpreterError.
  Worker(const Options& options, std::size_t index);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // On a thread that will serve this worker: keep one thread state.
  void begin_thread() { interp_.pin_thread(); }
  void end_thread() { interp_.unpin_thread(); }

  // Runs the application for one request on the calling thread.
  Response handle(const RequestParser& request, const Peer& peer, bool https);

  // Ends the interpreter (after every serving thread has ended).
  void close();

 private:
  py::ref environ(const RequestParser& request, const Peer& peer, bool https);
  Response response_from(PyObject* result);

  Interpreter interp_;
  std::size_t index_;
  // Objects of this worker's interpreter, used only with it attached.
  py::ref handler_;  // the glue that calls the application
  py::ref base_environ_;
  py::ref bytes_io_;
  bool closed_ = false;
};

}  // namespace subinterp::server::detail
