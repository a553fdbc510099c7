"""Functions and classes that the tests run in other interpreters.

They are importable, so they travel by reference: the other interpreter
imports this module. Keep its imports light, so importing it there is cheap
and loads nothing that refuses to load in an isolated interpreter.
"""

import collections
import enum
import math
import os
import sys

import subinterp

# Objects this module keeps alive in the interpreter that imported it.
held = []

SCALE = 7


def identity(value):
    return value


def nargs(*args, **kwargs):
    return len(args) + len(kwargs)


def full_args(a, b, /, c, d=-4, *args, e, f=-6, **kwargs):
    return (a, b, c, d, args, e, f, kwargs)


def use_math(x):
    # Uses this module's global `math` in the other interpreter.
    return math.floor(x) + math.factorial(5)


def scaled(x):
    return x * SCALE


def get_sys_path():
    return list(sys.path)


def main_names():
    return sorted(vars(sys.modules['__main__']))


def get_main_attr(name, default=None):
    return vars(sys.modules['__main__']).get(name, default)


def current_id():
    return subinterp.get_current().id


def current_whence():
    return subinterp.get_current().whence


def is_running_self():
    return subinterp.get_current().is_running()


def interpreter_info(interp):
    return (type(interp).__module__, type(interp).__name__, interp.id,
            interp.whence)


def hold(obj):
    held.append(obj)
    return len(held)


def get_held():
    return list(held)


def release():
    held.clear()


def close_self():
    subinterp.get_current().close()


def close_other(interpid):
    subinterp.Interpreter(interpid).close()


def create_and_hold():
    interp = subinterp.create()
    held.append(interp)
    return interp.id


def call_in_other(interpid, func, *args):
    return subinterp.Interpreter(interpid).call(func, *args)


def fill(buf, value):
    mv = memoryview(buf)
    for i in range(len(mv)):
        mv[i] = value
    return len(mv)


def read_bytes(buf):
    return bytes(buf)


def make_shared(size, value):
    buf = subinterp.SharedBuffer(size)
    fill(buf, value)
    held.append(buf)
    return buf


def held_bytes(index):
    return bytes(held[index])


def mutate_bytearray(ba):
    ba[0] = 0
    return ba


def make_values():
    return {
        'none': None, 'bools': (True, False),
        'ints': [0, -1, 2**64, -(2**200)],
        'float': 1.25, 'complex': complex(1.5, -2),
        'str': 'h\u00e9llo \U0001f600', 'surrogate': '\udc80',
        'bytes': b'\x00\xff', 'bytearray': bytearray(b'ab'),
        'set': {1, 2}, 'frozenset': frozenset({'x'}),
        ('tuple', 'key'): ((), (1, (2, 3))),
    }


def make_lock():
    import threading
    return threading.Lock()


def make_adder(n):
    def add(x):
        return x + n
    return add


def raise_value_error(msg):
    raise ValueError(msg)


def raise_chained():
    try:
        raise_value_error('inner')
    except ValueError as exc:
        raise KeyError('outer') from exc


def raise_in_except():
    try:
        {}['missing']
    except KeyError:
        raise RuntimeError('while handling')


def raise_custom():
    raise CustomError('custom message')


def raise_nested_class():
    raise Outer.Inner('nested')


def raise_unpicklable():
    raise NeedsTwoArgs('a', 'b')


def raise_local_class():
    class LocalError(Exception):
        pass
    raise LocalError('local')


def raise_system_exit(code):
    sys.exit(code)


def recurse_forever(n=0):
    return recurse_forever(n + 1) + 1


def write_fd(fd, data):
    os.write(fd, data)


def read_fd(fd, n):
    return os.read(fd, n)


def block(rfd, wfd):
    # Tells the test it runs (b'S' on wfd), then blocks until the test
    # writes a byte to rfd, and returns it.
    os.write(wfd, b'S')
    return os.read(rfd, 1)


Pair = collections.namedtuple('Pair', 'left right')


class Color(enum.IntEnum):
    RED = 1
    GREEN = 2


class CustomError(Exception):
    pass


class NeedsTwoArgs(Exception):
    # Pickles, but unpickling calls NeedsTwoArgs(msg) and fails.
    def __init__(self, a, b):
        super().__init__(f'{a}-{b}')


class Outer:
    class Inner(Exception):
        pass


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __eq__(self, other):
        return (type(other) is type(self)
                and (self.x, self.y) == (other.x, other.y))

    def __repr__(self):
        return f'Point({self.x}, {self.y})'

    def norm2(self):
        return self.x * self.x + self.y * self.y


def spin_until_flag(view, seconds):
    """Set view[2], spin, never blocking, until view[0] is set; then set
    view[1].

    The switch interval is raised first, so that this interpreter's GIL is
    released only when the loop ends: another interpreter can set the flag
    meanwhile only if it has a GIL of its own. Gives up after `seconds`.
    """
    import time
    sys.setswitchinterval(60.0)
    deadline = time.monotonic() + seconds
    view[2] = 1
    while view[0] == 0:
        if time.monotonic() > deadline:
            return False
    view[1] = 1
    return True


def set_flag(view):
    view[0] = 1


# --- queues and channels -----------------------------------------------------

def held_same(i, j):
    return held[i] is held[j]


def is_main_attr(obj, name):
    return obj is vars(sys.modules['__main__'])[name]


def put_items(q, items):
    for item in items:
        q.put(item)
    return q.qsize()


def put_with_policies(q, entries):
    """Put each (item, policy) of `entries`; policy is a marker's name, or
    None for the queue's default."""
    for item, policy in entries:
        if policy is None:
            q.put(item)
        else:
            q.put(item, unbounditems=getattr(subinterp, policy))


def get_items(q, n, timeout=None):
    return [q.get(timeout=timeout) for _ in range(n)]


def get_outcome(q, timeout):
    """('ok', item) or ('error', name of the exception's type)."""
    try:
        return ('ok', q.get(timeout=timeout))
    except Exception as exc:
        return ('error', type(exc).__name__)


def get_from_queue_and_hold(q):
    held.append(q.get(timeout=10))
    return len(held) - 1


def get_queue_and_use(outer):
    # Gets a queue from `outer` and puts a reply into it.
    inner = outer.get(timeout=10)
    inner.put(('reply from', subinterp.get_current().id))
    return inner.id


def self_queue_roundtrip(q):
    got = q.get(timeout=10)
    same = got is q
    q.put(got)
    return same


def unbound_markers_there():
    return (subinterp.UNBOUND, subinterp.UNBOUND_ERROR,
            subinterp.UNBOUND_REMOVE)


def is_unbound_marker(q):
    return q.get(timeout=10) is subinterp.UNBOUND


def queue_default_is(q, name):
    return q.unbounditems is getattr(subinterp, name)


def produce(q, start, stop):
    put = q.put
    for i in range(start, stop):
        put(i, timeout=60)


def consume(q, results, n):
    """Get ints in range(n) from `q` until None; put into `results` a
    summary: (count, sum, duplicates seen, bitmap of the ints got)."""
    get = q.get
    bitmap = bytearray((n + 7) // 8)
    count = total = dups = 0
    while True:
        item = get(timeout=60)
        if item is None:
            break
        byte, bit = item >> 3, 1 << (item & 7)
        if bitmap[byte] & bit:
            dups += 1
        bitmap[byte] |= bit
        count += 1
        total += item
    results.put((count, total, dups, bytes(bitmap)))


def pack_doubles_and_put(q, values, keep):
    """Make a SharedBuffer, pack `values` into it as doubles and put it into
    `q`; keep it in `held` if `keep`."""
    import struct
    buf = subinterp.SharedBuffer(8 * len(values))
    struct.pack_into(f'{len(values)}d', buf, 0, *values)
    q.put(buf)
    if keep:
        held.append(buf)
    return len(held) - 1


def get_unpack_doubles_and_hold(q):
    import struct
    buf = q.get(timeout=10)
    held.append(buf)
    n = len(memoryview(buf)) // 8
    return type(buf).__name__, list(struct.unpack_from(f'{n}d', buf))


def unpack_held_doubles(index):
    import struct
    buf = held[index]
    n = memoryview(buf).nbytes // 8
    return list(struct.unpack_from(f'{n}d', buf))


def pack_held_double(index, position, value):
    import struct
    struct.pack_into('d', held[index], 8 * position, value)


def get_doubles_view(q):
    """Get a memoryview of doubles; describe it and copy it into arrays."""
    import array
    view = q.get(timeout=10)
    by_items = array.array('d', view)
    by_bytes = array.array('d')
    by_bytes.frombytes(view.cast('B'))
    return (type(view).__name__, view.format, view.itemsize, view.shape,
            view.readonly, list(by_items), list(by_bytes))


def recv_items(recv, n, timeout=None):
    return [recv.recv(timeout=timeout) for _ in range(n)]


def send_items(send, items, nowait=False):
    for item in items:
        if nowait:
            send.send_nowait(item)
        else:
            send.send(item, timeout=10)


def recv_and_hold(recv):
    held.append(recv.recv(timeout=10))
    return len(held) - 1


def recv_all(recv):
    return list(recv)


def recv_outcome(recv, timeout):
    try:
        return ('ok', recv.recv(timeout=timeout))
    except Exception as exc:
        return ('error', type(exc).__name__)


def send_outcome(send, obj, timeout):
    try:
        send.send(obj, timeout=timeout)
        return ('ok', None)
    except Exception as exc:
        return ('error', type(exc).__name__)


def recv_buffer_and_write(recv, value):
    """Receive a memoryview, fill it with `value`, return what it held and
    whether it is read-only."""
    view = recv.recv(timeout=10)
    before = bytes(view)
    readonly = view.readonly
    if not readonly:
        fill(view, value)
    return type(view).__name__, before, readonly


def echo_plus_one(recv, send, n):
    # The pong side: answers each of n ints with the int plus one.
    for _ in range(n):
        send.send_nowait(recv.recv(timeout=10) + 1)
    return n


def ping(send, recv, n):
    # The ping side: sends 0..n-1, checks each answer; returns the failures.
    bad = 0
    for i in range(n):
        send.send(i, timeout=10)
        if recv.recv(timeout=10) != i + 1:
            bad += 1
    return bad


def send_shared_buffer(send, size, value):
    """Make a SharedBuffer filled with `value`, keep it, send it with
    send_buffer() (waiting until received); return its index in `held`."""
    buf = make_shared(size, value)
    send.send_buffer(buf, timeout=10)
    return len(held) - 1


def send_self_and_hold(recv, send):
    # Sends a channel's own ends through it; True if they come back as the
    # same objects.
    send.send_nowait(send)
    send.send_nowait(recv)
    return recv.recv(timeout=10) is send and recv.recv(timeout=10) is recv


class FalseyError(Exception):
    """An exception whose bool() is false (gh-132063)."""

    def __bool__(self):
        return False


def raise_falsey(msg):
    raise FalseyError(msg)


# --- stdlib values (test_values) ---------------------------------------------

def value_namespace():
    """The modules the expressions of test_values use, imported here."""
    import collections
    import datetime
    import decimal
    import xml.etree.ElementTree as ET
    import zoneinfo
    return {'collections': collections, 'datetime': datetime,
            'decimal': decimal, 'ET': ET, 'zoneinfo': zoneinfo}


def evaluate(source):
    """The value of the expression `source`, made in this interpreter."""
    return eval(source, value_namespace())


def value_key(value):
    """What equal values share: Context and Element have no __eq__."""
    ns = value_namespace()
    if isinstance(value, ns['decimal'].Context):
        return repr(value)
    if isinstance(value, ns['ET'].Element):
        return ns['ET'].tostring(value)
    return value


def same_value(value, expected):
    """Whether `value` is `expected` made again here: of its very class (or,
    for a class, that class itself) and equal to it."""
    if isinstance(expected, type):
        return value is expected
    return type(value) is type(expected) and value_key(value) == value_key(expected)


def check_value(value, source):
    """Whether `value` arrived here as the value `source` makes here, and
    the module of its class."""
    return same_value(value, evaluate(source)), type(value).__module__


def raise_evaluated(source):
    """Raises the exception `source` makes (or evaluating it raises)."""
    raise evaluate(source)


def put_evaluated(queue, sources):
    """Puts the value of each expression, made here, on `queue`."""
    for source in sources:
        queue.put(evaluate(source))


def module_value(module, name):
    return module.__name__, getattr(module, name)


def import_module(name):
    import importlib
    return importlib.import_module(name)
