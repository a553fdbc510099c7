"""The same CPU-bound Python function N times: sequential, threads,
subinterpreters (subinterp) and processes.

This is the claim subinterpreters exist for: with one GIL per interpreter,
pure-Python CPU-bound work runs in parallel on every core inside one process,
where threads of one interpreter take turns on its GIL.

Unlike the article's benchmark, every mode runs the very same function
(its loop is in a function body, so it uses fast locals), so the only
difference between the rows is how the runs are spread over cores. Only the
runs are timed; creating interpreters and starting the process pool are
measured and reported separately.
"""

import argparse
import multiprocessing
import sys
import threading

import _common


def spin(n):
    """The CPU-bound work: a pure-Python loop, in a function body."""
    total = 0
    for i in range(n):
        total += i
    return total


def _noop(x):
    return x


def run_sequential(n, count):
    return [spin(n) for _ in range(count)]


def _in_threads(targets):
    """Start one thread per zero-argument callable; join; return results."""
    results = [None] * len(targets)

    def runner(k, fn):
        results[k] = fn()

    threads = [threading.Thread(target=runner, args=(k, fn))
               for k, fn in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def run_threads(n, count):
    return _in_threads([lambda: spin(n)] * count)


def run_subinterp_call(interps, n):
    """One thread per interpreter, each calling interp.call(spin, n)."""
    return _in_threads([(lambda i=i: i.call(spin, n)) for i in interps])


def run_subinterp_call_in_thread(interps, n):
    """interp.call_in_thread(spin, n) on each; the result is discarded."""
    threads = [i.call_in_thread(spin, n) for i in interps]
    for t in threads:
        t.join()
    return None


def run_processes(pool, n, count):
    return pool.map(spin, [n] * count, chunksize=1)


def parse_args(argv):
    usable, _ = _common.cores()
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", type=int, default=usable,
                   help="runs of the function, and threads/interpreters/"
                        "processes (default: usable cores, %d)" % usable)
    p.add_argument("--iterations", type=int, default=5_000_000,
                   help="loop iterations per run (default 5,000,000: about "
                        "0.4 s on the 3.12/3.13 pyenv builds here)")
    p.add_argument("--repeat", type=int, default=7,
                   help="timed rounds per mode, after one warm-up round "
                        "(default 7)")
    p.add_argument("--start-method", default=None,
                   choices=multiprocessing.get_all_start_methods(),
                   help="multiprocessing start method (default: the "
                        "platform's, %s)" % multiprocessing.get_start_method())
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 300,000 iterations, 1 round")
    args = p.parse_args(argv)
    if args.quick:
        args.iterations, args.repeat = 300_000, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    subinterp = _common.import_subinterp()
    count, n = args.n, args.iterations
    usable, _ = _common.cores()
    ctx = multiprocessing.get_context(args.start_method)
    _common.header(
        "demo: %d runs of spin(%d), a pure-Python loop in a function" % (
            count, n),
        runs="%d (option -n); rounds: 1 warm-up + %d timed, median "
             "reported" % (count, args.repeat),
        procs="multiprocessing start method %r" % ctx.get_start_method(),
        subinterp=_common.describe_subinterp(subinterp))
    expected = [spin(n)] * count

    # The pool first: forking after interpreters (and their threads) exist is
    # asking for trouble, and a real program would start its pool early too.
    startup, pool = _common.timed(lambda: _started_pool(ctx, count))
    creates = [_common.timed(subinterp.create) for _ in range(count)]
    interps = [interp for _, interp in creates]

    modes = [
        ("sequential (1 thread)", lambda: run_sequential(n, count)),
        ("threads (%d, one GIL)" % count, lambda: run_threads(n, count)),
        ("subinterp: %d threads x interp.call" % count,
         lambda: run_subinterp_call(interps, n)),
        ("subinterp: %d x call_in_thread" % count,
         lambda: run_subinterp_call_in_thread(interps, n)),
        ("processes (Pool(%d).map)" % count,
         lambda: run_processes(pool, n, count)),
    ]
    samples = {name: [] for name, _ in modes}
    busy = {name: [] for name, _ in modes}
    problems = []
    try:
        for rnd in range(1 + args.repeat):
            for name, fn in modes:
                secs, result, cores_busy = _common.timed_busy(fn)
                if result is not None and result != expected:
                    problems.append("%s returned %r, expected %r" % (
                        name, result, expected))
                if rnd > 0:
                    samples[name].append(secs)
                    if cores_busy is not None:
                        busy[name].append(cores_busy)
    finally:
        closed, _ = _common.timed(lambda: [i.close() for i in interps])
        pool.close()
        pool.join()

    stats = {name: _common.Stats(s) for name, s in samples.items()}
    seq_name, thr_name = modes[0][0], modes[1][0]
    vs_seq = {name: _common.paired(samples[seq_name], samples[name])
              for name in samples}
    vs_thr = {name: _common.paired(samples[thr_name], samples[name])
              for name in samples}
    rows = [(name, "%.3f s" % st.median,
             "%.3f-%.3f s" % (st.min, st.max),
             _common.fmt_ratio(vs_seq[name]), _common.fmt_ratio(vs_thr[name]),
             "%.2f" % _common.Stats(busy[name]).median if busy[name] else "-")
            for name, st in stats.items()]
    print()
    _common.table(rows, ("mode", "wall (median)", "min-max",
                         "speedup vs sequential", "vs threads", "cores busy"))
    print("(speedups: median, min-max of per-round ratios; each round runs "
          "every mode once.\n cores busy: the machine's average non-idle "
          "cores during the run, /proc/stat)")
    print()
    print("one run of spin(%d) alone: %.3f s (sequential median / %d)" % (
        n, stats[seq_name].median / count, count))
    print("set-up, not in the times above:")
    print("  subinterp.create() x %d : %8.1f ms (first %.1f ms, then %s)"
          % (count, sum(c for c, _ in creates) * 1e3, creates[0][0] * 1e3,
             ", ".join("%.1f" % (c * 1e3) for c, _ in creates[1:]) or "-"))
    print("  interp.close()     x %d : %8.1f ms (%.1f ms each)" % (
        count, closed * 1e3, closed * 1e3 / count))
    print("  process pool start (%d) : %8.1f ms (Pool() + one no-op map)" % (
        count, startup * 1e3))
    for line in problems:
        print("PROBLEM: " + line)

    ideal = min(count, usable)
    target = 0.95 * ideal
    t = _common.Targets()
    procs_name = modes[4][0]
    for name, _ in modes[2:4]:
        t.at_least("%s speedup vs sequential" % name,
                   vs_seq[name].median, target,
                   " [0.95 x min(N=%d, cores=%d)]" % (count, usable))
    # What the machine allows: a virtual machine's cores may not give 2x
    # to anything; processes are the yardstick that does not depend on us.
    for name, _ in modes[2:4]:
        t.at_least("%s speed relative to processes" % name,
                   _common.paired(samples[procs_name], samples[name]).median,
                   0.90, " [processes: %.2fx vs sequential]"
                   % vs_seq[procs_name].median)
    t.print()
    return 0


def _started_pool(ctx, count):
    pool = ctx.Pool(count)
    pool.map(_noop, range(count), chunksize=1)
    return pool


if __name__ == "__main__":
    sys.exit(main())
