"""The script runner against subprocess, side by side in one run.

Small scripts (print a line, a little computation) run through
subinterp.sandbox with interpreter isolation, and through
`subprocess.run([python, '-I', '-c', src])` with the same limits (a
preexec_fn applying RLIMIT_CPU and RLIMIT_AS, and the same timeout). Both
use 2 at a time on this 2-core machine. Reported:

- latency of one script on a warm runner (one at a time; p50, p90);
- throughput of many scripts;
- the host's RSS before and after many scripts (recycling: a fresh
  interpreter per script must not make the host grow without bound).

Ratios against the issue's targets come last. Process isolation is not
built yet, so it has no row. The subprocess runs come first, before any
sub-interpreter exists: preexec_fn makes subprocess fork(), which is unsafe
once sub-interpreters exist.

    PYTHONPATH=build/rel-py3.13/python:python $PYENV_ROOT/versions/3.13.0/bin/python3 \\
        bench/bench_sandbox.py [--scripts 1000]
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


def rss_mib():
    with open('/proc/self/status') as f:
        return int(re.search(r'VmRSS:\s+(\d+)', f.read()).group(1)) / 1024


def limits():
    resource.setrlimit(resource.RLIMIT_CPU, (5, 5))
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def one_subprocess(_=None):
    t = time.perf_counter()
    out = subprocess.run([sys.executable, '-I', '-c', SOURCE], capture_output=True,
                         timeout=5, preexec_fn=limits)
    assert out.returncode == 0, out.stderr
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--scripts', type=int, default=1000, help='scripts for throughput (1000)')
    p.add_argument('--steady', type=int, default=1000,
                   help='scripts for the memory check (1000; each costs the host ~2.4 MiB for good)')
    args = p.parse_args()
    sys.path.insert(0, HERE)
    import _common
    _common.import_subinterp()
    from subinterp import sandbox

    print(f'python {sys.version.split()[0]}; {os.cpu_count()} cores; script: {SOURCE!r}')

    def latency(fn, n=60):
        times = []
        for _ in range(n):
            times.append(fn())
            time.sleep(0.02)  # one at a time, with the runner's background work settled
        times.sort()
        return times[len(times) // 2] * 1000, times[int(len(times) * 0.9)] * 1000

    # The subprocesses first, while no sub-interpreter exists: preexec_fn
    # makes subprocess fork(), which is unsafe once sub-interpreters exist
    # (CPython's child hangs or aborts; the core warns).
    lat_sp = latency(one_subprocess, n=30)
    n_sp = max(100, args.scripts // 4)
    with ThreadPoolExecutor(2) as ex:
        t = time.perf_counter()
        list(ex.map(one_subprocess, range(n_sp)))
        sp_rate = n_sp / (time.perf_counter() - t)

    sb = sandbox.Sandbox(workers=2, spares=8)
    time.sleep(1.0)  # warm: spares made
    for _ in range(20):
        sb.run(SOURCE)

    def sandboxed():
        t = time.perf_counter()
        r = sb.run(SOURCE, timeout=5)
        assert r.ok, r
        return time.perf_counter() - t

    lat_sb = latency(sandboxed)
    print(f"\n{'one script, warm':40} {'p50 ms':>8} {'p90 ms':>8}")
    print(f"{'sandbox, interpreter isolation':40} {lat_sb[0]:8.2f} {lat_sb[1]:8.2f}")
    print(f"{'subprocess python -I (rlimits)':40} {lat_sp[0]:8.2f} {lat_sp[1]:8.2f}")

    t = time.perf_counter()
    results = list(sb.map([SOURCE] * args.scripts, timeout=5))
    sb_rate = args.scripts / (time.perf_counter() - t)
    assert all(r.ok for r in results)
    print(f"\n{'throughput, 2 at a time':40} {'scripts/s':>10}")
    print(f"{'sandbox, interpreter isolation':40} {sb_rate:10.0f}   ({args.scripts} scripts)")
    print(f"{'subprocess python -I (rlimits)':40} {sp_rate:10.0f}   ({n_sp} scripts)")

    before = rss_mib()
    for start in range(0, args.steady, 500):
        list(sb.map([SOURCE] * min(500, args.steady - start), timeout=5))
    time.sleep(1.0)  # closes finish
    after = rss_mib()
    sb.close()
    print(f'\nhost RSS over {args.steady} more scripts: {before:.1f} -> {after:.1f} MiB '
          f'({(after - before) * 1024 / args.steady:.1f} KiB per script)')

    print('\ntargets (interpreter isolation):')
    for ok, text in [
            (lat_sb[0] < 1.0, f'p50 latency {lat_sb[0]:.2f} ms (target < 1 ms; subprocess '
                              f'{lat_sp[0]:.1f} ms)'),
            (sb_rate >= 2 * sp_rate, f'throughput {sb_rate / sp_rate:.2f}x subprocess '
                                     f'(target >= 2x)')]:
        print(f"  {'PASS' if ok else 'MISS'}  {text}")
    print('  ----  host memory: CPython keeps ~1.7-2.7 MiB per interpreter made and closed '
          '(see bench_server.py --recycling), so a host that runs many scripts must be '
          'recycled; process isolation will do that')


if __name__ == '__main__':
    main()
