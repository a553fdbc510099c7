"""Dask on sub-interpreters.

The local scheduler::

    import dask
    import subinterp.dask          # registers the scheduler "subinterp"

    dask.compute(*values, scheduler='subinterp')           # or num_workers=4
    with dask.config.set(scheduler='subinterp'):
        bag.map(lambda x: x * 2).sum().compute()

runs the tasks of a graph in a pool of sub-interpreters, each with its own
GIL: in parallel like the ``processes`` scheduler, without copying through
pipes or starting processes, and with lambdas, closures and functions of
``__main__`` passed by value. A task's exception is raised as itself.

dask.distributed (when it imports; see docs/scale-out.md)::

    dask worker tcp://scheduler:8786 --nthreads 4 --preload subinterp.dask

or, from Python, ``Worker(..., executor=subinterp.dask.WorkerExecutor(4))``.
The worker's own code (its event loop, the transfers, the task's
bookkeeping) stays in the worker's main interpreter; only the task's
``fn(*args, **kwargs)`` runs in a sub-interpreter.
"""

import atexit
import concurrent.futures
import logging
import os
import sys
import threading
import traceback

from .futures import InterpreterPoolExecutor

__all__ = ['get', 'WorkerExecutor', 'dask_setup']

logger = logging.getLogger('subinterp.dask')

# --- the local scheduler ---------------------------------------------------------

_pools = {}  # num_workers -> InterpreterPoolExecutor, kept for later computes
_pools_lock = threading.Lock()


def _interpreter_id():
    """get_id for dask's callbacks: the worker interpreter's id."""
    from . import get_current
    return get_current().id


def _pack_exception(e, dumps):
    """In the worker interpreter: the exception itself (raised as itself by
    the caller) and its traceback as text. One that cannot be pickled is
    replaced by a RuntimeError that names it."""
    import pickle
    text = ''.join(traceback.format_exception(e))
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:
        e = RuntimeError(f'{type(e).__module__}.{type(e).__qualname__} '
                         f'(which cannot be pickled): {e}')
    return dumps((e, text))


def _raise_exception(exc, text):
    if text and hasattr(exc, 'add_note'):
        exc.add_note('Traceback in the sub-interpreter:\n' + text.rstrip('\n'))
    raise exc


def _default_pool(num_workers):
    with _pools_lock:
        pool = _pools.get(num_workers)
        if pool is None or pool._shutdown:
            pool = InterpreterPoolExecutor(num_workers,
                                           thread_name_prefix='subinterp-dask')
            _pools[num_workers] = pool
        return pool


def get(dsk, keys, num_workers=None, pool=None, chunksize=None, **kwargs):
    """Dask's scheduler ``get`` for the ``subinterp`` scheduler name.

    ``num_workers`` interpreters (default: one per CPU) are made on first
    use and kept for later computes with the same number; ``pool`` takes an
    executor of your own (an :class:`InterpreterPoolExecutor`).
    """
    from dask import config
    from dask.local import get_async, identity
    if pool is None:
        pool = config.get('pool', None)
    if pool is None:
        num_workers = num_workers or config.get('num_workers', None) or os.cpu_count() or 1
        pool = _default_pool(num_workers)
    elif num_workers is None:
        num_workers = getattr(pool, '_max_workers', None) or os.cpu_count() or 1
    if chunksize is None:
        chunksize = config.get('chunksize', 1)
    return get_async(pool.submit, num_workers, dsk, keys,
                     get_id=_interpreter_id, dumps=identity, loads=identity,
                     pack_exception=_pack_exception,
                     raise_exception=_raise_exception,
                     chunksize=chunksize, **kwargs)


def _close_pools():
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


def _register():
    try:
        from dask import base
    except ImportError:
        return
    base.named_schedulers['subinterp'] = get


_register()
atexit.register(_close_pools)

# --- dask.distributed -------------------------------------------------------------

# The functions a distributed Worker hands its executor, with the task's
# callable first: they time the call and build the worker's message, in the
# worker's main interpreter; the callable itself runs in a sub-interpreter.
_WORKER_WRAPPERS = {
    ('distributed.worker', '_run_task_simple'),      # 2024.x on
    ('distributed.worker', '_run_task'),
    ('distributed.worker', 'apply_function_simple'),  # earlier releases
    ('distributed.worker', 'apply_function'),
}


def _is_worker_wrapper(fn):
    return (getattr(fn, '__module__', None), getattr(fn, '__qualname__', None)) in _WORKER_WRAPPERS


class _InInterpreter:
    """Stands for a task's callable: calling it runs the callable in the
    executor's interpreters and returns its result or raises its exception
    (as its own type)."""

    __slots__ = ('_pool', '_fn')

    def __init__(self, pool, fn):
        self._pool = pool
        self._fn = fn

    def __call__(self, *args, **kwargs):
        return self._pool.submit(self._fn, *args, **kwargs).result()

    def __repr__(self):
        return f'<in a sub-interpreter: {self._fn!r}>'


class WorkerExecutor(concurrent.futures.Executor):
    """An executor for ``distributed.Worker(executor=...)``.

    ``max_workers`` threads of the worker's process run the worker's task
    wrapper; each sends the task's callable, with its arguments, to one of
    ``max_workers`` sub-interpreters and waits for it there. Anything else
    submitted runs wholly in a sub-interpreter.

    (Its type's name must not contain "ThreadPoolExecutor": distributed then
    hands it the task through a closure it could not see into.)
    """

    def __init__(self, max_workers=None, thread_name_prefix='subinterp-dask'):
        max_workers = max_workers or os.cpu_count() or 1
        self._max_workers = max_workers
        self._interpreters = InterpreterPoolExecutor(
            max_workers, thread_name_prefix=f'{thread_name_prefix}-interp')
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers, thread_name_prefix=thread_name_prefix)

    def submit(self, fn, /, *args, **kwargs):
        if _is_worker_wrapper(fn) and args:
            task = _InInterpreter(self._interpreters, args[0])
            return self._threads.submit(fn, task, *args[1:], **kwargs)
        return self._interpreters.submit(fn, *args, **kwargs)

    def shutdown(self, wait=True, *, cancel_futures=False):
        self._threads.shutdown(wait=wait, cancel_futures=cancel_futures)
        self._interpreters.shutdown(wait=wait, cancel_futures=cancel_futures)


def _frames_are_safe():
    doc = getattr(sys._current_frames, '__doc__', None) or ''
    return 'Installed by subinterp' in doc


def dask_setup(worker):
    """``dask worker --preload subinterp.dask``: the worker's default
    executor becomes a :class:`WorkerExecutor` with one interpreter per
    worker thread."""
    state = getattr(worker, 'state', None)
    nthreads = getattr(state, 'nthreads', None) or getattr(worker, 'nthreads', None) or 1
    old = worker.executors.get('default')
    worker.executors['default'] = WorkerExecutor(nthreads)
    if old is not None and old is not worker.executors.get('offload'):
        old.shutdown(wait=False)
    # The worker's profiler calls sys._current_frames() every 10 ms; CPython's
    # own version crashes the process while a sub-interpreter runs Python.
    if _frames_are_safe():
        logger.info('subinterp.dask: %d tasks at a time run in sub-interpreters; '
                    'the profiler sees the worker threads only, not the code in '
                    'the interpreters', nthreads)
    else:
        for name in ('profile', 'profile-cycle'):
            callback = getattr(worker, 'periodic_callbacks', {}).get(name)
            if callback is not None:
                callback.stop()
        logger.warning('subinterp.dask: sys._current_frames() is not the safe one '
                       'that subinterp installs (something replaced it); the '
                       'worker profiler is turned off')
