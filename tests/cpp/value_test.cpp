// Values: capture in one interpreter, rebuild in the same or another one
// (tests/cpp/python_env.hpp sets up Python).
#include <cmath>
#include <cstring>
#include <memory>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "python_env.hpp"
#include "subinterp/subinterp.hpp"

namespace subinterp_test {
namespace {

using subinterp::Interpreter;
using subinterp::NotShareable;
using subinterp::Value;
using subinterp::py::ref;
using Kind = Value::Kind;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The address of obj's buffer (the buffer is released again at once: the
// object keeps the memory alive).
const void* buffer_address(PyObject* obj, Py_ssize_t* length = nullptr) {
  Py_buffer view;
  if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0) checked(nullptr, "PyObject_GetBuffer");
  const void* address = view.buf;
  if (length != nullptr) *length = view.len;
  PyBuffer_Release(&view);
  return address;
}

// ---------------------------------------------------------------------------
// Round trips of every plain kind, through the main interpreter and through a
// subinterpreter.

// Builtin functions travel by reference, as a Function or pickled (which
// also names the module and the function): either kind is right.
constexpr Kind kBuiltin = static_cast<Kind>(255);

struct RoundTrip {
  const char* name;
  const char* expr;   // evaluated where the value is captured
  Kind kind;          // the kind it is captured as (or kBuiltin)
  const char* setup;  // statements run first, on both sides

  friend std::ostream& operator<<(std::ostream& out, const RoundTrip& r) { return out << r.name; }
};

const RoundTrip kRoundTrips[] = {
    {"None", "None", Kind::None, ""},
    {"True", "True", Kind::Bool, ""},
    {"False", "False", Kind::Bool, ""},
    {"Int", "-12345", Kind::Int, ""},
    {"IntMax", "2**63 - 1", Kind::Int, ""},
    {"IntMin", "-2**63", Kind::Int, ""},
    {"BigInt", "2**63", Kind::BigInt, ""},
    {"BigNegative", "-(3**200)", Kind::BigInt, ""},
    {"Float", "1.5e-300", Kind::Float, ""},
    {"FloatInfinity", "float('-inf')", Kind::Float, ""},
    {"Complex", "complex(1.5, -2.25)", Kind::Complex, ""},
    {"Str", "'hello'", Kind::Str, ""},
    {"StrEmpty", "''", Kind::Str, ""},
    {"StrNonBmp", "'caf\\u00e9 \\U0001F600 \\u4e2d'", Kind::Str, ""},
    {"StrLoneSurrogate", "'a\\ud800b\\udfff'", Kind::Str, ""},
    {"StrNul", "'a\\x00b'", Kind::Str, ""},
    {"Bytes", "b'\\x00\\xffabc'", Kind::Bytes, ""},
    {"ByteArray", "bytearray(b'xy\\x00z')", Kind::ByteArray, ""},
    {"Tuple", "(1, 'a', None, 2.5)", Kind::Tuple, ""},
    {"TupleEmpty", "()", Kind::Tuple, ""},
    {"List", "[1, [2, [3, []]]]", Kind::List, ""},
    {"Dict", "{'a': 1, 2: [3], (4, 5): {'n': None}, None: b'x'}", Kind::Dict, ""},
    {"Set", "{1, 2, 'three', (4, 5)}", Kind::Set, ""},
    {"FrozenSet", "frozenset({1, (2, 3), frozenset()})", Kind::FrozenSet, ""},
    {"Nested",
     "{'k': [(1, {2, 3}), frozenset({b'x'})], 'f': 1.25, 'big': [2**100, -2**100],"
     " 's': ('\\U0001F600', bytearray(b'q'))}",
     Kind::Dict, ""},
    {"PickledFraction", "fractions.Fraction(1, 3)", Kind::Pickled, "import fractions"},
    {"PickledOrderedDict", "collections.OrderedDict(a=1, b=[2])", Kind::Pickled,
     "import collections"},
    {"BuiltinFunction", "len", kBuiltin, ""},
    {"Module", "math", Kind::Module, "import math"},
    {"FunctionByReference", "json.dumps", Kind::Function, "import json"},
    {"BuiltinFunctionOfAModule", "operator.add", kBuiltin, "import operator"},
};

void expect_kind(const Value& value, Kind kind) {
  if (kind == kBuiltin) {
    EXPECT_TRUE(value.kind() == Kind::Function || value.kind() == Kind::Pickled)
        << ::testing::PrintToString(value.kind());
  } else {
    EXPECT_EQ(value.kind(), kind);
  }
}

class ValueRoundTrip : public ::testing::TestWithParam<RoundTrip> {};

// Captured and rebuilt in the main interpreter: an equal object of the same
// type.
TEST_P(ValueRoundTrip, InMainInterpreter) {
  const RoundTrip& r = GetParam();
  MainThreadState attached;
  ref ns = fresh_namespace();
  ref original = eval(r.expr, r.setup, ns.get());
  Value value = Value::capture(original.get());
  expect_kind(value, r.kind);
  EXPECT_TRUE(Value::is_shareable(original.get()));
  ref rebuilt = value.rebuild();
  EXPECT_EQ(Py_TYPE(rebuilt.get()), Py_TYPE(original.get()));
  EXPECT_TRUE(py_equal(rebuilt.get(), original.get()))
      << py_repr(rebuilt.get()) << " != " << py_repr(original.get());
  // Rebuilding twice gives equal objects too (a Value is immutable).
  ref again = value.rebuild();
  EXPECT_TRUE(py_equal(again.get(), original.get()));
}

// Captured in the main interpreter, rebuilt in a subinterpreter.
TEST_P(ValueRoundTrip, MainToSubinterpreter) {
  const RoundTrip& r = GetParam();
  Value value = capture_main(r.expr, r.setup);
  Interpreter interp = Interpreter::create();
  interp.exec(r.setup);
  interp.set_main_attrs(Value::dict({Value::from_str("v"), value}));
  interp.exec(std::string("expected = (") + r.expr +
              ")\n"
              "assert type(v) is type(expected), (type(v), type(expected))\n"
              "assert v == expected, (v, expected)\n");
  interp.close();
}

// Captured in a subinterpreter (as a call's result), rebuilt in the main
// interpreter after the subinterpreter has been closed.
TEST_P(ValueRoundTrip, SubinterpreterToMain) {
  const RoundTrip& r = GetParam();
  // eval, a builtin, evaluates in the target's __main__ (call() gives it
  // __main__'s globals).
  Value eval_builtin = capture_main("eval");
  Interpreter interp = Interpreter::create();
  interp.exec(r.setup);
  Value value = interp.call(eval_builtin, Value::tuple({Value::from_str(r.expr)}), Value());
  interp.close();
  expect_kind(value, r.kind);
  MainThreadState attached;
  ref expected = eval(r.expr, r.setup);
  ref rebuilt = value.rebuild();
  EXPECT_EQ(Py_TYPE(rebuilt.get()), Py_TYPE(expected.get()));
  EXPECT_TRUE(py_equal(rebuilt.get(), expected.get()))
      << py_repr(rebuilt.get()) << " != " << py_repr(expected.get());
}

INSTANTIATE_TEST_SUITE_P(Kinds, ValueRoundTrip, ::testing::ValuesIn(kRoundTrips),
                         [](const ::testing::TestParamInfo<RoundTrip>& info) {
                           return std::string(info.param.name);
                         });

// ---------------------------------------------------------------------------
// Kinds with more to check than equality.

TEST(Value, NanStaysNan) {
  MainThreadState attached;
  ref nan = eval("float('nan')");
  ref rebuilt = Value::capture(nan.get()).rebuild();
  EXPECT_TRUE(std::isnan(PyFloat_AsDouble(rebuilt.get())));
}

TEST(Value, ByteArrayIsACopy) {
  MainThreadState attached;
  ref ns = fresh_namespace();
  ref original = eval("data", "data = bytearray(b'abc')", ns.get());
  ref rebuilt = Value::capture(original.get()).rebuild();
  ASSERT_NE(rebuilt.get(), original.get());
  ASSERT_EQ(PyDict_SetItemString(ns.get(), "copy", rebuilt.get()), 0);
  ref same = eval("copy.extend(b'd') or (data, copy)", "", ns.get());
  EXPECT_EQ(py_repr(same.get()), "(bytearray(b'abc'), bytearray(b'abcd'))");
}

TEST(Value, MutableContainersAreNewObjects) {
  MainThreadState attached;
  ref original = eval("[[1], {'a': {2}}]");
  ref rebuilt = Value::capture(original.get()).rebuild();
  EXPECT_NE(rebuilt.get(), original.get());
  EXPECT_NE(PyList_GET_ITEM(rebuilt.get(), 0), PyList_GET_ITEM(original.get(), 0));
  EXPECT_TRUE(py_equal(rebuilt.get(), original.get()));
}

TEST(Value, CyclicListFallsBackToPickle) {
  MainThreadState attached;
  ref original = eval("l", "l = [1]\nl.append(l)");
  Value value = Value::capture(original.get());
  EXPECT_EQ(value.kind(), Kind::Pickled);
  ref rebuilt = value.rebuild();
  ASSERT_TRUE(PyList_CheckExact(rebuilt.get()));
  ASSERT_EQ(PyList_GET_SIZE(rebuilt.get()), 2);
  EXPECT_NE(rebuilt.get(), original.get());
  EXPECT_EQ(PyList_GET_ITEM(rebuilt.get(), 1), rebuilt.get());  // the cycle is rebuilt
  EXPECT_EQ(PyLong_AsLong(PyList_GET_ITEM(rebuilt.get(), 0)), 1);
}

TEST(Value, CycleInsideADictIsPickledWhole) {
  MainThreadState attached;
  ref original = eval("d", "d = {'a': [1]}\nd['self'] = d");
  Value value = Value::capture(original.get());
  EXPECT_EQ(value.kind(), Kind::Pickled);
  ref rebuilt = value.rebuild();
  ref self = ref::borrow(PyDict_GetItemString(rebuilt.get(), "self"));
  EXPECT_EQ(self.get(), rebuilt.get());
}

TEST(Value, SharedObjectsInsideAValueAreNotACycle) {
  // The same list twice is not a cycle: captured twice, not pickled.
  MainThreadState attached;
  ref original = eval("[x, x]", "x = [1, 2]");
  Value value = Value::capture(original.get());
  EXPECT_EQ(value.kind(), Kind::List);
  ref rebuilt = value.rebuild();
  EXPECT_TRUE(py_equal(rebuilt.get(), original.get()));
}

TEST(Value, DeepNestingFallsBackToPickle) {
  MainThreadState attached;
  ref original = eval("x", "x = []\nfor _ in range(500):\n    x = [x]");
  Value value = Value::capture(original.get());
  EXPECT_EQ(value.kind(), Kind::Pickled);
  ref rebuilt = value.rebuild();
  EXPECT_TRUE(py_equal(rebuilt.get(), original.get()));
}

TEST(Value, CodeObject) {
  MainThreadState attached;
  ref code = eval("compile('6 * 7', '<expr>', 'eval')");
  Value value = Value::capture(code.get());
  EXPECT_EQ(value.kind(), Kind::Code);
  ref rebuilt = value.rebuild();
  ASSERT_TRUE(PyCode_Check(rebuilt.get()));
  ref ns = fresh_namespace();
  ref result = checked(PyEval_EvalCode(rebuilt.get(), ns.get(), ns.get()), "eval code");
  EXPECT_EQ(PyLong_AsLong(result.get()), 42);
}

TEST(Value, ModuleRebuildsAsTheImportedModule) {
  MainThreadState attached;
  ref module = eval("json", "import json");
  Value value = Value::capture(module.get());
  EXPECT_EQ(value.kind(), Kind::Module);
  EXPECT_EQ(value.as_string(), "json");
  ref rebuilt = value.rebuild();
  EXPECT_EQ(rebuilt.get(), module.get());  // the same sys.modules entry
}

TEST(Value, ModuleInASubinterpreterIsItsOwn) {
  Value value = capture_main("json", "import json");
  Interpreter interp = Interpreter::create();
  interp.set_main_attrs(Value::dict({Value::from_str("m"), value}));
  interp.exec("import sys\nassert m is sys.modules['json']\nassert m.dumps([1]) == '[1]'");
  interp.close();
}

TEST(Value, FunctionByReferenceIsTheSameObject) {
  MainThreadState attached;
  ref dumps = eval("json.dumps", "import json");
  Value value = Value::capture(dumps.get());
  EXPECT_EQ(value.kind(), Kind::Function);
  ref rebuilt = value.rebuild();
  EXPECT_EQ(rebuilt.get(), dumps.get());
}

// A closure defined outside any module travels by value: code, defaults,
// keyword defaults, closure cells and the globals it reads.
constexpr const char* kClosureSetup =
    "k = 10\n"
    "def make(n):\n"
    "    def add(x, y=1, *, z=2):\n"
    "        return x + y + z + n + k\n"
    "    return add\n"
    "f = make(5)\n";

TEST(Value, FunctionByValueInMain) {
  MainThreadState attached;
  ref ns = fresh_namespace();
  ref func = eval("f", kClosureSetup, ns.get());
  Value value = Value::capture(func.get());
  EXPECT_EQ(value.kind(), Kind::Function);
  ref rebuilt = value.rebuild();
  ASSERT_TRUE(PyFunction_Check(rebuilt.get()));
  EXPECT_NE(rebuilt.get(), func.get());
  ASSERT_EQ(PyDict_SetItemString(ns.get(), "g", rebuilt.get()), 0);
  ref results = eval("(f(1), g(1), g(1, 0, z=0), g.__name__)", "", ns.get());
  EXPECT_EQ(py_repr(results.get()), "(19, 19, 16, 'add')");
  // The globals were captured when the function was: a later change of k
  // does not reach the copy.
  ref after = eval("(f(1), g(1))", "k = 100", ns.get());
  EXPECT_EQ(py_repr(after.get()), "(109, 19)");
}

TEST(Value, FunctionByValueInASubinterpreter) {
  Value func = capture_main("f", kClosureSetup);
  Interpreter interp = Interpreter::create();
  EXPECT_EQ(interp.call(func, Value::tuple({Value::from_int(1)}), Value()).as_int(), 19);
  EXPECT_EQ(interp
                .call(func, Value::tuple({Value::from_int(1), Value::from_int(0)}),
                      Value::dict({Value::from_str("z"), Value::from_int(0)}))
                .as_int(),
            16);
  // And as a value in the interpreter's namespace.
  interp.set_main_attrs(Value::dict({Value::from_str("g"), func}));
  interp.exec("assert g(2) == 20, g(2)");
  interp.close();
}

TEST(Value, LambdaUsingAModuleGlobal) {
  Value func = capture_main("lambda x: math.sqrt(x) + len(str(x))", "import math");
  Interpreter interp = Interpreter::create();
  Value result = interp.call(func, Value::tuple({Value::from_int(16)}), Value());
  EXPECT_DOUBLE_EQ(result.as_double(), 6.0);
  interp.close();
}

// ---------------------------------------------------------------------------
// Shared buffers: the same memory on both sides, no copy.

TEST(Value, SharedBufferMemoryviewIsZeroCopy) {
  auto memory = subinterp::SharedMemory::allocate(64);
  MainThreadState attached;
  ref ns = fresh_namespace();
  ref buffer = subinterp::make_shared_buffer(memory, 0, 64);
  ASSERT_EQ(PyDict_SetItemString(ns.get(), "buf", buffer.get()), 0);

  ref view = eval("memoryview(buf)", "", ns.get());
  Value value = Value::capture(view.get());
  EXPECT_EQ(value.kind(), Kind::Buffer);
  ref rebuilt = value.rebuild();
  ASSERT_TRUE(PyMemoryView_Check(rebuilt.get()));
  EXPECT_NE(rebuilt.get(), view.get());
  Py_ssize_t length = 0;
  EXPECT_EQ(buffer_address(rebuilt.get(), &length), memory->data());
  EXPECT_EQ(length, 64);

  // A slice keeps its offset.
  ref slice = eval("memoryview(buf)[8:24]", "", ns.get());
  ref rebuilt_slice = Value::capture(slice.get()).rebuild();
  EXPECT_EQ(buffer_address(rebuilt_slice.get(), &length), memory->data() + 8);
  EXPECT_EQ(length, 16);

  // Writes through the rebuilt view land in the shared memory.
  ASSERT_EQ(PyDict_SetItemString(ns.get(), "other", rebuilt.get()), 0);
  eval("None", "other[3] = 0xAB", ns.get());
  EXPECT_EQ(static_cast<unsigned char>(memory->data()[3]), 0xAB);
}

TEST(Value, SharedBufferObjectIsZeroCopy) {
  auto memory = subinterp::SharedMemory::allocate(32);
  MainThreadState attached;
  ref buffer = subinterp::make_shared_buffer(memory, 0, 32);
  Value value = Value::capture(buffer.get());
  EXPECT_EQ(value.kind(), Kind::Buffer);
  ref rebuilt = value.rebuild();
  EXPECT_EQ(Py_TYPE(rebuilt.get()), subinterp::shared_buffer_type());
  EXPECT_NE(rebuilt.get(), buffer.get());
  EXPECT_EQ(buffer_address(rebuilt.get()), memory->data());
}

TEST(Value, SharedBufferViewShapeFormatAndReadOnly) {
  auto memory = subinterp::SharedMemory::allocate(24);
  MainThreadState attached;
  ref ns = fresh_namespace();
  ref buffer = subinterp::make_shared_buffer(memory, 0, 24);
  ASSERT_EQ(PyDict_SetItemString(ns.get(), "buf", buffer.get()), 0);
  ref view = eval("memoryview(buf).cast('i', (2, 3)).toreadonly()", "", ns.get());
  ref rebuilt = Value::capture(view.get()).rebuild();
  ASSERT_EQ(PyDict_SetItemString(ns.get(), "r", rebuilt.get()), 0);
  ref info = eval("(r.format, r.shape, r.readonly, r.nbytes)", "", ns.get());
  EXPECT_EQ(py_repr(info.get()), "('i', (2, 3), True, 24)");
  EXPECT_EQ(buffer_address(rebuilt.get()), memory->data());
}

TEST(Value, SharedBufferCrossesInterpreters) {
  auto memory = subinterp::SharedMemory::allocate(16);
  Value value;
  {
    MainThreadState attached;
    ref buffer = subinterp::make_shared_buffer(memory, 0, 16);
    ref view = checked(PyMemoryView_FromObject(buffer.get()), "memoryview");
    value = Value::capture(view.get());
  }
  Interpreter interp = Interpreter::create();
  interp.set_main_attrs(Value::dict({Value::from_str("m"), value}));
  interp.exec("m[0:4] = b'sub!'\ntail = m[8:12]");
  EXPECT_EQ(std::string(memory->data(), 4), "sub!");
  // A view made in the subinterpreter comes back as a view of the same
  // memory, and outlives the interpreter.
  Value tail = interp.call(capture_main("eval"), Value::tuple({Value::from_str("tail")}), Value());
  interp.close();
  EXPECT_EQ(tail.kind(), Kind::Buffer);
  std::memcpy(memory->data() + 8, "back", 4);
  MainThreadState attached;
  ref rebuilt = tail.rebuild();
  Py_ssize_t length = 0;
  EXPECT_EQ(buffer_address(rebuilt.get(), &length), memory->data() + 8);
  EXPECT_EQ(length, 4);
  ref bytes = checked(PyBytes_FromObject(rebuilt.get()), "bytes");
  EXPECT_EQ(std::string(PyBytes_AS_STRING(bytes.get()), 4), "back");
}

TEST(Value, ReadOnlyMemoryviewOfBytesIsCopied) {
  MainThreadState attached;
  ref ns = fresh_namespace();
  ref view = eval("memoryview(data)", "data = b'abcdef'", ns.get());
  Value value = Value::capture(view.get());
  EXPECT_EQ(value.kind(), Kind::Buffer);
  ref rebuilt = value.rebuild();
  EXPECT_NE(buffer_address(rebuilt.get()), buffer_address(view.get()));
  ASSERT_EQ(PyDict_SetItemString(ns.get(), "r", rebuilt.get()), 0);
  ref info = eval("(r.readonly, bytes(r))", "", ns.get());
  EXPECT_EQ(py_repr(info.get()), "(True, b'abcdef')");
}

TEST(Value, WritableMemoryviewOfLocalMemoryIsNotShareable) {
  MainThreadState attached;
  ref view = eval("memoryview(bytearray(8))");
  try {
    Value::capture(view.get());
    FAIL() << "a writable view of interpreter memory was captured";
  } catch (const NotShareable& e) {
    EXPECT_EQ(e.type_name(), "memoryview");
  }
  EXPECT_FALSE(Value::is_shareable(view.get()));
}

// ---------------------------------------------------------------------------
// What cannot travel names its type and where it sits.

TEST(Value, NotShareableNamesThePath) {
  MainThreadState attached;
  ref obj = eval("[1, {'k': threading.Lock()}]", "import threading");
  try {
    Value::capture(obj.get());
    FAIL() << "a lock was captured";
  } catch (const NotShareable& e) {
    EXPECT_EQ(e.path(), "[1]['k']");
    EXPECT_TRUE(contains(e.type_name(), "lock")) << e.type_name();
    EXPECT_FALSE(e.reason().empty());
    EXPECT_TRUE(contains(e.what(), "[1]['k']")) << e.what();
  }
  EXPECT_FALSE(Value::is_shareable(obj.get()));
  EXPECT_FALSE(PyErr_Occurred());
}

TEST(Value, NotShareablePathThroughTuplesAndGlobals) {
  MainThreadState attached;
  ref obj = eval("('a', ('b', threading.Lock()))", "import threading");
  try {
    Value::capture(obj.get());
    FAIL() << "a lock was captured";
  } catch (const NotShareable& e) {
    EXPECT_EQ(e.path(), "[1][1]");
  }
  ref func = eval("f", "import threading\nlock = threading.Lock()\ndef f():\n    return lock\n");
  try {
    Value::capture(func.get());
    FAIL() << "a function holding a lock was captured";
  } catch (const NotShareable& e) {
    EXPECT_EQ(e.path(), ".__globals__['lock']");
  }
  EXPECT_FALSE(PyErr_Occurred());
}

// ---------------------------------------------------------------------------
// Values made in C++ alone.

TEST(Value, BuiltInCpp) {
  Value value = Value::dict({
      Value::from_str("n"),
      Value::from_int(-7),
      Value::from_str("x"),
      Value::from_double(0.5),
      Value::from_str("ok"),
      Value::from_bool(true),
      Value::from_str("raw"),
      Value::from_bytes(std::string("a\0b", 3)),
      Value::from_str("t"),
      Value::tuple({Value(), Value::list({Value::from_str("\xc3\xa9")})}),
  });
  EXPECT_THROW(Value::dict({Value::from_int(1)}), std::invalid_argument);
  MainThreadState attached;
  ref rebuilt = value.rebuild();
  ref expected =
      eval("{'n': -7, 'x': 0.5, 'ok': True, 'raw': b'a\\x00b', 't': (None, ['\\u00e9'])}");
  EXPECT_TRUE(py_equal(rebuilt.get(), expected.get())) << py_repr(rebuilt.get());
}

TEST(Value, Accessors) {
  Value big = capture_main("-2**100");
  EXPECT_EQ(big.kind(), Kind::BigInt);
  EXPECT_FALSE(big.as_string().empty());
  Value items = capture_main("(1, 'two', 3.0)");
  ASSERT_EQ(items.items().size(), 3u);
  EXPECT_EQ(items.items()[0].as_int(), 1);
  EXPECT_EQ(items.items()[1].as_string(), "two");
  EXPECT_EQ(items.items()[2].as_double(), 3.0);
  Value text = capture_main("'\\U0001F600'");
  EXPECT_EQ(text.as_string(), "\xf0\x9f\x98\x80");  // UTF-8
  EXPECT_TRUE(Value().is_none());
}

}  // namespace
}  // namespace subinterp_test
