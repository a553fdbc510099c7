"""subinterp.celery.TaskPool driven by a real Celery worker and a real
redis-server (tests/python/celery_support.py, tasks in celery_tasks.py).

Skipped only when redis-server or Celery is missing; ``bash scripts/deps.sh``
installs both on Debian.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import celery_support

WHY_NOT = celery_support.missing()
if WHY_NOT is None:
    from celery.exceptions import (SoftTimeLimitExceeded, TaskRevokedError,
                                   TimeLimitExceeded)
    import celery_tasks
    from celery_tasks import TaskFailure

SANITIZED = any(v in os.environ for v in ('ASAN_OPTIONS', 'TSAN_OPTIONS'))
# Seconds a task may take to come back.
WAIT = 120 if SANITIZED else 30
# Loop count of a CPU-bound task of about half a second.
SPIN = 2_000_000 if SANITIZED else 5_000_000


_redis = None
_dir = None


def setUpModule():
    # One redis-server for the module: the client app keeps its connections.
    global _redis, _dir
    if WHY_NOT is not None:
        raise unittest.SkipTest(WHY_NOT)
    _dir = tempfile.TemporaryDirectory(prefix='subinterp-celery-')
    _redis = celery_support.Redis(_dir.name)
    celery_tasks.app.conf.broker_url = _redis.url(0)
    celery_tasks.app.conf.result_backend = _redis.url(1)


def tearDownModule():
    import gc
    gc.collect()  # results unsubscribe from redis as they go
    celery_tasks.app.close()
    if _redis is not None:
        _redis.stop()
    if _dir is not None:
        _dir.cleanup()


class _WorkerCase(unittest.TestCase):
    """The client is this process; workers are started by the tests."""

    @classmethod
    def setUpClass(cls):
        cls.app = celery_tasks.app
        cls.redis = _redis
        cls.dir = _dir

    @classmethod
    def start_worker(cls, *args):
        return celery_support.Worker('celery_tasks', cls.redis, cls.dir.name, *args)

    def stats(self, worker):
        """The worker's ``celery inspect stats``."""
        reply = self.app.control.inspect([worker.name], timeout=10, limit=1).stats() or {}
        self.assertIn(worker.name, reply, f'no stats from {worker.name}')
        return reply[worker.name]

    def active(self, worker):
        reply = self.app.control.inspect([worker.name], timeout=10, limit=1).active() or {}
        return reply.get(worker.name, [])

    def wait_running(self, worker, count):
        celery_support.wait_for(lambda: len(self.active(worker)) >= count, WAIT,
                                f'{count} running tasks', proc=worker.proc, log=worker.log)


class TaskPoolTests(_WorkerCase):
    """One worker, -c 2, for the whole class."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.worker = cls.start_worker('-c', '2')

    @classmethod
    def tearDownClass(cls):
        code = cls.worker.stop(signal.SIGTERM)
        log = cls.worker.text()
        assert code == 0, f'worker exit status {code}\n{log[-4000:]}'

    def wait_logged(self, text):
        celery_support.wait_for(lambda: text in self.worker.text(), WAIT,
                                f'{text!r} in the log', log=self.worker.log)

    def tearDown(self):
        self.assertIsNone(self.worker.proc.poll(),
                          f'the worker died\n{self.worker.text()[-4000:]}')

    def test_results_of_many_tasks(self):
        results = [celery_tasks.add.delay(i, 2 * i) for i in range(300)]
        self.assertEqual([r.get(timeout=WAIT) for r in results],
                         [3 * i for i in range(300)])

    def test_exception_arrives_as_its_own_type(self):
        with self.assertRaises(TaskFailure) as caught:
            celery_tasks.fail.delay('no such thing').get(timeout=WAIT)
        self.assertEqual(str(caught.exception), 'no such thing')
        self.wait_logged('celery_tasks.TaskFailure: no such thing')

    def wait_pool_ready(self, count=2):
        """Until ``count`` interpreters serve and none is starting or
        stopping (an earlier test may have had one replaced)."""
        def ready():
            pool = self.stats(self.worker)['pool']
            return (len(pool['interpreters']) == count and not pool['starting']
                    and not pool['stopping-interpreters'])
        celery_support.wait_for(ready, WAIT, f'{count} ready interpreters',
                                log=self.worker.log)

    def test_two_interpreters_in_one_process(self):
        self.wait_pool_ready()
        # Two slow tasks at once: each worker interpreter takes one.
        results = [celery_tasks.spin.delay(SPIN) for _ in range(2)]
        ids = {r.get(timeout=WAIT)[3] for r in results}
        self.assertEqual(len(ids), 2, ids)
        pids = {celery_tasks.where.delay().get(timeout=WAIT)[0] for _ in range(6)}
        self.assertEqual(pids, {self.worker.pid})
        self.assertNotIn(0, ids)  # never the main interpreter
        stats = self.stats(self.worker)['pool']
        self.assertEqual(stats['implementation'], 'subinterp.celery:TaskPool')
        self.assertEqual(len(stats['interpreters']), 2, stats)

    def test_cpu_bound_tasks_run_in_parallel(self):
        # Two CPU-bound tasks at once each take about their own CPU time
        # (with one GIL they would take twice as long) and overlap.
        self.wait_pool_ready()
        # Other load on the machine stretches both: a few attempts.
        for attempt in range(5):
            a, b = (celery_tasks.spin.delay(SPIN) for _ in range(2))
            (s1, e1, cpu1, i1), (s2, e2, cpu2, i2) = a.get(timeout=WAIT), b.get(timeout=WAIT)
            overlap = min(e1, e2) - max(s1, s2)
            stretch = max((e1 - s1) / cpu1, (e2 - s2) / cpu2)
            if i1 != i2 and overlap > 0.6 * min(e1 - s1, e2 - s2) and stretch < 1.5:
                return
        self.fail(f'not parallel: overlap {overlap:.2f} s of {e1 - s1:.2f} and '
                  f'{e2 - s2:.2f} s, wall/cpu {stretch:.2f}, interpreters {i1} {i2}')

    def test_hard_time_limit_ends_a_runaway_task(self):
        before = self.stats(self.worker)['pool']['interpreters-replaced']
        start = time.monotonic()
        with self.assertRaises(TimeLimitExceeded):
            celery_tasks.forever.apply_async(time_limit=1).get(timeout=WAIT)
        self.assertLess(time.monotonic() - start, WAIT)
        self.wait_logged('Hard time limit (1s) exceeded')
        # The worker lives and has its two interpreters, one of them new.
        self.assertEqual(celery_tasks.add.delay(20, 22).get(timeout=WAIT), 42)
        celery_support.wait_for(
            lambda: len(self.stats(self.worker)['pool']['interpreters']) == 2,
            WAIT, 'the replacement interpreter')
        pool = self.stats(self.worker)['pool']
        self.assertEqual(pool['interpreters-replaced'], before + 1)
        celery_support.wait_for(
            lambda: not self.stats(self.worker)['pool']['stopping-interpreters'],
            WAIT, 'the stopped task to leave its interpreter')

    def test_soft_time_limit_raises_in_the_task(self):
        result = celery_tasks.soft_limited.apply_async(soft_time_limit=0.5)
        self.assertEqual(result.get(timeout=WAIT), 'stopped by the soft limit')
        self.wait_logged('Soft time limit (0.5s) exceeded')
        with self.assertRaises(SoftTimeLimitExceeded):
            celery_tasks.forever.apply_async(soft_time_limit=0.5).get(timeout=WAIT)

    def test_revoke_with_terminate(self):
        result = celery_tasks.forever.delay()
        celery_support.wait_for(
            lambda: any(t['id'] == result.id for t in self.active(self.worker)),
            WAIT, 'the task to start')
        self.app.control.revoke(result.id, terminate=True)
        with self.assertRaises(TaskRevokedError):
            result.get(timeout=WAIT)
        self.assertEqual(result.state, 'REVOKED')
        celery_support.wait_for(lambda: not self.active(self.worker), WAIT,
                                'the terminated task to leave')
        self.assertEqual(celery_tasks.add.delay(1, 1).get(timeout=WAIT), 2)

    def test_pool_grow_and_shrink(self):
        def interpreters():
            return self.stats(self.worker)['pool']['interpreters']
        self.app.control.pool_grow(1, destination=[self.worker.name], reply=True, limit=1, timeout=10)
        celery_support.wait_for(lambda: len(interpreters()) == 3, WAIT, 'a third interpreter')
        results = [celery_tasks.spin.delay(SPIN // 4) for _ in range(6)]
        self.assertTrue(all(r.get(timeout=WAIT) for r in results))
        self.app.control.pool_shrink(1, destination=[self.worker.name], reply=True, limit=1, timeout=10)
        celery_support.wait_for(lambda: len(interpreters()) == 2, WAIT, 'two interpreters')
        self.assertEqual(self.stats(self.worker)['pool']['max-concurrency'], 2)

    def test_pool_restart_replaces_every_interpreter(self):
        self.wait_pool_ready()
        before = set(self.stats(self.worker)['pool']['interpreters'])
        reply = self.app.control.pool_restart(destination=[self.worker.name], reply=True,
                                              limit=1, timeout=10)
        self.assertTrue(reply and 'ok' in reply[0][self.worker.name], reply)
        celery_support.wait_for(
            lambda: not set(self.stats(self.worker)['pool']['interpreters']) & before,
            WAIT, 'fresh interpreters', log=self.worker.log)
        self.wait_pool_ready()
        self.assertEqual(celery_tasks.add.delay(2, 2).get(timeout=WAIT), 4)

    def test_sigusr1_dumps_threads_safely(self):
        # Celery's own handler reads every interpreter's frames: the
        # process used to abort while a task ran.
        running = [celery_tasks.spin.delay(SPIN) for _ in range(2)]
        self.wait_running(self.worker, 1)
        os.kill(self.worker.pid, signal.SIGUSR1)
        self.assertTrue(all(r.get(timeout=WAIT) for r in running))
        self.wait_logged('--- worker interpreters')
        self.wait_logged('task celery_tasks.spin[')


class ShutdownTests(_WorkerCase):
    """Each test starts and stops its own worker."""

    def test_warm_shutdown_finishes_running_tasks(self):
        worker = self.start_worker('-c', '2')
        try:
            results = [celery_tasks.nap.delay(2) for _ in range(2)]
            self.wait_running(worker, 2)
            code = worker.stop(signal.SIGTERM)
        finally:
            celery_support.stop(worker.proc)
        self.assertEqual(code, 0, worker.text()[-4000:])
        self.assertEqual([r.get(timeout=WAIT) for r in results], [2, 2])
        self.assertIn('succeeded', worker.text())

    def test_cold_shutdown_stops_running_tasks(self):
        worker = self.start_worker('-c', '2')
        try:
            celery_tasks.forever.delay()
            self.wait_running(worker, 1)
            start = time.monotonic()
            worker.stop(signal.SIGQUIT, timeout=WAIT)
            took = time.monotonic() - start
        finally:
            celery_support.stop(worker.proc)
        self.assertLess(took, 20, worker.text()[-4000:])
        self.assertNotIn('Fatal Python error', worker.text())

    def test_cold_shutdown_during_a_warm_one(self):
        # A warm shutdown waits for a task that never ends; a second Ctrl-C
        # (here SIGQUIT, the same cold shutdown) must end the wait.
        worker = self.start_worker('-c', '2')
        try:
            celery_tasks.forever.delay()
            self.wait_running(worker, 1)
            os.kill(worker.pid, signal.SIGINT)
            celery_support.wait_for(lambda: 'Warm shutdown' in worker.text(), WAIT,
                                    'the warm shutdown', log=worker.log)
            time.sleep(0.5)
            self.assertIsNone(worker.proc.poll())  # still waiting for the task
            start = time.monotonic()
            worker.stop(signal.SIGQUIT, timeout=WAIT)
            took = time.monotonic() - start
        finally:
            celery_support.stop(worker.proc)
        self.assertLess(took, 20, worker.text()[-4000:])
        # The task was stopped (by Celery's cold shutdown, or by the pool's
        # wait noticing it), not waited for.
        self.assertIn('Worker interpreter exited prematurely: SystemExit', worker.text())
        self.assertNotIn('Fatal Python error', worker.text())

    def test_app_that_cannot_start_in_an_interpreter_is_refused(self):
        # Task code that fails to import in a worker interpreter (say, a C
        # extension without sub-interpreter support) stops the start with
        # the interpreter's traceback, instead of a worker that fails
        # every task.
        folder = os.path.join(self.dir.name, 'refusing_app')
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, 'refusing_tasks.py'), 'w') as f:
            f.write(
                'import subinterp\n'
                'from celery_tasks import app\n'
                'if subinterp.get_current().id != 0:\n'
                '    raise ImportError("this extension refuses sub-interpreters")\n')
        log = os.path.join(self.dir.name, 'refusing.log')
        env = celery_support.worker_env(self.redis, celery_support.HERE, folder)
        env['CELERY_TASKS_IMPORTS'] = 'refusing_tasks'
        with open(log, 'w') as out:
            proc = subprocess.Popen(
                [sys.executable, '-m', 'celery', '-A', 'celery_tasks', 'worker', '-c', '2',
                 '--without-mingle', '--without-gossip', '-n', 'refusing@localhost'],
                cwd=celery_support.HERE, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            code = proc.wait(WAIT)
        finally:
            celery_support.stop(proc)
        with open(log) as f:
            text = f.read()
        # Celery 5.2 logs "Unrecoverable error" and exits with status 0
        # (its own handling of a step that fails); the worker must not hang.
        self.assertIsNotNone(code)
        self.assertIn('Unrecoverable error', text)
        self.assertIn('a worker interpreter could not start the app', text)
        self.assertIn('this extension refuses sub-interpreters', text)
        self.assertNotIn(' ready.', text)

    def test_max_tasks_per_child_replaces_interpreters(self):
        worker = self.start_worker('-c', '2', '--max-tasks-per-child', '5')
        try:
            ids = set()
            for _ in range(6):
                batch = [celery_tasks.spin.delay(SPIN // 20) for _ in range(4)]
                ids |= {r.get(timeout=WAIT)[3] for r in batch}
            pool = self.stats(worker)['pool']
            code = worker.stop(signal.SIGTERM)
        finally:
            celery_support.stop(worker.proc)
        # 24 tasks, 5 per interpreter: at least 5 interpreters served.
        self.assertGreaterEqual(len(ids), 5, ids)
        self.assertGreaterEqual(pool['interpreters-replaced'], 3, pool)
        self.assertEqual(pool['max-tasks-per-child'], 5)
        self.assertEqual(code, 0, worker.text()[-4000:])


if __name__ == '__main__':
    unittest.main()
