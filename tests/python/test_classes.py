"""Classes defined in a script's __main__ travel by value: with the functions
that use them, as values, and as the classes of instances (scripts run in a
subprocess, so that __main__ is the script)."""

import unittest

from helpers import ScriptTestBase

_CLASSES = '''
import dataclasses
import subinterp

class Base:
    kind = 'base'
    def __init__(self, x):
        self.x = x
    def value(self):
        return self.x
    @property
    def double(self):
        return self.x * 2
    @staticmethod
    def static():
        return 'static'
    @classmethod
    def name(cls):
        return cls.__name__

class Child(Base):
    __slots__ = ('y',)
    def value(self):
        return super().value() + 100     # the __class__ cell

@dataclasses.dataclass(frozen=True, order=True)
class Record:
    a: int
    b: str = 'z'
    tags: list = dataclasses.field(default_factory=list, repr=False)
    def total(self):
        return self.a + len(self.tags)

class AppError(Exception):
    pass
'''


class ClassesByValueTests(ScriptTestBase):

    def run_with_classes(self, body):
        return self.assert_script_ok(_CLASSES + body).splitlines()

    def test_methods_properties_slots_and_super(self):
        out = self.run_with_classes('''
def use(x):
    c = Child(x)
    c.y = 1
    return (c.value(), c.double, Child.static(), Child.name(), c.kind,
            isinstance(c, Base), Child.__slots__, Child.__qualname__,
            Child.__module__)
print(subinterp.create().call(use, 5))
''')
        self.assertEqual(out, [str((105, 10, 'static', 'Child', 'base', True,
                                    ('y',), 'Child', '__main__'))])

    def test_instances_travel_both_ways_as_the_script_class(self):
        out = self.run_with_classes('''
def make(x):
    return Base(x)
def triple(b):
    return type(b).__name__, b.value() * 3
interp = subinterp.create()
made = interp.call(make, 7)
print(type(made) is Base, made.x)
print(interp.call(triple, Base(4)))
print(interp.call(triple, [Base(1), Base(2)][1]))
''')
        self.assertEqual(out, ['True 7', "('Base', 12)", "('Base', 6)"])

    def test_class_as_a_value_and_one_class_across_calls(self):
        out = self.run_with_classes('''
def class_id(obj):
    return id(type(obj)), type(obj).__name__
interp = subinterp.create()
made = interp.call(Base, 9)           # the class itself is the callable
first = interp.call(class_id, Base(1))
second = interp.call(class_id, Base(2))
print(type(made) is Base, made.x, first == second, first[1])
''')
        self.assertEqual(out, ['True 9 True Base'])

    def test_dataclass_is_decorated_again(self):
        out = self.run_with_classes('''
def build(n):
    r = Record(n, tags=['t'])
    fields = [f.name for f in dataclasses.fields(Record)]
    try:
        r.a = 0
        frozen = False
    except dataclasses.FrozenInstanceError:
        frozen = True
    return repr(r), r.total(), fields, frozen, Record(1) < Record(2), r
interp = subinterp.create()
text, total, fields, frozen, ordered, back = interp.call(build, 3)
print(text, total, fields, frozen, ordered)
print(type(back) is Record, back == Record(3, tags=['t']))
''')
        self.assertEqual(out, [
            "Record(a=3, b='z') 4 ['a', 'b', 'tags'] True True",
            'True True'])

    def test_exception_class_of_the_script_is_raised_as_itself(self):
        out = self.run_with_classes('''
from subinterp.futures import InterpreterPoolExecutor
def fail(msg):
    raise AppError(msg)
with InterpreterPoolExecutor(1) as executor:
    try:
        executor.submit(fail, 'no').result()
    except AppError as exc:
        print('AppError', exc, type(exc.__cause__).__name__)
''')
        self.assertEqual(out, ['AppError no ExecutionFailed'])

    def test_class_whose_attribute_cannot_travel_falls_back(self):
        # The class cannot travel by value (a lock); the function still can,
        # naming the class by reference, which works where the target has a
        # class of that name in its __main__.
        out = self.assert_script_ok('''
import threading
import subinterp
class Holder:
    lock = threading.Lock()
    def __init__(self, x):
        self.x = x
def size(h):
    return h.x
interp = subinterp.create()
interp.exec('class Holder:\\n    pass\\n')
print(interp.call(size, Holder(3)))
try:
    subinterp.create().call(size, Holder(3))
except subinterp.NotShareableError as exc:
    # The argument cannot be made there (as in 3.14: "args not shareable",
    # caused by the failure there).
    print(type(exc).__name__, exc.__cause__.excinfo.type.__name__)
''').splitlines()
        self.assertEqual(out, ['3', 'NotShareableError AttributeError'])

    def test_a_class_the_target_defines_itself_is_not_replaced(self):
        out = self.assert_script_ok('''
import subinterp
class Thing:
    def who(self):
        return 'script'
def who(t):
    return t.who(), Thing().who()
interp = subinterp.create()
interp.exec('class Thing:\\n    def who(self):\\n        return "own"\\n')
print(interp.call(who, Thing()))
interp.exec('assert Thing().who() == "own"')
print('kept')
''').splitlines()
        # The instance is unpickled as the target's own Thing; the function
        # uses the script's class, made for it.
        self.assertEqual(out, ["('own', 'script')", 'kept'])


if __name__ == '__main__':
    unittest.main()
