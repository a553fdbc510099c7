// What subinterp.sandbox needs from C++: values as bytes between processes
// (dumps/loads, on the core's wire format), and lockdown(), which a sandbox
// worker process calls on itself before it runs scripts: a seccomp filter
// (libseccomp) and a Landlock ruleset (the kernel's, where it has one).
#include <Python.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#ifdef SUBINTERP_HAVE_SECCOMP
#include <seccomp.h>
#endif

#include "module.hpp"
#include "subinterp/wire.hpp"

namespace subinterp_ext {
namespace {

// dumps(obj) -> bytes: `obj` (data only) in the wire format.
PyObject* m_dumps(PyObject* module, PyObject* obj) {
  return entry(module, [&] {
    std::string data = si::wire::encode(si::Value::capture(obj));
    return PyBytes_FromStringAndSize(data.data(), static_cast<Py_ssize_t>(data.size()));
  });
}

// loads(bytes) -> obj. Malformed input raises ValueError.
PyObject* m_loads(PyObject* module, PyObject* arg) {
  Py_buffer view;
  if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return nullptr;
  PyObject* result = entry(module, [&]() -> PyObject* {
    si::Value v;
    try {
      v = si::wire::decode(
          std::string_view(static_cast<const char*>(view.buf), static_cast<std::size_t>(view.len)));
    } catch (const si::wire::WireError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
      return nullptr;
    }
    return v.rebuild().release();
  });
  PyBuffer_Release(&view);
  return result;
}

// main_wire(id, name) -> bytes: the variable `name` of interpreter `id`'s
// __main__, made into wire bytes there (data only: NotShareableError for
// anything else). The caller rebuilds nothing the other interpreter made:
// for a sandbox worker, whose main interpreter must never unpickle what a
// script returns.
PyObject* m_main_wire(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("main_wire", nargs, 2, 2)) return nullptr;
  return entry(module, [&] {
    si::Interpreter interp = si::Interpreter::get(id_arg(args[0]));
    if (!PyUnicode_Check(args[1])) {
      PyErr_SetString(PyExc_TypeError, "main_wire() name must be str");
      py::throw_python_error();
    }
    PyObject* main = PyImport_AddModule("__main__");  // borrowed
    if (main == nullptr) py::throw_python_error();
    si::Value getter = si::Value::function_ref("builtins", "getattr");
    si::Value call_args = si::Value::tuple({si::Value::capture(main), si::Value::capture(args[1])});
    si::Value value = interp.call(getter, call_args, si::Value());
    std::string data = si::wire::encode(value);
    return PyBytes_FromStringAndSize(data.data(), static_cast<Py_ssize_t>(data.size()));
  });
}

// -- lockdown -----------------------------------------------------------------

[[noreturn]] void os_error(const std::string& what) {
  int err = errno;
  PyErr_Format(PyExc_OSError, "%s: %s", what.c_str(), std::strerror(err));
  py::throw_python_error();
}

// Landlock (linux/landlock.h, defined here: Debian's headers stop at ABI 2).
constexpr long kLandlockCreateRuleset = 444, kLandlockAddRule = 445, kLandlockRestrictSelf = 446;
constexpr unsigned kLandlockVersion = 1U << 0;
constexpr int kRulePathBeneath = 1;
enum : std::uint64_t {
  kExecute = 1ULL << 0,
  kWriteFile = 1ULL << 1,
  kReadFile = 1ULL << 2,
  kReadDir = 1ULL << 3,
  kRemoveDir = 1ULL << 4,
  kRemoveFile = 1ULL << 5,
  kMakeChar = 1ULL << 6,
  kMakeDir = 1ULL << 7,
  kMakeReg = 1ULL << 8,
  kMakeSock = 1ULL << 9,
  kMakeFifo = 1ULL << 10,
  kMakeBlock = 1ULL << 11,
  kMakeSym = 1ULL << 12,
  kRefer = 1ULL << 13,     // ABI 2
  kTruncate = 1ULL << 14,  // ABI 3
};
constexpr std::uint64_t kScopeAbstractUnix = 1ULL << 0, kScopeSignal = 1ULL << 1;  // ABI 6

struct RulesetAttr {
  std::uint64_t handled_access_fs;
  std::uint64_t handled_access_net;  // ABI 4
  std::uint64_t scoped;              // ABI 6
};
struct __attribute__((packed)) PathBeneathAttr {
  std::uint64_t allowed_access;
  std::int32_t parent_fd;
};

int landlock_abi() {
  long abi = syscall(kLandlockCreateRuleset, nullptr, 0, kLandlockVersion);
  return abi < 0 ? 0 : static_cast<int>(abi);
}

std::vector<std::string> paths_of(PyObject* seq, const char* what) {
  std::vector<std::string> out;
  if (seq == nullptr || seq == Py_None) return out;
  py::ref fast = py::check(PySequence_Fast(seq, what));
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast.get()); ++i) {
    PyObject* bytes = nullptr;
    if (!PyUnicode_FSConverter(PySequence_Fast_GET_ITEM(fast.get(), i), &bytes)) {
      py::throw_python_error();
    }
    py::ref owned = py::ref::steal(bytes);
    out.emplace_back(PyBytes_AS_STRING(bytes), static_cast<std::size_t>(PyBytes_GET_SIZE(bytes)));
  }
  return out;
}

// Confines the file system: writes only beneath `write_roots`, and reads
// (when `read_roots` is not None) only beneath those and `write_roots`.
// Signals to processes outside the domain are refused too (ABI 6). Returns
// the ABI used (0: the kernel has no Landlock, nothing was done).
int apply_landlock(const std::vector<std::string>& write_roots,
                   const std::vector<std::string>& read_roots, bool confine_reads) {
  int abi = landlock_abi();
  if (abi <= 0) return 0;
  std::uint64_t write = kWriteFile | kRemoveDir | kRemoveFile | kMakeChar | kMakeDir | kMakeReg |
                        kMakeSock | kMakeFifo | kMakeBlock | kMakeSym;
  if (abi >= 2) write |= kRefer;
  if (abi >= 3) write |= kTruncate;
  std::uint64_t read = kExecute | kReadFile | kReadDir;
  RulesetAttr attr{};
  attr.handled_access_fs = write | (confine_reads ? read : 0);
  if (abi >= 6) attr.scoped = kScopeAbstractUnix | kScopeSignal;
  std::size_t size = abi >= 6 ? sizeof(RulesetAttr) : abi >= 4 ? 16 : 8;
  long ruleset = syscall(kLandlockCreateRuleset, &attr, size, 0);
  if (ruleset < 0) os_error("landlock_create_ruleset");
  int rfd = static_cast<int>(ruleset);
  auto add = [&](const std::string& path, std::uint64_t access) {
    int fd = open(path.c_str(), O_PATH | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return;  // nothing there to allow
      int err = errno;
      close(rfd);
      errno = err;
      os_error("landlock: opening " + path);
    }
    struct stat st;
    bool is_dir = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
    // A file takes only the rights that apply to files.
    std::uint64_t file_rights = kExecute | kReadFile | kWriteFile | (abi >= 3 ? std::uint64_t{kTruncate} : 0);
    PathBeneathAttr rule{access & attr.handled_access_fs & (is_dir ? ~0ULL : file_rights), fd};
    long rc = rule.allowed_access ? syscall(kLandlockAddRule, rfd, kRulePathBeneath, &rule, 0) : 0;
    int err = errno;
    close(fd);
    if (rc < 0) {
      close(rfd);
      errno = err;
      os_error("landlock_add_rule " + path);
    }
  };
  for (const auto& p : write_roots) add(p, write | read);
  for (const auto& p : read_roots) add(p, read);
  if (syscall(kLandlockRestrictSelf, rfd, 0) < 0) {
    int err = errno;
    close(rfd);
    errno = err;
    os_error("landlock_restrict_self");
  }
  close(rfd);
  return abi;
}

#ifdef SUBINTERP_HAVE_SECCOMP
// The seccomp filter: everything is allowed but what is listed, which fails
// with EPERM (ENOSYS for clone3, so that threads fall back to clone, whose
// flags the filter can see).
void apply_seccomp(bool subprocess, bool network, bool signals) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) {
    errno = ENOMEM;
    os_error("seccomp_init");
  }
  struct Release {
    scmp_filter_ctx ctx;
    ~Release() { seccomp_release(ctx); }
  } release{ctx};
  const std::uint32_t deny = SCMP_ACT_ERRNO(EPERM);
  // Every thread of the process, not only the caller.
  int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
  auto rule = [&](int nr, std::uint32_t action = SCMP_ACT_ERRNO(EPERM)) {
    if (rc == 0) rc = seccomp_rule_add(ctx, action, nr, 0);
  };
  // Never: tracing other processes, the kernel's and the system's state,
  // namespaces, changing users, io_uring (its operations bypass this filter).
  for (int nr : {SCMP_SYS(ptrace), SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev),
                 SCMP_SYS(pidfd_getfd), SCMP_SYS(kcmp), SCMP_SYS(mount), SCMP_SYS(umount2),
                 SCMP_SYS(pivot_root), SCMP_SYS(chroot), SCMP_SYS(unshare), SCMP_SYS(setns),
                 SCMP_SYS(bpf), SCMP_SYS(perf_event_open), SCMP_SYS(userfaultfd),
                 SCMP_SYS(keyctl), SCMP_SYS(add_key), SCMP_SYS(request_key),
                 SCMP_SYS(init_module), SCMP_SYS(finit_module), SCMP_SYS(delete_module),
                 SCMP_SYS(kexec_load), SCMP_SYS(kexec_file_load), SCMP_SYS(reboot),
                 SCMP_SYS(swapon), SCMP_SYS(swapoff), SCMP_SYS(syslog), SCMP_SYS(acct),
                 SCMP_SYS(settimeofday), SCMP_SYS(clock_settime), SCMP_SYS(clock_adjtime),
                 SCMP_SYS(adjtimex), SCMP_SYS(sethostname), SCMP_SYS(setdomainname),
                 SCMP_SYS(iopl), SCMP_SYS(ioperm), SCMP_SYS(io_uring_setup),
                 SCMP_SYS(io_uring_enter), SCMP_SYS(io_uring_register), SCMP_SYS(setuid),
                 SCMP_SYS(setgid), SCMP_SYS(setreuid), SCMP_SYS(setregid), SCMP_SYS(setresuid),
                 SCMP_SYS(setresgid), SCMP_SYS(setgroups), SCMP_SYS(setfsuid),
                 SCMP_SYS(setfsgid), SCMP_SYS(name_to_handle_at), SCMP_SYS(open_by_handle_at),
                 SCMP_SYS(fanotify_init), SCMP_SYS(lookup_dcookie), SCMP_SYS(quotactl),
                 SCMP_SYS(nfsservctl), SCMP_SYS(vhangup), SCMP_SYS(uselib),
                 SCMP_SYS(personality),
                 // File modes, owners and attributes: Landlock does not
                 // confine these, and a worker that keeps uid 0 owns the
                 // system's files.
                 SCMP_SYS(chmod), SCMP_SYS(fchmod), SCMP_SYS(fchmodat), SCMP_SYS(chown),
                 SCMP_SYS(fchown), SCMP_SYS(lchown), SCMP_SYS(fchownat), SCMP_SYS(setxattr),
                 SCMP_SYS(lsetxattr), SCMP_SYS(fsetxattr), SCMP_SYS(removexattr),
                 SCMP_SYS(lremovexattr), SCMP_SYS(fremovexattr)}) {
    rule(nr);
  }
  constexpr int kFchmodat2 = 452;  // newer than this libseccomp: by number
  rule(kFchmodat2);

  // Typing into a terminal.
  if (rc == 0) {
    rc = seccomp_rule_add(ctx, deny, SCMP_SYS(ioctl), 1,
                          SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffULL, TIOCSTI));
  }
  if (rc == 0) {
    rc = seccomp_rule_add(ctx, deny, SCMP_SYS(ioctl), 1,
                          SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffULL, TIOCLINUX));
  }
  if (!subprocess) {
    for (int nr : {SCMP_SYS(execve), SCMP_SYS(execveat), SCMP_SYS(fork), SCMP_SYS(vfork)}) rule(nr);
    rule(SCMP_SYS(clone3), SCMP_ACT_ERRNO(ENOSYS));
    if (rc == 0) {  // clone without CLONE_THREAD: a new process
      rc = seccomp_rule_add(ctx, deny, SCMP_SYS(clone), 1,
                            SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
    }
  }
  if (!network) {
    // New sockets; socketpair() stays (a connected pair inside the process,
    // as asyncio's event loop makes).
    rule(SCMP_SYS(socket));
  }
  if (!signals) {
    // Signals to this process only.
    auto pid = static_cast<scmp_datum_t>(getpid());
    for (int nr : {SCMP_SYS(kill), SCMP_SYS(tgkill), SCMP_SYS(rt_sigqueueinfo),
                   SCMP_SYS(rt_tgsigqueueinfo), SCMP_SYS(pidfd_send_signal)}) {
      if (rc == 0 && nr != SCMP_SYS(pidfd_send_signal)) {
        rc = seccomp_rule_add(ctx, deny, nr, 1, SCMP_A0(SCMP_CMP_NE, pid));
      }
    }
    rule(SCMP_SYS(pidfd_send_signal));
    rule(SCMP_SYS(pidfd_open));
    rule(SCMP_SYS(tkill));
  }
  if (rc < 0) {
    errno = -rc;
    os_error("seccomp_rule_add");
  }
  rc = seccomp_load(ctx);
  if (rc < 0) {
    errno = -rc;
    os_error("seccomp_load");
  }
}
#endif

// Drops every capability (effective, permitted, inheritable, and the
// bounding set), for a worker that keeps uid 0.
void drop_capabilities() {
  for (int cap = 0; cap <= 63; ++cap) {
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
      os_error("prctl(PR_CAPBSET_DROP)");
    }
  }
  struct {
    std::uint32_t version;
    int pid;
  } header{0x20080522, 0};  // _LINUX_CAPABILITY_VERSION_3
  struct {
    std::uint32_t effective, permitted, inheritable;
  } data[2] = {};
  if (syscall(SYS_capset, &header, data) != 0) os_error("capset");
}

// lockdown(*, write_roots, read_roots=None, subprocess=False, network=False,
//          signals=False, die_with_parent=False) -> dict
// For a sandbox worker process, on itself, once, for good (call it before
// the process has other threads: Landlock confines the calling thread and
// the threads it starts later; the seccomp filter covers every thread):
// SIGKILL when its parent dies (die_with_parent), no new privileges, no
// capabilities, the Landlock ruleset (when the kernel has Landlock), then the
// seccomp filter. Returns what was applied: {'landlock': ABI or 0,
// 'seccomp': bool}. Raises OSError when a step fails, RuntimeError when the
// module was built without libseccomp.
PyObject* m_lockdown(PyObject* module, PyObject* args, PyObject* kwargs) {
  static const char* kwlist[] = {"write_roots", "read_roots", "subprocess", "network",
                                 "signals",     "die_with_parent", nullptr};
  PyObject* write_roots = nullptr;
  PyObject* read_roots = Py_None;
  int subprocess = 0, network = 0, signals = 0, die_with_parent = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOpppp:lockdown", const_cast<char**>(kwlist),
                                   &write_roots, &read_roots, &subprocess, &network, &signals,
                                   &die_with_parent)) {
    return nullptr;
  }
  if (write_roots == nullptr) {
    PyErr_SetString(PyExc_TypeError, "lockdown() needs write_roots (a list of folders)");
    return nullptr;
  }
  return entry(module, [&]() -> PyObject* {
#ifndef SUBINTERP_HAVE_SECCOMP
    PyErr_SetString(PyExc_RuntimeError,
                    "subinterp was built without libseccomp (apt-get install libseccomp-dev)");
    py::throw_python_error();
#else
    std::vector<std::string> writes = paths_of(write_roots, "write_roots must be a sequence");
    std::vector<std::string> reads = paths_of(read_roots, "read_roots must be a sequence");
    if (die_with_parent && prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) {
      os_error("prctl(PR_SET_PDEATHSIG)");
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) os_error("prctl(PR_SET_NO_NEW_PRIVS)");
    drop_capabilities();
    int abi = apply_landlock(writes, reads, read_roots != Py_None);
    apply_seccomp(subprocess != 0, network != 0, signals != 0);
    py::ref abi_obj = py::check(PyLong_FromLong(abi));
    return py::check(Py_BuildValue("{sOsO}", "landlock", abi_obj.get(), "seccomp", Py_True))
        .release();
#endif
  });
}

// trim_memory(): gives the C allocator's free memory back to the system
// (malloc_trim): a worker that closed interpreters keeps its size otherwise.
PyObject* m_trim_memory(PyObject*, PyObject*) {
  Py_BEGIN_ALLOW_THREADS
  malloc_trim(0);
  Py_END_ALLOW_THREADS
  Py_RETURN_NONE;
}

// landlock_abi() -> int: the kernel's Landlock ABI version (0: none).
PyObject* m_landlock_abi(PyObject*, PyObject*) { return PyLong_FromLong(landlock_abi()); }

}  // namespace

PyMethodDef sandbox_functions[] = {
    {"dumps", m_dumps, METH_O, "dumps(obj) -> bytes: data values in the wire format"},
    {"loads", m_loads, METH_O, "loads(bytes) -> obj"},
    {"main_wire", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(m_main_wire)),
     METH_FASTCALL, "main_wire(id, name) -> bytes"},
    {"lockdown", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(m_lockdown)),
     METH_VARARGS | METH_KEYWORDS,
     "lockdown(*, write_roots, read_roots=None, subprocess=False, network=False, signals=False, "
     "die_with_parent=False)"},
    {"landlock_abi", m_landlock_abi, METH_NOARGS, "landlock_abi() -> int"},
    {"trim_memory", m_trim_memory, METH_NOARGS, "trim_memory(): malloc_trim(0)"},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace subinterp_ext
