"""Queues shared by interpreters (PEP 734's Queue, as Python 3.14's
concurrent.interpreters defines it, plus Queue.close())."""

import gc
import os
import pickle
import queue
import textwrap
import threading
import time
import unittest

import subinterp
import targets
from helpers import SAFETY, SETTLE, UNDER_SANITIZER, Call, ScriptTestBase, TestBase, elapsed

TESTS_DIR = os.path.dirname(os.path.abspath(targets.__file__))

class ModuleTests(unittest.TestCase):

    def test_names(self):
        for name in ('create_queue', 'Queue', 'QueueError',
                     'QueueNotFoundError', 'QueueEmpty', 'QueueFull',
                     'ItemInterpreterDestroyed', 'UNBOUND', 'UNBOUND_ERROR',
                     'UNBOUND_REMOVE'):
            self.assertIn(name, subinterp.__all__)
            self.assertTrue(hasattr(subinterp, name), name)
        self.assertIs(subinterp.Queue, subinterp.queues.Queue)
        self.assertIs(subinterp.create_queue, subinterp.queues.create)

    def test_exception_hierarchy(self):
        self.assertTrue(issubclass(subinterp.QueueError, RuntimeError))
        for name in ('QueueNotFoundError', 'QueueEmpty', 'QueueFull',
                     'ItemInterpreterDestroyed'):
            self.assertTrue(issubclass(getattr(subinterp, name),
                                       subinterp.QueueError), name)
        self.assertTrue(issubclass(subinterp.QueueEmpty, queue.Empty))
        self.assertTrue(issubclass(subinterp.QueueFull, queue.Full))
        self.assertFalse(issubclass(subinterp.QueueEmpty, queue.Full))

    def test_markers(self):
        self.assertEqual(repr(subinterp.UNBOUND), 'subinterp.queues.UNBOUND')
        self.assertEqual(repr(subinterp.UNBOUND_ERROR),
                         'subinterp.queues.UNBOUND_ERROR')
        with self.assertRaises(TypeError):
            type(subinterp.UNBOUND)()
        for marker in (subinterp.UNBOUND, subinterp.UNBOUND_ERROR,
                       subinterp.UNBOUND_REMOVE):
            self.assertIs(pickle.loads(pickle.dumps(marker)), marker)

    def test_docstrings(self):
        for obj in (subinterp.Queue, subinterp.create_queue,
                    subinterp.QueueEmpty, subinterp.ItemInterpreterDestroyed):
            self.assertTrue(obj.__doc__)


class QueueTests(TestBase):

    def test_create_defaults(self):
        q = subinterp.create_queue()
        self.assertIsInstance(q, subinterp.Queue)
        self.assertIsInstance(q.id, int)
        self.assertEqual(q.maxsize, 0)
        self.assertIs(q.unbounditems, subinterp.UNBOUND)
        self.assertFalse(q.is_closed)
        self.assertTrue(q.empty())
        self.assertFalse(q.full())
        self.assertEqual(q.qsize(), 0)
        self.assertIn(q, subinterp.queues.list_all())

    def test_create_with_arguments(self):
        for marker in (subinterp.UNBOUND, subinterp.UNBOUND_ERROR,
                       subinterp.UNBOUND_REMOVE):
            q = subinterp.create_queue(3, unbounditems=marker)
            self.assertEqual(q.maxsize, 3)
            self.assertIs(q.unbounditems, marker)

    def test_maxsize_below_one_is_unbounded_and_kept(self):
        # As in Python 3.14: 0 or less means unbounded, and maxsize reports
        # the value given, in every interpreter.
        for maxsize in (0, -1, -10):
            with self.subTest(maxsize=maxsize):
                q = subinterp.create_queue(maxsize)
                self.assertEqual(q.maxsize, maxsize)
                for i in range(100):
                    q.put_nowait(i)
                self.assertFalse(q.full())
                self.assertEqual(q.qsize(), 100)
        with subinterp.create() as interp:
            q = subinterp.create_queue(-10)
            self.assertEqual(interp.call(getattr, q, 'maxsize'), -10)

    def test_maxsize_values_as_in_3_14(self):
        # A bool is an int (3.14's argument is a Py_ssize_t); values that do
        # not fit one raise OverflowError; None and floats TypeError.
        self.assertEqual(subinterp.create_queue(True).maxsize, 1)
        self.assertEqual(subinterp.create_queue(False).maxsize, 0)
        self.assertEqual(subinterp.create_queue(2**62).maxsize, 2**62)
        self.assertEqual(subinterp.create_queue(-2**62).maxsize, -2**62)
        for bad in (2**63, -2**63 - 1, 2**70):
            with self.subTest(maxsize=bad):
                with self.assertRaises(OverflowError):
                    subinterp.create_queue(bad)
        for bad in (None, 1.0, '1'):
            with self.subTest(maxsize=bad):
                with self.assertRaises(TypeError):
                    subinterp.create_queue(bad)

    def test_distinct_ids(self):
        a, b = subinterp.create_queue(), subinterp.create_queue()
        self.assertNotEqual(a.id, b.id)
        self.assertIsNot(a, b)
        self.assertNotEqual(a, b)
        ids = [q.id for q in subinterp.queues.list_all()]
        self.assertIn(a.id, ids)
        self.assertIn(b.id, ids)

    def test_fifo(self):
        q = subinterp.create_queue()
        items = [1, 'two', (3, 3.5), None, {'k': [b'v']}, 2**100]
        for item in items:
            q.put(item)
        self.assertEqual(q.qsize(), len(items))
        self.assertEqual([q.get() for _ in items], items)
        self.assertTrue(q.empty())

    def test_nowait_forms(self):
        q = subinterp.create_queue(2)
        q.put_nowait('a')
        self.assertFalse(q.full())
        q.put_nowait('b')
        self.assertTrue(q.full())
        self.assertFalse(q.empty())
        self.assertEqual(q.qsize(), 2)
        with self.assertRaises(subinterp.QueueFull):
            q.put_nowait('c')
        with self.assertRaises(subinterp.QueueFull):
            q.put('c', block=False)
        self.assertEqual(q.qsize(), 2)
        self.assertEqual(q.get_nowait(), 'a')
        self.assertEqual(q.get(block=False), 'b')
        with self.assertRaises(subinterp.QueueEmpty):
            q.get_nowait()
        with self.assertRaises(subinterp.QueueEmpty):
            q.get(block=False)
        with self.assertRaises(subinterp.QueueEmpty):
            q.get(timeout=0)

    def test_errors_caught_as_queue_module_errors(self):
        q = subinterp.create_queue(1)
        with self.assertRaises(queue.Empty):
            q.get_nowait()
        q.put(1)
        with self.assertRaises(queue.Full):
            q.put_nowait(2)
        with self.assertRaises(subinterp.QueueError):
            q.put_nowait(2)

    def test_values_are_copies(self):
        q = subinterp.create_queue()
        item = [1, [2]]
        q.put(item)
        item[1].append(3)
        got = q.get()
        self.assertEqual(got, [1, [2]])
        self.assertIsNot(got, item)

    def test_custom_class_by_pickle(self):
        q = subinterp.create_queue()
        q.put(targets.Point(1, 2))
        self.assertEqual(q.get(), targets.Point(1, 2))

    def test_one_object_per_id(self):
        q = subinterp.create_queue()
        self.assertIs(subinterp.Queue(q.id), q)
        self.assertIs(subinterp.Queue(q.id), subinterp.Queue(q.id))
        self.assertEqual(hash(q), hash(subinterp.Queue(q.id)))

    def test_repr_and_pickle(self):
        q = subinterp.create_queue()
        self.assertEqual(repr(q), f'Queue({q.id})')
        self.assertIs(pickle.loads(pickle.dumps(q)), q)

    def test_unknown_id(self):
        with self.assertRaises(subinterp.QueueNotFoundError):
            subinterp.Queue(2**40)

    def test_close(self):
        q = subinterp.create_queue()
        q.put(1)
        qid = q.id
        q.close()
        self.assertTrue(q.is_closed)
        with self.assertRaises(subinterp.QueueNotFoundError):
            subinterp.Queue(qid)
        with self.assertRaises(subinterp.QueueNotFoundError):
            q.get_nowait()
        with self.assertRaises(subinterp.QueueNotFoundError):
            q.get(timeout=1)
        with self.assertRaises(subinterp.QueueNotFoundError):
            q.put(2)
        self.assertEqual(q.qsize(), 0)  # the items were dropped
        self.assertNotIn(qid, [x.id for x in subinterp.queues.list_all()])
        q.close()  # a second close does nothing

    def test_released_queue_is_gone(self):
        q = subinterp.create_queue()
        qid = q.id
        del q
        gc.collect()
        with self.assertRaises(subinterp.QueueNotFoundError):
            subinterp.Queue(qid)
        self.assertNotIn(qid, [x.id for x in subinterp.queues.list_all()])

    def test_held_by_other_interpreter(self):
        interp = subinterp.create()
        q = subinterp.create_queue()
        q.put('kept')
        qid = q.id
        interp.call(targets.hold, q)
        del q
        gc.collect()
        # Still alive: the other interpreter holds it.
        q = subinterp.Queue(qid)
        self.assertEqual(q.get_nowait(), 'kept')
        del q
        gc.collect()
        interp.call(targets.release)
        with self.assertRaises(subinterp.QueueNotFoundError):
            subinterp.Queue(qid)

    def test_released_when_holder_closes(self):
        interp = subinterp.create()
        qid = interp.call(lambda: targets.hold(subinterp.create_queue()) and
                          targets.get_held()[-1].id)
        self.assertEqual(subinterp.Queue(qid).id, qid)
        gc.collect()
        interp.close()
        with self.assertRaises(subinterp.QueueNotFoundError):
            subinterp.Queue(qid)

    def test_bad_arguments(self):
        q = subinterp.create_queue(1)
        with self.assertRaises(ValueError):
            q.get(timeout=-1)
        with self.assertRaises(ValueError):
            q.get(timeout=-0.001)
        with self.assertRaises(ValueError):
            q.put(1, timeout=-1)
        with self.assertRaises(TypeError):
            q.get(timeout='1')
        with self.assertRaises(TypeError):
            q.put(1, unknown=True)
        with self.assertRaises(TypeError):
            q.get_nowait(1)
        self.assertEqual(q.qsize(), 0)
        for bad in ('UNBOUND', object(), 1):
            with self.subTest(unbounditems=bad):
                with self.assertRaises(ValueError):
                    subinterp.create_queue(unbounditems=bad)
                with self.assertRaises(ValueError):
                    q.put(1, unbounditems=bad)
                with self.assertRaises(ValueError):
                    q.put_nowait(1, unbounditems=bad)
        self.assertEqual(q.qsize(), 0)
        for bad in ('1', 1.0, None, [1]):
            with self.subTest(id=bad):
                with self.assertRaises(TypeError):
                    subinterp.Queue(bad)
        with self.assertRaises(TypeError):
            subinterp.create_queue('3')
        with self.assertRaises(TypeError):
            subinterp.create_queue(0, subinterp.UNBOUND)  # keyword-only


class NotShareableTests(TestBase):

    def test_refused_and_nothing_added(self):
        q = subinterp.create_queue()
        q.put('before')
        lock = threading.Lock()
        for bad in (lock, (i for i in range(3)), [1, {'k': lock}]):
            with self.subTest(bad=type(bad).__name__):
                with self.assertRaises(subinterp.NotShareableError):
                    q.put(bad)
                with self.assertRaises(subinterp.NotShareableError):
                    q.put_nowait(bad)
                self.assertEqual(q.qsize(), 1)
        self.assertEqual(q.get_nowait(), 'before')
        self.assertTrue(q.empty())

    def test_message_names_path(self):
        q = subinterp.create_queue()
        with self.assertRaises(subinterp.NotShareableError) as cm:
            q.put([1, threading.Lock()])
        self.assertIn('lock', str(cm.exception))
        self.assertIn('[1]', str(cm.exception))

    def test_refused_on_full_queue_without_waiting(self):
        q = subinterp.create_queue(1)
        q.put(1)
        took, error = elapsed(q.put, threading.Lock(), timeout=1)
        self.assertIsInstance(error, subinterp.NotShareableError)
        self.assertLess(took, 0.5)


class SharingTests(TestBase):

    def test_via_call_arguments(self):
        interp = subinterp.create()
        q = subinterp.create_queue()
        self.assertEqual(interp.call(targets.put_items, q, [1, 'b']), 2)
        self.assertEqual([q.get_nowait(), q.get_nowait()], [1, 'b'])
        q.put('to there')
        self.assertEqual(interp.call(targets.get_items, q, 1, 1), ['to there'])
        self.assertTrue(q.empty())

    def test_same_object_in_other_interpreter(self):
        interp = subinterp.create()
        q = subinterp.create_queue()
        interp.call(targets.hold, q)
        interp.call(targets.hold, q)
        self.assertTrue(interp.call(targets.held_same, 0, 1))
        carrier = subinterp.create_queue()
        carrier.put(q)
        self.assertEqual(interp.call(targets.get_from_queue_and_hold,
                                     carrier), 2)
        self.assertTrue(interp.call(targets.held_same, 0, 2))
        # ... and it comes back here as ours.
        self.assertIs(interp.call(targets.identity, q), q)
        self.assertIs(interp.call(lambda: targets.get_held()[0]), q)

    def test_via_prepare_main(self):
        interp = subinterp.create()
        q = subinterp.create_queue()
        interp.prepare_main(q=q)
        interp.exec('q.put("from __main__"); q.put(q.id)')
        self.assertEqual(q.get_nowait(), 'from __main__')
        self.assertEqual(q.get_nowait(), q.id)
        interp.call(targets.hold, q)
        self.assertTrue(interp.call(targets.is_main_attr, q, 'q'))
        self.assertIs(interp.call(targets.get_main_attr, 'q'), q)

    def test_through_another_queue(self):
        interp = subinterp.create()
        outer = subinterp.create_queue()
        inner = subinterp.create_queue()
        outer.put(inner)
        self.assertEqual(interp.call(targets.get_queue_and_use, outer),
                         inner.id)
        self.assertEqual(inner.get_nowait(), ('reply from', interp.id))
        # A queue made there arrives here as the same queue.
        interp.exec('import subinterp\n'
                    'made = subinterp.create_queue(7)\n'
                    'made.put("inside")\n'
                    f'subinterp.Queue({outer.id}).put(made)\n')
        made = outer.get_nowait()
        self.assertIs(made, interp.call(targets.get_main_attr, 'made'))
        self.assertIs(made, subinterp.Queue(made.id))
        self.assertEqual(made.maxsize, 7)
        self.assertEqual(made.get_nowait(), 'inside')

    def test_between_two_interpreters(self):
        a, b = subinterp.create(), subinterp.create()
        q = subinterp.create_queue()
        a.call(targets.put_items, q, ['x', 'y'])
        self.assertEqual(b.call(targets.get_items, q, 2, 1), ['x', 'y'])

    def test_queue_in_itself(self):
        q = subinterp.create_queue()
        q.put(q)
        got = q.get_nowait()
        self.assertIs(got, q)
        q.put(q)
        interp = subinterp.create()
        self.assertTrue(interp.call(targets.self_queue_roundtrip, q))
        self.assertIs(q.get_nowait(), q)
        # The cycle is broken by close(); nothing crashes.
        q.put(q)
        q.close()
        self.assertTrue(q.is_closed)

    def test_markers_travel(self):
        interp = subinterp.create()
        there = interp.call(targets.unbound_markers_there)
        # They come back as this interpreter's markers.
        self.assertIs(there[0], subinterp.UNBOUND)
        self.assertIs(there[1], subinterp.UNBOUND_ERROR)
        self.assertIs(there[2], subinterp.UNBOUND_REMOVE)
        q = subinterp.create_queue(unbounditems=subinterp.UNBOUND_REMOVE)
        self.assertTrue(interp.call(targets.queue_default_is, q,
                                    'UNBOUND_REMOVE'))

    def test_shared_buffer_and_queue_in_one_item(self):
        interp = subinterp.create()
        q = subinterp.create_queue()
        buf = subinterp.SharedBuffer(4)
        q.put((buf, q, 'text'))
        interp.call(lambda q: targets.fill(q.get(timeout=10)[0], 9), q)
        self.assertEqual(bytes(buf), b'\x09' * 4)


class TimeoutTests(TestBase):

    def assert_about(self, took, seconds):
        self.assertGreaterEqual(took, seconds - 0.01)
        self.assertLess(took, seconds + 0.5)

    def test_get_timeout(self):
        q = subinterp.create_queue()
        took, error = elapsed(q.get, timeout=0.2)
        self.assertIsInstance(error, subinterp.QueueEmpty)
        self.assert_about(took, 0.2)

    def test_get_timeout_is_not_rounded(self):
        q = subinterp.create_queue()
        took, error = elapsed(q.get, timeout=0.05)
        self.assertIsInstance(error, subinterp.QueueEmpty)
        self.assertGreaterEqual(took, 0.049)
        self.assertLess(took, 0.5)
        took, error = elapsed(q.get, True, 0.35)
        self.assertIsInstance(error, subinterp.QueueEmpty)
        self.assert_about(took, 0.35)

    def test_put_timeout(self):
        q = subinterp.create_queue(1)
        q.put('only')
        took, error = elapsed(q.put, 'more', timeout=0.2)
        self.assertIsInstance(error, subinterp.QueueFull)
        self.assert_about(took, 0.2)
        self.assertEqual(q.qsize(), 1)
        self.assertEqual(q.get_nowait(), 'only')

    def test_timeout_in_other_interpreter(self):
        interp = subinterp.create()
        q = subinterp.create_queue()
        start = time.monotonic()
        self.assertEqual(interp.call(targets.get_outcome, q, 0.2),
                         ('error', 'QueueEmpty'))
        self.assertGreaterEqual(time.monotonic() - start, 0.19)

    def test_nonblocking_ignores_timeout(self):
        q = subinterp.create_queue()
        took, error = elapsed(q.get, block=False, timeout=5)
        self.assertIsInstance(error, subinterp.QueueEmpty)
        self.assertLess(took, 0.5)


class WakeTests(TestBase):

    def test_get_wakes_on_put_from_thread(self):
        q = subinterp.create_queue()
        call = Call(q.get, True, SAFETY)
        time.sleep(SETTLE)
        self.assertTrue(call.is_alive())
        put_at = time.monotonic()
        q.put('wake')
        call.finish(self)
        self.assertIsNone(call.error)
        self.assertEqual(call.result, 'wake')
        self.assertLess(call.ended - put_at, 1.0)

    def test_get_wakes_on_put_from_interpreter(self):
        interp = subinterp.create()
        q = subinterp.create_queue()
        call = Call(q.get, True, SAFETY)
        time.sleep(SETTLE)
        interp.call(targets.put_items, q, ['from interp'])
        call.finish(self)
        self.assertEqual(call.result, 'from interp')

    def test_get_in_interpreter_wakes_on_put_here(self):
        interp = subinterp.create()
        q = subinterp.create_queue()
        call = Call(interp.call, targets.get_items, q, 2, SAFETY)
        time.sleep(SETTLE)
        self.assertTrue(call.is_alive())
        q.put(1)
        time.sleep(0.05)
        q.put(2)
        call.finish(self)
        self.assertIsNone(call.error)
        self.assertEqual(call.result, [1, 2])

    def test_put_wakes_on_get(self):
        q = subinterp.create_queue(1)
        q.put('first')
        call = Call(q.put, 'second', True, SAFETY)
        time.sleep(SETTLE)
        self.assertTrue(call.is_alive())
        self.assertEqual(q.get_nowait(), 'first')
        call.finish(self)
        self.assertIsNone(call.error)
        self.assertEqual(q.get_nowait(), 'second')

    def test_many_getters(self):
        q = subinterp.create_queue()
        calls = [Call(q.get, True, SAFETY) for _ in range(4)]
        time.sleep(SETTLE)
        for i in range(4):
            q.put(i)
        for call in calls:
            call.finish(self)
        self.assertEqual([c.error for c in calls], [None] * 4)
        self.assertEqual(sorted(c.result for c in calls), [0, 1, 2, 3])

    def test_close_wakes_get(self):
        q = subinterp.create_queue()
        call = Call(q.get, True, SAFETY)
        time.sleep(SETTLE)
        closed_at = time.monotonic()
        q.close()
        call.finish(self)
        self.assertIsInstance(call.error, subinterp.QueueNotFoundError)
        self.assertLess(call.ended - closed_at, 1.0)

    def test_close_wakes_put(self):
        q = subinterp.create_queue(1)
        q.put(1)
        call = Call(q.put, 2, True, SAFETY)
        time.sleep(SETTLE)
        closed_at = time.monotonic()
        q.close()
        call.finish(self)
        self.assertIsInstance(call.error, subinterp.QueueNotFoundError)
        self.assertLess(call.ended - closed_at, 1.0)

    def test_close_wakes_get_in_interpreter(self):
        interp = subinterp.create()
        q = subinterp.create_queue()
        call = Call(interp.call, targets.get_outcome, q, SAFETY)
        time.sleep(SETTLE)
        closed_at = time.monotonic()
        q.close()
        call.finish(self)
        self.assertEqual(call.result, ('error', 'QueueNotFoundError'))
        self.assertLess(call.ended - closed_at, 1.0)


class UnboundTests(TestBase):

    def fill_and_close(self, q, entries):
        interp = subinterp.create()
        interp.call(targets.put_with_policies, q, entries)
        q.put('from main')
        self.assertEqual(q.qsize(), len(entries) + 1)
        interp.close()

    def test_default_unbound(self):
        q = subinterp.create_queue()
        self.fill_and_close(q, [('a', None), ('b', None)])
        self.assertEqual(q.qsize(), 3)
        self.assertIs(q.get_nowait(), subinterp.UNBOUND)
        self.assertIs(q.get_nowait(), subinterp.UNBOUND)
        self.assertEqual(q.get_nowait(), 'from main')

    def test_unbound_error(self):
        q = subinterp.create_queue(unbounditems=subinterp.UNBOUND_ERROR)
        self.fill_and_close(q, [('a', None), ('b', None)])
        self.assertEqual(q.qsize(), 3)
        with self.assertRaises(subinterp.ItemInterpreterDestroyed):
            q.get_nowait()
        self.assertEqual(q.qsize(), 2)
        with self.assertRaises(subinterp.ItemInterpreterDestroyed):
            q.get()
        self.assertEqual(q.get_nowait(), 'from main')
        self.assertTrue(q.empty())

    def test_unbound_remove(self):
        q = subinterp.create_queue(unbounditems=subinterp.UNBOUND_REMOVE)
        self.fill_and_close(q, [('a', None), ('b', None)])
        self.assertEqual(q.qsize(), 1)
        self.assertEqual(q.get_nowait(), 'from main')
        self.assertTrue(q.empty())

    def test_per_put_override(self):
        q = subinterp.create_queue(unbounditems=subinterp.UNBOUND_REMOVE)
        self.fill_and_close(q, [('default', None),
                                ('replace', 'UNBOUND'),
                                ('error', 'UNBOUND_ERROR'),
                                ('remove', 'UNBOUND_REMOVE')])
        self.assertEqual(q.qsize(), 3)
        self.assertIs(q.get_nowait(), subinterp.UNBOUND)
        with self.assertRaises(subinterp.ItemInterpreterDestroyed):
            q.get_nowait()
        self.assertEqual(q.get_nowait(), 'from main')
        self.assertTrue(q.empty())

    def test_put_nowait_override(self):
        interp = subinterp.create()
        q = subinterp.create_queue()
        interp.exec('import subinterp\n'
                    f'q = subinterp.Queue({q.id})\n'
                    'q.put_nowait(1, unbounditems=subinterp.UNBOUND_REMOVE)\n'
                    'q.put_nowait(2)\n')
        interp.close()
        self.assertEqual(q.qsize(), 1)
        self.assertIs(q.get_nowait(), subinterp.UNBOUND)

    def test_only_the_closed_interpreters_items(self):
        a, b = subinterp.create(), subinterp.create()
        q = subinterp.create_queue(unbounditems=subinterp.UNBOUND_REMOVE)
        a.call(targets.put_with_policies, q, [('a1', None)])
        b.call(targets.put_with_policies, q, [('b1', None)])
        a.call(targets.put_with_policies, q, [('a2', None)])
        a.close()
        self.assertEqual(q.qsize(), 1)
        self.assertEqual(q.get_nowait(), 'b1')

    def test_unbound_item_got_in_other_interpreter(self):
        a, b = subinterp.create(), subinterp.create()
        q = subinterp.create_queue()
        a.call(targets.put_with_policies, q, [('x', None)])
        a.close()
        self.assertTrue(b.call(targets.is_unbound_marker, q))

    def test_removed_items_make_room_for_blocked_put(self):
        interp = subinterp.create()
        q = subinterp.create_queue(2, unbounditems=subinterp.UNBOUND_REMOVE)
        interp.call(targets.put_with_policies, q, [('a', None), ('b', None)])
        self.assertTrue(q.full())
        call = Call(q.put, 'mine', True, SAFETY)
        time.sleep(SETTLE)
        self.assertTrue(call.is_alive())
        interp.close()
        call.finish(self)
        self.assertIsNone(call.error)
        self.assertEqual(q.qsize(), 1)
        self.assertEqual(q.get_nowait(), 'mine')

    def test_items_got_before_close_are_kept(self):
        interp = subinterp.create()
        q = subinterp.create_queue(unbounditems=subinterp.UNBOUND_ERROR)
        interp.call(targets.put_with_policies, q, [('a', None)])
        self.assertEqual(q.get_nowait(), 'a')
        interp.close()
        self.assertTrue(q.empty())


class SharedBufferTests(ScriptTestBase):

    VALUES = [1.5, -2.25, 1e300, 0.0, 3.0]

    def test_written_there_read_by_another(self):
        a, b = subinterp.create(), subinterp.create()
        q = subinterp.create_queue()
        index = a.call(targets.pack_doubles_and_put, q, self.VALUES, True)
        kind, values = b.call(targets.get_unpack_doubles_and_hold, q)
        self.assertEqual(kind, 'SharedBuffer')
        self.assertEqual(values, self.VALUES)
        # Writes go both ways: the same memory, not copies.
        b.call(targets.pack_held_double, 0, 1, 42.5)
        self.assertEqual(a.call(targets.unpack_held_doubles, index),
                         [1.5, 42.5, 1e300, 0.0, 3.0])
        a.call(targets.pack_held_double, index, 4, -7.0)
        self.assertEqual(b.call(targets.unpack_held_doubles, 0),
                         [1.5, 42.5, 1e300, 0.0, -7.0])

    def test_cast_view_keeps_format_and_shape(self):
        import array
        import struct
        interp = subinterp.create()
        q = subinterp.create_queue()
        buf = subinterp.SharedBuffer(8 * len(self.VALUES))
        struct.pack_into('5d', buf, 0, *self.VALUES)
        q.put(memoryview(buf).cast('d'))
        kind, fmt, itemsize, shape, readonly, by_items, by_bytes = \
            interp.call(targets.get_doubles_view, q)
        self.assertEqual((kind, fmt, itemsize, shape, readonly),
                         ('memoryview', 'd', 8, (5,), False))
        self.assertEqual(by_items, self.VALUES)
        self.assertEqual(by_bytes, self.VALUES)
        # Here too, and an array filled from it.
        q.put(memoryview(buf).cast('d'))
        view = q.get_nowait()
        self.assertEqual((view.format, view.shape), ('d', (5,)))
        self.assertEqual(array.array('d', view).tolist(), self.VALUES)
        view[0] = 8.0
        self.assertEqual(struct.unpack_from('d', buf)[0], 8.0)

    def test_outlives_sender(self):
        # In a fresh python: if the memory were freed with its interpreter,
        # reading it could crash the process.
        out = self.assert_script_ok('''
            import gc, sys
            sys.path.insert(0, sys.argv[1])
            import subinterp
            import targets
            size = 4 << 20
            a, b = subinterp.create(), subinterp.create()
            q = subinterp.create_queue()
            a.exec(f"""
            import subinterp, struct
            buf = subinterp.SharedBuffer({size})
            view = memoryview(buf).cast('I')
            for i in range(0, len(view), 997):
                view[i] = i
            subinterp.Queue({q.id}).put(view)
            del view, buf
            """)
            b.call(targets.get_from_queue_and_hold, q)
            a.close()
            gc.collect()
            # Allocations that would reuse freed memory.
            junk = [bytes(4096) for _ in range(2000)]
            ok = b.call(lambda: all(
                targets.held[0][i] == i
                for i in range(0, len(targets.held[0]), 997)))
            print('ok', ok, b.call(lambda: targets.held[0].nbytes))
            b.close()
            ''', args=[TESTS_DIR])
        self.assertEqual(out.split(), ['ok', 'True', str(4 << 20)])


class HandleLifetimeTests(ScriptTestBase):

    def test_handles_collected_with_their_interpreter(self):
        # Queue and channel objects that live until the garbage collector
        # ends their interpreter (held in a cycle), collected in the same
        # pass as their classes: nothing may crash, here or at exit.
        out = self.assert_script_ok('''
            import subinterp
            from subinterp import channels
            interp = subinterp.create()
            q = subinterp.create_queue()
            r, s = channels.create_channel()
            interp.prepare_main(q=q, r=r, s=s)
            interp.exec(''\'
            import subinterp
            class Holder:
                pass
            h = Holder()
            h.self = h
            h.handles = [q, r, s, subinterp.create_queue(),
                         *subinterp.channels.create_channel()]
            ''\')
            interp.close()
            q.put('still usable')
            print(q.get_nowait())
            class Holder:
                pass
            h = Holder()
            h.self = h
            h.handles = [q, r, s, subinterp.create_queue()]
            print('exit')
            ''')
        self.assertEqual(out.splitlines(), ['still usable', 'exit'])


class WorkloadTests(TestBase):

    # Sanitizers slow every put and get down several times over.
    N = 200_000 if UNDER_SANITIZER else 1_000_000
    PRODUCERS = 4
    CONSUMERS = 4

    def test_producers_and_consumers(self):
        n = self.N
        q = subinterp.create_queue(1000)
        results = subinterp.create_queue()
        interps = [subinterp.create()
                   for _ in range(self.PRODUCERS + self.CONSUMERS)]
        errors = []
        old_hook = threading.excepthook
        threading.excepthook = lambda args: errors.append(args.exc_value)
        self.addCleanup(setattr, threading, 'excepthook', old_hook)
        start = time.monotonic()
        consumers = [interp.call_in_thread(targets.consume, q, results, n)
                     for interp in interps[self.PRODUCERS:]]
        step = n // self.PRODUCERS
        producers = [
            interp.call_in_thread(targets.produce, q, k * step,
                                  n if k == self.PRODUCERS - 1
                                  else (k + 1) * step)
            for k, interp in enumerate(interps[:self.PRODUCERS])]
        for t in producers:
            t.join(120)
        for _ in consumers:
            q.put(None, timeout=60)
        for t in consumers:
            t.join(120)
        took = time.monotonic() - start
        self.assertEqual(errors, [])
        self.assertFalse(any(t.is_alive() for t in producers + consumers))
        summaries = [results.get_nowait() for _ in consumers]
        self.assertTrue(results.empty())
        self.assertTrue(q.empty())
        counts = [s[0] for s in summaries]
        self.assertEqual(sum(counts), n)
        self.assertEqual(sum(s[1] for s in summaries), n * (n - 1) // 2)
        self.assertEqual([s[2] for s in summaries], [0] * self.CONSUMERS)
        # Every int arrived, and at exactly one consumer.
        union = 0
        total_bits = 0
        for s in summaries:
            bits = int.from_bytes(s[3], 'little')
            self.assertEqual(union & bits, 0, 'an item reached two consumers')
            union |= bits
            total_bits += bits.bit_count()
        self.assertEqual(union, (1 << n) - 1)
        self.assertEqual(total_bits, n)
        # Each consumer did some of the work (the queue is shared fairly
        # enough that none starves over a million items).
        self.assertTrue(all(c > 0 for c in counts), counts)
        if not UNDER_SANITIZER:
            self.assertLess(took, 20, f'{n} items took {took:.1f} s')


class CtrlCTests(ScriptTestBase):
    """Blocking calls in the main thread answer signals, each in a fresh
    python that interrupts itself."""

    PRELUDE = '''
        import faulthandler, os, signal, sys, threading, time
        import subinterp

        # A wait that ignores the signal must fail the test, not hang it.
        faulthandler.dump_traceback_later(15, exit=True)

        def send_after(delay, signum=signal.SIGINT, count=1, to_thread=True):
            main = threading.get_ident()
            def run():
                for _ in range(count):
                    time.sleep(delay)
                    if to_thread:
                        signal.pthread_kill(main, signum)
                    else:
                        os.kill(os.getpid(), signum)
            threading.Thread(target=run, daemon=True).start()

        def blocked(func, *args, **kwargs):
            start = time.monotonic()
            try:
                func(*args, **kwargs)
                outcome = 'returned'
            except BaseException as exc:
                outcome = type(exc).__name__
            return outcome, time.monotonic() - start
        '''

    def run_blocked(self, body):
        out = self.assert_script_ok(textwrap.dedent(self.PRELUDE)
                                    + textwrap.dedent(body))
        return [line.split() for line in out.splitlines()]

    def assert_interrupted(self, line, after=0.3):
        self.assertEqual(line[0], 'KeyboardInterrupt', line)
        took = float(line[1])
        self.assertGreaterEqual(took, after - 0.02)
        self.assertLess(took, after + 1.5)

    def test_get_interrupted(self):
        lines = self.run_blocked('''
            q = subinterp.create_queue()
            send_after(0.3)
            outcome, took = blocked(q.get)
            print(outcome, took)
            # The queue still works, and the interrupted wait left nothing
            # behind that a later put could wake.
            q.put('after')
            print('got', q.get_nowait())
            outcome, took = blocked(q.get, timeout=0.1)
            print(outcome, took)
            ''')
        self.assert_interrupted(lines[0])
        self.assertEqual(lines[1], ['got', 'after'])
        self.assertEqual(lines[2][0], 'QueueEmpty')

    def test_get_interrupted_by_process_signal(self):
        lines = self.run_blocked('''
            q = subinterp.create_queue()
            send_after(0.3, to_thread=False)
            print(*blocked(q.get))
            ''')
        self.assert_interrupted(lines[0])

    def test_get_with_timeout_interrupted(self):
        lines = self.run_blocked('''
            q = subinterp.create_queue()
            send_after(0.3)
            print(*blocked(q.get, timeout=30))
            ''')
        self.assert_interrupted(lines[0])

    def test_put_interrupted(self):
        lines = self.run_blocked('''
            q = subinterp.create_queue(1)
            q.put('only')
            send_after(0.3)
            print(*blocked(q.put, 'more'))
            print('size', q.qsize(), q.get_nowait())
            ''')
        self.assert_interrupted(lines[0])
        self.assertEqual(lines[1], ['size', '1', 'only'])

    def test_harmless_handler_keeps_timeout(self):
        # A handler that returns normally runs during the wait, which then
        # goes on until its deadline.
        lines = self.run_blocked('''
            calls = []
            signal.signal(signal.SIGUSR1,
                          lambda *a: calls.append(time.monotonic()))
            q = subinterp.create_queue(1)
            for name, func, args in [('get', q.get, ()),
                                     ('put', q.put, ('x',))]:
                if name == 'put':
                    q.put('fill')
                calls.clear()
                send_after(0.1, signal.SIGUSR1, count=3)
                start = time.monotonic()
                outcome, took = blocked(func, *args, timeout=0.6)
                print(name, outcome, took, len(calls),
                      max(c - start for c in calls) if calls else -1)
            ''')
        for line, (name, exc) in zip(lines, [('get', 'QueueEmpty'),
                                             ('put', 'QueueFull')]):
            self.assertEqual(line[:2], [name, exc], line)
            self.assertGreaterEqual(float(line[2]), 0.59, line)
            self.assertLess(float(line[2]), 1.1, line)
            self.assertEqual(line[3], '3', line)
            # The handler ran while the call waited, not after it.
            self.assertLess(float(line[4]), 0.55, line)

    def test_raising_handler_ends_wait(self):
        lines = self.run_blocked('''
            def handler(*args):
                raise ZeroDivisionError('from the handler')
            signal.signal(signal.SIGUSR1, handler)
            q = subinterp.create_queue()
            send_after(0.3, signal.SIGUSR1)
            print(*blocked(q.get, timeout=30))
            ''')
        self.assertEqual(lines[0][0], 'ZeroDivisionError')
        self.assertLess(float(lines[0][1]), 1.8)

    def test_blocked_in_other_thread_not_interrupted(self):
        # Only the main thread runs signal handlers: a get in another thread
        # keeps waiting and then gets its item.
        lines = self.run_blocked('''
            q = subinterp.create_queue()
            result = []
            t = threading.Thread(target=lambda: result.append(
                blocked(q.get, timeout=5)))
            t.start()
            signal.signal(signal.SIGUSR1, lambda *a: None)
            time.sleep(0.2)
            signal.pthread_kill(t.ident, signal.SIGUSR1)
            time.sleep(0.2)
            q.put('item')
            t.join()
            print(*result[0])
            ''')
        self.assertEqual(lines[0][0], 'returned')
        self.assertLess(float(lines[0][1]), 2.0)


if __name__ == '__main__':
    unittest.main()
