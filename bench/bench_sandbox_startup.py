"""What a fresh interpreter per script costs, and what each way of cutting
that cost buys: the facts the script runner (subinterp.sandbox) is designed
around.

For each way of getting a clean interpreter to run one small script in, it
reports the median and p90 latency over many runs, the minor page faults
(first-touched pages) per run, and the memory a live one holds:

- a new process, `python -I -c src`, and `python -I -S -c src` (no site);
- a new isolated sub-interpreter made, used and closed in a host process
  started as usual, and in one started with -S (sub-interpreters then skip
  `site` too: they copy the main interpreter's configuration);
- a spare sub-interpreter made ahead of time: only the script's run is on
  the latency path if the close is deferred too (the close is timed apart).

    PY=$PYENV_ROOT/versions/3.13.0/bin/python3
    PYTHONPATH=build/rel-py3.13/python:python $PY bench/bench_sandbox_startup.py
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = 'x = sum(i * i for i in range(100)); print(x)'

# Runs in a host process: times `runs` fresh sub-interpreters, each made,
# given SCRIPT and closed; then the same with spares made ahead; then the
# RSS a live interpreter holds. Prints one JSON object.
HOST = r'''
import json, os, re, resource, statistics, sys, time
sys.path[:0] = PATHS
import subinterp

SCRIPT = %r
RUNS = %d

def rss():
    with open('/proc/self/status') as f:
        return int(re.search(r'VmRSS:\s+(\d+)', f.read()).group(1))

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def run_in(interp):
    interp.exec('import io, sys\nsys.stdout = io.StringIO()\n' + SCRIPT)

for _ in range(5):  # warm-up: the first interpreters cost more
    i = subinterp.create(); run_in(i); i.close()

fresh, fresh_faults = [], []
for _ in range(RUNS):
    f0 = faults(); t = time.perf_counter()
    i = subinterp.create(); run_in(i); i.close()
    fresh.append(time.perf_counter() - t); fresh_faults.append(faults() - f0)

spares = [subinterp.create() for _ in range(RUNS)]
spare, spare_faults, closing = [], [], []
for i in spares:
    f0 = faults(); t = time.perf_counter()
    run_in(i)
    spare.append(time.perf_counter() - t); spare_faults.append(faults() - f0)
    t = time.perf_counter(); i.close(); closing.append(time.perf_counter() - t)

create_only = []
for _ in range(RUNS // 2):
    t = time.perf_counter(); i = subinterp.create(); create_only.append(time.perf_counter() - t)
    i.close()

before = rss()
live = [subinterp.create() for _ in range(20)]
for i in live:
    run_in(i)
per_live = (rss() - before) / 20
for i in live:
    i.close()

print(json.dumps({'fresh': fresh, 'fresh_faults': fresh_faults, 'spare': spare,
                  'spare_faults': spare_faults, 'close': closing, 'create': create_only,
                  'live_kib': per_live, 'site': 'site' in sys.modules}))
'''


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def row(label, seconds, faults=None, memory=None):
    ms = [s * 1000 for s in seconds]
    text = f'{label:52} {statistics.median(ms):8.2f} {percentile(ms, 0.9):8.2f}'
    text += f' {statistics.median(faults):8.0f}' if faults else ' ' * 9
    text += f' {memory / 1024:9.1f}' if memory is not None else ''
    print(text, flush=True)


def subprocess_runs(py, flags, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([py, *flags, '-c', SCRIPT], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--runs', type=int, default=60, help='runs of each kind (60)')
    args = p.parse_args()
    py = sys.executable
    sys.path.insert(0, HERE)
    import _common
    sub = _common.import_subinterp()
    paths = [os.path.dirname(os.path.dirname(os.path.abspath(sub._subinterp.__file__))),
             os.path.dirname(os.path.dirname(os.path.abspath(sub.__file__)))]
    print(f'python {sys.version.split()[0]} ({py}); {os.cpu_count()} cores; '
          f'{args.runs} runs each; script: {SCRIPT!r}')
    print(f"{'a clean interpreter for one script':52} {'p50 ms':>8} {'p90 ms':>8} "
          f"{'faults':>8} {'live MiB':>9}")
    for flags in (['-I'], ['-I', '-S']):
        subprocess_runs(py, flags, 3)
        row(f'new process: python {" ".join(flags)} -c', subprocess_runs(py, flags, args.runs))
    for flags, label in ((['-I'], 'host started as usual'), (['-I', '-S'], 'host started with -S')):
        code = HOST.replace('PATHS', repr(paths)) % (SCRIPT, args.runs)
        out = subprocess.run([py, *flags, '-c', code], capture_output=True, text=True)
        if out.returncode != 0:
            print(f'{label}: failed\n{out.stderr[-2000:]}')
            continue
        r = json.loads(out.stdout)
        row(f'sub-interpreter, create+run+close ({label})', r['fresh'], r['fresh_faults'],
            r['live_kib'])
        row(f'  of which create alone', r['create'])
        row(f'spare made ahead: the run alone ({label})', r['spare'], r['spare_faults'])
        row(f'  and its close (off the latency path if deferred)', r['close'])
    print('\nfaults: minor page faults per run (first-touched pages; about 13 us each here). '
          'live MiB: RSS a live interpreter holds after the script.')


if __name__ == '__main__':
    main()
