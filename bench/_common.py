"""Shared helpers for the benchmarks in bench/ (stdlib only).

Each benchmark script imports this module as a sibling (``python bench/x.py``
puts bench/ first on sys.path). Nothing here is shipped to a subinterpreter:
the functions the benchmarks run in other interpreters are self-contained.
"""

import glob
import os
import platform
import re
import resource
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- importing the things being compared -------------------------------------

def import_subinterp():
    """Import subinterp, adding the repo's build tree to sys.path if needed.

    Honours PYTHONPATH first. Otherwise looks for an optimised,
    unsanitised build directory (build/<name>/CMakeCache.txt says Release or
    RelWithDebInfo) holding an extension built for *this* Python
    (build/<name>/python/subinterp/_subinterp.<tag>*.so), and uses it with the package
    in python/; of several, the most recently built one, since an older
    build tree may lack what the package in python/ needs. Returns the
    module, or raises ImportError with a hint.
    """
    try:
        import subinterp
        return subinterp
    except ImportError:
        pass
    tag = sys.implementation.cache_tag  # e.g. cpython-313
    newest = None  # (mtime, pydir)
    for builddir in glob.glob(os.path.join(REPO, "build", "*")):
        pydir = os.path.join(builddir, "python")
        if _build_type(builddir) not in ("Release", "RelWithDebInfo"):
            continue
        for ext in glob.glob(os.path.join(pydir, "**",
                                          "_subinterp.%s*.so" % tag),
                             recursive=True):
            mtime = os.path.getmtime(ext)
            if newest is None or mtime > newest[0]:
                newest = (mtime, pydir)
    if newest is not None:
        sys.path[:0] = [newest[1], os.path.join(REPO, "python")]
    try:
        import subinterp
    except ImportError as exc:
        raise ImportError(
            "cannot import subinterp (%s); build it, or set "
            "PYTHONPATH=%s/build/<builddir>/python:%s/python"
            % (exc, REPO, REPO)) from exc
    return subinterp


def _build_type(builddir):
    """CMAKE_BUILD_TYPE of a build dir, or 'sanitized'/None."""
    try:
        with open(os.path.join(builddir, "CMakeCache.txt")) as f:
            cache = dict(line.rstrip("\n").split("=", 1) for line in f
                         if "=" in line and not line.startswith(("#", "//")))
    except OSError:
        return None
    sanitize = cache.get("SUBINTERP_SANITIZE:STRING", "")
    if sanitize and sanitize.upper() not in ("OFF", "NONE", "FALSE", "0"):
        return "sanitized"
    return cache.get("CMAKE_BUILD_TYPE:STRING")


def describe_subinterp(mod):
    """Where subinterp and its extension came from, and the build type."""
    ext = sys.modules.get("subinterp._subinterp") or sys.modules.get("_subinterp")
    ext_file = getattr(ext, "__file__", None)
    if not ext_file:
        return where(mod)
    builddir, btype = os.path.dirname(ext_file), None
    for _ in range(3):  # the extension sits in build/<name>/python/...
        builddir = os.path.dirname(builddir)
        if os.path.exists(os.path.join(builddir, "CMakeCache.txt")):
            btype = _build_type(builddir)
            break
    text = "%s (build type %s)" % (ext_file, btype or "unknown")
    if btype not in ("Release", "RelWithDebInfo", None):
        text += "  ** not an optimised build: figures are not meaningful **"
    return text


def cpython_private():
    """(name, module) of CPython's own private interpreters module."""
    try:
        import _interpreters as mod  # 3.13
        return "_interpreters", mod
    except ImportError:
        import _xxsubinterpreters as mod  # 3.12
        return "_xxsubinterpreters", mod


def where(mod):
    return getattr(mod, "__file__", None) or "built-in"


# --- measuring ---------------------------------------------------------------

class Stats:
    """Median and spread of a list of samples (seconds)."""

    def __init__(self, samples):
        if not samples:
            raise ValueError("no samples")
        self.samples = sorted(samples)
        self.median = statistics.median(self.samples)
        self.min = self.samples[0]
        self.max = self.samples[-1]

    @property
    def spread(self):
        """(max - min) / median: how noisy the measurement was."""
        return (self.max - self.min) / self.median if self.median else 0.0

    def fmt(self, unit="s"):
        scale, suffix = {"s": (1, "s"), "ms": (1e3, "ms"),
                         "us": (1e6, "us")}[unit]
        return "%9.3f %-2s (min %.3f, max %.3f, n=%d)" % (
            self.median * scale, suffix, self.min * scale, self.max * scale,
            len(self.samples))


def paired(numerators, denominators):
    """Stats of per-round ratios a/b, pairing samples taken in one round.

    Both sides of a pair were measured moments apart, so a slow spell of
    the (virtual) machine hits both; the median of these ratios is steadier
    than the ratio of the two medians.
    """
    if len(numerators) != len(denominators):
        raise ValueError("unpaired samples")
    return Stats([a / b for a, b in zip(numerators, denominators)])


def fmt_ratio(stats):
    return "%.2fx (%.2f-%.2f)" % (stats.median, stats.min, stats.max)


def timed(fn, *args):
    """Run fn(*args) once; return (seconds, result)."""
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def _cpu_jiffies():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def timed_busy(fn, *args):
    """Run fn(*args) once; return (seconds, result, cores busy on average).

    Cores busy counts the whole machine's non-idle time (/proc/stat, 10 ms
    ticks) over the run: about 2.0 for two runs truly in parallel, about 1.0
    when they take turns. A parallel run that keeps 2 cores busy yet is
    slower than half the sequential time ran on slower cores (e.g. the
    host's hyperthread siblings), not serialized.
    """
    try:
        j0 = _cpu_jiffies()
    except (OSError, ValueError):
        j0 = None
    secs, result = timed(fn, *args)
    if j0 is None or secs <= 0:
        return secs, result, None
    busy = (_cpu_jiffies() - j0) / os.sysconf("SC_CLK_TCK") / secs
    return secs, result, busy


def rss_bytes():
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


class OthersMeter:
    """CPU time used by other processes while a benchmark runs.

    Non-idle time of all CPUs (/proc/stat) minus this process's own CPU time
    and that of its reaped children (getrusage), as a fraction of the
    machine's capacity over the interval. On a 2-core machine any such load
    takes a core away from the parallel runs.
    """

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields) - fields[3] - fields[4]) / hz
        own = sum(resource.getrusage(who).ru_utime
                  + resource.getrusage(who).ru_stime
                  for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        return time.monotonic(), busy, own

    def fraction(self):
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        others = (end[1] - self.start[1]) - (end[2] - self.start[2])
        capacity = wall * (os.cpu_count() or 1)
        return max(0.0, others / capacity) if capacity > 0 else None


_meter = None


def machine_busy(seconds=0.5):
    """Fraction of all CPUs' time not idle over a short sleep, or None."""
    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return 1.0 - (idle1 - idle0) / total if total > 0 else None


def cores():
    """CPUs this process may run on (affinity), and the machine's count."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return usable, os.cpu_count() or usable


# --- reporting ---------------------------------------------------------------

def header(title, **facts):
    usable, total = cores()
    print("=" * 72)
    print(title)
    print("python  : %s %s (%s)" % (platform.python_implementation(),
                                   platform.python_version(), sys.executable))
    print("machine : %d cores usable (%d online), %s" % (
        usable, total, platform.machine()))
    global _meter
    busy = machine_busy()
    if busy is not None:
        print("busy    : %.0f%% of all cores in use by others just before "
              "the run%s" % (100 * busy,
                             "  ** expect noisy, low parallel figures **"
                             if busy > 0.10 else ""))
    for key, value in facts.items():
        print("%-8s: %s" % (key, value))
    print("=" * 72)
    _meter = OthersMeter()


def table(rows, headers):
    widths = [max(len(str(r[i])) for r in rows + [headers])
              for i in range(len(headers))]
    line = "  ".join("%-*s" % (w, h) for w, h in zip(widths, headers))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join("%-*s" % (w, c) for w, c in zip(widths, r)))


class Targets:
    """Collects targets and prints one PASS/MISS line each at the end.

    Informational only: the exit status never depends on them.
    """

    def __init__(self):
        self.lines = []

    def at_least(self, name, measured, target, note=""):
        ok = measured >= target
        self._add(ok, "%s: %.3fx (target >= %.2fx)%s" % (
            name, measured, target, note))

    def at_most(self, name, measured, target, note=""):
        ok = measured <= target
        self._add(ok, "%s: %.3fx (target <= %.2fx)%s" % (
            name, measured, target, note))

    def at_least_value(self, name, measured, target, unit):
        """A target on an absolute figure (e.g. items/s), not a ratio."""
        ok = measured >= target
        self._add(ok, "%s: %s %s (target >= %s %s)" % (
            name, "{:,.0f}".format(measured), unit,
            "{:,.0f}".format(target), unit))

    def na(self, name, why):
        self.lines.append("N/A   %s: %s" % (name, why))

    def _add(self, ok, text):
        self.lines.append(("PASS  " if ok else "MISS  ") + text)

    def print(self):
        print()
        others = _meter.fraction() if _meter else None
        if others is not None:
            print("other processes used %.0f%% of the machine's CPU during "
                  "the run%s" % (100 * others,
                                 "  ** figures disturbed, rerun on a quiet "
                                 "machine **" if others > 0.05 else ""))
        print("targets (informational; benchmarks never fail):")
        for line in self.lines:
            print(line)


def _children():
    children = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except OSError:
            continue
    return children


def process_tree(pid):
    """pid and its descendants."""
    children = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def process_count(pid):
    return len(process_tree(pid))


def tree_memory(pid):
    """Summed RSS and PSS (KiB) of pid and its descendants. PSS counts a
    page shared by n processes as 1/n in each (forked workers share their
    parent's pages), so its sum counts every page once."""
    rss = pss = 0
    for p in process_tree(pid):
        try:
            with open(f'/proc/{p}/smaps_rollup') as f:
                text = f.read()
            rss += int(re.search(r'^Rss:\s+(\d+)', text, re.M).group(1))
            pss += int(re.search(r'^Pss:\s+(\d+)', text, re.M).group(1))
        except (OSError, AttributeError):
            pass
    return rss, pss
