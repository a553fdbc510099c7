"""Bad input and failures: each raises the documented exception, and the
process (and the interpreter, unless closed) lives on."""

import pickle
import threading
import unittest

import subinterp
import targets
from helpers import ScriptTestBase, TestBase, single_phase_module


class ClosedOrMissingTests(TestBase):

    def test_closed_interpreter(self):
        interp = subinterp.create()
        interp.close()
        for name, args in [('close', ()), ('is_running', ()),
                           ('exec', ('pass',)),
                           ('call', (targets.identity, 1)),
                           ('prepare_main', ({'a': 1},))]:
            with self.subTest(name):
                with self.assertRaises(subinterp.InterpreterNotFoundError):
                    getattr(interp, name)(*args)

    def test_closed_in_thread(self):
        interp = subinterp.create()
        interp.close()
        caught = []
        old, threading.excepthook = threading.excepthook, caught.append
        try:
            t = interp.call_in_thread(targets.identity, 1)
            t.join(60)
        finally:
            threading.excepthook = old
        self.assertEqual([c.exc_type for c in caught],
                         [subinterp.InterpreterNotFoundError])

    def test_missing_id(self):
        with self.assertRaises(subinterp.InterpreterNotFoundError):
            subinterp.Interpreter(10**9)


class CloseRefusedTests(TestBase):

    def test_close_running_from_other_thread(self):
        interp = subinterp.create()
        with self.running(interp):
            with self.assertRaises(subinterp.InterpreterError) as cm:
                interp.close()
            self.assertNotIsInstance(cm.exception,
                                     subinterp.InterpreterNotFoundError)
            self.assertTrue(interp.is_running())
        interp.close()
        self.assertNotIn(interp, subinterp.list_all())

    def test_close_main(self):
        main = subinterp.get_main()
        with self.assertRaises(subinterp.InterpreterError):
            main.close()
        errors = []

        def close_main():
            try:
                main.close()
            except subinterp.InterpreterError as exc:
                errors.append(exc)

        t = threading.Thread(target=close_main)
        t.start()
        t.join()
        self.assertEqual(len(errors), 1)
        self.assertTrue(main.is_running())

    def test_close_main_from_subinterpreter(self):
        interp = subinterp.create()
        with self.assertRaises(subinterp.ExecutionFailed) as cm:
            interp.call(targets.close_other, 0)
        self.assertEqual(cm.exception.excinfo.type.__name__,
                         'InterpreterError')

    def test_close_current(self):
        interp = subinterp.create()
        with self.assertRaises(subinterp.ExecutionFailed) as cm:
            interp.call(targets.close_self)
        self.assertEqual(cm.exception.excinfo.type.__name__,
                         'InterpreterError')
        self.assertIn(interp, subinterp.list_all())
        self.assertEqual(interp.call(targets.identity, 1), 1)

    def test_run_in_main_refused(self):
        # As in 3.14, only interpreters made by create() run code.
        main = subinterp.get_main()
        with self.assertRaises(subinterp.InterpreterError):
            main.exec('pass')
        with self.assertRaises(subinterp.InterpreterError):
            main.call(targets.identity, 1)
        with self.assertRaises(subinterp.InterpreterError):
            main.prepare_main(a=1)


class BadArgumentTests(TestBase):

    def setUp(self):
        super().setUp()
        self.interp = subinterp.create()

    def assert_alive(self):
        self.assertEqual(self.interp.call(targets.identity, 'alive'), 'alive')

    def test_exec_bad_types(self):
        for bad in (10, None, b'pass', ['pass']):
            with self.subTest(bad=bad):
                with self.assertRaises(TypeError):
                    self.interp.exec(bad)
        self.assert_alive()

    def test_exec_function_with_args(self):
        def needs_arg(x):
            return x

        with self.assertRaises((TypeError, ValueError)):
            self.interp.exec(needs_arg)
        self.assert_alive()

    def test_call_not_callable(self):
        for bad in (42, 'len', None):
            with self.subTest(bad=bad):
                with self.assertRaises(TypeError):
                    self.interp.call(bad)
        self.assert_alive()

    def test_prepare_main_bad_names(self):
        with self.assertRaises(TypeError):
            self.interp.prepare_main({1: 'x'})
        with self.assertRaises((TypeError, ValueError)):
            self.interp.prepare_main(5)
        self.assert_alive()

    def test_syntax_error(self):
        with self.assertRaises(subinterp.ExecutionFailed) as cm:
            self.interp.exec('def broken(:\n    pass')
        info = cm.exception.excinfo
        self.assertEqual(info.type.__name__, 'SyntaxError')
        self.assertEqual(info.type.__module__, 'builtins')
        self.assertIn('SyntaxError', str(cm.exception))
        self.assert_alive()

    def test_wrong_arguments_for_target(self):
        with self.assertRaises(subinterp.ExecutionFailed) as cm:
            self.interp.call(targets.identity, 1, 2)
        self.assertEqual(cm.exception.excinfo.type.__name__, 'TypeError')
        self.assert_alive()


class ExecutionFailedTests(TestBase):

    def setUp(self):
        super().setUp()
        self.interp = subinterp.create()

    def failure(self, func, *args):
        with self.assertRaises(subinterp.ExecutionFailed) as cm:
            self.interp.call(func, *args)
        return cm.exception

    def test_excinfo_fields(self):
        exc = self.failure(targets.raise_value_error, 'boom')
        self.assertIsInstance(exc, subinterp.InterpreterError)
        info = exc.excinfo
        self.assertEqual(info.type.__name__, 'ValueError')
        self.assertEqual(info.type.__qualname__, 'ValueError')
        self.assertEqual(info.type.__module__, 'builtins')
        self.assertEqual(info.msg, 'boom')
        self.assertEqual(info.formatted, 'ValueError: boom')
        self.assertTrue(info.errdisplay.startswith(
            'Traceback (most recent call last):'), info.errdisplay)
        self.assertIn('in raise_value_error', info.errdisplay)
        self.assertIn('targets.py', info.errdisplay)
        self.assertTrue(info.errdisplay.endswith('ValueError: boom'))
        self.assertIsNone(info.cause)
        self.assertIsNone(info.context)

    def test_str_shows_remote_traceback(self):
        # The same layout as 3.14's ExecutionFailed.
        exc = self.failure(targets.raise_value_error, 'boom')
        self.assertEqual(exc.args, ('ValueError: boom',))
        self.assertEqual(
            str(exc),
            'ValueError: boom\n\nUncaught in the interpreter:\n\n'
            + exc.excinfo.errdisplay)

    def test_exec_failure(self):
        with self.assertRaises(subinterp.ExecutionFailed) as cm:
            self.interp.exec('x = 1\nraise KeyError("k")')
        self.assertEqual(cm.exception.excinfo.type.__name__, 'KeyError')
        self.assertIn('line 2', cm.exception.excinfo.errdisplay)
        # What ran before the error stays done.
        self.assertEqual(self.interp.call(targets.get_main_attr, 'x'), 1)

    def test_custom_and_nested_types(self):
        info = self.failure(targets.raise_custom).excinfo
        self.assertEqual((info.type.__module__, info.type.__qualname__,
                          info.type.__name__, info.msg),
                         ('targets', 'CustomError', 'CustomError',
                          'custom message'))
        info = self.failure(targets.raise_nested_class).excinfo
        self.assertEqual((info.type.__qualname__, info.type.__name__),
                         ('Outer.Inner', 'Inner'))

    def test_cause_chain(self):
        info = self.failure(targets.raise_chained).excinfo
        self.assertEqual(info.type.__name__, 'KeyError')
        self.assertIsNotNone(info.cause)
        self.assertEqual(info.cause.type.__name__, 'ValueError')
        self.assertEqual(info.cause.msg, 'inner')
        self.assertIn('direct cause', info.errdisplay)
        self.assertIn('ValueError: inner', info.errdisplay)

    def test_context_chain(self):
        info = self.failure(targets.raise_in_except).excinfo
        self.assertEqual(info.type.__name__, 'RuntimeError')
        self.assertIsNone(info.cause)
        self.assertIsNotNone(info.context)
        self.assertEqual(info.context.type.__name__, 'KeyError')
        self.assertIn('During handling', info.errdisplay)

    def test_rebuild(self):
        exc = self.failure(targets.raise_value_error, 'again').excinfo.rebuild()
        self.assertIs(type(exc), ValueError)
        self.assertEqual(exc.args, ('again',))
        exc = self.failure(targets.raise_custom).excinfo.rebuild()
        self.assertIs(type(exc), targets.CustomError)

    def test_rebuild_impossible(self):
        for func in (targets.raise_unpicklable, targets.raise_local_class):
            with self.subTest(func=func.__name__):
                self.assertIsNone(self.failure(func).excinfo.rebuild())

    def test_pickle_execution_failed(self):
        exc = self.failure(targets.raise_chained)
        copy = pickle.loads(pickle.dumps(exc))
        self.assertIs(type(copy), subinterp.ExecutionFailed)
        self.assertEqual(str(copy), str(exc))
        self.assertEqual(copy.excinfo.cause.msg, 'inner')

    def test_nested_interpreters(self):
        inner = subinterp.create()
        exc = self.failure(targets.call_in_other, inner.id,
                           targets.raise_value_error, 'deep')
        info = exc.excinfo
        self.assertEqual(info.type.__name__, 'ExecutionFailed')
        self.assertEqual(info.type.__module__, 'subinterp')
        inner_exc = info.rebuild()
        self.assertIsInstance(inner_exc, subinterp.ExecutionFailed)
        self.assertEqual(inner_exc.excinfo.type.__name__, 'ValueError')
        self.assertEqual(inner_exc.excinfo.msg, 'deep')

    def test_system_exit_stays_there(self):
        info = self.failure(targets.raise_system_exit, 3).excinfo
        self.assertEqual(info.type.__name__, 'SystemExit')
        with self.assertRaises(subinterp.ExecutionFailed):
            self.interp.exec('raise SystemExit(4)')
        self.assertEqual(self.interp.call(targets.identity, 1), 1)

    def test_keyboard_interrupt_stays_there(self):
        with self.assertRaises(subinterp.ExecutionFailed) as cm:
            self.interp.exec('raise KeyboardInterrupt')
        self.assertEqual(cm.exception.excinfo.type.__name__,
                         'KeyboardInterrupt')

    def test_recursion_error(self):
        info = self.failure(targets.recurse_forever).excinfo
        self.assertEqual(info.type.__name__, 'RecursionError')
        self.assertEqual(self.interp.call(targets.identity, 1), 1)



class ProcessSurvivesTests(ScriptTestBase):
    """Failures that could take the process down, each in a fresh python."""

    def test_refused_extension_module(self):
        name = single_phase_module()
        out = self.assert_script_ok(f'''
            import subinterp
            interp = subinterp.create()
            for attempt in range(2):
                try:
                    interp.exec('import {name}')
                except subinterp.ExecutionFailed as exc:
                    print(exc.excinfo.type.__name__,
                          'subinterpreters' in exc.excinfo.msg)
            print('alive', interp.call(abs, -1))
            interp.close()
            ''')
        self.assertEqual(out.splitlines(), ['ImportError True'] * 2
                         + ['alive 1'])

    def test_system_exit_does_not_exit(self):
        out = self.assert_script_ok('''
            import sys, subinterp
            interp = subinterp.create()
            for code in ('raise SystemExit(7)', 'import sys; sys.exit(8)'):
                try:
                    interp.exec(code)
                except subinterp.ExecutionFailed as exc:
                    print(exc.excinfo.type.__name__)
            try:
                interp.call(sys.exit, 5)
            except subinterp.ExecutionFailed as exc:
                print(exc.excinfo.type.__name__, exc.excinfo.msg)
            print('alive', interp.call(abs, -1))
            ''')
        self.assertEqual(out.splitlines(),
                         ['SystemExit', 'SystemExit', 'SystemExit 5',
                          'alive 1'])

    def test_deeply_nested_value(self):
        # Either passes, or fails with a Python exception: never a crash.
        out = self.assert_script_ok('''
            import subinterp
            interp = subinterp.create()
            value = []
            for _ in range(100_000):
                value = [value]
            try:
                res = interp.call(len, value)
                print('passed', res)
            except (RecursionError, ValueError, subinterp.NotShareableError,
                    subinterp.ExecutionFailed) as exc:
                print('refused', type(exc).__name__)
            print('alive', interp.call(abs, -2))
            ''')
        self.assertEqual(out.splitlines()[-1], 'alive 2', out)

    def test_self_referencing_value(self):
        out = self.assert_script_ok('''
            import subinterp
            interp = subinterp.create()
            loop = []
            loop.append(loop)
            d = {}
            d['self'] = d
            for value in (loop, d):
                try:
                    res = interp.call(len, value)
                    print('passed', res)
                except (RecursionError, ValueError,
                        subinterp.NotShareableError) as exc:
                    print('refused', type(exc).__name__)
            print('alive', interp.call(abs, -3))
            ''')
        lines = out.splitlines()
        self.assertEqual(lines[-1], 'alive 3', out)
        for line in lines[:-1]:
            self.assertIn(line, ('passed 1', 'refused RecursionError',
                                 'refused ValueError',
                                 'refused NotShareableError'))

    def test_exception_with_unpicklable_state(self):
        out = self.assert_script_ok('''
            import subinterp
            interp = subinterp.create()
            try:
                interp.exec(
                    'import threading\\n'
                    'e = ValueError("has a lock")\\n'
                    'e.lock = threading.Lock()\\n'
                    'raise e')
            except subinterp.ExecutionFailed as exc:
                print(exc.excinfo.msg, exc.excinfo.rebuild())
            ''')
        self.assertEqual(out.strip(), 'has a lock None')

    def test_failing_str_and_repr(self):
        # An exception whose __str__ raises still gives an ExecutionFailed.
        out = self.assert_script_ok('''
            import subinterp
            interp = subinterp.create()
            try:
                interp.exec(
                    'class Weird(Exception):\\n'
                    '    def __str__(self):\\n'
                    '        raise RuntimeError("no str")\\n'
                    'raise Weird()')
            except subinterp.ExecutionFailed as exc:
                print(exc.excinfo.type.__name__)
            print('alive', interp.call(abs, -4))
            ''')
        self.assertEqual(out.splitlines(), ['Weird', 'alive 4'])


if __name__ == '__main__':
    unittest.main()
