"""Runs real redis-server and real Celery workers for the tests and the
benchmark of subinterp.celery (tests/python/test_celery.py,
bench/bench_celery.py).

Debian 12's Celery packages are built for Python 3.11; they load from 3.12
and 3.13 with /usr/lib/python3/dist-packages on the path and the shims in
debian_celery_compat/ (first on the path, so that every interpreter gets
them).
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
COMPAT_DIR = os.path.join(HERE, 'debian_celery_compat')
DIST_PACKAGES = '/usr/lib/python3/dist-packages'


def use_debian_packages():
    """Makes Debian's Celery importable in this process: the shims, then
    dist-packages at the end of sys.path (after this Python's own)."""
    if 'debian_celery_compat' not in sys.modules:
        import importlib.util
        spec = importlib.util.spec_from_file_location(
            'debian_celery_compat', os.path.join(COMPAT_DIR, 'sitecustomize.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    if os.path.isdir(DIST_PACKAGES) and DIST_PACKAGES not in sys.path:
        sys.path.append(DIST_PACKAGES)


def missing():
    """Why Celery with Redis cannot run here, or None."""
    if shutil.which('redis-server') is None:
        return 'redis-server is not installed (bash scripts/deps.sh installs it)'
    use_debian_packages()
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        return f'Celery or redis-py does not import: {exc}'
    return None


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what, proc=None, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    text = ''
    if log is not None:
        with open(log, errors='replace') as f:
            text = f.read()[-6000:]
    raise AssertionError(f'timed out waiting for {what}\n{text}')


class Redis:
    """redis-server on a free loopback port, persistence off."""

    def __init__(self, directory):
        self.proc = None
        for _ in range(5):
            self.port = free_port()
            self.log = os.path.join(directory, f'redis-{self.port}.log')
            self.proc = subprocess.Popen(
                ['redis-server', '--port', str(self.port), '--bind', '127.0.0.1',
                 '--save', '', '--appendonly', 'no', '--dir', directory,
                 '--logfile', self.log],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for(self._answers, 10, 'redis-server', proc=self.proc)
                return
            except AssertionError:
                stop(self.proc)  # the port was taken meanwhile: another one
        raise AssertionError(f'redis-server did not start; see {self.log}')

    def _answers(self):
        try:
            with socket.create_connection(('127.0.0.1', self.port), timeout=1) as s:
                s.sendall(b'PING\r\n')
                return s.recv(16).startswith(b'+PONG')
        except OSError:
            return False

    def url(self, db):
        return f'redis://127.0.0.1:{self.port}/{db}'

    def stop(self):
        stop(self.proc)


def worker_env(redis, *paths):
    env = dict(os.environ)
    env['CELERY_BROKER_URL'] = redis.url(0)
    env['CELERY_RESULT_BACKEND'] = redis.url(1)
    path = [COMPAT_DIR, *paths]
    if env.get('PYTHONPATH'):  # absolute: the worker has a cwd of its own
        path.extend(os.path.abspath(p) for p in env['PYTHONPATH'].split(os.pathsep) if p)
    path.append(DIST_PACKAGES)
    env['PYTHONPATH'] = os.pathsep.join(path)
    env['PYTHONWARNINGS'] = 'ignore::SyntaxWarning'  # Debian's pytz on 3.12+
    return env


class Worker:
    """``python -m celery -A <app> worker`` in its own session, its log in a
    file; stopped by its process id."""

    def __init__(self, app, redis, directory, *args, cwd=None, paths=()):
        self.log = tempfile.NamedTemporaryFile(
            'w+', dir=directory, prefix='worker-', suffix='.log', delete=False).name
        self.name = f'w{os.getpid()}-{free_port()}@localhost'
        with open(self.log, 'w') as out:
            self.proc = subprocess.Popen(
                [sys.executable, '-m', 'celery', '-A', app, 'worker',
                 '-n', self.name, '-l', 'info', '--without-mingle',
                 '--without-gossip', *args],
                cwd=cwd or HERE, env=worker_env(redis, cwd or HERE, *paths),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: 'ready.' in self.text(), 120, 'the Celery worker',
                 proc=self.proc, log=self.log)

    @property
    def pid(self):
        return self.proc.pid

    def text(self):
        with open(self.log, errors='replace') as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Sends ``sig``; returns the exit status, killing the worker if it
        has not exited within ``timeout``."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop(self.proc)
            raise AssertionError(f'the worker did not exit within {timeout} s of '
                                 f'signal {sig}\n{self.text()[-6000:]}')


def stop(proc, timeout=10):
    """Stops ``proc`` (and its session) by its process id."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout)
