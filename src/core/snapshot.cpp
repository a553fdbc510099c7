#include "subinterp/snapshot.hpp"

#include <utility>

#include "internal.hpp"
#include "subinterp/error.hpp"

namespace subinterp {
namespace {

// Cause and context chains are followed this deep; deeper links (and cycles)
// are cut.
constexpr int kMaxChainDepth = 16;

std::string text_or(PyObject* obj, const char* fallback) {
  if (obj == nullptr || !PyUnicode_Check(obj)) {
    PyErr_Clear();
    return fallback;
  }
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(obj, &size);
  if (data == nullptr) {
    PyErr_Clear();
    return fallback;
  }
  return std::string(data, static_cast<std::size_t>(size));
}

std::string attr_text(PyObject* obj, const char* name, const char* fallback) {
  py::ref value = py::ref::steal(PyObject_GetAttrString(obj, name));
  return text_or(value.get(), fallback);
}

// "".join(traceback.<func>(exc))
std::string format_with(const char* func, PyObject* exc) {
  py::ref traceback = py::ref::steal(PyImport_ImportModule("traceback"));
  if (!traceback) return text_or(nullptr, "");
  py::ref lines = py::ref::steal(PyObject_CallMethod(traceback.get(), func, "O", exc));
  if (!lines) return text_or(nullptr, "");
  py::ref empty = py::ref::steal(PyUnicode_FromString(""));
  if (!empty) return text_or(nullptr, "");
  py::ref joined = py::ref::steal(PyUnicode_Join(empty.get(), lines.get()));
  return text_or(joined.get(), "");
}

std::optional<std::string> pickle_exception(PyObject* exc) {
  try {
    py::ref data = detail::pickle_dumps(exc);
    char* buf = nullptr;
    Py_ssize_t size = 0;
    py::check(PyBytes_AsStringAndSize(data.get(), &buf, &size));
    return std::string(buf, static_cast<std::size_t>(size));
  } catch (py::PythonError&) {
    // Not every exception pickles; the snapshot is complete without it.
    return std::nullopt;
  }
}

ExceptionSnapshot capture_at(PyObject* exc, int depth) {
  ExceptionSnapshot snap;
  PyObject* type = reinterpret_cast<PyObject*>(Py_TYPE(exc));
  snap.type_name = attr_text(type, "__name__", "?");
  snap.type_qualname = attr_text(type, "__qualname__", snap.type_name.c_str());
  snap.type_module = attr_text(type, "__module__", "builtins");
  py::ref msg = py::ref::steal(PyObject_Str(exc));
  snap.msg = text_or(msg.get(), "<exception str() failed>");
  if (depth == 0) {
    // The chain is part of the top-level formatted traceback.
    snap.errdisplay = format_with("format_exception", exc);
  }
  snap.formatted = format_with("format_exception_only", exc);
  snap.pickled = pickle_exception(exc);
  if (depth < kMaxChainDepth) {
    py::ref cause = py::ref::steal(PyException_GetCause(exc));
    if (cause && cause.get() != exc) {
      snap.cause = std::make_shared<const ExceptionSnapshot>(capture_at(cause.get(), depth + 1));
    }
    py::ref context = py::ref::steal(PyException_GetContext(exc));
    if (context && context.get() != exc && context.get() != cause.get()) {
      snap.context =
          std::make_shared<const ExceptionSnapshot>(capture_at(context.get(), depth + 1));
    }
  }
  PyErr_Clear();
  return snap;
}

}  // namespace

ExceptionSnapshot ExceptionSnapshot::capture(PyObject* exc) {
  // Formatting runs Python code; keep an unrelated pending error out of it.
  py::ref pending = py::ref::steal(PyErr_GetRaisedException());
  ExceptionSnapshot snap = capture_at(exc, 0);
  PyErr_SetRaisedException(pending.release());
  return snap;
}

ExceptionSnapshot ExceptionSnapshot::make(std::string module, std::string qualname,
                                          std::string msg) {
  ExceptionSnapshot snap;
  auto dot = qualname.rfind('.');
  snap.type_name = dot == std::string::npos ? qualname : qualname.substr(dot + 1);
  snap.type_qualname = std::move(qualname);
  snap.type_module = std::move(module);
  snap.msg = std::move(msg);
  snap.formatted = snap.type_name + ": " + snap.msg + "\n";
  snap.errdisplay = snap.formatted;
  return snap;
}

}  // namespace subinterp
