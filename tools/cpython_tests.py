"""Run CPython 3.14's own tests of concurrent.interpreters and
InterpreterPoolExecutor against ``import subinterp``.

This script fetches nothing and copies no CPython code into the repository:
give it the ``Lib`` directory of a CPython 3.14 source checkout, or of an
installed 3.14 standard library that has its test suite (Debian's
``libpython3.14-testsuite`` puts it in ``/usr/lib/python3.14``). It copies
these files into a scratch directory outside the repository and adapts
their imports:

    test/test_interpreters/{test_api,test_queues,utils}.py
    test/test_concurrent_futures/{test_interpreter_pool,executor,util}.py
    test/_crossinterp_definitions.py, test/_code_definitions.py

``concurrent.interpreters`` becomes ``subinterp``, its ``_queues`` module
``subinterp.queues`` and ``concurrent.futures``'s executor
``subinterp.futures.InterpreterPoolExecutor``. The low-level modules that
the tests use for set-up and checks (``_interpreters``, ``_interpqueues``,
``_crossinterp``) are replaced by small stand-ins built on subinterp, on
3.12 and 3.13 alike, and the few helpers that 3.14's ``test.support`` and
``unittest`` have and the running Python lacks are added.

Then it runs the public tests (every class but ``LowLevelTests``, which
test CPython's private modules) with the running Python, and prints the
figures and each test that did not pass:

    PYTHONPATH=build/dev-py3.13/python:python \\
        python3.13 tools/cpython_tests.py /usr/lib/python3.14 /tmp/cpytests
"""

import os
import re
import subprocess
import sys
import textwrap

SUITES = {
    'cpy_interpreters': ('test/test_interpreters',
                         ['test_api.py', 'test_queues.py', 'utils.py']),
    'cpy_futures': ('test/test_concurrent_futures',
                    ['test_interpreter_pool.py', 'executor.py', 'util.py']),
}
TOP_FILES = ['test/_crossinterp_definitions.py', 'test/_code_definitions.py']
RUN = ['cpy_interpreters.test_api', 'cpy_interpreters.test_queues',
       'cpy_futures.test_interpreter_pool']
if len(sys.argv) > 3:
    RUN = sys.argv[3:]

# (pattern, replacement) applied to every copied file.
REWRITES = [
    (r"^_interpreters = import_helper\.import_module\('_interpreters'\)",
     'import _interpreters'),
    (r"^_queues = import_helper\.import_module\('_interpqueues'\)",
     'import _interpqueues as _queues'),
    (r'from concurrent\.interpreters import _queues as queues, _crossinterp',
     'from subinterp import queues; import _crossinterp'),
    (r'from concurrent\.interpreters import _queues as queues',
     'from subinterp import queues'),
    (r'from concurrent\.interpreters import \(',
     'from subinterp import ('),
    (r'from concurrent import interpreters',
     'import subinterp as interpreters'),
    (r'from concurrent\.futures\.interpreter import BrokenInterpreterPool',
     'from subinterp.futures import BrokenInterpreterPool'),
    (r'executor_type = futures\.InterpreterPoolExecutor',
     "executor_type = __import__('subinterp.futures').futures"
     '.InterpreterPoolExecutor'),
    (r'import test\._crossinterp_definitions as defs',
     'import _crossinterp_definitions as defs'),
    (r'from test\._code_definitions import',
     'from _code_definitions import'),
]

# Helpers of 3.14's test.support, unittest and asyncio that 3.12/3.13 lack.
COMPAT = '''
import asyncio, unittest
from test import support
if not hasattr(support, 'Py_GIL_DISABLED'):
    support.Py_GIL_DISABLED = False
if not hasattr(support, 'requires_gil_enabled'):
    support.requires_gil_enabled = lambda msg='': (lambda f: f)
if not hasattr(support, 'force_not_colorized'):
    support.force_not_colorized = lambda f: f
try:
    support.skip_if_sanitizer('', thread=True)
except (AttributeError, TypeError):
    support.skip_if_sanitizer = lambda *a, **k: (lambda f: f)
if not hasattr(support, 'gc_threshold'):
    import contextlib, gc
    @contextlib.contextmanager
    def gc_threshold(*args):
        old = gc.get_threshold()
        gc.set_threshold(*args)
        try:
            yield
        finally:
            gc.set_threshold(*old)
    support.gc_threshold = gc_threshold
if not hasattr(support, 'maybe_get_event_loop_policy'):
    support.maybe_get_event_loop_policy = (
        lambda: asyncio.events._event_loop_policy)
if not hasattr(asyncio.events, '_set_event_loop_policy'):
    asyncio.events._set_event_loop_policy = asyncio.set_event_loop_policy
if not hasattr(unittest.TestCase, 'assertStartsWith'):
    def assertStartsWith(self, s, prefix, msg=None):
        if not s.startswith(prefix):
            self.fail(msg or f'{s!r} does not start with {prefix!r}')
    unittest.TestCase.assertStartsWith = assertStartsWith
'''

# Stand-ins for CPython's private modules, built on subinterp's public API.
INTERPRETERS = '''
"""Stand-in for CPython's _interpreters, on subinterp."""
import types
import subinterp
from subinterp import (InterpreterError, InterpreterNotFoundError,
                       NotShareableError)

WHENCE_UNKNOWN, WHENCE_RUNTIME, WHENCE_LEGACY_CAPI = 0, 1, 2
WHENCE_CAPI, WHENCE_XI, WHENCE_STDLIB = 3, 4, 5
_WHENCE = {'unknown': 0, 'runtime init': 1, 'C-API': 3,
           'subinterp module': 5}
_held = {}

def create(config=None, *, reqrefs=False):
    interp = subinterp.create()
    _held[interp.id] = interp
    return interp.id

def destroy(interpid, *, restrict=False):
    _held.pop(interpid, None)
    subinterp.Interpreter(interpid).close()

def exec(interpid, code, shared=None, *, restrict=False):
    interp = subinterp.Interpreter(interpid)
    if shared:
        interp.prepare_main(shared)
    try:
        interp.exec(code)
    except subinterp.ExecutionFailed as exc:
        return exc.excinfo
    return None

run_string = exec

def whence(interpid):
    return _WHENCE.get(subinterp.Interpreter(interpid).whence, 0)

def get_current():
    interp = subinterp.get_current()
    return interp.id, _WHENCE.get(interp.whence, 0)

def get_main():
    return 0, WHENCE_RUNTIME

def list_all(*, require_ready=False):
    return [(i.id, _WHENCE.get(i.whence, 0)) for i in subinterp.list_all()]

def is_running(interpid, *, restrict=False):
    return subinterp.Interpreter(interpid).is_running()

def is_shareable(obj):
    return subinterp.is_shareable(obj)

def new_config(name='isolated', /, **overrides):
    return types.SimpleNamespace(name=name, **overrides)
'''

INTERPQUEUES = '''
"""Stand-in for CPython's _interpqueues, on subinterp."""
import subinterp
from subinterp.queues import QueueError, QueueNotFoundError

def list_all():
    return [(q.id, None, None) for q in subinterp.queues.list_all()]

def destroy(qid):
    subinterp.Queue(qid).close()
'''

CROSSINTERP = '''
"""Stand-in for concurrent.interpreters._crossinterp, on subinterp."""
from subinterp import UNBOUND, UNBOUND_ERROR, UNBOUND_REMOVE
_UNBOUND_CONSTANT_TO_FLAG = {UNBOUND_REMOVE: 1, UNBOUND_ERROR: 2, UNBOUND: 3}
'''


def search_path():
    return [os.path.abspath(p) for p in
            os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]


def adapt(lib, out):
    os.makedirs(out, exist_ok=True)
    for name, text in (('_compat.py', COMPAT), ('_interpreters.py', INTERPRETERS),
                       ('_interpqueues.py', INTERPQUEUES),
                       ('_crossinterp.py', CROSSINTERP)):
        with open(os.path.join(out, name), 'w') as f:
            f.write(textwrap.dedent(text).lstrip())
    copies = [(os.path.join(lib, p), os.path.join(out, os.path.basename(p)))
              for p in TOP_FILES]
    for package, (folder, files) in SUITES.items():
        os.makedirs(os.path.join(out, package), exist_ok=True)
        open(os.path.join(out, package, '__init__.py'), 'w').close()
        copies += [(os.path.join(lib, folder, f), os.path.join(out, package, f))
                   for f in files]
    for src, dst in copies:
        with open(src, encoding='utf-8') as f:
            text = f.read()
        for pattern, repl in REWRITES:
            text = re.sub(pattern, repl, text, flags=re.M)
        # Scripts run with -I (no PYTHONPATH) find subinterp all the same.
        text = text.replace(
            'from concurrent.futures import InterpreterPoolExecutor\n\n'
            '            INITIALIZER_STATUS',
            f'import sys; sys.path[:0] = {search_path()!r}; '
            'from subinterp.futures import InterpreterPoolExecutor\n\n'
            '            INITIALIZER_STATUS')
        with open(dst, 'w', encoding='utf-8') as f:
            f.write('import _compat\n' + text)


RUNNER = '''
import sys, unittest
names = sys.argv[1:]
suite = unittest.defaultTestLoader.loadTestsFromNames(names)
def public(suite):
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from public(test)
        elif type(test).__name__ != 'LowLevelTests':
            yield test
outcomes = {}
class Result(unittest.TextTestResult):
    def _set(self, test, outcome, first=False):
        key = f'{type(test).__name__}.{test._testMethodName}'
        if not first or key not in outcomes:
            outcomes[key] = outcome
    def startTest(self, test):
        self._set(test, 'passed')
        super().startTest(test)
    def addFailure(self, test, err):
        self._set(test, 'failed'); super().addFailure(test, err)
    def addError(self, test, err):
        if isinstance(test, unittest.TestCase):
            self._set(test, 'failed')
        super().addError(test, err)
    def addSubTest(self, test, subtest, err):
        if err is not None:
            self._set(test, 'failed')
        super().addSubTest(test, subtest, err)
    def addSkip(self, test, reason):
        self._set(test, 'skipped'); super().addSkip(test, reason)
    def addExpectedFailure(self, test, err):
        self._set(test, 'xfail'); super().addExpectedFailure(test, err)
    def addUnexpectedSuccess(self, test):
        self._set(test, 'xpass'); super().addUnexpectedSuccess(test)
unittest.TextTestRunner(verbosity=2, resultclass=Result).run(
    unittest.TestSuite(public(suite)))
for key, outcome in sorted(outcomes.items()):
    print(f'RESULT {outcome} {key}')
'''


def run(out):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([out] + search_path())
    totals = {}
    for module in RUN:
        proc = subprocess.run([sys.executable, '-c', RUNNER, module], cwd=out,
                              env=env, capture_output=True, text=True,
                              timeout=1800)
        with open(os.path.join(out, module + '.log'), 'w') as f:
            f.write(proc.stdout + proc.stderr)
        counts = {}
        for outcome, test in re.findall(r'^RESULT (\w+) (\S+)$', proc.stdout,
                                        flags=re.M):
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome not in ('passed', 'xfail', 'skipped'):
                print(f'  {outcome:8} {test}')
        totals[module] = counts
        print(f'{module}: {counts} (exit {proc.returncode}; log in '
              f'{module}.log)')
    return totals


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    lib, out = sys.argv[1:3]
    adapt(os.path.abspath(lib), os.path.abspath(out))
    run(os.path.abspath(out))


if __name__ == '__main__':
    main()
