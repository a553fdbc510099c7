"""What travels between interpreters, and as what.

- Stdlib values arrive as the receiver's own types. On CPython 3.12 an
  isolated interpreter refuses _datetime, _decimal and _zoneinfo and loads
  their pure-Python fallbacks, whose classes pickle under other names
  (_pydatetime.datetime); they must come back as datetime.datetime.
- Module objects of ModuleType subclasses (lazy modules) registered in
  sys.modules travel by name.
- Functions and classes of __main__ that pickle would name by reference
  (bound methods, lru_cache functions, partials, enums, named tuples, ABCs,
  classes with a metaclass) travel by value, and is_shareable() agrees with
  what really happens (scripts run in a subprocess, so that __main__ is the
  script).
"""

import contextlib
import importlib.util
import os
import sys
import tempfile
import textwrap
import types
import unittest

import subinterp
import targets
from helpers import ScriptTestBase, TestBase
from subinterp.futures import InterpreterPoolExecutor

# Expressions of stdlib values, evaluated in each interpreter with the
# modules of targets.value_namespace().
STDLIB_VALUES = [
    "datetime.date(2020, 1, 2)",
    "datetime.time(1, 2, 3, 4)",
    "datetime.time(1, 2, 3, tzinfo=datetime.timezone.utc)",
    "datetime.datetime(2020, 1, 2, 3, 4, 5, 6)",
    "datetime.datetime(2020, 1, 2, 3, tzinfo=datetime.timezone("
    "datetime.timedelta(hours=2), 'X'))",
    "datetime.datetime(2020, 6, 1, 12, tzinfo=zoneinfo.ZoneInfo('Europe/Paris'))",
    "datetime.timedelta(days=1, seconds=2, microseconds=3)",
    "datetime.timezone(datetime.timedelta(hours=-5))",
    "datetime.timezone(datetime.timedelta(minutes=90), 'odd')",
    "datetime.timezone.utc",
    "zoneinfo.ZoneInfo('Europe/Paris')",
    "zoneinfo.ZoneInfo('UTC')",
    "decimal.Decimal('1.25')",
    "decimal.Decimal('-Infinity')",
    "decimal.Context(prec=5, rounding=decimal.ROUND_DOWN, "
    "traps=[decimal.InvalidOperation])",
    "collections.OrderedDict(a=1, b=2)",
    "(lambda e: (ET.SubElement(e, 'x').__setattr__('text', 't'), e)[1])"
    "(ET.Element('a', {'b': 'c'}))",
    # The classes themselves, and exception classes.
    "datetime.datetime", "datetime.date", "datetime.time", "datetime.timedelta",
    "datetime.timezone", "datetime.tzinfo", "decimal.Decimal", "decimal.Context",
    "decimal.InvalidOperation", "decimal.DivisionByZero", "zoneinfo.ZoneInfo",
    "ET.Element",
    # Inside containers and pickled objects.
    "[datetime.date(2021, 3, 4), {'d': decimal.Decimal('2.5')}]",
    "collections.OrderedDict(when=datetime.datetime(2020, 1, 1), "
    "zone=zoneinfo.ZoneInfo('UTC'))",
]

# Exceptions of those modules, raised in an interpreter.
STDLIB_ERRORS = [
    ("decimal.Decimal(0) / decimal.Decimal(0)", 'decimal', 'InvalidOperation'),
    ("decimal.Decimal(1) / decimal.Decimal(0)", 'decimal', 'DivisionByZero'),
    ("decimal.InvalidOperation('bad', datetime.date(2020, 1, 2))", 'decimal',
     'InvalidOperation'),
    ("zoneinfo.ZoneInfo('No/Such_Zone')", 'zoneinfo', 'ZoneInfoNotFoundError'),
    ("ValueError(datetime.datetime(2020, 1, 2), decimal.Decimal('3'))",
     'builtins', 'ValueError'),
]


class StdlibValuesTests(TestBase):
    """Each value, in both directions, arrives as the receiving
    interpreter's own type and equal to the original."""

    @classmethod
    def setUpClass(cls):
        cls.interp = subinterp.create()

    @classmethod
    def tearDownClass(cls):
        cls.interp.close()

    def setUp(self):
        super().setUp()
        self._before.add(self.interp.id)

    def test_round_trip_comes_back_as_the_callers_type(self):
        for source in STDLIB_VALUES:
            with self.subTest(source):
                value = targets.evaluate(source)
                self.assertTrue(subinterp.is_shareable(value))
                back = self.interp.call(targets.identity, value)
                self.assertTrue(targets.same_value(back, value),
                                f'{back!r} ({type(back)}) != {value!r}')

    def test_arrives_as_the_receivers_own_type(self):
        for source in STDLIB_VALUES:
            with self.subTest(source):
                same, module = self.interp.call(
                    targets.check_value, targets.evaluate(source), source)
                self.assertTrue(same, f'arrived as a {module} object')

    def test_values_made_in_the_other_interpreter(self):
        for source in STDLIB_VALUES:
            with self.subTest(source):
                made = self.interp.call(targets.evaluate, source)
                self.assertTrue(targets.same_value(made, targets.evaluate(source)),
                                f'{made!r} is a {type(made)}')

    def test_values_through_a_queue(self):
        queue = subinterp.create_queue()
        self.interp.call(targets.put_evaluated, queue, STDLIB_VALUES)
        for source in STDLIB_VALUES:
            with self.subTest(source):
                self.assertTrue(targets.same_value(queue.get(timeout=10),
                                                   targets.evaluate(source)))

    def test_zoneinfo_imports_in_an_isolated_interpreter(self):
        self.assertEqual(self.interp.call(targets.evaluate, "str(zoneinfo.ZoneInfo('UTC'))"),
                         'UTC')

    def test_exceptions_rebuild_as_the_callers_classes(self):
        for source, module, name in STDLIB_ERRORS:
            with self.subTest(source):
                with self.assertRaises(subinterp.ExecutionFailed) as cm:
                    self.interp.call(targets.raise_evaluated, source)
                original = cm.exception.excinfo.rebuild()
                cls = getattr(sys.modules[module], name)
                self.assertIs(type(original), cls)
                homes = {'date': 'datetime', 'datetime': 'datetime', 'Decimal': 'decimal'}
                for arg in original.args:
                    home = homes.get(type(arg).__name__)
                    if home is not None:
                        self.assertIs(type(arg), getattr(sys.modules[home], type(arg).__name__))

    def test_executor_reraises_the_callers_classes(self):
        import decimal
        import zoneinfo
        with InterpreterPoolExecutor(1) as executor:
            future = executor.submit(targets.raise_evaluated,
                                     "decimal.Decimal(0) / decimal.Decimal(0)")
            with self.assertRaises(decimal.InvalidOperation):
                future.result()
            future = executor.submit(targets.raise_evaluated,
                                     "zoneinfo.ZoneInfo('No/Such_Zone')")
            with self.assertRaises(zoneinfo.ZoneInfoNotFoundError):
                future.result()
            for source in ("datetime.datetime(2020, 1, 2, tzinfo=datetime.timezone.utc)",
                           "decimal.Decimal('7.5')"):
                made = executor.submit(targets.evaluate, source).result()
                self.assertTrue(targets.same_value(made, targets.evaluate(source)))


@contextlib.contextmanager
def module_file(name, text):
    """A module `name` on sys.path (for interpreters created in the block)."""
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, f'{name}.py'), 'w', encoding='utf-8') as f:
            f.write(textwrap.dedent(text))
        sys.path.insert(0, tmp)
        try:
            yield tmp
        finally:
            sys.path.remove(tmp)
            sys.modules.pop(name, None)


class ModuleSubclassTests(TestBase):

    def test_lazy_module_registered_in_sys_modules_travels_by_name(self):
        with module_file('lazy_target_mod', 'VALUE = 42\n'):
            spec = importlib.util.find_spec('lazy_target_mod')
            loader = importlib.util.LazyLoader(spec.loader)
            spec.loader = loader
            module = importlib.util.module_from_spec(spec)
            sys.modules['lazy_target_mod'] = module
            loader.exec_module(module)
            self.assertIsNot(type(module), types.ModuleType)
            self.assertTrue(subinterp.is_shareable(module))
            interp = subinterp.create()
            self.assertEqual(interp.call(targets.module_value, module, 'VALUE'),
                             ('lazy_target_mod', 42))
            back = interp.call(targets.import_module, 'lazy_target_mod')
            self.assertIs(back, sys.modules['lazy_target_mod'])

    def test_module_subclass_registered_under_its_name(self):
        class Lazy(types.ModuleType):
            pass
        with module_file('lazy_kombu_like', 'VALUE = "real"\n'):
            lazy = Lazy('lazy_kombu_like')
            sys.modules['lazy_kombu_like'] = lazy
            self.assertTrue(subinterp.is_shareable(lazy))
            self.assertEqual(subinterp.create().call(targets.module_value, lazy, 'VALUE'),
                             ('lazy_kombu_like', 'real'))

    def test_unregistered_module_subclass_is_refused(self):
        class Lazy(types.ModuleType):
            pass
        loose = Lazy('lazy_nowhere')
        self.assertFalse(subinterp.is_shareable(loose))
        with self.assertRaises(subinterp.NotShareableError):
            subinterp.create().call(targets.identity, loose)
        # Another object holds its name in sys.modules: not this one.
        other = Lazy('os')
        self.assertFalse(subinterp.is_shareable(other))

    def test_plain_modules_still_travel_by_name(self):
        self.assertIs(subinterp.create().call(targets.identity, os), os)


# --- functions and classes of __main__ ---------------------------------------

# Runs each case: prints its label, whether is_shareable() said yes for the
# callable and every argument, and the outcome: 'ok <repr of the checks>',
# or the exception raised (its class and the first line of its message).
_RUNNER = '''
import subinterp

def run(cases):
    interp = subinterp.create()
    for label, func, args in cases:
        shareable = all(subinterp.is_shareable(x) for x in (func, *args))
        try:
            outcome = 'ok ' + repr(interp.call(func, *args))
        except subinterp.ExecutionFailed as exc:
            outcome = 'failed ' + exc.excinfo.type.__name__
        except Exception as exc:
            outcome = type(exc).__name__ + ' ' + str(exc).splitlines()[0]
        print(label, shareable, outcome)
'''

_DEFINITIONS = '''
import abc
import array
import collections
import enum
import functools
import typing

class K:
    def __init__(self, v):
        self.v = v
    def m(self, a):
        return self.v + a
    @classmethod
    def cm(cls, a):
        return cls.__name__ + str(a)
    @staticmethod
    def sm(a):
        return a * 2

class Inner:
    def __init__(self, n):
        self.n = n

class Outer:
    def __init__(self, n):
        self.inner = Inner(n)

@functools.lru_cache(maxsize=32, typed=True)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

@functools.cache
def square(n):
    return n * n

def add(a, b, c=0):
    return a + b + c

class Color(enum.Enum):
    RED = 1
    GREEN = 2
    CRIMSON = 1
    def lower(self):
        return self.name.lower()
    @classmethod
    def default(cls):
        return cls.RED

class Perm(enum.IntFlag):
    R = 4
    W = 2
    X = 1

class Level(enum.IntEnum):
    LOW = enum.auto()
    HIGH = enum.auto()

Animal = enum.Enum('Animal', 'CAT DOG')

class Shape(abc.ABC):
    @abc.abstractmethod
    def area(self): ...
    def twice(self):
        return 2 * self.area()

class Square(Shape):
    def __init__(self, side):
        self.side = side
    def area(self):
        return self.side ** 2

class Point(typing.NamedTuple):
    x: int
    y: int = 2
    def total(self):
        return self.x + self.y

Pair = collections.namedtuple('Pair', 'a b', defaults=[0])

class Registry(type):
    def __new__(meta, name, bases, ns):
        ns['tag'] = name.lower()
        return super().__new__(meta, name, bases, ns)
    def describe(cls):
        return 'registered ' + cls.tag

class Plugin(metaclass=Registry):
    def hello(self):
        return 'hello from ' + self.tag
'''


class MainByValueTests(ScriptTestBase):

    def run_cases(self, body):
        out = self.assert_script_ok(_RUNNER + _DEFINITIONS + body)
        return {line.split(' ', 1)[0]: line.split(' ', 1)[1]
                for line in out.splitlines()}

    def assertTravels(self, results, label, checks):
        self.assertEqual(results[label], f'True ok {checks!r}', label)

    def test_bound_methods_and_classmethods(self):
        results = self.run_cases('''
run([
    ('bound', K(1).m, (2,)),
    ('classmethod', K.cm, (3,)),
    ('staticmethod', K.sm, (4,)),
    ('bound_arg', lambda f: (f(5), type(f.__self__) is K), (K(10).m,)),
    ('bound_in_list', lambda fs: [f(1) for f in fs], ([K(1).m, K(2).m],)),
])
interp = subinterp.create()
made = interp.call(lambda: K(7).m)
print('made', type(made.__self__) is K, made(1))
''')
        self.assertTravels(results, 'bound', 3)
        self.assertTravels(results, 'classmethod', 'K3')
        self.assertTravels(results, 'staticmethod', 8)
        self.assertTravels(results, 'bound_arg', (15, True))
        self.assertTravels(results, 'bound_in_list', [2, 3])
        self.assertEqual(results['made'], 'True 8')

    def test_lru_cache_functions(self):
        results = self.run_cases('''
def use_fib(n):
    return fib(n), fib.cache_parameters(), fib.cache_info().hits > 0
run([
    ('fib', fib, (30,)),
    ('fib_params', lambda f: (f(10), f.cache_parameters(), f.__wrapped__.__name__), (fib,)),
    ('fib_global', use_fib, (20,)),
    ('cache', square, (9,)),
    ('cache_params', lambda f: f.cache_parameters(), (square,)),
    ('in_list', lambda fs: [f(3) for f in fs], ([fib, square],)),
])
''')
        self.assertTravels(results, 'fib', 832040)
        self.assertTravels(results, 'fib_params',
                           (55, {'maxsize': 32, 'typed': True}, 'fib'))
        self.assertTravels(results, 'fib_global',
                           (6765, {'maxsize': 32, 'typed': True}, True))
        self.assertTravels(results, 'cache', 81)
        self.assertTravels(results, 'cache_params', {'maxsize': None, 'typed': False})
        self.assertTravels(results, 'in_list', [2, 9])

    def test_partials(self):
        results = self.run_cases('''
run([
    ('partial', functools.partial(add, 1), (2,)),
    ('keywords', functools.partial(add, 1, c=10), (2,)),
    ('of_lambda', functools.partial(lambda a, b: a * b, 6), (7,)),
    ('as_arg', lambda p: p(1), (functools.partial(add, 2, 3),)),
    ('of_cached', functools.partial(fib, 10), ()),
])
''')
        self.assertTravels(results, 'partial', 3)
        self.assertTravels(results, 'keywords', 13)
        self.assertTravels(results, 'of_lambda', 42)
        self.assertTravels(results, 'as_arg', 6)
        self.assertTravels(results, 'of_cached', 55)

    def test_enums(self):
        results = self.run_cases('''
run([
    ('member', lambda c: (type(c) is Color, c is Color.RED, c.lower()), (Color.RED,)),
    ('alias', lambda: (Color.CRIMSON is Color.RED, [c.name for c in Color]), ()),
    ('classmethod', lambda: Color.default().value, ()),
    ('flag', lambda p: (p, Perm.R in p, int(p)), (Perm.R | Perm.W,)),
    ('intenum', lambda l: (l == 2, l > Level.LOW), (Level.HIGH,)),
    ('functional', lambda a: a.name, (Animal.DOG,)),
    ('class', lambda c: [m.value for m in c], (Color,)),
])
interp = subinterp.create()
print('made', interp.call(lambda: Color.GREEN) is Color.GREEN,
      interp.call(lambda: Perm.R | Perm.X) == Perm.R | Perm.X,
      type(interp.call(lambda: Perm.R | Perm.X)) is Perm,
      interp.call(lambda: Animal.CAT) is Animal.CAT,
      interp.call(lambda: Level.LOW) is Level.LOW)
''')
        self.assertTravels(results, 'member', (True, True, 'red'))
        self.assertTravels(results, 'alias', (True, ['RED', 'GREEN']))
        self.assertTravels(results, 'classmethod', 1)
        self.assertEqual(results['flag'].split(' ', 2)[:2], ['True', 'ok'])
        self.assertTrue(results['flag'].endswith(', True, 6)'), results['flag'])
        self.assertTravels(results, 'intenum', (True, True))
        self.assertTravels(results, 'functional', 'DOG')
        self.assertTravels(results, 'class', [1, 2])
        self.assertEqual(results['made'], 'True True True True True')

    def test_named_tuples(self):
        results = self.run_cases('''
run([
    ('typing', lambda p: (type(p) is Point, p.total(), p._replace(x=5), p._asdict()),
     (Point(1),)),
    ('collections', lambda p: (type(p) is Pair, p, p._fields), (Pair(1),)),
    ('make', lambda: Point._make([3, 4]).total(), ()),
])
interp = subinterp.create()
p = interp.call(lambda: Point(5))
q = interp.call(lambda: Pair(3, 4))
print('made', type(p) is Point, p == Point(5, 2), type(q) is Pair, q == Pair(3, 4))
''')
        self.assertEqual(results['typing'],
                         "True ok (True, 3, Point(x=5, y=2), {'x': 1, 'y': 2})")
        self.assertEqual(results['collections'], "True ok (True, Pair(a=1, b=0), ('a', 'b'))")
        self.assertTravels(results, 'make', 7)
        self.assertEqual(results['made'], 'True True True True')

    def test_abcs_and_metaclasses(self):
        results = self.run_cases('''
def abstract_refused():
    try:
        Shape()
    except TypeError:
        return 'refused'
run([
    ('abc', lambda s: (s.twice(), isinstance(s, Shape), type(s) is Square), (Square(3),)),
    ('abstract', abstract_refused, ()),
    ('metaclass', lambda p: (p.hello(), type(type(p)) is Registry, Plugin.describe()),
     (Plugin(),)),
    ('metaclass_made', lambda: Plugin().hello(), ()),
])
interp = subinterp.create()
s = interp.call(lambda: Square(2))
print('made', type(s) is Square, s.area(), type(interp.call(lambda: Plugin())) is Plugin)
''')
        self.assertTravels(results, 'abc', (18, True, True))
        self.assertTravels(results, 'abstract', 'refused')
        self.assertTravels(results, 'metaclass',
                           ('hello from plugin', True, 'registered plugin'))
        self.assertTravels(results, 'metaclass_made', 'hello from plugin')
        self.assertEqual(results['made'], 'True 4 True')

    def test_classes_of_objects_inside_instances(self):
        results = self.run_cases('''
run([
    ('nested', lambda o: (type(o.inner).__name__, o.inner.n), (Outer(4),)),
    ('in_dict', lambda d: d['k'].n, ({'k': Inner(6)},)),
    # After payloads that pickle writes outside its frames.
    ('after_bytes', lambda d: (len(d['big']), d['obj'].n),
     (collections.OrderedDict(big=bytes(300000), obj=Inner(5)),)),
    ('after_str', lambda d: (len(d['big']), d['obj'].n),
     (collections.OrderedDict(big='x' * 300000, obj=Inner(7)),)),
    ('after_arrays', lambda d: (len(d['a']), len(d['b']), d['obj'].n),
     (collections.OrderedDict(a=array.array('d', bytes(800000)),
                              b=array.array('b', bytes(70000)), obj=Inner(9)),)),
])
o = subinterp.create().call(lambda: Outer(8))
print('made', type(o) is Outer, type(o.inner) is Inner, o.inner.n)
''')
        self.assertTravels(results, 'nested', ('Inner', 4))
        self.assertTravels(results, 'in_dict', 6)
        self.assertTravels(results, 'after_bytes', (300000, 5))
        self.assertTravels(results, 'after_str', (300000, 7))
        self.assertTravels(results, 'after_arrays', (100000, 70000, 9))
        self.assertEqual(results['made'], 'True True 8')

    def test_what_cannot_travel_is_refused_before_the_call(self):
        results = self.run_cases('''
class Coord(bytes, enum.Enum):
    def __new__(cls, value, label):
        obj = bytes.__new__(cls, [value])
        obj._value_ = value
        obj.label = label
        return obj
    X = (1, 'x')

class Node:
    def __init__(self, v):
        self.v = v
Node.root = Node(0)

run([
    ('own_new_enum', lambda c: c.label, (Coord.X,)),
    ('own_new_enum_class', lambda c: c, (Coord,)),
    ('own_new_enum_used', lambda: Coord.X.label, ()),
    ('self_instances', lambda n: n.v, (Node(1),)),
    ('cached_builtin', functools.lru_cache(maxsize=4)(len), ([1, 2],)),
])
''')
        for label, reason in [
                ('own_new_enum', 'has its own __new__'),
                ('own_new_enum_class', 'has its own __new__'),
                ('own_new_enum_used', 'has its own __new__'),
                ('self_instances', 'holds instances of itself'),
                ('cached_builtin', 'caches a callable that is not a function')]:
            with self.subTest(label):
                self.assertTrue(results[label].startswith('False NotShareableError '),
                                results[label])
                self.assertIn(reason, results[label])


if __name__ == '__main__':
    unittest.main()
