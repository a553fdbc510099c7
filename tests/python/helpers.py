"""Shared test helpers: a TestCase base that cleans up interpreters, a
context manager that keeps an interpreter running, and running scripts in a
fresh python so that a crash fails one test instead of killing the runner."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest

import subinterp
import targets

# Whether a sanitizer's runtime is loaded (CTest sets its options).
UNDER_SANITIZER = any(name in os.environ
                      for name in ('ASAN_OPTIONS', 'TSAN_OPTIONS'))
# ThreadSanitizer in particular: it cannot run a forked child that starts
# threads, it delivers a signal to a thread only when that thread next calls
# a function it intercepts (never, for a thread spinning in Python code in an
# interpreter whose GIL nobody else wants), and its shadow memory counts in
# the process's peak RSS.
UNDER_TSAN = 'TSAN_OPTIONS' in os.environ

# Seconds a script may take before its test fails as hung. Each takes a few
# seconds; sanitizers slow them down; SUBINTERP_TEST_SCRIPT_TIMEOUT overrides.
SCRIPT_TIMEOUT = float(os.environ.get('SUBINTERP_TEST_SCRIPT_TIMEOUT',
                                      180 if UNDER_SANITIZER else 60))


class TestBase(unittest.TestCase):
    """Closes, after each test, the interpreters the test left open."""

    def setUp(self):
        self._before = {interp.id for interp in subinterp.list_all()}

    def tearDown(self):
        for interp in subinterp.list_all():
            if interp.id in self._before:
                continue
            with contextlib.suppress(subinterp.InterpreterError):
                interp.close()

    def pipe(self):
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        return r, w

    @contextlib.contextmanager
    def running(self, interp):
        """Keep ``interp`` running a call (in another thread) for the body."""
        r_in, w_in = self.pipe()
        r_out, w_out = self.pipe()
        errors = []

        def run():
            try:
                interp.call(targets.block, r_in, w_out)
            except BaseException as exc:  # reported below
                errors.append(exc)
                os.write(w_out, b'E')

        t = threading.Thread(target=run)
        t.start()
        try:
            started = os.read(r_out, 1)
            if started != b'S':
                raise AssertionError(f'the call did not start: {errors!r}')
            yield
        finally:
            os.write(w_in, b'x')
            t.join(SCRIPT_TIMEOUT)
        self.assertFalse(t.is_alive(), 'the blocked call never returned')
        self.assertEqual(errors, [])


def write_script(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(textwrap.dedent(text))
    return path


# The first line of a report by ASan, LSan, TSan or UBSan.
_SANITIZER_REPORT = re.compile(
    r'^(==\d+==ERROR: \w+Sanitizer|WARNING: ThreadSanitizer'
    r'|\S+:\d+:\d+: runtime error: )', re.MULTILINE)


def check_no_sanitizer_report(stderr):
    """Fails if a sanitizer reported an error in a script's stderr. A report
    on a thread other than the main one can be cut short, and the exit status
    left at 0, when the main thread ends the process while the report is
    being written: the status alone does not show it."""
    match = _SANITIZER_REPORT.search(stderr or '')
    if match:
        raise AssertionError('sanitizer report in the script:\n'
                             + stderr[match.start():][:6000])


def run_script(text, *, files=None, args=(), timeout=SCRIPT_TIMEOUT):
    """Run ``text`` as a script file in a fresh python and return the
    CompletedProcess (text output). ``files`` maps more file names to their
    text, written beside the script. Fails if a sanitizer reported an
    error in it."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, body in (files or {}).items():
            write_script(tmp, name, body)
        script = write_script(tmp, 'script.py', text)
        try:
            proc = subprocess.run(
                [sys.executable, script, *args], cwd=tmp,
                capture_output=True, text=True, timeout=timeout,
                env=os.environ.copy())
        except subprocess.TimeoutExpired as exc:
            # subprocess.run() killed it; report what it printed.
            proc = subprocess.CompletedProcess(
                exc.cmd, None, _text(exc.stdout), _text(exc.stderr))
    check_no_sanitizer_report(proc.stderr)
    return proc


def _text(data):
    if isinstance(data, bytes):
        return data.decode(errors='replace')
    return data or ''


def describe(proc):
    rc = proc.returncode
    if rc is None:
        how = 'hung: did not exit within its timeout, killed'
    elif rc < 0:
        try:
            how = f'killed by {signal.Signals(-rc).name}'
        except ValueError:
            how = f'killed by signal {-rc}'
    else:
        how = f'exit code {rc}'
    return (f'{how}\n--- stdout ---\n{proc.stdout[-4000:]}'
            f'\n--- stderr ---\n{proc.stderr[-4000:]}')


class ScriptTestBase(TestBase):

    def assert_script_ok(self, text, *, returncode=0, quiet_stderr=True,
                         **kwargs):
        """Run a script; it must end with ``returncode``, without a fatal
        error, and (if ``quiet_stderr``) print nothing on stderr. Returns
        its stdout."""
        proc = run_script(text, **kwargs)
        self.assertEqual(proc.returncode, returncode, describe(proc))
        self.assertNotIn('Fatal Python error', proc.stderr, describe(proc))
        if quiet_stderr:
            self.assertEqual(proc.stderr, '', describe(proc))
        return proc.stdout


def single_phase_module():
    """Name of an extension module with single-phase init, which CPython
    3.12 and 3.13 both refuse in an isolated interpreter (checked on both).
    _testsinglephase comes last: its static state, once initialized in an
    isolated interpreter, crashes a later import on 3.12 (a CPython bug)."""
    import importlib.util
    for name in ('_curses', 'readline', '_testsinglephase'):
        if importlib.util.find_spec(name) is not None:
            return name
    raise unittest.SkipTest('no single-phase extension module here')


# How long a test lets a thread settle into a blocking call before it acts.
SETTLE = 0.2
# Blocking calls that a test expects to end early still get a timeout, so
# that a bug fails the test instead of hanging the run.
SAFETY = 10.0


class Call(threading.Thread):
    """Runs ``func(*args)`` in a thread; keeps its result or exception and
    when it ended."""

    def __init__(self, func, *args):
        super().__init__(daemon=True)
        self.func, self.args = func, args
        self.result = self.error = self.ended = None
        self.start()

    def run(self):
        try:
            self.result = self.func(*self.args)
        except BaseException as exc:
            self.error = exc
        self.ended = time.monotonic()

    def finish(self, test):
        self.join(SAFETY + 5)
        test.assertFalse(self.is_alive(), 'the call never returned')
        return self


def elapsed(func, *args, **kwargs):
    """Seconds ``func`` took, and the exception it raised (or None)."""
    start = time.monotonic()
    try:
        func(*args, **kwargs)
        error = None
    except Exception as exc:
        error = exc
    return time.monotonic() - start, error
