// Interpreters from C++: lifecycle, running code, errors as C++ types, and
// use from many threads (tests/cpp/python_env.hpp sets up Python).
#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "python_env.hpp"
#include "subinterp/subinterp.hpp"

namespace subinterp_test {
namespace {

using subinterp::ExecutionFailed;
using subinterp::Interpreter;
using subinterp::InterpreterError;
using subinterp::InterpreterNotFound;
using subinterp::Value;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The snapshot of the exception that running `source` raises.
subinterp::ExceptionSnapshot failure_of(Interpreter& interp, const std::string& source) {
  try {
    interp.exec(source);
  } catch (const ExecutionFailed& e) {
    return e.snapshot();
  }
  ADD_FAILURE() << "no exception from: " << source;
  return {};
}

// x + y: a lambda defined outside any module travels by value.
Value add_function() { return capture_main("lambda x, y: x + y"); }

Value int_args(std::int64_t a, std::int64_t b) {
  return Value::tuple({Value::from_int(a), Value::from_int(b)});
}

TEST(Interpreter, CreateAndClose) {
  Interpreter interp = Interpreter::create();
  EXPECT_FALSE(interp.is_main());
  EXPECT_FALSE(interp.is_closed());
  EXPECT_FALSE(interp.is_running());
  EXPECT_EQ(interp.whence(), subinterp::Whence::Subinterp);
  EXPECT_NE(interp.id(), Interpreter::main().id());
  std::vector<std::int64_t> ids = Interpreter::owned_ids();
  EXPECT_NE(std::find(ids.begin(), ids.end(), interp.id()), ids.end());
  EXPECT_EQ(Interpreter::get(interp.id()), interp);

  interp.close();
  EXPECT_TRUE(interp.is_closed());
  ids = Interpreter::owned_ids();
  EXPECT_EQ(std::find(ids.begin(), ids.end(), interp.id()), ids.end());
}

TEST(Interpreter, ExecRunsSourceInMain) {
  Interpreter interp = Interpreter::create();
  interp.exec("x = 6 * 7");
  interp.exec("assert x == 42, x\nassert __name__ == '__main__'");
  // Each interpreter has its own __main__.
  Interpreter other = Interpreter::create();
  subinterp::ExceptionSnapshot snap = failure_of(other, "x");
  EXPECT_EQ(snap.type_name, "NameError");
  other.close();
  interp.close();
}

TEST(Interpreter, ExecOfCodeValue) {
  Value code = capture_main("compile('y = 5', '<test>', 'exec')");
  ASSERT_EQ(code.kind(), Value::Kind::Code);
  Interpreter interp = Interpreter::create();
  interp.exec(code);
  interp.exec("assert y == 5");
  EXPECT_THROW(interp.exec(Value::from_int(1)), InterpreterError);
  interp.close();
}

TEST(Interpreter, UncaughtExceptionBecomesExecutionFailed) {
  Interpreter interp = Interpreter::create();
  subinterp::ExceptionSnapshot snap = failure_of(interp,
                                                 "def fail():\n"
                                                 "    raise ValueError('boom')\n"
                                                 "fail()\n");
  EXPECT_EQ(snap.type_name, "ValueError");
  EXPECT_EQ(snap.type_qualname, "ValueError");
  EXPECT_EQ(snap.type_module, "builtins");
  EXPECT_EQ(snap.msg, "boom");
  EXPECT_EQ(snap.formatted, "ValueError: boom\n");
  EXPECT_TRUE(contains(snap.errdisplay, "Traceback (most recent call last)")) << snap.errdisplay;
  EXPECT_TRUE(contains(snap.errdisplay, "line 2, in fail")) << snap.errdisplay;
  EXPECT_TRUE(contains(snap.errdisplay, "ValueError: boom")) << snap.errdisplay;
  EXPECT_EQ(snap.cause, nullptr);
  EXPECT_EQ(snap.context, nullptr);
  EXPECT_TRUE(snap.pickled.has_value());

  // what() names the type and the message.
  try {
    interp.exec("raise KeyError('k')");
    FAIL() << "no exception";
  } catch (const ExecutionFailed& e) {
    EXPECT_TRUE(contains(e.what(), "KeyError")) << e.what();
  }
  // The interpreter is still usable.
  interp.exec("ok = True");
  interp.close();
}

TEST(Interpreter, ExceptionOfAClassDefinedInMain) {
  Interpreter interp = Interpreter::create();
  subinterp::ExceptionSnapshot snap = failure_of(interp,
                                                 "class Outer:\n"
                                                 "    class Oops(Exception):\n"
                                                 "        pass\n"
                                                 "raise Outer.Oops('inner')\n");
  EXPECT_EQ(snap.type_name, "Oops");
  EXPECT_EQ(snap.type_qualname, "Outer.Oops");
  EXPECT_EQ(snap.type_module, "__main__");
  EXPECT_EQ(snap.msg, "inner");
  interp.close();
}

TEST(Interpreter, CauseAndContextChains) {
  Interpreter interp = Interpreter::create();
  subinterp::ExceptionSnapshot snap =
      failure_of(interp, "raise KeyError('outer') from ValueError('inner')");
  EXPECT_EQ(snap.type_name, "KeyError");
  ASSERT_NE(snap.cause, nullptr);
  EXPECT_EQ(snap.cause->type_name, "ValueError");
  EXPECT_EQ(snap.cause->msg, "inner");
  EXPECT_TRUE(contains(snap.errdisplay, "direct cause")) << snap.errdisplay;
  EXPECT_TRUE(contains(snap.errdisplay, "ValueError: inner")) << snap.errdisplay;

  snap = failure_of(interp,
                    "try:\n"
                    "    1 / 0\n"
                    "except ZeroDivisionError:\n"
                    "    raise RuntimeError('while handling')\n");
  EXPECT_EQ(snap.type_name, "RuntimeError");
  EXPECT_EQ(snap.cause, nullptr);
  ASSERT_NE(snap.context, nullptr);
  EXPECT_EQ(snap.context->type_name, "ZeroDivisionError");
  EXPECT_TRUE(contains(snap.errdisplay, "During handling")) << snap.errdisplay;
  interp.close();
}

TEST(Interpreter, SystemExitIsAnErrorNotAnExit) {
  Interpreter interp = Interpreter::create();
  subinterp::ExceptionSnapshot snap = failure_of(interp, "import sys\nsys.exit(3)");
  EXPECT_EQ(snap.type_name, "SystemExit");
  EXPECT_EQ(snap.msg, "3");
  snap = failure_of(interp, "raise SystemExit('bye')");
  EXPECT_EQ(snap.type_name, "SystemExit");
  EXPECT_EQ(snap.msg, "bye");
  // The process and the interpreter live on.
  interp.exec("alive = True");
  interp.close();
}

TEST(Interpreter, SyntaxError) {
  Interpreter interp = Interpreter::create();
  subinterp::ExceptionSnapshot snap = failure_of(interp, "def broken(:\n    pass\n");
  EXPECT_EQ(snap.type_name, "SyntaxError");
  EXPECT_TRUE(contains(snap.formatted, "SyntaxError")) << snap.formatted;
  interp.close();
}

TEST(Interpreter, CloseWhileRunningIsRefused) {
  // The run waits for a flag in shared memory, so it is certainly still
  // running when close() is tried, however slowly this machine runs.
  std::shared_ptr<subinterp::SharedMemory> flag = subinterp::SharedMemory::allocate(1);
  Value flag_value;
  {
    MainThreadState attached;
    subinterp::py::ref buffer = subinterp::make_shared_buffer(flag, 0, 1);
    flag_value = Value::capture(buffer.get());
  }
  Interpreter interp = Interpreter::create();
  interp.set_main_attrs(Value::dict({Value::from_str("flag"), flag_value}));
  std::thread runner([&] {
    try {
      interp.exec(
          "import time\n"
          "view = memoryview(flag)\n"
          "while view[0] == 0:\n"
          "    time.sleep(0.001)\n");
    } catch (const std::exception& e) {
      ADD_FAILURE() << "the run failed: " << e.what();
    }
  });
  while (!interp.is_running()) std::this_thread::yield();
  try {
    interp.close();
    ADD_FAILURE() << "close() of a running interpreter succeeded";
  } catch (const InterpreterNotFound& e) {
    ADD_FAILURE() << "wrong error: " << e.what();
  } catch (const InterpreterError& e) {
    EXPECT_TRUE(contains(e.what(), "running")) << e.what();
  }
  EXPECT_FALSE(interp.is_closed());
  std::atomic_ref<char>(flag->data()[0]).store(1);
  runner.join();
  EXPECT_FALSE(interp.is_running());
  interp.close();
  EXPECT_TRUE(interp.is_closed());
}

TEST(Interpreter, ClosedInterpreterIsNotFound) {
  Interpreter interp = Interpreter::create();
  std::int64_t id = interp.id();
  interp.close();
  EXPECT_THROW(interp.exec("pass"), InterpreterNotFound);
  EXPECT_THROW(interp.call(add_function(), int_args(1, 2), Value()), InterpreterNotFound);
  EXPECT_THROW(interp.set_main_attrs(Value::dict({})), InterpreterNotFound);
  EXPECT_THROW(interp.close(), InterpreterNotFound);
  EXPECT_THROW(Interpreter::get(id), InterpreterNotFound);
}

TEST(Interpreter, GetOfUnknownIdIsNotFound) {
  EXPECT_THROW(Interpreter::get(1'000'000), InterpreterNotFound);
  EXPECT_THROW(Interpreter::get(-5), InterpreterNotFound);
}

TEST(Interpreter, MainInterpreter) {
  Interpreter main = Interpreter::main();
  EXPECT_TRUE(main.is_main());
  EXPECT_EQ(main.whence(), subinterp::Whence::Runtime);
  EXPECT_EQ(Interpreter::get(main.id()), main);
  try {
    main.close();
    FAIL() << "the main interpreter was closed";
  } catch (const InterpreterNotFound& e) {
    FAIL() << "wrong error: " << e.what();
  } catch (const InterpreterError& e) {
    EXPECT_TRUE(contains(e.what(), "main")) << e.what();
  }
  EXPECT_FALSE(main.is_closed());
  // The main interpreter runs code too (here from a thread with no thread
  // state attached).
  main.exec("import sys\nmain_marker = 1");
  EXPECT_EQ(main.call(add_function(), int_args(20, 22), Value()).as_int(), 42);
}

TEST(Interpreter, CallByReferenceFunction) {
  // json.dumps is a Python function of an importable module: it travels as
  // the module's name and its qualified name, and is imported in the target.
  Value dumps = capture_main("json.dumps", "import json");
  ASSERT_EQ(dumps.kind(), Value::Kind::Function);
  Interpreter interp = Interpreter::create();
  Value result = interp.call(
      dumps, Value::tuple({Value::list({Value::from_int(1), Value::from_str("a"), Value()})}),
      Value::dict({Value::from_str("separators"),
                   Value::tuple({Value::from_str(","), Value::from_str(":")})}));
  ASSERT_EQ(result.kind(), Value::Kind::Str);
  EXPECT_EQ(result.as_string(), "[1,\"a\",null]");
  interp.exec("import sys\nassert 'json' in sys.modules");
  interp.close();
}

TEST(Interpreter, CallFunctionOfItsOwnMainByName) {
  // function_ref names a function where it is rebuilt: each interpreter's
  // own __main__.scale, with its own globals.
  Interpreter a = Interpreter::create();
  Interpreter b = Interpreter::create();
  a.exec("factor = 2\ndef scale(x):\n    return x * factor\n");
  b.exec("factor = 3\ndef scale(x):\n    return x * factor\n");
  Value scale = Value::function_ref("__main__", "scale");
  Value args = Value::tuple({Value::from_int(7)});
  EXPECT_EQ(a.call(scale, args, Value()).as_int(), 14);
  EXPECT_EQ(b.call(scale, args, Value()).as_int(), 21);
  // A name that is not there is an AttributeError in the target.
  try {
    a.call(Value::function_ref("__main__", "missing"), args, Value());
    ADD_FAILURE() << "expected ExecutionFailed";
  } catch (const subinterp::ExecutionFailed& e) {
    EXPECT_EQ(e.snapshot().type_name, "AttributeError");
  }
  a.close();
  b.close();
}

TEST(Interpreter, RunGivesTheCApiInsideTheInterpreter) {
  Interpreter interp = Interpreter::create();
  interp.exec("numbers = [1, 2, 3]");
  Value total;
  interp.run([&] {
    // The C API, with this interpreter's thread state attached.
    PyObject* main_dict = PyModule_GetDict(PyImport_AddModule("__main__"));
    PyObject* numbers = PyDict_GetItemString(main_dict, "numbers");  // borrowed
    ASSERT_NE(numbers, nullptr);
    subinterp::py::ref sum = subinterp::py::check(
        PyObject_CallOneArg(PyDict_GetItemString(PyEval_GetBuiltins(), "sum"), numbers));
    total = Value::capture(sum.get());
  });
  EXPECT_EQ(total.as_int(), 6);
  // A Python error left by the function arrives as ExecutionFailed.
  try {
    interp.run([] {
      PyObject* main_dict = PyModule_GetDict(PyImport_AddModule("__main__"));
      subinterp::py::check(PyRun_String("1/0", Py_eval_input, main_dict, main_dict));
    });
    ADD_FAILURE() << "expected ExecutionFailed";
  } catch (const subinterp::ExecutionFailed& e) {
    EXPECT_EQ(e.snapshot().type_name, "ZeroDivisionError");
  }
  interp.close();
}

TEST(Interpreter, CallBuiltinFunction) {
  // operator.add is a builtin (C) function: it travels by reference too.
  Value add = capture_main("operator.add", "import operator");
  Interpreter interp = Interpreter::create();
  Value result = interp.call(add, int_args(2, 3), Value());
  ASSERT_EQ(result.kind(), Value::Kind::Int);
  EXPECT_EQ(result.as_int(), 5);
  // Other kinds of arguments; the result comes back as a Value.
  result = interp.call(add, Value::tuple({Value::from_str("ab"), Value::from_str("cd")}), Value());
  EXPECT_EQ(result.as_string(), "abcd");
  result = interp.call(
      add, Value::tuple({Value::list({Value::from_int(1)}), Value::list({Value::from_bool(true)})}),
      Value());
  ASSERT_EQ(result.kind(), Value::Kind::List);
  ASSERT_EQ(result.items().size(), 2u);
  EXPECT_EQ(result.items()[0].as_int(), 1);
  EXPECT_TRUE(result.items()[1].as_bool());
  interp.close();
}

TEST(Interpreter, CallByValueFunction) {
  Value add = add_function();
  ASSERT_EQ(add.kind(), Value::Kind::Function);
  Interpreter interp = Interpreter::create();
  EXPECT_EQ(interp.call(add, int_args(40, 2), Value()).as_int(), 42);
  interp.close();
}

TEST(Interpreter, CallWithKeywordArguments) {
  // int is a type: it travels pickled (by reference to builtins.int).
  Value int_type = capture_main("int");
  Interpreter interp = Interpreter::create();
  Value result = interp.call(int_type, Value::tuple({Value::from_str("ff")}),
                             Value::dict({Value::from_str("base"), Value::from_int(16)}));
  EXPECT_EQ(result.as_int(), 255);
  interp.close();
}

TEST(Interpreter, CallRaisingBecomesExecutionFailed) {
  Interpreter interp = Interpreter::create();
  try {
    interp.call(add_function(), Value::tuple({Value::from_int(1), Value::from_str("x")}), Value());
    FAIL() << "no exception";
  } catch (const ExecutionFailed& e) {
    EXPECT_EQ(e.snapshot().type_name, "TypeError");
  }
  interp.close();
}

TEST(Interpreter, CallResultThatCannotTravel) {
  Value lock_factory = capture_main("threading.Lock", "import threading");
  Interpreter interp = Interpreter::create();
  try {
    interp.call(lock_factory, Value::tuple({}), Value());
    FAIL() << "a lock crossed interpreters";
  } catch (const subinterp::NotShareable& e) {
    EXPECT_EQ(e.path(), "result");
    EXPECT_TRUE(contains(e.type_name(), "lock")) << e.type_name();
  }
  interp.exec("still_usable = True");
  interp.close();
}

TEST(Interpreter, SetMainAttrs) {
  Interpreter interp = Interpreter::create();
  interp.set_main_attrs(Value::dict({Value::from_str("n"), Value::from_int(7),
                                     Value::from_str("name"), Value::from_str("seven")}));
  interp.exec("assert n == 7 and name == 'seven', (n, name)");
  EXPECT_THROW(interp.set_main_attrs(Value::from_int(1)), InterpreterError);
  interp.close();
}

TEST(Interpreter, LegacyConfigSharesTheMainGil) {
  subinterp::Config config;
  config.isolated = false;
  Interpreter interp = Interpreter::create(config);
  interp.exec("import sys\nassert sys.version_info >= (3, 12)");
  EXPECT_EQ(interp.call(add_function(), int_args(1, 1), Value()).as_int(), 2);
  interp.close();
}

// Interpreters left open are ended by subinterp::shutdown() in TearDown.
TEST(Interpreter, LeftOpenIsEndedAtShutdown) {
  Interpreter interp = Interpreter::create();
  interp.exec("import json\nleft_open = True");
  EXPECT_FALSE(interp.is_closed());
}

// 8 threads, each with its own interpreter, run at the same time.
TEST(InterpreterThreads, OwnInterpreterPerThread) {
  constexpr int kThreads = 8;
  Value add = add_function();
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        Interpreter interp = Interpreter::create();
        interp.set_main_attrs(Value::dict({Value::from_str("t"), Value::from_int(t)}));
        interp.exec("total = sum(range(t * 1000))");
        for (int i = 0; i < 50; ++i) {
          std::int64_t got = interp.call(add, int_args(t, i), Value()).as_int();
          if (got != t + i) {
            errors[t] = "wrong result " + std::to_string(got);
            break;
          }
        }
        interp.exec("assert total == sum(range(t * 1000))");
        interp.close();
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
}

// 8 threads call into one interpreter. A call that finds it running is
// refused with InterpreterError; every call that runs returns its own result.
TEST(InterpreterThreads, ThreadsTakeTurnsOnOneInterpreter) {
  constexpr int kThreads = 8;
  constexpr int kCalls = 100;
  Value add = add_function();
  Interpreter interp = Interpreter::create();
  std::atomic<int> succeeded{0};
  std::atomic<int> refused{0};
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        try {
          std::int64_t got = interp.call(add, int_args(t * 1000, i), Value()).as_int();
          if (got != t * 1000 + i) {
            errors[t] = "wrong result " + std::to_string(got);
            return;
          }
          ++succeeded;
        } catch (const InterpreterNotFound& e) {
          errors[t] = e.what();
          return;
        } catch (const InterpreterError& e) {
          if (!contains(e.what(), "already running")) {
            errors[t] = e.what();
            return;
          }
          ++refused;
        } catch (const std::exception& e) {
          errors[t] = e.what();
          return;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
  EXPECT_EQ(succeeded.load() + refused.load(), kThreads * kCalls);
  RecordProperty("refused", refused.load());
  // Idle again: the next call runs.
  EXPECT_FALSE(interp.is_running());
  EXPECT_EQ(interp.call(add, int_args(4, 5), Value()).as_int(), 9);
  interp.close();
}

// Several threads, each holding a main-interpreter thread state (as threads
// of an application that embeds Python do), call into one subinterpreter.
TEST(InterpreterThreads, CallsFromThreadsWithAttachedThreadStates) {
  constexpr int kThreads = 4;
  Value add = add_function();
  Interpreter interp = Interpreter::create();
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        MainThreadState attached;
        for (int i = 0; i < 50; ++i) {
          try {
            if (interp.call(add, int_args(t, i), Value()).as_int() != t + i) {
              errors[t] = "wrong result";
              return;
            }
          } catch (const InterpreterNotFound&) {
            throw;
          } catch (const InterpreterError& e) {
            if (!contains(e.what(), "already running")) throw;
          }
        }
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
  interp.close();
}

// CPython 3.12 requires an interpreter to be ended by the thread that made
// it; the runtime does both on its own thread, so any thread may close.
TEST(InterpreterThreads, CreateOnOneThreadCloseOnAnother) {
  std::optional<Interpreter> made;
  std::thread([&] {
    made = Interpreter::create();
    made->exec("import json\ncreated_here = True");
  }).join();
  std::thread([&] { made->exec("assert created_here"); }).join();
  std::thread([&] { made->close(); }).join();
  EXPECT_TRUE(made->is_closed());
}

// 50 interpreters made, used and closed from 8 threads at once.
TEST(InterpreterThreads, CreateAndCloseFromManyThreads) {
  constexpr int kThreads = 8;
  constexpr int kTotal = 50;
  std::atomic<int> next{0};
  std::atomic<int> done{0};
  std::vector<std::string> errors(kThreads);
  std::vector<std::vector<std::int64_t>> made(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        while (next.fetch_add(1) < kTotal) {
          Interpreter interp = Interpreter::create();
          made[t].push_back(interp.id());
          interp.exec("import sys\nvalue = sum(range(100))");
          interp.exec("assert value == 4950");
          interp.close();
          if (!interp.is_closed()) throw std::runtime_error("not closed");
          ++done;
        }
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
  EXPECT_EQ(done.load(), kTotal);
  // None of them is left, and no id was given twice.
  std::vector<std::int64_t> ids;
  for (auto& list : made) ids.insert(ids.end(), list.begin(), list.end());
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end());
  for (std::int64_t id : Interpreter::owned_ids()) {
    EXPECT_FALSE(std::binary_search(ids.begin(), ids.end(), id)) << "left open: " << id;
  }
}

}  // namespace
}  // namespace subinterp_test
