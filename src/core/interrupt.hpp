// Ctrl-C while the main thread runs code in a sub-interpreter (internal;
// see interrupt.cpp).
#pragma once

#include <memory>

#include "runtime.hpp"

namespace subinterp::detail {

// Watches one run of the main thread in `state`: a SIGINT meanwhile raises
// KeyboardInterrupt in the running code. Construct before attaching the
// interpreter, call end() after detaching it. Does nothing on other threads.
class MainRunWatch {
 public:
  explicit MainRunWatch(const std::shared_ptr<InterpreterState>& state);
  ~MainRunWatch();
  MainRunWatch(const MainRunWatch&) = delete;
  MainRunWatch& operator=(const MainRunWatch&) = delete;

  void end();
  // After end(): whether KeyboardInterrupt was raised in the run.
  bool injected() const noexcept { return injected_; }
  // Drops a KeyboardInterrupt that came after the run's code returned.
  static void clear_pending(const std::shared_ptr<InterpreterState>& state);
  // With the caller's interpreter attached again: raises what the main
  // interpreter's SIGINT handler raises (KeyboardInterrupt) as
  // py::PythonError.
  [[noreturn]] static void raise_keyboard_interrupt();

 private:
  bool active_ = false;
  bool injected_ = false;
  // The watched run this one is nested in (main thread only).
  std::shared_ptr<InterpreterState> outer_;
  bool outer_injected_ = false;
};

}  // namespace subinterp::detail
