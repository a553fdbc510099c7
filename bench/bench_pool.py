"""subinterp.futures.InterpreterPoolExecutor beside the standard executors.

Every executor has 2 workers, started and warm before anything is timed
(every worker has run a task). The process pool uses this Python's
default multiprocessing start method, printed in the header; it is started
before any interpreter exists, since CPython 3.12/3.13 cannot fork a process
that has sub-interpreters. Its workers are told to die with this process
(an initializer that runs once, untimed), so that a watchdog's exit leaves
none behind.

Part 1, round trip from the main thread, per call: `ex.submit(identity,
1).result()` in a loop, identity defined in this script's __main__ (sent by
value to the interpreters, by reference to the processes), on
InterpreterPoolExecutor(2), ThreadPoolExecutor(2) and
ProcessPoolExecutor(2); and, for information, the interpreter pool with a
function sent by reference, operator.pos. Every result is checked.

Part 2, map over N tiny items (default 100,000): `sum(ex.map(inc, range(N),
chunksize=c))`, inc(x) = x + 1, the sum checked. Chunk sizes 100, 1,000,
5,000 and 20,000 for the interpreter and process pools, each pool compared
at its best (lowest median); chunk size 1, and ThreadPoolExecutor.map (which
has no chunks), submit one task per item and are measured on fewer items
(default 10,000), their time scaled to N and marked as such; they never
count as a pool's best.

Part 3, T CPU-bound tasks (default 8) of a pure-Python loop calibrated at
start to take about 0.25 s in this Python: one after another in the main
thread, on InterpreterPoolExecutor(2), on ProcessPoolExecutor(2). The
machine's busy cores during each run are shown (/proc/stat).

Part 4, memory added by a pool of 2 idle, warm workers, each pool in a
fresh child process of its own (so nothing from parts 1-3 counts): for the
interpreter pool, this process's resident set before and after; for the
process pool, the parent's increase plus the resident set of every process
it started (its 2 workers, and multiprocessing's resource tracker where one
starts). VmRSS counts shared pages in every process, so a forked worker
counts the parent's pages again; the proportional set size (PSS, pages
shared by k processes count 1/k in each) is shown beside it for that
reason. The default start method, and 'spawn' for information. Also for
information, the interpreter pool in a process that has already created
(and closed) one interpreter: the first interpreter of a process sets up the
main interpreter once (on 3.12, the imports of DESIGN.md's workaround), and
that is left out there.

Rounds: one untimed warm-up round, then timed rounds, each running every
form once (the order flips every round); figures are medians with min-max,
ratios the median of per-round ratios. A wrong result raises WrongResult; a
part that hangs is stopped by a watchdog (faulthandler) that prints every
thread's traceback and exits.
"""

import argparse
import json
import multiprocessing
import operator
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import (ProcessPoolExecutor, ThreadPoolExecutor,
                                wait)

import _common

WORKERS = 2
PART_TIMEOUT = 600.0  # seconds a part may take before the watchdog fires
CHILD_TIMEOUT = 120.0  # seconds for one memory child process
CHUNKSIZES = (100, 1000, 5000, 20000)


class WrongResult(RuntimeError):
    """A measured path gave a wrong result: its figure would be meaningless."""


# --- the work (defined in __main__: sent by value to interpreters) -----------

def identity(x):
    return x


def inc(x):
    return x + 1


def spin(n):
    total = 0
    for i in range(n):
        total += i
    return total


def worker_id(delay):
    # Which worker ran this (process and thread), after holding it a while
    # so that concurrent calls land on different workers.
    import os
    import threading
    import time
    time.sleep(delay)
    return os.getpid(), threading.get_ident()


def die_with_parent():
    # Process pool initializer: the worker gets SIGKILL when the process
    # that started it ends (Linux prctl PR_SET_PDEATHSIG), so that a
    # watchdog's exit leaves no worker behind holding the output pipe.
    try:
        import ctypes
        import signal
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))
    except (OSError, AttributeError):
        pass


def warm_up(ex, label):
    """Start every worker of `ex` and have each run a task."""
    for delay in (0.05, 0.2, 0.5, 1.0):
        futures = [ex.submit(worker_id, delay) for _ in range(WORKERS)]
        done, _ = wait(futures, timeout=60)
        if len(done) != WORKERS:
            raise RuntimeError("%s: warm-up tasks did not finish" % label)
        if len({f.result() for f in futures}) == WORKERS:
            return
    raise RuntimeError("%s: could not get %d workers to run a task each"
                       % (label, WORKERS))


class Watchdog:
    """Dumps every thread's traceback to stderr and exits the process if
    the block takes longer than `seconds`: a hang means a broken path, not
    a figure. (faulthandler's own thread, so it fires whatever the main
    thread is blocked in.)"""

    def __init__(self, seconds=PART_TIMEOUT):
        self.seconds = seconds

    def __enter__(self):
        # Imported here: faulthandler cannot be imported in a
        # sub-interpreter, and the pools' workers may import this module.
        import faulthandler
        faulthandler.dump_traceback_later(self.seconds, exit=True)
        return self

    def __exit__(self, *exc):
        import faulthandler
        faulthandler.cancel_dump_traceback_later()


def _fmt_count(n):
    return "{:,}".format(int(n))


def _us(secs):
    return "%.1f us" % (secs * 1e6)


# --- part 1: round trip ------------------------------------------------------

def round_trips(ex, fn, calls):
    """Seconds per `ex.submit(fn, 1).result()`, every result checked."""
    submit, bad = ex.submit, 0
    t0 = time.perf_counter()
    for _ in range(calls):
        if submit(fn, 1).result() != 1:
            bad += 1
    secs = time.perf_counter() - t0
    if bad:
        raise WrongResult("%r: %d of %d round trips returned a wrong result"
                          % (ex, bad, calls))
    return secs / calls


def bench_round_trip(args, pools, t):
    ipe, tpe, ppe = pools["ipe"], pools["tpe"], pools["ppe"]
    ipe_label = "InterpreterPoolExecutor  identity (by value)"
    pos_label = "InterpreterPoolExecutor  operator.pos (by reference)"
    tpe_label = "ThreadPoolExecutor       identity"
    ppe_label = "ProcessPoolExecutor      identity (%s)" % pools["method"]
    forms = [
        (ipe_label, lambda: round_trips(ipe, identity, args.calls)),
        (pos_label, lambda: round_trips(ipe, operator.pos, args.calls)),
        (tpe_label, lambda: round_trips(tpe, identity, args.calls)),
        (ppe_label, lambda: round_trips(ppe, identity, args.ppe_calls)),
    ]
    samples = {label: [] for label, _ in forms}
    for rnd in range(1 + args.rounds):
        order = forms if rnd % 2 else forms[::-1]
        for label, fn in order:
            secs = fn()
            if rnd > 0:
                samples[label].append(secs)
    print("\npart 1: round trip of ex.submit(fn, 1).result(), per call "
          "(%s calls, processes %s, x %d rounds)"
          % (_fmt_count(args.calls), _fmt_count(args.ppe_calls), args.rounds))
    rows = []
    for label, s in samples.items():
        st = _common.Stats(s)
        rows.append((label, _us(st.median),
                     "%.1f-%.1f us" % (st.min * 1e6, st.max * 1e6),
                     _common.fmt_ratio(_common.paired(s, samples[ipe_label]))))
    _common.table(rows, ("form", "median", "min-max",
                         "time / interpreter pool"))
    print("(ratios: median, min-max of per-round ratios; above 1 means "
          "slower than the\n interpreter pool with identity)")
    t.at_least("pool round trip, ThreadPoolExecutor / InterpreterPoolExecutor "
               "(speedup)",
               _common.paired(samples[tpe_label], samples[ipe_label]).median,
               3.0)
    t.at_least("pool round trip, ProcessPoolExecutor / InterpreterPoolExecutor"
               " (speedup)",
               _common.paired(samples[ppe_label], samples[ipe_label]).median,
               20.0)


# --- part 2: map over many tiny items ----------------------------------------

def map_sum(ex, n, chunksize):
    """Seconds for sum(ex.map(inc, range(n), chunksize)), the sum checked."""
    t0 = time.perf_counter()
    total = sum(ex.map(inc, range(n), chunksize=chunksize))
    secs = time.perf_counter() - t0
    if total != n * (n + 1) // 2:
        raise WrongResult("%r.map(inc, range(%d), chunksize=%d): sum %r, "
                          "expected %r" % (ex, n, chunksize, total,
                                           n * (n + 1) // 2))
    return secs


def bench_map(args, pools, t):
    n, small = args.map_items, min(args.map_small, args.map_items)
    scale = n / small
    ipe, tpe, ppe = pools["ipe"], pools["tpe"], pools["ppe"]
    # (executor label, chunksize, items measured, callable)
    forms = []
    for name, ex in (("InterpreterPoolExecutor", ipe),
                     ("ProcessPoolExecutor", ppe)):
        forms.append((name, 1, small,
                      lambda ex=ex: map_sum(ex, small, 1) * scale))
        for c in CHUNKSIZES:
            forms.append((name, c, n,
                          lambda ex=ex, c=c: map_sum(ex, n, c)))
    forms.append(("ThreadPoolExecutor", None, small,
                  lambda: map_sum(tpe, small, 1) * scale))
    samples = {(name, c): [] for name, c, _, _ in forms}
    for rnd in range(1 + args.map_rounds):
        order = forms if rnd % 2 else forms[::-1]
        for name, c, _, fn in order:
            secs = fn()
            if rnd > 0:
                samples[(name, c)].append(secs)
    stats = {key: _common.Stats(s) for key, s in samples.items()}

    def best(name):
        # Among the chunk sizes measured on all n items.
        keys = [(name, c) for c in CHUNKSIZES]
        return min(keys, key=lambda k: stats[k].median)

    ipe_best, ppe_best = best("InterpreterPoolExecutor"), best(
        "ProcessPoolExecutor")
    print("\npart 2: sum(ex.map(inc, range(%s), chunksize=c)) (%d rounds; "
          "rows marked * ran\n %s items, their time scaled to %s)"
          % (_fmt_count(n), args.map_rounds, _fmt_count(small),
             _fmt_count(n)))
    rows = []
    for name, c, items, _ in forms:
        st = stats[(name, c)]
        mark = ("  <- best" if (name, c) in (ipe_best, ppe_best) else "")
        rows.append((name, "-" if c is None else _fmt_count(c),
                     "%.3f s%s" % (st.median, " *" if items != n else ""),
                     "%.3f-%.3f s" % (st.min, st.max),
                     "%s/s" % _fmt_count(n / st.median),
                     _common.fmt_ratio(_common.paired(
                         samples[(name, c)], samples[ipe_best])) + mark))
    _common.table(rows, ("executor", "chunksize", "time for %s"
                         % _fmt_count(n), "min-max", "items/s",
                         "time / interpreter pool's best"))
    print("(ThreadPoolExecutor.map ignores chunksize: one task per item)")
    ratio = _common.paired(samples[ppe_best], samples[ipe_best])
    print("best: interpreter pool chunksize %s, process pool chunksize %s: "
          "process / interpreter %s" % (_fmt_count(ipe_best[1]),
                                        _fmt_count(ppe_best[1]),
                                        _common.fmt_ratio(ratio)))
    t.at_least("map of %s tiny items, ProcessPoolExecutor / "
               "InterpreterPoolExecutor, each at its best chunksize "
               "(speedup)" % _fmt_count(n), ratio.median, 5.0,
               " [chunksize %s vs %s]" % (_fmt_count(ipe_best[1]),
                                          _fmt_count(ppe_best[1])))


# --- part 3: CPU-bound tasks -------------------------------------------------

def calibrate(seconds):
    """Loop iterations for spin() to take about `seconds` here, and the
    measured time of one such task."""
    n = 100_000
    while True:
        secs, _ = _common.timed(spin, n)
        if secs >= 0.05:
            break
        n *= 4
    rate = n / min(_common.timed(spin, n)[0] for _ in range(3))
    n = max(1, int(rate * seconds))
    return n, min(_common.timed(spin, n)[0] for _ in range(2))


def bench_cpu(args, pools, t):
    ipe, ppe = pools["ipe"], pools["ppe"]
    usable, _ = _common.cores()
    n, one = calibrate(args.task_seconds)
    tasks = args.tasks
    expected = [n * (n - 1) // 2] * tasks

    def on_pool(ex):
        futures = [ex.submit(spin, n) for _ in range(tasks)]
        return [f.result() for f in futures]

    seq_label = "sequential, main thread"
    ipe_label = "InterpreterPoolExecutor(%d)" % WORKERS
    ppe_label = "ProcessPoolExecutor(%d) (%s)" % (WORKERS, pools["method"])
    forms = [(seq_label, lambda: [spin(n) for _ in range(tasks)]),
             (ipe_label, lambda: on_pool(ipe)),
             (ppe_label, lambda: on_pool(ppe))]
    samples = {label: [] for label, _ in forms}
    busy = {label: [] for label, _ in forms}
    for rnd in range(1 + args.cpu_rounds):
        order = forms if rnd % 2 else forms[::-1]
        for label, fn in order:
            secs, result, cores_busy = _common.timed_busy(fn)
            if result != expected:
                raise WrongResult("%s: spin(%d) x %d returned %r, expected "
                                  "%r" % (label, n, tasks, result, expected))
            if rnd > 0:
                samples[label].append(secs)
                if cores_busy is not None:
                    busy[label].append(cores_busy)
    seq = samples[seq_label]
    print("\npart 3: %d tasks of spin(%s) (%.3f s each alone, calibrated) on "
          "%d workers (%d rounds)" % (tasks, _fmt_count(n), one, WORKERS,
                                      args.cpu_rounds))
    _common.table([(label, "%.3f s" % st.median,
                    "%.3f-%.3f s" % (st.min, st.max),
                    _common.fmt_ratio(_common.paired(seq, samples[label])),
                    "%.2f" % _common.Stats(busy[label]).median
                    if busy[label] else "-")
                   for label, st in ((label, _common.Stats(s))
                                     for label, s in samples.items())],
                  ("mode", "wall (median)", "min-max",
                   "speedup vs sequential", "cores busy"))
    print("(speedups: median, min-max of per-round ratios; cores busy: the "
          "machine's\n average non-idle cores during the run, /proc/stat)")
    target = 0.95 * min(WORKERS, usable)
    t.at_least("pool CPU-bound speedup, InterpreterPoolExecutor(%d) vs "
               "sequential" % WORKERS,
               _common.paired(seq, samples[ipe_label]).median, target,
               " [0.95 x min(workers=%d, cores=%d); processes: %.2fx]"
               % (WORKERS, usable,
                  _common.paired(seq, samples[ppe_label]).median))
    t.at_least("pool CPU-bound, ProcessPoolExecutor time / "
               "InterpreterPoolExecutor time",
               _common.paired(samples[ppe_label], samples[ipe_label]).median,
               1.0)


# --- part 4: memory of idle pools (each in a fresh child process) ------------

def _mem_kib(pid="self"):
    """(RSS, PSS) of a process in KiB, from /proc/<pid>/smaps_rollup (or
    status for RSS alone, PSS None, where there is no smaps_rollup)."""
    fields = {}
    try:
        with open("/proc/%s/smaps_rollup" % pid) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    fields[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    if "Rss" not in fields:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    fields["Rss"] = int(line.split()[1])
    return fields["Rss"], fields.get("Pss")


def _children(pid):
    """Pids of the live processes whose parent is `pid`."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # The fields after the command name, which is in parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(entry))
    return kids


def memory_child(kind, method):
    """Run in a fresh process: start a warm, idle pool, print its memory."""
    import gc
    if kind.startswith("ipe"):
        from subinterp.futures import InterpreterPoolExecutor
    if kind == "ipe-primed":
        # The first interpreter of a process also sets up the main
        # interpreter (on 3.12, imports what DESIGN.md's workaround needs):
        # done here beforehand, the figure is the pool's own.
        import subinterp
        subinterp.create().close()
    gc.collect()
    time.sleep(0.1)
    rss0, pss0 = _mem_kib()
    if kind.startswith("ipe"):
        ex = InterpreterPoolExecutor(WORKERS)
    else:
        ex = ProcessPoolExecutor(
            WORKERS, mp_context=multiprocessing.get_context(method))
    try:
        warm_up(ex, kind)
        gc.collect()
        time.sleep(0.3)  # let the workers settle into waiting
        rss1, pss1 = _mem_kib()
        kids = _children(os.getpid())
        kid_mem = [_mem_kib(pid) for pid in kids]
    finally:
        ex.shutdown(wait=True)
    added_rss = rss1 - rss0 + sum(r for r, _ in kid_mem)
    added_pss = (None if pss0 is None or any(p is None for _, p in kid_mem)
                 else pss1 - pss0 + sum(p for _, p in kid_mem))
    print(json.dumps({"rss": added_rss, "pss": added_pss,
                      "parent_rss": rss1 - rss0,
                      "children": len(kids),
                      "children_rss": [r for r, _ in kid_mem]}))
    return 0


def run_memory_child(subinterp, kind, method):
    env = dict(os.environ)
    # The child imports the same subinterp as this process.
    paths = [os.path.dirname(os.path.dirname(subinterp.__file__))]
    ext = sys.modules.get("subinterp._subinterp")
    if getattr(ext, "__file__", None):
        # <build>/python/subinterp/_subinterp...so: <build>/python goes first
        paths.insert(0, os.path.dirname(os.path.dirname(ext.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", kind,
           method]
    # A session of its own: on a timeout the whole process group goes,
    # workers included (they would otherwise keep the pipes open).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise RuntimeError("memory child %s %s did not finish in %.0f s"
                           % (kind, method, CHILD_TIMEOUT)) from None
    if proc.returncode != 0:
        raise RuntimeError("memory child %s %s failed (exit status %d):\n%s"
                           % (kind, method, proc.returncode, err))
    got = json.loads(out.strip().splitlines()[-1])
    want = 0 if kind.startswith("ipe") else WORKERS
    if got["children"] < want or got["rss"] <= 0:
        raise WrongResult("memory child %s %s: %d child processes, added "
                          "RSS %d KiB" % (kind, method, got["children"],
                                          got["rss"]))
    return got


def bench_memory(args, subinterp, method, t):
    ours = "InterpreterPoolExecutor(%d)" % WORKERS
    base = "ProcessPoolExecutor(%d), %s" % (WORKERS, method)
    forms = [(ours, "ipe", "-"),
             ("InterpreterPoolExecutor(%d), after a first interpreter"
              % WORKERS, "ipe-primed", "-"),
             (base, "ppe", method)]
    if method != "spawn" and not args.no_spawn:
        forms.append(("ProcessPoolExecutor(%d), spawn" % WORKERS, "ppe",
                      "spawn"))
    samples = {label: [] for label, _, _ in forms}
    for rnd in range(args.mem_repeats):
        order = forms if rnd % 2 == 0 else forms[::-1]
        for label, kind, meth in order:
            samples[label].append(run_memory_child(subinterp, kind, meth))
    print("\npart 4: memory added by a pool of %d idle, warm workers, each "
          "measured in a fresh\n process (%d runs each; medians)"
          % (WORKERS, args.mem_repeats))

    def med(label, key):
        values = [s[key] for s in samples[label]]
        if any(v is None for v in values):
            return None
        return _common.Stats(values).median

    def mib(kib):
        return "-" if kib is None else "%.1f MiB" % (kib / 1024)

    rows = []
    for label, kind, _ in forms:
        s = samples[label][0]
        rows.append((label, mib(med(label, "rss")), mib(med(label, "pss")),
                     mib(med(label, "parent_rss")),
                     "%d: %s" % (s["children"], ", ".join(
                         mib(r) for r in s["children_rss"]))
                     if s["children"] else "-"))
    _common.table(rows, ("pool", "added RSS", "added PSS", "of which parent",
                         "processes started: RSS (first run)"))
    print("(added RSS: the parent's increase plus the children's whole RSS, "
          "shared pages\n included; added PSS shares them out: the memory the "
          "pool really adds.\n 'after a first interpreter': one "
          "subinterp.create() + close() before the\n 'before' figure, so the "
          "first interpreter's one-off set-up of the process\n is left out: "
          "information only)")
    t.at_most("pool memory, InterpreterPoolExecutor / ProcessPoolExecutor "
              "(%s) added RSS" % method,
              med(ours, "rss") / med(base, "rss"), 0.5,
              "" if med(base, "pss") is None else
              " [PSS: %.3fx]" % (med(ours, "pss") / med(base, "pss")))


# --- main --------------------------------------------------------------------

def start_pools(subinterp, method):
    """The process pool first (forked while no interpreter exists), then the
    thread and interpreter pools, all warm."""
    from subinterp.futures import InterpreterPoolExecutor
    pools = {"method": method}
    pools["ppe"] = ProcessPoolExecutor(WORKERS, initializer=die_with_parent)
    warm_up(pools["ppe"], "ProcessPoolExecutor")
    pools["tpe"] = ThreadPoolExecutor(WORKERS)
    warm_up(pools["tpe"], "ThreadPoolExecutor")
    pools["ipe"] = InterpreterPoolExecutor(WORKERS)
    warm_up(pools["ipe"], "InterpreterPoolExecutor")
    return pools


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--calls", type=int, default=3000,
                   help="round trips per round in part 1 (default 3,000)")
    p.add_argument("--ppe-calls", type=int, default=300,
                   help="round trips per round through the process pool in "
                        "part 1 (default 300; it is much slower)")
    p.add_argument("--rounds", type=int, default=7,
                   help="timed rounds in part 1, after one warm-up round "
                        "(default 7)")
    p.add_argument("--map-items", type=int, default=100_000,
                   help="items mapped in part 2 (default 100,000)")
    p.add_argument("--map-small", type=int, default=10_000,
                   help="items for the one-task-per-item forms in part 2 "
                        "(chunksize 1, threads), scaled (default 10,000)")
    p.add_argument("--map-rounds", type=int, default=5,
                   help="timed rounds in part 2 (default 5)")
    p.add_argument("--tasks", type=int, default=8,
                   help="CPU-bound tasks in part 3 (default 8)")
    p.add_argument("--task-seconds", type=float, default=0.25,
                   help="calibrated length of one task in part 3 "
                        "(default 0.25)")
    p.add_argument("--cpu-rounds", type=int, default=5,
                   help="timed rounds in part 3 (default 5)")
    p.add_argument("--mem-repeats", type=int, default=3,
                   help="fresh processes per pool in part 4 (default 3)")
    p.add_argument("--no-spawn", action="store_true",
                   help="part 4: skip the 'spawn' process pool")
    p.add_argument("--parts", default="1234",
                   help="parts to run, e.g. 14 (default 1234)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 300 calls (processes 30), 10,000 items "
                        "(1,000 scaled), 4 tasks of 0.05 s, 1 round each, "
                        "1 memory run")
    args = p.parse_args(argv)
    if args.quick:
        args.calls, args.ppe_calls, args.rounds = 300, 30, 1
        args.map_items, args.map_small, args.map_rounds = 10_000, 1_000, 1
        args.tasks, args.task_seconds, args.cpu_rounds = 4, 0.05, 1
        args.mem_repeats = 1
    return args


def main(argv=None):
    args = parse_args(argv)
    subinterp = _common.import_subinterp()
    method = multiprocessing.get_start_method()
    _common.header("InterpreterPoolExecutor vs ThreadPoolExecutor and "
                   "ProcessPoolExecutor, %d workers each" % WORKERS,
                   subinterp=_common.describe_subinterp(subinterp),
                   start=("multiprocessing start method %r (this Python's "
                          "default)" % method))
    t = _common.Targets()
    if set(args.parts) & set("123"):
        with Watchdog():
            pools = start_pools(subinterp, method)
        try:
            if "1" in args.parts:
                with Watchdog():
                    bench_round_trip(args, pools, t)
            if "2" in args.parts:
                with Watchdog():
                    bench_map(args, pools, t)
            if "3" in args.parts:
                with Watchdog():
                    bench_cpu(args, pools, t)
        finally:
            with Watchdog(120):
                for key in ("ipe", "tpe", "ppe"):
                    pools[key].shutdown(wait=True, cancel_futures=True)
    if "4" in args.parts:
        bench_memory(args, subinterp, method, t)
    t.print()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory-child"]:
        sys.exit(memory_child(*sys.argv[2:4]))
    sys.exit(main())
