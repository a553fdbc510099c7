#include "subinterp/interpreter.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "function.hpp"
#include "internal.hpp"
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

#if PY_VERSION_HEX < 0x030D0000
// CPython 3.12 aborts the process (double free, or a freed pointer on the
// tuple free list at exit) when these modules are first imported in an
// isolated interpreter that is then ended, and in every later one after a
// refused import of _datetime / _decimal / _zoneinfo. Importing them in the
// main interpreter first avoids it. 3.13 is not affected.
//
// They are imported on the calling thread when it runs the main
// interpreter: `threading` (which asyncio imports) takes the thread that
// first imports it as its main thread, and finalization would then wait for
// the runtime thread.
std::atomic<bool> g_preloaded{false};

// CPython 3.12 also keeps the keyword tuples of Argument Clinic parsers of
// extension modules in process-wide statics, allocated by whichever
// interpreter first parses keywords there; one allocated by an isolated
// interpreter is freed with it and the main interpreter frees it again at
// exit. The warm-up makes the main interpreter the first user of the parsers
// that asyncio's event loop and hashlib use.
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

void preload_for_312() {
  static const char* const kModules[] = {"threading", "_datetime", "_decimal", "_zoneinfo",
                                         "_asyncio",  "hashlib",   "ssl"};
  for (const char* name : kModules) {
    PyObject* module = PyImport_ImportModule(name);
    if (module == nullptr) PyErr_Clear();  // not built here: nothing to protect
    Py_XDECREF(module);
  }
  PyObject* ns = PyDict_New();
  PyObject* builtins = ns != nullptr ? PyImport_ImportModule("builtins") : nullptr;
  if (builtins != nullptr && PyDict_SetItemString(ns, "__builtins__", builtins) == 0) {
    Py_XDECREF(PyRun_String(kWarmUp312, Py_file_input, ns, ns));
  }
  PyErr_Clear();  // best effort: a missing module leaves nothing to protect
  Py_XDECREF(builtins);
  Py_XDECREF(ns);
  g_preloaded.store(true);
}

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

void preload_on_caller() {
  if (g_preloaded.load()) return;
  PyThreadState* current = current_thread_state();
  if (current != nullptr && PyThreadState_GetInterpreter(current) == PyInterpreterState_Main()) {
    preload_for_312();
  }
}
#endif

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
// Python errors raised by it become ExecutionFailed.
template <class Body>
void run_in(const std::shared_ptr<InterpreterState>& state, Body&& body) {
  Attachment attached(state, /*run=*/true);
  std::optional<ExceptionSnapshot> failure;
  try {
    body();
  } catch (py::PythonError& e) {
    py::ref exc = e.take();
    failure = ExceptionSnapshot::capture(exc.get());
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

// Ends the interpreter on the runtime thread. Its state is closed and idle.
void end_interpreter(InterpreterState& s,
                     std::unordered_map<std::thread::id, PyThreadState*> others) {
  detail::run_on_runtime_thread([&](PyThreadState*) {
    std::lock_guard ending(detail::lifecycle_mutex());
    PyEval_RestoreThread(s.home_);
    // These belong to threads that attached another thread state after
    // them (see Attachment), so deleting them here leaves no thread's
    // PyGILState slot dangling.
    for (auto& [thread, tstate] : others) {
      PyThreadState_Clear(tstate);
      PyThreadState_Delete(tstate);
    }
    Py_EndInterpreter(s.home_);
  });
}

// Ends the interpreter. A running one is refused, or, with `grace`, given
// that long to finish its run first.
void close_state(const std::shared_ptr<InterpreterState>& state,
                 std::chrono::milliseconds grace = std::chrono::milliseconds(0),
                 bool by_pool = false) {
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
  std::unordered_map<std::thread::id, PyThreadState*> others;
  {
    DetachGuard detached;  // value rebuilds in progress need their GILs
    std::unique_lock lock(s.mu_);
    if (s.closed_) throw InterpreterNotFound(name_of(s.id_) + " has already been closed");
    if (s.running_ && grace.count() > 0) {
      s.idle_.wait_for(lock, grace, [&] { return !s.running_ || s.closed_; });
      if (s.closed_) throw InterpreterNotFound(name_of(s.id_) + " has already been closed");
    }
    if (s.running_) throw InterpreterError(name_of(s.id_) + " is running");
    s.closed_ = true;
    s.idle_.wait(lock, [&] { return s.attached_ == 0; });
    others.swap(s.tstates_);
  }
  // Still registered while it ends: objects finalized in it may look it up
  // (and find it closed).
  end_interpreter(s, std::move(others));
  detail::unregister_owned(s.id_);
  detail::queues_interpreter_closed(s.id_);
}

}  // namespace

namespace detail {

// Raises SystemExit in the threads that run code in `state` now. Python
// code notices it at its next bytecode boundary; a thread blocked in a C call
// only when that returns. Reports failures on stderr (used at shutdown).
void interrupt_runs(const std::shared_ptr<InterpreterState>& state) {
  std::vector<unsigned long> threads;
  {
    std::lock_guard lock(state->mu_);
    if (!state->running_ || state->closed_) return;
    for (auto& [thread, tstate] : state->tstates_) threads.push_back(tstate->thread_id);
  }
  try {
    Attachment attached(state, false);
    for (unsigned long id : threads) PyThreadState_SetAsyncExc(id, PyExc_SystemExit);
  } catch (std::exception& e) {
    std::fprintf(stderr, "subinterp: could not stop interpreter %lld: %s\n",
                 static_cast<long long>(state->id_), e.what());
  }
}

#if PY_VERSION_HEX < 0x030D0000
void preload_on_caller() { subinterp::preload_on_caller(); }
#endif

void close_pool_interpreter(const std::shared_ptr<InterpreterState>& state) {
  close_state(state, std::chrono::milliseconds(0), /*by_pool=*/true);
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

Value call_attached(const Value& callable, const Value& args, const Value& kwargs) {
  py::ref func = callable.rebuild();
  py::ref positional = args.rebuild();
  py::ref keywords = kwargs.is_none() ? py::ref() : kwargs.rebuild();
  py::ref out = call_in_main(func.get(), positional.get(), keywords.get());
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

void close_released(const std::shared_ptr<InterpreterState>& state,
                    std::chrono::milliseconds grace) {
  try {
    close_state(state, grace);
  } catch (InterpreterNotFound&) {
    // closed explicitly meanwhile
  } catch (std::exception& e) {
    // Running at exit or when its last reference went: nobody to raise to.
    std::fprintf(stderr, "subinterp: could not close interpreter %lld: %s\n",
                 static_cast<long long>(state->id_), e.what());
  }
}

}  // namespace detail

Interpreter Interpreter::create(const Config& config) {
  return Interpreter(detail::create_owned(config, std::thread::id()));
}

std::shared_ptr<InterpreterState> detail::create_owned(const Config& config,
                                                       std::thread::id worker) {
  std::shared_ptr<InterpreterState> state;
#if PY_VERSION_HEX < 0x030D0000
  preload_on_caller();
#endif
  detail::run_on_runtime_thread([&](PyThreadState* anchor) {
    // Lock order: the lifecycle mutex, then a GIL (as listings take them).
    std::lock_guard creating(detail::lifecycle_mutex());
    PyEval_RestoreThread(anchor);
#if PY_VERSION_HEX < 0x030D0000
    if (!g_preloaded.load()) preload_for_312();
#endif
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
    detail::register_owned(state);
    PyEval_SaveThread();
  });
  return state;
}

Interpreter Interpreter::main() { return Interpreter(detail::main_state()); }

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

bool Interpreter::is_running() const noexcept {
  std::lock_guard lock(state_->mu_);
  return state_->running_;
}

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
    PyObject* ns = main_namespace();
    py::check(PyEval_EvalCode(compiled.get(), ns, ns));
  });
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

void Interpreter::incref() {
  std::lock_guard lock(state_->mu_);
  ++state_->refs_;
}

void Interpreter::decref() {
  bool close_now = false;
  {
    std::lock_guard lock(state_->mu_);
    if (state_->refs_ == 0) return;
    if (--state_->refs_ > 0 || state_->closed_ || state_->home_ == nullptr) return;
    if (state_->worker_thread_ != std::thread::id()) return;  // its pool closes it
    if (state_->running_) {
      state_->close_when_released_ = true;
    } else {
      close_now = true;
    }
  }
  if (close_now) detail::close_released(state_);
}

std::int64_t current_interpreter_id() { return PyInterpreterState_GetID(PyInterpreterState_Get()); }

Whence whence_of(std::int64_t id) {
  if (detail::find_owned(id)) return Whence::Subinterp;
  if (detail::main_state()->id_ == id) return Whence::Runtime;
  return Whence::CApi;
}

std::vector<std::pair<std::int64_t, Whence>> list_interpreters() {
  std::vector<std::pair<std::int64_t, Whence>> result;
  for_each_interpreter([&](std::int64_t id) { result.emplace_back(id, whence_of(id)); });
  return result;
}

void shutdown() {
  // Calls blocked in queues and channels (say, a daemon thread's worker
  // waiting for its next task) return with an error, so that their
  // interpreters stop running and can be ended.
  detail::g_waits_refused.store(true);
  detail::queues_refuse_waits();
  detail::channels_refuse_waits();
  // Pools stop taking tasks, cancel the queued ones, and their workers end
  // their interpreters (running tasks get SystemExit, as below).
  detail::pools_shutdown();
  // Other runs (a daemon thread's endless loop) are asked to stop with
  // SystemExit and get a moment to end: an interpreter left running would
  // make Python's own finalization abort the process.
  for (auto& state : detail::all_owned()) {
    detail::interrupt_runs(state);
    detail::close_released(state, std::chrono::milliseconds(3000));
  }
  detail::shutdown_runtime();
}

const char* version() noexcept { return "0.1.0"; }

}  // namespace subinterp
