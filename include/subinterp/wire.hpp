// Values as bytes, to pass between processes.
//
// `encode` writes a Value of the data kinds (None, bool, int, float,
// complex, str, bytes, bytearray, tuple, list, dict, set, frozenset, nested
// up to 200 deep) as bytes; `decode` reads them back. The other kinds name
// things of one process (shared memory, queues, interpreters) or would run
// code when rebuilt (pickled objects, functions, classes), so they do not
// cross: encode throws NotShareable for them.
//
// `decode` is meant for bytes from a process that is not trusted (a worker
// running hostile code): it checks every length against the input, limits
// nesting, and throws WireError on anything malformed; it never reads past
// the input and allocates at most in proportion to it.
//
// Format (little-endian): one tag byte per value, then
//   int: 8 bytes; float: 8 bytes; complex: 16 bytes;
//   str, bytes, bytearray, big int (hex text): length (8 bytes), bytes;
//   tuple, list, set, frozenset: count (8 bytes), items;
//   dict: count of pairs (8 bytes), key, value, key, value...
// preceded by a 4-byte magic that names the format's version.
#pragma once

#include <string>
#include <string_view>

#include "subinterp/error.hpp"
#include "subinterp/export.hpp"
#include "subinterp/value.hpp"

namespace subinterp::wire {

// Malformed input to decode().
class SUBINTERP_API WireError : public Error {
 public:
  using Error::Error;
};

SUBINTERP_API std::string encode(const Value& value);
SUBINTERP_API Value decode(std::string_view data);

}  // namespace subinterp::wire
