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
