"""Shared helpers for the benchmarks in bench/ (stdlib only).

Each benchmark script imports this module as a sibling (``python bench/x.py``
puts bench/ first on sys.path). Nothing here is shipped to a subinterpreter:
the functions the benchmarks run in other interpreters are self-contained.
"""

import glob
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- importing the things being compared -------------------------------------

def import_subinterp():
    """Import subinterp, adding the repo's build tree to sys.path if needed.

    Honours PYTHONPATH first. Otherwise looks for a build directory holding an
    extension built for *this* Python (build/*/python/_subinterp.<tag>.so) and
    the package in python/. Returns the module, or raises ImportError with a
    hint saying how to build or point at it.
    """
    try:
        import subinterp
        return subinterp
    except ImportError:
        pass
    tag = sys.implementation.cache_tag  # e.g. cpython-313
    for pydir in sorted(glob.glob(os.path.join(REPO, "build", "*", "python"))):
        if glob.glob(os.path.join(pydir, "**", "_subinterp.%s*.so" % tag),
                     recursive=True):
            sys.path[:0] = [pydir, os.path.join(REPO, "python")]
            break
    try:
        import subinterp
    except ImportError as exc:
        raise ImportError(
            "cannot import subinterp (%s); build it, or set "
            "PYTHONPATH=%s/build/<builddir>/python:%s/python"
            % (exc, REPO, REPO)) from exc
    return subinterp


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


# --- measuring ----------------------------------------------------------------

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


def timed(fn, *args):
    """Run fn(*args) once; return (seconds, result)."""
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def rss_bytes():
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


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
    for key, value in facts.items():
        print("%-8s: %s" % (key, value))
    print("=" * 72)


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
        self._add(ok, "%s: %.2fx (target >= %.2fx)%s" % (
            name, measured, target, note))

    def at_most(self, name, measured, target, note=""):
        ok = measured <= target
        self._add(ok, "%s: %.2fx (target <= %.2fx)%s" % (
            name, measured, target, note))

    def na(self, name, why):
        self.lines.append("N/A   %s: %s" % (name, why))

    def _add(self, ok, text):
        self.lines.append(("PASS  " if ok else "MISS  ") + text)

    def print(self):
        print()
        print("targets (informational; benchmarks never fail):")
        for line in self.lines:
            print(line)
