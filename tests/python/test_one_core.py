"""One core per process: the subinterp package and C++ code in the same
process (here _subinterp_probe, a C++ extension of the tests that uses the
C++ API of libsubinterp) share one registry of interpreters and queues and
one shutdown(); the library exports its public API and nothing else."""

import os
import re
import shutil
import subprocess
import sys
import textwrap
import unittest

import subinterp
from subinterp import _subinterp

from helpers import ScriptTestBase, TestBase

BUILD_DIR = os.environ.get('SUBINTERP_BUILD_DIR', '')
PROBE_DIR = os.path.join(BUILD_DIR, 'tests', 'probe')
SOURCE_DIR = os.environ.get(
    'SUBINTERP_SOURCE_DIR',
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PACKAGE_DIR = os.path.dirname(os.path.realpath(_subinterp.__file__))


def import_probe():
    if PROBE_DIR not in sys.path:
        sys.path.insert(0, PROBE_DIR)
    import _subinterp_probe
    return _subinterp_probe


def mapped_cores():
    with open('/proc/self/maps') as maps:
        return sorted({line.split()[-1] for line in maps if 'libsubinterp' in line})


class CppCodeSeesThePackagesObjects(TestBase):

    def setUp(self):
        super().setUp()
        self.probe = import_probe()

    def test_one_library_in_the_process(self):
        core = os.path.realpath(self.probe.core_path())
        self.assertEqual(os.path.dirname(core), PACKAGE_DIR)
        self.assertEqual(mapped_cores(), [core])

    def test_interpreters_made_in_python_are_listed_by_cpp(self):
        a = subinterp.create()
        b = subinterp.create()
        ids = self.probe.interpreter_ids()
        self.assertEqual(ids, sorted(i.id for i in subinterp.list_all()))
        self.assertIn(a.id, ids)
        self.assertIn(b.id, ids)
        # The C++ API runs code in an interpreter the package made.
        self.probe.exec_in(a.id, 'made_by = "cpp"')
        a.exec('assert made_by == "cpp"')
        b.close()
        self.assertNotIn(b.id, self.probe.interpreter_ids())
        with self.assertRaisesRegex(RuntimeError, 'does not exist|not found|closed'):
            self.probe.exec_in(b.id, 'pass')

    def test_queues_by_id_both_ways(self):
        queue = subinterp.create_queue()
        self.probe.queue_put(queue.id, ('from cpp', 1, [2.5]))
        self.assertEqual(queue.get(timeout=10), ('from cpp', 1, [2.5]))
        queue.put({'from': 'python'})
        self.assertEqual(self.probe.queue_get(queue.id, 10.0), {'from': 'python'})
        # A queue handle passed through the C++ API comes back as the
        # package's Queue object.
        self.probe.queue_put(queue.id, queue)
        item = queue.get(timeout=10)
        self.assertIs(type(item), subinterp.Queue)
        self.assertEqual(item.id, queue.id)

    def test_an_interpreter_made_by_python_feeds_cpp(self):
        interp = subinterp.create()
        queue = subinterp.create_queue()
        interp.call(lambda q: [q.put(i * i) for i in range(5)], queue)
        self.assertEqual([self.probe.queue_get(queue.id, 10.0) for _ in range(5)],
                         [0, 1, 4, 9, 16])

    def test_pool_workers_are_listed(self):
        from subinterp.futures import InterpreterPoolExecutor
        with InterpreterPoolExecutor(2) as pool:
            ids = list(pool.map(lambda _: __import__('subinterp').get_current().id,
                                range(8)))
            listed = self.probe.interpreter_ids()
            for worker in set(ids):
                self.assertIn(worker, listed)


class AnotherBuildIsRefused(TestBase):

    def test_extension_built_for_another_release(self):
        import_probe()  # puts its folder on sys.path
        with self.assertRaises(ImportError) as cm:
            import _subinterp_probe_other  # noqa: F401
        message = str(cm.exception)
        self.assertIn('_subinterp_probe_other', message)  # its file
        self.assertIn(f'the subinterp core in this process, {import_probe().core_path()}, is',
                      message)
        self.assertIn(f'subinterp {subinterp_version()}-other for CPython', message)
        self.assertIn(f'is subinterp {subinterp_version()} for CPython', message)
        # The process goes on with its one core.
        self.assertEqual(subinterp.create().call(abs, -1), 1)


def subinterp_version():
    with open(os.path.join(SOURCE_DIR, 'pyproject.toml')) as f:
        return re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)


class ShutdownRunsOnce(ScriptTestBase):

    PRELUDE = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {PROBE_DIR!r})
        import subinterp, _subinterp_probe as probe
        from subinterp.futures import InterpreterPoolExecutor
        interp = subinterp.create()
        queue = subinterp.create_queue()
        pool = InterpreterPoolExecutor(2)
        assert pool.submit(abs, -2).result() == 2
        assert len(probe.interpreter_ids()) >= 3
    ''')

    def test_cpp_first(self):
        out = self.assert_script_ok(self.PRELUDE + textwrap.dedent('''
            probe.shutdown()  # subinterp::shutdown() from C++ code
            assert [i.id for i in subinterp.list_all()] == [0], subinterp.list_all()
            assert probe.interpreter_ids() == [0]
            try:
                interp.exec('pass')
            except subinterp.InterpreterError:
                pass
            else:
                raise AssertionError('interpreter still open')
            try:
                subinterp.create()
            except subinterp.InterpreterError as exc:
                print('create refused:', exc)
            # The package's exit hook runs shutdown() again: nothing to do.
        '''))
        self.assertIn('create refused: the subinterp runtime has been shut down', out)

    def test_python_first(self):
        out = self.assert_script_ok(self.PRELUDE + textwrap.dedent('''
            subinterp._subinterp.shutdown()  # what the package's exit hook calls
            assert probe.interpreter_ids() == [0]
            probe.shutdown()  # returns at once
            print('done')
        '''))
        self.assertEqual(out, 'done\n')


class LibraryExports(unittest.TestCase):
    """nm -D on libsubinterp: the public API of include/subinterp, nothing
    of src/core."""

    @classmethod
    def setUpClass(cls):
        if shutil.which('nm') is None:
            raise unittest.SkipTest('nm (binutils) is not installed')
        sonames = [n for n in os.listdir(PACKAGE_DIR)
                   if re.fullmatch(r'libsubinterp\.so\.\d+\.\d+', n)]
        if not sonames:
            raise unittest.SkipTest('the core is built static (SUBINTERP_SHARED=OFF)')
        cls.library = os.path.join(PACKAGE_DIR, sonames[0])
        cls.version_node = 'SUBINTERP_' + sonames[0].split('.so.')[1]
        out = subprocess.run(['nm', '-D', '--defined-only', '-C', cls.library],
                             capture_output=True, text=True, check=True).stdout
        cls.symbols = [line.split(' ', 2)[2] for line in out.splitlines()
                       if line.count(' ') >= 2]
        headers = ''
        include = os.path.join(SOURCE_DIR, 'include', 'subinterp')
        for name in sorted(os.listdir(include)):
            with open(os.path.join(include, name)) as f:
                headers += f.read()
        cls.public_words = set(re.findall(r'[A-Za-z_]\w*', headers))

    def qualified_name(self, symbol):
        """subinterp::Queue::put for 'subinterp::Queue::put(...) const@@V'."""
        name = symbol.split('@')[0]
        for prefix in ('typeinfo name for ', 'typeinfo for ', 'vtable for ',
                       'VTT for '):
            if name.startswith(prefix):
                name = name[len(prefix):]
        depth = 0
        for i, ch in enumerate(name):  # cut the parameter list
            if ch == '<':
                depth += 1
            elif ch == '>':
                depth -= 1
            elif ch == '(' and depth == 0:
                return name[:i]
        return name

    def test_every_export_is_declared_in_the_public_headers(self):
        allowed_c = {'subinterp_core_marker_v1', self.version_node}
        internal = []
        for symbol in self.symbols:
            name = self.qualified_name(symbol)
            if name in allowed_c:
                continue
            parts = name.split('::')
            if parts[0] != 'subinterp' or not all(
                    re.sub(r'\[abi:\w+\]|<.*>|^~', '', p) in self.public_words
                    for p in parts[1:]):
                internal.append(symbol)
        self.assertEqual(internal, [], 'exported but not public API')

    def test_the_api_is_exported_with_its_version(self):
        names = {self.qualified_name(s) for s in self.symbols}
        for expected in ('subinterp::Interpreter::create', 'subinterp::Queue::put',
                         'subinterp::Pool::submit', 'subinterp::Value::capture',
                         'subinterp::shutdown', 'subinterp::Error',
                         'subinterp::NotShareable'):
            self.assertIn(expected, names)
        out = subprocess.run(['nm', '-D', '--defined-only', self.library],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if ' A ' not in line:
                self.assertTrue(line.endswith('@@' + self.version_node), line)

    def test_no_standard_library_instantiations(self):
        leaked = [s for s in self.symbols if s.startswith('std::')
                  or 'anonymous namespace' in s]
        self.assertEqual(leaked, [])


if __name__ == '__main__':
    unittest.main()
