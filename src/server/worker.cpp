#include "worker.hpp"

#include <cerrno>
#include <climits>

#include <cctype>
#include <cstdio>
#include <cstring>

#include "subinterp/error.hpp"
#include "subinterp/value.hpp"
#include "output.hpp"

namespace subinterp::server::detail {
namespace {

// Runs in each worker's __main__: imports the application and defines the
// glue that calls it for one request (PEP 3333's start_response, write(),
// the result's iteration and close()). The response is collected whole.
constexpr const char* kWorkerSource = R"PY(
import sys, os, io, importlib, stat, traceback

sys.path[:0] = [p for p in __subinterp_pythonpath__ if p not in sys.path]


def __subinterp_load_app__(spec):
    module_name, _, name = spec.partition(':')
    name = name.strip() or 'application'
    if not module_name:
        raise ValueError(f'application {spec!r}: expected MODULE:VARIABLE')
    module = importlib.import_module(module_name)
    call = name.endswith('()')
    if call:
        name = name[:-2]
    obj = module
    for part in name.split('.'):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(
                f'application {spec!r}: module {module_name!r} has no {name!r}') from None
    if call:
        obj = obj()
    if not callable(obj):
        raise TypeError(f'application {spec!r} is not callable: {obj!r}')
    return obj


class _Errors:
    """wsgi.errors: lines go to the server's error log (stderr)."""

    def write(self, text):
        sys.stderr.write(text)

    def writelines(self, lines):
        for line in lines:
            sys.stderr.write(line)

    def flush(self):
        sys.stderr.flush()


class _FileWrapper:
    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, 'close'):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        while True:
            data = read(self.blksize)
            if not data:
                return
            yield data


__subinterp_base_environ__ = {
    'wsgi.version': (1, 0),
    'wsgi.errors': _Errors(),
    'wsgi.multithread': __subinterp_threads__ > 1,
    'wsgi.multiprocess': False,
    'wsgi.run_once': False,
    'wsgi.file_wrapper': _FileWrapper,
    'SCRIPT_NAME': '',
    'SERVER_SOFTWARE': 'subinterp',
}
__subinterp_bytes_io__ = io.BytesIO


def __subinterp_file_source__(wrapper):
    """(fd, offset, count) of a file_wrapper's regular file, or None."""
    filelike = wrapper.filelike
    try:
        fd = filelike.fileno()
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        offset = filelike.tell()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return fd, offset, max(0, st.st_size - offset)


# A body of sequence items up to this size is sent in one piece after the
# application returns; anything else goes out as it comes.
__subinterp_collect_limit__ = 256 * 1024


def __subinterp_wsgi__(environ, app=__subinterp_load_app__(__subinterp_app__),
                       send=__subinterp_send__, sendfile=__subinterp_sendfile__,
                       file_source=__subinterp_file_source__, file_wrapper=_FileWrapper,
                       limit=__subinterp_collect_limit__):
    status = headers = None
    sent = False  # the header went out: the status can no longer change

    def start_response(status_, headers_, exc_info=None):
        nonlocal status, headers
        if exc_info is not None:
            try:
                if sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif status is not None:
            raise AssertionError('start_response() called a second time without exc_info')
        if type(status_) is not str:
            raise TypeError(f'status must be str, not {type(status_).__name__}')
        if type(headers_) is not list:
            raise TypeError(f'headers must be a list, not {type(headers_).__name__}')
        for item in headers_:
            if (type(item) is not tuple or len(item) != 2
                    or type(item[0]) is not str or type(item[1]) is not str):
                raise TypeError(f'each header must be a (str, str) tuple, not {item!r}')
        status, headers = status_, headers_
        return write

    def write(data):
        nonlocal sent
        if status is None:
            raise AssertionError('write() before start_response()')
        if type(data) is not bytes:
            raise TypeError(f'write() takes bytes, not {type(data).__name__}')
        if data:
            send(status, headers, data)  # OSError once the client is gone
            sent = True

    try:
        result = app(environ, start_response)
        try:
            kind = type(result)
            if not sent and status is not None and kind is file_wrapper:
                source = file_source(result)
                if source is not None:
                    sendfile(status, headers, *source)
                    sent = True
                    return None, True, None
            if not sent and (kind is list or kind is tuple):
                total = 0
                for chunk in result:
                    if type(chunk) is not bytes:
                        raise TypeError(
                            f'the application returned {type(chunk).__name__} items, not bytes')
                    total += len(chunk)
                if total <= limit:
                    if status is None:
                        raise AssertionError('the application did not call start_response()')
                    return status, headers, b''.join(result)
            for chunk in result:
                if type(chunk) is not bytes:
                    raise TypeError(
                        f'the application returned {type(chunk).__name__} items, not bytes')
                if chunk:
                    if status is None:
                        raise AssertionError('the application did not call start_response()')
                    send(status, headers, chunk)
                    sent = True
        finally:
            close = getattr(result, 'close', None)
            if close is not None:
                close()
        if status is None:
            raise AssertionError('the application did not call start_response()')
        if sent:
            return None, True, None
        return status, headers, b''
    except BaseException:
        if isinstance(sys.exception(), (SystemExit, KeyboardInterrupt)):
            raise
        return None, sent, traceback.format_exc()
)PY";

py::ref main_attr(const char* name) {
  PyObject* main = PyImport_AddModule("__main__");  // borrowed
  if (main == nullptr) py::throw_python_error();
  return py::check(PyObject_GetAttrString(main, name));
}

py::ref latin1(const std::string& s) {
  return py::check(PyUnicode_DecodeLatin1(s.data(), static_cast<Py_ssize_t>(s.size()), nullptr));
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX decoding of the path, as bytes (PEP 3333: decoded, then latin-1).
std::string unquote(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '%' && i + 2 < path.size() &&
        hex_value(path[i + 1]) >= 0 && hex_value(path[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(path[i + 1]) * 16 + hex_value(path[i + 2])));
      i += 2;
    } else {
      out.push_back(path[i]);
    }
  }
  return out;
}

// HTTP_<NAME> for a header name: upper case, '-' -> '_'.
std::string cgi_name(const std::string& name) {
  std::string out = "HTTP_";
  out.reserve(5 + name.size());
  for (char c : name) {
    out.push_back(c == '-' ? '_' : (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c);
  }
  return out;
}

}  // namespace

namespace {

// The status line and headers the application gave: checked, without
// hop-by-hop fields. Returns an error message, or "" when they are fine.
std::string parse_head(PyObject* status, PyObject* headers, Response& out) {
  Py_ssize_t n = 0;
  const char* text = PyUnicode_AsUTF8AndSize(status, &n);
  if (text == nullptr) py::throw_python_error();
  std::string_view line(text, static_cast<std::size_t>(n));
  // "200 OK": three digits, a space, a reason.
  if (line.size() < 4 || line[3] != ' ' || !std::isdigit(static_cast<unsigned char>(line[0])) ||
      !std::isdigit(static_cast<unsigned char>(line[1])) ||
      !std::isdigit(static_cast<unsigned char>(line[2])) ||
      line.find_first_of("\r\n") != std::string_view::npos) {
    return "the application gave an invalid status line: '" + std::string(line) + "'";
  }
  int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
  if (code < 100) return "the application gave an invalid status: '" + std::string(line) + "'";
  out.status = code;
  out.reason = std::string(line.substr(4));
  out.headers.clear();
  out.has_length = false;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); ++i) {
    PyObject* item = PyList_GET_ITEM(headers, i);
    Py_ssize_t nn = 0, nv = 0;
    const char* name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(item, 0), &nn);
    const char* value = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(item, 1), &nv);
    if (name == nullptr || value == nullptr) py::throw_python_error();
    std::string_view nv_name(name, static_cast<std::size_t>(nn));
    std::string_view nv_value(value, static_cast<std::size_t>(nv));
    if (nv_name.empty() || nv_name.find_first_of(":\r\n \t") != std::string_view::npos ||
        nv_value.find_first_of("\r\n") != std::string_view::npos) {
      return "the application gave an invalid header: " + std::string(nv_name);
    }
    if (boost::beast::iequals(nv_name, "content-length")) {
      std::uint64_t length = 0;
      bool digits = !nv_value.empty() && nv_value.size() <= 19;
      for (char c : nv_value) {
        digits = digits && c >= '0' && c <= '9';
        if (digits) length = length * 10 + static_cast<std::uint64_t>(c - '0');
      }
      if (!digits || (out.has_length && length != out.length)) {
        return "the application gave an invalid Content-Length: '" + std::string(nv_value) + "'";
      }
      out.has_length = true;
      out.length = length;
    }
    // Hop-by-hop fields are the server's (PEP 3333).
    if (boost::beast::iequals(nv_name, "connection") ||
        boost::beast::iequals(nv_name, "transfer-encoding") ||
        boost::beast::iequals(nv_name, "keep-alive")) {
      continue;
    }
    out.headers.emplace_back(std::string(nv_name), std::string(nv_value));
  }
  return "";
}

// An OSError for a response the client did not take.
PyObject* output_error(const Output& out) {
  if (out.error_number() == ETIMEDOUT) {
    PyErr_Format(PyExc_TimeoutError, "%s", out.error().c_str());
  } else {
    errno = out.error_number();
    PyErr_SetFromErrno(PyExc_OSError);
  }
  return nullptr;
}

// Takes the response's head from the first call's arguments.
bool take_head(Output& out, PyObject* status, PyObject* headers) {
  if (out.has_head()) return true;
  if (!PyUnicode_Check(status) || !PyList_Check(headers)) {
    PyErr_SetString(PyExc_TypeError, "expected the status (str) and the headers (list)");
    return false;
  }
  Response head;
  try {
    std::string error = parse_head(status, headers, head);
    if (!error.empty()) {
      PyErr_SetString(PyExc_ValueError, error.c_str());
      return false;
    }
  } catch (py::PythonError& e) {
    e.restore();
    return false;
  }
  out.set_head(head.status, std::move(head.reason), std::move(head.headers), head.has_length,
               head.length);
  return true;
}

// __subinterp_send__(status, headers, data): sends a piece of the body (the
// header first, the first time), with the GIL released.
PyObject* py_send(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  Output* out = current_output();
  if (out == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "no response is being sent on this thread");
    return nullptr;
  }
  if (nargs != 3 || !PyBytes_Check(args[2])) {
    PyErr_SetString(PyExc_TypeError, "send(status, headers, data: bytes)");
    return nullptr;
  }
  if (!take_head(*out, args[0], args[1])) return nullptr;
  std::string_view data(PyBytes_AS_STRING(args[2]), static_cast<std::size_t>(PyBytes_GET_SIZE(args[2])));
  bool ok;
  Py_BEGIN_ALLOW_THREADS;
  ok = out->write(data);
  Py_END_ALLOW_THREADS;
  if (!ok) return output_error(*out);
  Py_RETURN_NONE;
}

// __subinterp_sendfile__(status, headers, fd, offset, count): the body from
// a regular file, by sendfile(2).
PyObject* py_sendfile(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  Output* out = current_output();
  if (out == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "no response is being sent on this thread");
    return nullptr;
  }
  if (nargs != 5) {
    PyErr_SetString(PyExc_TypeError, "sendfile(status, headers, fd, offset, count)");
    return nullptr;
  }
  long fd = PyLong_AsLong(args[2]);
  unsigned long long offset = PyLong_AsUnsignedLongLong(args[3]);
  unsigned long long count = PyLong_AsUnsignedLongLong(args[4]);
  if (PyErr_Occurred()) return nullptr;
  if (fd < 0 || fd > INT_MAX) {
    PyErr_SetString(PyExc_ValueError, "bad file descriptor");
    return nullptr;
  }
  if (!take_head(*out, args[0], args[1])) return nullptr;
  bool ok;
  Py_BEGIN_ALLOW_THREADS;
  ok = out->send_file(static_cast<int>(fd), offset, count);
  Py_END_ALLOW_THREADS;
  if (!ok) return output_error(*out);
  Py_RETURN_NONE;
}

PyMethodDef kSendDef = {"__subinterp_send__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(py_send)),
                        METH_FASTCALL, "send(status, headers, data): a piece of the response body"};
PyMethodDef kSendFileDef = {"__subinterp_sendfile__",
                            reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(py_sendfile)),
                            METH_FASTCALL,
                            "sendfile(status, headers, fd, offset, count): the body from a file"};

}  // namespace

Worker::Worker(const Options& options, std::size_t index, std::uint64_t max_requests)
    : interp_(Interpreter::create()), index_(index), limit_(max_requests),
      serial_(options.threads <= 1) {
  std::vector<Value> path;
  for (const auto& p : options.pythonpath) path.push_back(Value::from_str(p));
  interp_.set_main_attrs(Value::dict({
      Value::from_str("__subinterp_app__"), Value::from_str(options.app),
      Value::from_str("__subinterp_pythonpath__"), Value::list(std::move(path)),
      Value::from_str("__subinterp_threads__"),
      Value::from_int(static_cast<std::int64_t>(options.threads)),
  }));
  try {
    interp_.visit([&] {
      PyObject* main = PyImport_AddModule("__main__");  // borrowed
      if (main == nullptr) py::throw_python_error();
      for (PyMethodDef* def : {&kSendDef, &kSendFileDef}) {
        py::ref fn = py::check(PyCFunction_New(def, nullptr));
        py::check(PyObject_SetAttrString(main, def->ml_name, fn.get()));
      }
    });
    interp_.exec(kWorkerSource);
    interp_.visit([&] {
      handler_ = main_attr("__subinterp_wsgi__");
      base_environ_ = main_attr("__subinterp_base_environ__");
      bytes_io_ = main_attr("__subinterp_bytes_io__");
      static const char* const kNames[kKeyCount] = {
          "REQUEST_METHOD", "PATH_INFO",       "QUERY_STRING", "RAW_URI",
          "SERVER_PROTOCOL", "SERVER_NAME",    "SERVER_PORT",  "REMOTE_ADDR",
          "REMOTE_PORT",    "wsgi.url_scheme", "wsgi.input",   "CONTENT_TYPE",
          "CONTENT_LENGTH"};
      for (int i = 0; i < kKeyCount; ++i) keys_[i] = py::check(PyUnicode_InternFromString(kNames[i]));
      http10_ = py::check(PyUnicode_InternFromString("HTTP/1.0"));
      http11_ = py::check(PyUnicode_InternFromString("HTTP/1.1"));
      scheme_http_ = py::check(PyUnicode_InternFromString("http"));
      scheme_https_ = py::check(PyUnicode_InternFromString("https"));
      for (const char* m : {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}) {
        methods_.emplace_back(m, py::check(PyUnicode_InternFromString(m)));
      }
    });
  } catch (...) {
    SUBINTERP_RETHROW_FORCED_UNWIND;
    close();
    throw;
  }
}

Worker::~Worker() {
  try {
    close();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "subinterp server: closing a worker: %s\n", e.what());
  }
}

void Worker::interrupt(unsigned long ident, PyObject* exc_type,
                       const std::function<bool()>& still) {
  interp_.visit([&] {
    if (still()) PyThreadState_SetAsyncExc(ident, exc_type);
  });
}

void Worker::close() {
  if (closed_) return;
  closed_ = true;
  if (!interp_.is_closed()) {
    interp_.visit([&] {
      handler_ = py::ref();
      base_environ_ = py::ref();
      bytes_io_ = py::ref();
      for (auto& k : keys_) k = py::ref();
      http10_ = http11_ = scheme_http_ = scheme_https_ = py::ref();
      methods_.clear();
      field_keys_.clear();
      last_server_name_ = last_server_port_ = last_remote_addr_ = {};
    });
    interp_.close();
  }
}

namespace {

// The value for `text`, made again only when it differs from the last one.
PyObject* cached(std::pair<std::string, py::ref>& last, const std::string& text) {
  if (!last.second || last.first != text) {
    last.second = latin1(text);
    last.first = text;
  }
  return last.second.get();
}

void put(PyObject* dict, const py::ref& key, PyObject* value) {
  py::check(PyDict_SetItem(dict, key.get(), value));
}

void put_new(PyObject* dict, const py::ref& key, PyObject* value) {
  py::ref owned = py::ref::steal(value);
  if (!owned) py::throw_python_error();
  put(dict, key, owned.get());
}

}  // namespace

py::ref Worker::environ(const RequestParser& r, const Peer& peer, bool https) {
  py::ref env = py::check(PyDict_Copy(base_environ_.get()));
  PyObject* e = env.get();
  PyObject* method = nullptr;
  for (auto& [name, value] : methods_) {
    if (name == r.method) method = value.get();
  }
  if (method != nullptr) {
    put(e, keys_[kRequestMethod], method);
  } else {
    put_new(e, keys_[kRequestMethod], latin1(r.method).release());
  }
  std::string_view target = r.target;
  std::size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  // An absolute-form target ("http://host/path"): its path only.
  if (path.size() > 7 && (path.substr(0, 7) == "http://" || path.substr(0, 8) == "https://")) {
    std::size_t slash = path.find('/', path.find("//") + 2);
    path = slash == std::string_view::npos ? std::string_view("/") : path.substr(slash);
  }
  put_new(e, keys_[kPathInfo], latin1(unquote(path)).release());
  put_new(e, keys_[kQueryString],
          latin1(q == std::string_view::npos ? std::string() : std::string(target.substr(q + 1)))
              .release());
  put_new(e, keys_[kRawUri], latin1(r.target).release());
  put(e, keys_[kServerProtocol], r.version == 10 ? http10_.get() : http11_.get());
  put(e, keys_[kServerName], cached(last_server_name_, peer.server_name));
  put(e, keys_[kServerPort], cached(last_server_port_, peer.server_port));
  put(e, keys_[kRemoteAddr], cached(last_remote_addr_, peer.remote_addr));
  if (!peer.remote_port.empty()) put_new(e, keys_[kRemotePort], latin1(peer.remote_port).release());
  put(e, keys_[kUrlScheme], https ? scheme_https_.get() : scheme_http_.get());
  for (const auto& [name, value] : r.fields) {
    PyObject* key = nullptr;  // borrowed from the cache or `made`
    py::ref made;
    bool header = true;
    if (boost::beast::iequals(name, "content-type")) {
      key = keys_[kContentType].get();
      header = false;
    } else if (boost::beast::iequals(name, "content-length")) {
      key = keys_[kContentLength].get();
      header = false;
    } else if (auto it = field_keys_.find(name); it != field_keys_.end()) {
      key = it->second.get();
    } else {
      std::string cgi = cgi_name(name);
      if (cgi.find('_', 5) != std::string::npos && name.find('_') != std::string::npos) {
        continue;  // "X_Foo" would pose as "X-Foo" (gunicorn drops these too)
      }
      made = py::check(PyUnicode_InternFromString(cgi.c_str()));
      // Names seen before are kept, up to a bound (clients may send many).
      if (field_keys_.size() < 256) field_keys_.emplace(name, made);
      key = made.get();
    }
    py::ref v = latin1(value);
    PyObject* old = header ? PyDict_GetItemWithError(e, key) : nullptr;  // borrowed
    if (old == nullptr && PyErr_Occurred()) py::throw_python_error();
    if (old != nullptr) {
      // Repeated fields are joined with ", " (RFC 9110 5.3).
      v = py::check(PyUnicode_FromFormat("%U, %U", old, v.get()));
    }
    py::check(PyDict_SetItem(e, key, v.get()));
  }
  py::ref body = py::check(
      PyBytes_FromStringAndSize(r.body.data(), static_cast<Py_ssize_t>(r.body.size())));
  put_new(e, keys_[kInput], PyObject_CallOneArg(bytes_io_.get(), body.get()));
  if (!r.body.empty() && PyDict_GetItemWithError(e, keys_[kContentLength].get()) == nullptr) {
    if (PyErr_Occurred()) py::throw_python_error();
    // A chunked body: its length once read, as gunicorn and uWSGI give it.
    put_new(e, keys_[kContentLength], PyUnicode_FromFormat("%zu", r.body.size()));
  }
  return env;
}

Response Worker::response_from(PyObject* result) {
  Response out;
  if (!PyTuple_Check(result) || PyTuple_GET_SIZE(result) != 3) {
    out.error = "the server's glue returned something unexpected";
    return out;
  }
  PyObject* status = PyTuple_GET_ITEM(result, 0);
  PyObject* headers = PyTuple_GET_ITEM(result, 1);
  PyObject* body = PyTuple_GET_ITEM(result, 2);
  if (status == Py_None) {
    // Streamed: (None, True, None); failed: (None, streamed, traceback).
    out.streamed = PyObject_IsTrue(headers) == 1;
    if (body == Py_None) return out;
    Py_ssize_t n = 0;
    const char* text = PyUnicode_AsUTF8AndSize(body, &n);
    out.error = text ? std::string(text, static_cast<std::size_t>(n)) : "unknown error";
    PyErr_Clear();
    return out;
  }
  out.error = parse_head(status, headers, out);
  if (!out.error.empty()) return out;
  char* data = nullptr;
  Py_ssize_t size = 0;
  if (PyBytes_AsStringAndSize(body, &data, &size) < 0) py::throw_python_error();
  out.body.assign(data, static_cast<std::size_t>(size));
  return out;
}

Response Worker::handle(const RequestParser& request, const Peer& peer, bool https,
                        std::atomic<std::int64_t>* since, const std::atomic<int>* stage) {
  Response out;
  // A worker without --threads runs one request at a time, whichever thread
  // (its own or a helper) brings it: wsgi.multithread is False there.
  std::unique_lock serial(serial_mu_, std::defer_lock);
  if (serial_) serial.lock();
  interp_.visit([&] {
    try {
      py::ref env = environ(request, peer, https);
      py::ref result = py::check(PyObject_CallOneArg(handler_.get(), env.get()));
      out = response_from(result.get());
    } catch (py::PythonError& e) {
      py::ref exc = e.take();
      ExceptionSnapshot snap = ExceptionSnapshot::capture(exc.get());
      out = Response{};
      out.error = snap.errdisplay.empty() ? snap.formatted : snap.errdisplay;
    }
    if (since != nullptr) since->store(0);
    if (stage != nullptr && stage->load() != 0) {
      // An interruption that came too late for this request must not hit
      // the next one.
      PyThreadState_SetAsyncExc(PyThread_get_thread_ident(), nullptr);
    }
  });
  if (!out.error.empty() && !out.streamed) {
    out.status = 500;
    out.reason = "Internal Server Error";
    out.headers = {{"Content-Type", "text/plain"}};
    out.body = "Internal Server Error\n";
    out.has_length = false;
  }
  return out;
}

}  // namespace subinterp::server::detail
