"""The article's confound: a loop at module level vs the same loop in a
function.

At module level every variable is a global: a dict lookup and store on each
use (LOAD_NAME/STORE_NAME). In a function they are fast locals. The loop
itself is the same; module level is about 2x slower. The article ran the
module-level loop in its subinterpreters and the function in its threads, so
its "subinterpreters vs threads" figure mixed two effects.

Part 1 times each form, one run at a time, in the main interpreter (exec of
the source in a fresh namespace) and in a subinterpreter (interp.exec of the
same source text). Part 2 runs N copies in parallel: the article's comparison
(module level in N subinterpreters vs the function in N threads) beside the
fair one (the function in both).
"""

import argparse
import sys
import threading

import _common

MODULE_SRC = """\
total = 0
for i in range({n}):
    total += i
"""

FUNCTION_SRC = """\
def spin(n):
    total = 0
    for i in range(n):
        total += i
    return total
total = spin({n})
"""


def spin(n):
    total = 0
    for i in range(n):
        total += i
    return total


def run_in_main(code):
    ns = {"__name__": "__bench__", "__builtins__": __builtins__}
    exec(code, ns)
    return ns["total"]


def run_parallel(targets):
    threads = [threading.Thread(target=fn) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def parse_args(argv):
    usable, _ = _common.cores()
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iterations", type=int, default=5_000_000,
                   help="loop iterations per run (default 5,000,000)")
    p.add_argument("-n", type=int, default=usable,
                   help="parallel runs in part 2 (default: usable cores, %d)"
                        % usable)
    p.add_argument("--repeat", type=int, default=7,
                   help="timed rounds after one warm-up round (default 7)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 300,000 iterations, 1 round")
    args = p.parse_args(argv)
    if args.quick:
        args.iterations, args.repeat = 300_000, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    subinterp = _common.import_subinterp()
    n, count = args.iterations, args.n
    usable, _ = _common.cores()
    _common.header(
        "module-level loop vs the same loop in a function",
        loop="for i in range(%d): total += i" % n,
        rounds="1 warm-up + %d timed, median reported" % args.repeat,
        subinterp=_common.describe_subinterp(subinterp))

    module_src = MODULE_SRC.format(n=n)
    function_src = FUNCTION_SRC.format(n=n)
    module_code = compile(module_src, "<module-level>", "exec")
    function_code = compile(function_src, "<function>", "exec")
    expected = n * (n - 1) // 2

    solo = subinterp.create()
    par = [subinterp.create() for _ in range(count)]

    def check(value):
        if value != expected:
            raise AssertionError("loop gave %r, expected %r" % (
                value, expected))

    single = [
        ("main interpreter, function", lambda: check(run_in_main(
            function_code))),
        ("main interpreter, module level", lambda: check(run_in_main(
            module_code))),
        ("subinterpreter, function", lambda: solo.exec(function_src)),
        ("subinterpreter, module level", lambda: solo.exec(module_src)),
    ]
    parallel = [
        ("%d threads, function (one GIL)" % count,
         lambda: run_parallel([lambda: check(spin(n))] * count)),
        ("%d subinterps, module level (article)" % count,
         lambda: run_parallel([(lambda i=i: i.exec(module_src))
                               for i in par])),
        ("%d subinterps, function (fair)" % count,
         lambda: run_parallel([(lambda i=i: i.exec(function_src))
                               for i in par])),
    ]
    samples = {name: [] for name, _ in single + parallel}
    try:
        for rnd in range(1 + args.repeat):
            for name, fn in single + parallel:
                secs, _ = _common.timed(fn)
                if rnd > 0:
                    samples[name].append(secs)
    finally:
        for interp in [solo] + par:
            interp.close()
    st = {name: _common.Stats(s) for name, s in samples.items()}

    def ratio(a, b):
        """Median of per-round ratios time(a)/time(b)."""
        return _common.paired(samples[a], samples[b])

    print("\npart 1: one run at a time")
    fn_main, mod_main, fn_sub, mod_sub = (name for name, _ in single)
    _common.table([(name, "%.3f s" % st[name].median,
                    "%.3f-%.3f s" % (st[name].min, st[name].max),
                    _common.fmt_ratio(ratio(name, fn_main)))
                   for name, _ in single],
                  ("where, form", "wall (median)", "min-max",
                   "time vs main+function"))
    penalty_main = ratio(mod_main, fn_main)
    penalty_sub = ratio(mod_sub, fn_sub)
    sub_vs_main = ratio(fn_sub, fn_main)
    print("module level / function, main interpreter: %s" %
          _common.fmt_ratio(penalty_main))
    print("module level / function, subinterpreter:   %s" %
          _common.fmt_ratio(penalty_sub))

    print("\npart 2: %d runs in parallel" % count)
    thr, sub_mod, sub_fn = (name for name, _ in parallel)
    _common.table([(name, "%.3f s" % st[name].median,
                    "%.3f-%.3f s" % (st[name].min, st[name].max),
                    _common.fmt_ratio(ratio(thr, name)))
                   for name, _ in parallel],
                  ("mode", "wall (median)", "min-max", "speedup vs threads"))
    skewed = ratio(thr, sub_mod).median
    fair = ratio(thr, sub_fn).median
    print("%-58s %.2fx" % ("article's comparison (module level in subinterps"
                           " vs threads):", skewed))
    print("%-58s %.2fx" % ("fair comparison (function in both):", fair))
    print("the article's method understates the subinterpreter gain by "
          "%.2fx here" % (fair / skewed))
    print("(ratios: median, min-max of per-round ratios; each round runs "
          "every form once)")

    t = _common.Targets()
    t.at_least("confound, main interpreter: module level / function",
               penalty_main.median, 1.5)
    t.at_least("confound, subinterpreter: module level / function",
               penalty_sub.median, 1.5)
    t.at_most("subinterpreter function time / main interpreter function time",
              sub_vs_main.median, 1.10)
    t.at_least("fair parallel speedup, subinterps vs threads", fair,
               0.95 * min(count, usable),
               " [0.95 x min(N=%d, cores=%d)]" % (count, usable))
    t.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
