// Values as bytes between processes (include/subinterp/wire.hpp).
#include "subinterp/wire.hpp"

#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

namespace subinterp {

namespace {
constexpr char kMagic[4] = {'S', 'I', 'W', '1'};
constexpr std::size_t kMaxDepth = 200;  // as deep as capture goes

enum Tag : std::uint8_t {
  kNone = 'N',
  kFalse = 'F',
  kTrue = 'T',
  kInt = 'i',
  kBigInt = 'I',
  kFloat = 'f',
  kComplex = 'c',
  kStr = 's',
  kBytes = 'b',
  kByteArray = 'a',
  kTuple = 't',
  kList = 'l',
  kDict = 'd',
  kSet = 'e',
  kFrozenSet = 'z',
};

const char* kind_name(Value::Kind kind) {
  using K = Value::Kind;
  switch (kind) {
    case K::Buffer: return "SharedBuffer";
    case K::Module: return "module";
    case K::Code: return "code";
    case K::Function: return "function or class";
    case K::Pickled:
    case K::PickledRefs: return "object (pickled)";
    case K::Queue: return "Queue";
    case K::SendChannel: return "SendChannel";
    case K::RecvChannel: return "RecvChannel";
    case K::Interpreter: return "Interpreter";
    default: return "value";
  }
}
}  // namespace

// Reads and writes Value's private storage (a friend of Value).
class WireCodec {
 public:
  static void write(std::string& out, const Value& v, std::size_t depth) {
    using K = Value::Kind;
    if (depth > kMaxDepth) {
      throw NotShareable("value", "nested more than 200 deep");
    }
    switch (v.kind_) {
      case K::None: out += static_cast<char>(kNone); return;
      case K::Bool: out += static_cast<char>(v.as_bool() ? kTrue : kFalse); return;
      case K::Int: tag_u64(out, kInt, static_cast<std::uint64_t>(v.as_int())); return;
      case K::BigInt: text(out, kBigInt, v.as_string()); return;
      case K::Float: tag_u64(out, kFloat, bits(v.as_double())); return;
      case K::Complex: {
        auto c = std::get<std::pair<double, double>>(v.storage_);
        tag_u64(out, kComplex, bits(c.first));
        u64(out, bits(c.second));
        return;
      }
      case K::Str: text(out, kStr, v.as_string()); return;
      case K::Bytes: text(out, kBytes, v.as_string()); return;
      case K::ByteArray: text(out, kByteArray, v.as_string()); return;
      case K::Tuple: items(out, kTuple, v.items(), 1, depth); return;
      case K::List: items(out, kList, v.items(), 1, depth); return;
      case K::Dict: items(out, kDict, v.items(), 2, depth); return;
      case K::Set: items(out, kSet, v.items(), 1, depth); return;
      case K::FrozenSet: items(out, kFrozenSet, v.items(), 1, depth); return;
      default:
        throw NotShareable(kind_name(v.kind_),
                           "only data (None, bool, int, float, complex, str, bytes, bytearray, "
                           "tuple, list, dict, set, frozenset) passes between processes");
    }
  }

  // Reads one value from [pos, end).
  class Reader {
   public:
    explicit Reader(std::string_view data) : data_(data) {}

    Value value(std::size_t depth) {
      using K = Value::Kind;
      if (depth > kMaxDepth) fail("nested more than 200 deep");
      std::uint8_t tag = byte();
      switch (tag) {
        case kNone: return Value();
        case kFalse: return Value(K::Bool, false);
        case kTrue: return Value(K::Bool, true);
        case kInt: return Value(K::Int, static_cast<std::int64_t>(u64()));
        case kBigInt: return Value(K::BigInt, big_int());
        case kFloat: return Value(K::Float, from_bits(u64()));
        case kComplex: {
          double real = from_bits(u64());
          double imag = from_bits(u64());
          return Value(K::Complex, std::pair<double, double>(real, imag));
        }
        case kStr: return Value(K::Str, bytes());
        case kBytes: return Value(K::Bytes, bytes());
        case kByteArray: return Value(K::ByteArray, bytes());
        case kTuple: return Value(K::Tuple, items(1, depth));
        case kList: return Value(K::List, items(1, depth));
        case kDict: return Value(K::Dict, items(2, depth));
        case kSet: return Value(K::Set, items(1, depth));
        case kFrozenSet: return Value(K::FrozenSet, items(1, depth));
        default: fail("unknown tag " + std::to_string(tag));
      }
    }

    bool at_end() const { return pos_ == data_.size(); }
    std::size_t left() const { return data_.size() - pos_; }

    void magic() {
      if (left() < sizeof kMagic || std::memcmp(data_.data(), kMagic, sizeof kMagic) != 0) {
        fail("not subinterp wire data (or another version of it)");
      }
      pos_ += sizeof kMagic;
    }

    [[noreturn]] void fail(const std::string& why) const {
      throw wire::WireError("malformed value bytes at offset " + std::to_string(pos_) + ": " +
                            why);
    }

   private:
    std::uint8_t byte() {
      if (left() < 1) fail("truncated");
      return static_cast<std::uint8_t>(data_[pos_++]);
    }

    std::uint64_t u64() {
      if (left() < 8) fail("truncated");
      std::uint64_t v = 0;
      for (int i = 7; i >= 0; --i) {
        v = (v << 8) | static_cast<std::uint8_t>(data_[pos_ + static_cast<std::size_t>(i)]);
      }
      pos_ += 8;
      return v;
    }

    std::string bytes() {
      std::uint64_t n = u64();
      if (n > left()) fail("a length of " + std::to_string(n) + " past the end");
      std::string s(data_.substr(pos_, static_cast<std::size_t>(n)));
      pos_ += static_cast<std::size_t>(n);
      return s;
    }

    // Hex text as capture writes it: [-]0x<hex digits>.
    std::string big_int() {
      std::string s = bytes();
      std::size_t i = !s.empty() && s[0] == '-' ? 1 : 0;
      bool ok = s.size() > i + 2 && s[i] == '0' && s[i + 1] == 'x';
      for (std::size_t j = i + 2; ok && j < s.size(); ++j) {
        char c = s[j];
        ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
      }
      if (!ok) fail("a big int that is not hex text");
      return s;
    }

    std::shared_ptr<const std::vector<Value>> items(std::uint64_t per, std::size_t depth) {
      std::uint64_t count = u64();
      // Every item takes at least one byte: a count past what is left is a lie,
      // refused before anything is allocated for it.
      if (count > left() || count * per > left()) {
        fail("a count of " + std::to_string(count) + " past the end");
      }
      std::vector<Value> out;
      out.reserve(static_cast<std::size_t>(count * per));
      for (std::uint64_t i = 0; i < count * per; ++i) out.push_back(value(depth + 1));
      return std::make_shared<const std::vector<Value>>(std::move(out));
    }

    std::string_view data_;
    std::size_t pos_ = 0;
  };

 private:
  static std::uint64_t bits(double d) {
    std::uint64_t b;
    std::memcpy(&b, &d, sizeof b);
    return b;
  }
  static double from_bits(std::uint64_t b) {
    double d;
    std::memcpy(&d, &b, sizeof d);
    return d;
  }
  static void u64(std::string& out, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
  }
  static void tag_u64(std::string& out, Tag tag, std::uint64_t v) {
    out += static_cast<char>(tag);
    u64(out, v);
  }
  static void text(std::string& out, Tag tag, const std::string& s) {
    tag_u64(out, tag, s.size());
    out += s;
  }
  static void items(std::string& out, Tag tag, const std::vector<Value>& items, std::size_t per,
                    std::size_t depth) {
    tag_u64(out, tag, items.size() / per);
    for (std::size_t i = 0; i < items.size(); ++i) {
      try {
        write(out, items[i], depth + 1);
      } catch (NotShareable& e) {
        e.prepend("[" + std::to_string(per == 2 ? i / 2 : i) + "]");
        throw;
      }
    }
  }
};

namespace wire {

std::string encode(const Value& value) {
  std::string out(kMagic, sizeof kMagic);
  WireCodec::write(out, value, 0);
  return out;
}

Value decode(std::string_view data) {
  WireCodec::Reader reader(data);
  reader.magic();
  Value v = reader.value(0);
  if (!reader.at_end()) reader.fail(std::to_string(reader.left()) + " bytes after the value");
  return v;
}

}  // namespace wire
}  // namespace subinterp
