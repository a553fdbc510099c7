"""What runs in the worker interpreters of subinterp.celery.TaskPool.

Apart from subinterp.celery, whose module imports Celery: a worker
interpreter on CPython 3.12 must prepare ``billiard.util`` before anything
imports Celery (see _import_billiard_util). Functions reach the worker
interpreters by reference, so this module is what they import first.
"""

import importlib
import os
import pickle
import sys


def _import_billiard_util():
    """CPython 3.12 refuses ``_ctypes`` in isolated interpreters, and
    ``billiard.util`` (which every Celery worker imports) imports ctypes when
    cffi is missing, only for ``set_pdeathsig``/``get_pdeathsig``, which a
    worker interpreter never calls. It is imported here with a stand-in
    ``ctypes`` whose use raises ImportError; the stand-in is then removed,
    so that ``import ctypes`` in a task still raises CPython's own error."""
    if sys.version_info >= (3, 13) or 'billiard.util' in sys.modules:
        return
    try:
        import ctypes  # noqa: F401
        return
    except ImportError as exc:
        refusal = exc
    import types

    class _Refused(types.ModuleType):
        def __getattr__(self, name):
            raise ImportError(f'ctypes is not available here: {refusal}')

    saved = sys.modules.get('ctypes')
    sys.modules['ctypes'] = _Refused('ctypes')
    try:
        import billiard.util  # noqa: F401
    finally:
        if saved is None:
            sys.modules.pop('ctypes', None)
        else:
            sys.modules['ctypes'] = saved


def _start_worker(module, attr, hostname, changes):
    """Prepares a worker interpreter as Celery's prefork pool prepares a
    child process (celery.concurrency.prefork.process_initializer), without
    what only a process has (signals, process title, parent death signal).
    Returns the task names the interpreter knows."""
    _import_billiard_util()
    from celery import signals
    from celery._state import set_default_app
    from celery.app import trace
    from celery.app.trace import build_tracer
    from celery.worker import state as worker_state
    try:
        from celery._state import _set_task_join_will_block
    except ImportError:  # moved in some releases
        _set_task_join_will_block = None

    app = importlib.import_module(module)
    for part in attr.split('.'):
        app = getattr(app, part)
    if changes:
        app.conf.update(pickle.loads(changes))
    if _set_task_join_will_block is not None:
        _set_task_join_will_block(True)
    app.loader.init_worker()
    app.loader.init_worker_process()
    logfile = os.environ.get('CELERY_LOG_FILE') or None
    if logfile and '%i' in logfile.lower():
        app.log.already_setup = False
    app.log.setup(int(os.environ.get('CELERY_LOG_LEVEL', 0) or 0),
                  logfile,
                  bool(os.environ.get('CELERY_LOG_REDIRECT', False)),
                  str(os.environ.get('CELERY_LOG_REDIRECT_LEVEL')),
                  hostname=hostname)
    trace.setup_worker_optimizations(app, hostname)
    set_default_app(app)
    for name, task in app.tasks.items():
        task.__trace__ = build_tracer(name, task, app.loader, hostname, app=app)
    worker_state.reset_state()
    signals.worker_process_init.send(sender=None)
    # What the first task would set up (the result backend's client and
    # its imports) is set up now, and the start's garbage collected, so
    # that the pool can hand the freed memory back to the system at once.
    app.backend
    import gc
    gc.collect()
    return sorted(app.tasks)


def _stop_worker():
    """What a prefork child does as it exits."""
    from celery import signals
    signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)


def _run_job(target, args, kwargs):
    """Runs the pool's target (Celery's ``fast_trace_task``) in the worker
    interpreter. An exception that escapes the tracer is returned as
    ``(False, exception info)`` so that the consumer gets it as a failure
    (prefork sends the same through its result pipe)."""
    try:
        return (True, target(*args, **kwargs))
    except Exception:
        from billiard.einfo import ExceptionInfo
        return (False, ExceptionInfo())


_import_billiard_util()
