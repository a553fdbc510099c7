"""Celery on sub-interpreters against Celery's prefork and threads pools.

The same CPU-bound task (a pure-Python loop of about --task-ms) runs on
three Celery workers of this Python, each with 2 slots, all fed by one real
redis-server on loopback:

- ``-P prefork -c 2``: Celery's default, two forked child processes;
- ``-P threads -c 2``: two threads, one GIL;
- subinterp.celery.TaskPool, ``-c 2``: two sub-interpreters in one process.

The three workers listen on queues of their own and stay up for the whole
run; rounds are interleaved (this VM's speed swings from round to round).
Each round sends --tasks tasks to one worker and waits for every result.
Memory is the PSS of the whole worker (the main process and, for prefork,
its children: shared pages count once) after the rounds. Bytecode is
cached for the run (a first worker writes it), as in a deployment.

Targets: throughput within 10% of prefork and at least 1.8x threads, with
no more memory than prefork.

    PYTHONPATH=build/rel-py3.13/python:python $PYENV_ROOT/versions/3.13.0/bin/python3 \\
        bench/bench_celery.py [--tasks 200] [--rounds 3] [--task-ms 20]

Needs redis-server and Celery (bash scripts/deps.sh); Debian's Celery is
used from /usr/lib/python3/dist-packages with the shims in
tests/python/debian_celery_compat.
"""

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tests', 'python'))
import celery_support  # noqa: E402
sys.path.insert(0, HERE)
import _common  # noqa: E402

KINDS = ('prefork', 'threads', 'subinterp')


def calibrate(ms):
    """Loop count of a task of about ``ms`` in this Python."""
    from bench_celery_app import spin
    n = 100_000
    while True:
        start = time.perf_counter()
        spin.run(n)
        took = time.perf_counter() - start
        if took > 0.05:
            return max(1, int(n * ms / 1000 / took))
        n *= 2


def run_round(app, kind, tasks, n):
    from celery.result import ResultSet
    from bench_celery_app import spin
    start = time.perf_counter()
    results = ResultSet([spin.apply_async((n,), queue=kind) for _ in range(tasks)])
    values = results.get(timeout=600)
    took = time.perf_counter() - start
    assert len(values) == tasks and all(v == values[0] for v in values), 'wrong results'
    return tasks / took


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--tasks', type=int, default=200, help='tasks a round (200)')
    parser.add_argument('--rounds', type=int, default=3, help='rounds per pool (3)')
    parser.add_argument('--task-ms', type=float, default=20, help='task length in ms (20)')
    args = parser.parse_args()

    why = celery_support.missing()
    if why:
        sys.exit(f'bench_celery: {why}')
    sys.path.insert(0, HERE)
    import bench_celery_app
    import celery
    import subinterp

    print(f'Python {sys.version.split()[0]}, Celery {celery.__version__}, '
          f'subinterp from {os.path.dirname(subinterp.__file__)}, {os.cpu_count()} CPUs')
    n = calibrate(args.task_ms)
    print(f'task: spin({n}), about {args.task_ms:g} ms here; {args.tasks} tasks a round, '
          f'{args.rounds} interleaved rounds')

    with tempfile.TemporaryDirectory(prefix='bench-celery-') as directory:
        redis = celery_support.Redis(directory)
        app = bench_celery_app.app
        app.conf.broker_url = redis.url(0)
        app.conf.result_backend = redis.url(1)
        # Bytecode: Debian's packages carry .pyc files for their own Python
        # only, and with PYTHONDONTWRITEBYTECODE every interpreter (each
        # worker interpreter too) would compile the sources at each start.
        # Deployments have .pyc files: a first worker writes them to a
        # cache of this run, then the measured workers start.
        os.environ.pop('PYTHONDONTWRITEBYTECODE', None)
        os.environ['PYTHONPYCACHEPREFIX'] = os.path.join(directory, 'pycache')
        workers = {}
        try:
            os.environ['BENCH_CELERY_POOL'] = 'subinterp'
            celery_support.Worker('bench_celery_app', redis, directory, '-c', '1',
                                  '-Q', 'warm-up', cwd=HERE).stop(signal.SIGTERM)
            for kind in KINDS:
                pool_args = [] if kind == 'subinterp' else ['-P', kind]
                os.environ['BENCH_CELERY_POOL'] = kind
                start = time.perf_counter()
                workers[kind] = celery_support.Worker(
                    'bench_celery_app', redis, directory, '-c', '2', '-Q', kind,
                    *pool_args, cwd=HERE)
                print(f'  {kind:9} worker ready in {time.perf_counter() - start:.1f} s '
                      f'(pid {workers[kind].pid})', flush=True)
            # A warm-up round each: imports, first connections.
            for kind in KINDS:
                run_round(app, kind, 20, n)
            rates = {kind: [] for kind in KINDS}
            for r in range(args.rounds):
                for kind in KINDS:
                    rates[kind].append(run_round(app, kind, args.tasks, n))
                print(f'  round {r + 1}: ' + ', '.join(
                    f'{kind} {rates[kind][-1]:.1f}/s' for kind in KINDS), flush=True)
            memory = {}
            for kind in KINDS:
                rss, pss = _common.tree_memory(workers[kind].pid)
                memory[kind] = (pss / 1024, _common.process_count(workers[kind].pid))
        finally:
            for worker in workers.values():
                worker.stop(signal.SIGTERM)
            import gc
            gc.collect()  # results unsubscribe from redis as they go
            app.close()
            redis.stop()

    print()
    print(f'{"pool":10} {"tasks/s (median)":>17} {"rounds":>24} {"PSS MiB":>8} {"procs":>6}')
    median = {kind: statistics.median(rates[kind]) for kind in KINDS}
    for kind in KINDS:
        rounds = ' '.join(f'{x:.1f}' for x in rates[kind])
        print(f'{kind:10} {median[kind]:17.1f} {rounds:>24} {memory[kind][0]:8.1f} '
              f'{memory[kind][1]:6d}')
    print()
    vs_prefork = median['subinterp'] / median['prefork']
    vs_threads = median['subinterp'] / median['threads']
    mem_ratio = memory['subinterp'][0] / memory['prefork'][0]
    print(f'subinterp / prefork throughput: {vs_prefork:.2f}x  '
          f'(target >= 0.90: {"PASS" if vs_prefork >= 0.9 else "MISS"})')
    print(f'subinterp / threads throughput: {vs_threads:.2f}x  '
          f'(target >= 1.80: {"PASS" if vs_threads >= 1.8 else "MISS"})')
    print(f'subinterp / prefork memory:     {mem_ratio:.2f}x  '
          f'(target <= 1.00: {"PASS" if mem_ratio <= 1.0 else "MISS"})')


if __name__ == '__main__':
    main()
