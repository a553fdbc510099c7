"""A sandbox worker process (isolation='process'): started clean (exec, never
fork) by subinterp.sandbox, it confines itself, then runs the scripts it is
sent one at a time, each in a fresh sub-interpreter, and answers with their
results.

Its confinement, in order, before the first script:
  1. fds 0, 1 and 2 become /dev/null; it works in its scratch folder.
  2. rlimits: no core files, open files, file size, CPU time, and (when a
     memory limit is asked) address space.
  3. uid and gid `nobody` when it runs as root and the Python install is
     readable by them; otherwise it keeps its uid without capabilities.
  4. _subinterp.lockdown(): no new privileges, no capabilities, Landlock
     (writes only in the scratch folder, reads only of the Python install
     and system libraries; no signals out), and a seccomp filter (no new
     processes, sockets, signals to other processes, tracing, mounts,
     limits raised, file modes or owners changed).

Frames both ways: an 8-byte little-endian length, then the value in the
core's wire format (_subinterp.dumps / loads).
"""

import os
import resource
import signal
import sys

from . import _subinterp

_FRAME_HEADER = 8


def read_frame(fd):
    header = _read_exact(fd, _FRAME_HEADER)
    if header is None:
        return None
    size = int.from_bytes(header, 'little')
    data = _read_exact(fd, size)
    if data is None:
        raise EOFError('the stream ended inside a frame')
    return _subinterp.loads(data)


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
    data = _subinterp.dumps(obj)
    view = memoryview(len(data).to_bytes(_FRAME_HEADER, 'little') + data)
    while view:
        view = view[os.write(fd, view):]


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


def _confine(config):
    null = os.open('/dev/null', os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
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
    dropped = None
    if os.geteuid() == 0 and config['drop_to'] is not None:
        uid, gid = config['drop_to']
        if all(_readable_by_others(p) for p in (sys.base_prefix, sys.prefix, *config['homes'])):
            os.chown(scratch, uid, gid)
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            dropped = (uid, gid)
            # Threads of this uid: enough for the worker, not a thread bomb.
            resource.setrlimit(resource.RLIMIT_NPROC, (config['threads'], config['threads']))
    # The first interpreter prepares the main one (3.12 opens an event loop,
    # and with it a socket pair): before the filter refuses sockets.
    from . import create
    create().close()
    allow = set(config['allow'])
    info = _subinterp.lockdown(write_roots=[scratch, '/dev/null'],
                               read_roots=config['read_roots'],
                               subprocess='subprocess' in allow, network='network' in allow,
                               signals='process' in allow)
    info['uid'] = os.getuid()
    info['dropped'] = dropped is not None
    return info


def main():
    fd_in, fd_out = int(sys.argv[1]), int(sys.argv[2])
    config = read_frame(fd_in)
    try:
        info = _confine(config)
        from . import sandbox
        box = sandbox.Sandbox(workers=1, spares=1, grace=config['grace'],
                              _scratch_root=config['scratch'])
        box._spares.wait_ready()
        if config['memory'] is not None:
            # The address space: what the worker has now, the script's
            # limit, and room for the next spare interpreter and for what
            # CPython keeps of each closed one until the worker is recycled.
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
        except (EOFError, ValueError):
            break
        if job is None:
            break
        source, inputs, timeout, output_limit, allow = job
        try:
            r = box.run(source, inputs=inputs, timeout=timeout, output_limit=output_limit,
                        allow=allow)
        except BaseException as e:
            r = sandbox.Result('error', error=sandbox._error_of(e))
        _clear(config['scratch'])
        reply = {'status': r.status, 'stdout': r.stdout, 'stderr': r.stderr,
                 'error': (r.error.type, r.error.message, r.error.traceback) if r.error else None,
                 'elapsed': r.elapsed, 'stuck': r.stuck, 'value': r.value}
        try:
            data = _subinterp.dumps(reply)
        except Exception as e:
            reply['value'] = None
            reply['status'] = 'error'
            reply['error'] = (type(e).__name__,
                              f"the script's value cannot leave the worker process: {e}", '')
            data = _subinterp.dumps(reply)
        if len(data) > config['value_limit']:
            reply.update(value=None, status='error', stdout=r.stdout[:1000],
                         stderr=r.stderr[:1000],
                         error=('ValueError', f"the script's result is {len(data)} bytes, over "
                                f"the limit of {config['value_limit']}", ''))
        write_frame(fd_out, reply)
        if r.stuck:
            break  # its thread is left behind: this worker is done
    os._exit(0)  # a stuck script's thread is not waited for


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
    sys.exit(main())
