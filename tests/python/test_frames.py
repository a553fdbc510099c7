"""sys._current_frames() and sys._current_exceptions() with sub-interpreters.

CPython 3.12 and 3.13 implement both by reading the threads of every
interpreter without their GILs, which aborts the process while another
interpreter runs Python. subinterp replaces them, in every interpreter it
creates and in every interpreter that imports it, by versions that list the
calling interpreter's threads only. Each test runs a script in a fresh
python, so that a crash fails one test instead of the runner.
"""

import unittest

from helpers import ScriptTestBase

# Shared by the scripts: busy work for other interpreters, a walk of a
# frame's stack as profilers do, and threads that keep interpreters busy.
_PRELUDE = '''
import sys
import threading
import time

import subinterp
from subinterp.futures import InterpreterPoolExecutor


def busy_for(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += sum(i * i for i in range(100))
    return n


def main_spin(stop):
    n = 0
    while not stop.is_set():
        n += sum(i * i for i in range(100))
    return n


def stack_names(frame):
    names = []
    while frame is not None:
        code = frame.f_code
        names.append(code.co_name)
        code.co_filename, frame.f_lineno   # what a profiler reads
        frame = frame.f_back
    return names


class Spinners:
    """Threads that keep the given interpreters running busy_for."""

    def __init__(self, interps):
        self.interps = interps
        self.stop = threading.Event()
        self.errors = []
        self.threads = [threading.Thread(target=self.run, args=(i,))
                        for i in interps]
        for t in self.threads:
            t.start()
        while not all(i.is_running() for i in interps):
            time.sleep(0.001)

    def run(self, interp):
        try:
            while not self.stop.is_set():
                interp.call(busy_for, 0.02)
        except BaseException as exc:
            self.errors.append(exc)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        assert not self.errors, self.errors


def busy_executor(tasks, seconds):
    """An executor whose worker interpreter runs busy_for meanwhile."""
    ex = InterpreterPoolExecutor(max_workers=1)
    futures = [ex.submit(busy_for, seconds) for _ in range(tasks)]
    while not futures[0].running() and not futures[0].done():
        time.sleep(0.001)
    return ex, futures


def finish_executor(ex, futures):
    assert all(f.result() > 0 for f in futures)
    ex.shutdown()
'''


class CrashTests(ScriptTestBase):
    """Calls that abort the process without the replacements."""

    def test_main_interpreter_while_sub_interpreters_run_python(self):
        out = self.assert_script_ok(_PRELUDE + '''
interps = [subinterp.create() for _ in range(2)]
spinners = Spinners(interps)
ex, futures = busy_executor(3, 0.2)

def sample():
    me = threading.get_ident()
    for _ in range(200):
        frames = sys._current_frames()
        exceptions = sys._current_exceptions()
        assert frames[me].f_code.co_name == 'sample', frames[me]
        assert me in exceptions
        for ident, frame in frames.items():
            # busy_for runs only in the other interpreters.
            assert 'busy_for' not in stack_names(frame), (ident, stack_names(frame))
        time.sleep(0.0005)

sample()
spinners.finish()
finish_executor(ex, futures)
for interp in interps:
    interp.close()
print('ok')
''')
        self.assertEqual(out.split(), ['ok'])

    def test_sub_interpreter_while_main_and_another_run_python(self):
        out = self.assert_script_ok(_PRELUDE + '''
def sample_here(count):
    me = threading.get_ident()
    foreign = set()
    for _ in range(count):
        frames = sys._current_frames()
        exceptions = sys._current_exceptions()
        assert frames[me].f_code.co_name == 'sample_here', frames[me]
        assert me in exceptions
        for frame in frames.values():
            foreign.update(n for n in stack_names(frame)
                           if n in ('main_spin', 'busy_for'))
    return sorted(foreign)

sampler, other = subinterp.create(), subinterp.create()
spinners = Spinners([other])
stop = threading.Event()
helper = threading.Thread(target=main_spin, args=(stop,))
helper.start()
result = []
caller = threading.Thread(target=lambda: result.append(sampler.call(sample_here, 200)))
caller.start()
while caller.is_alive():
    main_spin_once = sum(i * i for i in range(100))
caller.join()
stop.set()
helper.join()
spinners.finish()
print(result)
''')
        self.assertEqual(out.split('\n')[0], '[[]]')

    def test_profiler_thread_sampling_every_millisecond(self):
        out = self.assert_script_ok(_PRELUDE + '''
import collections

interps = [subinterp.create() for _ in range(2)]
spinners = Spinners(interps)
ex, futures = busy_executor(2, 0.3)
samples = collections.Counter()
errors = []

def profile(seconds):
    me = threading.get_ident()
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            for ident, frame in sys._current_frames().items():
                if ident != me:
                    samples.update(stack_names(frame))
            sys._current_exceptions()
            time.sleep(0.001)
    except BaseException as exc:
        errors.append(exc)

profiler = threading.Thread(target=profile, args=(0.5,))
profiler.start()
stop = threading.Event()
worker = threading.Thread(target=main_spin, args=(stop,))
worker.start()
profiler.join()
stop.set()
worker.join()
spinners.finish()
finish_executor(ex, futures)
assert not errors, errors
print(samples['main_spin'] > 0, samples['busy_for'])
''')
        self.assertEqual(out.split(), ['True', '0'])

    def test_profiler_thread_inside_a_sub_interpreter(self):
        out = self.assert_script_ok(_PRELUDE + '''
def profile_here(seconds):
    import collections
    samples = collections.Counter()
    me = threading.get_ident()
    def profile():
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for ident, frame in sys._current_frames().items():
                if ident != threading.get_ident():
                    samples.update(stack_names(frame))
            sys._current_exceptions()
            time.sleep(0.001)
    def sub_work():
        t = threading.Thread(target=profile)
        t.start()
        while t.is_alive():
            sum(i * i for i in range(100))
        t.join()
    sub_work()
    return samples['sub_work'] > 0, samples['main_spin'], samples['busy_for']

sampler, other = subinterp.create(), subinterp.create()
spinners = Spinners([other])
stop = threading.Event()
spin = threading.Thread(target=main_spin, args=(stop,))
spin.start()
print(sampler.call(profile_here, 0.5))
stop.set()
spin.join()
spinners.finish()
''')
        self.assertEqual(out.strip(), '(True, 0, 0)')


_LISTING = '''
import sys
import threading

import subinterp


def stack_names(frame):
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names


def waiter(release):
    release.wait()


def handler(ready, release):
    try:
        raise KeyError('marker')
    except KeyError:
        ready.set()
        release.wait()


def check_listing(foreign):
    """Lists this interpreter's threads; returns what is wrong. `foreign` is
    the id of a live thread that runs only in another interpreter."""
    problems = []
    ready, release = threading.Event(), threading.Event()
    w = threading.Thread(target=waiter, args=(release,))
    h = threading.Thread(target=handler, args=(ready, release))
    w.start()
    h.start()
    ready.wait()
    try:
        me = threading.get_ident()
        frames = sys._current_frames()
        exceptions = sys._current_exceptions()
        if me not in frames or frames[me].f_code.co_name != 'check_listing':
            problems.append(('own frame', frames.get(me)))
        if 'waiter' not in stack_names(frames.get(w.ident)):
            problems.append(('waiter', stack_names(frames.get(w.ident))))
        if 'handler' not in stack_names(frames.get(h.ident)):
            problems.append(('handler', stack_names(frames.get(h.ident))))
        if foreign in frames or foreign in exceptions:
            problems.append('a thread of another interpreter is listed')
        if not set(frames) <= set(exceptions):
            problems.append(('threads without an entry', set(frames) - set(exceptions)))
        if not all(e is None or isinstance(e, BaseException)
                   for e in exceptions.values()):
            problems.append(('values', exceptions))
        handled = exceptions.get(h.ident)
        if not (type(handled) is KeyError and handled.args == ('marker',)):
            problems.append(('handled', handled))
        if exceptions.get(w.ident, 'missing') is not None:
            problems.append(('waiter exception', exceptions.get(w.ident, 'missing')))
        if exceptions.get(me, 'missing') is not None:
            problems.append(('own exception', exceptions.get(me, 'missing')))
        try:
            raise ValueError('own')
        except ValueError as own:
            if sys._current_exceptions().get(me) is not own:
                problems.append('the exception being handled here is not listed')
    finally:
        release.set()
        w.join()
        h.join()
    return problems
'''


class ListingTests(ScriptTestBase):
    """What the replacements list: the calling interpreter's threads, with
    the same shapes as CPython's."""

    def test_main_interpreter_lists_its_own_threads(self):
        out = self.assert_script_ok(_LISTING + '''
interp = subinterp.create()
interp.exec("""if True:
    import threading
    release = threading.Event()
    t = threading.Thread(target=release.wait)
    t.start()
""")
foreign = interp.call(eval, 't.ident')
print(check_listing(foreign))
interp.exec('release.set(); t.join()')
''')
        self.assertEqual(out.strip(), '[]')

    def test_sub_interpreter_lists_its_own_threads(self):
        out = self.assert_script_ok(_LISTING + '''
interp = subinterp.create()
release = threading.Event()
t = threading.Thread(target=release.wait)
t.start()
print(interp.call(check_listing, t.ident))
release.set()
t.join()
''')
        self.assertEqual(out.strip(), '[]')

    def test_installed_by_import_and_in_created_interpreters(self):
        out = self.assert_script_ok('''
import sys
original = sys._current_frames, sys._current_exceptions
events = []
sys.addaudithook(lambda event, args: events.append(event)
                 if event.startswith('sys._current_') else None)
import subinterp
frames, exceptions = sys._current_frames, sys._current_exceptions
print(frames is not original[0], exceptions is not original[1])
print(frames.__name__, frames.__module__, frames.__self__ is sys,
      exceptions.__name__, exceptions.__module__)
frames(), exceptions()
print(events)

def inside():
    import sys
    return [f.__name__ + ' ' + str('calling interpreter' in f.__doc__)
            for f in (sys._current_frames, sys._current_exceptions)]
print(subinterp.create().call(inside))
''')
        self.assertEqual(out.splitlines(), [
            'True True',
            '_current_frames sys True _current_exceptions sys',
            "['sys._current_frames', 'sys._current_exceptions']",
            "['_current_frames True', '_current_exceptions True']",
        ])

    def test_installed_by_import_in_an_interpreter_made_by_cpython(self):
        out = self.assert_script_ok('''
import subinterp
try:
    import _interpreters as raw          # 3.13
except ImportError:
    import _xxsubinterpreters as raw     # 3.12
rid = raw.create()
failure = raw.run_string(rid, """if True:
    import sys
    original = sys._current_frames
    import subinterp
    assert sys._current_frames is not original
    assert 'calling interpreter' in sys._current_exceptions.__doc__
    assert list(sys._current_frames()) == [__import__('threading').get_ident()]
""")
raw.destroy(rid)
print(failure)
''')
        self.assertEqual(out.strip(), 'None')


if __name__ == '__main__':
    unittest.main()
