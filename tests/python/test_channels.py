"""Channels between interpreters (PEP 554): subinterp.channels."""

import gc
import pickle
import struct
import textwrap
import threading
import time
import unittest

import subinterp
import targets
from subinterp import channels
from subinterp.channels import (
    ChannelClosedError, ChannelEmptyError, ChannelError, ChannelNotFoundError,
    RecvChannel, SendChannel, create_channel)
from helpers import SAFETY, SETTLE, Call, ScriptTestBase, TestBase, elapsed


def send_with_timeout(send, obj, timeout=SAFETY):
    return send.send(obj, timeout=timeout)


def recv_with_timeout(recv, timeout=SAFETY):
    return recv.recv(timeout=timeout)


class ModuleTests(unittest.TestCase):

    def test_names(self):
        for name in channels.__all__:
            self.assertTrue(hasattr(channels, name), name)
        self.assertLessEqual(
            {'create_channel', 'list_all_channels', 'RecvChannel',
             'SendChannel', 'ChannelError', 'ChannelNotFoundError',
             'ChannelEmptyError', 'ChannelClosedError'},
            set(channels.__all__))

    def test_exception_hierarchy(self):
        self.assertTrue(issubclass(ChannelError, RuntimeError))
        for exc in (ChannelNotFoundError, ChannelEmptyError,
                    ChannelClosedError):
            self.assertTrue(issubclass(exc, ChannelError), exc)


class ChannelTests(TestBase):

    def test_create(self):
        r, s = create_channel()
        self.assertIsInstance(r, RecvChannel)
        self.assertIsInstance(s, SendChannel)
        self.assertEqual(r.id, s.id)
        self.assertIsInstance(r.id, int)
        self.assertFalse(r.is_closed)
        self.assertFalse(s.is_closed)
        self.assertIn((r, s), channels.list_all_channels())
        r2, s2 = create_channel()
        self.assertNotEqual(r2.id, r.id)
        self.assertIsNot(r2, r)

    def test_one_object_per_id(self):
        r, s = create_channel()
        self.assertIs(RecvChannel(r.id), r)
        self.assertIs(SendChannel(s.id), s)
        self.assertIsNot(RecvChannel(r.id), SendChannel(r.id))
        self.assertNotEqual(hash(r), hash(s))

    def test_repr_and_pickle(self):
        r, s = create_channel()
        self.assertEqual(repr(r), f'RecvChannel(id={r.id})')
        self.assertEqual(repr(s), f'SendChannel(id={s.id})')
        self.assertIs(pickle.loads(pickle.dumps(r)), r)
        self.assertIs(pickle.loads(pickle.dumps(s)), s)

    def test_unknown_id(self):
        for cls in (RecvChannel, SendChannel):
            with self.subTest(cls.__name__):
                with self.assertRaises(ChannelNotFoundError):
                    cls(2**40)
                with self.assertRaises(TypeError):
                    cls('1')
                with self.assertRaises(ValueError):
                    cls(-1)

    def test_released_channel_is_gone(self):
        r, s = create_channel()
        cid = r.id
        del s
        gc.collect()
        # One end keeps the channel.
        s = SendChannel(cid)
        s.send_nowait('kept')
        del s
        self.assertEqual(r.recv_nowait(), 'kept')
        del r
        gc.collect()
        for cls in (RecvChannel, SendChannel):
            with self.assertRaises(ChannelNotFoundError):
                cls(cid)
        self.assertNotIn(cid, [r.id for r, _ in channels.list_all_channels()])

    def test_send_nowait_and_recv_in_order(self):
        r, s = create_channel()
        items = [1, 'two', (3, [4]), None, {'k': b'v'}, 2**90]
        for item in items:
            self.assertIs(s.send_nowait(item), False)  # nobody waiting
        self.assertEqual([r.recv() for _ in items], items)
        self.assertEqual(r.recv_nowait('empty'), 'empty')

    def test_values_are_copies(self):
        r, s = create_channel()
        item = [1, [2]]
        s.send_nowait(item)
        item[1].append(3)
        self.assertEqual(r.recv_nowait(), [1, [2]])

    def test_recv_nowait(self):
        r, s = create_channel()
        with self.assertRaises(ChannelEmptyError):
            r.recv_nowait()
        self.assertEqual(r.recv_nowait('default'), 'default')
        self.assertIsNone(r.recv_nowait(None))
        self.assertEqual(r.recv_nowait(default=7), 7)
        s.send_nowait(0)
        self.assertEqual(r.recv_nowait('default'), 0)

    def test_recv_timeout(self):
        r, s = create_channel()
        took, error = elapsed(r.recv, timeout=0.2)
        self.assertIsInstance(error, TimeoutError)
        self.assertGreaterEqual(took, 0.19)
        self.assertLess(took, 0.7)

    def test_send_blocks_until_received(self):
        r, s = create_channel()
        call = Call(send_with_timeout, s, 'item')
        time.sleep(SETTLE)
        self.assertTrue(call.is_alive(), 'send returned before a recv')
        received_at = time.monotonic()
        self.assertEqual(r.recv_nowait(), 'item')
        call.finish(self)
        self.assertIsNone(call.error)
        self.assertGreaterEqual(call.ended, received_at)

    def test_send_returns_after_recv_in_thread(self):
        # The receiver records when its recv returned; the sender's send
        # returns only after that.
        r, s = create_channel()
        got = []

        def receive():
            time.sleep(SETTLE)
            got.append((r.recv(timeout=SAFETY), time.monotonic()))

        call = Call(receive)
        s.send('x', timeout=SAFETY)
        sent_at = time.monotonic()
        call.finish(self)
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0][0], 'x')
        self.assertGreaterEqual(sent_at, got[0][1] - 0.001)

    def test_send_timeout_withdraws_item(self):
        r, s = create_channel()
        took, error = elapsed(s.send, 'late', timeout=0.2)
        self.assertIsInstance(error, TimeoutError)
        self.assertGreaterEqual(took, 0.19)
        self.assertLess(took, 0.7)
        self.assertEqual(r.recv_nowait('nothing'), 'nothing')
        with self.assertRaises(ChannelEmptyError):
            r.recv_nowait()

    def test_send_nowait_tells_if_receiver_waits(self):
        r, s = create_channel()
        call = Call(recv_with_timeout, r)
        time.sleep(SETTLE)
        self.assertIs(s.send_nowait('for the waiter'), True)
        call.finish(self)
        self.assertEqual(call.result, 'for the waiter')
        self.assertIs(s.send_nowait('for nobody'), False)
        self.assertEqual(r.recv_nowait(), 'for nobody')
        # A receiver that timed out no longer waits.
        with self.assertRaises(TimeoutError):
            r.recv(timeout=0.05)
        self.assertIs(s.send_nowait('again'), False)

    def test_recv_wakes_on_send_from_interpreter(self):
        interp = subinterp.create()
        r, s = create_channel()
        call = Call(recv_with_timeout, r)
        time.sleep(SETTLE)
        interp.call(targets.send_items, s, ['from interp'], True)
        call.finish(self)
        self.assertEqual(call.result, 'from interp')

    def test_many_receivers(self):
        r, s = create_channel()
        calls = [Call(recv_with_timeout, r) for _ in range(3)]
        time.sleep(SETTLE)
        self.assertEqual([s.send_nowait(i) for i in range(3)], [True] * 3)
        for call in calls:
            call.finish(self)
        self.assertEqual(sorted(c.result for c in calls), [0, 1, 2])

    def test_bad_arguments(self):
        r, s = create_channel()
        with self.assertRaises(ValueError):
            r.recv(timeout=-1)
        with self.assertRaises(ValueError):
            s.send(1, timeout=-0.5)
        with self.assertRaises(TypeError):
            r.recv(1)  # timeout is keyword-only
        with self.assertRaises(TypeError):
            s.send(1, 2)
        with self.assertRaises(TypeError):
            s.send_nowait(1, timeout=1)
        with self.assertRaises(TypeError):
            s.send()
        self.assertEqual(r.recv_nowait('nothing'), 'nothing')

    def test_not_shareable(self):
        r, s = create_channel()
        lock = threading.Lock()
        for bad in (lock, (i for i in range(2)), {'k': [lock]}):
            with self.subTest(type(bad).__name__):
                with self.assertRaises(subinterp.NotShareableError):
                    s.send_nowait(bad)
                with self.assertRaises(subinterp.NotShareableError):
                    s.send(bad, timeout=1)
        self.assertEqual(r.recv_nowait('nothing'), 'nothing')


class CloseTests(TestBase):

    def test_close_from_send_end_keeps_items(self):
        r, s = create_channel()
        s.send_nowait(1)
        s.send_nowait(2)
        s.close()
        self.assertTrue(s.is_closed)
        self.assertTrue(r.is_closed)
        with self.assertRaises(ChannelClosedError):
            s.send_nowait(3)
        with self.assertRaises(ChannelClosedError):
            s.send(3, timeout=1)
        self.assertEqual(r.recv(timeout=1), 1)
        self.assertEqual(r.recv_nowait(), 2)
        with self.assertRaises(ChannelClosedError):
            r.recv(timeout=1)
        with self.assertRaises(ChannelClosedError):
            r.recv()
        with self.assertRaises(ChannelClosedError):
            r.recv_nowait()
        s.close()  # again: nothing changes

    def test_close_from_recv_end_drops_items(self):
        r, s = create_channel()
        s.send_nowait(1)
        r.close()
        self.assertTrue(s.is_closed)
        with self.assertRaises(ChannelClosedError):
            r.recv_nowait()
        with self.assertRaises(ChannelClosedError):
            r.recv(timeout=1)
        with self.assertRaises(ChannelClosedError):
            s.send_nowait(2)

    def test_closed_channel_still_found(self):
        r, s = create_channel()
        s.close()
        self.assertIs(RecvChannel(r.id), r)

    def test_blocked_recv_wakes_on_close(self):
        for end in ('send', 'recv'):
            with self.subTest(end=end):
                r, s = create_channel()
                call = Call(recv_with_timeout, r)
                time.sleep(SETTLE)
                closed_at = time.monotonic()
                (s if end == 'send' else r).close()
                call.finish(self)
                self.assertIsInstance(call.error, ChannelClosedError)
                self.assertLess(call.ended - closed_at, 1.0)

    def test_blocked_recv_in_interpreter_wakes_on_close(self):
        interp = subinterp.create()
        r, s = create_channel()
        call = Call(interp.call, targets.recv_outcome, r, SAFETY)
        time.sleep(SETTLE)
        s.close()
        call.finish(self)
        self.assertEqual(call.result, ('error', 'ChannelClosedError'))

    def test_blocked_send_wakes_when_recv_end_closes(self):
        r, s = create_channel()
        call = Call(send_with_timeout, s, 'dropped')
        time.sleep(SETTLE)
        self.assertTrue(call.is_alive())
        closed_at = time.monotonic()
        r.close()
        call.finish(self)
        self.assertIsInstance(call.error, ChannelClosedError)
        self.assertLess(call.ended - closed_at, 1.0)

    def test_blocked_send_in_interpreter_wakes_when_recv_end_closes(self):
        interp = subinterp.create()
        r, s = create_channel()
        call = Call(interp.call, targets.send_outcome, s, 'x', SAFETY)
        time.sleep(SETTLE)
        r.close()
        call.finish(self)
        self.assertEqual(call.result, ('error', 'ChannelClosedError'))

    def test_blocked_send_survives_close_from_send_end(self):
        r, s = create_channel()
        call = Call(send_with_timeout, s, 'still sent')
        time.sleep(SETTLE)
        s.close()
        time.sleep(SETTLE)
        self.assertTrue(call.is_alive(), 'the item was not received yet')
        self.assertEqual(r.recv(timeout=1), 'still sent')
        call.finish(self)
        self.assertIsNone(call.error)
        with self.assertRaises(ChannelClosedError):
            r.recv(timeout=1)

    def test_iteration_after_close(self):
        r, s = create_channel()
        for i in range(3):
            s.send_nowait(i)
        s.close()
        self.assertEqual(list(r), [0, 1, 2])
        self.assertEqual(list(r), [])

    def test_iteration_until_closed(self):
        r, s = create_channel()
        call = Call(list, r)
        for i in range(5):
            s.send(i, timeout=SAFETY)
        time.sleep(0.05)
        self.assertTrue(call.is_alive())
        s.close()
        call.finish(self)
        self.assertEqual(call.result, [0, 1, 2, 3, 4])

    def test_iteration_in_other_interpreter(self):
        interp = subinterp.create()
        r, s = create_channel()
        call = Call(interp.call, targets.recv_all, r)
        for item in ['a', ('b', 1), None]:
            s.send(item, timeout=SAFETY)  # each waits for the other side
        s.close()
        call.finish(self)
        self.assertIsNone(call.error)
        self.assertEqual(call.result, ['a', ('b', 1), None])


class SharingTests(TestBase):

    def test_via_call_arguments(self):
        interp = subinterp.create()
        r, s = create_channel()
        interp.call(targets.send_items, s, [1, 'b'], True)
        self.assertEqual([r.recv_nowait(), r.recv_nowait()], [1, 'b'])
        s.send_nowait('to there')
        self.assertEqual(interp.call(targets.recv_items, r, 1, 1),
                         ['to there'])

    def test_same_objects_in_other_interpreter(self):
        interp = subinterp.create()
        r, s = create_channel()
        interp.call(targets.hold, r)
        interp.call(targets.hold, r)
        interp.call(targets.hold, s)
        self.assertTrue(interp.call(targets.held_same, 0, 1))
        self.assertFalse(interp.call(targets.held_same, 0, 2))
        # Through a queue and through another channel.
        q = subinterp.create_queue()
        q.put(r)
        self.assertEqual(interp.call(targets.get_from_queue_and_hold, q), 3)
        self.assertTrue(interp.call(targets.held_same, 0, 3))
        carrier_r, carrier_s = create_channel()
        carrier_s.send_nowait(s)
        self.assertEqual(interp.call(targets.recv_and_hold, carrier_r), 4)
        self.assertTrue(interp.call(targets.held_same, 2, 4))
        # Back here as ours.
        self.assertIs(interp.call(targets.identity, r), r)
        self.assertIs(interp.call(targets.identity, s), s)
        self.assertEqual(interp.call(lambda: targets.get_held()[:3]),
                         [r, r, s])

    def test_via_prepare_main(self):
        interp = subinterp.create()
        r, s = create_channel()
        interp.prepare_main(send=s)
        interp.exec('send.send_nowait("from __main__")')
        self.assertEqual(r.recv_nowait(), 'from __main__')
        self.assertTrue(interp.call(targets.is_main_attr, s, 'send'))

    def test_made_in_other_interpreter(self):
        interp = subinterp.create()
        q = subinterp.create_queue()
        interp.exec(textwrap.dedent(f'''
            import subinterp
            r, s = subinterp.channels.create_channel()
            s.send_nowait('made there')
            subinterp.Queue({q.id}).put((r, s))
            '''))
        r, s = q.get_nowait()
        self.assertIsInstance(r, RecvChannel)
        self.assertIsInstance(s, SendChannel)
        self.assertIs(RecvChannel(r.id), r)
        self.assertEqual(r.recv_nowait(), 'made there')
        # Items outlive the interpreter that sent them.
        interp.exec('s.send_nowait(["sent", "before close"])')
        interp.close()
        self.assertEqual(r.recv_nowait(), ['sent', 'before close'])

    def test_ends_sent_through_their_own_channel(self):
        r, s = create_channel()
        interp = subinterp.create()
        self.assertTrue(interp.call(targets.send_self_and_hold, r, s))
        s.send_nowait(r)
        self.assertIs(r.recv_nowait(), r)
        r.close()


class BufferTests(TestBase):

    def test_shared_buffer_travels_without_copy(self):
        interp = subinterp.create()
        r, s = create_channel()
        buf = subinterp.SharedBuffer(8)
        memoryview(buf)[0] = 1
        s.send_buffer_nowait(buf)
        self.assertEqual(interp.call(targets.recv_buffer_and_write, r, 5),
                         ('memoryview', b'\x01' + b'\x00' * 7, False))
        self.assertEqual(bytes(buf), b'\x05' * 8)

    def test_shared_buffer_from_other_interpreter(self):
        interp = subinterp.create()
        r, s = create_channel()
        call = Call(interp.call, targets.send_shared_buffer, s, 16, 3)
        view = r.recv(timeout=SAFETY)
        call.finish(self)
        self.assertIsNone(call.error)
        self.assertIsInstance(view, memoryview)
        self.assertFalse(view.readonly)
        self.assertEqual(bytes(view), b'\x03' * 16)
        view[:4] = b'here'
        self.assertEqual(interp.call(targets.held_bytes, call.result),
                         b'here' + b'\x03' * 12)

    def test_cast_view_keeps_format(self):
        interp = subinterp.create()
        r, s = create_channel()
        buf = subinterp.SharedBuffer(24)
        struct.pack_into('3d', buf, 0, 1.5, 2.5, -3.0)
        s.send_buffer_nowait(memoryview(buf).cast('d'))
        q = subinterp.create_queue()
        q.put(r.recv_nowait())
        self.assertEqual(interp.call(targets.get_doubles_view, q),
                         ('memoryview', 'd', 8, (3,), False,
                          [1.5, 2.5, -3.0], [1.5, 2.5, -3.0]))

    def test_bytes_arrive_as_readonly_copy(self):
        interp = subinterp.create()
        r, s = create_channel()
        data = b'abc'
        s.send_buffer_nowait(data)
        view = r.recv_nowait()
        self.assertIsInstance(view, memoryview)
        self.assertTrue(view.readonly)
        self.assertEqual(bytes(view), b'abc')
        s.send_buffer_nowait(b'xyz')
        self.assertEqual(interp.call(targets.recv_buffer_and_write, r, 0),
                         ('memoryview', b'xyz', True))

    def test_writable_foreign_buffer_refused(self):
        r, s = create_channel()
        for bad in (bytearray(b'abc'), memoryview(bytearray(3))):
            with self.subTest(type(bad).__name__):
                with self.assertRaises(subinterp.NotShareableError):
                    s.send_buffer_nowait(bad)
                with self.assertRaises(subinterp.NotShareableError):
                    s.send_buffer(bad, timeout=1)
        with self.assertRaises(TypeError):
            s.send_buffer_nowait(5)  # not a buffer
        self.assertEqual(r.recv_nowait('nothing'), 'nothing')

    def test_send_buffer_waits_and_times_out(self):
        r, s = create_channel()
        took, error = elapsed(s.send_buffer, subinterp.SharedBuffer(4),
                              timeout=0.2)
        self.assertIsInstance(error, TimeoutError)
        self.assertGreaterEqual(took, 0.19)
        self.assertEqual(r.recv_nowait('nothing'), 'nothing')
        self.assertIs(s.send_buffer_nowait(b'x'), False)


class PingPongTests(TestBase):

    ROUNDS = 3000

    def test_ping_pong(self):
        a, b = subinterp.create(), subinterp.create()
        to_b_r, to_b_s = create_channel()
        to_a_r, to_a_s = create_channel()
        pong = Call(b.call, targets.echo_plus_one, to_b_r, to_a_s,
                    self.ROUNDS)
        start = time.monotonic()
        bad = a.call(targets.ping, to_b_s, to_a_r, self.ROUNDS)
        took = time.monotonic() - start
        pong.finish(self)
        self.assertIsNone(pong.error)
        self.assertEqual(pong.result, self.ROUNDS)
        self.assertEqual(bad, 0)
        self.assertEqual(to_a_r.recv_nowait('empty'), 'empty')
        self.assertEqual(to_b_r.recv_nowait('empty'), 'empty')
        self.assertLess(took, 20)


class CtrlCTests(ScriptTestBase):
    """Blocking channel calls in the main thread answer signals."""

    PRELUDE = '''
        import faulthandler, signal, threading, time
        import subinterp
        from subinterp import channels

        # A wait that ignores the signal must fail the test, not hang it.
        faulthandler.dump_traceback_later(15, exit=True)

        def send_after(delay, signum=signal.SIGINT, count=1):
            main = threading.get_ident()
            def run():
                for _ in range(count):
                    time.sleep(delay)
                    signal.pthread_kill(main, signum)
            threading.Thread(target=run, daemon=True).start()

        def blocked(func, *args, **kwargs):
            start = time.monotonic()
            try:
                func(*args, **kwargs)
                outcome = 'returned'
            except BaseException as exc:
                outcome = type(exc).__name__
            return outcome, time.monotonic() - start

        r, s = channels.create_channel()
        '''

    def run_blocked(self, body):
        out = self.assert_script_ok(textwrap.dedent(self.PRELUDE)
                                    + textwrap.dedent(body))
        return [line.split() for line in out.splitlines()]

    def assert_interrupted(self, line, after=0.3):
        self.assertEqual(line[0], 'KeyboardInterrupt', line)
        self.assertGreaterEqual(float(line[1]), after - 0.02)
        self.assertLess(float(line[1]), after + 1.5)

    def test_recv_interrupted(self):
        lines = self.run_blocked('''
            send_after(0.3)
            print(*blocked(r.recv))
            # Nothing left behind: a later send finds no receiver.
            print('waiting', s.send_nowait('after'), r.recv_nowait())
            ''')
        self.assert_interrupted(lines[0])
        self.assertEqual(lines[1], ['waiting', 'False', 'after'])

    def test_send_interrupted_withdraws_item(self):
        lines = self.run_blocked('''
            send_after(0.3)
            print(*blocked(s.send, 'never received'))
            print('left', r.recv_nowait('nothing'))
            ''')
        self.assert_interrupted(lines[0])
        self.assertEqual(lines[1], ['left', 'nothing'])

    def test_send_with_timeout_interrupted(self):
        lines = self.run_blocked('''
            send_after(0.3)
            print(*blocked(s.send, 'x', timeout=30))
            ''')
        self.assert_interrupted(lines[0])

    def test_iteration_interrupted(self):
        lines = self.run_blocked('''
            s.send_nowait(1)
            send_after(0.3)
            print(*blocked(list, r))
            ''')
        self.assert_interrupted(lines[0])

    def test_harmless_handler_keeps_timeout(self):
        lines = self.run_blocked('''
            calls = []
            signal.signal(signal.SIGUSR1,
                          lambda *a: calls.append(time.monotonic()))
            for name, func, args in [('recv', r.recv, ()),
                                     ('send', s.send, ('x',))]:
                calls.clear()
                send_after(0.1, signal.SIGUSR1, count=3)
                start = time.monotonic()
                outcome, took = blocked(func, *args, timeout=0.6)
                print(name, outcome, took, len(calls),
                      max(c - start for c in calls) if calls else -1)
            print('left', r.recv_nowait('nothing'))
            ''')
        for line, name in zip(lines, ['recv', 'send']):
            self.assertEqual(line[:2], [name, 'TimeoutError'], line)
            self.assertGreaterEqual(float(line[2]), 0.59, line)
            self.assertLess(float(line[2]), 1.1, line)
            self.assertEqual(line[3], '3', line)
            self.assertLess(float(line[4]), 0.55, line)
        self.assertEqual(lines[2], ['left', 'nothing'])


if __name__ == '__main__':
    unittest.main()
