// SUBINTERP_RETHROW_FORCED_UNWIND: the unwinding of a thread that ends with
// pthread_exit (as CPython ends threads at exit) goes through `catch (...)`
// clauses that use it, and a C++ exception does not. In the ASan+UBSan build
// this also checks that telling the two apart is not undefined behaviour.
#include <pthread.h>

#include <atomic>
#include <stdexcept>

#include <gtest/gtest.h>

#include "subinterp/error.hpp"

namespace subinterp_test {
namespace {

struct Seen {
  std::atomic<int> caught{0};
  std::atomic<int> swallowed{0};
  std::atomic<int> cleaned_up{0};
};

struct Cleanup {
  Seen* seen;
  ~Cleanup() { ++seen->cleaned_up; }
};

[[noreturn]] __attribute__((noinline)) void end_thread() { pthread_exit(nullptr); }

void* ended_thread(void* arg) {
  auto* seen = static_cast<Seen*>(arg);
  Cleanup outer{seen};
  try {
    Cleanup inner{seen};
    end_thread();
  } catch (...) {
    ++seen->caught;
    SUBINTERP_RETHROW_FORCED_UNWIND;
    ++seen->swallowed;
  }
  return nullptr;
}

TEST(ForcedUnwind, PassesThroughCatchAll) {
  Seen seen;
  pthread_t thread;
  ASSERT_EQ(pthread_create(&thread, nullptr, ended_thread, &seen), 0);
  ASSERT_EQ(pthread_join(thread, nullptr), 0);
  EXPECT_EQ(seen.caught, 1);
  EXPECT_EQ(seen.swallowed, 0);
  EXPECT_EQ(seen.cleaned_up, 2);  // the frames outside the catch unwound too
}

TEST(ForcedUnwind, CppExceptionsAreStillCaught) {
  int swallowed = 0;
  try {
    throw std::runtime_error("x");
  } catch (...) {
    SUBINTERP_RETHROW_FORCED_UNWIND;
    ++swallowed;
  }
  EXPECT_EQ(swallowed, 1);
}

}  // namespace
}  // namespace subinterp_test
