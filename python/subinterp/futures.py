"""An executor that runs calls in a pool of isolated interpreters.

:class:`InterpreterPoolExecutor` is the class that Python 3.14 ships in
:mod:`concurrent.futures`, for Python 3.12 and 3.13: a
:class:`concurrent.futures.ThreadPoolExecutor` (as in 3.14, so that
``asyncio`` takes it as a default executor) whose workers are threads that
each own an interpreter with its own GIL, so CPU-bound Python code runs in
parallel, in one process. Its futures are
:class:`concurrent.futures.Future` objects and work with
:func:`concurrent.futures.wait`, :func:`concurrent.futures.as_completed`
and :func:`asyncio.wrap_future`.

Beyond 3.14:

* functions defined in ``__main__`` (with or without an
  ``if __name__ == '__main__'`` guard), lambdas and closures can be
  submitted; they travel by value;
* ``map(..., chunksize=n)`` sends ``n`` calls to a worker as one task;
* ``max_tasks_per_worker`` replaces a worker's interpreter with a fresh one
  after that many tasks;
* ``initializer`` may also be source text, run in each new worker
  interpreter.

The work is done by the C++ pool of the ``subinterp._subinterp`` extension: tasks and
results move between interpreters as interpreter-neutral values, without
pickling where they need not.
"""

import collections
import itertools
import os
import sys
import threading
import time
import weakref
from concurrent.futures import _base
from concurrent.futures import thread as _thread

from . import _subinterp

from . import ExecutionFailed, NotShareableError

__all__ = ['InterpreterPoolExecutor', 'BrokenInterpreterPool', 'ExecutionFailed']


class BrokenInterpreterPool(_thread.BrokenThreadPool):
    """Raised when a worker's initializer failed: the pool runs no more
    tasks. Its ``__cause__`` is the :exc:`ExecutionFailed` that shows the
    initializer's exception and traceback."""


_subinterp.register(CancelledError=_base.CancelledError,
                    BrokenInterpreterPool=BrokenInterpreterPool)

_PENDING = _base.PENDING


def _log_initializer_failure(broken):
    # As ThreadPoolExecutor's workers do (and so 3.14's executor): on the
    # 'concurrent.futures' logger, with the exception that the initializer
    # raised. Its __cause__ is then the ExecutionFailed that shows the
    # remote traceback, as in 3.14.
    exc = broken.__cause__ if broken.__cause__ is not None else broken
    if isinstance(exc, ExecutionFailed):
        original = exc.excinfo.rebuild()
        if original is not None:
            original.__cause__ = exc
            exc = original
    _base.LOGGER.critical('Exception in initializer:',
                          exc_info=(type(exc), exc, exc.__traceback__))


class _Settler:
    # The settle function of one pool: settles its futures, and logs the
    # initializer's failure once, before the first future it breaks is
    # settled (so that result() returns after the log).

    __slots__ = ('logged',)

    def __init__(self):
        self.logged = False

    def log_broken(self, broken):
        if not self.logged:
            self.logged = True
            _log_initializer_failure(broken)

    def __call__(self, future, result, exc):
        if isinstance(exc, BrokenInterpreterPool):
            self.log_broken(exc)
        _settle(future, result, exc)


def _settle(future, result, exc):
    # Called by a pool worker, with this interpreter attached, when the
    # task behind `future` has ended (or was dropped).
    if exc is None:
        future.set_result(result)
    elif isinstance(exc, _base.CancelledError):
        if _base.Future.cancel(future):
            future.set_running_or_notify_cancel()
    else:
        if isinstance(exc, ExecutionFailed):
            # The original exception, when it could be pickled there and
            # unpickled here, raised from the ExecutionFailed that shows the
            # remote traceback (as Python 3.14 does).
            original = exc.excinfo.rebuild()
            if original is not None:
                original.__cause__ = exc
                exc = original
        future.set_exception(exc)


class _Future(_base.Future):
    """A future of an :class:`InterpreterPoolExecutor`.

    It is a :class:`concurrent.futures.Future`; it differs only in how it
    waits (without a lock handoff, spinning briefly while a short task
    finishes) and in that cancelling reaches the pool.
    """

    def __init__(self):
        super().__init__()
        self._task = None

    def cancel(self):
        """Cancel the call if no worker has started it; return whether the
        future is cancelled."""
        task = self._task
        if task is None:
            return super().cancel()
        if task.cancel():
            return True
        return self.cancelled()

    def running(self):
        task = self._task
        if task is not None and self._state == _PENDING:
            return task.running()
        return super().running()

    def _wait_task(self, timeout):
        # Waits for the pool to settle this future, with the GIL released
        # (Ctrl-C in the main thread stops it); returns the timeout left
        # for the base class's wait.
        task = self._task
        if task is not None and self._state == _PENDING:
            task.wait(timeout)
            return 0
        return timeout

    def result(self, timeout=None):
        result = super().result(self._wait_task(timeout))
        if self._exception is not None:
            # An exception whose bool() is false: Future.result() of CPython
            # 3.12 and early 3.13 returns None for it (gh-132063).
            try:
                raise self._exception
            finally:
                self = None
        return result

    def exception(self, timeout=None):
        return super().exception(self._wait_task(timeout))


# The pools of this interpreter's executors, until they have ended: at exit
# their queued and running tasks finish first, as ThreadPoolExecutor's do,
# also for executors shut down with wait=False or dropped without shutdown.
_pools = set()
_pools_lock = threading.Lock()
_exiting = False


def _python_exit():
    global _exiting
    with _pools_lock:
        _exiting = True
        pools = list(_pools)
    for pool in pools:
        pool.shutdown(True, False)


def _forget_ended_pools():
    # Called with _pools_lock held.
    for pool in [p for p in _pools if p.is_shut_down() and not p.worker_count()]:
        _pools.discard(pool)


threading._register_atexit(_python_exit)

_counter = itertools.count().__next__


def _sys_path_source():
    path = [p for p in sys.path if isinstance(p, str)]
    return f'__import__("sys").path[:] = {path!r}\n'


class _PendingView:
    # Stands for ThreadPoolExecutor's _work_queue, which code outside the
    # executor reads to gauge the load: the tasks that no worker has taken.

    __slots__ = ('_pool',)

    def __init__(self, pool):
        self._pool = pool

    def qsize(self):
        return self._pool.pending()

    def empty(self):
        return self._pool.pending() == 0


_BROKEN_MESSAGE = ("a pool worker's initializer failed, the pool is not "
                   "usable anymore")


class InterpreterPoolExecutor(_thread.ThreadPoolExecutor):
    """An executor that calls functions in a pool of interpreters.

    It is a :class:`~concurrent.futures.ThreadPoolExecutor`, as in Python
    3.14 (``asyncio``'s ``loop.set_default_executor()`` takes only those),
    but its workers are the threads of the extension's C++ pool: the
    attributes that ThreadPoolExecutor's users read (``_max_workers``,
    ``_shutdown``, ``_broken``, ``_thread_name_prefix``, ``_threads`` for
    its size, ``_work_queue.qsize()``) hold what they hold there.

    ``max_workers``
        most interpreters (and threads) at a time; by default
        ``min(32, os.cpu_count() + 4)``, as for
        :class:`~concurrent.futures.ThreadPoolExecutor`. Workers start when
        tasks need them.
    ``thread_name_prefix``
        names of the worker threads (``<prefix>_<n>``).
    ``initializer``, ``initargs``
        ``initializer(*initargs)`` is called in each worker interpreter
        before its first task. It may also be source text (then without
        ``initargs``), run in the interpreter's ``__main__``. If it raises,
        or cannot travel to the worker, the failure is logged on the
        ``concurrent.futures`` logger and the pool is broken: pending and
        later submissions fail with :exc:`BrokenInterpreterPool`.
    ``max_tasks_per_worker``
        a worker replaces its interpreter with a fresh one (initializer
        included) after this many tasks; ``None`` keeps it.

    As for :class:`~concurrent.futures.ThreadPoolExecutor`, the queued and
    running tasks of every executor finish before the interpreter exits,
    including those of executors shut down with ``wait=False`` or dropped
    without :meth:`shutdown`.

    Each worker interpreter starts with a copy of ``sys.path``. Calls,
    arguments and results travel between interpreters as
    :meth:`subinterp.Interpreter.call` passes them: functions by reference
    when importable and by value when defined in ``__main__``, as lambdas or
    as closures; what cannot travel fails its future with
    :exc:`~subinterp.NotShareableError`. An exception raised by a call is
    re-raised by :meth:`~concurrent.futures.Future.result` as the original
    exception type when it can be rebuilt, from an :exc:`ExecutionFailed`
    that shows the remote traceback; otherwise as that
    :exc:`ExecutionFailed`.
    """

    BROKEN = BrokenInterpreterPool

    def __init__(self, max_workers=None, thread_name_prefix='',
                 initializer=None, initargs=(), *, max_tasks_per_worker=None):
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        elif not isinstance(max_workers, int) or isinstance(max_workers, bool):
            raise TypeError(f'max_workers must be an int, not {max_workers!r}')
        if max_workers <= 0:
            raise ValueError('max_workers must be greater than 0')
        if max_tasks_per_worker is not None:
            if (not isinstance(max_tasks_per_worker, int)
                    or isinstance(max_tasks_per_worker, bool)):
                raise TypeError('max_tasks_per_worker must be an int or None, '
                                f'not {max_tasks_per_worker!r}')
            if max_tasks_per_worker <= 0:
                raise ValueError('max_tasks_per_worker must be greater than 0')
        if not isinstance(thread_name_prefix, str):
            raise TypeError('thread_name_prefix must be a str')
        if not isinstance(initargs, tuple):
            raise TypeError(f'initargs must be a tuple, not {initargs!r}')
        init_source = _sys_path_source()
        init_callable = None
        if isinstance(initializer, str):
            if initargs:
                raise ValueError('an initializer script does not take '
                                 f'initargs, got {initargs!r}')
            init_source += initializer
        elif initializer is not None:
            if not callable(initializer):
                raise TypeError('initializer must be a callable or a str')
            init_callable = initializer

        # ThreadPoolExecutor.__init__ is not called: the C++ pool does its
        # work, and its worker threads are not threading.Thread objects.
        self._max_workers = max_workers
        self._thread_name_prefix = (thread_name_prefix or
                                    f'InterpreterPoolExecutor-{_counter()}')
        self._initializer = initializer
        self._initargs = initargs
        self._shutdown_lock = threading.Lock()
        self._shutdown = False
        # An initializer that cannot travel breaks the pool at the first
        # submission (logged then), as in 3.14, not the construction.
        self._init_error = None
        self._init_error_reported = False
        self._settler = _Settler()
        with _pools_lock:
            if _exiting:
                raise RuntimeError('cannot create an executor at interpreter '
                                   'shutdown')
            _forget_ended_pools()
            try:
                self._pool = self._create_pool(init_source, init_callable,
                                               initargs, max_tasks_per_worker)
            except NotShareableError as exc:
                self._init_error = exc
                self._pool = self._create_pool(init_source, None, (),
                                               max_tasks_per_worker)
            _pools.add(self._pool)
        # Dropped without shutdown(), the executor's workers finish the
        # queued tasks and end (the pool stays in _pools until they have).
        weakref.finalize(self, self._pool.shutdown, False, False)

    def _create_pool(self, init_source, init_callable, initargs,
                     max_tasks_per_worker):
        return _subinterp.pool_create(
            self._max_workers, init_source, init_callable, initargs,
            max_tasks_per_worker, self._thread_name_prefix, self._settler)

    def submit(self, fn, /, *args, **kwargs):
        """Schedule ``fn(*args, **kwargs)`` in a worker interpreter and
        return a :class:`~concurrent.futures.Future` for its result.

        Raises ``RuntimeError`` after :meth:`shutdown` and
        :exc:`BrokenInterpreterPool` once an initializer failed. A callable
        or an argument that cannot travel fails the future with
        :exc:`~subinterp.NotShareableError`, and one that is not callable
        with ``TypeError``, as ThreadPoolExecutor's futures do.
        """
        if isinstance(fn, str):
            # As in 3.14, which may run scripts one day.
            raise TypeError('scripts not supported')
        # What is not callable travels and fails there, as in 3.14 (an
        # object that cannot travel fails with NotShareableError first).
        return self._queue(self._pool.submit, fn, args, kwargs)

    def _queue(self, pool_submit, *args):
        # A future for the task pool_submit(future, *args) queues. A value
        # that cannot travel fails that future; a refusal raises what
        # ThreadPoolExecutor raises.
        if self._init_error is not None:
            return self._broken_by_init_error()
        future = _Future()
        try:
            future._task = pool_submit(future, *args)
        except NotShareableError as exc:
            self._check_open()
            future.set_exception(exc)
        except BrokenInterpreterPool as exc:
            # Broken while no task was queued (a worker's renewal).
            self._settler.log_broken(exc)
            raise
        except RuntimeError:
            self._check_open()
            raise
        return future

    def _broken_by_init_error(self):
        # The initializer could not travel: the first submission's future
        # fails with BrokenInterpreterPool (and the failure is logged), the
        # later submissions raise it, as when 3.14's first worker fails.
        with self._shutdown_lock:
            reported = self._init_error_reported
            if not reported:
                self._check_open()
                self._init_error_reported = True
        if reported:
            raise self._broken_error()
        broken = self._broken_error()
        self._settler.log_broken(broken)
        future = _Future()
        future.set_exception(broken)
        return future

    def _broken_error(self):
        broken = BrokenInterpreterPool(f'{_BROKEN_MESSAGE}: {self._init_error}')
        broken.__cause__ = self._init_error
        return broken

    def _check_open(self):
        # Raises what submit() raises when no task can be queued.
        if self._shutdown:
            raise RuntimeError('cannot schedule new futures after shutdown')
        if _exiting:
            raise RuntimeError('cannot schedule new futures after '
                               'interpreter shutdown')

    def _submit_batch(self, fn, items, unpack):
        # One task calling fn(*item) (unpack) or fn(item) for each item.
        return self._queue(self._pool.submit_batch, fn, items, unpack)

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """Return an iterator of ``fn(*args)`` for the items of
        ``iterables`` zipped, in order.

        ``chunksize`` calls are sent to a worker as one task (the right size
        for many small calls is in the hundreds). An exception raised by a
        call is raised when its result would be returned; the remaining
        tasks are then cancelled. ``timeout`` bounds the whole iteration
        (``TimeoutError``). With ``buffersize``, at most that many tasks are
        submitted ahead of the results consumed, so ``iterables`` may be
        endless.
        """
        if not callable(fn):
            raise TypeError(f'{fn!r} is not callable')
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError('chunksize must be >= 1.')
        if buffersize is not None:
            if not isinstance(buffersize, int):
                raise TypeError('buffersize must be an integer or None')
            if buffersize < 1:
                raise ValueError('buffersize must be None or > 0')
        end_time = None if timeout is None else timeout + time.monotonic()
        if chunksize == 1:
            tasks = (self.submit(fn, *args) for args in zip(*iterables))
        elif len(iterables) == 1:
            # Chunks of the items themselves: no argument tuples to build.
            items = iter(iterables[0])
            chunks = iter(lambda: list(itertools.islice(items, chunksize)), [])
            tasks = (self._submit_batch(fn, chunk, False) for chunk in chunks)
        else:
            args = zip(*iterables)
            chunks = iter(lambda: list(itertools.islice(args, chunksize)), [])
            tasks = (self._submit_batch(fn, chunk, True) for chunk in chunks)
        if buffersize is None:
            futures = collections.deque(tasks)
            tasks = iter(())
        else:
            futures = collections.deque(itertools.islice(tasks, buffersize))
        results = self._results(futures, tasks, end_time)
        if chunksize == 1:
            return results
        # Each result is a chunk's list; chain yields their items without a
        # Python frame per item.
        return itertools.chain.from_iterable(results)

    @staticmethod
    def _results(futures, more, end_time):
        # A generator of its own, so that map() checks its arguments and
        # submits at once, as Executor.map does. Closing it (or an error)
        # cancels what has not started.
        try:
            while futures:
                future = futures.popleft()
                if end_time is None:
                    result = future.result()
                else:
                    result = future.result(end_time - time.monotonic())
                del future
                for submitted in itertools.islice(more, 1):
                    futures.append(submitted)
                yield result
        finally:
            for future in futures:
                future.cancel()

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Stop taking tasks and free the workers' interpreters.

        With ``cancel_futures``, tasks that no worker has started are
        cancelled. With ``wait``, return when every running and queued task
        has finished and the workers have ended; otherwise return at once
        (a task that never returns then keeps its worker, not the caller).
        """
        with self._shutdown_lock:
            self._shutdown = True
        self._pool.shutdown(bool(wait), bool(cancel_futures))
        if wait:
            with _pools_lock:
                _pools.discard(self._pool)

    @property
    def _broken(self):
        # ThreadPoolExecutor's: False, or why the pool runs no more tasks.
        if self._init_error is not None:
            return self._init_error_reported and _BROKEN_MESSAGE
        return self._pool.broken() or False

    @property
    def _threads(self):
        # ThreadPoolExecutor's set of worker threads, for its size: one
        # entry per live worker (the workers are the C++ pool's threads).
        return frozenset(range(self._pool.worker_count()))

    @property
    def _work_queue(self):
        return _PendingView(self._pool)

    def _adjust_thread_count(self):
        # The C++ pool starts its workers itself; ThreadPoolExecutor's
        # threads are never started.
        pass

    @property
    def _interpreter_ids(self):
        # Ids of the workers' interpreters (for tests and diagnostics).
        return self._pool.interpreter_ids()

