"""The script runner against subprocess, side by side in one run.

Small scripts (print a line, a little computation) run three ways, 2 at a
time on this 2-core machine:

- subinterp.sandbox, isolation='process': confined worker processes, a
  fresh sub-interpreter per script;
- subinterp.sandbox, isolation='interpreter': fresh sub-interpreters in
  this process;
- `subprocess.run([python, '-I', '-c', src])` with the same limits (a
  preexec_fn applying RLIMIT_CPU and RLIMIT_AS, and the same timeout).

Reported:
- latency of one script on a warm runner (one at a time; p50, p90);
- throughput, in interleaved rounds of subprocess and process isolation
  (this VM's speed swings from round to round), then interpreter isolation;
- memory per concurrently running script (PSS of the processes; for
  interpreter isolation, the RSS a sandbox adds per running script, in a
  fresh process);
- the host's RSS over many scripts: steady with process isolation (workers
  are recycled), growing with interpreter isolation (CPython keeps memory
  of every interpreter made and closed).

Ratios against the issue's targets come last. The host makes no
sub-interpreter until the interpreter-isolation part, which runs last:
preexec_fn makes subprocess fork(), unsafe once sub-interpreters exist.

    PYTHONPATH=build/rel-py3.13/python:python $PYENV_ROOT/versions/3.13.0/bin/python3 \\
        bench/bench_sandbox.py [--scripts 1000] [--rounds 3] [--steady 10000]
"""

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = 'x = sum(i * i for i in range(100)); print(x)'
SLEEPER = 'import time; time.sleep(2)'


def rss_mib(pid='self'):
    with open(f'/proc/{pid}/status') as f:
        return int(re.search(r'VmRSS:\s+(\d+)', f.read()).group(1)) / 1024


def pss_mib(pid):
    try:
        with open(f'/proc/{pid}/smaps_rollup') as f:
            return int(re.search(r'Pss:\s+(\d+)', f.read()).group(1)) / 1024
    except (OSError, AttributeError):
        return 0.0


def limits():
    resource.setrlimit(resource.RLIMIT_CPU, (5, 5))
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def one_subprocess(_=None):
    t = time.perf_counter()
    out = subprocess.run([sys.executable, '-I', '-c', SOURCE], capture_output=True,
                         timeout=5, preexec_fn=limits)
    assert out.returncode == 0, out.stderr
    return time.perf_counter() - t


def latency(fn, n=60):
    times = []
    for _ in range(n):
        times.append(fn())
        time.sleep(0.02)  # one at a time, with the runner's background work settled
    times.sort()
    return times[len(times) // 2] * 1000, times[int(len(times) * 0.9)] * 1000


def timed_run(sb):
    def run():
        t = time.perf_counter()
        r = sb.run(SOURCE, timeout=5)
        assert r.ok, r
        return time.perf_counter() - t
    return run


def rate(fn, n):
    t = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t)


# Memory per running script with interpreter isolation, in a fresh process
# (the bench's own host keeps ~2 MiB of every interpreter it made): the RSS
# that a sandbox with k scripts running adds to a process that has imported
# subinterp, per script. Spares are made first and not refilled, so each
# counts once, with its script.
CHILD_MEMORY = '''
import re, sys, time
def rss():
    with open('/proc/self/status') as f:
        return int(re.search(r'VmRSS:\\s+(\\d+)', f.read()).group(1)) / 1024
from subinterp import sandbox
k = int(sys.argv[1])
before = rss()
sb = sandbox.Sandbox(workers=k, spares=k)
while sb._spares._ready.qsize() < k:
    time.sleep(0.01)
sb._spares._stop.set()
futures = [sb.submit(%r, timeout=5) for _ in range(k)]
time.sleep(1.0)
print((rss() - before) / k)
for f in futures:
    assert f.result().ok
'''


def interpreter_memory(k):
    out = subprocess.run([sys.executable, '-c', CHILD_MEMORY % SLEEPER, str(k)],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr
    return float(out.stdout.split()[-1])


def subprocess_memory(k):
    """Mean PSS (MiB) of k concurrent `python -I` running SLEEPER."""
    procs = [subprocess.Popen([sys.executable, '-I', '-c', SLEEPER], preexec_fn=limits)
             for _ in range(k)]
    time.sleep(1.0)
    pss = [pss_mib(p.pid) for p in procs]
    for p in procs:
        p.wait()
    return sum(pss) / k


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--scripts', type=int, default=1000, help='scripts per throughput run (1000)')
    p.add_argument('--rounds', type=int, default=3, help='interleaved throughput rounds (3)')
    p.add_argument('--steady', type=int, default=10000,
                   help='scripts for the steady-memory check of process isolation (10000)')
    p.add_argument('--steady-interpreter', type=int, default=1000,
                   help='the same for interpreter isolation (1000; each costs the host '
                        '~2.4 MiB for good)')
    args = p.parse_args()
    sys.path.insert(0, HERE)
    import _common
    _common.import_subinterp()
    from subinterp import sandbox

    print(f'python {sys.version.split()[0]}; {os.cpu_count()} cores; script: {SOURCE!r}',
          flush=True)

    # -- process isolation and subprocess, interleaved -------------------------
    box = sandbox.Sandbox(workers=2, isolation='process', memory=256 << 20)
    for _ in range(20):
        box.run(SOURCE)
    lat_sp = latency(one_subprocess, n=30)
    lat_pr = latency(timed_run(box))
    n_sp = max(100, args.scripts // 4)
    sp_rates, pr_rates = [], []
    for rnd in range(args.rounds):
        with ThreadPoolExecutor(2) as ex:
            sp_rates.append(rate(lambda n: list(ex.map(one_subprocess, range(n))), n_sp))
        results = []
        pr_rates.append(rate(lambda n: results.extend(box.map([SOURCE] * n, timeout=5)),
                             args.scripts))
        assert all(r.ok for r in results), [r for r in results if not r.ok][:1]
        print(f'  round {rnd + 1}: subprocess {sp_rates[-1]:.0f}/s, process isolation '
              f'{pr_rates[-1]:.0f}/s ({pr_rates[-1] / sp_rates[-1]:.2f}x)', flush=True)

    # Memory per running script: k at once, each in its own process (PSS,
    # which shares the pages processes have in common among them).
    k = 4
    mem_sp = subprocess_memory(k)

    def worker_memory(sb):
        futures = [sb.submit(SLEEPER, timeout=5) for _ in range(k)]
        time.sleep(1.0)
        live = [pid for pid in sb._pids if os.path.exists(f'/proc/{pid}')]
        pss = sum(pss_mib(pid) for pid in live) / max(1, len(live))
        for f in futures:
            assert f.result().ok
        return pss

    with sandbox.Sandbox(workers=k, isolation='process', memory=256 << 20) as fresh:
        list(fresh.map(['1'] * k))
        mem_pr_fresh = worker_memory(fresh)
    print(f'\nmemory per running script ({k} at once): subprocess {mem_sp:.1f} MiB PSS, '
          f'process isolation {mem_pr_fresh:.1f} MiB PSS per fresh worker', flush=True)

    # The host's memory over many scripts (workers recycled every 25).
    host_before = rss_mib()
    marks = []
    done = 0
    while done < args.steady:
        n = min(1000, args.steady - done)
        results = list(box.map([SOURCE] * n, timeout=5))
        assert all(r.ok for r in results)
        done += n
        live = [pid for pid in box._pids if os.path.exists(f'/proc/{pid}')]
        marks.append((done, rss_mib(), max((rss_mib(pid) for pid in live), default=0.0)))
        print(f'  {done:6d} scripts: host RSS {marks[-1][1]:.1f} MiB, largest worker '
              f'{marks[-1][2]:.1f} MiB', flush=True)
    mem_pr = worker_memory(box)  # workers that have run many scripts
    box.close()
    host_after = marks[-1][1]
    mem_in = interpreter_memory(k)  # before this process makes sub-interpreters

    # -- interpreter isolation (sub-interpreters in this process from here) ----
    sb = sandbox.Sandbox(workers=2, spares=8)
    time.sleep(1.0)  # warm: spares made
    for _ in range(20):
        sb.run(SOURCE)
    lat_in = latency(timed_run(sb))
    in_rates = []
    for rnd in range(args.rounds):
        results = []
        in_rates.append(rate(lambda n: results.extend(sb.map([SOURCE] * n, timeout=5)),
                             args.scripts))
        assert all(r.ok for r in results)
        print(f'  round {rnd + 1}: interpreter isolation {in_rates[-1]:.0f}/s, host RSS '
              f'{rss_mib():.0f} MiB', flush=True)
    sb.close()
    sb = sandbox.Sandbox(workers=2, spares=2)
    in_before = rss_mib()
    for start in range(0, args.steady_interpreter, 500):
        list(sb.map([SOURCE] * min(500, args.steady_interpreter - start), timeout=5))
    time.sleep(1.0)
    in_after = rss_mib()
    sb.close()

    sp_rate, pr_rate, in_rate = (statistics.median(r) for r in (sp_rates, pr_rates, in_rates))
    print(f"\n{'one script, warm':40} {'p50 ms':>8} {'p90 ms':>8}")
    for name, (p50, p90) in [('sandbox, interpreter isolation', lat_in),
                             ('sandbox, process isolation', lat_pr),
                             ('subprocess python -I (rlimits)', lat_sp)]:
        print(f'{name:40} {p50:8.2f} {p90:8.2f}')
    print(f"\n{'throughput, 2 at a time (median)':40} {'scripts/s':>10}")
    print(f"{'sandbox, interpreter isolation':40} {in_rate:10.0f}   "
          f"({args.rounds} x {args.scripts} scripts)")
    print(f"{'sandbox, process isolation':40} {pr_rate:10.0f}   "
          f"({args.rounds} x {args.scripts} scripts)")
    print(f"{'subprocess python -I (rlimits)':40} {sp_rate:10.0f}   ({args.rounds} x {n_sp} scripts)")
    print(f"\n{'memory per running script':40} {'MiB':>10}")
    print(f"{'sandbox, interpreter isolation':40} {mem_in:10.1f}   (RSS added per script)")
    print(f"{'sandbox, process isolation, fresh':40} {mem_pr_fresh:10.1f}   (PSS per worker)")
    print(f"{'sandbox, process isolation, worn':40} {mem_pr:10.1f}   "
          f"(PSS per worker, after {args.steady} scripts)")
    print(f"{'subprocess python -I (rlimits)':40} {mem_sp:10.1f}   (PSS)")
    print(f'\nhost RSS, process isolation, {args.steady} scripts: {host_before:.1f} -> '
          f'{host_after:.1f} MiB; interpreter isolation, {args.steady_interpreter} scripts: '
          f'{in_before:.1f} -> {in_after:.1f} MiB '
          f'({(in_after - in_before) * 1024 / args.steady_interpreter:.0f} KiB per script)')

    first_half = [m[1] for m in marks[len(marks) // 2:]]
    steady = (max(first_half) - min(first_half)) < 20 if first_half else False
    print('\ntargets:')
    for ok, text in [
            (lat_in[0] < 1.0, f'interpreter isolation p50 latency {lat_in[0]:.2f} ms '
                              f'(target < 1 ms; subprocess {lat_sp[0]:.1f} ms)'),
            (lat_pr[0] < 5.0, f'process isolation p50 latency {lat_pr[0]:.2f} ms (target < 5 ms)'),
            (in_rate >= 2 * sp_rate, f'interpreter isolation throughput {in_rate / sp_rate:.2f}x '
                                     f'subprocess (target >= 2x)'),
            (pr_rate >= 1.5 * sp_rate, f'process isolation throughput {pr_rate / sp_rate:.2f}x '
                                       f'subprocess (target >= 1.5x)'),
            (mem_in <= 0.4 * mem_sp, f'interpreter isolation memory per running script '
                                     f'{mem_in / mem_sp:.2f}x subprocess (target <= 0.4x)'),
            (mem_pr_fresh <= 0.4 * mem_sp, f'process isolation memory per running script '
                                           f'{mem_pr_fresh / mem_sp:.2f}x subprocess fresh, '
                                           f'{mem_pr / mem_sp:.2f}x worn (target <= 0.4x)'),
            (steady, f'host memory steady over {args.steady} scripts with process isolation '
                     f'(second half within 20 MiB)')]:
        print(f"  {'PASS' if ok else 'MISS'}  {text}")


if __name__ == '__main__':
    main()
