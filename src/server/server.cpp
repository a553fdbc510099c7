// The server: acceptors, connections (one Session each, Beast's parser and
// serializer), and the threads that serve them.
//
// Each serving thread runs an event loop of its own (a Lane) and owns the
// connections on it: the thread that reads a request runs the application
// at once, in its own worker's interpreter, and writes the answer, with no
// hand-off to another thread. The control thread accepts connections and
// gives each to the lane with the fewest connections among those not busy in
// the application; when a lane's threads have all been in the application
// for 50 ms and it has other connections, a helper thread (of the least busy
// worker) runs that lane too, so one slow request holds up only itself.
#include "subinterp/server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <utility>  // before Asio: 1.74 uses std::exchange without it

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <pthread.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "access_log.hpp"
#include "output.hpp"
#include "parser.hpp"
#include "subinterp/error.hpp"
#include "subinterp/thread_state.hpp"
#include "worker.hpp"

namespace subinterp::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Protocol = net::generic::stream_protocol;
using Acceptor = net::basic_socket_acceptor<Protocol>;
using Stream = beast::basic_stream<Protocol, net::any_io_executor, beast::unlimited_rate_policy>;

namespace {



// "HOST:PORT", "[v6]:PORT", "unix:PATH" -> a generic endpoint.
Protocol::endpoint parse_bind(const std::string& spec, std::string& unix_path) {
  if (spec.rfind("unix:", 0) == 0) {
    unix_path = spec.substr(5);
    if (unix_path.empty()) throw Error("bind '" + spec + "': empty unix socket path");
    return Protocol::endpoint(net::local::stream_protocol::endpoint(unix_path));
  }
  std::string host, port;
  if (!spec.empty() && spec[0] == '[') {
    std::size_t end = spec.find(']');
    if (end == std::string::npos || end + 1 >= spec.size() || spec[end + 1] != ':') {
      throw Error("bind '" + spec + "': expected [IPv6]:PORT");
    }
    host = spec.substr(1, end - 1);
    port = spec.substr(end + 2);
  } else {
    std::size_t colon = spec.rfind(':');
    if (colon == std::string::npos) {
      host = spec;
      port = "8000";
    } else {
      host = spec.substr(0, colon);
      port = spec.substr(colon + 1);
    }
  }
  if (host.empty() || host == "localhost") host = "127.0.0.1";
  char* end = nullptr;
  long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || p < 0 || p > 65535) {
    throw Error("bind '" + spec + "': bad port '" + port + "'");
  }
  boost::system::error_code ec;
  net::ip::address address = net::ip::make_address(host, ec);
  if (ec) throw Error("bind '" + spec + "': '" + host + "' is not an IP address");
  return Protocol::endpoint(net::ip::tcp::endpoint(address, static_cast<unsigned short>(p)));
}

// Address and port of a socket address, as text.
std::pair<std::string, std::string> describe(const Protocol::endpoint& ep) {
  const sockaddr* sa = ep.data();
  char host[INET6_ADDRSTRLEN] = "";
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return {host, std::to_string(ntohs(in->sin_port))};
  }
  if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    return {host, std::to_string(ntohs(in6->sin6_port))};
  }
  return {"", ""};
}

int status_for(const beast::error_code& ec, detail::Refusal refusal) {
  switch (refusal) {
    case detail::Refusal::line_too_long: return 414;
    case detail::Refusal::too_many_fields:
    case detail::Refusal::field_too_large: return 431;
    case detail::Refusal::none: break;
  }
  if (ec == http::error::header_limit) return 431;
  if (ec == http::error::body_limit) return 413;
  return 400;
}

const char* reason_for(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

}  // namespace

class Session;

// What the watchdog and the control thread know of one serving thread.
struct Watch {
  std::size_t slot = 0;
  std::size_t lane = 0;
  bool helper = false;                     // runs its lane only while the lane is blocked
  unsigned long ident = 0;                 // pthread_self(), as CPython names threads
  std::atomic<std::int64_t> since_ns{0};   // start of the request in the app, or 0
  std::atomic<int> stage{0};               // 0 running, 1 interrupted, 2 given up
  std::atomic<bool> ended{false};          // the thread has left its worker
  std::shared_ptr<detail::Worker> worker;  // guarded by ServerState::watch_mu
  std::thread thread;                      // guarded by ServerState::watch_mu
};

// An event loop and the connections on it. Each serving thread runs its own
// lane (no hand-offs between threads: the thread that reads a request runs
// the application and writes the answer). When a lane's thread has been in
// the application for a while and the lane has other connections, helper
// threads run the lane too, in the least busy workers.
struct Lane {
  net::io_context ctx;
  net::executor_work_guard<net::io_context::executor_type> guard{ctx.get_executor()};
  std::atomic<int> sessions{0};
  Watch* main = nullptr;  // set before serving begins
};

class ServerState : public std::enable_shared_from_this<ServerState> {
 public:
  explicit ServerState(Options o)
      : options(std::move(o)),
        access_format(options.access_log_format.empty() ? detail::kDefaultAccessLogFormat
                                                        : options.access_log_format) {
    if (options.workers == 0) {
      options.workers = std::max(1u, std::thread::hardware_concurrency());
    }
    if (options.threads == 0) options.threads = 1;
    limits.request_line = options.limit_request_line;
    limits.fields = options.limit_request_fields;
    limits.field_size = options.limit_request_field_size;
    limits.body = options.limit_request_body;
  }

  void log(const char* level, const std::string& message) {
    std::string line = "[" + detail::local_time("%Y-%m-%d %H:%M:%S %z") + "] [" + std::to_string(getpid()) + "] [" + level +
                       "] " + message;
    if (options.error_log) {
      options.error_log(line);
    } else {
      std::lock_guard lock(log_mu);
      std::fprintf(stderr, "%s\n", line.c_str());
      std::fflush(stderr);
    }
  }

  void access(const std::string& line) {
    if (options.access_log) options.access_log(line);
  }

  void accept(std::size_t index);
  Lane& pick_lane();
  void look();
  void on_control_byte();
  std::shared_ptr<detail::Worker> make_worker(std::size_t slot);
  void replace_worker(std::size_t slot, const std::shared_ptr<detail::Worker>& old,
                      const char* why);
  void reload();
  void control();
  void begin_stop(bool graceful);
  void quick_stop(const char* why);
  void session_ended(Session* s);
  bool allowed_forwarder(const std::string& addr) const {
    for (const auto& a : options.forwarded_allow_ips) {
      if (a == "*" || a == addr) return true;
    }
    return false;
  }

  Options options;
  detail::Limits limits;
  detail::AccessLogFormat access_format;
  std::vector<std::unique_ptr<Lane>> lanes;
  // The control thread's loop: acceptors, the stop pipe, the graceful
  // timeout, the look for blocked lanes. It never runs Python.
  net::io_context control_io;
  std::vector<std::unique_ptr<Acceptor>> acceptors;
  std::vector<std::string> unix_paths;
  // The current worker of each slot; a slot's threads move to a new worker
  // (recycling, reload) after their current request.
  std::mutex workers_mu;
  std::vector<std::shared_ptr<detail::Worker>> workers;
  // Raised whenever a slot gets a new worker: a thread that has seen the
  // current value need not look at the slots (no lock per request).
  std::atomic<std::uint64_t> generation{0};
  std::mt19937_64 jitter_rng{std::random_device{}()};
  std::mutex reloaders_mu;
  std::vector<std::thread> reloaders;  // reloads; joined by wait()

  // The request timeout: the watchdog raises TimeoutError in a request that
  // runs longer than options.timeout, and gives the worker up (a new one
  // takes the slot; helper threads serve the stuck thread's lane) at twice
  // that.
  std::mutex watch_mu;
  std::condition_variable watch_cv;
  std::vector<std::unique_ptr<Watch>> watches;  // guarded by watch_mu
  std::thread watchdog_thread;
  bool watch_stop = false;                      // guarded by watch_mu
  void watchdog();
  void start_thread(std::size_t slot, std::size_t lane, bool helper);
  void interrupt(Watch& w, PyObject* exc_type);
  std::mutex threads_mu;  // with threads_cv: a Watch's `ended` turning true
  // Set when the io_context is stopped: wait() then ends the threads.
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool io_stopped = false;  // guarded by stop_mu
  void stop_io() {
    for (auto& lane : lanes) lane->ctx.stop();
    {
      std::lock_guard lock(stop_mu);
      io_stopped = true;
    }
    stop_cv.notify_all();
  }
  // stop(), reload() and wait() write a byte here; the control thread
  // reads it, so a stop is handled also while every serving thread is
  // inside the application.
  int stop_pipe[2] = {-1, -1};
  std::optional<net::posix::stream_descriptor> stop_reader;
  char stop_byte = 0;
  std::optional<net::steady_timer> grace_timer;
  std::optional<net::steady_timer> look_timer;
  std::thread control_thread;
  std::condition_variable threads_cv;  // a serving thread ended (threads_mu)
  std::atomic<bool> stopping{false};
  std::atomic<bool> graceful{true};
  std::atomic<std::uint64_t> served{0};
  std::mutex sessions_mu;
  std::set<std::shared_ptr<Session>> sessions;
  std::mutex log_mu;
  bool started = false;
  bool waited = false;
};

namespace {

// The serving thread's slot and the worker it is attached to.
struct ThreadSlot {
  ServerState* server = nullptr;
  std::size_t slot = 0;
  std::shared_ptr<detail::Worker> worker;
  Watch* watch = nullptr;
  std::uint64_t generation = ~std::uint64_t{0};  // of ServerState when last looked
};
thread_local ThreadSlot t_slot;

// Moves this thread to its slot's current worker if that changed; the last
// thread to leave a retired worker closes it.
void follow_slot() {
  ServerState& s = *t_slot.server;
  std::uint64_t generation = s.generation.load(std::memory_order_acquire);
  if (generation == t_slot.generation) return;
  std::shared_ptr<detail::Worker> current;
  {
    std::lock_guard lock(s.workers_mu);
    current = s.workers[t_slot.slot];
  }
  t_slot.generation = generation;
  if (current == t_slot.worker) return;
  std::shared_ptr<detail::Worker> old = std::move(t_slot.worker);
  if (old) {
    old->end_thread();
    if (old->leave() == 0) {
      try {
        old->close();
      } catch (const std::exception& e) {
        s.log("ERROR", std::string("closing a retired worker: ") + e.what());
      }
    }
  }
  current->begin_thread();
  current->join();
  if (t_slot.watch != nullptr) {
    std::lock_guard lock(s.watch_mu);
    t_slot.watch->worker = current;
  }
  t_slot.worker = std::move(current);
}

}  // namespace

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(ServerState& server, Lane& lane, Protocol::socket socket, detail::Peer peer)
      : server_(server), lane_(lane), stream_(std::move(socket)), peer_(std::move(peer)) {}

  Lane& lane() { return lane_; }
  void post_start() {
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->start(); });
  }

  void start() { read_header(); }

  // Closes an idle connection now; a busy one after its response.
  void close_when_idle() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->idle_) self->close();
    });
  }
  void close_now() {
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->close(); });
  }

 private:
  void read_header() {
    idle_ = true;
    if (server_.stopping.load()) return close();
    parser_.emplace(server_.limits);
    stream_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(requests_ == 0 ? server_.options.read_timeout
                                                     : server_.options.keep_alive)));
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              self->on_header(ec);
                            });
  }

  void on_header(beast::error_code ec) {
    idle_ = false;
    if (ec) return on_read_error(ec);
    if (parser_->expect_continue && parser_->version >= 11 && !parser_->is_done()) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
      http::async_write(stream_, *cont,
                        [self = shared_from_this(), cont](beast::error_code wec, std::size_t) {
                          if (wec) return self->close();
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    // A request without a body (or with all of it read along with the
    // header) is handled now: a trip through the event loop's queue would
    // put it behind every connection that became ready meanwhile, a second
    // wait for its turn.
    if (parser_->is_done()) return handle();
    stream_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(server_.options.read_timeout)));
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       if (ec) return self->on_read_error(ec);
                       self->handle();
                     });
  }

  void on_read_error(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset ||
        ec == net::error::eof || (ec == http::error::partial_message && buffer_.size() == 0)) {
      return close();
    }
    int status = status_for(ec, parser_ ? parser_->refusal : detail::Refusal::none);
    server_.log("DEBUG", "refused a request from " + peer_.remote_addr + ": " + ec.message());
    send_error(status);
  }

  void send_error(int status) {
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(status), 11);
    res->reason(reason_for(status));
    res->set(http::field::server, "subinterp");
    res->set(http::field::content_type, "text/plain");
    res->set(http::field::connection, "close");
    res->body() = std::string(reason_for(status)) + "\n";
    res->prepare_payload();
    stream_.expires_after(std::chrono::seconds(5));
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code, std::size_t) {
      self->close();
    });
  }

  void handle() {
    const detail::RequestParser& req = *parser_;
    bool keep = parser_->keep_alive() && !server_.stopping.load();
    detail::Peer peer = peer_;
    bool https = false;
    if (server_.allowed_forwarder(peer_.remote_addr)) {
      for (const auto& [name, value] : req.fields) {
        if (beast::iequals(name, "x-forwarded-for")) {
          std::string first = value.substr(0, value.find(','));
          while (!first.empty() && first.front() == ' ') first.erase(0, 1);
          while (!first.empty() && first.back() == ' ') first.pop_back();
          if (!first.empty()) peer.remote_addr = first;
        } else if (beast::iequals(name, "x-forwarded-proto")) {
          https = beast::iequals(value, "https");
        }
      }
    }
    const auto started = std::chrono::steady_clock::now();
    detail::Response r;
    Watch* watch = t_slot.watch;
    bool head = req.method == "HEAD";
    detail::Output output(stream_.socket().native_handle(), req.version, head, keep,
                          server_.options.read_timeout);
    detail::OutputScope scope(&output);
    try {
      follow_slot();
      if (watch != nullptr) {
        watch->stage.store(0);
        watch->since_ns.store(std::chrono::steady_clock::now().time_since_epoch().count());
      }
      r = t_slot.worker->handle(req, peer, https, watch ? &watch->since_ns : nullptr,
                                watch ? &watch->stage : nullptr);
      if (watch != nullptr) {
        watch->since_ns.store(0);  // also when handle() threw
        if (watch->stage.load() != 0) {
          server_.log("WARNING", "request " + req.method + " " + req.target +
                                     " ran past the timeout (" +
                                     std::to_string(server_.options.timeout) + " s)");
          if (r.error.empty()) r.error = "timed out";
          r.status = 500;
        }
      }
      if (t_slot.worker->count_request()) {
        server_.replace_worker(t_slot.slot, t_slot.worker, "max requests");
      }
    } catch (const std::exception& e) {
      r.error = e.what();
      r.status = 500;
      r.reason = "Internal Server Error";
      r.body = "Internal Server Error\n";
      r.headers = {{"Content-Type", "text/plain"}};
    }
    ++requests_;
    server_.served.fetch_add(1, std::memory_order_relaxed);
    if (r.streamed) return end_streamed(output, r, peer, started);
    if (!r.error.empty()) {
      server_.log("ERROR", "Error handling request " + req.target + "\n" + r.error);
    }

    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(req.version == 10 ? 10 : 11);
    res->result(static_cast<unsigned>(r.status));
    res->reason(r.reason);
    bool has_server = false;
    for (auto& [name, value] : r.headers) {
      has_server = has_server || beast::iequals(name, "server");
      res->insert(name, value);
    }
    if (!has_server) res->set(http::field::server, "subinterp");
    bool bodyless = head || r.status == 204 || r.status == 304 || r.status < 200;
    if (!r.has_length && !bodyless) {
      if (req.version >= 11) {
        res->chunked(true);
      } else {
        keep = false;  // HTTP/1.0: the end of the body is the end of the connection
      }
    }
    if (!bodyless) {
      if (r.has_length && r.body.size() != r.length) {
        // The body must be what its Content-Length says, or the client
        // reads the rest as the next response.
        if (r.body.size() > r.length) {
          server_.log("WARNING", "request " + req.target + ": the application sent more than its "
                                 "Content-Length; the rest was not sent");
          r.body.resize(static_cast<std::size_t>(r.length));
        } else {
          keep = false;  // a short body: only the close tells the client
        }
      }
      res->body() = std::move(r.body);
    }
    res->keep_alive(keep);
    log_access(peer, r.status, res->body().size(), bodyless, r.headers, started);
    stream_.expires_after(std::chrono::seconds(60));
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, keep](beast::error_code ec, std::size_t) {
                        if (ec || !keep) return self->close();
                        self->read_header();
                      });
  }

  void log_access(const detail::Peer& peer, int status, std::uint64_t body_bytes, bool bodyless,
                  const std::vector<std::pair<std::string, std::string>>& response_headers,
                  std::chrono::steady_clock::time_point started) {
    if (!server_.options.access_log) return;
    const detail::RequestParser& req = *parser_;
    detail::AccessRecord record;
    record.remote_addr = peer.remote_addr;
    record.method = req.method;
    record.target = req.target;
    record.version = req.version;
    record.status = status;
    record.body_bytes = body_bytes;
    record.bodyless = bodyless;
    record.request_headers = &req.fields;
    record.response_headers = &response_headers;
    record.duration = std::chrono::steady_clock::now() - started;
    server_.access(server_.access_format.format(record));
  }

  // A response that went out while the application ran: its end (the last
  // chunk), its log lines, and the next request or the close.
  void end_streamed(detail::Output& output, const detail::Response& r, const detail::Peer& peer,
                    std::chrono::steady_clock::time_point started) {
    const detail::RequestParser& req = *parser_;
    if (output.failed()) {
      server_.log("DEBUG", "request " + req.target + ": the client did not take the response (" +
                               output.error() + ")");
    } else if (!r.error.empty()) {
      server_.log("ERROR", "Error handling request " + req.target +
                               " (after its response began; the connection is closed)\n" +
                               r.error);
    }
    bool ok = !output.failed() && r.error.empty() && output.finish();
    if (output.truncated()) {
      server_.log("WARNING", "request " + req.target + ": the application sent more than its "
                             "Content-Length; the rest was not sent");
    }
    log_access(peer, output.status(), output.body_bytes(), output.bodyless(), output.headers(),
               started);
    if (!ok || !output.keep_alive()) return close();
    read_header();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(Protocol::socket::shutdown_send, ec);
    stream_.close();
    server_.session_ended(this);
  }

  ServerState& server_;
  Lane& lane_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<detail::RequestParser> parser_;
  detail::Peer peer_;
  std::uint64_t requests_ = 0;
  bool idle_ = true;
  bool closed_ = false;
};

// The lane for a new connection: the one with the fewest connections among
// those whose thread is not inside the application.
Lane& ServerState::pick_lane() {
  Lane* best = nullptr;
  std::int64_t best_score = 0;
  for (auto& lane : lanes) {
    std::int64_t score = lane->sessions.load(std::memory_order_relaxed);
    if (lane->main->since_ns.load(std::memory_order_relaxed) != 0) score += 1 << 20;
    if (best == nullptr || score < best_score) {
      best = lane.get();
      best_score = score;
    }
  }
  return *best;
}

// Accepts on the control thread (so a connection is taken also while every
// serving thread is busy) and gives each connection to a lane.
void ServerState::accept(std::size_t index) {
  Acceptor& acceptor = *acceptors[index];
  acceptor.async_wait(Acceptor::wait_read, [this, index](beast::error_code ec) {
    if (stopping.load() || ec == net::error::operation_aborted) return;
    auto retry_later = [this, index] {
      // Out of file descriptors and the like: try again shortly.
      auto timer = std::make_shared<net::steady_timer>(control_io, std::chrono::milliseconds(50));
      timer->async_wait([this, index, timer](beast::error_code) {
        if (!stopping.load()) accept(index);
      });
    };
    if (ec) {
      log("ERROR", "accept: " + ec.message());
      return retry_later();
    }
    Acceptor& acc = *acceptors[index];
    const Protocol protocol = acc.local_endpoint().protocol();
    for (int n = 0; n < 64; ++n) {
      int fd = ::accept4(acc.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR || errno == ECONNABORTED) continue;
        log("ERROR", std::string("accept: ") + std::strerror(errno));
        return retry_later();
      }
      Lane& lane = pick_lane();
      Protocol::socket socket(net::make_strand(lane.ctx));
      beast::error_code aec;
      socket.assign(protocol, fd, aec);
      if (aec) {
        ::close(fd);
        continue;
      }
      detail::Peer peer;
      beast::error_code ignored;
      auto remote = socket.remote_endpoint(ignored);
      auto local = socket.local_endpoint(ignored);
      std::tie(peer.remote_addr, peer.remote_port) = describe(remote);
      std::tie(peer.server_name, peer.server_port) = describe(local);
      if (local.data()->sa_family == AF_UNIX) {
        peer.unix_socket = true;
        peer.server_name = "localhost";
        peer.server_port = "";
      } else {
        socket.set_option(net::ip::tcp::no_delay(true), ignored);
      }
      auto session = std::make_shared<Session>(*this, lane, std::move(socket), std::move(peer));
      lane.sessions.fetch_add(1, std::memory_order_relaxed);
      {
        std::lock_guard lock(sessions_mu);
        sessions.insert(session);
      }
      session->post_start();
    }
    accept(index);
  });
}

void ServerState::session_ended(Session* s) {
  std::shared_ptr<Session> keep;  // destroyed after the lock
  bool none_left = false;
  {
    std::lock_guard lock(sessions_mu);
    for (auto it = sessions.begin(); it != sessions.end(); ++it) {
      if (it->get() == s) {
        keep = *it;
        s->lane().sessions.fetch_sub(1, std::memory_order_relaxed);
        sessions.erase(it);
        break;
      }
    }
    none_left = sessions.empty();
  }
  if (none_left && stopping.load()) stop_io();
}

void ServerState::begin_stop(bool graceful_stop) {
  bool was = stopping.exchange(true);
  if (was && graceful_stop) return;
  graceful.store(graceful_stop);
  beast::error_code ec;
  for (auto& a : acceptors) a->close(ec);
  std::vector<std::shared_ptr<Session>> open;
  {
    std::lock_guard lock(sessions_mu);
    open.assign(sessions.begin(), sessions.end());
  }
  if (open.empty()) return stop_io();
  for (auto& s : open) s->close_when_idle();
  // The control thread ends what is still open at the graceful timeout.
}

// Stops serving at once: the serving threads leave the event loop, and
// requests still running in Python get SystemExit raised in them (as a
// gunicorn worker gets sys.exit() from its quit signal). Requests stuck in C
// code are left to finish on their own; wait() does not wait for them.
void ServerState::quick_stop(const char* why) {
  log("INFO", why);
  stopping.store(true);
  graceful.store(false);
  beast::error_code ec;
  for (auto& a : acceptors) a->close(ec);
  grace_timer.reset();
  stop_io();
  std::vector<Watch*> busy;
  {
    std::lock_guard lock(watch_mu);
    for (auto& w : watches) {
      if (w->since_ns.load() != 0 && !w->ended.load()) busy.push_back(w.get());
    }
  }
  for (Watch* w : busy) interrupt(*w, PyExc_SystemExit);
}

// The control thread's reading of the bytes that stop(), reload() and wait()
// write to the pipe.
void ServerState::on_control_byte() {
  stop_reader->async_read_some(net::buffer(&stop_byte, 1), [this](beast::error_code ec,
                                                                  std::size_t n) {
    if (ec || n == 0) return;
    switch (stop_byte) {
      case 'x':  // wait(): the serving has stopped
        control_io.stop();
        return;
      case 'r': {
        // Creating the workers takes a while: on a thread of its own, so a
        // stop is still heard meanwhile.
        std::lock_guard lock(reloaders_mu);
        reloaders.emplace_back([this] { reload(); });
        break;
      }
      case 'g':
        if (stopping.load()) break;
        log("INFO", "Stopping: finishing requests in flight");
        begin_stop(true);
        grace_timer.emplace(control_io,
                            std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                std::chrono::duration<double>(options.graceful_timeout)));
        grace_timer->async_wait([this](beast::error_code tec) {
          if (tec) return;
          bool done;
          {
            std::lock_guard lock(stop_mu);
            done = io_stopped;
          }
          if (!done) quick_stop("graceful timeout: stopping the requests and connections still open");
        });
        break;
      default:
        if (!graceful.load() && stopping.load()) break;
        quick_stop("Stopping now");
    }
    on_control_byte();
  });
}

// Every 25 ms: a lane whose threads have all been inside the application
// for 50 ms or more while it has other connections gets a helper thread
// (up to 8 a lane), in the worker with the fewest busy threads (without
// --threads: in a worker with none). Its other connections are then served
// meanwhile.
void ServerState::look() {
  look_timer->expires_after(std::chrono::milliseconds(25));
  look_timer->async_wait([this](beast::error_code ec) {
    if (ec || stopping.load()) return;
    const std::int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
    const std::int64_t patience = std::chrono::nanoseconds(std::chrono::milliseconds(50)).count();
    std::vector<std::pair<std::size_t, std::size_t>> to_start;  // (slot, lane)
    {
      std::lock_guard lock(watch_mu);
      // Busy threads per slot, in the slot's current worker (a thread stuck
      // in a worker that was given up does not count).
      std::vector<std::shared_ptr<detail::Worker>> current;
      {
        std::lock_guard wl(workers_mu);
        current = workers;
      }
      std::vector<int> busy_in_slot(options.workers, 0);
      for (auto& w : watches) {
        if (!w->ended.load() && w->since_ns.load() != 0 && w->slot < current.size() &&
            w->worker == current[w->slot]) {
          ++busy_in_slot[w->slot];
        }
      }
      for (std::size_t i = 0; i < lanes.size(); ++i) {
        int running = 0, blocked = 0;
        for (auto& w : watches) {
          if (w->lane != i || w->ended.load()) continue;
          ++running;
          std::int64_t since = w->since_ns.load();
          if (since != 0 && now - since >= patience) ++blocked;
        }
        if (running == 0 || blocked < running || running > 8 ||
            lanes[i]->sessions.load() <= running) {
          continue;
        }
        std::size_t slot = 0;
        for (std::size_t k = 1; k < busy_in_slot.size(); ++k) {
          if (busy_in_slot[k] < busy_in_slot[slot]) slot = k;
        }
        // A worker without --threads serves one request at a time: a
        // helper there would only wait.
        if (options.threads <= 1 && busy_in_slot[slot] > 0) continue;
        ++busy_in_slot[slot];
        to_start.emplace_back(slot, i);
      }
    }
    for (auto [slot, lane] : to_start) start_thread(slot, lane, true);
    look();
  });
}

// The control thread: accepts connections, hears stop(), reload() and
// wait(), ends a graceful stop at its timeout, and looks for blocked lanes.
// Nothing here needs a serving thread to be free.
void ServerState::control() {
  for (;;) {
    try {
      control_io.run();
      return;
    } catch (const std::exception& e) {
      log("ERROR", std::string("control thread: ") + e.what());
    }
  }
}

// Starts a serving thread in worker slot `w` on lane `lane_index`: the
// lane's own thread, or a helper that runs the lane while its own thread is
// inside the application.
void ServerState::start_thread(std::size_t w, std::size_t lane_index, bool helper) {
  std::lock_guard lock(watch_mu);
  Watch* watch_ptr = nullptr;
  if (helper) {
    // An ended helper's record is used again (helpers come and go).
    for (auto& old : watches) {
      if (old->helper && old->ended.load() && old->thread.joinable()) {
        old->thread.join();
        watch_ptr = old.get();
        break;
      }
    }
  }
  if (watch_ptr == nullptr) {
    watches.push_back(std::make_unique<Watch>());
    watch_ptr = watches.back().get();
  }
  watch_ptr->slot = w;
  watch_ptr->lane = lane_index;
  watch_ptr->helper = helper;
  watch_ptr->ident = 0;
  watch_ptr->since_ns.store(0);
  watch_ptr->stage.store(0);
  watch_ptr->ended.store(false);
  watch_ptr->worker.reset();
  if (!helper) lanes[lane_index]->main = watch_ptr;
  auto state = shared_from_this();
  Lane* lane_ptr = lanes[lane_index].get();
  watch_ptr->thread = std::thread([state, w, watch_ptr, lane_ptr, helper] {
    t_slot.server = state.get();
    t_slot.slot = w;
    t_slot.watch = watch_ptr;
    watch_ptr->ident = static_cast<unsigned long>(pthread_self());
    auto mark_ended = [&] {
      {
        std::lock_guard lock(state->threads_mu);
        watch_ptr->ended.store(true);
      }
      state->threads_cv.notify_all();
    };
    try {
      follow_slot();
    } catch (const std::exception& e) {
      state->log("ERROR", std::string("server thread: ") + e.what());
      mark_ended();
      return;
    }
    Lane& lane = *lane_ptr;
    for (;;) {
      try {
        if (!helper) {
          lane.ctx.run();
        } else {
          // While the lane's own thread is inside the application.
          while (!lane.ctx.stopped() && lane.main->since_ns.load() != 0) {
            lane.ctx.run_one_for(std::chrono::milliseconds(20));
          }
        }
        break;
      } catch (const std::exception& e) {
        state->log("ERROR", std::string("server thread: ") + e.what());
      }
    }
    std::shared_ptr<detail::Worker> worker = std::move(t_slot.worker);
    t_slot = ThreadSlot{};
    worker->end_thread();
    bool current;
    {
      std::lock_guard lock(state->workers_mu);
      current = w < state->workers.size() && state->workers[w] == worker;
    }
    // A retired worker's last thread closes it; wait() closes the others.
    if (worker->leave() == 0 && !current) {
      try {
        worker->close();
      } catch (const std::exception& e) {
        state->log("ERROR", std::string("closing a retired worker: ") + e.what());
      }
    }
    mark_ended();
  });
}

// Raises TimeoutError in the request's thread, from a thread of its own: it
// needs the worker's GIL, which code stuck in C never gives up.
void ServerState::interrupt(Watch& w, PyObject* exc_type) {
  std::shared_ptr<detail::Worker> worker;
  {
    std::lock_guard lock(watch_mu);
    worker = w.worker;
  }
  if (!worker) return;
  unsigned long ident = w.ident;
  std::int64_t since = w.since_ns.load();
  Watch* watch = &w;  // watches live as long as the server state
  std::thread([worker, ident, since, watch, exc_type, self = shared_from_this()] {
    try {
      // The request may have ended meanwhile: interrupt only the same one.
      worker->interrupt(ident, exc_type, [&] { return watch->since_ns.load() == since; });
    } catch (const std::exception& e) {
      self->log("ERROR", std::string("interrupting a request: ") + e.what());
    }
  }).detach();
}

void ServerState::watchdog() {
  using clock = std::chrono::steady_clock;
  const auto limit = std::chrono::duration_cast<clock::duration>(
      std::chrono::duration<double>(options.timeout));
  std::unique_lock lock(watch_mu);
  while (!watch_stop) {
    auto now = clock::now();
    // Requests that start meanwhile are seen at the next look: at most a
    // quarter of the timeout late.
    auto next = now + std::max<clock::duration>(limit / 4, std::chrono::milliseconds(20));
    std::vector<Watch*> to_interrupt, to_give_up;
    for (auto& w : watches) {
      std::int64_t since = w->since_ns.load();
      if (since == 0) continue;
      auto started = clock::time_point(clock::duration(since));
      int stage = w->stage.load();
      if (stage == 0 && now - started >= limit) {
        w->stage.store(1);
        to_interrupt.push_back(w.get());
      } else if (stage == 1 && now - started >= 2 * limit) {
        w->stage.store(2);
        to_give_up.push_back(w.get());
      }
      if (stage == 0) next = std::min(next, started + limit);
      if (stage == 1) next = std::min(next, started + 2 * limit);
    }
    lock.unlock();
    for (Watch* w : to_interrupt) {
      log("WARNING", "worker " + std::to_string(w->slot) +
                         ": a request ran past the timeout; raising TimeoutError in it");
      interrupt(*w, PyExc_TimeoutError);
    }
    for (Watch* w : to_give_up) {
      std::shared_ptr<detail::Worker> stuck;
      {
        std::lock_guard g(watch_mu);
        stuck = w->worker;
      }
      log("ERROR", "worker " + std::to_string(w->slot) +
                       ": a request is still running at twice the timeout; a new worker "
                       "takes its place (helper threads serve its connections)");
      if (stuck) {
        stuck->retire();
        replace_worker(w->slot, stuck, "a request stuck past twice the timeout");
      }
    }
    lock.lock();
    if (!to_interrupt.empty() || !to_give_up.empty()) continue;
    watch_cv.wait_until(lock, next);
  }
}

std::shared_ptr<detail::Worker> ServerState::make_worker(std::size_t slot) {
  std::uint64_t limit = 0;
  if (options.max_requests != 0) {
    std::lock_guard lock(workers_mu);
    limit = options.max_requests +
            (options.max_requests_jitter != 0 ? jitter_rng() % (options.max_requests_jitter + 1)
                                              : 0);
  }
  return std::make_shared<detail::Worker>(options, slot, limit);
}

// Puts a new worker in the slot; the slot's threads move to it after their
// current request, and the last one to leave the old one closes it.
void ServerState::replace_worker(std::size_t slot, const std::shared_ptr<detail::Worker>& old,
                                 const char* why) {
  if (stopping.load()) return;
  std::shared_ptr<detail::Worker> fresh;
  try {
    fresh = make_worker(slot);
  } catch (const std::exception& e) {
    log("ERROR", "could not make a new worker (the old one serves on): " + std::string(e.what()));
    old->keep_serving();
    return;
  }
  {
    std::lock_guard lock(workers_mu);
    if (workers[slot] != old) return;  // replaced meanwhile (a reload)
    workers[slot] = fresh;
  }
  generation.fetch_add(1, std::memory_order_release);
  log("INFO", "worker " + std::to_string(slot) + ": new interpreter (" + why + ")");
}

void ServerState::reload() {
  log("INFO", "Reloading: new workers import the application");
  for (std::size_t slot = 0; slot < options.workers && !stopping.load(); ++slot) {
    std::shared_ptr<detail::Worker> old;
    {
      std::lock_guard lock(workers_mu);
      old = workers[slot];
    }
    old->retire();
    replace_worker(slot, old, "reload");
  }
}

Server::Server(Options options) : state_(std::make_shared<ServerState>(std::move(options))) {
  if (state_->options.app.empty()) throw Error("no application given (MODULE:VARIABLE)");
  if (state_->options.binds.empty()) throw Error("nothing to bind to");
}

Server::~Server() {
  if (state_->started && !state_->waited) {
    stop(false);
    try {
      wait();
    } catch (const std::exception& e) {
      state_->log("ERROR", std::string("stopping the server: ") + e.what());
    }
  }
  for (int fd : state_->stop_pipe) {
    if (fd >= 0) ::close(fd);
  }
}

std::vector<std::string> Server::start() {
  ServerState& s = *state_;
  if (s.started) throw Error("the server was started already");
  DetachGuard detached;
  // Sockets first: a bad address fails before the workers are made.
  std::vector<std::string> urls;
  for (const std::string& spec : s.options.binds) {
    std::string unix_path;
    Protocol::endpoint ep = parse_bind(spec, unix_path);
    auto acceptor = std::make_unique<Acceptor>(s.control_io);
    beast::error_code ec;
    acceptor->open(ep.protocol(), ec);
    if (!unix_path.empty()) {
      struct stat st {};
      if (::stat(unix_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(unix_path.c_str());
    } else if (!ec) {
      acceptor->set_option(net::socket_base::reuse_address(true), ec);
      if (ep.data()->sa_family == AF_INET6) {
        acceptor->set_option(net::ip::v6_only(true), ec);
      }
    }
    if (!ec) acceptor->bind(ep, ec);
    if (!ec) acceptor->listen(s.options.backlog, ec);
    if (ec) throw Error("cannot listen at " + spec + ": " + ec.message());
    if (!unix_path.empty()) {
      urls.push_back("unix:" + unix_path);
      s.unix_paths.push_back(unix_path);
    } else {
      auto [host, port] = describe(acceptor->local_endpoint());
      urls.push_back("http://" + (ep.data()->sa_family == AF_INET6 ? "[" + host + "]" : host) +
                     ":" + port);
    }
    s.acceptors.push_back(std::move(acceptor));
  }
  for (std::size_t i = 0; i < s.options.workers; ++i) s.workers.push_back(s.make_worker(i));
  if (::pipe2(s.stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) throw Error("pipe2 failed");
  s.stop_reader.emplace(s.control_io, s.stop_pipe[0]);
  s.stop_pipe[0] = -1;  // owned by the descriptor now
  s.on_control_byte();
  for (std::size_t i = 0; i < s.acceptors.size(); ++i) s.accept(i);
  s.look_timer.emplace(s.control_io);
  s.look();
  // A lane per serving thread; the lanes have their threads before the
  // control thread gives them connections.
  // (All lanes first: the vector does not change once threads read it.)
  for (std::size_t i = 0; i < s.workers.size() * s.options.threads; ++i) {
    s.lanes.push_back(std::make_unique<Lane>());
  }
  for (std::size_t i = 0; i < s.lanes.size(); ++i) s.start_thread(i / s.options.threads, i, false);
  s.started = true;
  s.control_thread = std::thread([state = state_] { state->control(); });
  if (s.options.timeout > 0) {
    s.watchdog_thread = std::thread([state = state_] { state->watchdog(); });
  }
  return urls;
}

void Server::stop(bool graceful) noexcept {
  int fd = state_->stop_pipe[1];
  if (fd < 0) return;
  char byte = graceful ? 'g' : 'q';
  ssize_t n = ::write(fd, &byte, 1);
  (void)n;
}

void Server::reload() noexcept {
  int fd = state_->stop_pipe[1];
  if (fd < 0) return;
  char byte = 'r';
  ssize_t n = ::write(fd, &byte, 1);
  (void)n;
}

void Server::wait() {
  ServerState& s = *state_;
  if (!s.started || s.waited) return;
  {
    DetachGuard detached;
    {
      // The watchdog keeps watching until the serving stops.
      std::unique_lock lock(s.stop_mu);
      s.stop_cv.wait(lock, [&] { return s.io_stopped; });
    }
    {
      std::lock_guard lock(s.watch_mu);
      s.watch_stop = true;
    }
    s.watch_cv.notify_all();
    if (s.watchdog_thread.joinable()) s.watchdog_thread.join();
    char byte = 'x';
    ssize_t n = ::write(s.stop_pipe[1], &byte, 1);
    (void)n;
    if (s.control_thread.joinable()) s.control_thread.join();
    // No thread starts from here on (the control thread has ended).
    std::vector<std::pair<Watch*, std::thread>> threads;
    {
      std::lock_guard lock(s.watch_mu);
      for (auto& w : s.watches) {
        if (w->thread.joinable()) threads.emplace_back(w.get(), std::move(w->thread));
      }
    }
    // Threads whose request is still running (stuck in C code, or in Python
    // after a quick stop, which raised SystemExit there) get a moment; then
    // they are left to finish on their own, or to the process's exit, and
    // each closes its worker if it ever returns.
    const auto patience = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    for (auto& [watch, t] : threads) {
      bool ended;
      {
        std::unique_lock lock(s.threads_mu);
        bool hopeless = watch->stage.load() == 2 && watch->since_ns.load() != 0;
        ended = hopeless ? watch->ended.load()
                         : s.threads_cv.wait_until(lock, patience, [&] { return watch->ended.load(); });
      }
      if (ended) {
        t.join();
        continue;
      }
      std::shared_ptr<detail::Worker> its_worker;
      {
        std::lock_guard lock(s.watch_mu);
        its_worker = watch->worker;
      }
      s.log("WARNING", "leaving a thread whose request has not returned");
      t.detach();
      std::lock_guard lock(s.workers_mu);
      for (auto& w : s.workers) {
        if (w == its_worker) w.reset();  // its thread closes it
      }
    }
    std::vector<std::thread> reloaders;
    {
      std::lock_guard lock(s.reloaders_mu);
      reloaders = std::move(s.reloaders);
    }
    for (auto& t : reloaders) t.join();
  }
  s.waited = true;
  // Connections left (a stop that did not wait for them) are dropped.
  {
    std::lock_guard lock(s.sessions_mu);
    s.sessions.clear();
  }
  s.acceptors.clear();
  for (const auto& path : s.unix_paths) ::unlink(path.c_str());
  std::vector<std::shared_ptr<detail::Worker>> all;
  {
    std::lock_guard lock(s.workers_mu);
    all = std::move(s.workers);
    s.workers.clear();
  }
  for (auto& w : all) {
    if (!w) continue;
    try {
      w->close();
    } catch (const std::exception& e) {
      s.log("ERROR", std::string("closing a worker: ") + e.what());
    }
  }
}

std::uint64_t Server::requests() const noexcept { return state_->served.load(); }

}  // namespace subinterp::server
