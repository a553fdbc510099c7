// sys._current_frames() and sys._current_exceptions() in a C++ host that
// never imports the subinterp package: the runtime makes them safe in the
// main interpreter and in each interpreter it creates (subinterp/frames.hpp).
#include <atomic>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "python_env.hpp"
#include "subinterp/subinterp.hpp"

namespace subinterp_test {
namespace {

using subinterp::Interpreter;

// Busy Python code for another interpreter, for about `seconds`.
std::string busy_for(double seconds) {
  return "import time\n"
         "end = time.monotonic() + " +
         std::to_string(seconds) +
         "\n"
         "while time.monotonic() < end:\n"
         "    sum(i * i for i in range(100))\n";
}

constexpr const char* kIsProtected =
    "'calling interpreter' in sys._current_frames.__doc__ and "
    "'calling interpreter' in sys._current_exceptions.__doc__";

TEST(Frames, ProtectedInTheMainInterpreterOnceAnInterpreterIsCreated) {
  Interpreter interp = Interpreter::create();
  MainThreadState attached;
  EXPECT_TRUE(py_equal(eval(kIsProtected, "import sys").get(), Py_True));
}

TEST(Frames, ProtectedInCreatedInterpreters) {
  Interpreter interp = Interpreter::create();
  interp.exec(std::string("import sys\nassert ") + kIsProtected);
  interp.close();
}

TEST(Frames, MainListsItsThreadsWhileAnotherInterpreterRunsPython) {
  Interpreter interp = Interpreter::create();
  std::atomic<bool> done{false};
  std::thread runner([&] {
    interp.exec(busy_for(0.3));
    done = true;
  });
  while (!interp.is_running() && !done) std::this_thread::yield();
  {
    MainThreadState attached;
    subinterp::py::ref listed = eval("listed", R"(
import sys, threading
listed = set()
for _ in range(200):
    frames = sys._current_frames()
    sys._current_exceptions()
    assert frames[threading.get_ident()].f_code.co_name == '<module>'
    listed.update(frames)
listed = len(listed)
)");
    EXPECT_TRUE(py_equal(listed.get(), eval("1").get())) << py_repr(listed.get());
  }
  runner.join();
  EXPECT_TRUE(done);
}

TEST(Frames, ProtectingAgainKeepsTheFunctions) {
  Interpreter interp = Interpreter::create();
  MainThreadState attached;
  subinterp::py::ref ns = fresh_namespace();
  eval("0", "import sys\nbefore = sys._current_frames, sys._current_exceptions", ns.get());
  subinterp::protect_thread_listings();
  EXPECT_TRUE(
      py_equal(eval("(sys._current_frames, sys._current_exceptions) == before", "", ns.get()).get(),
               Py_True));
}

}  // namespace
}  // namespace subinterp_test
