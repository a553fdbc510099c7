"""subinterp.futures.InterpreterPoolExecutor: a concurrent.futures.Executor
whose workers each own an isolated interpreter (Python 3.14's executor, for
3.12 and 3.13, plus functions from __main__, chunked map and
max_tasks_per_worker)."""

import asyncio
import concurrent.futures
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
import unittest

import subinterp
import subinterp.futures
import targets
from helpers import (SAFETY, SCRIPT_TIMEOUT, SETTLE, ScriptTestBase, TestBase,
                     check_no_sanitizer_report, describe, elapsed, run_script,
                     write_script)
from subinterp.futures import BrokenInterpreterPool, InterpreterPoolExecutor


def _by_value_tasks():
    # Tasks that travel by value (their qualnames hold '<locals>'): a worker
    # runs them without importing this module and what it imports.

    def wait_for(gate, started=None):
        # Tells `started` that it runs, then blocks until `gate` has an item.
        if started is not None:
            started.put('started')
        return gate.get(timeout=SAFETY)

    def record(log, item):
        log.put(item)
        return item

    def rendezvous(mine, other):
        # Succeeds only if the task holding `other` runs at the same time;
        # returns the id of the interpreter it ran in.
        import subinterp
        mine.put('here')
        other.get(timeout=SAFETY)
        return subinterp.get_current().id

    def spin_rendezvous(view, mine, other, seconds):
        # Sets view[mine], then spins holding its GIL (never blocking, no
        # switch) until view[other] is set: the other task can set it only
        # if it runs in parallel, under a GIL of its own.
        import sys
        import time
        sys.setswitchinterval(60.0)
        deadline = time.monotonic() + seconds
        view[mine] = 1
        while view[other] == 0:
            if time.monotonic() > deadline:
                return False
        return True

    def raise_keyboard_interrupt():
        raise KeyboardInterrupt('from a task')

    def interpreter_and_count():
        # (this interpreter's id, how many tasks it ran with this function).
        import subinterp
        import sys
        main = sys.modules['__main__']
        main.task_count = getattr(main, 'task_count', 0) + 1
        return subinterp.get_current().id, main.task_count

    return types.SimpleNamespace(**locals())


T = _by_value_tasks()


class ExecutorTestBase(TestBase):

    def setUp(self):
        super().setUp()
        self._executors = []
        self._gates = []

    def tearDown(self):
        # Tasks a failed test left blocked are let go, and the executors are
        # shut down before TestBase closes the interpreters left open: the
        # workers' interpreters are their pool's to close.
        for gate in self._gates:
            gate.put('cleanup')
        for ex in self._executors:
            ex.shutdown(wait=True, cancel_futures=True)
        super().tearDown()

    def executor(self, *args, **kwargs):
        """An executor that is shut down (waiting) after the test."""
        ex = InterpreterPoolExecutor(*args, **kwargs)
        self._executors.append(ex)
        return ex

    def gate(self):
        """A queue that a task blocks on; it is fed after the test, so that
        a failed test cannot leave a task blocked."""
        q = subinterp.create_queue()
        self._gates.append(q)
        return q

    def blocked_task(self, ex):
        """Submit a task that blocks until its gate is fed; return the
        future and the gate once the task runs."""
        started, gate = subinterp.create_queue(), self.gate()
        future = ex.submit(T.wait_for, gate, started)
        self.assertEqual(started.get(timeout=SAFETY), 'started')
        return future, gate

    def start_both_workers(self, ex):
        """Run a task on each of the 2 workers of `ex` at the same time;
        return their interpreters' ids. Both workers have started then."""
        a, b = subinterp.create_queue(), subinterp.create_queue()
        fa = ex.submit(T.rendezvous, a, b)
        fb = ex.submit(T.rendezvous, b, a)
        return fa.result(timeout=SAFETY + 5), fb.result(timeout=SAFETY + 5)


class ModuleTests(unittest.TestCase):

    def test_names(self):
        self.assertTrue(issubclass(InterpreterPoolExecutor,
                                   concurrent.futures.Executor))
        self.assertTrue(issubclass(BrokenInterpreterPool,
                                   concurrent.futures.BrokenExecutor))
        self.assertIs(subinterp.futures.ExecutionFailed,
                      subinterp.ExecutionFailed)
        for name in subinterp.futures.__all__:
            self.assertTrue(hasattr(subinterp.futures, name), name)

    def test_bad_arguments(self):
        for value in (0, -1):
            with self.assertRaises(ValueError):
                InterpreterPoolExecutor(value)
        for value in ('2', 1.5, True):
            with self.assertRaises(TypeError):
                InterpreterPoolExecutor(value)
        for value in (0, -3):
            with self.assertRaises(ValueError):
                InterpreterPoolExecutor(1, max_tasks_per_worker=value)
        for value in ('2', 2.0, True):
            with self.assertRaises(TypeError):
                InterpreterPoolExecutor(1, max_tasks_per_worker=value)
        with self.assertRaises(TypeError):
            InterpreterPoolExecutor(1, initializer=5)
        with self.assertRaises(ValueError):
            InterpreterPoolExecutor(1, initializer='x = 1', initargs=(1,))
        with self.assertRaises(TypeError):
            InterpreterPoolExecutor(1, initializer=targets.hold, initargs=[1])
        with self.assertRaises(TypeError):
            InterpreterPoolExecutor(1, thread_name_prefix=5)

    def test_is_a_thread_pool_executor(self):
        # As in 3.14: asyncio's set_default_executor() takes only those.
        self.assertTrue(issubclass(InterpreterPoolExecutor,
                                   concurrent.futures.ThreadPoolExecutor))
        self.assertIs(InterpreterPoolExecutor.BROKEN, BrokenInterpreterPool)
        ex = InterpreterPoolExecutor(3, thread_name_prefix='tpe')
        try:
            self.assertIsInstance(ex, concurrent.futures.ThreadPoolExecutor)
            self.assertEqual(ex._max_workers, 3)
            self.assertEqual(ex._thread_name_prefix, 'tpe')
            self.assertIs(ex._broken, False)
            self.assertFalse(ex._shutdown)
            self.assertEqual(len(ex._threads), 0)  # workers start on demand
            self.assertEqual(ex._work_queue.qsize(), 0)
            self.assertEqual(ex.submit(abs, -4).result(timeout=SAFETY), 4)
            self.assertEqual(len(ex._threads), 1)
        finally:
            ex.shutdown()
        self.assertTrue(ex._shutdown)
        self.assertEqual(len(ex._threads), 0)

    def test_default_max_workers(self):
        ex = InterpreterPoolExecutor()
        try:
            self.assertEqual(ex._max_workers,
                             min(32, (os.cpu_count() or 1) + 4))
        finally:
            ex.shutdown()


class SubmitTests(ExecutorTestBase):

    def test_builtins(self):
        ex = self.executor(2)
        f = ex.submit(pow, 2, 100)
        self.assertIsInstance(f, concurrent.futures.Future)
        self.assertEqual(f.result(timeout=SAFETY), 2 ** 100)
        self.assertEqual(ex.submit(sorted, [3, 1, 2], reverse=True).result(),
                         [3, 2, 1])
        self.assertEqual(ex.submit(len, 'abcd').result(), 4)

    def test_functions_by_reference(self):
        ex = self.executor(2)
        self.assertEqual(ex.submit(targets.use_math, 2.5).result(), 122)
        self.assertEqual(ex.submit(targets.scaled, 6).result(), 42)
        self.assertEqual(
            ex.submit(targets.full_args, 1, 2, 3, 4, 5, e=6, g=7).result(),
            (1, 2, 3, 4, (5,), 6, -6, {'g': 7}))
        self.assertEqual(ex.submit(targets.make_values).result(),
                         targets.make_values())

    def test_lambda_and_closure(self):
        ex = self.executor(2)
        self.assertEqual(ex.submit(lambda x, y=3: x * y, 5).result(), 15)
        self.assertEqual(ex.submit(targets.make_adder(10), 5).result(), 15)
        offset = 100
        self.assertEqual(ex.submit(lambda x: x + offset, 1).result(), 101)

    def test_runs_in_a_worker_interpreter(self):
        ex = self.executor(2)
        interp_id = ex.submit(targets.current_id).result()
        self.assertNotEqual(interp_id, subinterp.get_current().id)
        self.assertIn(interp_id, ex._interpreter_ids)
        # Each worker starts with this interpreter's sys.path.
        self.assertEqual(ex.submit(targets.get_sys_path).result(),
                         [p for p in __import__('sys').path
                          if isinstance(p, str)])

    def test_not_callable(self):
        # As ThreadPoolExecutor's (and 3.14's): the future fails.
        ex = self.executor(1)
        f = ex.submit(5)
        with self.assertRaisesRegex(TypeError, "'int' object is not callable"):
            f.result(timeout=SAFETY)
        self.assertEqual(ex.submit(abs, -1).result(), 1)
        with self.assertRaises(TypeError):
            ex.submit('x = 1')  # 3.14: scripts not supported


class MainModuleTests(ScriptTestBase):
    # Functions of __main__ travel by value: the workers do not import
    # __main__ again (CPython 3.14's executor fails on these).

    SCRIPT = '''
        import math
        import subinterp.futures
        print('top', flush=True)
        FACTOR = 3

        def triple(x):
            return x * FACTOR

        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        def root(x):
            return math.isqrt(x)

        def make_adder(n):
            def add(x):
                return x + n
            return add

        def run():
            with subinterp.futures.InterpreterPoolExecutor(2) as ex:
                print('triple', ex.submit(triple, 5).result())
                print('fib', ex.submit(fib, 15).result())
                print('root', ex.submit(root, 1000).result())
                print('lambda', ex.submit(lambda x: x ** 2, 7).result())
                print('closure', ex.submit(make_adder(10), 5).result())
                print('map', list(ex.map(triple, range(4))))
                print('chunks', list(ex.map(lambda x: -x, range(5),
                                            chunksize=2)))
        '''
    EXPECTED = ['top', 'triple 15', 'fib 610', 'root 31', 'lambda 49',
                'closure 15', 'map [0, 3, 6, 9]', 'chunks [0, -1, -2, -3, -4]']

    def test_with_main_guard(self):
        out = self.assert_script_ok(self.SCRIPT + '''
        if __name__ == '__main__':
            run()
        ''')
        self.assertEqual(out.splitlines(), self.EXPECTED)

    def test_without_main_guard(self):
        out = self.assert_script_ok(self.SCRIPT + '''
        run()
        ''')
        self.assertEqual(out.splitlines(), self.EXPECTED)


class MapTests(ExecutorTestBase):

    def test_like_builtin_map(self):
        ex = self.executor(2)
        xs, ys = list(range(-50, 50)), [2, 3] * 50
        expected = list(map(pow, xs, ys))
        for chunksize in (1, 3, 7, 100, 1000):
            with self.subTest(chunksize=chunksize):
                self.assertEqual(list(ex.map(pow, xs, ys, chunksize=chunksize)),
                                 expected)
        # zip() semantics: the shortest iterable ends it.
        self.assertEqual(list(ex.map(pow, [1, 2, 3], [2, 2])), [1, 4])
        self.assertEqual(list(ex.map(abs, [])), [])
        self.assertEqual(list(ex.map(abs, [], chunksize=5)), [])
        self.assertEqual(list(ex.map(targets.scaled, range(10000),
                                     chunksize=500)),
                         [7 * i for i in range(10000)])

    def test_submits_at_once(self):
        # As Executor.map does: the calls are submitted before the results
        # are iterated.
        ex = self.executor(2)
        log = subinterp.create_queue()
        ex.map(T.record, [log] * 3, range(3))
        ex.map(T.record, [log] * 3, range(3, 6), chunksize=2)
        self.assertEqual(sorted(log.get(timeout=SAFETY) for _ in range(6)),
                         list(range(6)))

    def test_exception_raised_when_iterated(self):
        ex = self.executor(2)
        for chunksize in (1, 2):
            with self.subTest(chunksize=chunksize):
                it = ex.map(int, ['1', '2', 'x', '4', '5'],
                            chunksize=chunksize)
                self.assertEqual(next(it), 1)
                self.assertEqual(next(it), 2)
                with self.assertRaises(ValueError) as cm:
                    next(it)
                self.assertIsInstance(cm.exception.__cause__,
                                      subinterp.ExecutionFailed)
                self.assertIn("'x'", str(cm.exception))

    def test_timeout(self):
        ex = self.executor(2)
        gate = self.gate()
        it = ex.map(T.wait_for, [gate], timeout=0.1)
        took, error = elapsed(next, it)
        self.assertIsInstance(error, TimeoutError)
        self.assertLess(took, SAFETY / 2)
        # Fast calls end well within a timeout.
        self.assertEqual(list(ex.map(abs, [-1, -2], timeout=SAFETY)), [1, 2])

    def test_buffersize_with_endless_iterable(self):
        ex = self.executor(2)
        for chunksize in (1, 4):
            with self.subTest(chunksize=chunksize):
                pulled = []

                def numbers():
                    for i in itertools.count():
                        pulled.append(i)
                        yield -i

                it = ex.map(abs, numbers(), buffersize=3, chunksize=chunksize)
                self.assertEqual(next(it), 0)
                # At most buffersize (+1 refill) tasks ahead of the results.
                self.assertLessEqual(len(pulled), 4 * chunksize)
                self.assertEqual(list(itertools.islice(it, 99)),
                                 list(range(1, 100)))
                self.assertLessEqual(len(pulled), 100 + 4 * chunksize)
                del it  # cancels the tasks submitted ahead

    def test_bad_arguments(self):
        ex = self.executor(1)
        for chunksize in (0, -1):
            with self.assertRaises(ValueError):
                ex.map(abs, [1], chunksize=chunksize)
        with self.assertRaises(ValueError):
            ex.map(abs, [1], buffersize=0)
        with self.assertRaises(TypeError):
            ex.map(abs, [1], buffersize=1.5)
        with self.assertRaises(TypeError):
            ex.map(5, [1])
        self.assertEqual(list(ex.map(abs, [-1])), [1])


class ExceptionTests(ExecutorTestBase):

    def test_original_exception_from_execution_failed(self):
        ex = self.executor(1)
        f = ex.submit(targets.raise_value_error, 'boom')
        with self.assertRaises(ValueError) as cm:
            f.result(timeout=SAFETY)
        self.assertEqual(str(cm.exception), 'boom')
        cause = cm.exception.__cause__
        self.assertIsInstance(cause, subinterp.ExecutionFailed)
        text = str(cause)
        self.assertIn('Traceback', text)
        self.assertIn('raise_value_error', text)
        self.assertIn('targets.py', text)
        self.assertIs(f.exception(), cm.exception)

    def test_custom_exception_class(self):
        ex = self.executor(1)
        exc = ex.submit(targets.raise_custom).exception(timeout=SAFETY)
        self.assertIs(type(exc), targets.CustomError)
        self.assertEqual(str(exc), 'custom message')
        self.assertIsInstance(exc.__cause__, subinterp.ExecutionFailed)

    def test_exception_that_cannot_be_rebuilt(self):
        ex = self.executor(1)
        # Pickles, but does not unpickle; a local class does not pickle.
        for func, name in ((targets.raise_unpicklable, 'NeedsTwoArgs'),
                           (targets.raise_local_class, 'LocalError')):
            with self.subTest(name):
                exc = ex.submit(func).exception(timeout=SAFETY)
                self.assertIs(type(exc), subinterp.ExecutionFailed)
                self.assertIn(name, str(exc))
                self.assertIn(func.__name__, str(exc))  # the traceback

    def test_system_exit_fails_only_its_future(self):
        ex = self.executor(1)
        first = ex.submit(targets.current_id).result()
        exc = ex.submit(targets.raise_system_exit, 3).exception(timeout=SAFETY)
        self.assertIsInstance(exc, SystemExit)
        self.assertEqual(exc.code, 3)
        self.assertEqual(ex.submit(abs, -5).result(timeout=SAFETY), 5)
        # The worker and its interpreter carry on.
        self.assertEqual(ex.submit(targets.current_id).result(), first)

    def test_keyboard_interrupt_fails_only_its_future(self):
        ex = self.executor(1)
        exc = ex.submit(T.raise_keyboard_interrupt).exception(timeout=SAFETY)
        self.assertIsInstance(exc, KeyboardInterrupt)
        self.assertEqual(ex.submit(abs, -5).result(timeout=SAFETY), 5)

    def test_many_tasks_with_results_and_exceptions(self):
        # 10,000 tasks in chunks of 1,000: each future gets its own outcome.
        ex = self.executor(2)
        for base in range(0, 10_000, 1_000):
            futures = []
            for i in range(base, base + 1_000):
                if i % 3 == 0:
                    futures.append(ex.submit(targets.raise_value_error, str(i)))
                elif i % 3 == 1:
                    futures.append(ex.submit(targets.scaled, i))
                else:
                    futures.append(ex.submit(int, f'{i}'))
            done, not_done = concurrent.futures.wait(futures, timeout=SAFETY)
            self.assertEqual(not_done, set())
            for i, f in zip(range(base, base + 1_000), futures):
                if i % 3 == 0:
                    exc = f.exception()
                    self.assertIs(type(exc), ValueError, i)
                    self.assertEqual(exc.args, (str(i),))
                elif i % 3 == 1:
                    self.assertEqual(f.result(), 7 * i)
                else:
                    self.assertEqual(f.result(), i)


class NotShareableTests(ExecutorTestBase):

    def test_unshareable_argument(self):
        ex = self.executor(1)
        for args, kwargs in (((threading.Lock(),), {}),
                             (((x for x in ()),), {}),
                             ((), {'key': threading.Lock()})):
            with self.subTest(args=args, kwargs=kwargs):
                f = ex.submit(targets.nargs, *args, **kwargs)
                with self.assertRaises(subinterp.NotShareableError):
                    f.result(timeout=SAFETY)
                self.assertTrue(f.done())
                self.assertEqual(ex.submit(abs, -2).result(timeout=SAFETY), 2)

    def test_falsey_exception_is_raised(self):
        # Future.result() of 3.12 and 3.13.0 returns None for it (gh-132063).
        ex = self.executor(1)
        with self.assertRaisesRegex(targets.FalseyError, 'falsey'):
            ex.submit(targets.raise_falsey, 'falsey').result(timeout=SAFETY)

    def test_unshareable_callable(self):
        # As in 3.14, submit() returns a future that fails.
        ex = self.executor(1)
        f = ex.submit(threading.Lock().acquire)
        with self.assertRaises(subinterp.NotShareableError):
            f.result(timeout=SAFETY)
        self.assertEqual(ex.submit(abs, -2).result(timeout=SAFETY), 2)

    def test_unshareable_result(self):
        ex = self.executor(1)
        f = ex.submit(targets.make_lock)
        with self.assertRaises(subinterp.NotShareableError):
            f.result(timeout=SAFETY)
        self.assertEqual(ex.submit(abs, -2).result(timeout=SAFETY), 2)


class InteropTests(ExecutorTestBase):

    def test_wait(self):
        ex = self.executor(2)
        slow, gate = self.blocked_task(ex)
        quick = ex.submit(abs, -1)
        done, not_done = concurrent.futures.wait(
            [slow, quick], timeout=SAFETY,
            return_when=concurrent.futures.FIRST_COMPLETED)
        self.assertEqual(done, {quick})
        self.assertEqual(not_done, {slow})
        gate.put('go')
        done, not_done = concurrent.futures.wait(
            [slow, quick], timeout=SAFETY,
            return_when=concurrent.futures.ALL_COMPLETED)
        self.assertEqual(done, {slow, quick})
        self.assertEqual(not_done, set())
        self.assertEqual(slow.result(), 'go')

    def test_as_completed(self):
        ex = self.executor(2)
        slow, gate = self.blocked_task(ex)
        quick = ex.submit(abs, -1)
        it = concurrent.futures.as_completed([slow, quick], timeout=SAFETY)
        self.assertIs(next(it), quick)
        gate.put('go')
        self.assertIs(next(it), slow)
        with self.assertRaises(StopIteration):
            next(it)

    def test_add_done_callback(self):
        ex = self.executor(1)
        calls = []
        called = threading.Event()

        def callback(future):
            calls.append(future)
            called.set()

        f, gate = self.blocked_task(ex)
        f.add_done_callback(callback)
        time.sleep(0.05)
        self.assertEqual(calls, [])
        gate.put('go')
        self.assertTrue(called.wait(SAFETY))
        self.assertEqual(f.result(), 'go')
        ex.shutdown(wait=True)
        self.assertEqual(calls, [f])
        # Added to a done future: called at once.
        f.add_done_callback(calls.append)
        self.assertEqual(calls, [f, f])

    def test_callback_of_failed_and_cancelled_futures(self):
        ex = self.executor(1)
        seen = []
        failed = ex.submit(int, 'x')
        failed.add_done_callback(lambda f: seen.append(('failed', f)))
        concurrent.futures.wait([failed], timeout=SAFETY)
        blocked, gate = self.blocked_task(ex)
        queued = ex.submit(abs, -1)
        queued.add_done_callback(lambda f: seen.append(('queued', f)))
        self.assertTrue(queued.cancel())
        gate.put('go')
        blocked.result(timeout=SAFETY)
        ex.shutdown(wait=True)
        self.assertEqual(seen, [('failed', failed), ('queued', queued)])

    def test_asyncio(self):
        ex = self.executor(2)

        async def main():
            loop = asyncio.get_running_loop()
            a = await loop.run_in_executor(ex, pow, 3, 4)
            b = await asyncio.wrap_future(ex.submit(targets.scaled, 6))
            c = await asyncio.gather(
                *(loop.run_in_executor(ex, abs, -i) for i in range(20)))
            try:
                await loop.run_in_executor(ex, int, 'x')
            except ValueError as exc:
                d = type(exc.__cause__)
            return a, b, c, d

        result = asyncio.run(asyncio.wait_for(main(), SAFETY))
        self.assertEqual(result, (81, 42, list(range(20)),
                                  subinterp.ExecutionFailed))


    def test_asyncio_default_executor(self):
        # loop.set_default_executor() takes only ThreadPoolExecutors.
        ex = self.executor(2)
        main_id = subinterp.get_current().id

        async def main():
            loop = asyncio.get_running_loop()
            loop.set_default_executor(ex)
            ids = await asyncio.gather(
                *(loop.run_in_executor(None, targets.current_id)
                  for _ in range(4)))
            await loop.shutdown_default_executor()
            return ids

        ids = asyncio.run(asyncio.wait_for(main(), SAFETY))
        self.assertNotIn(main_id, ids)
        self.assertTrue(ex._shutdown)
        with self.assertRaises(RuntimeError):
            ex.submit(abs, -1)

    def test_asyncio_run_shuts_the_default_executor_down(self):
        ex = self.executor(1)

        async def main():
            asyncio.get_running_loop().set_default_executor(ex)
            return await asyncio.get_running_loop().run_in_executor(
                None, pow, 2, 10)

        self.assertEqual(asyncio.run(main()), 1024)
        self.assertTrue(ex._shutdown)


class InitializerTests(ExecutorTestBase):

    def test_callable_with_initargs(self):
        ex = self.executor(2, initializer=targets.hold,
                           initargs=('from init',))
        futures = [ex.submit(targets.get_held) for _ in range(6)]
        for f in futures:
            self.assertEqual(f.result(timeout=SAFETY), ['from init'])

    def test_script(self):
        ex = self.executor(2, initializer='MARK = 40 + 2\n')
        self.assertEqual(ex.submit(targets.get_main_attr, 'MARK').result(), 42)

    def test_lambda_initializer(self):
        ex = self.executor(1, initializer=lambda v: targets.hold(v * 2),
                           initargs=(21,))
        self.assertEqual(ex.submit(targets.get_held).result(), [42])

    def check_broken(self, ex, error_name, message):
        # The first submission always queues (no worker has started yet);
        # the next ones do unless the pool broke meanwhile.
        futures = [ex.submit(abs, -1)]
        for i in range(2):
            try:
                futures.append(ex.submit(abs, -i))
            except BrokenInterpreterPool:
                break
        for f in futures:
            exc = f.exception(timeout=SAFETY)
            self.assertIsInstance(exc, BrokenInterpreterPool)
            self.assertIsInstance(exc.__cause__, subinterp.ExecutionFailed)
            self.assertIn(error_name, str(exc.__cause__))
            self.assertIn(message, str(exc.__cause__))
        with self.assertRaises(BrokenInterpreterPool):
            ex.submit(abs, -1)
        with self.assertRaises(BrokenInterpreterPool):
            list(ex.map(abs, [-1]))

    def test_initializer_raises(self):
        ex = self.executor(2, initializer=targets.raise_value_error,
                           initargs=('init failed',))
        self.check_broken(ex, 'ValueError', 'init failed')

    def test_script_initializer_raises(self):
        ex = self.executor(1, initializer='raise LookupError("bad script")')
        self.check_broken(ex, 'LookupError', 'bad script')

    def test_failure_is_logged(self):
        # On the 'concurrent.futures' logger, as ThreadPoolExecutor and
        # 3.14 do: the original exception, raised from the ExecutionFailed
        # that shows the remote traceback.
        ex = self.executor(1, initializer=targets.raise_value_error,
                           initargs=('init failed',))
        with self.assertLogs('concurrent.futures', 'CRITICAL') as logs:
            exc = ex.submit(abs, -1).exception(timeout=SAFETY)
        self.assertIsInstance(exc, BrokenInterpreterPool)
        self.assertTrue(ex._broken)
        self.assertEqual(len(logs.records), 1)
        record = logs.records[0]
        self.assertEqual(record.getMessage(), 'Exception in initializer:')
        self.assertIs(record.exc_info[0], ValueError)
        self.assertIsInstance(record.exc_info[1].__cause__,
                              subinterp.ExecutionFailed)
        with self.assertRaises(BrokenInterpreterPool):
            ex.submit(abs, -1)

    def test_unshareable_initializer_breaks_the_pool(self):
        # As in 3.14: not an error of the construction; the first
        # submission's future fails, the failure is logged, and later
        # submissions raise.
        for kwargs in ({'initializer': threading.Lock().acquire},
                       {'initializer': targets.hold,
                        'initargs': (threading.Lock(),)}):
            with self.subTest(**kwargs):
                ex = self.executor(1, **kwargs)
                self.assertIs(ex._broken, False)
                with self.assertLogs('concurrent.futures', 'CRITICAL') as logs:
                    f = ex.submit(abs, -1)
                    exc = f.exception(timeout=SAFETY)
                self.assertIsInstance(exc, BrokenInterpreterPool)
                self.assertIsInstance(exc.__cause__, subinterp.NotShareableError)
                self.assertIn('NotShareableError', logs.output[0])
                self.assertTrue(ex._broken)
                with self.assertRaises(BrokenInterpreterPool):
                    ex.submit(abs, -1)
                with self.assertRaises(BrokenInterpreterPool):
                    list(ex.map(abs, [-1]))


class InitializerLogTests(ScriptTestBase):

    def test_failure_logged_on_stderr(self):
        # Without logging configured, the message reaches stderr, with the
        # remote traceback, as in 3.14 (its own test checks these lines).
        proc = run_script('''
            from subinterp.futures import BrokenInterpreterPool, InterpreterPoolExecutor

            def fail(exctype, msg):
                raise exctype(msg)

            def noop():
                pass

            if __name__ == '__main__':
                with InterpreterPoolExecutor(initializer=fail,
                                             initargs=(Exception, 'spam')) as ex:
                    exc = ex.submit(noop).exception()
                print(type(exc).__name__)
            ''')
        self.assertEqual(proc.returncode, 0, describe(proc))
        self.assertEqual(proc.stdout.strip(), 'BrokenInterpreterPool')
        proc_stderr = proc.stderr
        self.assertIn('Exception in initializer:', proc_stderr)
        self.assertIn('ExecutionFailed: Exception: spam', proc_stderr)
        self.assertIn('Uncaught in the interpreter:', proc_stderr)
        self.assertIn('The above exception was the direct cause', proc_stderr)


class ShutdownTests(ExecutorTestBase):

    def test_submit_after_shutdown(self):
        ex = self.executor(1)
        self.assertEqual(ex.submit(abs, -1).result(), 1)
        ex.shutdown()
        with self.assertRaises(RuntimeError):
            ex.submit(abs, -1)
        with self.assertRaises(RuntimeError):
            ex.map(abs, [-1])
        ex.shutdown()  # again: nothing to do

    def test_shutdown_before_any_task(self):
        ex = InterpreterPoolExecutor(2)
        ex.shutdown()
        with self.assertRaises(RuntimeError):
            ex.submit(abs, -1)

    def test_cancel_futures(self):
        ex = self.executor(1)
        log = subinterp.create_queue()
        running, gate = self.blocked_task(ex)
        queued = [ex.submit(T.record, log, i) for i in range(5)]
        ex.shutdown(wait=False, cancel_futures=True)
        for f in queued:
            self.assertTrue(f.cancelled())
            self.assertTrue(f.done())
            with self.assertRaises(concurrent.futures.CancelledError):
                f.result(timeout=0)
        # The running task is not cancelled: it finishes.
        self.assertFalse(running.cancelled())
        gate.put('go')
        self.assertEqual(running.result(timeout=SAFETY), 'go')
        ex.shutdown(wait=True)
        self.assertTrue(log.empty(), 'a cancelled task ran')

    def test_shutdown_without_wait_returns_at_once(self):
        ex = self.executor(1)
        running, gate = self.blocked_task(ex)
        queued = ex.submit(abs, -7)
        took, error = elapsed(ex.shutdown, wait=False)
        self.assertIsNone(error)
        self.assertLess(took, SETTLE)
        self.assertFalse(running.done())
        with self.assertRaises(RuntimeError):
            ex.submit(abs, -1)
        gate.put('go')
        # The tasks already submitted still run.
        self.assertEqual(running.result(timeout=SAFETY), 'go')
        self.assertEqual(queued.result(timeout=SAFETY), 7)

    def test_context_manager_waits_for_tasks(self):
        gate = subinterp.create_queue()
        log = subinterp.create_queue()
        timer = threading.Timer(0.1, gate.put, ('go',))
        with InterpreterPoolExecutor(1) as ex:
            timer.start()
            slow = ex.submit(T.wait_for, gate)
            queued = [ex.submit(T.record, log, i) for i in range(3)]
        timer.join()
        self.assertTrue(slow.done())
        self.assertEqual(slow.result(timeout=0), 'go')
        self.assertEqual([f.result(timeout=0) for f in queued], [0, 1, 2])
        # (The items are unbound now: the interpreter that put them ended.)
        self.assertEqual(log.qsize(), 3)
        with self.assertRaises(RuntimeError):
            ex.submit(abs, -1)

    def test_workers_end_at_shutdown(self):
        ex = self.executor(2)
        ids = set(self.start_both_workers(ex))
        self.assertEqual(set(ex._interpreter_ids), ids)
        live = {interp.id for interp in subinterp.list_all()}
        self.assertLessEqual(ids, live)
        ex.shutdown(wait=True)
        live = {interp.id for interp in subinterp.list_all()}
        self.assertEqual(ids & live, set())
        self.assertEqual(ex._interpreter_ids, [])


class CancelTests(ExecutorTestBase):

    def test_cancel_queued_and_running(self):
        ex = self.executor(1)
        log = subinterp.create_queue()
        running, gate = self.blocked_task(ex)
        queued = ex.submit(T.record, log, 'queued')
        self.assertFalse(queued.running())
        self.assertTrue(queued.cancel())
        self.assertTrue(queued.cancelled())
        self.assertTrue(queued.done())
        with self.assertRaises(concurrent.futures.CancelledError):
            queued.result(timeout=0)
        self.assertTrue(running.running())
        self.assertFalse(running.cancel())
        self.assertFalse(running.cancelled())
        self.assertFalse(running.done())
        gate.put('go')
        self.assertEqual(running.result(timeout=SAFETY), 'go')
        self.assertFalse(running.running())
        self.assertFalse(running.cancel())  # done
        after = ex.submit(T.record, log, 'after')
        self.assertEqual(after.result(timeout=SAFETY), 'after')
        self.assertEqual(log.get_nowait(), 'after')
        self.assertTrue(log.empty(), 'the cancelled task ran')


class MaxTasksPerWorkerTests(ExecutorTestBase):

    def test_interpreters_replaced(self):
        ex = self.executor(1, max_tasks_per_worker=2)
        runs = [ex.submit(T.interpreter_and_count).result(timeout=SAFETY)
                for _ in range(6)]
        ids = [interp_id for interp_id, _ in runs]
        self.assertEqual([count for _, count in runs], [1, 2] * 3)
        self.assertEqual(ids[0], ids[1])
        self.assertEqual(ids[2], ids[3])
        self.assertEqual(ids[4], ids[5])
        self.assertEqual(len(set(ids)), 3)
        self.assertNotIn(ids[0], ex._interpreter_ids)
        ex.shutdown(wait=True)
        live = {interp.id for interp in subinterp.list_all()}
        self.assertEqual(set(ids) & live, set())  # all were closed

    def test_initializer_runs_in_each_new_interpreter(self):
        ex = self.executor(1, initializer=targets.hold, initargs=('init',),
                           max_tasks_per_worker=1)
        held = [ex.submit(targets.get_held).result(timeout=SAFETY)
                for _ in range(3)]
        self.assertEqual(held, [['init']] * 3)

    def test_without_limit_interpreter_kept(self):
        ex = self.executor(1)
        runs = [ex.submit(T.interpreter_and_count).result(timeout=SAFETY)
                for _ in range(5)]
        self.assertEqual(len({interp_id for interp_id, _ in runs}), 1)
        self.assertEqual([count for _, count in runs], [1, 2, 3, 4, 5])


class ParallelTests(ExecutorTestBase):

    def test_tasks_run_at_the_same_time(self):
        # Each waits for the other: they cannot run one after the other.
        ex = self.executor(2)
        a, b = self.start_both_workers(ex)
        self.assertNotEqual(a, b)

    @unittest.skipIf((os.cpu_count() or 1) < 2, 'needs 2 CPUs')
    def test_tasks_run_in_parallel(self):
        # Each spins holding its own GIL until the other has started: with
        # one GIL between them, neither could ever see the other.
        ex = self.executor(2)
        flags = subinterp.SharedBuffer(2)
        fa = ex.submit(T.spin_rendezvous, memoryview(flags), 0, 1, SAFETY)
        fb = ex.submit(T.spin_rendezvous, memoryview(flags), 1, 0, SAFETY)
        self.assertTrue(fa.result(timeout=SAFETY + 5))
        self.assertTrue(fb.result(timeout=SAFETY + 5))


class WorkerInterpreterTests(ExecutorTestBase):

    def test_listed_and_cannot_be_closed(self):
        ex = self.executor(2)
        used = self.start_both_workers(ex)
        ids = ex._interpreter_ids
        self.assertEqual(ids, sorted(used))
        live = {interp.id for interp in subinterp.list_all()}
        self.assertLessEqual(set(ids), live)
        for interp_id in ids:
            with self.assertRaises(subinterp.InterpreterError):
                subinterp.Interpreter(interp_id).close()
        self.assertEqual(ex._interpreter_ids, ids)
        self.assertEqual(ex.submit(abs, -3).result(timeout=SAFETY), 3)
        self.assertIn(ex.submit(targets.current_id).result(), ids)


class ExitTests(ScriptTestBase):

    def test_ctrl_c_ends_the_exit_wait_for_a_task_that_never_returns(self):
        # Like ThreadPoolExecutor, the exit waits for running tasks; a task
        # blocked for good holds it up until Ctrl-C, after which the
        # runtime's own exit refuses the task's wait and the process ends.
        with tempfile.TemporaryDirectory() as tmp:
            script = write_script(tmp, 'script.py', """
                import subinterp
                from subinterp.futures import InterpreterPoolExecutor
                q = subinterp.create_queue()
                ex = InterpreterPoolExecutor(1)
                ex.submit(q.get)        # never returns by itself
                print('exiting', flush=True)
                """)
            proc = subprocess.Popen([sys.executable, script], cwd=tmp,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            try:
                self.assertEqual(proc.stdout.readline().strip(), 'exiting')
                time.sleep(SETTLE)  # into the exit's wait
                self.assertIsNone(proc.poll(), 'exited without waiting')
                proc.send_signal(signal.SIGINT)
                _, err = proc.communicate(timeout=SCRIPT_TIMEOUT)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        check_no_sanitizer_report(err)
        self.assertNotIn('Fatal Python error', err)
        self.assertIn('KeyboardInterrupt', err)
        self.assertGreaterEqual(proc.returncode, 0, err)

    def test_exit_without_shutdown_finishes_tasks(self):
        # As for ThreadPoolExecutor: queued and running tasks finish before
        # the process exits.
        out = self.assert_script_ok('''
            import os
            import subinterp.futures

            def task(i):
                import os, time
                time.sleep(0.01)
                os.write(1, f'task {i}\\n'.encode())
                return i

            ex = subinterp.futures.InterpreterPoolExecutor(1)
            futures = [ex.submit(task, i) for i in range(10)]
            os.write(1, b'main end\\n')
            ''')
        lines = out.splitlines()
        self.assertIn('main end', lines)
        lines.remove('main end')
        self.assertEqual(lines, [f'task {i}' for i in range(10)])

    # An executor dropped without shutdown() still runs its queued tasks
    # before the exit, as ThreadPoolExecutor does.
    def test_exit_with_executor_dropped(self):
        out = self.assert_script_ok('''
            import os
            import subinterp.futures

            def task(i):
                import os, time
                time.sleep(0.02)
                os.write(1, f'task {i}\\n'.encode())

            def run():
                ex = subinterp.futures.InterpreterPoolExecutor(1)
                for i in range(8):
                    ex.submit(task, i)

            run()
            os.write(1, b'main end\\n')
            ''')
        lines = out.splitlines()
        self.assertIn('main end', lines)
        lines.remove('main end')
        self.assertEqual(lines, [f'task {i}' for i in range(8)])


class WorkerStartRaceTests(ScriptTestBase):

    # A worker's interpreter is the pool's from its creation: a listing
    # made while a worker starts one must not give the caller an Interpreter
    # whose release closes it under the worker (this aborted the process:
    # "Py_EndInterpreter: not the last thread"). A worker starts an
    # interpreter when it starts and after every max_tasks_per_worker tasks.
    def test_list_all_while_workers_start(self):
        out = self.assert_script_ok('''
            import subinterp, subinterp.futures

            def list_until_done(ex, n):
                futures = [ex.submit(abs, -i) for i in range(n)]
                while not all(f.done() for f in futures):
                    subinterp.list_all()

            for _ in range(10):
                with subinterp.futures.InterpreterPoolExecutor(2) as ex:
                    list_until_done(ex, 2)
            # Each task in a new interpreter: a start after each.
            with subinterp.futures.InterpreterPoolExecutor(
                    2, max_tasks_per_worker=1) as ex:
                list_until_done(ex, 30)
            print('end')
            ''')
        self.assertEqual(out.strip(), 'end')


if __name__ == '__main__':
    unittest.main()
