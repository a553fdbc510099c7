"""The Celery app of tests/python/test_celery.py: started as
``celery -A celery_tasks worker`` with the broker and result backend from
CELERY_BROKER_URL and CELERY_RESULT_BACKEND."""

import os
import threading
import time

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

app = Celery('celery_tasks')
app.conf.worker_pool = 'subinterp.celery:TaskPool'
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_prefetch_multiplier = 1
app.conf.worker_pool_restarts = True
# More task modules, for a test that needs one that only its worker imports.
app.conf.imports = tuple(m for m in os.environ.get('CELERY_TASKS_IMPORTS', '').split(',') if m)


class TaskFailure(Exception):
    """Raised by ``fail``: must reach the caller as this type."""


@app.task
def add(x, y):
    return x + y


@app.task
def where():
    """(process id, interpreter id) of the task's interpreter."""
    import subinterp
    return [os.getpid(), subinterp.get_current().id]


@app.task
def fail(text):
    raise TaskFailure(text)


@app.task
def spin(n):
    """CPU-bound: wall time, CPU time of the thread, and the interpreter."""
    import subinterp
    start, cpu = time.monotonic(), time.thread_time()
    total = 0
    for i in range(n):
        total += i
    return [start, time.monotonic(), time.thread_time() - cpu,
            subinterp.get_current().id]


@app.task
def forever():
    while True:
        pass


@app.task
def soft_limited():
    try:
        while True:
            pass
    except SoftTimeLimitExceeded:
        return 'stopped by the soft limit'


@app.task
def nap(seconds):
    """Sleeps in short steps (a stop reaches it within 0.05 s)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
    return seconds


@app.task
def threads():
    return threading.active_count()
