"""Compare two builds of subinterp in one run: call round trip, queue rate and
pool round trip, with per-round ratios.

Each build is a PYTHONPATH (its build tree's python/ folder and the package
source that goes with it, or an installed package). Rounds alternate
between the builds, each measurement in a fresh child process of the same
python, so the two sides are measured moments apart on this virtual
machine, whose speed drifts. Ratios are the median (min-max) of the
per-round ratios head/base, in time (below 1.00x: head is faster).

    PY=/root/.pyenv/versions/3.13.0/bin/python3
    $PY bench/bench_builds.py \\
        --base /work/base/build/rel-py3.13/python:/work/base/python \\
        --head build/rel-py3.13/python:python

Measured, as in bench_call.py, bench_queue.py and bench_pool.py:
  call   interp.call(operator.pos, 1) from the main thread, per call
  exec   interp.exec('pass'), per call
  queue  small ints from one interpreter to another (producer and consumer
         each in a thread, interp.call), per item
  pool   InterpreterPoolExecutor(2).submit(operator.pos, 1).result(), per call
"""

import argparse
import os
import statistics
import json
import subprocess
import sys

CHILD = r'''
import json, operator, sys, threading, time
import subinterp
from subinterp.futures import InterpreterPoolExecutor

calls, items = int(sys.argv[1]), int(sys.argv[2])
out = {}

interp = subinterp.create()
for _ in range(200):
    interp.call(operator.pos, 1)
t = time.perf_counter()
for _ in range(calls):
    interp.call(operator.pos, 1)
out['call'] = (time.perf_counter() - t) / calls

for _ in range(200):
    interp.exec('pass')
t = time.perf_counter()
for _ in range(calls):
    interp.exec('pass')
out['exec'] = (time.perf_counter() - t) / calls

def produce(q, n):
    for i in range(n):
        q.put(i)
    return n

def consume(q, n):
    total = 0
    for _ in range(n):
        total += q.get()
    return total

producer, consumer = interp, subinterp.create()
q = subinterp.create_queue()
results = {}
def run(name, who, fn):
    results[name] = who.call(fn, q, items)
threads = [threading.Thread(target=run, args=('p', producer, produce)),
           threading.Thread(target=run, args=('c', consumer, consume))]
t = time.perf_counter()
for th in threads:
    th.start()
for th in threads:
    th.join()
out['queue'] = (time.perf_counter() - t) / items
assert results['c'] == items * (items - 1) // 2, results

with InterpreterPoolExecutor(2) as pool:
    for _ in range(200):
        pool.submit(operator.pos, 1).result()
    t = time.perf_counter()
    for _ in range(calls):
        pool.submit(operator.pos, 1).result()
    out['pool'] = (time.perf_counter() - t) / calls
out['core'] = subinterp._subinterp.__file__
print(json.dumps(out))
'''

FORMS = [('call', 'interp.call(operator.pos, 1)', 'us'),
         ('exec', "interp.exec('pass')", 'us'),
         ('queue', 'queue, per item (1 producer, 1 consumer)', 'us'),
         ('pool', 'pool submit(...).result()', 'us')]


def measure(python, path, calls, items):
    env = dict(os.environ, PYTHONPATH=path)
    proc = subprocess.run([python, '-c', CHILD, str(calls), str(items)], env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f'measuring {path} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--base', required=True, help='PYTHONPATH of the build to compare against')
    p.add_argument('--head', required=True, help='PYTHONPATH of the build being measured')
    p.add_argument('--rounds', type=int, default=9, help='rounds, each running both (9)')
    p.add_argument('--calls', type=int, default=20000, help='calls per form and round (20000)')
    p.add_argument('--items', type=int, default=200000, help='queue items per round (200000)')
    p.add_argument('--quick', action='store_true', help='a smoke run: 2 rounds, few calls')
    args = p.parse_args()
    if args.quick:
        args.rounds, args.calls, args.items = 2, 500, 5000
    python = sys.executable
    print('=' * 72)
    print('two builds of subinterp, interleaved rounds')
    print(f'python : {sys.version.split()[0]} ({python})')
    print(f'base   : {args.base}')
    print(f'head   : {args.head}')
    print('=' * 72, flush=True)

    runs = {'base': [], 'head': []}
    for r in range(args.rounds):
        order = ('base', 'head') if r % 2 == 0 else ('head', 'base')
        for side in order:
            runs[side].append(measure(python, getattr(args, side), args.calls, args.items))
        print(f'round {r + 1}/{args.rounds} done', file=sys.stderr, flush=True)
    print(f"base extension: {runs['base'][0]['core']}")
    print(f"head extension: {runs['head'][0]['core']}")
    print(f'\n{args.rounds} rounds; {args.calls} calls, {args.items} queue items per round')
    header = f"{'form':44} {'base':>9} {'head':>9}   head/base (min-max)"
    print(header)
    print('-' * len(header))
    verdicts = []
    for key, label, _ in FORMS:
        base = [run[key] * 1e6 for run in runs['base']]
        head = [run[key] * 1e6 for run in runs['head']]
        ratios = [h / b for h, b in zip(head, base)]
        ratio = statistics.median(ratios)
        print(f'{label:44} {statistics.median(base):7.2f}us {statistics.median(head):7.2f}us'
              f'   {ratio:.3f}x ({min(ratios):.3f}-{max(ratios):.3f})')
        verdicts.append((label, ratio))
    print('(times: medians; ratio: median of per-round ratios, below 1 = head faster)')
    print('target (informational): head/base <= 1.05 for every form')
    for label, ratio in verdicts:
        print(f"  {'PASS' if ratio <= 1.05 else 'MISS'}  {label}: {ratio:.3f}x")


if __name__ == '__main__':
    main()
