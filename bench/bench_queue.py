"""Passing data between interpreters: queues and channels.

Part 1, small ints from one interpreter to another: a producer puts N ints
into a queue while a consumer, in another interpreter and thread, gets N
and sums them. Time from starting both threads to both done; items/s.
  - subinterp  subinterp.create_queue(), producer and consumer started with
    interp.call_in_thread; the consumer blocks in get().
  - CPython    3.13's low-level _interpqueues (create(maxsize, fmt,
    unboundop), put(qid, obj, fmt, unboundop), get(qid) -> (obj, fmt,
    unboundop), with fmt 0: shareable objects, no pickling, its fastest
    path), in two interpreters of CPython's own _interpreters, each running
    source text through exec() in a thread. get() raises QueueEmpty when
    there is nothing to take, so the consumer polls: as CPython's queue
    module does (catch QueueEmpty, sleep 10 ms, retry), and a busy-retry
    variant without the sleep; CPython's figure is the faster of the two in
    each round. On 3.12, which has no _interpqueues, the same with
    _xxinterpchannels (send(cid, obj), recv(cid, default)), the low-level
    module of PEP 554's channels, and _xxsubinterpreters.run_string.
  - multiprocessing.Queue between two processes (started once, before any
    interpreter exists, and reused); consumer throughput.
  - reference: subinterp's producer and consumer loops at once on two
    separate queues (the consumer's filled beforehand, untimed), so nothing
    passes between the cores: the most any queue could reach on this
    machine, and so the highest subinterp / CPython ratio it allows.

Part 2, 1 MiB items between two interpreters: 1 MiB bytes objects through
subinterp's queue and through CPython's (as in part 1); then a memoryview
of a 1 MiB subinterp.SharedBuffer beside one of a 1-byte SharedBuffer: the
same items/s means the memory is not copied. The process's minor page
faults per item are shown: fresh memory costs a fault per 4 KiB page.

Part 3, ping-pong round trip between two interpreters (each in its own
thread) through two subinterp channels (send_nowait + recv, and the blocking
send + recv) and two subinterp queues, beside queue.Queue between two
threads of one interpreter. No target: information.

Every measurement checks its result (sums, sizes, marker bytes, echoed
values); a wrong result stops the script with an error. Each round runs every
form once; figures are medians over the rounds (one untimed warm-up round
first), ratios the medians of per-round ratios.
"""

import argparse
import multiprocessing
import os
import queue
import resource
import sys
import threading
import time

import _common

MiB = 1 << 20
JOIN_TIMEOUT = 120.0  # seconds; a hang means a broken path, not a figure


class WrongResult(RuntimeError):
    """A measured path gave a wrong result: its figure would be meaningless."""


# --- run in subinterp interpreters (shipped by value: self-contained) -------

def sub_produce_ints(q, n):
    put = q.put
    for i in range(n):
        put(i)


def sub_consume_ints(q, n, results):
    get = q.get
    total = 0
    for _ in range(n):
        total += get()
    results.put(total)


def sub_produce_same(q, item, n):
    put = q.put
    for _ in range(n):
        put(item)


def sub_consume_sized(q, n, size, first, last, results):
    get = q.get
    good = 0
    for _ in range(n):
        item = get()
        if len(item) == size and item[0] == first and item[-1] == last:
            good += 1
    results.put(good)


def sub_ping(kind, out, inp, k, warm, results):
    import time
    if kind == "channel":
        put, get = out.send_nowait, inp.recv
    elif kind == "channel-blocking":
        put, get = out.send, inp.recv
    else:
        put, get = out.put, inp.get
    for i in range(warm):
        put(i)
        get()
    bad = 0
    t0 = time.perf_counter()
    for i in range(k):
        put(i)
        if get() != i:
            bad += 1
    elapsed = time.perf_counter() - t0
    results.put((elapsed, bad))


def sub_pong(kind, inp, out, count):
    if kind == "channel":
        put, get = out.send_nowait, inp.recv
    elif kind == "channel-blocking":
        put, get = out.send, inp.recv
    else:
        put, get = out.put, inp.get
    for _ in range(count):
        put(get())


# --- CPython's own modules: source text run in its interpreters ------------

# {name} is substituted with the module's own words: see CPythonQueues.
CPY_PRODUCE = """\
{imp}
put = {put}
item = {item}
for i in range({n}):
    put({qid}, {value}{putargs})
"""

CPY_CONSUME = """\
{imp}
import time
get = {get}
sleep = time.sleep
good = 0
total = 0
for _ in range({n}):
    {fetch}
    {check}
{verify}
"""


class CPythonQueues:
    """CPython's low-level cross-interpreter queue of this version, and its
    interpreters: _interpqueues + _interpreters (3.13), or
    _xxinterpchannels + _xxsubinterpreters (3.12)."""

    def __init__(self):
        self.interp_name, self.interp_mod = _common.cpython_private()
        try:
            import _interpqueues as mod
            self.name = "_interpqueues"
        except ImportError:
            try:
                import _xxinterpchannels as mod
                self.name = "_xxinterpchannels"
            except ImportError:
                mod = None
                self.name = None
        self.mod = mod
        self.ids = []
        self.channels = {}  # 3.12: channel number -> ChannelID

    @property
    def label(self):
        return "CPython %s" % self.name

    def create_interp(self):
        iid = self.interp_mod.create()
        self.ids.append(iid)
        return iid

    def create_queue(self):
        if self.name == "_interpqueues":
            # maxsize 0: unbounded; fmt 0: shareable objects as they are
            # (no pickle); unboundop 3: UNBOUND, the queue module's default.
            return self.mod.create(0, 0, 3)
        # The ChannelID object keeps the channel alive: hold it until
        # destroy_queue(), and write its number into the source text.
        cid = self.mod.create()
        self.channels[int(cid)] = cid
        return int(cid)

    def destroy_queue(self, qid):
        if self.name == "_interpqueues":
            self.mod.destroy(qid)
        else:
            self.mod.destroy(self.channels.pop(qid))

    def close(self):
        for iid in self.ids:
            self.interp_mod.destroy(iid)
        self.ids = []

    def _words(self, qid, n):
        if self.name == "_interpqueues":
            # QueueEmpty comes from CPython's own queue module, which
            # registers it with _interpqueues on import.
            return dict(
                imp="import _interpqueues as m\n"
                    "from test.support.interpreters.queues import QueueEmpty",
                put="m.put", putargs=", 0, 3", get="m.get",
                fetch_busy="while True:\n"
                           "        try:\n"
                           "            obj = get({qid})[0]\n"
                           "            break\n"
                           "        except QueueEmpty:\n"
                           "            pass".format(qid=qid),
                fetch_sleep="while True:\n"
                            "        try:\n"
                            "            obj = get({qid})[0]\n"
                            "            break\n"
                            "        except QueueEmpty:\n"
                            "            sleep(0.01)".format(qid=qid),
                qid=qid, n=n)
        empty = "EMPTY"
        return dict(
            imp="import _xxinterpchannels as m\nEMPTY = object()",
            put="m.send", putargs="", get="m.recv",
            fetch_busy="while True:\n"
                       "        obj = get({qid}, {e})\n"
                       "        if obj is not {e}:\n"
                       "            break".format(qid=qid, e=empty),
            fetch_sleep="while True:\n"
                        "        obj = get({qid}, {e})\n"
                        "        if obj is not {e}:\n"
                        "            break\n"
                        "        sleep(0.01)".format(qid=qid, e=empty),
            qid=qid, n=n)

    def ints_sources(self, qid, n, sleep):
        w = self._words(qid, n)
        prod = CPY_PRODUCE.format(item="None", value="i", **w)
        cons = CPY_CONSUME.format(
            fetch=w["fetch_sleep" if sleep else "fetch_busy"],
            check="total += obj",
            verify="if total != %d:\n"
                   "    raise AssertionError('sum %%d' %% total)"
                   % (n * (n - 1) // 2), **w)
        return prod, cons

    def sized_sources(self, qid, n, size, first, last, sleep):
        w = self._words(qid, n)
        prod = CPY_PRODUCE.format(
            item="bytes([%d]) + bytes(%d) + bytes([%d])"
                 % (first, size - 2, last), value="item", **w)
        cons = CPY_CONSUME.format(
            fetch=w["fetch_sleep" if sleep else "fetch_busy"],
            check="if len(obj) == %d and obj[0] == %d and obj[-1] == %d:\n"
                  "        good += 1" % (size, first, last),
            verify="if good != %d:\n"
                   "    raise AssertionError('%%d good items' %% good)" % n,
            **w)
        return prod, cons

    # CPython 3.13's Queue class over _interpqueues, the code that 3.14 ships
    # as concurrent.interpreters.Queue (there in Lib/test/support).
    API_PRODUCE = (
        "from test.support.interpreters import queues\n"
        "q = queues.Queue({qid})\n"
        "put = q.put\n"
        "for i in range({n}):\n"
        "    put(i)\n")
    API_CONSUME = (
        "from test.support.interpreters import queues\n"
        "q = queues.Queue({qid})\n"
        "get = q.get\n"
        "total = 0\n"
        "for _ in range({n}):\n"
        "    total += get()\n"
        "if total != {total}:\n"
        "    raise AssertionError('sum %d' % total)\n")

    def api_queue(self):
        """A queue of CPython's Queue API (3.13), or None."""
        if self.name != "_interpqueues":
            return None
        try:
            from test.support.interpreters import queues
        except ImportError:
            return None
        return queues.create()

    def api_ints_sources(self, qid, n):
        return (self.API_PRODUCE.format(qid=qid, n=n),
                self.API_CONSUME.format(qid=qid, n=n, total=n * (n - 1) // 2))

    def run_pair(self, prod_id, prod_src, cons_id, cons_src):
        """Run both sources at once, each in its interpreter and thread;
        return the seconds from starting the threads until both are done.
        """
        errors = []

        def run(iid, src):
            try:
                if self.interp_name == "_interpreters":
                    err = self.interp_mod.exec(iid, src)
                else:
                    err = self.interp_mod.run_string(iid, src)
            except Exception as exc:  # 3.12 raises RunFailedError
                err = exc
            if err is not None:
                errors.append(err)

        threads = [threading.Thread(target=run, args=(cons_id, cons_src)),
                   threading.Thread(target=run, args=(prod_id, prod_src))]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        join_all(threads)
        secs = time.perf_counter() - t0
        if errors:
            raise WrongResult("%s: %s" % (self.label, errors[0]))
        return secs


# --- multiprocessing workers (forked before any interpreter exists) ---------

def mp_producer(ctrl, q):
    while True:
        n = ctrl.recv()
        if n is None:
            return
        put = q.put
        for i in range(n):
            put(i)
        ctrl.send(n)


def mp_consumer(ctrl, q):
    while True:
        n = ctrl.recv()
        if n is None:
            return
        get = q.get
        total = 0
        for _ in range(n):
            total += get()
        ctrl.send(total)


class MPPair:
    """A producer and a consumer process sharing a multiprocessing.Queue."""

    def __init__(self):
        self.q = multiprocessing.Queue()
        self.ctrl, self.procs = [], []
        for target in (mp_producer, mp_consumer):
            mine, theirs = multiprocessing.Pipe()
            proc = multiprocessing.Process(target=target, args=(theirs,
                                                                self.q))
            proc.start()
            self.ctrl.append(mine)
            self.procs.append(proc)

    def run(self, n):
        t0 = time.perf_counter()
        for c in self.ctrl:
            c.send(n)
        got = []
        for c in self.ctrl:
            if not c.poll(JOIN_TIMEOUT):
                raise WrongResult("multiprocessing worker did not answer")
            got.append(c.recv())
        secs = time.perf_counter() - t0
        if got != [n, n * (n - 1) // 2]:
            raise WrongResult("multiprocessing.Queue: got %r" % (got,))
        return secs

    def close(self):
        for c in self.ctrl:
            c.send(None)
        for p in self.procs:
            p.join(10)


# --- helpers -----------------------------------------------------------------

def join_all(threads):
    for th in threads:
        th.join(JOIN_TIMEOUT)
        if th.is_alive():
            # A thread stuck in another interpreter cannot be stopped, and
            # it keeps the process from exiting: report and leave.
            print("\nPROBLEM: a benchmark thread hangs (broken path); "
                  "exiting", flush=True)
            os._exit(2)


def sub_run_pair(prod_interp, prod, prod_args, cons_interp, cons, cons_args,
                 results):
    """Start consumer then producer with call_in_thread, wait for both;
    return (seconds, what the consumer put into `results`)."""
    t0 = time.perf_counter()
    threads = [cons_interp.call_in_thread(cons, *cons_args),
               prod_interp.call_in_thread(prod, *prod_args)]
    join_all(threads)
    secs = time.perf_counter() - t0
    try:
        return secs, results.get_nowait()
    except Exception:  # the consumer failed (its traceback was printed)
        raise WrongResult("subinterp consumer gave no result") from None


def rate(per_item):
    """items/s, formatted, from seconds per item."""
    return "%s/s" % _fmt_count(1 / per_item)


def minor_faults():
    """Minor page faults of this process so far (all its threads)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _fmt_count(x):
    return "{:,.0f}".format(x)


def report(title, forms, samples, base, extra=()):
    """Table of per-item times as rates, with paired ratios vs `base`;
    `extra` adds columns: (header, fn(label, median seconds per item))."""
    print("\n" + title)
    rows = []
    for label in forms:
        s = samples[label]
        st = _common.Stats(s)
        ratio = _common.paired(s, samples[base])
        rows.append([label, rate(st.median),
                     "%s - %s" % (rate(st.max), rate(st.min)),
                     _common.fmt_ratio(ratio)]
                    + [fn(label, st.median) for _, fn in extra])
    _common.table(rows, ["form", "median", "range", "subinterp faster by"]
                  + [header for header, _ in extra])
    print("(ratios: this form's time per item / subinterp's, median and "
          "min-max of per-round ratios)")


# --- part 1: small ints ------------------------------------------------------

def bench_ints(args, subinterp, cpy, mp_pair, t):
    n, n_mp = args.ints, args.mp_ints
    a, b = subinterp.create(), subinterp.create()
    results = subinterp.create_queue()
    cpy_ok = cpy.mod is not None
    if cpy_ok:
        pa, pb = cpy.create_interp(), cpy.create_interp()
    sub_label = "subinterp  create_queue()"
    busy_label = "%s, busy retry" % cpy.label
    sleep_label = "%s, sleep 10 ms when empty" % cpy.label
    best_label = "%s, faster of the two" % cpy.label
    mp_label = "multiprocessing.Queue, 2 processes"
    ceil_label = "reference: subinterp, no hand-off (2 queues)"
    api_label = "CPython Queue API (3.14's concurrent.interpreters.Queue)"
    api_ok = cpy_ok and cpy.api_queue() is not None
    samples = {k: [] for k in (sub_label, busy_label, sleep_label, best_label,
                               mp_label, ceil_label, api_label)}
    expected = n * (n - 1) // 2

    def sub_form():
        q = subinterp.create_queue()
        secs, total = sub_run_pair(a, sub_produce_ints, (q, n),
                                   b, sub_consume_ints, (q, n, results),
                                   results)
        if total != expected or q.qsize() != 0:
            raise WrongResult("subinterp: sum %r, expected %r"
                              % (total, expected))
        return secs / n

    def ceiling_form():
        # The same two loops at once, but the producer fills one queue
        # and the consumer drains another, filled beforehand (untimed):
        # nothing passes between the cores, so no queue could do better.
        source, sink = subinterp.create_queue(), subinterp.create_queue()
        b.call(sub_produce_ints, source, n)
        secs, total = sub_run_pair(a, sub_produce_ints, (sink, n),
                                   b, sub_consume_ints, (source, n, results),
                                   results)
        if total != expected or sink.qsize() != n:
            raise WrongResult("no hand-off reference: sum %r, %d put"
                              % (total, sink.qsize()))
        sink.close()
        return secs / n

    def cpy_form(sleep):
        qid = cpy.create_queue()
        try:
            prod, cons = cpy.ints_sources(qid, n, sleep)
            return cpy.run_pair(pa, prod, pb, cons) / n
        finally:
            cpy.destroy_queue(qid)

    def api_form():
        q = cpy.api_queue()
        prod, cons = cpy.api_ints_sources(q.id, n)
        secs = cpy.run_pair(pa, prod, pb, cons)
        if q.qsize() != 0:
            raise WrongResult("CPython Queue API: %d items left" % q.qsize())
        return secs / n

    forms = [(sub_label, sub_form),
             (mp_label, lambda: mp_pair.run(n_mp) / n_mp),
             (ceil_label, ceiling_form)]
    if cpy_ok:
        forms[1:1] = [(busy_label, lambda: cpy_form(False)),
                      (sleep_label, lambda: cpy_form(True))]
    if api_ok:
        forms[1:1] = [(api_label, api_form)]
    try:
        for rnd in range(1 + args.rounds):
            order = forms if rnd % 2 else forms[::-1]
            got = {label: fn() for label, fn in order}
            if rnd == 0:
                continue
            for label, secs in got.items():
                samples[label].append(secs)
            if cpy_ok:
                samples[best_label].append(min(got[busy_label],
                                               got[sleep_label]))
    finally:
        a.close()
        b.close()
    shown = ([sub_label] + ([api_label] if api_ok else [])
             + ([busy_label, sleep_label, best_label] if cpy_ok else [])
             + [mp_label, ceil_label])
    report("part 1: small ints, one interpreter to another (%s ints; "
           "multiprocessing %s; %d rounds)" % (_fmt_count(n),
                                               _fmt_count(n_mp), args.rounds),
           shown, samples, sub_label)
    print("(reference: the producer fills one queue while the consumer "
          "drains another, in\n parallel: the speed of the two loops alone, "
          "the most any queue could reach here)")
    if cpy_ok:
        print("reference / %s: %s: the highest subinterp / CPython ratio "
              "this machine allows" % (cpy.label, _common.fmt_ratio(
                  _common.paired(samples[best_label], samples[ceil_label]))))
    sub_rate = 1 / _common.Stats(samples[sub_label]).median
    t.at_least_value("queue of ints, subinterp items/s", sub_rate,
                     2_000_000, "items/s")
    if api_ok:
        t.at_least("queue of ints, subinterp / CPython's Queue API over "
                   "_interpqueues",
                   _common.paired(samples[api_label],
                                  samples[sub_label]).median, 6.0)
    if cpy_ok:
        t.at_least("queue of ints, subinterp / raw %s calls (faster of busy "
                   "and sleep)" % cpy.label,
                   _common.paired(samples[best_label],
                                  samples[sub_label]).median, 6.0)
    else:
        t.na("queue of ints vs CPython", "no _interpqueues or "
             "_xxinterpchannels in this Python")
    t.at_least("queue of ints, subinterp / multiprocessing.Queue",
               _common.paired(samples[mp_label], samples[sub_label]).median,
               25.0)


# --- part 2: 1 MiB items -----------------------------------------------------

def bench_big(args, subinterp, cpy, t):
    n, size = args.big_items, MiB
    first, last = 0x5A, 0xA5
    payload = bytes([first]) + bytes(size - 2) + bytes([last])
    big, tiny = subinterp.SharedBuffer(size), subinterp.SharedBuffer(1)
    big_view, tiny_view = memoryview(big), memoryview(tiny)
    big_view[0], big_view[-1], tiny_view[0] = first, last, last
    a, b = subinterp.create(), subinterp.create()
    results = subinterp.create_queue()
    cpy_ok = cpy.mod is not None
    if cpy_ok:
        pa, pb = cpy.create_interp(), cpy.create_interp()

    def sub_form(item, size, first, n):
        def run():
            q = subinterp.create_queue()
            secs, good = sub_run_pair(
                a, sub_produce_same, (q, item, n),
                b, sub_consume_sized, (q, n, size, first, last, results),
                results)
            if good != n:
                raise WrongResult("subinterp: %r of %d items of %d bytes "
                                  "arrived intact" % (good, n, size))
            return secs / n
        return run

    def cpy_form(sleep):
        qid = cpy.create_queue()
        try:
            prod, cons = cpy.sized_sources(qid, n, size, first, last, sleep)
            return cpy.run_pair(pa, prod, pb, cons) / n
        finally:
            cpy.destroy_queue(qid)

    bytes_label = "subinterp  1 MiB bytes"
    busy_label = "%s  1 MiB bytes, busy retry" % cpy.label
    sleep_label = "%s  1 MiB bytes, sleep 10 ms" % cpy.label
    best_label = "%s  1 MiB bytes, faster" % cpy.label
    sb_big = "subinterp  memoryview of 1 MiB SharedBuffer"
    sb_tiny = "subinterp  memoryview of 1 B SharedBuffer"
    nv = args.view_items
    forms = [(bytes_label, sub_form(payload, size, first, n)),
             (sb_big, sub_form(big_view, size, first, nv)),
             (sb_tiny, sub_form(tiny_view, 1, last, nv))]
    if cpy_ok:
        forms[1:1] = [(busy_label, lambda: cpy_form(False)),
                      (sleep_label, lambda: cpy_form(True))]
    samples = {label: [] for label, _ in forms}
    samples[best_label] = []
    faults = {label: [] for label in samples}  # minor page faults per item
    try:
        for rnd in range(1 + args.rounds):
            order = forms if rnd % 2 else forms[::-1]
            got = {}
            for label, fn in order:
                flt = minor_faults()
                got[label] = fn()
                flt = minor_faults() - flt
                if rnd > 0:
                    samples[label].append(got[label])
                    faults[label].append(flt / (n if label in (
                        bytes_label, busy_label, sleep_label) else nv))
            if rnd > 0 and cpy_ok:
                faster = min((busy_label, sleep_label), key=got.get)
                samples[best_label].append(got[faster])
                faults[best_label].append(faults[faster][-1])
    finally:
        a.close()
        b.close()
    shown = [bytes_label] + ([busy_label, sleep_label, best_label]
                             if cpy_ok else [])
    report("part 2a: 1 MiB bytes items between two interpreters (%d items; "
           "%d rounds)" % (n, args.rounds), shown, samples, bytes_label,
           extra=[("MB/s", lambda label, per_item:
                   "%.0f" % (size / per_item / 1e6)),
                  ("page faults/item", lambda label, _:
                   "%.1f" % _common.Stats(faults[label]).median)])
    print("(page faults: minor faults of the whole process during the run, "
          "per item, median;\n 1 MiB is 256 pages: a fault is memory "
          "the kernel had to map and zero)")
    print("\npart 2b: memoryview of a SharedBuffer (zero copy), 1 MiB vs "
          "1 byte (%s items; %d rounds)" % (_fmt_count(nv), args.rounds))
    ratio = _common.paired(samples[sb_tiny], samples[sb_big])
    rows = []
    for label in (sb_big, sb_tiny):
        st = _common.Stats(samples[label])
        rows.append((label, "%s/s" % _fmt_count(1 / st.median),
                     "%s - %s/s" % (_fmt_count(1 / st.max),
                                    _fmt_count(1 / st.min)),
                     "%.0f" % (size / st.median / 1e6)
                     if label == sb_big else "-",
                     "%.2f" % _common.Stats(faults[label]).median))
    _common.table(rows, ("form", "median", "range", "MB/s (as if copied)",
                         "page faults/item"))
    print("1 MiB items/s / 1 B items/s: %s (median, min-max of per-round "
          "ratios)" % _common.fmt_ratio(ratio))
    if cpy_ok:
        t.at_least("1 MiB bytes, subinterp / %s (items/s)" % cpy.label,
                   _common.paired(samples[best_label],
                                  samples[bytes_label]).median, 1.0)
    else:
        t.na("1 MiB bytes vs CPython", "no _interpqueues or "
             "_xxinterpchannels in this Python")
    t.at_least("SharedBuffer 1 MiB / 1 B items/s (zero copy)", ratio.median,
               0.8)


# --- part 3: ping-pong -------------------------------------------------------

def thread_ping(out, inp, k, warm, box):
    put, get = out.put, inp.get
    for i in range(warm):
        put(i)
        get()
    bad = 0
    t0 = time.perf_counter()
    for i in range(k):
        put(i)
        if get() != i:
            bad += 1
    box.append((time.perf_counter() - t0, bad))


def thread_pong(inp, out, count):
    put, get = out.put, inp.get
    for _ in range(count):
        put(get())


def bench_ping_pong(args, subinterp, t):
    from subinterp.channels import create_channel
    k, warm = args.round_trips, 200
    a, b = subinterp.create(), subinterp.create()
    results = subinterp.create_queue()

    def sub_form(kind):
        def run():
            if kind == "queue":
                there = subinterp.create_queue()
                back = subinterp.create_queue()
                ping_ends, pong_ends = (there, back), (there, back)
            else:
                recv1, send1 = create_channel()
                recv2, send2 = create_channel()
                ping_ends, pong_ends = (send1, recv2), (recv1, send2)
            threads = [b.call_in_thread(sub_pong, kind, *pong_ends,
                                        k + warm),
                       a.call_in_thread(sub_ping, kind, *ping_ends, k, warm,
                                        results)]
            join_all(threads)
            try:
                secs, bad = results.get_nowait()
            except Exception:
                raise WrongResult("subinterp ping gave no result") from None
            if bad:
                raise WrongResult("subinterp %s ping-pong: %d wrong echoes"
                                  % (kind, bad))
            return secs / k
        return run

    def threads_form():
        there, back, box = queue.Queue(), queue.Queue(), []
        threads = [threading.Thread(target=thread_pong,
                                    args=(there, back, k + warm)),
                   threading.Thread(target=thread_ping,
                                    args=(there, back, k, warm, box))]
        for th in threads:
            th.start()
        join_all(threads)
        secs, bad = box[0]
        if bad:
            raise WrongResult("queue.Queue ping-pong: %d wrong echoes" % bad)
        return secs / k

    forms = [
        ("subinterp  channels, send_nowait + recv", sub_form("channel")),
        ("subinterp  channels, send (blocking) + recv",
         sub_form("channel-blocking")),
        ("subinterp  queues, put + get", sub_form("queue")),
        ("queue.Queue, 2 threads of one interpreter", threads_form),
    ]
    samples = {label: [] for label, _ in forms}
    try:
        for rnd in range(1 + args.rounds):
            order = forms if rnd % 2 else forms[::-1]
            for label, fn in order:
                secs = fn()
                if rnd > 0:
                    samples[label].append(secs)
    finally:
        a.close()
        b.close()
    base = forms[0][0]
    print("\npart 3: ping-pong round trip, two interpreters (threads for "
          "queue.Queue); %d round trips x %d rounds" % (k, args.rounds))
    _common.table([(label, "%.2f us" % (_common.Stats(s).median * 1e6),
                    "%.2f-%.2f us" % (min(s) * 1e6, max(s) * 1e6),
                    _common.fmt_ratio(_common.paired(s, samples[base])))
                   for label, s in samples.items()],
                  ("form", "round trip", "min-max", "time vs channels"))
    print("(no target: information; ratios: median, min-max of per-round "
          "ratios)")


# --- main --------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ints", type=int, default=300_000,
                   help="ints per round in part 1 (default 300,000)")
    p.add_argument("--mp-ints", type=int, default=50_000,
                   help="ints per round through multiprocessing.Queue in "
                        "part 1 (default 50,000; it is much slower)")
    p.add_argument("--big-items", type=int, default=1000,
                   help="1 MiB bytes items per round in part 2 (default "
                        "1,000)")
    p.add_argument("--view-items", type=int, default=100_000,
                   help="SharedBuffer views per round in part 2 (default "
                        "100,000)")
    p.add_argument("--round-trips", type=int, default=5_000,
                   help="ping-pong round trips per round in part 3 "
                        "(default 5,000)")
    p.add_argument("--rounds", type=int, default=7,
                   help="timed rounds in each part, after one warm-up "
                        "round (default 7)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 20,000 ints (multiprocessing 5,000), "
                        "20 1 MiB items, 5,000 views, 500 round trips, "
                        "1 round")
    args = p.parse_args(argv)
    if args.quick:
        args.ints, args.mp_ints, args.big_items = 20_000, 5_000, 20
        args.view_items = 5_000
        args.round_trips, args.rounds = 500, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    subinterp = _common.import_subinterp()
    cpy = CPythonQueues()
    _common.header("queues and channels between interpreters: subinterp vs "
                   "CPython's %s, multiprocessing, queue.Queue"
                   % (cpy.name or "(none)"),
                   subinterp=_common.describe_subinterp(subinterp))
    # Forked now, while no interpreter exists: CPython 3.12/3.13 cannot fork
    # a process that has sub-interpreters.
    mp_pair = MPPair()
    t = _common.Targets()
    try:
        bench_ints(args, subinterp, cpy, mp_pair, t)
        bench_big(args, subinterp, cpy, t)
        bench_ping_pong(args, subinterp, t)
    finally:
        mp_pair.close()
        cpy.close()
    t.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
