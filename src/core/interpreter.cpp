#include "subinterp/interpreter.hpp"
#include "subinterp/subinterp.hpp"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unistd.h>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "frames.hpp"
#include "function.hpp"
#include "internal.hpp"
#include "interrupt.hpp"
#include "runtime.hpp"
#include "wait.hpp"
#include "subinterp/subinterp.hpp"
#include "subinterp/thread_state.hpp"

namespace subinterp {
namespace {

using detail::Attachment;
using detail::InterpreterState;

std::string name_of(std::int64_t id) { return "interpreter " + std::to_string(id); }

// Calls fn(id) for every interpreter in the process, under the lifecycle
// lock so that none of ours is freed meanwhile.
template <class Fn>
void for_each_interpreter(Fn&& fn) {
  std::unique_lock listing(detail::lifecycle_mutex(), std::defer_lock);
  {
    DetachGuard detached;  // the runtime thread may hold the lock and want our GIL
    listing.lock();
  }
  for (PyInterpreterState* i = PyInterpreterState_Head(); i != nullptr;
       i = PyInterpreterState_Next(i)) {
    fn(PyInterpreterState_GetID(i));
  }
}

bool exists_in_process(std::int64_t id) {
  bool found = false;
  for_each_interpreter([&](std::int64_t other) { found = found || other == id; });
  return found;
}

// Some stdlib extension modules keep process-wide state that an isolated
// interpreter must not be the first to set up:
// - CPython 3.12 aborts the process (double free, or a freed pointer on the
//   tuple free list at exit) when _datetime, _decimal, _zoneinfo, _asyncio,
//   hashlib or ssl is first imported in an isolated interpreter that is then
//   ended, and in every later one after a refused import of _datetime /
//   _decimal / _zoneinfo.
// - CPython 3.13.0 aborts at exit (free(): invalid pointer) when an isolated
//   interpreter imports _datetime or _zoneinfo before the main interpreter
//   does, or while another one that did is open.
// Importing them in the main interpreter first avoids both. They are
// imported on the calling thread when it runs the main interpreter:
// `threading` (which asyncio imports) takes the thread that first imports it
// as its main thread, and finalization would then wait for the runtime
// thread. Otherwise (a first create() from a sub-interpreter or a host
// thread) they are imported on the runtime thread.
constexpr const char* kMainFirst[] = {
#if PY_VERSION_HEX < 0x030D0000
    "threading", "_datetime", "_decimal", "_zoneinfo", "_asyncio", "hashlib", "ssl",
#else
    "_datetime", "_zoneinfo",
#endif
};
std::atomic<bool> g_imported{false};

#if PY_VERSION_HEX < 0x030D0000
// CPython 3.12 also keeps the keyword tuples of Argument Clinic parsers of
// extension modules in process-wide statics, allocated by whichever
// interpreter first parses keywords there, and the main interpreter frees
// them at exit; arg_parsers.c makes them immortal before that, for every
// parser. The warm-up also makes the main interpreter the first user of the
// parsers and module state that asyncio's event loop and hashlib use. It runs on the runtime thread,
// where no event loop runs (the caller may be inside one).
constexpr const char* kWarmUp312 = R"(
import asyncio, hashlib
loop = asyncio.new_event_loop()
try:
    async def _warm():
        await asyncio.sleep(0)
    loop.run_until_complete(loop.create_task(_warm(), name='subinterp-warm-up'))
finally:
    loop.close()
hashlib.sha256(b'', usedforsecurity=True).hexdigest()
hashlib.new('sha256', b'').digest()
)";
std::atomic<bool> g_warmed{false};
#endif

// Throws InterpreterError with the pending Python error's text.
[[noreturn]] void throw_preload_failure(const char* what) {
  py::ref exc = py::ref::steal(PyErr_GetRaisedException());
  py::ref text = exc ? py::ref::steal(PyObject_Str(exc.get())) : py::ref();
  PyErr_Clear();
  std::string reason = text ? detail::utf8(text.get()) : "unknown error";
  throw InterpreterError(std::string("could not prepare the main interpreter for "
                                     "sub-interpreters (") +
                         what + "): " + reason);
}

// With the main interpreter attached. A module this Python was built
// without leaves nothing to protect; any other failure is reported, and
// the next create() tries again.
void import_main_first() {
  if (g_imported.load()) return;
  for (const char* name : kMainFirst) {
    PyObject* module = PyImport_ImportModule(name);
    if (module == nullptr) {
      if (!PyErr_ExceptionMatches(PyExc_ModuleNotFoundError)) throw_preload_failure(name);
      PyErr_Clear();
    }
    Py_XDECREF(module);
  }
  g_imported.store(true);
}

#if PY_VERSION_HEX < 0x030D0000
void warm_up_312() {
  if (g_warmed.load()) return;
  py::ref ns = py::check(PyDict_New());
  py::ref builtins = py::check(PyImport_ImportModule("builtins"));
  py::check(PyDict_SetItemString(ns.get(), "__builtins__", builtins.get()));
  PyObject* out = PyRun_String(kWarmUp312, Py_file_input, ns.get(), ns.get());
  if (out == nullptr) {
    if (!PyErr_ExceptionMatches(PyExc_ModuleNotFoundError)) throw_preload_failure("warm-up");
    PyErr_Clear();  // no ssl/hashlib here: nothing to protect
  }
  Py_XDECREF(out);
  g_warmed.store(true);
}
#endif

// On the runtime thread, with the anchor (main interpreter) attached.
void prepare_main_on_runtime_thread() {
  try {
    import_main_first();
#if PY_VERSION_HEX < 0x030D0000
    warm_up_312();
#endif
  } catch (py::PythonError& e) {
    e.restore();
    throw_preload_failure("import");
  }
}

#if PY_VERSION_HEX < 0x030D0000
// CPython 3.12's _zoneinfo loads in an isolated interpreter, then fails in
// its init (AttributeError: it needs the C API of _datetime, which is
// refused there), and zoneinfo falls back to its pure-Python version only on
// ImportError: `import zoneinfo` fails. Marked missing (None in
// sys.modules), _zoneinfo raises ImportError and the fallback loads, as it
// does for datetime and decimal. Call with the new interpreter attached.
void hide_zoneinfo_for_312() {
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
  if (PyDict_SetItemString(modules, "_zoneinfo", Py_None) < 0) PyErr_Clear();  // best effort
}
#endif

void preload_on_caller() {
  if (g_imported.load()) return;
  PyThreadState* current = current_thread_state();
  if (current == nullptr || PyThreadState_GetInterpreter(current) != PyInterpreterState_Main()) {
    return;
  }
  try {
    import_main_first();
  } catch (py::PythonError& e) {
    e.restore();
    throw_preload_failure("import");
  }
}

// The isolated config of PEP 684 (own GIL and allocator, extensions must
// support multiple interpreters), or the legacy one sharing the main GIL.
PyInterpreterConfig make_config(const Config& config) {
  const int isolated = config.isolated ? 1 : 0;
  PyInterpreterConfig c{};
  c.allow_threads = 1;
  c.use_main_obmalloc = 1 - isolated;
  c.allow_fork = 1 - isolated;
  c.allow_exec = 1 - isolated;
  c.allow_daemon_threads = 1 - isolated;
  c.check_multi_interp_extensions = isolated;
  c.gil = isolated ? PyInterpreterConfig_OWN_GIL : PyInterpreterConfig_SHARED_GIL;
  return c;
}

// Runs `body` in the interpreter as a run (refused while another runs);
// Python errors raised by it become ExecutionFailed. On the main thread,
// Ctrl-C meanwhile raises KeyboardInterrupt in the code and then here.
template <class Body>
void run_in(const std::shared_ptr<InterpreterState>& state, Body&& body) {
  detail::MainRunWatch watch(state);
  std::optional<ExceptionSnapshot> failure;
  bool keyboard_interrupt = false;
  {
    Attachment attached(state, /*run=*/true);
    try {
      body();
    } catch (py::PythonError& e) {
      py::ref exc = e.take();
      keyboard_interrupt = PyErr_GivenExceptionMatches(exc.get(), PyExc_KeyboardInterrupt);
      failure = ExceptionSnapshot::capture(exc.get());
    }
  }
  watch.end();
  if (watch.injected()) {
    if (keyboard_interrupt) detail::MainRunWatch::raise_keyboard_interrupt();
    detail::MainRunWatch::clear_pending(state);
  }
  if (failure) throw ExecutionFailed(std::move(*failure));
}

PyObject* main_namespace() {
  PyObject* main = PyImport_AddModule("__main__");  // borrowed
  if (main == nullptr) py::throw_python_error();
  return PyModule_GetDict(main);
}

// Calls func(*args, **kwargs). There is no calling frame here, so the
// builtins that read one (eval, exec, globals, locals, vars, dir) are given
// the __main__ namespace, as if called from __main__ code.
py::ref call_in_main(PyObject* func, PyObject* args, PyObject* kwargs) {
  bool plain = !PyCFunction_Check(func) || (kwargs != nullptr && PyDict_GET_SIZE(kwargs) > 0) ||
               PyCFunction_GetSelf(func) != detail::cache().builtins;
  if (!plain) {
    py::ref name_obj = py::check(PyObject_GetAttrString(func, "__name__"));
    std::string name = detail::utf8(name_obj.get());
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    PyObject* ns = main_namespace();
    if ((name == "eval" || name == "exec") && nargs == 1) {
      return py::check(PyObject_CallFunctionObjArgs(func, PyTuple_GET_ITEM(args, 0), ns, nullptr));
    }
    if ((name == "globals" || name == "locals" || name == "vars") && nargs == 0) {
      return py::ref::borrow(ns);
    }
    if (name == "dir" && nargs == 0) {
      py::ref keys = py::check(PyDict_Keys(ns));
      py::check(PyList_Sort(keys.get()));
      return keys;
    }
  }
  return py::check(PyObject_Call(func, args, kwargs));
}

void exec_source(const std::string& source) {
  PyObject* ns = main_namespace();
  py::ref code = detail::compile_cached(source);
  py::check(PyEval_EvalCode(code.get(), ns, ns));
}

// Checks that `state` may be closed by this caller, marks it closed (no new
// runs or visits), waits for the short attachments in progress and starts
// its end on a thread of its own. A running interpreter is refused, or,
// with `running_deadline`, given until then to finish its run.
std::shared_ptr<detail::EndJob> begin_close(const std::shared_ptr<InterpreterState>& state,
                                            const detail::Deadline& running_deadline,
                                            bool by_pool) {
  InterpreterState& s = *state;
  if (s.home_ == nullptr) throw InterpreterError("the main interpreter cannot be closed");
  if (!by_pool && s.worker_thread_ != std::thread::id()) {
    throw InterpreterError(name_of(s.id_) +
                           " belongs to a worker pool: shut the pool down to close it");
  }
  PyThreadState* current = current_thread_state();
  if (current != nullptr && PyThreadState_GetInterpreter(current) == s.interp_) {
    throw InterpreterError("an interpreter cannot close itself");
  }
  detail::ThreadStates others;
  std::shared_ptr<detail::EndJob> job;
  {
    DetachGuard detached;  // value rebuilds in progress need their GILs
    std::unique_lock lock(s.mu_);
    if (s.closed_) throw InterpreterNotFound(name_of(s.id_) + " has already been closed");
    if (s.running_ && running_deadline) {
      s.idle_.wait_until(lock, *running_deadline, [&] { return !s.running_ || s.closed_; });
      if (s.closed_) throw InterpreterNotFound(name_of(s.id_) + " has already been closed");
    }
    if (s.running_) throw InterpreterError(name_of(s.id_) + " is running");
    s.closed_ = true;
    if (running_deadline) {
      // At exit: a thread attached here (a host's visit(), a pinned thread
      // state) that stays in C code past the grace period is left to the
      // end at finalization.
      if (!s.idle_.wait_until(lock, *running_deadline, [&] { return s.attached_ == 0; })) {
        s.closed_ = false;
        throw InterpreterError(name_of(s.id_) + " has a thread attached");
      }
    }
    s.idle_.wait(lock, [&] { return s.attached_ == 0; });
    others.swap(s.tstates_);
    job = detail::new_end_job();
    s.ending_ = job;
  }
  detail::start_end(state, job, std::move(others));
  return job;
}

// Ends the interpreter and waits for it. In the main thread Ctrl-C ends the
// wait (py::PythonError); the end goes on.
void close_state(const std::shared_ptr<InterpreterState>& state, bool by_pool = false) {
  std::shared_ptr<detail::EndJob> job = begin_close(state, std::nullopt, by_pool);
  switch (detail::wait_end(job)) {
    case detail::EndWait::Refused:
      throw InterpreterError(detail::end_error(*job));
    case detail::EndWait::Interrupted:
      py::throw_python_error();
    default:
      return;
  }
}

}  // namespace

namespace detail {

// Raises SystemExit in every thread of `state` (its own threads and those
// that run code in it now). Python code notices it at its next bytecode
// boundary; a thread blocked in a C call only when that returns. Reports
// failures on stderr (used at shutdown).
void interrupt_runs(const std::shared_ptr<InterpreterState>& state) {
  {
    std::lock_guard lock(state->mu_);
    if (state->closed_) return;
  }
  try {
    Attachment attached(state, false);
    PyThreadState* mine = current_thread_state();
    std::vector<unsigned long> threads;
    for (PyThreadState* t = PyInterpreterState_ThreadHead(state->interp_); t != nullptr;
         t = PyThreadState_Next(t)) {
      if (t != mine && t != state->home_) threads.push_back(t->thread_id);
    }
    for (unsigned long id : threads) PyThreadState_SetAsyncExc(id, PyExc_SystemExit);
  } catch (std::exception& e) {
    std::fprintf(stderr, "subinterp: could not stop interpreter %lld: %s\n",
                 static_cast<long long>(state->id_), e.what());
  }
}

void preload_on_caller() { subinterp::preload_on_caller(); }

void close_pool_interpreter(const std::shared_ptr<InterpreterState>& state) {
  close_state(state, /*by_pool=*/true);
}

void exec_attached(const std::string& source) { exec_source(source); }

namespace {

// Captures what a call returned; what cannot travel is named "result".
Value capture_result(PyObject* out) {
  try {
    return Value::capture(out);
  } catch (NotShareable& e) {
    e.prepend("result");
    throw;
  }
}

}  // namespace

namespace {

// Rebuilds a call's arguments in the target; a failure there (an object
// whose unpickling fails in this interpreter) is the value's fault, not the
// call's: NotShareable "<what> not shareable", caused by that failure, as in
// 3.14.
py::ref rebuild_part(const Value& v, const char* what) {
  try {
    return v.rebuild();
  } catch (py::PythonError& e) {
    if (is_interruption(e.exception())) throw;
    py::ref exc = e.take();
    // Said where the traceback shows it (the cause's display).
    py::ref note = py::ref::steal(PyObject_CallMethod(
        exc.get(), "add_note", "s",
        "(while the value was unpickled in the receiving interpreter)"));
    if (!note) PyErr_Clear();
    throw NotShareable::not_rebuilt(what, ExceptionSnapshot::capture(exc.get()));
  }
}

// A function is looked up (by name) or made (by value) there, and a
// failure is the call's (ExecutionFailed). Any other callable is an object
// that travels as the arguments do (3.14 sends the callable with them).
py::ref rebuild_callable(const Value& callable) {
  if (callable.kind() == Value::Kind::Function) return callable.rebuild();
  return rebuild_part(callable, "args");
}

}  // namespace

Value call_attached(const Value& callable, const Value& args, const Value& kwargs) {
  py::ref func = rebuild_callable(callable);
  py::ref positional = rebuild_part(args, "args");
  py::ref keywords = kwargs.is_none() ? py::ref() : rebuild_part(kwargs, "kwargs");
  py::ref out = call_in_main(func.get(), positional.get(), keywords.get());
  return capture_result(out.get());
}

Value call_attached_consuming(Value& callable, Value& args, Value& kwargs) {
  py::ref func = rebuild_callable(callable);
  py::ref positional = rebuild_part(args, "args");
  py::ref keywords = kwargs.is_none() ? py::ref() : rebuild_part(kwargs, "kwargs");
  // The arguments exist as objects here now: their interpreter-neutral copy
  // goes before the call runs, so that a large argument is not held three
  // times (the caller's, this copy and the call's) while the call runs and
  // its result is captured.
  callable = args = kwargs = Value();
  py::ref out = call_in_main(func.get(), positional.get(), keywords.get());
  positional = keywords = func = py::ref();
  return capture_result(out.get());
}

Value call_each_attached(const Value& callable, const Value& items, bool unpack) {
  if (items.kind() != Value::Kind::List && items.kind() != Value::Kind::Tuple) {
    throw InterpreterError("a batch takes a list");
  }
  py::ref func = callable.rebuild();
  const auto& all = items.items();
  py::ref results = py::check(PyList_New(static_cast<Py_ssize_t>(all.size())));
  for (std::size_t i = 0; i < all.size(); ++i) {
    py::ref arg = all[i].rebuild();
    py::ref out;
    if (unpack) {
      if (!PyTuple_Check(arg.get())) {
        throw InterpreterError("a batch takes a list of argument tuples");
      }
      out = call_in_main(func.get(), arg.get(), nullptr);
    } else {
      out = py::check(PyObject_CallOneArg(func.get(), arg.get()));
    }
    PyList_SET_ITEM(results.get(), static_cast<Py_ssize_t>(i), out.release());
  }
  return capture_result(results.get());
}

void close_released(const std::shared_ptr<InterpreterState>& state) {
  try {
    close_state(state);
  } catch (InterpreterNotFound&) {
    // closed explicitly meanwhile
  } catch (py::PythonError& e) {
    // Ctrl-C ended the wait (the end goes on): nobody to raise to here, so
    // the interrupt is delivered again for the main thread's next check.
    if (e.matches(PyExc_KeyboardInterrupt)) {
      e.take();
      PyErr_SetInterruptEx(SIGINT);
    } else {
      e.restore();
      PyErr_WriteUnraisable(nullptr);
    }
  } catch (std::exception& e) {
    // When its last reference went: nobody to raise to.
    std::fprintf(stderr, "subinterp: could not close interpreter %lld: %s\n",
                 static_cast<long long>(state->id_), e.what());
  }
}

}  // namespace detail

Interpreter Interpreter::create(const Config& config) {
  detail::require_single_core();
  return Interpreter(detail::create_owned(config, std::thread::id()));
}

std::shared_ptr<InterpreterState> detail::create_owned(const Config& config,
                                                       std::thread::id worker) {
  if (detail::in_interpreter_end()) {
    // The runtime thread would wait for the lifecycle lock this thread holds.
    throw InterpreterError("cannot create an interpreter while another one is being ended");
  }
  std::shared_ptr<InterpreterState> state;
  preload_on_caller();
  detail::run_on_runtime_thread([&](PyThreadState* anchor) {
    // Lock order: the lifecycle mutex, then a GIL (as listings take them).
    std::lock_guard creating(detail::lifecycle_mutex());
    PyEval_RestoreThread(anchor);
    try {
      prepare_main_on_runtime_thread();
      // sys._current_frames() and sys._current_exceptions() list the
      // calling interpreter's threads only, here in the main one and below
      // in the new one: CPython's walk every interpreter and crash
      // (frames.cpp).
      detail::protect_thread_listings_or_fail();
    } catch (...) {
      SUBINTERP_RETHROW_FORCED_UNWIND;
      PyEval_SaveThread();
      throw;
    }
    PyInterpreterConfig c = make_config(config);
    PyThreadState* tstate = nullptr;
    PyStatus status = Py_NewInterpreterFromConfig(&tstate, &c);
    if (PyStatus_Exception(status) || tstate == nullptr) {
      // CPython restores the anchor as the current thread state.
      if (current_thread_state() == nullptr) PyEval_RestoreThread(anchor);
      PyErr_Clear();
      PyEval_SaveThread();
      throw InterpreterError(std::string("interpreter creation failed: ") +
                             (status.err_msg != nullptr ? status.err_msg : "unknown error"));
    }
    try {
      detail::protect_thread_listings_or_fail();
    } catch (...) {
      SUBINTERP_RETHROW_FORCED_UNWIND;
      Py_EndInterpreter(tstate);
      throw;
    }
    // CPython's own interpreter modules (_interpreters, _xxsubinterpreters)
    // must not end or run code in an interpreter of ours, which would end
    // it under our feet: its creating thread state stands as its running
    // "main" thread for them from now to its end, and they refuse.
    if (_PyInterpreterState_SetRunningMain(PyThreadState_GetInterpreter(tstate)) < 0) {
      PyErr_Clear();
    }
    // The new interpreter's thread state is attached (the anchor was
    // detached by CPython); detaching it leaves this thread with none.
#if PY_VERSION_HEX < 0x030D0000
    if (config.isolated) hide_zoneinfo_for_312();
#endif
    PyInterpreterState* interp = PyThreadState_GetInterpreter(tstate);
    state = std::make_shared<InterpreterState>(interp, PyInterpreterState_GetID(interp),
                                               Whence::Subinterp, tstate);
    // A pool's interpreter is the pool's before anyone can find it (and,
    // say, close it when a listing's last reference to it goes).
    state->worker_thread_ = worker;
    state->counted_ = config.close_when_unreferenced;
    detail::register_owned(state);
    PyEval_SaveThread();
    // Attaching a thread state binds it to the thread's PyGILState slot
    // (CPython 3.12 and 3.13), so the new interpreter's thread state now
    // holds the runtime thread's slot. The interpreter may be ended on
    // another thread, which deletes that thread state: give the slot back
    // to the anchor, or the next attachment here would write to freed
    // memory.
    PyEval_RestoreThread(anchor);
    PyEval_SaveThread();
  });
  return state;
}

Interpreter Interpreter::main() {
  detail::require_single_core();
  return Interpreter(detail::main_state());
}

Interpreter Interpreter::get(std::int64_t id) {
  if (auto state = detail::find_owned(id)) return Interpreter(state);
  auto main = detail::main_state();
  if (main->id_ == id) return Interpreter(main);
  if (current_thread_state() != nullptr && exists_in_process(id)) {
    throw InterpreterError(name_of(id) + " was not created by subinterp");
  }
  throw InterpreterNotFound(name_of(id) + " does not exist");
}

std::vector<std::int64_t> Interpreter::owned_ids() {
  std::vector<std::int64_t> ids;
  for (auto& state : detail::all_owned()) ids.push_back(state->id_);
  return ids;
}

std::int64_t Interpreter::id() const noexcept { return state_->id_; }
Whence Interpreter::whence() const noexcept { return state_->whence_; }
bool Interpreter::is_main() const noexcept { return state_->home_ == nullptr; }

namespace {
bool state_running(InterpreterState& s) noexcept {
  std::lock_guard lock(s.mu_);
  return s.running_;
}
}  // namespace

bool Interpreter::is_running() const noexcept { return state_running(*state_); }

bool Interpreter::is_closed() const noexcept {
  std::lock_guard lock(state_->mu_);
  return state_->closed_;
}

void Interpreter::exec(std::string_view source) {
  std::string text(source);
  run_in(state_, [&] { exec_source(text); });
}

void Interpreter::exec(const Value& code) {
  if (code.kind() == Value::Kind::Str) return exec(code.as_string());
  if (code.kind() != Value::Kind::Code) {
    throw InterpreterError("exec() takes source text or a code object");
  }
  run_in(state_, [&] {
    py::ref compiled = code.rebuild();
    // Running code that has free variables without a closure reads cells
    // that do not exist (CPython's exec() refuses it the same way).
    if (PyCode_GetNumFree(reinterpret_cast<PyCodeObject*>(compiled.get())) > 0) {
      PyErr_SetString(PyExc_TypeError,
                      "code object passed to exec() may not contain free variables");
      py::throw_python_error();
    }
    PyObject* ns = main_namespace();
    py::check(PyEval_EvalCode(compiled.get(), ns, ns));
  });
}

Value Interpreter::call(Value&& callable, Value&& args, Value&& kwargs) {
  Value result;
  run_in(state_, [&] { result = detail::call_attached_consuming(callable, args, kwargs); });
  return result;
}

Value Interpreter::call(const Value& callable, const Value& args, const Value& kwargs) {
  Value result;
  run_in(state_, [&] { result = detail::call_attached(callable, args, kwargs); });
  return result;
}

void Interpreter::set_main_attrs(const Value& ns) {
  if (ns.kind() != Value::Kind::Dict) throw InterpreterError("set_main_attrs() takes a dict");
  run_in(state_, [&] {
    PyObject* main_ns = main_namespace();
    const auto& items = ns.items();
    for (std::size_t i = 0; i + 1 < items.size(); i += 2) {
      py::ref key = items[i].rebuild();
      py::ref value = items[i + 1].rebuild();
      py::check(PyDict_SetItem(main_ns, key.get(), value.get()));
    }
  });
}

void Interpreter::run(const std::function<void()>& fn) { run_in(state_, fn); }

void Interpreter::visit(const std::function<void()>& fn) {
  Attachment attached(state_, /*run=*/false);
  fn();
}

void Interpreter::close() { close_state(state_); }

void Interpreter::pin_thread() { detail::pin_thread_state(state_); }

void Interpreter::unpin_thread() { detail::unpin_thread_state(state_); }

void Interpreter::incref() {
  std::lock_guard lock(state_->mu_);
  ++state_->refs_;
}

void Interpreter::decref() {
  {
    std::lock_guard lock(state_->mu_);
    if (state_->refs_ == 0) return;
    if (--state_->refs_ > 0) return;
  }
  detail::close_if_unreferenced(state_);
}

void detail::close_if_unreferenced(const std::shared_ptr<InterpreterState>& state) {
  bool close_now = false;
  {
    std::lock_guard lock(state->mu_);
    if (state->refs_ > 0 || state->holds_ > 0 || !state->counted_) return;
    if (state->closed_ || state->home_ == nullptr) return;
    if (state->worker_thread_ != std::thread::id()) return;  // its pool closes it
    if (state->running_) {
      state->close_when_released_ = true;
    } else {
      close_now = true;
    }
  }
  if (close_now) detail::close_released(state);
}

detail::InterpreterHold::InterpreterHold(std::int64_t id_, std::shared_ptr<InterpreterState> s)
    : id(id_), state(std::move(s)) {
  if (state) {
    std::lock_guard lock(state->mu_);
    ++state->holds_;
  }
}

detail::InterpreterHold::~InterpreterHold() {
  if (!state || python_unusable()) return;
  {
    std::lock_guard lock(state->mu_);
    if (--state->holds_ > 0) return;
  }
  close_if_unreferenced(state);
}

std::int64_t current_interpreter_id() { return PyInterpreterState_GetID(PyInterpreterState_Get()); }

Whence whence_of(std::int64_t id) {
  if (detail::find_owned(id)) return Whence::Subinterp;
  if (detail::main_state()->id_ == id) return Whence::Runtime;
  return Whence::CApi;
}

bool is_running(std::int64_t id) {
  if (auto state = detail::find_owned(id)) return state_running(*state);
  if (detail::main_state()->id_ == id) return true;
  // One made by someone else: CPython's own mark, where it runs code through
  // CPython's modules.
  std::unique_lock listing(detail::lifecycle_mutex(), std::defer_lock);
  {
    DetachGuard detached;
    listing.lock();
  }
  for (PyInterpreterState* i = PyInterpreterState_Head(); i != nullptr;
       i = PyInterpreterState_Next(i)) {
    if (PyInterpreterState_GetID(i) == id) return _PyInterpreterState_IsRunningMain(i) != 0;
  }
  throw InterpreterNotFound(name_of(id) + " does not exist");
}

std::vector<std::pair<std::int64_t, Whence>> list_interpreters() {
  std::vector<std::pair<std::int64_t, Whence>> result;
  for_each_interpreter([&](std::int64_t id) { result.emplace_back(id, whence_of(id)); });
  return result;
}

namespace {

// Runs `step` for each of `states`, each on a thread of its own, and waits
// until `deadline` for them: a step that needs an interpreter's GIL waits as
// long as C code holds it, and must not hold up the caller. Returns, for
// each state, whether its step finished in time; a late step finishes (or
// stays blocked) on its own thread.
std::vector<bool> on_own_threads(const std::vector<std::shared_ptr<InterpreterState>>& states,
                                 void (*step)(const std::shared_ptr<InterpreterState>&),
                                 std::chrono::steady_clock::time_point deadline) {
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<bool> done;
  };
  auto shared = std::make_shared<Shared>();
  shared->done.assign(states.size(), false);
  DetachGuard detached;  // the steps may need this thread's GIL
  for (std::size_t i = 0; i < states.size(); ++i) {
    try {
      std::thread([shared, state = states[i], step, i] {
        step(state);
        std::lock_guard lock(shared->mu);
        shared->done[i] = true;
        shared->cv.notify_all();
      }).detach();
    } catch (std::system_error&) {
      std::lock_guard lock(shared->mu);
      shared->done[i] = false;  // no thread to be had: counted as stuck
    }
  }
  std::unique_lock lock(shared->mu);
  shared->cv.wait_until(lock, deadline, [&] {
    for (bool d : shared->done) {
      if (!d) return false;
    }
    return true;
  });
  return shared->done;
}

// Takes the GIL of `state`'s interpreter once, and lets it go.
void touch_gil(const std::shared_ptr<InterpreterState>& state) {
  PyThreadState* t = PyThreadState_New(state->interp_);
  if (t == nullptr) return;
  PyEval_RestoreThread(t);
  PyThreadState_Clear(t);
  PyThreadState_DeleteCurrent();
}

}  // namespace

void shutdown() {
  // Once per process, whoever calls first: the package's exit hook, a host,
  // or both (one core, one runtime). A later or concurrent call returns at
  // once, as does a call after Python has finalized (a host that calls it
  // after Py_FinalizeEx(): the package's exit hook ran then, if the package
  // was imported, and otherwise CPython's finalization ended what was left).
  static std::atomic<bool> started{false};
  if (!Py_IsInitialized() || started.exchange(true)) return;
  detail::note_exit_thread();
  // Calls blocked in queues and channels (say, a daemon thread's worker
  // waiting for its next task) return with an error, so that their
  // interpreters stop running and can be ended.
  detail::g_waits_refused.store(true);
  detail::queues_refuse_waits();
  detail::channels_refuse_waits();
  // One grace period for everything: code that handles SystemExit gets
  // that long to finish.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  // Pools stop taking tasks, cancel the queued ones, and their workers end
  // their interpreters (running tasks get SystemExit, as below).
  detail::pools_shutdown(deadline);
  // Every other interpreter: SystemExit in all its threads (a daemon
  // thread's endless loop, the interpreter's own threads), then its end.
  std::vector<std::shared_ptr<InterpreterState>> open;
  for (auto& state : detail::all_owned()) {
    if (state->worker_thread_ == std::thread::id()) open.push_back(state);
  }
  on_own_threads(
      open, [](const std::shared_ptr<InterpreterState>& state) { detail::interrupt_runs(state); },
      deadline);
  std::vector<std::shared_ptr<detail::EndJob>> jobs;
  for (auto& state : open) {
    try {
      jobs.push_back(begin_close(state, deadline, false));
    } catch (std::exception&) {
      // closed meanwhile (waited for below), or still running at the
      // deadline (ended below)
    }
  }
  // Ends started elsewhere (by a close() on another thread, or by the drop
  // of a last reference, a daemon thread's say) must be over before Python
  // finalizes too, or their ender meets the finalization (CPython ends it
  // when it next takes a GIL, and end_leftovers() finds the interpreter
  // mid-end).
  for (auto& state : detail::all_owned()) {
    std::lock_guard lock(state->mu_);
    if (state->ending_) jobs.push_back(state->ending_);
  }
  for (auto& job : jobs) {
    if (detail::wait_end(job, deadline) == detail::EndWait::Interrupted) {
      PyErr_Clear();  // Ctrl-C at exit: stop waiting, end them now
      break;
    }
  }
  // What is left (a thread blocked in C code, a loop that catches
  // SystemExit, a pool task that never returns) is ended while Python
  // finalizes, when no other thread can run Python code any more: Python's
  // own finalization must never meet a running interpreter. Ending one takes its GIL: C code that holds a GIL for good (a huge
  // regex, sum() over a huge range) would hold up the exit as long. Such a
  // process ends here, without finalizing Python: output flushed, exit
  // status 1.
  // Only interpreters no close has started on: one being ended belongs to
  // its ender (finalization waits for it), and a probe must not meet it.
  std::vector<std::shared_ptr<InterpreterState>> left;
  for (auto& state : detail::all_owned()) {
    std::lock_guard lock(state->mu_);
    if (!state->closed_ && !state->ending_ && !state->in_end_) left.push_back(state);
  }
  std::vector<bool> free =
      on_own_threads(left, touch_gil, std::chrono::steady_clock::now() + std::chrono::seconds(1));
  for (std::size_t i = 0; i < left.size(); ++i) {
    if (free[i]) continue;
    std::fprintf(stderr,
                 "subinterp: interpreter %lld is stuck in C code that holds its GIL; the "
                 "process exits now, without finalizing Python\n",
                 static_cast<long long>(left[i]->id_));
    for (const char* name : {"stdout", "stderr"}) {
      if (PyObject* stream = PySys_GetObject(name)) {
        PyObject* r = PyObject_CallMethod(stream, "flush", nullptr);
        Py_XDECREF(r);
      }
    }
    PyErr_Clear();
    std::fflush(nullptr);
    _exit(1);
  }
  detail::end_at_finalization(detail::all_owned());
  detail::shutdown_runtime();
  subinterp_keep_parser_keywords();
}

const char* version() noexcept { return SUBINTERP_VERSION_STRING; }

}  // namespace subinterp
