"""Cost of an interpreter's life: create+close time, and memory per idle
interpreter, for subinterp beside CPython's private module in the same run
(_xxsubinterpreters on 3.12, _interpreters on 3.13; both make isolated
interpreters with their own GIL by default, as subinterp.create() does).

Time: a few warm-up cycles, then create+close cycles alternating between the
two implementations (order swapped each cycle), median per cycle; the ratio
is the median of the per-cycle-pair ratios.

Memory: each measurement runs in a fresh child process (so neither side
inherits the other's freed or leaked memory). The child imports both
modules, does one warm-up create+close, reads RSS from /proc/self/statm,
creates K interpreters, reads RSS again, and so on. Reported per
interpreter: idle (just created), after one trivial exec in each, and what
stays resident after all K are closed.
"""

import argparse
import json
import os
import subprocess
import sys

import _common

STAGES = ("idle", "after exec('pass')", "kept after close")


class Impl:
    """create/exec/close for one implementation, behind one interface."""

    def __init__(self, kind):
        self.kind = kind
        if kind == "subinterp":
            self.mod = _common.import_subinterp()
            self.name = "subinterp"
        else:
            self.name, self.mod = _common.cpython_private()

    def create(self):
        return self.mod.create()

    def exec(self, handle, code):
        if self.kind == "subinterp":
            handle.exec(code)
        elif self.name == "_interpreters":
            err = self.mod.exec(handle, code)
            if err is not None:
                raise RuntimeError(err)
        else:
            self.mod.run_string(handle, code)

    def close(self, handle):
        if self.kind == "subinterp":
            handle.close()
        else:
            self.mod.destroy(handle)

    def cycle(self):
        self.close(self.create())


def child_memory(kind, count):
    """In a fresh process: RSS deltas per interpreter, as JSON on stdout."""
    impls = {k: Impl(k) for k in ("subinterp", "cpython")}  # import both
    impl = impls[kind]
    impl.cycle()
    base = _common.rss_bytes()
    handles = [impl.create() for _ in range(count)]
    idle = _common.rss_bytes()
    for h in handles:
        impl.exec(h, "pass")
    used = _common.rss_bytes()
    for h in handles:
        impl.close(h)
    del handles
    after = _common.rss_bytes()
    json.dump({"idle": (idle - base) / count,
               "after exec('pass')": (used - base) / count,
               "kept after close": (after - base) / count}, sys.stdout)
    return 0


def measure_memory(kind, count, runs):
    results = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child-memory",
             kind, "--count", str(count)],
            check=True, stdout=subprocess.PIPE, text=True).stdout
        results.append(json.loads(out))
    return {stage: _common.Stats([r[stage] for r in results])
            for stage in STAGES}


def measure_time(impls, cycles, warmup):
    for impl in impls:
        for _ in range(warmup):
            impl.cycle()
    samples = {impl.kind: [] for impl in impls}
    for k in range(cycles):
        order = impls if k % 2 == 0 else impls[::-1]
        for impl in order:
            secs, _ = _common.timed(impl.cycle)
            samples[impl.kind].append(secs)
    return samples


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cycles", type=int, default=30,
                   help="timed create+close cycles per implementation "
                        "(default 30)")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed cycles first (default 3)")
    p.add_argument("--count", type=int, default=20,
                   help="interpreters alive at once for memory (default 20)")
    p.add_argument("--memory-runs", type=int, default=3,
                   help="child processes per implementation for memory "
                        "(default 3)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 5 cycles, 5 interpreters, 1 child")
    p.add_argument("--child-memory", choices=("subinterp", "cpython"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.cycles, args.warmup, args.count, args.memory_runs = 5, 1, 5, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child_memory:
        return child_memory(args.child_memory, args.count)
    impls = [Impl("subinterp"), Impl("cpython")]
    sub, cpy = impls
    _common.header(
        "interpreter lifecycle: subinterp vs CPython's %s" % cpy.name,
        time="%d warm-up + %d timed create+close cycles each, alternating"
             % (args.warmup, args.cycles),
        memory="%d interpreters at once, in %d fresh child process(es) each"
               % (args.count, args.memory_runs),
        subinterp=_common.describe_subinterp(sub.mod))

    samples = measure_time(impls, args.cycles, args.warmup)
    print("\ncreate + close, one cycle:")
    rows = [(impl.name, _common.Stats(samples[impl.kind]).fmt("ms"))
            for impl in impls]
    _common.table(rows, ("implementation", "median (min, max, n)"))
    paired = _common.paired(samples["subinterp"], samples["cpython"])
    time_ratio = paired.median
    print("subinterp / %s, per cycle pair: %s" % (
        cpy.name, _common.fmt_ratio(paired)))

    mem = {impl.kind: measure_memory(impl.kind, args.count, args.memory_runs)
           for impl in impls}
    mib = 1024.0 * 1024.0
    print("\nresident memory per interpreter (MiB, median of child runs):")
    rows = []
    for stage in STAGES:
        s, c = mem["subinterp"][stage].median, mem["cpython"][stage].median
        rows.append((stage, "%.2f" % (s / mib), "%.2f" % (c / mib),
                     "%.2fx" % (s / c) if c > 0 else "-"))
    _common.table(rows, ("stage", "subinterp", cpy.name,
                         "subinterp/%s" % cpy.name))
    mem_ratio = (mem["subinterp"]["idle"].median
                 / mem["cpython"]["idle"].median)

    t = _common.Targets()
    t.at_most("create+close time, subinterp/%s" % cpy.name, time_ratio, 1.10)
    t.at_most("RSS per idle interpreter, subinterp/%s" % cpy.name,
              mem_ratio, 1.10)
    t.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
