// Memory that the runtime owns, shared between interpreters without copying.
//
// A `SharedMemory` block is reference counted in C++ and belongs to no
// interpreter. Each interpreter sees it through `SharedBuffer` objects (a
// heap type made per interpreter), which export the buffer protocol; a
// `memoryview` of one travels to another interpreter as a view of the same
// bytes. Concurrent writers must synchronise among themselves, as with any
// shared memory.
#pragma once

#include "subinterp/export.hpp"

#include <Python.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "subinterp/ref.hpp"

namespace subinterp {

class SUBINTERP_API SharedMemory {
 public:
  // Allocates `size` zeroed bytes. Throws std::bad_alloc.
  static std::shared_ptr<SharedMemory> allocate(std::size_t size);
  ~SharedMemory();
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;

  char* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }

 private:
  SharedMemory(char* data, std::size_t size) : data_(data), size_(size) {}
  char* data_;
  std::size_t size_;
};

// A view of shared memory inside a Value.
struct BufferData {
  std::shared_ptr<SharedMemory> memory;
  std::size_t offset = 0;
  std::size_t length = 0;
  bool readonly = false;
  bool memoryview = false;  // rebuild as a memoryview (else as a SharedBuffer)
  std::string format = "B";
  std::vector<Py_ssize_t> shape;  // empty: one dimension of length / itemsize
};

// The SharedBuffer type of the attached interpreter (borrowed; made on first
// use and kept in the interpreter's state dict).
SUBINTERP_API PyTypeObject* shared_buffer_type();
// A new SharedBuffer object viewing `length` bytes of `memory` at `offset`.
SUBINTERP_API py::ref make_shared_buffer(std::shared_ptr<SharedMemory> memory, std::size_t offset,
                           std::size_t length);
// If `obj` is a SharedBuffer of the attached interpreter, fills `out` (memory,
// offset, length) and returns true.
SUBINTERP_API bool shared_buffer_view(PyObject* obj, BufferData& out);

}  // namespace subinterp
