"""The Celery app of bench/bench_celery.py. BENCH_CELERY_POOL=subinterp
selects subinterp.celery.TaskPool through the configuration (Celery 5.2's
-P takes only its own names); prefork and threads come from -P."""

import os

from celery import Celery

app = Celery('bench_celery_app')
app.conf.broker_connection_retry_on_startup = True
if os.environ.get('BENCH_CELERY_POOL') == 'subinterp':
    app.conf.worker_pool = 'subinterp.celery:TaskPool'


@app.task
def spin(n):
    """CPU-bound: a pure-Python loop."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total
