"""A Celery worker pool whose workers are sub-interpreters.

Choose it in the app's configuration (every Celery 5 release)::

    app.conf.worker_pool = 'subinterp.celery:TaskPool'

and start the worker as usual, ``celery -A proj worker -c 4``. From
Celery 5.3 on, ``CELERY_CUSTOM_WORKER_POOL=subinterp.celery:TaskPool celery
-A proj worker -P custom`` works as well (Celery 5.2's ``-P`` takes only its
own pool names).

Each worker is a thread of the worker process with a sub-interpreter of its
own, which has its own GIL: ``-c N`` runs N tasks in parallel on N cores, as
the prefork pool does, in one process. Every worker interpreter starts in
:meth:`TaskPool.on_start`, imports the app's module and prepares the app as
the prefork pool prepares a child process (the loader's ``init_worker``,
logging, a tracer per task, the ``worker_process_init`` signal). A task runs
wholly in its worker interpreter: the task body, its signals and the write
to the result backend; only the outcome comes back to the consumer.

Also as with prefork: acks and ``task-started`` when a task really starts,
soft time limits (``SoftTimeLimitExceeded`` raised in the task), hard time
limits (the task fails with ``TimeLimitExceeded``, ``SystemExit`` is raised
in it and a fresh interpreter takes its place at once), ``revoke(...,
terminate=True)``, ``max_tasks_per_child`` (the interpreter is replaced),
warm shutdown (SIGTERM: running tasks finish, tasks not started go back to
the broker) and cold shutdown (SIGQUIT), ``pool_grow``/``pool_shrink``,
``pool_restart`` and ``celery inspect stats``. SIGUSR1 prints the worker's
threads and what each interpreter runs, instead of Celery's handler, which
reads every interpreter's frames and crashes the process.

The app must live in an importable module (``celery -A module``): each
worker interpreter imports it. See docs/scale-out.md.
"""

import collections
import heapq
import logging
import os
import pickle
import signal
import sys
import threading
import time
import traceback

from billiard.einfo import ExceptionInfo
from celery.concurrency.base import BasePool
from celery.exceptions import (Terminated, TimeLimitExceeded,
                               WorkerLostError)

import subinterp
from subinterp import _subinterp
from subinterp._celery_child import _run_job, _start_worker, _stop_worker

__all__ = ['TaskPool']

logger = logging.getLogger('subinterp.celery')

# How often a task that was told to stop (hard time limit, terminate,
# cold shutdown) is told again while it still runs.
_STOP_AGAIN = 1.0
# How long a cold shutdown waits for running tasks to stop.
_COLD_GRACE = 1.0


class AppNotImportable(RuntimeError):
    """The Celery app cannot be found again in a worker interpreter."""


def _locate_app(app):
    """(module, attribute) of a module attribute that holds ``app``.

    Celery's own modules (``celery._state`` keeps the default app) and
    ``__main__`` are skipped: a worker interpreter imports the module anew.
    """
    found = []
    for name, module in list(sys.modules.items()):
        if (module is None or name == '__main__' or name == '__mp_main__'
                or name == 'celery' or name.startswith(('celery.', 'subinterp'))):
            continue
        namespace = getattr(module, '__dict__', None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            if value is app:
                found.append((name, attr))
    if not found:
        where = ('only in the __main__ script'
                 if any(v is app for v in vars(sys.modules['__main__']).values())
                 else 'in no module')
        raise AppNotImportable(
            f'subinterp.celery.TaskPool: the Celery app {app.main!r} is {where}; '
            'each worker interpreter imports the app, so define it in a module '
            'and start the worker with celery -A that.module worker')
    # The module named as the app (celery -A proj), then the shortest name.
    found.sort(key=lambda item: (item[0] != app.main, len(item[0]), item))
    return found[0]


def _picklable_changes(app):
    """The configuration changes made after the app's module set it up
    (command-line options such as ``--`` settings), as far as they pickle."""
    changes = {}
    try:
        items = dict(app.conf.changes).items()
    except Exception:
        return b''
    for key, value in items:
        try:
            pickle.dumps(value)
        except Exception:
            logger.warning('subinterp.celery: setting %s does not pickle; worker '
                           'interpreters keep the value the app module gives', key)
            continue
        changes[key] = value
    return pickle.dumps(changes)


# --- in the worker's main interpreter ----------------------------------------

def _trim_memory():
    """Returns the memory freed by starting interpreters to the system
    (glibc's malloc_trim), where the core offers it."""
    trim = getattr(_subinterp, 'trim_memory', None)
    if trim is not None:
        trim()

def _cold_shutdown_requested():
    """Whether Celery's cold-shutdown handler (SIGQUIT, a second SIGINT or
    SIGTERM's hard variant) has run."""
    from celery.worker import state
    return getattr(state, 'should_terminate', None) is not None


def _einfo(exc):
    """billiard's ExceptionInfo of ``exc``, with a traceback, as the pool's
    error callbacks expect."""
    try:
        raise exc
    except BaseException:
        return ExceptionInfo()


class ApplyResult:
    """What :meth:`TaskPool.apply_async` returns: one task in the pool.

    Celery keeps a weak reference to it and calls :meth:`terminate` for
    ``revoke(terminate=True)``; the pool's queue, then the worker running
    it, hold it until the task is over.
    """

    def __init__(self, pool, target, args, kwargs, callback, accept_callback,
                 timeout_callback, error_callback, soft_timeout, timeout,
                 correlation_id):
        self._pool = pool
        self._target = target
        self._args = args
        self._kwargs = kwargs
        self._callback = callback
        self._accept_callback = accept_callback
        self._timeout_callback = timeout_callback
        self._error_callback = error_callback
        self.soft_timeout = soft_timeout
        self.timeout = timeout
        self.correlation_id = correlation_id
        self.worker = None         # the _Worker running it
        self.started = None        # monotonic time it started
        self.terminated = None     # the signal of a terminate()
        self._done = False
        self._lock = threading.Lock()

    def ready(self):
        return self._done

    def terminate(self, signum=None):
        """Stops the task (``revoke(terminate=True)``): one not started yet
        never runs, a running one gets SystemExit and its interpreter is
        replaced. The task then fails with ``Terminated``, as in prefork."""
        signum = signum or signal.SIGTERM
        with self._lock:
            if self._done or self.terminated is not None:
                return
            self.terminated = int(signum)
            worker = self.worker
        if worker is not None:
            self._pool._stop_running(worker, self)

    def _finish(self, fn, *args, **kwargs):
        """Runs one callback, once; a second outcome (the task returning
        after its hard time limit) is dropped."""
        with self._lock:
            if self._done:
                return
            self._done = True
        self._pool._count_done()
        self._call(fn, *args, **kwargs)

    def _call(self, fn, *args, **kwargs):
        if fn is not None:
            self._pool._deliver(fn, args, kwargs)

    def _fail(self, exc):
        self._finish(self._error_callback, _einfo(exc))

    def __repr__(self):
        return f'<ApplyResult {self.correlation_id} on {self.worker!r}>'


class _Worker:
    """A thread with a sub-interpreter: the pool's unit of concurrency."""

    def __init__(self, pool, number):
        self.pool = pool
        self.number = number
        self.interp = None
        self.ident = None
        self.job = None
        self.tasks = 0
        self.retiring = False   # exits after its current task (or at once)
        self.abandoned = False  # told to stop a task: replaced already
        self.started = threading.Event()
        self.error = None
        # Orders a raise into the running task against the task's end: a
        # raise is never left pending for the interpreter's next task.
        self.raise_lock = threading.Lock()
        self.raised = False     # a raise may be pending in the interpreter
        self.thread = threading.Thread(target=self._main, daemon=True,
                                       name=f'subinterp-celery-{number}')

    def __repr__(self):
        interp = self.interp.id if self.interp is not None else None
        return f'<worker {self.number} interpreter {interp}>'

    def _main(self):
        self.ident = threading.get_ident()
        pool = self.pool
        try:
            self.interp = subinterp.create()
            self.interp.call(_start_worker, *pool._app_spec)
        except BaseException as exc:  # noqa: B902 - reported, never lost
            self.error = exc
            self.started.set()
            pool._worker_failed(self, exc)
            self._close()
            return
        self.started.set()
        _trim_memory()
        while True:
            job = pool._next_job(self)
            if job is None:
                break
            self._run(job)
            if self.abandoned:
                break
            if pool._recycle_after and self.tasks >= pool._recycle_after:
                pool._replace(self, 'max_tasks_per_child reached')
                break
        pool._worker_exits(self)
        if not self.abandoned:
            try:
                self.interp.call(_stop_worker)
            except BaseException:  # noqa: B902
                logger.exception('subinterp.celery: worker_process_shutdown failed')
        self._close()

    def _close(self):
        if self.interp is None:
            return
        try:
            self.interp.close()
        except BaseException as exc:  # noqa: B902
            logger.warning('subinterp.celery: interpreter %s not closed: %s',
                           self.interp.id, exc)

    def _run(self, job):
        pool = self.pool
        with job._lock:
            terminated = job.terminated
            job.worker = self
        job.started = time.monotonic()
        # As prefork's child does when it takes the job: the consumer acks
        # and sends task-started now.
        job._call(job._accept_callback, os.getpid(), job.started)
        if terminated is not None or job.terminated is not None:
            job._fail(Terminated(-(job.terminated or terminated)))
            return
        if job.soft_timeout or job.timeout:
            pool._arm(job)
        try:
            ok, outcome = self.interp.call(_run_job, job._target, job._args, job._kwargs)
        except subinterp.ExecutionFailed as exc:
            # SystemExit or KeyboardInterrupt left the tracer: a prefork
            # child would have died of it.
            ok, outcome = None, WorkerLostError(
                f'Worker interpreter exited prematurely: {exc.excinfo.formatted}')
        except BaseException as exc:  # noqa: B902 - e.g. NotShareableError
            ok, outcome = None, exc
        finally:
            with self.raise_lock:
                with pool._lock:
                    self.job = None
                # A stop that came as the task returned must not hit the
                # next task in this interpreter.
                if self.raised:
                    self.raised = False
                    try:
                        _subinterp.raise_in(self.interp.id, self.ident, None)
                    except Exception:
                        pass
        self.tasks += 1
        if job.terminated is not None:
            job._fail(Terminated(-job.terminated))
        elif ok is True:
            job._finish(job._callback, outcome)
        elif ok is False:
            job._finish(job._error_callback, outcome)
        else:
            job._fail(outcome)


class TaskPool(BasePool):
    """Celery worker pool of sub-interpreters (see the module's docs)."""

    body_can_be_buffer = False  # bodies cross interpreters as bytes
    signal_safe = False
    task_join_will_block = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.app is None:
            from celery import current_app
            self.app = current_app._get_current_object()
        options = self.options
        self._recycle_after = options.get('maxtasksperchild') or 0
        self._default_soft = options.get('soft_timeout')
        self._default_hard = options.get('timeout')
        if options.get('max_memory_per_child'):
            logger.warning('subinterp.celery: max_memory_per_child is not '
                           'supported (interpreters share one process); ignored')
        initargs = options.get('initargs') or ()
        self._hostname = initargs[1] if len(initargs) > 1 else None
        self._lock = threading.Lock()
        self._job_ready = threading.Condition(self._lock)    # for workers
        self._timer_wake = threading.Condition(self._lock)   # for the timer
        self._queue = collections.deque()
        self._workers = []        # serving: started or starting
        self._left = []           # told to stop a task, not returned yet
        self._numbers = 0
        self._accepting = False
        self._done_count = 0
        self._replaced = 0
        self._timers = []         # heap of (when, seq, kind, job)
        self._timer_seq = 0
        self._timer_thread = None
        self._stopping = False
        self._app_spec = None
        # Callbacks run on the consumer's event loop when there is one (as
        # prefork's results arrive there): an ack from another thread would
        # wait for the loop's next wake-up to fetch the next message.
        self._hub = None
        self._pending = collections.deque()
        self._wake_r = self._wake_w = None

    # -- start and stop --------------------------------------------------

    def on_start(self):
        module, attr = _locate_app(self.app)
        hostname = self._hostname or self.app.conf.get('worker_hostname') or None
        if hostname is None:
            import socket
            hostname = socket.gethostname()
        self._app_spec = (module, attr, hostname, _picklable_changes(self.app))
        self._accepting = True
        self._timer_thread = threading.Thread(target=self._timer_main, daemon=True,
                                              name='subinterp-celery-timer')
        self._timer_thread.start()
        workers = [self._spawn() for _ in range(self.limit or 1)]
        for worker in workers:
            worker.started.wait()
        failed = [w for w in workers if w.error is not None]
        if failed:
            error = failed[0].error
            detail = (error.excinfo.errdisplay or error.excinfo.formatted
                      if isinstance(error, subinterp.ExecutionFailed) else repr(error))
            self._accepting = False
            self._stop_all(wait=True)
            raise RuntimeError(
                f'subinterp.celery: a worker interpreter could not start the app '
                f'{module}:{attr}:\n{detail}')
        self._install_cry_handler()
        _trim_memory()
        logger.info('subinterp.celery: %d worker interpreters ready (%s)',
                    len(workers), ', '.join(str(w.interp.id) for w in workers))

    def did_start_ok(self):
        with self._lock:
            return bool(self._workers) and all(w.error is None for w in self._workers)

    def on_stop(self):
        """Warm shutdown: tasks not started go back to the broker (never
        acked), running ones finish."""
        self._stop_all(wait=True)
        self._unregister()

    # -- callbacks -------------------------------------------------------

    def register_with_event_loop(self, hub):
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._wake_r, self._wake_w = r, w
        hub.add_reader(r, self._on_wake)
        self._hub = hub

    def _unregister(self):
        hub, self._hub = self._hub, None
        self._run_pending()
        if hub is not None:
            try:
                hub.remove(self._wake_r)
            except Exception:
                pass
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wake_r = self._wake_w = None

    def _deliver(self, fn, args, kwargs):
        if self._hub is None:
            self._run_callback(fn, args, kwargs)
            return
        self._pending.append((fn, args, kwargs))
        try:
            os.write(self._wake_w, b'!')
        except (BlockingIOError, OSError, TypeError):
            pass  # full: the loop wakes already; closed: drained at stop

    def _on_wake(self):
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError, TypeError):
            pass
        self._run_pending()

    def _run_pending(self):
        while True:
            try:
                fn, args, kwargs = self._pending.popleft()
            except IndexError:
                return
            self._run_callback(fn, args, kwargs)

    @staticmethod
    def _run_callback(fn, args, kwargs):
        try:
            fn(*args, **kwargs)
        except Exception:
            logger.exception('subinterp.celery: pool callback raised')

    def on_terminate(self):
        """Cold shutdown: running tasks get SystemExit and one second."""
        self._stop_running_tasks()
        self._stop_all(wait=True, grace=_COLD_GRACE)
        self._unregister()

    def _stop_running_tasks(self):
        with self._lock:
            running = [w for w in self._workers + self._left if w.job is not None]
        for worker in running:
            self._raise(worker, 'SystemExit')

    def on_close(self):
        with self._lock:
            self._accepting = False

    def _stop_all(self, wait, grace=None):
        with self._lock:
            self._accepting = False
            self._stopping = True
            self._queue.clear()
            workers = list(self._workers) + list(self._left)
            for worker in workers:
                worker.retiring = True
            self._job_ready.notify_all()
            self._timer_wake.notify_all()
        if wait:
            # The event loop has stopped: the callbacks of the tasks that
            # finish meanwhile run here.
            deadline = None if grace is None else time.monotonic() + grace
            for worker in workers:
                while worker.thread.is_alive():
                    self._run_pending()
                    if deadline is None and _cold_shutdown_requested():
                        # A second Ctrl-C, or SIGQUIT, during a warm
                        # shutdown: Celery's handler only sets a flag that
                        # its stopped event loop would have read.
                        logger.warning('subinterp.celery: cold shutdown: stopping '
                                       'the running tasks')
                        self._stop_running_tasks()
                        deadline = time.monotonic() + _COLD_GRACE
                    step = 0.05
                    if deadline is not None:
                        step = min(step, deadline - time.monotonic())
                        if step <= 0:
                            break
                    worker.thread.join(step)
            self._run_pending()

    def restart(self):
        """``pool_restart``: every worker interpreter is replaced by a fresh
        one after its current task."""
        with self._lock:
            old = list(self._workers)
        for worker in old:
            self._replace(worker, 'pool restart', wake=True)

    # -- workers ---------------------------------------------------------

    def _spawn(self):
        with self._lock:
            self._numbers += 1
            worker = _Worker(self, self._numbers)
            self._workers.append(worker)
        worker.thread.start()
        return worker

    def _replace(self, worker, why, wake=False):
        with self._lock:
            if worker not in self._workers or not self._accepting:
                return
            worker.retiring = True
            self._workers.remove(worker)
            self._left.append(worker)
            self._replaced += 1
            if wake:
                self._job_ready.notify_all()
        logger.info('subinterp.celery: replacing %r (%s)', worker, why)
        self._spawn()

    def _worker_failed(self, worker, exc):
        # At on_start, the start fails; later (a replacement), the pool
        # goes on with one worker fewer rather than retry an app that
        # cannot start.
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
        if isinstance(exc, subinterp.ExecutionFailed):
            exc = exc.excinfo.errdisplay or exc
        logger.error('subinterp.celery: a worker interpreter could not start the app; '
                     'the pool has one worker fewer: %s', exc)

    def _worker_exits(self, worker):
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            if worker in self._left:
                self._left.remove(worker)
            self._timer_wake.notify_all()

    def grow(self, n=1):
        with self._lock:
            if not self._accepting:
                return
            self.limit = (self.limit or 0) + n
        for _ in range(n):
            self._spawn()

    def shrink(self, n=1):
        with self._lock:
            serving = [w for w in self._workers if not w.retiring]
            if n > len(serving) - 1:
                raise ValueError(f"can't shrink the pool below 1 worker "
                                 f'({len(serving)} now)')
            # Idle ones first; busy ones leave after their task.
            serving.sort(key=lambda w: w.job is not None)
            for worker in serving[:n]:
                worker.retiring = True
            self.limit = len(serving) - n
            self._job_ready.notify_all()

    @property
    def num_processes(self):
        with self._lock:
            return len([w for w in self._workers if not w.retiring])

    # -- jobs ------------------------------------------------------------

    def on_apply(self, target, args=None, kwargs=None, callback=None,
                 accept_callback=None, timeout_callback=None,
                 error_callback=None, soft_timeout=None, timeout=None,
                 correlation_id=None, **_):
        job = ApplyResult(self, target, tuple(args or ()), dict(kwargs or {}),
                          callback, accept_callback, timeout_callback,
                          error_callback,
                          soft_timeout or self._default_soft,
                          timeout or self._default_hard, correlation_id)
        with self._lock:
            if not self._accepting:
                raise RuntimeError('subinterp.celery: the pool is not running')
            self._queue.append(job)
            self._job_ready.notify()
        return job

    def _next_job(self, worker):
        with self._lock:
            while True:
                if worker.retiring or worker.abandoned:
                    return None
                if self._queue:
                    job = self._queue.popleft()
                    worker.job = job
                    return job
                self._job_ready.wait()

    def _count_done(self):
        with self._lock:
            self._done_count += 1

    def terminate_job(self, pid, signal=None):
        # Celery calls this with the pid from the accept callback, this
        # process's, then ApplyResult.terminate() of the task, which knows
        # its interpreter: that one does the work.
        pass

    # -- time limits and stops ------------------------------------------

    def _arm(self, job):
        soft, hard = job.soft_timeout, job.timeout
        if hard and soft and soft >= hard:
            soft = None
        with self._lock:
            if soft:
                self._push(job.started + soft, 'soft', job)
            if hard:
                self._push(job.started + hard, 'hard', job)

    def _push(self, when, kind, job):
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, job))
        self._timer_wake.notify()

    def _timer_main(self):
        while True:
            with self._lock:
                while True:
                    if self._stopping and not self._left and not self._workers:
                        return
                    now = time.monotonic()
                    if self._timers and self._timers[0][0] <= now:
                        _, _, kind, job = heapq.heappop(self._timers)
                        break
                    wait = self._timers[0][0] - now if self._timers else 1.0
                    self._timer_wake.wait(min(wait, 1.0))
            try:
                self._on_timer(kind, job)
            except Exception:
                logger.exception('subinterp.celery: time limit handling failed')

    def _on_timer(self, kind, job):
        worker = job.worker
        if worker is None or worker.job is not job:
            return  # over
        if kind == 'again':
            self._raise(worker, 'SystemExit', job)
            with self._lock:
                self._push(time.monotonic() + _STOP_AGAIN, 'again', job)
            return
        if job.ready():
            return
        if kind == 'soft':
            job._call(job._timeout_callback, soft=True, timeout=job.soft_timeout)
            self._raise(worker, 'celery.exceptions:SoftTimeLimitExceeded', job)
        elif kind == 'hard':
            # As billiard: the task fails with TimeLimitExceeded, the
            # timeout callback runs, and its worker is replaced.
            job._fail(TimeLimitExceeded(job.timeout))
            job._call(job._timeout_callback, soft=False, timeout=job.timeout)
            self._stop_running(worker, job)

    def _stop_running(self, worker, job):
        """SystemExit in the task, now and every second while it runs; a
        fresh interpreter takes the worker's place at once."""
        with self._lock:
            if worker.job is not job:
                return
            worker.abandoned = True
        self._replace(worker, f'stopping task {job.correlation_id}')
        self._raise(worker, 'SystemExit', job)
        with self._lock:
            self._push(time.monotonic() + _STOP_AGAIN, 'again', job)

    def _raise(self, worker, exc_name, job=None):
        """Raises ``exc_name`` in the task ``worker`` runs (``job``, if
        given), on a thread of its own: raising takes the interpreter's GIL,
        which C code in the task may hold for long, and the pool's timer
        must not wait for it."""
        def raise_now():
            # Held: the task is ending, or an earlier raise still waits for
            # the GIL (one waiting thread per worker is enough).
            if not worker.raise_lock.acquire(blocking=False):
                return
            try:
                current = worker.job
                if current is None or (job is not None and current is not job):
                    return
                worker.raised = True
                _subinterp.raise_in(worker.interp.id, worker.ident, exc_name)
            except Exception as exc:
                logger.warning('subinterp.celery: could not raise %s in %r: %s',
                               exc_name, worker, exc)
            finally:
                worker.raise_lock.release()
        threading.Thread(target=raise_now, daemon=True,
                         name=f'subinterp-celery-raise-{worker.number}').start()

    # -- introspection ---------------------------------------------------

    def _get_info(self):
        with self._lock:
            workers = list(self._workers)
            left = list(self._left)
            queued = len(self._queue)
            done = self._done_count
            replaced = self._replaced
        return {
            'implementation': 'subinterp.celery:TaskPool',
            'max-concurrency': self.limit,
            'processes': [os.getpid()],
            'interpreters': [w.interp.id for w in workers
                             if w.started.is_set() and w.error is None],
            'starting': len([w for w in workers if not w.started.is_set()]),
            'running': len([w for w in workers if w.job is not None]),
            'queued': queued,
            'stopping-interpreters': [w.interp.id for w in left if w.interp is not None],
            'max-tasks-per-child': self._recycle_after or 'N/A',
            'timeouts': (self._default_soft or 0, self._default_hard or 0),
            'tasks-done': done,
            'interpreters-replaced': replaced,
        }

    def _describe(self):
        """Lines for the SIGUSR1 dump: what each worker interpreter runs."""
        now = time.monotonic()
        lines = []
        with self._lock:
            workers = list(self._workers) + list(self._left)
        for worker in workers:
            job = worker.job
            interp = worker.interp.id if worker.interp is not None else '-'
            if job is None:
                state = 'idle'
            else:
                name = job._args[0] if job._args else job._target
                state = (f'task {name}[{job.correlation_id}] for '
                         f'{now - (job.started or now):.1f} s')
                if worker.abandoned:
                    state += ' (told to stop)'
            lines.append(f'interpreter {interp} ({worker.thread.name}): {state}')
        return lines

    def _install_cry_handler(self):
        """Celery's SIGUSR1 handler dumps every thread's stack with
        ``sys._current_frames()``; this one lists the main interpreter's
        threads (with the safe ``sys._current_frames`` that subinterp
        installs) and what each worker interpreter runs."""
        if threading.current_thread() is not threading.main_thread():
            return
        pool = self

        def cry_handler(signum, frame):
            out = ['', '=' * 49, 'subinterp.celery: worker threads and interpreters']
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, stack in sys._current_frames().items():
                out.append(f'--- thread {names.get(ident, ident)}')
                out.extend(line.rstrip('\n') for line in traceback.format_stack(stack))
            out.append('--- worker interpreters')
            out.extend(pool._describe())
            print('\n'.join(out), file=sys.__stderr__, flush=True)

        try:
            signal.signal(signal.SIGUSR1, cry_handler)
        except (ValueError, OSError):
            pass
