// subinterp._server: the Python face of subinterp::server::Server, for the
// `subinterp.server` module and `python -m subinterp serve`.
//
//   server = Server(app=..., binds=[...], workers=..., ...)
//   urls = server.start()          # listening from here on
//   server.wait(signals=True)      # until SIGTERM (graceful), SIGINT/SIGQUIT
//   server.stop(graceful)          # from another thread
#include <Python.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>

#include "subinterp/error.hpp"
#include "subinterp/server.hpp"

namespace si = subinterp;
namespace srv = subinterp::server;

namespace {

struct ServerObject {
  PyObject_HEAD
  srv::Server* server;
  bool signals;  // this server's start() installed the signal handlers
  struct sigaction old_term, old_int, old_quit, old_hup;
};

// The server whose wait() handles signals (one at a time per process).
std::atomic<srv::Server*> g_signalled{nullptr};

void on_signal(int sig) {
  srv::Server* s = g_signalled.load();
  if (s == nullptr) return;
  if (sig == SIGHUP) {
    s->reload();
  } else {
    s->stop(sig == SIGTERM);
  }
}

PyObject* error_from_cpp(const std::exception& e) {
  if (auto* failed = dynamic_cast<const si::ExecutionFailed*>(&e)) {
    PyErr_Format(PyExc_RuntimeError, "the application failed to load in a worker:\n%s",
                 failed->snapshot().errdisplay.c_str());
  } else {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

std::string str_item(PyObject* kwargs, const char* key, const char* fallback) {
  PyObject* v = kwargs ? PyDict_GetItemString(kwargs, key) : nullptr;
  if (v == nullptr || v == Py_None) return fallback;
  const char* s = PyUnicode_AsUTF8(v);
  if (s == nullptr) throw si::py::PythonError();
  return s;
}

template <class T>
T num_item(PyObject* kwargs, const char* key, T fallback) {
  PyObject* v = kwargs ? PyDict_GetItemString(kwargs, key) : nullptr;
  if (v == nullptr || v == Py_None) return fallback;
  if constexpr (std::is_floating_point_v<T>) {
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred()) throw si::py::PythonError();
    if (d < 0) {
      PyErr_Format(PyExc_ValueError, "%s must not be negative", key);
      throw si::py::PythonError();
    }
    return static_cast<T>(d);
  } else {
    long long n = PyLong_AsLongLong(v);
    if (n == -1 && PyErr_Occurred()) throw si::py::PythonError();
    if (n < 0) {
      PyErr_Format(PyExc_ValueError, "%s must not be negative", key);
      throw si::py::PythonError();
    }
    return static_cast<T>(n);
  }
}

std::vector<std::string> list_item(PyObject* kwargs, const char* key,
                                   std::vector<std::string> fallback) {
  PyObject* v = kwargs ? PyDict_GetItemString(kwargs, key) : nullptr;
  if (v == nullptr || v == Py_None) return fallback;
  si::py::ref seq = si::py::check(PySequence_Fast(v, "expected a list of str"));
  std::vector<std::string> out;
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq.get()); ++i) {
    const char* s = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq.get(), i));
    if (s == nullptr) throw si::py::PythonError();
    out.emplace_back(s);
  }
  return out;
}

// Where log lines go. The server's log functions own it: a serving thread
// left running after a quick stop may still log once the Python object is
// gone.
struct LogFile {
  std::mutex mu;
  std::FILE* f = nullptr;
  bool own = false;
  ~LogFile() {
    if (own) std::fclose(f);
  }
  void write(std::string_view line) {
    std::lock_guard lock(mu);
    std::fwrite(line.data(), 1, line.size(), f);
    std::fputc('\n', f);
    std::fflush(f);
  }
};

// "-": the standard stream; a path: appended to; "": none (nullptr).
std::shared_ptr<LogFile> open_log(const std::string& where, std::FILE* dash) {
  if (where.empty()) return nullptr;
  auto log = std::make_shared<LogFile>();
  if (where == "-") {
    log->f = dash;
    return log;
  }
  log->f = std::fopen(where.c_str(), "a");
  if (log->f == nullptr) {
    PyErr_SetFromErrnoWithFilename(PyExc_OSError, where.c_str());
    throw si::py::PythonError();
  }
  log->own = true;
  return log;
}

int server_init(PyObject* self_obj, PyObject* args, PyObject* kwargs) {
  auto* self = reinterpret_cast<ServerObject*>(self_obj);
  if (PyTuple_GET_SIZE(args) != 0) {
    PyErr_SetString(PyExc_TypeError, "Server() takes keyword arguments only");
    return -1;
  }
  try {
    srv::Options o;
    o.app = str_item(kwargs, "app", "");
    o.binds = list_item(kwargs, "binds", o.binds);
    o.workers = num_item<std::size_t>(kwargs, "workers", 0);
    o.threads = num_item<std::size_t>(kwargs, "threads", 1);
    o.backlog = num_item<int>(kwargs, "backlog", o.backlog);
    o.keep_alive = num_item<double>(kwargs, "keep_alive", o.keep_alive);
    o.graceful_timeout = num_item<double>(kwargs, "graceful_timeout", o.graceful_timeout);
    o.read_timeout = num_item<double>(kwargs, "read_timeout", o.read_timeout);
    o.timeout = num_item<double>(kwargs, "timeout", o.timeout);
    o.limit_request_line = num_item<std::size_t>(kwargs, "limit_request_line", o.limit_request_line);
    o.limit_request_fields =
        num_item<std::size_t>(kwargs, "limit_request_fields", o.limit_request_fields);
    o.limit_request_field_size =
        num_item<std::size_t>(kwargs, "limit_request_field_size", o.limit_request_field_size);
    o.limit_request_body = num_item<std::uint64_t>(kwargs, "limit_request_body", 0);
    o.max_requests = num_item<std::uint64_t>(kwargs, "max_requests", 0);
    o.max_requests_jitter = num_item<std::uint64_t>(kwargs, "max_requests_jitter", 0);
    o.pythonpath = list_item(kwargs, "pythonpath", {});
    o.access_log_format = str_item(kwargs, "access_log_format", "");
    o.forwarded_allow_ips = list_item(kwargs, "forwarded_allow_ips", o.forwarded_allow_ips);
    std::shared_ptr<LogFile> access = open_log(str_item(kwargs, "access_log", ""), stdout);
    std::shared_ptr<LogFile> errors = open_log(str_item(kwargs, "error_log", "-"), stderr);
    if (access && errors && access->f == errors->f) access = errors;  // one lock for both
    if (access) {
      o.access_log = [access](std::string_view line) { access->write(line); };
    }
    // Lines look like "[time] [pid] [LEVEL] message": those below the level go.
    static const char* const kLevels[] = {"debug", "info", "warning", "error", "critical"};
    std::string level = str_item(kwargs, "log_level", "info");
    int threshold = -1;
    for (int i = 0; i < 5; ++i) {
      if (level == kLevels[i]) threshold = i;
    }
    if (threshold < 0) {
      PyErr_Format(PyExc_ValueError, "unknown log level '%s'", level.c_str());
      throw si::py::PythonError();
    }
    if (errors) {
      o.error_log = [errors, threshold](std::string_view line) {
        static const char* const kTags[] = {"] [DEBUG] ", "] [INFO] ", "] [WARNING] ",
                                            "] [ERROR] ", "] [CRITICAL] "};
        for (int i = 0; i < threshold; ++i) {
          if (line.find(kTags[i]) != std::string_view::npos) return;
        }
        errors->write(line);
      };
    } else {
      o.error_log = [](std::string_view) {};
    }
    self->server = new srv::Server(std::move(o));
    return 0;
  } catch (si::py::PythonError& e) {
    e.restore();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  }
  return -1;
}

void restore_signals(ServerObject* self) {
  if (!self->signals) return;
  sigaction(SIGTERM, &self->old_term, nullptr);
  sigaction(SIGINT, &self->old_int, nullptr);
  sigaction(SIGQUIT, &self->old_quit, nullptr);
  sigaction(SIGHUP, &self->old_hup, nullptr);
  g_signalled.store(nullptr);
  self->signals = false;
}

PyObject* server_start(PyObject* self_obj, PyObject* args, PyObject* kwargs) {
  auto* self = reinterpret_cast<ServerObject*>(self_obj);
  static const char* kwlist[] = {"signals", nullptr};
  int signals = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|p:start", const_cast<char**>(kwlist),
                                   &signals)) {
    return nullptr;
  }
  if (self->server == nullptr) return PyErr_Format(PyExc_RuntimeError, "not initialized");
  if (signals) {
    // From here on, not only once wait() runs: a signal that comes while
    // the caller prints its "Listening at" lines must stop the server too.
    srv::Server* expected = nullptr;
    if (!g_signalled.compare_exchange_strong(expected, self->server)) {
      return PyErr_Format(PyExc_RuntimeError, "another server handles the signals");
    }
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, &self->old_term);
    sigaction(SIGINT, &sa, &self->old_int);
    sigaction(SIGQUIT, &sa, &self->old_quit);
    sigaction(SIGHUP, &sa, &self->old_hup);
    self->signals = true;
  }
  try {
    std::vector<std::string> urls = self->server->start();
    si::py::ref list = si::py::check(PyList_New(0));
    for (const auto& u : urls) {
      si::py::ref s = si::py::check(PyUnicode_FromString(u.c_str()));
      si::py::check(PyList_Append(list.get(), s.get()));
    }
    return list.release();
  } catch (si::py::PythonError& e) {
    restore_signals(self);
    e.restore();
    return nullptr;
  } catch (const std::exception& e) {
    restore_signals(self);
    return error_from_cpp(e);
  }
}

PyObject* server_wait(PyObject* self_obj, PyObject*) {
  auto* self = reinterpret_cast<ServerObject*>(self_obj);
  if (self->server == nullptr) return PyErr_Format(PyExc_RuntimeError, "not initialized");
  try {
    self->server->wait();
  } catch (const std::exception& e) {
    error_from_cpp(e);
  }
  restore_signals(self);
  if (PyErr_Occurred()) return nullptr;
  Py_RETURN_NONE;
}

PyObject* server_stop(PyObject* self_obj, PyObject* args, PyObject* kwargs) {
  auto* self = reinterpret_cast<ServerObject*>(self_obj);
  static const char* kwlist[] = {"graceful", nullptr};
  int graceful = 1;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|p:stop", const_cast<char**>(kwlist),
                                   &graceful)) {
    return nullptr;
  }
  if (self->server != nullptr) self->server->stop(graceful != 0);
  Py_RETURN_NONE;
}

PyObject* server_reload(PyObject* self_obj, PyObject*) {
  auto* self = reinterpret_cast<ServerObject*>(self_obj);
  if (self->server != nullptr) self->server->reload();
  Py_RETURN_NONE;
}

PyObject* server_requests(PyObject* self_obj, void*) {
  auto* self = reinterpret_cast<ServerObject*>(self_obj);
  return PyLong_FromUnsignedLongLong(self->server ? self->server->requests() : 0);
}

void server_dealloc(PyObject* self_obj) {
  auto* self = reinterpret_cast<ServerObject*>(self_obj);
  PyTypeObject* type = Py_TYPE(self_obj);
  if (self->server != nullptr) {
    Py_BEGIN_ALLOW_THREADS;
    delete self->server;
    Py_END_ALLOW_THREADS;
  }
  restore_signals(self);
  type->tp_free(self_obj);
  Py_DECREF(type);
}

PyMethodDef server_methods[] = {
    {"start", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(server_start)),
     METH_VARARGS | METH_KEYWORDS,
     "start(signals=False) -> list of URLs listened at; with signals, from now until wait() "
     "returns SIGTERM stops gracefully, SIGINT/SIGQUIT at once, and SIGHUP reloads"},
    {"wait", server_wait, METH_NOARGS, "wait(): until stopped"},
    {"reload", server_reload, METH_NOARGS, "reload(): new workers import the application"},
    {"stop", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(server_stop)),
     METH_VARARGS | METH_KEYWORDS, "stop(graceful=True)"},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef server_getset[] = {
    {"requests", server_requests, nullptr, "requests answered so far", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot server_slots[] = {
    {Py_tp_init, reinterpret_cast<void*>(server_init)},
    {Py_tp_dealloc, reinterpret_cast<void*>(server_dealloc)},
    {Py_tp_methods, server_methods},
    {Py_tp_getset, server_getset},
    {Py_tp_doc, const_cast<char*>("A WSGI server whose workers are sub-interpreters.")},
    {0, nullptr},
};

PyType_Spec server_spec = {"subinterp._server.Server", sizeof(ServerObject), 0,
                           Py_TPFLAGS_DEFAULT, server_slots};

int module_exec(PyObject* module) {
  PyObject* type = PyType_FromModuleAndSpec(module, &server_spec, nullptr);
  if (type == nullptr) return -1;
  int rc = PyModule_AddObjectRef(module, "Server", type);
  Py_DECREF(type);
  return rc;
}

PyModuleDef_Slot slots[] = {
    {Py_mod_exec, reinterpret_cast<void*>(module_exec)},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {0, nullptr},
};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "subinterp._server",
                          "The WSGI server of subinterp (use subinterp.server).", 0, nullptr,
                          slots, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__server() { return PyModuleDef_Init(&module_def); }
