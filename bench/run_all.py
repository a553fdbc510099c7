"""Run every benchmark in bench/, under one or more Pythons, and summarise
the PASS/MISS target lines at the end.

Targets are informational: the exit status is 0 whatever they say, and
non-zero only if a benchmark script itself failed (crashed or errored).
"""

import argparse
import os
import subprocess
import sys
import time

import _common

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ("demo.py", "bench_module_level.py", "bench_lifecycle.py",
           "bench_call.py", "bench_queue.py", "bench_pool.py")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--python", action="append", default=None,
                   help="interpreter to run the benchmarks with; repeat for "
                        "several (default: this one, %s)" % sys.executable)
    p.add_argument("--only", action="append", choices=SCRIPTS,
                   help="run just this script; repeatable")
    p.add_argument("--quick", action="store_true",
                   help="pass --quick to every benchmark (smoke run)")
    p.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                   help="before each script, wait up to SECONDS for the "
                        "machine to be idle (under 5%% busy): parallel "
                        "figures on a busy 2-core machine mean little "
                        "(default 0: do not wait)")
    return p.parse_args(argv)


def wait_idle(limit):
    deadline = time.monotonic() + limit
    while True:
        busy = _common.machine_busy(1.0)
        if busy is None or busy < 0.05:
            return
        if time.monotonic() >= deadline:
            print("\n(machine still %.0f%% busy after waiting %.0f s: "
                  "running anyway)" % (100 * busy, limit), flush=True)
            return


def main(argv=None):
    args = parse_args(argv)
    pythons = args.python or [sys.executable]
    scripts = args.only or SCRIPTS
    summary, failed = [], []
    for python in pythons:
        for script in scripts:
            cmd = [python, os.path.join(HERE, script)]
            if args.quick:
                cmd.append("--quick")
            if args.wait_idle > 0:
                wait_idle(args.wait_idle)
            print("\n$ " + " ".join(cmd), flush=True)
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            sys.stdout.write(proc.stdout)
            if proc.returncode != 0:
                failed.append("%s %s: exit status %d" % (
                    python, script, proc.returncode))
            version = python
            for line in proc.stdout.splitlines():
                if line.startswith("python  :"):
                    version = line.split()[3]  # "python  : CPython 3.13.0"
                if line.startswith(("PASS ", "MISS ", "N/A ", "PROBLEM",
                                    "other processes")):
                    summary.append("%s  [%s, %s]" % (line, script, version))
    print("\n" + "=" * 72)
    print("summary (targets are informational)")
    for line in summary:
        print(line)
    for line in failed:
        print("FAILED  " + line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
