"""The subinterp API: the functions and Interpreter methods, as Python 3.14's
concurrent.interpreters defines them, and the values calls pass."""

import collections
import gc
import math
import os
import pickle
import sys
import threading
import time
import unittest

import subinterp
import targets
from helpers import ScriptTestBase, TestBase, single_phase_module

SCALE_HERE = 11


def _clean_main_names():
    return ['__builtins__', '__doc__', '__loader__', '__name__',
            '__package__', '__spec__']


def _main_names(interp):
    # CPython 3.12/3.13 (not 3.14) put __annotations__ in a new __main__.
    names = interp.call(targets.main_names)
    return [n for n in names if n != '__annotations__']


class ModuleTests(unittest.TestCase):

    def test_all_names_exist(self):
        pep734 = {'get_current', 'get_main', 'create', 'list_all',
                  'is_shareable', 'Interpreter', 'InterpreterError',
                  'InterpreterNotFoundError', 'ExecutionFailed',
                  'NotShareableError'}
        self.assertLessEqual(pep734, set(subinterp.__all__))
        for name in subinterp.__all__:
            self.assertTrue(hasattr(subinterp, name), name)

    def test_exception_hierarchy(self):
        self.assertTrue(issubclass(subinterp.InterpreterError, Exception))
        self.assertTrue(issubclass(subinterp.InterpreterNotFoundError,
                                   subinterp.InterpreterError))
        self.assertTrue(issubclass(subinterp.ExecutionFailed,
                                   subinterp.InterpreterError))
        self.assertTrue(issubclass(subinterp.NotShareableError, TypeError))

    def test_docstrings(self):
        for name in subinterp.__all__:
            obj = getattr(subinterp, name)
            self.assertTrue(obj.__doc__, name)
        for name in ('close', 'prepare_main', 'exec', 'call',
                     'call_in_thread', 'is_running', 'id', 'whence'):
            self.assertTrue(getattr(subinterp.Interpreter, name).__doc__, name)


class CreateTests(TestBase):

    def test_create(self):
        interp = subinterp.create()
        self.assertIsInstance(interp, subinterp.Interpreter)
        self.assertIn(interp, subinterp.list_all())
        self.assertEqual(interp.whence, 'subinterp module')
        self.assertFalse(interp.is_running())
        self.assertNotEqual(interp.id, subinterp.get_main().id)

    def test_distinct_ids(self):
        a, b = subinterp.create(), subinterp.create()
        self.assertNotEqual(a.id, b.id)
        self.assertNotEqual(a, b)

    def test_in_thread(self):
        made = []
        t = threading.Thread(target=lambda: made.append(subinterp.create()))
        t.start()
        t.join()
        self.assertEqual(len(made), 1)
        self.assertIn(made[0], subinterp.list_all())
        self.assertEqual(made[0].call(targets.identity, 5), 5)

    def test_in_subinterpreter(self):
        interp = subinterp.create()
        child_id = interp.call(targets.create_and_hold)
        child = subinterp.Interpreter(child_id)
        self.assertIn(child, subinterp.list_all())
        self.assertEqual(child.whence, 'subinterp module')
        self.assertEqual(child.call(targets.current_id), child_id)

    def test_after_closing_some(self):
        before = set(subinterp.list_all())
        a, b, c = (subinterp.create() for _ in range(3))
        a.close()
        b.close()
        d = subinterp.create()
        self.assertEqual(set(subinterp.list_all()), before | {c, d})

    def test_sys_path_copied(self):
        sys.path.append('/nonexistent/subinterp-test-entry')
        try:
            interp = subinterp.create()
        finally:
            sys.path.remove('/nonexistent/subinterp-test-entry')
        remote = interp.call(targets.get_sys_path)
        self.assertEqual(remote[-1], '/nonexistent/subinterp-test-entry')
        self.assertEqual(remote[:-1], sys.path)

    def test_main_namespace_is_clean(self):
        # Copying sys.path binds no name in the new __main__ (as in 3.14).
        interp = subinterp.create()
        self.assertEqual(_main_names(interp), _clean_main_names())

    def test_isolated_is_keyword_only(self):
        with self.assertRaises(TypeError):
            subinterp.create(False)


class GetTests(TestBase):

    def test_main(self):
        main = subinterp.get_main()
        self.assertEqual(main.id, 0)
        self.assertEqual(main.whence, 'runtime init')
        self.assertIs(main, subinterp.get_main())
        self.assertIs(main, subinterp.get_current())
        self.assertTrue(main.is_running())

    def test_current_in_subinterpreter(self):
        interp = subinterp.create()
        self.assertEqual(interp.call(targets.current_id), interp.id)
        self.assertEqual(interp.call(targets.current_whence),
                         'subinterp module')
        self.assertTrue(interp.call(targets.is_running_self))

    def test_main_from_subinterpreter(self):
        interp = subinterp.create()
        # get_main() in the other interpreter returns its own object for id
        # 0; it comes back here as ours.
        self.assertIs(interp.call(subinterp.get_main), subinterp.get_main())

    def test_list_all(self):
        main = subinterp.get_main()
        a, b = subinterp.create(), subinterp.create()
        all_ = subinterp.list_all()
        self.assertIs(all_[0], main)
        self.assertEqual([i.id for i in all_][-2:], [a.id, b.id])
        self.assertIs(all_[-2], a)
        self.assertIs(all_[-1], b)
        a.close()
        self.assertNotIn(a.id, [i.id for i in subinterp.list_all()])

    def test_list_all_from_subinterpreter(self):
        a, b = subinterp.create(), subinterp.create()
        ids = a.call(lambda: [i.id for i in subinterp.list_all()])
        self.assertEqual(ids, [i.id for i in subinterp.list_all()])
        self.assertIn(b.id, ids)


def _foreign_module():
    # CPython's own private module, which makes interpreters through the C
    # API without telling subinterp.
    name = '_interpreters' if sys.version_info >= (3, 13) else \
        '_xxsubinterpreters'
    return __import__(name)


class ForeignInterpreterTests(TestBase):

    def setUp(self):
        super().setUp()
        mod = _foreign_module()
        # On 3.12 the returned InterpreterID owns the interpreter: keep it.
        self.foreign = mod.create()
        self.foreign_id = int(self.foreign)
        self.addCleanup(mod.destroy, self.foreign)

    def test_whence_and_listing(self):
        interp = subinterp.Interpreter(self.foreign_id)
        self.assertEqual(interp.whence, 'C-API')
        self.assertIn(interp, subinterp.list_all())
        self.assertFalse(interp.is_running())

    def test_refused(self):
        interp = subinterp.Interpreter(self.foreign_id)
        for name, args in [('close', ()), ('exec', ('pass',)),
                           ('call', (abs, -1)),
                           ('prepare_main', ({'a': 1},))]:
            with self.subTest(name):
                with self.assertRaises(subinterp.InterpreterError) as cm:
                    getattr(interp, name)(*args)
                self.assertNotIsInstance(cm.exception,
                                         subinterp.InterpreterNotFoundError)
        self.assertIn(interp, subinterp.list_all())

    def test_no_reference_taken(self):
        # Dropping our object leaves it to its creator.
        interp = subinterp.Interpreter(self.foreign_id)
        del interp
        gc.collect()
        self.assertIn(self.foreign_id, [i.id for i in subinterp.list_all()])


class InterpreterObjectTests(TestBase):

    def test_one_object_per_id(self):
        interp = subinterp.create()
        self.assertIs(subinterp.Interpreter(interp.id), interp)
        self.assertIs(subinterp.Interpreter(0), subinterp.get_main())

    def test_bad_ids(self):
        for bad in ['0', 0.0, None, object(), '']:
            with self.subTest(bad=bad):
                with self.assertRaises(TypeError):
                    subinterp.Interpreter(bad)
        with self.assertRaises(ValueError):
            subinterp.Interpreter(-1)
        with self.assertRaises(subinterp.InterpreterNotFoundError):
            subinterp.Interpreter(1_000_000)

    def test_readonly_attributes(self):
        interp = subinterp.create()
        with self.assertRaises(AttributeError):
            interp.id = 1_000_000
        with self.assertRaises(AttributeError):
            interp.whence = 'runtime init'
        self.assertIsInstance(interp.id, int)

    def test_hash_eq_repr(self):
        a, b = subinterp.create(), subinterp.create()
        self.assertEqual(hash(a), hash(a.id))
        self.assertEqual(a, a)
        self.assertNotEqual(a, b)
        self.assertNotEqual(a, a.id)
        self.assertEqual(repr(a), f'Interpreter({a.id})')
        self.assertEqual(len({a, b, subinterp.Interpreter(a.id)}), 2)

    def test_pickle_roundtrip(self):
        interp = subinterp.create()
        self.assertIs(pickle.loads(pickle.dumps(interp)), interp)

    def test_passed_to_other_interpreter(self):
        a, b = subinterp.create(), subinterp.create()
        info = a.call(targets.interpreter_info, b)
        self.assertEqual(info, ('subinterp', 'Interpreter', b.id,
                                'subinterp module'))
        # ... and it can be used there.
        self.assertEqual(a.call(targets.call_in_other, b.id,
                                targets.current_id), b.id)

    def test_returned_from_other_interpreter(self):
        a = subinterp.create()
        self.assertIs(a.call(subinterp.get_current), a)

    def test_last_reference_closes(self):
        interp = subinterp.create()
        interpid = interp.id
        del interp
        gc.collect()
        self.assertNotIn(interpid, [i.id for i in subinterp.list_all()])

    def test_reference_from_other_interpreter_keeps_open(self):
        a, b = subinterp.create(), subinterp.create()
        aid = a.id
        b.call(targets.hold, a)
        del a
        gc.collect()
        self.assertIn(aid, [i.id for i in subinterp.list_all()])
        b.call(targets.release)
        self.assertNotIn(aid, [i.id for i in subinterp.list_all()])

    def test_context_manager(self):
        with subinterp.create() as interp:
            self.assertIsInstance(interp, subinterp.Interpreter)
            interp.exec('x = 1')
        with self.assertRaises(subinterp.InterpreterNotFoundError):
            interp.is_running()
        self.assertNotIn(interp, subinterp.list_all())

    def test_context_manager_closed_in_block(self):
        with subinterp.create() as interp:
            interp.close()
        self.assertNotIn(interp, subinterp.list_all())

    def test_context_manager_closes_on_error(self):
        with self.assertRaises(ZeroDivisionError):
            with subinterp.create() as interp:
                1 / 0
        self.assertNotIn(interp, subinterp.list_all())


class OwnGilTests(TestBase):

    def test_isolated_interpreters_run_at_the_same_time(self):
        # a spins, holding its GIL, until b sets a flag in shared memory:
        # b gets to run only because it does not need a's GIL.
        a, b = subinterp.create(), subinterp.create()
        flags = subinterp.SharedBuffer(3)
        results = []
        t = threading.Thread(target=lambda: results.append(
            a.call(targets.spin_until_flag, memoryview(flags), 30.0)))
        t.start()
        try:
            while memoryview(flags)[2] == 0 and t.is_alive():
                time.sleep(0.001)  # until a spins
            b.call(targets.set_flag, memoryview(flags))
        finally:
            t.join()
        self.assertEqual(results, [True])
        self.assertEqual(bytes(flags), b'\x01\x01\x01')


class IsRunningTests(TestBase):

    def test_idle(self):
        interp = subinterp.create()
        self.assertFalse(interp.is_running())
        interp.exec('pass')
        self.assertFalse(interp.is_running())

    def test_while_running(self):
        interp = subinterp.create()
        with self.running(interp):
            self.assertTrue(interp.is_running())
        self.assertFalse(interp.is_running())

    def test_background_thread_is_not_running(self):
        r, w = self.pipe()
        interp = subinterp.create()
        interp.exec(f'import os, threading\n'
                    f't = threading.Thread(target=os.read, args=({r}, 1))\n'
                    f't.start()\n')
        self.assertFalse(interp.is_running())
        os.write(w, b'x')
        interp.exec('t.join()')


class CloseTests(TestBase):

    def test_close(self):
        interp = subinterp.create()
        interp.close()
        self.assertNotIn(interp, subinterp.list_all())

    def test_close_from_other_thread(self):
        interp = subinterp.create()
        t = threading.Thread(target=interp.close)
        t.start()
        t.join()
        self.assertNotIn(interp, subinterp.list_all())

    def test_close_from_sibling(self):
        a, b = subinterp.create(), subinterp.create()
        a.call(targets.close_other, b.id)
        self.assertNotIn(b.id, [i.id for i in subinterp.list_all()])
        self.assertIn(a, subinterp.list_all())

    def test_close_waits_for_subthreads(self):
        r, w = self.pipe()
        interp = subinterp.create()
        interp.exec(f'import os, threading, time\n'
                    f'def task():\n'
                    f'    time.sleep(0.2)\n'
                    f'    os.write({w}, b"F")\n'
                    f't = threading.Thread(target=task)\n'
                    f't.start()\n')
        interp.close()
        self.assertEqual(os.read(r, 1), b'F')


class PrepareMainTests(TestBase):

    def test_dict_tuple_kwargs(self):
        interp = subinterp.create()
        interp.prepare_main({'a': 1, 'b': 'two'})
        interp.prepare_main((('c', 3.0),))
        interp.prepare_main(d=[4])
        interp.prepare_main({'e': 5}, f={6})
        got = [interp.call(targets.get_main_attr, name) for name in 'abcdef']
        self.assertEqual(got, [1, 'two', 3.0, [4], 5, {6}])

    def test_empty(self):
        interp = subinterp.create()
        with self.assertRaises(ValueError):
            interp.prepare_main()
        with self.assertRaises(ValueError):
            interp.prepare_main({})

    def test_not_shareable_binds_nothing(self):
        interp = subinterp.create()
        with self.assertRaises(subinterp.NotShareableError):
            interp.prepare_main(ok=1, bad=threading.Lock())
        self.assertEqual(_main_names(interp), _clean_main_names())

    def test_running(self):
        interp = subinterp.create()
        interp.prepare_main(spam=True)
        with self.running(interp):
            with self.assertRaisesRegex(subinterp.InterpreterError, 'running'):
                interp.prepare_main(spam=False)
        interp.exec('assert spam is True')


class ExecTests(TestBase):

    def test_source(self):
        interp = subinterp.create()
        interp.exec('x = 6 * 7')
        interp.exec('y = x + 1')
        self.assertEqual(interp.call(targets.get_main_attr, 'y'), 43)

    def test_code_object(self):
        interp = subinterp.create()
        interp.exec(compile('z = "from code"', '<test>', 'exec'))
        self.assertEqual(interp.call(targets.get_main_attr, 'z'), 'from code')

    def test_function_body_runs_in_main(self):
        def script():
            globals()['flag'] = __name__

        interp = subinterp.create()
        interp.exec(script)
        self.assertEqual(interp.call(targets.get_main_attr, 'flag'),
                         '__main__')

    def test_output_via_fd(self):
        r, w = self.pipe()
        interp = subinterp.create()
        interp.exec(f'import os; os.write({w}, b"it worked!")')
        self.assertEqual(os.read(r, 100), b'it worked!')

    def test_in_thread(self):
        interp = subinterp.create()
        t = threading.Thread(target=interp.exec, args=('w = 1',))
        t.start()
        t.join()
        self.assertEqual(interp.call(targets.get_main_attr, 'w'), 1)

    def test_interpreters_are_isolated(self):
        a, b = subinterp.create(), subinterp.create()
        a.exec('import sys; sys.only_in_a = 1; only_in_a = 1')
        self.assertIsNone(b.call(targets.get_main_attr, 'only_in_a'))
        self.assertFalse(hasattr(sys, 'only_in_a'))
        self.assertNotIn('only_in_a', vars(sys.modules['__main__']))


class CallTests(TestBase):

    def setUp(self):
        super().setUp()
        self.interp = subinterp.create()

    def roundtrip(self, value):
        return self.interp.call(targets.identity, value)

    def test_builtins(self):
        self.assertEqual(self.interp.call(len, [1, 2, 3]), 3)
        self.assertEqual(self.interp.call(math.sqrt, 16), 4.0)
        self.assertEqual(self.interp.call(sorted, {3, 1, 2}), [1, 2, 3])

    def test_args_and_kwargs(self):
        res = self.interp.call(targets.full_args, 1, 2, 3, 4, '?', e=5, g=7)
        self.assertEqual(res, (1, 2, 3, 4, ('?',), 5, -6, {'g': 7}))
        res = self.interp.call(targets.full_args, 1, 2, c=3, e=5)
        self.assertEqual(res, (1, 2, 3, -4, (), 5, -6, {}))

    def test_kwarg_named_callable(self):
        self.assertEqual(self.interp.call(targets.nargs, 1, callable=2), 2)

    def test_runs_in_that_interpreter(self):
        self.assertEqual(self.interp.call(targets.current_id), self.interp.id)

    def test_module_globals(self):
        self.assertEqual(self.interp.call(targets.use_math, 2.5), 122)
        self.assertEqual(self.interp.call(targets.scaled, 3), 21)

    def test_lambda(self):
        self.assertEqual(self.interp.call(lambda x, y=1: x * 2 + y, 20), 41)

    def test_lambda_using_module_and_globals(self):
        self.assertEqual(self.interp.call(lambda: math.factorial(5)), 120)
        self.assertEqual(self.interp.call(lambda: SCALE_HERE * 2), 22)

    def test_closure(self):
        k = 5
        items = [1, 2]

        def inner(x):
            return x + k + len(items)

        self.assertEqual(self.interp.call(inner, 1), 8)

    def test_closure_gets_a_copy(self):
        seen = []

        def append():
            seen.append(1)
            return len(seen)

        self.assertEqual(self.interp.call(append), 1)
        self.assertEqual(seen, [])

    def test_returned_closure(self):
        add3 = self.interp.call(targets.make_adder, 3)
        self.assertEqual(add3(4), 7)

    def test_nested_function_recursion(self):
        def fact(n):
            return 1 if n < 2 else n * fact(n - 1)

        self.assertEqual(self.interp.call(fact, 10), 3628800)

    def test_custom_class_by_pickle(self):
        p = targets.Point(3, 4)
        res = self.roundtrip(p)
        self.assertIsInstance(res, targets.Point)
        self.assertEqual(res, p)
        self.assertEqual(self.interp.call(p.norm2), 25)
        self.assertEqual(self.interp.call(targets.Point, 1, y=2),
                         targets.Point(1, 2))

    def test_unpicklable_argument_names_path(self):
        lock = threading.Lock()
        with self.assertRaises(subinterp.NotShareableError) as cm:
            self.interp.call(targets.nargs, 0, {'key': lock})
        self.assertIn("args[1]['key']", str(cm.exception))
        self.assertIn('lock', str(cm.exception))
        with self.assertRaises(subinterp.NotShareableError) as cm:
            self.interp.call(targets.nargs, x=[1, lock])
        self.assertIn('lock', str(cm.exception))
        self.assertEqual(self.roundtrip(1), 1)

    def test_unshareable_result(self):
        with self.assertRaises(subinterp.NotShareableError) as cm:
            self.interp.call(targets.make_lock)
        self.assertIn('result', str(cm.exception))
        self.assertEqual(self.roundtrip(1), 1)

    def test_closure_over_unshareable(self):
        lock = threading.Lock()
        with self.assertRaises(subinterp.NotShareableError):
            self.interp.call(lambda: lock.locked())

    def test_builtins_use_target_main(self):
        # As in 3.14, eval/exec/dir called directly run in the target's
        # __main__.
        self.interp.prepare_main(spam=42)
        self.assertEqual(self.interp.call(eval, 'spam'), 42)
        self.assertEqual(self.interp.call(eval, '__name__'), '__main__')
        self.interp.call(exec, 'ham = spam + 1')
        self.assertEqual(self.interp.call(targets.get_main_attr, 'ham'), 43)
        names = [n for n in self.interp.call(dir) if n != '__annotations__']
        self.assertEqual(names, sorted(_clean_main_names() + ['ham', 'spam']))


def _assert_same(test, got, expected, where='value'):
    """Equal, of exactly the same types, all the way down."""
    test.assertIs(type(got), type(expected), where)
    if isinstance(expected, float) and math.isnan(expected):
        test.assertTrue(math.isnan(got), where)
    elif isinstance(expected, float):
        test.assertEqual(math.copysign(1, got), math.copysign(1, expected))
        test.assertEqual(got, expected, where)
    elif isinstance(expected, (tuple, list)):
        test.assertEqual(len(got), len(expected), where)
        for i, (g, e) in enumerate(zip(got, expected)):
            _assert_same(test, g, e, f'{where}[{i}]')
    elif isinstance(expected, dict):
        test.assertEqual(list(got), list(expected), where)
        for k in expected:
            _assert_same(test, got[k], expected[k], f'{where}[{k!r}]')
    else:
        test.assertEqual(got, expected, where)


class ValueTests(TestBase):

    VALUES = [
        None, True, False, 0, 1, -1, 2**62, 2**63, -(2**63) - 1, 2**64,
        10**400, -(7**3000), 0.0, -0.0, 1.5, float('inf'), float('-inf'),
        float('nan'), 1e-310, complex(1, -2), complex(0, float('inf')),
        '', 'ascii', 'h\u00e9llo', '\u4e2d\u6587', '\U0001f600 emoji',
        '\udc80 lone surrogate \ud800', 'nul\x00inside', 'x' * 100_000,
        b'', b'\x00\xff' * 1000, bytearray(), bytearray(b'abc'),
        (), (1,), (1, ('a', (b'b', None))), [], [1, [2, [3]]],
        {}, {'a': 1}, {1: 'int key', (1, 2): 'tuple key', None: 0},
        {'nested': {'list': [1, {2, 3}], 'ft': frozenset({'x'})}},
        set(), {1, 'two', (3,)}, frozenset(), frozenset({1, frozenset({2})}),
        [(), [], {}, set(), frozenset()],
    ]

    def test_roundtrip(self):
        interp = subinterp.create()
        for value in self.VALUES:
            with self.subTest(value=repr(value)[:60]):
                got = interp.call(targets.identity, value)
                _assert_same(self, got, value)

    def test_made_there(self):
        interp = subinterp.create()
        _assert_same(self, interp.call(targets.make_values),
                     targets.make_values())

    def test_huge_int(self):
        interp = subinterp.create()
        n = 3**200_000
        self.assertEqual(interp.call(targets.identity, n), n)
        self.assertEqual(interp.call(targets.identity, -n), -n)
        self.assertEqual(interp.call(pow, 7, 5000), 7**5000)

    def test_bool_identity(self):
        interp = subinterp.create()
        self.assertIs(interp.call(targets.identity, True), True)
        self.assertIs(interp.call(targets.identity, None), None)

    def test_bytearray_is_copied(self):
        interp = subinterp.create()
        ba = bytearray(b'xyz')
        res = interp.call(targets.mutate_bytearray, ba)
        self.assertEqual(res, bytearray(b'\x00yz'))
        self.assertEqual(ba, bytearray(b'xyz'))

    def test_subclasses_keep_their_type(self):
        interp = subinterp.create()
        for value in [targets.Pair(1, [2]), targets.Color.GREEN,
                      collections.OrderedDict(a=1),
                      collections.defaultdict(list, a=[1])]:
            with self.subTest(value=value):
                got = interp.call(targets.identity, value)
                self.assertIs(type(got), type(value))
                self.assertEqual(got, value)

    def test_memoryview_of_bytes(self):
        # 3.14 passes a (read-only) memoryview of bytes; it arrives equal.
        interp = subinterp.create()
        self.assertEqual(interp.call(targets.read_bytes, memoryview(b'spam!')),
                         b'spam!')
        got = interp.call(targets.identity, memoryview(b'spam!'))
        self.assertIsInstance(got, memoryview)
        self.assertEqual(bytes(got), b'spam!')

    def test_writable_memoryview_needs_shared_buffer(self):
        # Writes through it could not show on this side: refused.
        interp = subinterp.create()
        with self.assertRaises(subinterp.NotShareableError) as cm:
            interp.call(targets.fill, memoryview(bytearray(4)), 1)
        self.assertIn('args[0]', str(cm.exception))

    def test_module_by_name(self):
        interp = subinterp.create()
        self.assertIs(interp.call(targets.identity, math), math)


class ScriptNamespaceTests(ScriptTestBase):
    """Functions of a script keep one namespace per target interpreter, as
    the script's module globals would (3.14 loads the script there)."""

    def test_module_state_persists_between_calls(self):
        out = self.assert_script_ok('''
            import subinterp, subinterp.futures
            count = 0
            def incr():
                global count
                count += 1
                return count
            items = []
            def add(x):
                items.append(x)
                return list(items)
            i, j = subinterp.create(), subinterp.create()
            print([i.call(incr) for _ in range(3)], [j.call(incr)], count)
            print(i.call(add, 1), i.call(add, 2), items)
            # A lambda of the same script shares the namespace.
            print(i.call(lambda: count))
            STATUS = 'uninitialized'
            def init(x):
                global STATUS
                STATUS = x
            def status():
                return STATUS
            with subinterp.futures.InterpreterPoolExecutor(
                    1, initializer=init, initargs=('initialized',)) as ex:
                print(ex.submit(status).result())
            ''')
        self.assertEqual(out.splitlines(), [
            '[1, 2, 3] [1] 0', '[1] [1, 2] []', '3', 'initialized'])

    def test_values_the_sender_rebinds_are_sent_again(self):
        out = self.assert_script_ok('''
            import subinterp
            i = subinterp.create()
            config = {'level': 1}
            def level():
                return config['level']
            first = i.call(level)
            config = {'level': 2}
            print(first, i.call(level))
            results = []
            for data in (10, 20, 30):
                results.append(i.call(lambda: data + 1))
            print(results)
            ''')
        self.assertEqual(out.splitlines(), ['1 2', '[11, 21, 31]'])

    def test_modules_do_not_share_a_namespace(self):
        out = self.assert_script_ok('''
            import subinterp, helper_mod
            total = 100
            def mine():
                return total
            i = subinterp.create()
            print(i.call(mine), i.call(helper_mod.make()), i.call(mine))
            ''', files={'helper_mod.py': '''
            total = 1
            def make():
                def theirs():
                    return total
                return theirs
            '''})
        self.assertEqual(out.strip(), '100 1 100')


class SharedBufferTests(TestBase):

    def test_basics(self):
        buf = subinterp.SharedBuffer(16)
        self.assertEqual(len(buf), 16)
        self.assertEqual(buf.nbytes, 16)
        self.assertEqual(bytes(buf), bytes(16))
        mv = memoryview(buf)
        self.assertEqual(mv.format, 'B')
        self.assertEqual(mv.itemsize, 1)
        self.assertFalse(mv.readonly)
        mv[0] = 255
        self.assertEqual(bytes(buf)[0], 255)

    def test_bad_size(self):
        for bad in (-1, 'x', None):
            with self.subTest(bad=bad):
                with self.assertRaises((ValueError, TypeError, OverflowError)):
                    subinterp.SharedBuffer(bad)

    def test_written_there_read_here(self):
        interp = subinterp.create()
        buf = subinterp.SharedBuffer(4096)
        self.assertEqual(interp.call(targets.fill, buf, 7), 4096)
        self.assertEqual(bytes(buf), b'\x07' * 4096)

    def test_written_here_read_there(self):
        interp = subinterp.create()
        buf = subinterp.SharedBuffer(8)
        memoryview(buf)[:4] = b'abcd'
        self.assertEqual(interp.call(targets.read_bytes, buf),
                         b'abcd\x00\x00\x00\x00')

    def test_memoryview_slice(self):
        interp = subinterp.create()
        buf = subinterp.SharedBuffer(8)
        interp.call(targets.fill, memoryview(buf)[2:6], 9)
        self.assertEqual(bytes(buf), b'\x00\x00\x09\x09\x09\x09\x00\x00')

    def test_made_there_shared_both_ways(self):
        interp = subinterp.create()
        buf = interp.call(targets.make_shared, 8, 5)
        self.assertEqual(bytes(buf), b'\x05' * 8)
        memoryview(buf)[0] = 1
        self.assertEqual(interp.call(targets.held_bytes, 0),
                         b'\x01' + b'\x05' * 7)

    def test_outlives_interpreter(self):
        interp = subinterp.create()
        buf = interp.call(targets.make_shared, 1024, 3)
        interp.close()
        gc.collect()
        self.assertEqual(bytes(buf), b'\x03' * 1024)
        memoryview(buf)[:] = b'\x04' * 1024
        self.assertEqual(bytes(buf), b'\x04' * 1024)

    def test_shared_by_three(self):
        a, b = subinterp.create(), subinterp.create()
        buf = subinterp.SharedBuffer(3)
        a.call(targets.fill, memoryview(buf)[0:1], 1)
        b.call(targets.fill, memoryview(buf)[1:2], 2)
        self.assertEqual(a.call(targets.read_bytes, buf), b'\x01\x02\x00')


class IsShareableTests(TestBase):

    SHAREABLE = [None, True, 10, -10, 2**100, 1.5, 1j, 'spam', b'spam',
                 bytearray(b'x'), (), (1, ('a', b'b'), True), [1, [2]],
                 {'a': {'b': 1}}, {1, 2}, frozenset({3}),
                 targets.Point(1, 2), targets.identity, lambda x: x]

    def _not_shareable(self):
        lock = threading.Lock()
        gen = (i for i in range(3))
        return [lock, [1, lock], {'k': (lock,)}, gen,
                memoryview(bytearray(2)),
                open(os.devnull, 'rb')]

    def test_shareable(self):
        for obj in self.SHAREABLE + [subinterp.SharedBuffer(2)]:
            with self.subTest(obj=obj):
                self.assertTrue(subinterp.is_shareable(obj))

    def test_not_shareable(self):
        objs = self._not_shareable()
        self.addCleanup(objs[-1].close)
        for obj in objs:
            with self.subTest(obj=obj):
                self.assertFalse(subinterp.is_shareable(obj))

    def test_agrees_with_call(self):
        interp = subinterp.create()
        objs = self._not_shareable()
        self.addCleanup(objs[-1].close)
        for obj in self.SHAREABLE + objs:
            with self.subTest(obj=obj):
                try:
                    interp.call(targets.nargs, obj)
                except subinterp.NotShareableError:
                    passed = False
                else:
                    passed = True
                self.assertEqual(subinterp.is_shareable(obj), passed)


class CallInThreadTests(TestBase):

    def test_returns_started_thread(self):
        r, w = self.pipe()
        interp = subinterp.create()
        t = interp.call_in_thread(targets.write_fd, w, b'T')
        self.assertIsInstance(t, threading.Thread)
        t.join(60)
        self.assertFalse(t.is_alive())
        self.assertEqual(os.read(r, 1), b'T')

    def test_args_kwargs(self):
        interp = subinterp.create()
        t = interp.call_in_thread(targets.hold, [1])
        t.join(60)
        t = interp.call_in_thread(targets.hold, obj={'callable': 2})
        t.join(60)
        self.assertEqual(interp.call(targets.get_held), [[1], {'callable': 2}])

    def test_exception_goes_to_excepthook(self):
        caught = []
        old = threading.excepthook
        threading.excepthook = caught.append
        try:
            interp = subinterp.create()
            t = interp.call_in_thread(targets.raise_value_error, 'boom')
            t.join(60)
        finally:
            threading.excepthook = old
        self.assertEqual(len(caught), 1)
        self.assertIs(caught[0].exc_type, subinterp.ExecutionFailed)
        self.assertEqual(caught[0].exc_value.excinfo.msg, 'boom')


_MAIN_FUNCS = '''
import math
import subinterp

FACTOR = 3
print('TOP')

def scale(x, y=FACTOR):
    return x * y

def fact(n):
    return 1 if n < 2 else n * fact(n - 1)

def is_even(n):
    return True if n == 0 else is_odd(n - 1)

def is_odd(n):
    return False if n == 0 else is_even(n - 1)

def helper(x):
    return x + 1

def uses_helper(x):
    return helper(x) * 2

def uses_math():
    return math.sqrt(16)

def run():
    interp = subinterp.create()
    print(repr([
        interp.call(scale, 5),
        interp.call(fact, 10),
        interp.call(is_even, 10),
        interp.call(uses_helper, 1),
        interp.call(uses_math),
        interp.call(lambda: FACTOR + 1),
        interp.call(beside.where),
        interp.call(subinterp.get_current).id == interp.id,
    ]))
'''

_BESIDE = '''
def where():
    return __name__
'''

_EXPECTED = "[15, 3628800, True, 4, 4.0, 4, 'beside', True]"


class ConfigTests(ScriptTestBase):
    """The isolated and legacy configurations, each in a fresh python."""

    def test_isolated_refuses_single_phase_module(self):
        name = single_phase_module()
        out = self.assert_script_ok(f'''
            import subinterp
            interp = subinterp.create()
            try:
                interp.exec('import {name}')
            except subinterp.ExecutionFailed as exc:
                print(exc.excinfo.type.__name__)
                print('subinterpreters' in exc.excinfo.msg)
            print(interp.call(abs, -1))
            ''')
        self.assertEqual(out.split(), ['ImportError', 'True', '1'])

    def test_legacy_allows_single_phase_module(self):
        name = single_phase_module()
        out = self.assert_script_ok(f'''
            import subinterp
            interp = subinterp.create(isolated=False)
            interp.exec('import {name}')
            print(interp.call(abs, -1))
            interp.close()
            ''')
        self.assertEqual(out.split(), ['1'])


class MainScriptTests(ScriptTestBase):
    """Functions defined in the __main__ of a script, run in a subprocess."""

    def test_with_main_guard(self):
        out = self.assert_script_ok(
            'import beside\n' + _MAIN_FUNCS
            + 'if __name__ == "__main__":\n    run()\n',
            files={'beside.py': _BESIDE})
        self.assertEqual(out.splitlines(), ['TOP', _EXPECTED])

    def test_without_main_guard(self):
        # The script's top level must not run again in the other
        # interpreter: 'TOP' is printed once.
        out = self.assert_script_ok(
            'import beside\n' + _MAIN_FUNCS + 'run()\n',
            files={'beside.py': _BESIDE})
        self.assertEqual(out.splitlines(), ['TOP', _EXPECTED])

    def test_main_globals_change_between_calls(self):
        out = self.assert_script_ok('''
            import subinterp
            count = 0
            def get():
                return count
            interp = subinterp.create()
            first = interp.call(get)
            count = 5
            print(first, interp.call(get), count)
            ''')
        self.assertEqual(out.split(), ['0', '5', '5'])


if __name__ == '__main__':
    unittest.main()
