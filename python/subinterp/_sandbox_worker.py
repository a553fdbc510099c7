"""The processes behind isolation='process'.

The launcher: started clean (exec) by subinterp.sandbox, it imports what a
worker needs and then only forks workers on request, so a worker starts in
a millisecond and shares the launcher's memory. It never makes an
interpreter or a thread, so forking it is safe (fork is not, in a process
with sub-interpreters). It reaps its children and reports their exit
status; when the host goes, it kills them and exits.

A worker: forked by the launcher, it confines itself before anything else
runs in it (and before it has a second thread), then runs the scripts it
is sent one at a time, each in a fresh sub-interpreter, and answers with
their results. Its confinement, in order:
  1. a session of its own; fds 0, 1 and 2 become /dev/null; it works in
     its scratch folder;
  2. rlimits: no core files, open files, file size, CPU time;
  3. uid and gid `nobody` when it runs as root and the Python install is
     readable by them; otherwise it keeps its uid without capabilities;
  4. _subinterp.lockdown(): SIGKILL when the launcher dies, no new
     privileges, no capabilities, Landlock (writes only in the scratch
     folder, reads only of the Python install and system libraries; no
     signals out), and a seccomp filter on every thread (no new processes,
     sockets, signals to other processes, tracing, mounts, file modes or
     owners changed);
  5. with a memory limit, RLIMIT_AS, once its first interpreter is made.

A script is compiled by the worker (only parsed there); its result is made
into bytes (the core's wire format: data only) inside the script's own
interpreter (_subinterp.main_wire): the worker's main interpreter never
rebuilds an object that the script made.

Frames between host and worker: an 8-byte little-endian length, then a
value in the wire format. Messages between host and launcher: one wire
value per SOCK_SEQPACKET message (a spawn request carries the worker's two
pipe ends as SCM_RIGHTS).
"""

import os
import select
import signal
import sys
import threading
import time

from . import _subinterp

_FRAME_HEADER = 8


# -- frames --------------------------------------------------------------------

def read_frame(fd):
    """The next value on `fd`; None at the end of the stream."""
    data = read_frame_bytes(fd)
    return None if data is None else _subinterp.loads(data)


def read_frame_bytes(fd):
    header = _read_exact(fd, _FRAME_HEADER)
    if header is None:
        return None
    size = int.from_bytes(header, 'little')
    data = _read_exact(fd, size)
    if data is None:
        raise EOFError('the stream ended inside a frame')
    return data


def _read_exact(fd, size):
    parts, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            if left == size:
                return None
            raise EOFError('the stream ended inside a frame')
        parts.append(chunk)
        left -= len(chunk)
    return b''.join(parts)


def write_frame(fd, obj):
    write_frame_bytes(fd, _subinterp.dumps(obj))


def write_frame_bytes(fd, data):
    view = memoryview(len(data).to_bytes(_FRAME_HEADER, 'little') + data)
    while view:
        view = view[os.write(fd, view):]


# -- the launcher -------------------------------------------------------------

def launcher_main(sock_fd):
    import socket
    # What a worker needs, imported once here and shared by every fork.
    from . import sandbox  # noqa: F401  (the prelude, compiled)
    import importlib
    import resource, shutil, tempfile, traceback  # noqa: F401,E401
    # What the core imports into the main interpreter before its first
    # sub-interpreter (and, on 3.12, the event loop and hashes it warms up):
    # here once, not in every worker (~30 ms each on 3.12).
    first = ['_datetime', '_zoneinfo']
    if sys.version_info < (3, 13):
        first += ['threading', '_decimal', '_asyncio', 'asyncio', 'hashlib', 'ssl']
    for name in first:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    sock = socket.socket(fileno=sock_fd)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children = set()

    def reap():
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            try:
                sock.send(_subinterp.dumps(('exited', pid, os.waitstatus_to_exitcode(status))))
            except OSError:
                pass

    while True:
        try:
            ready, _, _ = select.select([sock, wake_r], [], [], 1.0)
        except InterruptedError:
            ready = []
        if wake_r in ready:
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
        reap()
        if sock not in ready:
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 2)
        except OSError:
            msg, fds = b'', []
        if not msg:  # the host went: its workers go too
            for pid in children:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            os._exit(0)
        try:
            kind, config = _subinterp.loads(msg)
            if kind != 'spawn' or len(fds) != 2:
                raise ValueError(f'a bad request: {kind!r} with {len(fds)} fds')
        except (ValueError, TypeError) as e:
            for fd in fds:
                os.close(fd)
            sock.send(_subinterp.dumps(('refused', str(e))))
            continue
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                sock.close()
                os.close(wake_r)
                os.close(wake_w)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                status = worker_main(fds[0], fds[1], config)
            finally:
                os._exit(status or 0)
        for fd in fds:
            os.close(fd)
        children.add(pid)
        sock.send(_subinterp.dumps(('spawned', pid)))


# -- a worker -----------------------------------------------------------------

def _vm_size():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmSize:'):
                return int(line.split()[1]) * 1024
    return 0


def _readable_by_others(path):
    """Whether uid/gid `nobody` can reach `path` (each folder above it
    searchable by others)."""
    import stat
    path = os.path.realpath(path)
    while True:
        try:
            st = os.stat(path)
        except OSError:
            return False
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _confine(config, keep_fds):
    import resource
    os.setsid()
    null = os.open('/dev/null', os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    # Nothing of the launcher's but the two pipe ends.
    os.closerange(3, min(keep_fds))
    os.closerange(max(keep_fds) + 1, 1 << 16)
    for fd in range(min(keep_fds) + 1, max(keep_fds)):
        try:
            os.close(fd)
        except OSError:
            pass
    scratch = config['scratch']
    os.chdir(scratch)
    os.environ['TMPDIR'] = scratch
    os.environ['HOME'] = scratch
    # A file past RLIMIT_FSIZE fails with EFBIG (OSError) instead of killing
    # the worker.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = {
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NOFILE: config['open_files'],
        resource.RLIMIT_FSIZE: config['file_size'],
    }
    if config['cpu']:
        limits[resource.RLIMIT_CPU] = config['cpu']
    for which, value in limits.items():
        resource.setrlimit(which, (value, value))
    dropped = False
    if os.geteuid() == 0 and config['drop_to'] is not None:
        uid, gid = config['drop_to']
        if all(_readable_by_others(p) for p in (sys.base_prefix, sys.prefix, *config['homes'])):
            os.chown(scratch, uid, gid)
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            dropped = True
            # Threads of this uid: enough for the worker, not a thread bomb.
            resource.setrlimit(resource.RLIMIT_NPROC, (config['threads'], config['threads']))
    allow = set(config['allow'])
    info = _subinterp.lockdown(write_roots=[scratch, '/dev/null'],
                               read_roots=config['read_roots'],
                               subprocess='subprocess' in allow, network='network' in allow,
                               signals='process' in allow, die_with_parent=True)
    info['uid'] = os.getuid()
    info['dropped'] = dropped
    return info


class _Watchdog:
    """The time limit of the script that runs: TimeoutError in it at the
    limit and every 50 ms after; past the grace period, `on_stuck` (which
    answers for the script and ends the worker)."""

    def __init__(self, grace, on_stuck):
        self.grace, self.on_stuck = grace, on_stuck
        self.cv = threading.Condition()
        self.job = None  # (deadline, interp id, thread ident)
        self.fired = False
        threading.Thread(target=self._loop, name='subinterp-sandbox-watchdog',
                         daemon=True).start()

    def arm(self, deadline, interp_id, ident):
        with self.cv:
            # (when to act next, interpreter, thread, the limit itself)
            self.job, self.fired = (deadline, interp_id, ident, deadline), False
            self.cv.notify()

    def disarm(self):
        with self.cv:
            self.job = None
            return self.fired

    def _loop(self):
        while True:
            with self.cv:
                while self.job is None or time.monotonic() < self.job[0]:
                    wait = None if self.job is None else self.job[0] - time.monotonic()
                    self.cv.wait(wait)
                _, interp_id, ident, deadline = self.job
                self.fired = True
                if time.monotonic() >= deadline + self.grace:
                    self.job = None
                    stuck = True
                else:
                    self.job = (time.monotonic() + 0.05, interp_id, ident, deadline)
                    stuck = False
            if stuck:
                self.on_stuck(deadline)
                continue
            # From a thread of its own: raise_in waits for the script's GIL,
            # which C code may hold for good.
            threading.Thread(target=_raise_quietly, args=(interp_id, ident, deadline + self.grace),
                             daemon=True).start()


def _raise_quietly(interp_id, ident, until):
    if time.monotonic() >= until:
        return
    try:
        _subinterp.raise_in(interp_id, ident, 'TimeoutError')
    except Exception:
        pass


class _Worker:
    def __init__(self, fd_in, fd_out, config):
        from . import sandbox
        self.sandbox = sandbox
        self.fd_in, self.fd_out, self.config = fd_in, fd_out, config
        self.write_lock = threading.Lock()
        self.answered = False
        self.used = []  # interpreters to close when idle
        self.spare = None
        self.timeout = None
        self.watchdog = _Watchdog(config['grace'], self._stuck)

    def make_spare(self):
        from . import create
        interp = create()
        interp.exec(self.sandbox._PRELUDE_CODE)
        return interp

    def reply(self, data):
        with self.write_lock:
            if self.answered:
                return False
            self.answered = True
            write_frame_bytes(self.fd_out, data)
            return True

    def _stuck(self, deadline):
        timeout = self.timeout
        self.reply(_subinterp.dumps({
            'status': 'timeout', 'value': None, 'stdout': '', 'stderr': '', 'stuck': True,
            'elapsed': time.monotonic() - (deadline - timeout),
            'error': ('TimeoutError', f'the script ran past its time limit ({timeout} s) and '
                                      f'did not stop', '')}))
        os._exit(0)  # its thread cannot be stopped: the worker ends with it

    def run(self, source, inputs, timeout, output_limit, allow):
        import tempfile
        interp, self.spare = self.spare or self.make_spare(), None
        scratch = os.path.realpath(tempfile.mkdtemp(prefix='script-', dir=self.config['scratch']))
        start = time.monotonic()
        self.timeout, self.answered = timeout, False
        if timeout is not None:
            self.watchdog.arm(start + timeout, interp.id, threading.get_ident())
        sandbox = self.sandbox
        threads = ()
        try:
            # Compiled here: the script's interpreter need not load the
            # compiler's AST types (~2 ms). Hostile source only parses here.
            code, last = sandbox._compile(source)
        except BaseException as e:
            outcome = sandbox._failed_outcome(e)
        else:
            try:
                interp.prepare_main({'__sandbox_limit__': output_limit,
                                     '__sandbox_code__': code,
                                     '__sandbox_last__': last,
                                     '__sandbox_inputs__': inputs,
                                     '__sandbox_allow__': tuple(sorted(allow)),
                                     '__sandbox_scratch__': scratch})
                interp.exec(sandbox._RUN_CODE)
                outcome = self.outcome_of(interp)
                threads = outcome.pop('threads', ())
                if not isinstance(threads, tuple) or not all(isinstance(t, int) for t in threads):
                    threads = ()
            except BaseException as e:
                outcome = {'status': 'error', 'value': None, 'stdout': '', 'stderr': '',
                           'error': (type(e).__name__, sandbox._safe_str(e), '')}
        timed_out = self.watchdog.disarm()
        outcome['elapsed'] = time.monotonic() - start
        outcome['stuck'] = False
        self.sandbox._settle(outcome, timed_out, timeout)
        stuck = False
        if threads and not self.sandbox._stop_threads(interp, threads, self.config['grace']):
            stuck = outcome['stuck'] = True
        data = _subinterp.dumps(outcome)
        if len(data) > self.config['value_limit']:
            outcome.update(value=None, status='error', stdout=outcome['stdout'][:1000],
                           stderr=outcome['stderr'][:1000],
                           error=('ValueError', f"the script's result is {len(data)} bytes, "
                                  f"over the limit of {self.config['value_limit']}", ''))
            data = _subinterp.dumps(outcome)
        self.reply(data)
        _clear(self.config['scratch'])
        if stuck:
            os._exit(0)  # a thread that will not stop: the worker ends with it
        self.used.append(interp)

    def outcome_of(self, interp):
        """The script's outcome dict, as data made in its own interpreter
        (wire bytes, read here with the checked decoder: nothing the script
        made is rebuilt in this interpreter)."""
        try:
            data = _subinterp.main_wire(interp.id, '__sandbox_outcome__')
        except self.sandbox.NotShareableError as e:
            interp.exec('__sandbox_outcome__["value"] = None')
            data = _subinterp.main_wire(interp.id, '__sandbox_outcome__')
            outcome = _checked(_subinterp.loads(data))
            if outcome.get('status') == 'ok':
                outcome['status'] = 'error'
                outcome['error'] = ('NotShareableError', "the script's value cannot leave the "
                                    f"worker process: {e}", '')
            return outcome
        return _checked(_subinterp.loads(data))

    def idle(self):
        """Between scripts: a spare ready, then used interpreters closed
        one at a time while no script waits (under load they wait for the
        worker's end, which takes them all at once)."""
        if self.spare is None:
            self.spare = self.make_spare()
        closed = False
        while self.used and not select.select([self.fd_in], [], [], 0)[0]:
            self.used.pop().close()
            closed = True
        if closed and not self.used:
            _subinterp.trim_memory()  # the freed memory back to the system


def _checked(outcome):
    """`outcome` if it has the shape the prelude gives it; a script that
    reached into the prelude may have made it anything."""
    from . import sandbox
    error = outcome.get('error') if isinstance(outcome, dict) else None
    if (isinstance(outcome, dict) and outcome.get('status') in sandbox.STATUSES
            and isinstance(outcome.get('stdout'), str) and isinstance(outcome.get('stderr'), str)
            and (error is None or (isinstance(error, tuple) and len(error) == 3
                                   and all(isinstance(part, str) for part in error)))):
        return outcome
    return {'status': 'error', 'value': None, 'stdout': '', 'stderr': '', 'threads': (),
            'error': ('SandboxError', "the script's result does not have the sandbox's shape "
                                      '(the script changed the sandbox)', '')}


def worker_main(fd_in, fd_out, config):
    try:
        info = _confine(config, (fd_in, fd_out))
        worker = _Worker(fd_in, fd_out, config)
        worker.spare = worker.make_spare()
        if config['memory'] is not None:
            import resource
            # The address space: what the worker has now, the script's
            # limit, and room for the interpreters it keeps until it ends.
            limit = _vm_size() + config['memory'] + config['memory_slack']
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            info['address_space'] = limit
    except BaseException as e:
        import traceback
        write_frame(fd_out, ('failed', f'{type(e).__name__}: {e}',
                             ''.join(traceback.format_exception(e))))
        return 1
    info['pid'] = os.getpid()
    write_frame(fd_out, ('ready', info))
    while True:
        try:
            job = read_frame(fd_in)
        except (EOFError, ValueError, OSError):
            break
        if job is None:
            break
        source, inputs, timeout, output_limit, allow = job
        worker.run(source, inputs, timeout, output_limit, allow)
        worker.idle()
    os._exit(0)  # the interpreters it keeps go with the process, unclosed


def _clear(root):
    """Empties the scratch folder between scripts: nothing of one script
    reaches the next."""
    import shutil
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


if __name__ == '__main__':
    launcher_main(int(sys.argv[1]))
