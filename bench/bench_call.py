"""Cost of one call into another interpreter, and parallel speedup.

Part 1, round trip from the main thread, per call:
  - subinterp  interp.call(trivial): a function defined in this script's
    __main__, so subinterp ships it by value; returns its result.
  - subinterp  interp.call(operator.pos, 1): an importable function, sent
    by reference, with an argument; returns 1.
  - subinterp  interp.exec("pass").
  - CPython 3.13  _interpreters.call(id, trivial). Note: in 3.13.0 this
    takes no arguments for the function and does not return its result
    (it returns None, or an exception snapshot), so it does less work than
    interp.call. This is the baseline for the 4x target.
  - CPython  _interpreters.exec(id, "pass") on 3.13,
    _xxsubinterpreters.run_string(id, "pass") on 3.12. CPython 3.12 has no
    call at all, so on 3.12 this is the only baseline, and it is not a call:
    there is no target on 3.12, the ratio is printed for information.
Each round makes K calls in a loop with each form (the order flips every
round); the median per-call time over the rounds is reported, and ratios
are medians of per-round ratios.

Part 2: T CPU-bound tasks (a pure-Python loop in a function) on T
interpreters, one thread each calling interp.call, vs the same tasks run one
after another in the main interpreter. For reference: the tasks one after
another through interp.call in one subinterpreter, and in T processes (what
the machine itself allows).
"""

import argparse
import multiprocessing
import operator
import sys
import threading

import _common


def trivial():
    return 1


def spin(n):
    total = 0
    for i in range(n):
        total += i
    return total


def per_call(fn, calls):
    def loop():
        for _ in range(calls):
            fn()
    secs, _ = _common.timed(loop)
    return secs / calls


def call_forms(sub_interp, cpy_name, cpy, cpy_id):
    """[(label, zero-arg callable, is_baseline_for_target)]."""
    forms = [
        ("subinterp  interp.call(trivial)",
         lambda: sub_interp.call(trivial)),
        ("subinterp  interp.call(operator.pos, 1)",
         lambda: sub_interp.call(operator.pos, 1)),
        ("subinterp  interp.exec('pass')",
         lambda: sub_interp.exec("pass")),
    ]
    if cpy_name == "_interpreters":
        def cpy_call():
            if cpy.call(cpy_id, trivial) is not None:
                raise RuntimeError("_interpreters.call failed")

        def cpy_exec():
            if cpy.exec(cpy_id, "pass") is not None:
                raise RuntimeError("_interpreters.exec failed")
        forms += [
            ("CPython    _interpreters.call(id, trivial)", cpy_call),
            ("CPython    _interpreters.exec(id, 'pass')", cpy_exec),
        ]
    else:
        forms.append(("CPython    _xxsubinterpreters.run_string(id, 'pass')",
                      lambda: cpy.run_string(cpy_id, "pass")))
    return forms


def bench_round_trip(args, subinterp, t):
    cpy_name, cpy = _common.cpython_private()
    sub_interp = subinterp.create()
    cpy_id = cpy.create()
    try:
        got = (sub_interp.call(trivial), sub_interp.call(operator.pos, 1))
        if got != (1, 1):
            print("PROBLEM: interp.call returned %r, expected (1, 1)"
                  % (got,))
        forms = call_forms(sub_interp, cpy_name, cpy, cpy_id)
        samples = {label: [] for label, _ in forms}
        for rnd in range(1 + args.rounds):
            order = forms if rnd % 2 else forms[::-1]
            for label, fn in order:
                secs = per_call(fn, args.calls)
                if rnd > 0:
                    samples[label].append(secs)
    finally:
        sub_interp.close()
        cpy.destroy(cpy_id)
    stats = {label: _common.Stats(s) for label, s in samples.items()}
    print("\npart 1: round trip from the main thread, per call "
          "(%d calls x %d rounds)" % (args.calls, args.rounds))
    base = forms[0][0]
    _common.table([(label, "%.2f us" % (st.median * 1e6),
                    "%.2f-%.2f us" % (st.min * 1e6, st.max * 1e6),
                    _common.fmt_ratio(_common.paired(samples[label],
                                                     samples[base])))
                   for label, st in stats.items()],
                  ("form", "median", "min-max", "time vs interp.call"))
    print("(ratios: median, min-max of per-round ratios)")
    ratio = _common.paired(samples[forms[3][0]], samples[base]).median
    if cpy_name == "_interpreters":
        t.at_least("call round trip, _interpreters.call / interp.call "
                   "(speedup)", ratio, 4.0)
    else:
        t.na("call round trip vs CPython",
             "3.12 has no call; run_string('pass') / interp.call(trivial) "
             "= %.2fx (information only)" % ratio)


def run_parallel(interps, n):
    results = [None] * len(interps)

    def runner(k):
        results[k] = interps[k].call(spin, n)

    threads = [threading.Thread(target=runner, args=(k,))
               for k in range(len(interps))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results


def bench_parallel(args, subinterp, t):
    usable, _ = _common.cores()
    n, tasks = args.iterations, args.tasks
    expected = [spin(n)] * tasks
    # The process pool is the machine's own yardstick: if it cannot reach
    # ~2x either, the machine (not subinterp) is what limits. Started
    # before any interpreter exists, as forking then is safest.
    pool = multiprocessing.Pool(tasks)
    interps = [subinterp.create() for _ in range(tasks)]
    modes = [
        ("sequential, main interpreter",
         lambda: [spin(n) for _ in range(tasks)]),
        ("sequential, interp.call in 1 subinterp",
         lambda: [interps[0].call(spin, n) for _ in range(tasks)]),
        ("parallel, %d subinterps x 1 thread each" % tasks,
         lambda: run_parallel(interps, n)),
        ("parallel, %d processes (reference)" % tasks,
         lambda: pool.map(spin, [n] * tasks, chunksize=1)),
    ]
    samples = {label: [] for label, _ in modes}
    busy = {label: [] for label, _ in modes}
    try:
        for rnd in range(1 + args.par_rounds):
            for label, fn in modes:
                secs, result, cores_busy = _common.timed_busy(fn)
                if result != expected:
                    print("PROBLEM: %s returned %r, expected %r" % (
                        label, result, expected))
                if rnd > 0:
                    samples[label].append(secs)
                    if cores_busy is not None:
                        busy[label].append(cores_busy)
    finally:
        for i in interps:
            i.close()
        pool.close()
        pool.join()
    seq = samples[modes[0][0]]
    speedups = {label: _common.paired(seq, s) for label, s in samples.items()}
    print("\npart 2: %d x spin(%d) (%d rounds)" % (tasks, n, args.par_rounds))
    _common.table([(label, "%.3f s" % st.median,
                    "%.3f-%.3f s" % (st.min, st.max),
                    _common.fmt_ratio(speedups[label]),
                    "%.2f" % _common.Stats(busy[label]).median
                    if busy[label] else "-")
                   for label, st in ((label, _common.Stats(s))
                                     for label, s in samples.items())],
                  ("mode", "wall (median)", "min-max",
                   "speedup vs sequential", "cores busy"))
    print("(speedups: median, min-max of per-round ratios; cores busy: the "
          "machine's\n average non-idle cores during the run, /proc/stat)")
    t.at_least("parallel speedup, %d tasks on %d subinterps vs sequential"
               % (tasks, tasks), speedups[modes[2][0]].median,
               0.95 * min(tasks, usable),
               " [0.95 x min(tasks=%d, cores=%d); processes: %.2fx]"
               % (tasks, usable, speedups[modes[3][0]].median))
    t.at_least("parallel subinterps speed relative to processes",
               _common.paired(samples[modes[3][0]],
                              samples[modes[2][0]]).median, 0.90)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--calls", type=int, default=2000,
                   help="calls per round in part 1 (default 2000)")
    p.add_argument("--rounds", type=int, default=15,
                   help="timed rounds in part 1, after one warm-up round "
                        "(default 15)")
    p.add_argument("--tasks", type=int, default=2,
                   help="CPU-bound tasks and interpreters in part 2 "
                        "(default 2)")
    p.add_argument("--iterations", type=int, default=5_000_000,
                   help="loop iterations per task in part 2 "
                        "(default 5,000,000: about 0.4 s)")
    p.add_argument("--par-rounds", type=int, default=7,
                   help="timed rounds in part 2, after one warm-up round "
                        "(default 7)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 200 calls x 3 rounds; 300,000 "
                        "iterations x 1 round")
    args = p.parse_args(argv)
    if args.quick:
        args.calls, args.rounds = 200, 3
        args.iterations, args.par_rounds = 300_000, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    subinterp = _common.import_subinterp()
    cpy_name, _ = _common.cpython_private()
    _common.header("calls into an interpreter: subinterp vs CPython's %s"
                   % cpy_name,
                   subinterp=_common.describe_subinterp(subinterp))
    t = _common.Targets()
    bench_round_trip(args, subinterp, t)
    bench_parallel(args, subinterp, t)
    t.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
