#include "subinterp/shared_buffer.hpp"

#include <cstdlib>
#include <new>
#include <utility>

#include "internal.hpp"
#include "subinterp/error.hpp"

namespace subinterp {

std::shared_ptr<SharedMemory> SharedMemory::allocate(std::size_t size) {
  // calloc: large blocks come zeroed from the OS without touching each page.
  char* data = static_cast<char*>(std::calloc(size == 0 ? 1 : size, 1));
  if (data == nullptr) throw std::bad_alloc();
  return std::shared_ptr<SharedMemory>(new SharedMemory(data, size));
}

SharedMemory::~SharedMemory() { std::free(data_); }

namespace {

struct SharedBufferObject {
  PyObject_HEAD std::shared_ptr<SharedMemory>* memory;  // owned; a pointer keeps the struct C-like
  std::size_t offset;
  std::size_t length;
};

SharedBufferObject* as_buffer(PyObject* self) {
  return reinterpret_cast<SharedBufferObject*>(self);
}

PyObject* buffer_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
  static const char* kwlist[] = {"size", nullptr};
  Py_ssize_t size = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "n:SharedBuffer", const_cast<char**>(kwlist),
                                   &size)) {
    return nullptr;
  }
  if (size < 0) {
    PyErr_SetString(PyExc_ValueError, "SharedBuffer size must not be negative");
    return nullptr;
  }
  std::shared_ptr<SharedMemory> memory;
  try {
    memory = SharedMemory::allocate(static_cast<std::size_t>(size));
  } catch (std::bad_alloc&) {
    return PyErr_NoMemory();
  }
  PyObject* self = type->tp_alloc(type, 0);
  if (self == nullptr) return nullptr;
  auto* b = as_buffer(self);
  b->memory = new std::shared_ptr<SharedMemory>(std::move(memory));
  b->offset = 0;
  b->length = static_cast<std::size_t>(size);
  return self;
}

void buffer_dealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  delete as_buffer(self)->memory;
  type->tp_free(self);
  Py_DECREF(type);
}

int buffer_get(PyObject* self, Py_buffer* view, int flags) {
  auto* b = as_buffer(self);
  return PyBuffer_FillInfo(view, self, (*b->memory)->data() + b->offset,
                           static_cast<Py_ssize_t>(b->length), 0, flags);
}

Py_ssize_t buffer_len(PyObject* self) { return static_cast<Py_ssize_t>(as_buffer(self)->length); }

PyObject* buffer_repr(PyObject* self) {
  return PyUnicode_FromFormat("<SharedBuffer of %zd bytes>",
                              static_cast<Py_ssize_t>(as_buffer(self)->length));
}

PyObject* buffer_reduce(PyObject* self, PyObject*) {
  PyErr_SetString(PyExc_TypeError,
                  "SharedBuffer cannot be pickled; pass it to another interpreter directly");
  (void)self;
  return nullptr;
}

PyObject* buffer_nbytes(PyObject* self, void*) {
  return PyLong_FromSize_t(as_buffer(self)->length);
}

PyGetSetDef buffer_getset[] = {
    {"nbytes", buffer_nbytes, nullptr, "Size of the buffer in bytes.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyMethodDef buffer_methods[] = {
    {"__reduce__", buffer_reduce, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

const char kDoc[] =
    "SharedBuffer(size)\n--\n\n"
    "Zeroed memory owned by the subinterp runtime, not by an interpreter.\n\n"
    "Supports the buffer protocol (memoryview, struct.pack_into, array).\n"
    "Passing a SharedBuffer, or a memoryview of one, to another interpreter\n"
    "gives it a view of the same memory, without a copy; the memory lives\n"
    "while any interpreter holds a view. Writers on several interpreters\n"
    "must coordinate, as with any shared memory.";

PyType_Slot buffer_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(buffer_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(buffer_dealloc)},
    {Py_tp_repr, reinterpret_cast<void*>(buffer_repr)},
    {Py_tp_getset, buffer_getset},
    {Py_tp_methods, buffer_methods},
    {Py_tp_doc, const_cast<char*>(kDoc)},
    {Py_bf_getbuffer, reinterpret_cast<void*>(buffer_get)},
    {Py_sq_length, reinterpret_cast<void*>(buffer_len)},
    {0, nullptr},
};

PyType_Spec buffer_spec = {
    "subinterp.SharedBuffer",
    sizeof(SharedBufferObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    buffer_slots,
};

}  // namespace

PyTypeObject* shared_buffer_type() {
  detail::InterpCache& c = detail::cache();
  if (c.shared_buffer_type == nullptr) {
    c.shared_buffer_type = py::check(PyType_FromSpec(&buffer_spec)).release();
  }
  return reinterpret_cast<PyTypeObject*>(c.shared_buffer_type);
}

py::ref make_shared_buffer(std::shared_ptr<SharedMemory> memory, std::size_t offset,
                           std::size_t length) {
  PyTypeObject* type = shared_buffer_type();
  py::ref self = py::check(type->tp_alloc(type, 0));
  auto* b = as_buffer(self.get());
  b->memory = new std::shared_ptr<SharedMemory>(std::move(memory));
  b->offset = offset;
  b->length = length;
  return self;
}

bool shared_buffer_view(PyObject* obj, BufferData& out) {
  detail::InterpCache& c = detail::cache();
  if (c.shared_buffer_type == nullptr ||
      Py_TYPE(obj) != reinterpret_cast<PyTypeObject*>(c.shared_buffer_type)) {
    return false;
  }
  auto* b = as_buffer(obj);
  out.memory = *b->memory;
  out.offset = b->offset;
  out.length = b->length;
  return true;
}

}  // namespace subinterp
