"""subinterp.dask: the ``subinterp`` scheduler of dask's local scheduler,
and the executor for dask.distributed workers.

Skipped when dask does not import (``bash scripts/deps.sh`` installs
Debian's python3-dask, used here from /usr/lib/python3/dist-packages).
dask.distributed is tested if and only if it imports: Debian's build needs
psutil for 3.11 only.
"""

import os
import sys
import time
import unittest

from helpers import ScriptTestBase, TestBase

DIST_PACKAGES = '/usr/lib/python3/dist-packages'
if os.path.isdir(DIST_PACKAGES) and DIST_PACKAGES not in sys.path:
    sys.path.append(DIST_PACKAGES)

try:
    import dask
    import dask.bag as db
    from dask import delayed
except ImportError as exc:  # pragma: no cover - depends on the machine
    dask = None
    WHY_NOT = f'dask does not import: {exc}'
else:
    import subinterp.dask
    WHY_NOT = None

try:
    import distributed
except Exception as exc:  # ImportError, or psutil built for another Python
    distributed = None
    WHY_NOT_DISTRIBUTED = f'dask.distributed does not import: {exc!r}'
else:
    WHY_NOT_DISTRIBUTED = None


class TaskError(Exception):
    """Raised by a task: must reach the caller as this type."""


def fail(x):
    raise TaskError(f'no good: {x}')


def slow_id(seconds):
    import subinterp
    time.sleep(seconds)
    return subinterp.get_current().id


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError('not today')


def fail_unpicklably():
    raise Unpicklable('odd')


@unittest.skipIf(WHY_NOT, WHY_NOT)
class SchedulerTests(TestBase):

    def compute(self, *values, **kwargs):
        kwargs.setdefault('scheduler', 'subinterp')
        return dask.compute(*values, **kwargs)

    def test_delayed_with_lambdas_closures_and_module_functions(self):
        factor = 3

        def scale(x):  # a closure
            return x * factor

        a = delayed(lambda x: x + 1)(1)
        b = delayed(scale)(a)
        c = delayed(pow)(b, 2)
        total = delayed(sum)([a, b, c])
        self.assertEqual(self.compute(total, b), (2 + 6 + 36, 6))

    def test_bag_map_filter_fold(self):
        bag = db.from_sequence(range(100), npartitions=8)
        odd_squares = bag.map(lambda x: x * x).filter(lambda x: x % 2)
        self.assertEqual(self.compute(odd_squares.sum())[0],
                         sum(x * x for x in range(100) if x % 2))
        counts = db.from_sequence(['a', 'bb', 'a', 'ccc', 'bb', 'a'], npartitions=3)
        self.assertEqual(dict(self.compute(counts.frequencies())[0]),
                         {'a': 3, 'bb': 2, 'ccc': 1})
        folded = bag.foldby(lambda x: x % 3, lambda acc, x: acc + x, 0,
                            lambda a, b: a + b, 0)
        self.assertEqual(sorted(self.compute(folded)[0]),
                         [(k, sum(x for x in range(100) if x % 3 == k)) for k in range(3)])

    def test_failing_task_raises_its_own_exception(self):
        with self.assertRaises(TaskError) as caught:
            self.compute(delayed(fail)(7))
        self.assertEqual(str(caught.exception), 'no good: 7')
        notes = '\n'.join(getattr(caught.exception, '__notes__', []))
        self.assertIn('Traceback in the sub-interpreter', notes)
        self.assertIn('in fail', notes)
        with self.assertRaises(ZeroDivisionError):
            self.compute(db.from_sequence([1, 0], npartitions=2).map(lambda x: 1 / x).sum())

    def test_unpicklable_exception_is_named(self):
        with self.assertRaisesRegex(RuntimeError, 'Unpicklable.*cannot be pickled.*odd'):
            self.compute(delayed(fail_unpicklably)())

    def test_tasks_run_in_parallel_sub_interpreters(self):
        ids = self.compute(*[delayed(slow_id)(0.3) for _ in range(4)], num_workers=2)
        self.assertNotIn(0, ids)
        self.assertEqual(len(set(ids)), 2, ids)

    def test_config_and_own_pool(self):
        with dask.config.set(scheduler='subinterp'):
            self.assertEqual(delayed(lambda: 41)().compute() + 1, 42)
        with subinterp.futures.InterpreterPoolExecutor(2) as pool:
            ids = self.compute(*[delayed(slow_id)(0.1) for _ in range(4)], pool=pool)
            self.assertTrue(set(ids) <= set(pool._interpreter_ids), (ids, pool._interpreter_ids))

    def test_named_scheduler_is_registered(self):
        from dask.base import get_scheduler
        self.assertIs(get_scheduler(scheduler='subinterp'), subinterp.dask.get)


@unittest.skipIf(WHY_NOT, WHY_NOT)
class ExitTests(ScriptTestBase):

    def test_exit_after_compute_is_clean(self):
        out = self.assert_script_ok(f'''
            import sys
            sys.path.append({DIST_PACKAGES!r})
            import dask, subinterp.dask
            from dask import delayed
            print(dask.compute(delayed(lambda: 6 * 7)(), scheduler='subinterp')[0])
            ''')
        self.assertEqual(out.strip(), '42')


# The task wrapper a distributed Worker hands its executor: its module and
# name are what WorkerExecutor looks for, and it keeps the contract of
# distributed.worker._run_task_simple (call the task with the data, time
# it, build the message). The real one is used below when distributed
# imports.
def _run_task_simple(task, data, time_delay):
    import threading
    start = time.time()
    try:
        result = task(data)
    except Exception as e:
        msg = {'op': 'task-erred', 'actual_exception': e}
    else:
        msg = {'op': 'task-finished', 'result': result}
    msg['start'], msg['stop'] = start + time_delay, time.time() + time_delay
    msg['thread'] = threading.get_ident()
    return msg


_run_task_simple.__module__ = 'distributed.worker'


def _task(data):
    import subinterp
    return (sum(data['xs']), subinterp.get_current().id)


def _failing_task(data):
    raise TaskError(data['why'])


@unittest.skipIf(WHY_NOT, WHY_NOT)
class WorkerExecutorTests(TestBase):

    def test_only_the_task_runs_in_an_interpreter(self):
        with subinterp.dask.WorkerExecutor(2) as executor:
            msg = executor.submit(_run_task_simple, _task, {'xs': [1, 2, 3]}, 0.0).result()
            self.assertEqual(msg['op'], 'task-finished')
            total, interp = msg['result']
            self.assertEqual(total, 6)
            self.assertNotEqual(interp, 0)
            # The wrapper ran in the worker's own interpreter, on a thread
            # of the executor.
            import threading
            self.assertIn(msg['thread'], {t.ident for t in threading.enumerate()})
            msg = executor.submit(_run_task_simple, _failing_task, {'why': 'no'}, 0.0).result()
            self.assertEqual(msg['op'], 'task-erred')
            self.assertIsInstance(msg['actual_exception'], TaskError)
            # Anything else runs wholly in an interpreter.
            self.assertNotEqual(executor.submit(slow_id, 0).result(), 0)

    def test_type_name_keeps_distributed_off_its_closure_path(self):
        # distributed sends "ThreadPoolExecutor"s a closure instead of the
        # wrapper and the task.
        self.assertNotIn('ThreadPoolExecutor', str(subinterp.dask.WorkerExecutor))


@unittest.skipIf(WHY_NOT or WHY_NOT_DISTRIBUTED, WHY_NOT or WHY_NOT_DISTRIBUTED)
class DistributedTests(TestBase):

    def test_worker_with_the_executor(self):
        import asyncio
        from distributed import Client, Scheduler, Worker

        async def main():
            async with Scheduler(host='127.0.0.1', port=0, dashboard_address=':0') as s:
                async with Worker(s.address, nthreads=2,
                                  executor=subinterp.dask.WorkerExecutor(2)):
                    async with Client(s.address, asynchronous=True) as client:
                        ids = await client.gather(client.map(slow_id, [0.2] * 4, pure=False))
                        with self.assertRaises(TaskError):
                            await client.submit(fail, 1)
                        return ids

        ids = asyncio.run(main())
        self.assertNotIn(0, ids)


if __name__ == '__main__':
    unittest.main()
