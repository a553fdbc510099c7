"""Run user-provided scripts, each in a fresh isolated interpreter.

    from subinterp import sandbox
    r = sandbox.run('print("hi"); 6 * 7', timeout=2.0)
    r.status, r.value, r.stdout       # ('ok', 42, 'hi\\n')

    with sandbox.Sandbox(workers=4) as sb:
        results = list(sb.map(sources, timeout=1.0))

Isolation 'interpreter' (the only one so far) gives every script a new
isolated sub-interpreter that is never used again: what one script does to
its modules, builtins or globals cannot reach the next. Interpreters are
made ahead of time on a background thread and closed after the script, off
the caller's path. It is for code that is buggy rather than hostile: a
script with ctypes or a C extension bug reaches the whole process (see
docs/sandbox.md).

A script's value is that of its last statement when that is an expression,
or else of the variable `result` it sets. Inputs become its globals. Values
travel as for Interpreter.call: the same kinds, by value.
"""

import dataclasses
import os
import queue
import sys
import threading
import time
from concurrent.futures import Future

from . import InterpreterNotFoundError, NotShareableError, _subinterp, create

__all__ = ['run', 'Sandbox', 'Result', 'ScriptError', 'STATUSES']

STATUSES = ('ok', 'error', 'timeout', 'memory', 'output_limit', 'killed')

# What a script may do besides computing, when `allow` names it.
PERMISSIONS = frozenset({'subprocess', 'network', 'write', 'process', 'ctypes'})


@dataclasses.dataclass
class ScriptError:
    """What a script raised: its type's name, its message and its traceback
    (text, as the script's interpreter formatted them)."""
    type: str
    message: str
    traceback: str


@dataclasses.dataclass
class Result:
    status: str                    # one of STATUSES
    value: object = None           # the script's value ('ok' only)
    stdout: str = ''
    stderr: str = ''
    error: ScriptError | None = None
    elapsed: float = 0.0           # seconds, from the script's start
    # The script did not stop when told to (stuck in C code, or catching
    # every exception): its thread and interpreter were left behind.
    stuck: bool = False

    @property
    def ok(self):
        return self.status == 'ok'

    def to_json(self):
        """A dict for json.dumps (the value as repr when JSON cannot hold it)."""
        value = self.value
        try:
            import json
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        return {'status': self.status, 'value': value, 'stdout': self.stdout,
                'stderr': self.stderr,
                'error': dataclasses.asdict(self.error) if self.error else None,
                'elapsed': round(self.elapsed, 6), 'stuck': self.stuck}


# Set up in each fresh interpreter before its script: output capture with
# one limit for stdout and stderr together, and the runner. Names start
# with __sandbox_ and live in __main__, where the script cannot reach them
# (the script runs in a namespace of its own).
_PRELUDE = r'''
# Only modules every interpreter has loaded already: os costs ~2.5 ms where
# site did not import it (a worker runs with -S), and is imported here only
# when a script writes a file. Scripts come compiled (by the caller).
import _signal, builtins, io, posix, sys


class __sandbox_OutputLimit__(BaseException):
    """Raised in the script when its output passes the limit."""


class __sandbox_Capped__(io.TextIOBase):
    def __init__(self, name, box):
        self.name, self.box, self.parts = name, box, []

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f'write() argument must be str, not {type(text).__name__}')
        left = self.box['left']
        if len(text) > left:
            self.parts.append(text[:left])
            self.box['left'] = 0
            self.box['over'] = True
            raise __sandbox_OutputLimit__(f"output passed {self.box['limit']} characters")
        self.parts.append(text)
        self.box['left'] = left - len(text)
        return len(text)

    def text(self):
        return ''.join(self.parts)


def __sandbox_safe_str__(exc):
    try:
        return str(exc)
    except BaseException as e:  # a __str__ that raises
        return f'<str() of the exception failed: {type(e).__name__}>'


def __sandbox_policy__(allow, scratch):
    """An audit hook for this interpreter: what `allow` does not name is
    refused with PermissionError. It holds against code that is buggy, not
    against code that sets out to escape (ctypes, C extensions)."""
    denied = {
        'subprocess': {'subprocess.Popen', 'os.system', 'os.exec', 'os.posix_spawn',
                       'os.spawn', 'os.fork', 'os.forkpty', 'pty.spawn', 'os.startfile'},
        'network': {'socket.connect', 'socket.bind', 'socket.sendto', 'socket.sendmsg',
                    'socket.__new__'},
        # Process-wide state that other scripts and the host share.
        'process': {'os.kill', 'os.killpg', 'signal.pthread_kill', 'os.chdir', 'os.fchdir',
                    'os.putenv', 'os.unsetenv', 'resource.setrlimit', 'resource.prlimit'},
        'ctypes': {'ctypes.dlopen', 'ctypes.dlsym', 'ctypes.cdata', 'ctypes.addressof',
                   'ctypes.call_function', 'ctypes.string_at', 'ctypes.wstring_at',
                   'ctypes.create_string_buffer', 'ctypes.create_unicode_buffer'},
    }
    refused = {}
    for what, events in denied.items():
        if what not in allow:
            for event in events:
                refused[event] = what
    writes = 'write' not in allow
    base = scratch + '/' if scratch else None  # real path, given by the caller
    write_flags = posix.O_WRONLY | posix.O_RDWR | posix.O_APPEND | posix.O_CREAT | posix.O_TRUNC
    path_events = {'os.remove', 'os.rename', 'os.replace', 'os.mkdir', 'os.rmdir',
                   'os.chmod', 'os.chown', 'os.truncate', 'os.symlink', 'os.link',
                   'os.utime', 'shutil.rmtree', 'shutil.move', 'shutil.copyfile'}

    def inside(path):
        if base is None or isinstance(path, int):
            return False
        import os
        try:
            return os.path.realpath(os.fsdecode(path)).startswith(base)
        except (TypeError, ValueError):
            return False

    # C-level footguns that end the whole process, refused as ctypes is.
    modules = set() if 'ctypes' in allow else {
        'faulthandler', '_testcapi', '_testinternalcapi', '_testlimitedcapi',
        '_testmultiphase', '_testsinglephase', '_testclinic', '_testbuffer', '_testimportmultiple'}

    def hook(event, args):
        what = refused.get(event)
        if what is not None:
            raise PermissionError(f'{event} is not allowed in the sandbox (allow={what!r})')
        if event == 'import' and args and args[0] in modules:
            raise PermissionError(f'importing {args[0]} is not allowed in the sandbox '
                                  f'(allow=\'ctypes\')')
        if not writes:
            return
        if event == 'open':
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ''
            if (flags & write_flags or any(c in mode for c in 'wax+')) and not inside(args[0]):
                raise PermissionError(f'writing {args[0]!r} is not allowed in the sandbox '
                                      f'(only under SCRATCH, or allow="write")')
        elif event in path_events:
            for path in args:
                if isinstance(path, (str, bytes)) and not inside(path):
                    raise PermissionError(f'{event} on {path!r} is not allowed in the sandbox '
                                          f'(only under SCRATCH, or allow="write")')

    sys.addaudithook(hook)
    if 'process' not in allow:
        # Calls that end the whole process at once, with no audit event.
        # (_signal, not signal: that imports enum, ~3 ms in a fresh
        # interpreter; signal takes its functions from _signal on import.
        # Both are imported at the top of the prelude.)

        def refuse(name):
            def refused_call(*args, **kwargs):
                raise PermissionError(f'{name} is not allowed in the sandbox: it would end the '
                                      f'whole process (allow=\'process\')')
            return refused_call
        # os takes these from posix when it is first imported, and where it
        # is imported already (site), it is patched too.
        for module in {posix, sys.modules.get('os', posix)}:
            module._exit, module.abort = refuse('os._exit'), refuse('os.abort')
        _signal.raise_signal = refuse('signal.raise_signal')


def __sandbox_threads__():
    """Threads of this interpreter that outlive its script."""
    threading = sys.modules.get('threading')
    if threading is None:
        return ()
    # Not the threads that ran the prelude or the script (_MainThread,
    # _DummyThread): they belong to the sandbox.
    own = (threading._MainThread, threading._DummyThread)
    return tuple(t.ident for t in threading.enumerate()
                 if not isinstance(t, own) and t.ident is not None)


def __sandbox_join__(deadline):
    """Waits until `deadline` (time.monotonic()) for threads that were told to
    stop; whether they all did."""
    import threading, time
    own = (threading._MainThread, threading._DummyThread)
    for t in threading.enumerate():
        if not isinstance(t, own):
            t.join(max(0.0, deadline - time.monotonic()))
    return not __sandbox_threads__()


def __sandbox_run__(code, last, inputs, limit, allow=(), scratch=None):
    """Runs `code` (the script but a last expression statement) and then
    `last` (that expression, or None), both compiled by the caller."""
    box = {'left': limit, 'over': False, 'limit': limit}
    out, err = __sandbox_Capped__('<stdout>', box), __sandbox_Capped__('<stderr>', box)
    ns = {'__name__': '__main__', '__builtins__': builtins, 'SCRATCH': scratch}
    ns.update(inputs)
    __sandbox_policy__(frozenset(allow), scratch)
    sys.stdout, sys.stderr = out, err
    outcome = {'status': 'ok', 'error': None, 'value': None}
    try:
        exec(code, ns)
        if last is not None:
            outcome['value'] = eval(last, ns)
        else:
            outcome['value'] = ns.get('result')
    except __sandbox_OutputLimit__:
        outcome['status'] = 'output_limit'
    except BaseException as e:
        try:
            import traceback  # only when a script fails: ~10 ms in a fresh interpreter
            # From the script's first frame on (this function's is not the
            # script's business).
            tb = ''.join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
        except BaseException:
            tb = ''
        outcome['status'] = 'error'
        outcome['error'] = (type(e).__name__, __sandbox_safe_str__(e), tb)
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    outcome['stdout'], outcome['stderr'] = out.text(), err.text()
    outcome['threads'] = __sandbox_threads__()
    if box['over']:
        outcome['status'] = 'output_limit'
        outcome['error'] = ('OutputLimitExceeded',
                            f"stdout and stderr passed {limit} characters", '')
    if outcome['status'] != 'ok':
        outcome['value'] = None
    return outcome
'''

class _Spares:
    """Fresh interpreters, each with an empty scratch folder, made ahead on
    a thread of their own."""

    # While spares are ready, the next one waits this long: the script that
    # just took one (and its caller, waking up) go first.
    YIELD = 0.005

    def __init__(self, count):
        self._ready = queue.Queue(maxsize=max(1, count))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name='subinterp-sandbox-spares',
                                        daemon=True)
        self._thread.start()

    def _make(self):
        import tempfile
        interp = create()
        try:
            interp.exec(_PRELUDE_CODE)  # off the latency path too
            scratch = tempfile.mkdtemp(prefix='subinterp-sandbox-')
        except BaseException:
            interp.close()
            raise
        return interp, scratch

    def _fill(self):
        failing = False
        while not self._stop.is_set():
            if not self._ready.empty():
                time.sleep(self.YIELD)
            interp = None
            try:
                interp = self._make()
            except Exception as e:
                if not failing:  # once per run of failures
                    print(f'subinterp.sandbox: making a spare interpreter: {e}',
                          file=sys.__stderr__)
                failing = True
                time.sleep(0.1)
                continue
            failing = False
            while not self._stop.is_set():
                try:
                    self._ready.put(interp, timeout=0.1)
                    break
                except queue.Full:
                    continue
            else:
                self._discard(interp)

    @staticmethod
    def _discard(spare):
        import shutil
        interp, scratch = spare
        interp.close()
        shutil.rmtree(scratch, ignore_errors=True)

    def take(self):
        """(interpreter, scratch folder)."""
        try:
            return self._ready.get_nowait()
        except queue.Empty:
            return self._make()  # none ready: make one now

    def stop(self):
        self._stop.set()
        self._thread.join()
        while True:
            try:
                self._discard(self._ready.get_nowait())
            except queue.Empty:
                return


class _Closer:
    """Closes used interpreters off the caller's path."""

    def __init__(self):
        self._todo = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name='subinterp-sandbox-closer',
                                        daemon=True)
        self._thread.start()

    def _loop(self):
        while True:
            item = self._todo.get()
            if item is None:
                return
            if self._todo.empty():
                # A lone close, after a script: its caller goes first.
                time.sleep(_Spares.YIELD)
            self.close_now(*item)

    @staticmethod
    def close_now(interp, scratch=None):
        import shutil
        try:
            interp.close()
        except InterpreterNotFoundError:
            pass  # closed already (by the process's exit)
        except Exception as e:
            print(f'subinterp.sandbox: closing an interpreter: {e}', file=sys.__stderr__)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)

    def close_later(self, interp, scratch=None, most=None):
        """Queues a close; False (nothing queued) when `most` wait already."""
        if most is not None and self._todo.qsize() >= most:
            return False
        self._todo.put((interp, scratch))
        return True

    def stop(self, stuck_after):
        """Waits for the closes queued so far, as long as they go on: one
        that takes `stuck_after` seconds is not waited for."""
        self._todo.put(None)
        while self._thread.is_alive():
            left = self._todo.qsize()
            self._thread.join(stuck_after)
            if self._thread.is_alive() and self._todo.qsize() >= left:
                return  # no progress: a close that does not end


# Runs in the fresh interpreter, after prepare_main() gave it the names.
_RUN = '''
__sandbox_outcome__ = __sandbox_run__(__sandbox_code__, __sandbox_last__, __sandbox_inputs__,
                                      __sandbox_limit__, __sandbox_allow__, __sandbox_scratch__)
del __sandbox_code__, __sandbox_last__, __sandbox_inputs__
'''


def _compile(source):
    """(code, last): the script compiled, its last statement apart when it
    is an expression (its value is the script's). SyntaxError and the like
    propagate."""
    import ast
    tree = compile(source, '<script>', 'exec', ast.PyCF_ONLY_AST)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = compile(ast.Expression(tree.body.pop().value), '<script>', 'eval')
    return compile(tree, '<script>', 'exec'), last


def _failed_outcome(e):
    """The outcome of a script that could not start (it did not compile)."""
    import traceback
    return {'status': 'error', 'value': None, 'stdout': '', 'stderr': '',
            'error': (type(e).__name__, _safe_str(e),
                      ''.join(traceback.format_exception_only(type(e), e)))}


def _safe_str(e):
    try:
        return str(e)
    except BaseException as inner:
        return f'<str() of the exception failed: {type(inner).__name__}>'

_PRELUDE_CODE = compile(_PRELUDE, '<sandbox prelude>', 'exec')
_RUN_CODE = compile(_RUN, '<sandbox run>', 'exec')
_MAIN_MODULE = sys.modules['__main__']  # travels by name: "__main__" there
# Interpreters whose script left a thread that would not stop: they cannot be
# closed, and are kept here so that nothing tries to.
_left_behind = []


class _Job:
    __slots__ = ('future', 'interp', 'ident', 'thread', 'start', 'deadline', 'done',
                 'timed_out', 'abandoned', 'timeout', 'to_close')

    def __init__(self, future, timeout):
        self.future = future
        self.timeout = timeout
        self.interp = self.ident = self.thread = self.to_close = None
        self.start = self.deadline = 0.0
        self.done = self.timed_out = self.abandoned = False


class _Watchdog:
    """One thread for all of a sandbox's time limits: at a script's limit,
    TimeoutError is raised in it, again every 50 ms (it may catch it); after
    the grace period its caller gets a 'timeout' result and the stuck worker
    thread is replaced."""

    def __init__(self, sandbox):
        import heapq
        self._heapq = heapq
        self._sandbox = sandbox
        self._heap = []
        self._count = 0
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name='subinterp-sandbox-watchdog',
                                        daemon=True)
        self._thread.start()

    def add(self, when, job):
        with self._cv:
            self._count += 1
            self._heapq.heappush(self._heap, (when, self._count, job))
            if self._heap[0][2] is job:
                self._cv.notify()

    def stop(self):
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join()

    def _loop(self):
        while True:
            with self._cv:
                while not self._stopped:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cv.wait(self._heap[0][0] - now if self._heap else None)
                if self._stopped:
                    return
                _, _, job = self._heapq.heappop(self._heap)
            if not job.done:
                self._sandbox._on_time(job)


class _WorkerProcess:
    """One sandbox worker process, as the host sees it."""

    def __init__(self, pid, to_worker, from_worker, scratch):
        self.pid, self.to_worker, self.from_worker = pid, to_worker, from_worker
        self.scratch = scratch
        self.ready = False
        self.info = None
        self.count = 0


class _Broken(Exception):
    """The worker's stream ended or went wrong."""


def _frame_limit(value_limit):
    return 2 * value_limit + (64 << 20)  # the value, and output and error texts


class _Launcher:
    """The host's side of the launcher process (subinterp._sandbox_worker):
    asks it for workers, learns their exit status, kills them."""

    def __init__(self, boot, env):
        import socket
        import subprocess
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.set_inheritable(False)
        try:
            # exec, never a bare fork: this process may have sub-interpreters.
            self.proc = subprocess.Popen(
                [sys.executable, '-I', '-S', '-c', boot, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, start_new_session=True, env=env)
        finally:
            theirs.close()
        self.sock = ours
        self._socket = socket
        self._lock = threading.Lock()    # one spawn request at a time
        self._cv = threading.Condition()
        self._spawned = queue.Queue()
        self._status = {}                # pid: exit status (negative: signal)
        self._gone = False
        self._reader = threading.Thread(target=self._read, name='subinterp-sandbox-launcher',
                                        daemon=True)
        self._reader.start()

    def _read(self):
        while True:
            try:
                msg = self.sock.recv(1 << 16)
            except OSError:
                msg = b''
            if not msg:
                with self._cv:
                    self._gone = True
                    self._cv.notify_all()
                self._spawned.put(None)
                return
            kind, *rest = _subinterp.loads(msg)
            if kind == 'exited':
                with self._cv:
                    self._status[rest[0]] = rest[1]
                    self._cv.notify_all()
            else:
                self._spawned.put((kind, rest))

    def spawn(self, config, fds):
        """A new worker's pid; `fds` (its input and output pipe ends) go to it."""
        with self._lock:
            if self._gone:
                raise RuntimeError(f'the sandbox launcher process ended '
                                   f'(exit status {self.proc.poll()})')
            self._socket.send_fds(self.sock, [_subinterp.dumps(('spawn', config))], list(fds))
            try:
                answer = self._spawned.get(timeout=30)
            except queue.Empty:
                raise RuntimeError('the sandbox launcher process did not answer') from None
        if answer is None:
            raise RuntimeError(f'the sandbox launcher process ended (exit status '
                               f'{self.proc.poll()})')
        kind, rest = answer
        if kind != 'spawned':
            raise RuntimeError(f'the sandbox launcher refused: {rest}')
        return rest[0]

    def wait(self, pid, timeout):
        """The exit status of worker `pid` (None if it is not known in time)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while pid not in self._status and not self._gone:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(left)
            return self._status.pop(pid, None)

    def kill(self, pid):
        """SIGKILL to worker `pid` and its session (any child it made),
        unless it is known to have ended."""
        import signal
        with self._cv:
            if pid in self._status or self._gone:
                return
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def close(self):
        """Ends the launcher, which kills the workers left."""
        import subprocess
        try:
            self.sock.shutdown(self._socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        self.sock.close()


class _ProcessSandbox:
    """The isolation='process' side of Sandbox (see Sandbox)."""

    GRACE_MARGIN = 1.0  # past the worker's own answer, before it is killed

    def _init_process(self, workers, memory, allow, recycle_after, open_files, file_size):
        import shutil
        from . import _sandbox_worker
        self._wire = _sandbox_worker
        if not hasattr(_subinterp, 'lockdown'):
            raise RuntimeError('this build of subinterp has no process isolation')
        if memory is not None and (not isinstance(memory, int) or isinstance(memory, bool)
                                   or memory <= 0):
            raise ValueError(f'memory must be a positive int (bytes) or None, not {memory!r}')
        if not isinstance(recycle_after, int) or recycle_after < 1:
            raise ValueError(f'recycle_after must be a positive int, not {recycle_after!r}')
        self.memory, self.recycle_after = memory, recycle_after
        self.allow = allow  # the workers' OS confinement lets no more through
        landlock = _subinterp.landlock_abi()
        if landlock == 0:
            raise RuntimeError(
                "isolation='process' needs Landlock (Linux 5.13 or later, with the landlock "
                "LSM enabled) to confine the worker's files; this kernel has none")
        self.landlock = landlock
        self._value_limit = 64 << 20
        # Where this package and its extension are (a source checkout has
        # them in two folders): the worker imports the same ones.
        from . import __path__ as package_path
        homes = [os.path.dirname(os.path.abspath(p)) for p in package_path]
        homes.append(os.path.dirname(os.path.dirname(os.path.abspath(_subinterp.__file__))))
        homes = list(dict.fromkeys(homes))
        reads = {sys.base_prefix, sys.prefix, sys.exec_prefix, *homes,
                 os.path.dirname(os.path.realpath(sys.executable)),
                 '/usr', '/lib', '/lib64', '/etc/ld.so.cache', '/etc/localtime',
                 '/dev/null', '/dev/urandom', '/dev/zero', '/proc/self'}
        reads.update(p for p in sys.path if p and os.path.isabs(p) and os.path.exists(p))
        try:
            import pwd
            nobody = pwd.getpwnam('nobody')
            drop_to = (nobody.pw_uid, nobody.pw_gid)
        except (ImportError, KeyError):
            drop_to = None
        self._config = {
            'read_roots': sorted(reads), 'allow': sorted(allow), 'drop_to': drop_to,
            'homes': homes,
            'grace': self.grace, 'memory': memory,
            # Each closed interpreter leaves ~2 MiB behind until recycling;
            # a spare interpreter and the thread stacks take some too.
            'memory_slack': (96 << 20) + recycle_after * (3 << 20),
            'open_files': open_files, 'file_size': file_size, 'threads': 256,
            'cpu': 0, 'value_limit': self._value_limit,
        }
        self._env = {'PATH': '/usr/bin:/bin', 'LANG': 'C.UTF-8', 'MALLOC_ARENA_MAX': '2'}
        for name in ('LD_LIBRARY_PATH', 'LD_PRELOAD', 'ASAN_OPTIONS', 'UBSAN_OPTIONS',
                     'LSAN_OPTIONS', 'TSAN_OPTIONS', 'PYTHONMALLOC'):
            if name in os.environ:
                self._env[name] = os.environ[name]
        self._env['PYTHONMALLOC'] = 'malloc'  # see docs/sandbox.md: 0.2 MiB kept per interpreter, not 1.7
        boot = ('import sys; sys.path[:0] = ' + repr(homes) +
                '; from subinterp._sandbox_worker import launcher_main; '
                'launcher_main(int(sys.argv[1]))')
        self._launcher = _Launcher(boot, self._env)
        self._pids = set()  # every worker process started
        self._reaper = queue.Queue()
        self._rmtree = shutil.rmtree
        self._reaper_thread = threading.Thread(target=self._reap, name='subinterp-sandbox-reaper',
                                               daemon=True)
        self._reaper_thread.start()

    # -- worker processes ---------------------------------------------------

    def _spawn(self):
        import tempfile
        scratch = tempfile.mkdtemp(prefix='subinterp-sandbox-w')
        to_r, to_w = os.pipe2(os.O_CLOEXEC)
        from_r, from_w = os.pipe2(os.O_CLOEXEC)
        cpu = self.recycle_after * ((self._longest or 60) + self.grace + 1) + 60
        try:
            pid = self._launcher.spawn(dict(self._config, scratch=scratch, cpu=int(cpu)),
                                       (to_r, from_w))
        except BaseException:
            for fd in (to_w, from_r):
                os.close(fd)
            self._rmtree(scratch, ignore_errors=True)
            raise
        finally:
            os.close(to_r)
            os.close(from_w)
        self._pids.add(pid)
        return _WorkerProcess(pid, to_w, from_r, scratch)

    def _reap(self):
        while True:
            worker = self._reaper.get()
            if worker is None:
                return
            self._end(worker, kill=False)

    def _end(self, worker, kill):
        """Ends `worker` (at once when `kill`, else after its last script)
        and removes its scratch folder; returns its exit status."""
        try:
            os.close(worker.to_worker)  # the worker's end of input: it exits
        except OSError:
            pass
        if kill:
            self._launcher.kill(worker.pid)
        rc = self._launcher.wait(worker.pid, self.grace + 5)
        if rc is None:
            self._launcher.kill(worker.pid)
            rc = self._launcher.wait(worker.pid, 10)
        try:
            os.close(worker.from_worker)
        except OSError:
            pass
        self._rmtree(worker.scratch, ignore_errors=True)
        return rc

    def _read(self, worker, deadline):
        """The worker's next frame, or None when the deadline passes."""
        import select
        fd = worker.from_worker
        chunks, need, header = [], 8, None
        while True:
            while need:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                ready, _, _ = select.select([fd], [], [], wait)
                if not ready:
                    continue
                chunk = os.read(fd, min(need, 1 << 20))
                if not chunk:
                    raise _Broken('the worker process ended')
                chunks.append(chunk)
                need -= len(chunk)
            data = b''.join(chunks)
            if header is not None:
                try:
                    return _subinterp.loads(data)
                except (ValueError, TypeError, UnicodeDecodeError) as e:
                    raise _Broken(f'the worker sent malformed data ({e})') from None
            header = int.from_bytes(data, 'little')
            if header > _frame_limit(self._value_limit):
                raise _Broken(f'the worker sent a frame of {header} bytes')
            chunks, need = [], header
            if need == 0:
                raise _Broken('the worker sent an empty frame')

    def _start_worker(self, worker):
        """Waits for the worker's 'ready' (it confines itself first)."""
        try:
            hello = self._read(worker, time.monotonic() + 60)
        except _Broken as e:
            rc = self._end(worker, kill=True)
            raise RuntimeError(f'the sandbox worker process did not start ({e}, exit status '
                               f'{rc})') from None
        if hello is None:
            self._end(worker, kill=True)
            raise RuntimeError('the sandbox worker process did not start within 60 s')
        if not (isinstance(hello, tuple) and hello and hello[0] == 'ready'):
            self._end(worker, kill=True)
            detail = hello[1] if isinstance(hello, tuple) and len(hello) > 1 else hello
            raise RuntimeError(f'the sandbox worker process could not confine itself: {detail}')
        worker.ready, worker.info = True, hello[1]

    def _process_work(self):
        worker = self._spawn()
        try:
            while True:
                item = self._next_job()
                if item is None:
                    return
                job, args = item
                try:
                    if worker is None:
                        worker = self._spawn()
                    if not worker.ready:
                        try:
                            self._start_worker(worker)
                        except BaseException:
                            worker = None
                            raise
                    result, keep = self._run_in(worker, job, *args)
                except BaseException as e:
                    job.future.set_exception(e)
                    continue
                job.future.set_result(result)
                if not keep or worker.count >= self.recycle_after:
                    if keep:
                        self._reaper.put(worker)  # ends after its last script
                    worker = self._spawn()  # warms up while this thread waits for a job
        finally:
            if worker is not None:
                self._reaper.put(worker)

    def _run_in(self, worker, job, source, inputs, timeout, output_limit, allow):
        """Runs one script in `worker`: (Result, whether the worker goes on)."""
        import signal
        start = time.monotonic()
        worker.count += 1
        try:
            self._wire.write_frame(worker.to_worker, (source, inputs or {}, timeout, output_limit,
                                                      tuple(sorted(allow))))
            deadline = (None if timeout is None
                        else start + timeout + self.grace + self.GRACE_MARGIN)
            reply = self._read(worker, deadline)
        except (_Broken, OSError) as e:
            rc = self._end(worker, kill=True)
            elapsed = time.monotonic() - start
            how = (f'killed by {signal.Signals(-rc).name}' if rc is not None and rc < 0
                   else f'exit status {rc}')
            if rc == -signal.SIGXCPU:
                return Result('timeout', elapsed=elapsed, error=ScriptError(
                    'TimeoutError', f'the worker process ran out of CPU time ({how})', '')), False
            return Result('killed', elapsed=elapsed, error=ScriptError(
                'WorkerDied', f'the worker process running the script died ({how}; {e})',
                '')), False
        if reply is None:  # stuck past the deadline, not even answering
            self._end(worker, kill=True)
            return Result('timeout', elapsed=time.monotonic() - start, stuck=True, error=ScriptError(
                'TimeoutError', f'the script ran past its time limit ({timeout} s) and did not '
                f'stop; its worker process was killed', '')), False
        try:
            result = Result(reply['status'], value=reply['value'], stdout=reply['stdout'],
                            stderr=reply['stderr'], elapsed=float(reply['elapsed']),
                            stuck=bool(reply['stuck']))
            if result.status not in STATUSES:
                raise ValueError(f'status {result.status!r}')
            if not all(isinstance(getattr(result, n), str) for n in ('stdout', 'stderr')):
                raise ValueError('output that is not text')
            if reply['error'] is not None:
                result.error = ScriptError(*(str(part) for part in reply['error']))
        except (KeyError, TypeError, ValueError) as e:
            self._end(worker, kill=True)
            return Result('killed', elapsed=time.monotonic() - start, error=ScriptError(
                'WorkerDied', f'the worker process sent a malformed result ({e}); it was '
                f'killed', '')), False
        if result.stuck:
            self._end(worker, kill=True)  # "A script stuck in C code is killed with its worker"
            result.error = ScriptError(
                'TimeoutError', f'the script ran past its time limit ({timeout} s) and did not '
                f'stop; its worker process was killed', '')
            return result, False
        return result, True

    def _close_process(self):
        self._reaper.put(None)
        self._reaper_thread.join()
        self._launcher.close()



class Sandbox(_ProcessSandbox):
    """Runs scripts, each in a fresh isolated interpreter, `workers` at a
    time.

    isolation='interpreter': on `workers` threads of this process, with
    interpreters made ahead (`spares` of them wait ready). For code that is
    buggy rather than hostile.

    isolation='process': in `workers` worker processes, started clean (exec)
    and confined before they run anything (docs/sandbox.md): each runs one
    script at a time, each in a fresh sub-interpreter, and is replaced
    after `recycle_after` scripts, or when it dies or is killed. `memory`
    (bytes) limits each worker's memory; `allow` is what the workers' OS
    confinement lets scripts do (each script's own `allow` must be within
    it); `open_files` and `file_size` are rlimits of the workers.

    `grace` is how long a script past its time limit gets to stop before
    its caller is answered without it (and, in process mode, its worker is
    killed)."""

    def __init__(self, workers=None, *, isolation='interpreter', spares=None, grace=1.0,
                 memory=None, allow=(), recycle_after=25, open_files=256,
                 file_size=64 << 20):
        if isolation not in ('interpreter', 'process'):
            raise ValueError(f"isolation must be 'interpreter' or 'process', not {isolation!r}")
        if workers is None:
            workers = os.cpu_count() or 1
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f'workers must be a positive int, not {workers!r}')
        if not grace >= 0:
            raise ValueError(f'grace must not be negative, not {grace!r}')
        allow = _check_allow(allow)
        self.isolation = isolation
        self.workers = workers
        self.grace = grace
        self._jobs = queue.Queue()
        self._threads = set()
        self._lock = threading.Lock()
        self._answer = threading.Lock()
        self._closed = False
        self._longest = 60.0
        self.default_allow = allow  # what a script gets when it does not say
        if isolation == 'process':
            self._init_process(workers, memory, allow, recycle_after, open_files, file_size)
            for _ in range(workers):
                self._start_thread(self._process_work)
            return
        if memory is not None:
            raise ValueError("a memory limit needs isolation='process' (interpreters in one "
                             "process share its memory: no limit can be promised per script)")
        self.allow = PERMISSIONS  # what a script may ask for
        self._spares = _Spares(spares if spares is not None else workers + 1)
        self._closer = _Closer()
        self._watchdog = _Watchdog(self)
        for _ in range(workers):
            self._start_thread()

    def _start_thread(self, target=None):
        t = threading.Thread(target=target or self._work, name='subinterp-sandbox-worker',
                             daemon=True)
        with self._lock:
            self._threads.add(t)
        t.start()

    def _next_job(self):
        """(job, args) of the next script to run (skipping cancelled ones), or
        None when the sandbox closes."""
        while True:
            item = self._jobs.get()
            if item is None or item[0].future.set_running_or_notify_cancel():
                return item

    def _work(self):
        while True:
            item = self._next_job()
            if item is None:
                return
            job, args = item
            try:
                result = self._run_here(job, *args)
            except BaseException as e:
                result = e
            with self._answer:  # the watchdog may have answered (stuck)
                if not job.future.done():
                    if isinstance(result, BaseException):
                        job.future.set_exception(result)
                    else:
                        job.future.set_result(result)
            if job.to_close is not None:
                # The closer is behind: this thread closes its interpreter,
                # after answering, so that no more pile up (each holds ~2 MiB
                # until it is closed) and making them cannot outrun closing.
                self._closer.close_now(*job.to_close)
            if job.abandoned:
                return  # a new thread took this one's place

    def _run_here(self, job, source, inputs, timeout, output_limit, allow):
        import tempfile
        interp, scratch = self._spares.take()
        job.interp, job.ident = interp, threading.get_ident()
        job.thread = threading.current_thread()
        job.start = time.monotonic()
        threads = ()
        if timeout is not None:
            job.deadline = job.start + timeout
            self._watchdog.add(job.deadline, job)
        try:
            code, last = _compile(source)
        except BaseException as e:
            job.done = True
            outcome = _failed_outcome(e)
            outcome['elapsed'] = time.monotonic() - job.start
            self._closer.close_later(interp, scratch)  # never ran: still clean, but not reused
            return _result_of(_settle(outcome, job.timed_out, timeout))
        try:
            interp.prepare_main({'__sandbox_limit__': output_limit,
                                 '__sandbox_code__': code,
                                 '__sandbox_last__': last,
                                 '__sandbox_inputs__': inputs or {},
                                 '__sandbox_allow__': tuple(sorted(allow)),
                                 '__sandbox_scratch__': os.path.realpath(scratch)})
            interp.exec(_RUN_CODE)
            unshareable = None
            try:
                outcome = interp.call(getattr, _MAIN_MODULE, '__sandbox_outcome__')
            except NotShareableError as e:
                # The value cannot travel: the rest can.
                unshareable = e
                interp.exec('__sandbox_outcome__["value"] = None')
                outcome = interp.call(getattr, _MAIN_MODULE, '__sandbox_outcome__')
        except BaseException as e:
            job.done = True
            error = _error_of(e)
            outcome = {'status': 'error', 'value': None, 'stdout': '', 'stderr': '',
                       'error': (error.type, error.message, error.traceback)}
        else:
            job.done = True
            threads = outcome.pop('threads', ())
            if unshareable is not None and outcome['status'] == 'ok':
                outcome['status'] = 'error'
                outcome['error'] = (type(unshareable).__name__,
                                    f"the script's value cannot leave its interpreter: "
                                    f"{unshareable}", '')
        outcome['elapsed'] = time.monotonic() - job.start
        outcome['stuck'] = job.abandoned
        result = _result_of(_settle(outcome, job.timed_out, timeout))
        if threads and not job.abandoned and not _stop_threads(interp, threads, self.grace):
            result.stuck = True
            _left_behind.append(interp)  # cannot be closed while its thread runs
            return result
        if not self._closer.close_later(interp, scratch, most=self.workers):
            job.to_close = (interp, scratch)
        return result

    def _on_time(self, job):
        """The watchdog's call at a script's limit, then every 50 ms."""
        now = time.monotonic()
        if not job.timed_out:
            job.timed_out = True
        if now < job.deadline + self.grace:
            # From a thread of its own: it waits for the interpreter's GIL,
            # which code stuck in C may hold for good.
            threading.Thread(target=_raise_quietly, args=(job.interp.id, job.ident),
                             daemon=True).start()
            self._watchdog.add(now + 0.05, job)
            return
        job.abandoned = True
        with self._answer:
            if job.future.done():
                return
            job.future.set_result(Result(
                'timeout', elapsed=now - job.start, stuck=True,
                error=ScriptError('TimeoutError',
                                  f'the script ran past its time limit ({job.timeout} s) and '
                                  f'did not stop (stuck in C code, or catching the exception); '
                                  f'its thread and interpreter were left behind', '')))
        with self._lock:
            self._threads.discard(job.thread)  # close() does not wait for it
        self._start_thread()  # the pool keeps its size

    # -- the public face ----------------------------------------------------

    def submit(self, source, *, inputs=None, timeout=5.0, output_limit=1 << 20, allow=None):
        """Runs `source` on a worker; a Future of its Result.

        inputs: a dict of values that become the script's globals.
        timeout: seconds (None: no limit). output_limit: characters of
        stdout and stderr together. allow: what the script may do beyond
        computing, among PERMISSIONS: 'subprocess' (new processes),
        'network' (sockets), 'write' (files outside its SCRATCH folder),
        'process' (signals, the working folder, the environment: state the
        whole process shares), 'ctypes'; by default what Sandbox(allow=...)
        says, and never more than that in process isolation. Each script
        gets an empty folder of its own, SCRATCH, removed after it."""
        allow = self.default_allow if allow is None else _check_allow(allow)
        if allow - self.allow:
            raise ValueError(f'allow: {sorted(allow - self.allow)} is not allowed by this '
                             f'sandbox (Sandbox(allow=...) sets what its workers may do)')
        if not isinstance(source, str):
            raise TypeError(f'source must be str, not {type(source).__name__}')
        if timeout is not None and not timeout > 0:
            raise ValueError(f'timeout must be positive (or None), not {timeout!r}')
        if (not isinstance(output_limit, int) or isinstance(output_limit, bool)
                or output_limit < 0):
            raise ValueError(f'output_limit must be a non-negative int, not {output_limit!r}')
        if inputs is not None and not isinstance(inputs, dict):
            raise TypeError(f'inputs must be a dict, not {type(inputs).__name__}')
        if self.isolation == 'process':
            if inputs:
                _subinterp.dumps(inputs)  # NotShareableError now, not in the worker
            self._longest = max(self._longest, 3600.0 if timeout is None else timeout)
        with self._lock:
            if self._closed:
                raise RuntimeError('the sandbox is closed')
        future = Future()
        self._jobs.put((_Job(future, timeout), (source, inputs, timeout, output_limit, allow)))
        return future

    def run(self, source, **options):
        """Runs one script; its Result."""
        return self.submit(source, **options).result()

    def map(self, sources, **options):
        """Results of the scripts, in order (they run in parallel)."""
        futures = [self.submit(s, **options) for s in sources]
        for f in futures:
            yield f.result()

    def close(self, wait=True):
        """Waits for the scripts that run, then ends the spares (threads
        left behind by stuck scripts are not waited for). With wait=False
        (Ctrl-C, say), running scripts are not waited for: with process
        isolation their workers are killed at once; with interpreter
        isolation they get SystemExit when the process exits."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        if not wait:
            if self.isolation == 'process':
                self._launcher.close()  # kills the workers
            return
        for t in threads:
            t.join()
        if self.isolation == 'process':
            self._close_process()
            return
        self._watchdog.stop()
        self._spares.stop()
        self._closer.stop(stuck_after=self.grace + 5.0)  # never held for good by one close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _settle(outcome, timed_out, timeout):
    """Final status of an outcome dict (status, value, stdout, stderr, error
    as (type, message, traceback), ...): a MemoryError is 'memory', a script
    the time limit was raised in is 'timeout'."""
    error = outcome.get('error')
    if error and error[0] == 'MemoryError' and outcome['status'] == 'error':
        outcome['status'] = 'memory'
        if not error[1]:
            outcome['error'] = (error[0], 'the script ran out of memory', error[2])
    if timed_out:
        outcome['status'] = 'timeout'
        outcome['value'] = None
        tb = outcome['error'][2] if outcome.get('error') else ''
        outcome['error'] = ('TimeoutError', f'the script ran past its time limit ({timeout} s)',
                            tb)
    return outcome


def _result_of(outcome):
    error = outcome.get('error')
    return Result(outcome['status'], value=outcome['value'], stdout=outcome['stdout'],
                  stderr=outcome['stderr'], elapsed=outcome['elapsed'],
                  error=ScriptError(*error) if error else None,
                  stuck=outcome.get('stuck', False))


def _stop_threads(interp, threads, grace):
    """Stops threads a script left running in `interp`: SystemExit in each,
    then `grace` seconds to end. Whether they all did."""
    for ident in threads:
        try:
            _subinterp.raise_in(interp.id, ident, 'SystemExit')
        except Exception:
            pass
    try:
        interp.exec(f'__sandbox_stopped__ = __sandbox_join__({time.monotonic() + grace!r})')
        return interp.call(getattr, _MAIN_MODULE, '__sandbox_stopped__') is True
    except Exception:
        return False


def _check_allow(allow):
    if isinstance(allow, str):
        allow = (allow,)
    allow = frozenset(allow)
    if allow - PERMISSIONS:
        raise ValueError(f'allow: unknown {sorted(allow - PERMISSIONS)}; '
                         f'known: {sorted(PERMISSIONS)}')
    return allow


def _raise_quietly(interp_id, ident):
    try:
        _subinterp.raise_in(interp_id, ident, 'TimeoutError')
    except Exception:
        pass  # the script ended meanwhile, and its interpreter with it


def _error_of(e):
    import traceback
    return ScriptError(type(e).__name__, str(e), ''.join(traceback.format_exception(e)))



# The sandboxes run() uses, made on first use: one for interpreter
# isolation, one per (memory, allow) for process isolation.
_defaults = {}
_default_lock = threading.Lock()


def _close_defaults():
    with _default_lock:
        boxes = list(_defaults.values())
        _defaults.clear()
    for box in boxes:
        box.close()


def run(source, *, inputs=None, timeout=5.0, memory=None, output_limit=1 << 20, allow=(),
        isolation='interpreter'):
    """Runs one script, in a fresh interpreter; its Result. See Sandbox and
    Sandbox.submit. `memory` (bytes, isolation='process' only) limits the
    memory of the worker process that runs it."""
    if isolation not in ('interpreter', 'process'):
        raise ValueError(f"isolation must be 'interpreter' or 'process', not {isolation!r}")
    if isolation == 'interpreter' and memory is not None:
        raise ValueError("a memory limit needs isolation='process' (interpreters in one "
                         "process share its memory: no limit can be promised per script)")
    allow = _check_allow(allow)
    key = ('interpreter',) if isolation == 'interpreter' else ('process', memory, allow)
    with _default_lock:
        box = _defaults.get(key)
        if box is None:
            if isolation == 'interpreter':
                box = Sandbox(workers=os.cpu_count() or 1, memory=memory)
            else:
                box = Sandbox(workers=os.cpu_count() or 1, isolation='process', memory=memory,
                              allow=allow)
            if not _defaults:
                import atexit
                atexit.register(_close_defaults)
            _defaults[key] = box
    return box.run(source, inputs=inputs, timeout=timeout, output_limit=output_limit,
                   allow=allow)
