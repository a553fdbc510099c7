"""Many interpreters, in sequence and from many threads, and bounded memory.

Each scenario runs in a fresh python: a crash fails that test with the
signal's name instead of killing the test runner, and memory is measured in
a process that ran nothing else."""

import textwrap
import unittest

from helpers import UNDER_SANITIZER, ScriptTestBase

# RSS in MiB of this process, from /proc/self/statm.
_RSS = '''
import os

def rss_mib():
    with open('/proc/self/statm') as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf('SC_PAGE_SIZE') / 2**20
'''


def _with_rss(script):
    return _RSS + textwrap.dedent(script)


class SequenceTests(ScriptTestBase):

    def test_create_close_200(self):
        out = self.assert_script_ok('''
            import subinterp
            ids = set()
            for i in range(200):
                interp = subinterp.create()
                ids.add(interp.id)
                interp.close()
            print(len(ids), len(subinterp.list_all()))
            ''')
        self.assertEqual(out.split(), ['200', '1'])

    def test_create_use_drop_200(self):
        # Dropping the last Interpreter object closes the interpreter.
        out = self.assert_script_ok('''
            import gc, subinterp
            for i in range(200):
                interp = subinterp.create()
                assert interp.call(pow, i, 2) == i * i
                del interp
            gc.collect()
            print(len(subinterp.list_all()))
            ''')
        self.assertEqual(out.split(), ['1'])

    def test_many_alive_at_once(self):
        out = self.assert_script_ok('''
            import subinterp
            interps = [subinterp.create() for _ in range(50)]
            results = [interp.call(abs, -i) for i, interp in enumerate(interps)]
            assert results == list(range(50)), results
            print(len(subinterp.list_all()))
            for interp in interps:
                interp.close()
            print(len(subinterp.list_all()))
            ''')
        self.assertEqual(out.split(), ['51', '1'])

    def test_many_calls_one_interpreter(self):
        out = self.assert_script_ok('''
            import subinterp
            interp = subinterp.create()
            total = 0
            for i in range(20_000):
                total += interp.call(abs, -i)
            print(total == sum(range(20_000)))
            ''')
        self.assertEqual(out.strip(), 'True')


class ThreadTests(ScriptTestBase):

    def test_50_from_8_threads(self):
        out = self.assert_script_ok('''
            import queue, threading, subinterp
            jobs = queue.Queue()
            for i in range(50):
                jobs.put(i)
            done, errors = [], []

            def worker():
                while True:
                    try:
                        i = jobs.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        interp = subinterp.create()
                        interp.prepare_main(n=i)
                        interp.exec(f'm = n * 3\\nassert m == {i * 3}, m')
                        res = interp.call(pow, i, 2)
                        interp.close()
                        done.append(res == i * i)
                    except BaseException as exc:
                        errors.append(repr(exc))

            threads = [threading.Thread(target=worker) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            print(len(done), all(done), errors, len(subinterp.list_all()))
            ''')
        self.assertEqual(out.strip(), '50 True [] 1')

    def test_parallel_calls_each_own_interpreter(self):
        out = self.assert_script_ok('''
            import threading, subinterp
            results = {}

            def worker(k):
                interp = subinterp.create()
                total = 0
                for i in range(300):
                    total += interp.call(sum, [i, k])
                results[k] = total
                interp.close()

            threads = [threading.Thread(target=worker, args=(k,))
                       for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ok = all(results[k] == sum(range(300)) + 300 * k
                     for k in range(8))
            print(len(results), ok)
            ''')
        self.assertEqual(out.split(), ['8', 'True'])

    def test_shared_interpreter_from_threads(self):
        # Threads take turns on one interpreter; each call either runs or
        # is refused with InterpreterError because another one is running
        # (3.14 refuses a second concurrent run). Nothing else may happen.
        out = self.assert_script_ok('''
            import threading, subinterp
            interp = subinterp.create()
            ran, refused, other = [], [], []

            def worker(k):
                for i in range(100):
                    try:
                        assert interp.call(abs, -i) == i
                        ran.append(1)
                    except subinterp.InterpreterError as exc:
                        if isinstance(exc, subinterp.ExecutionFailed):
                            other.append(repr(exc))
                        else:
                            refused.append(1)
                    except BaseException as exc:
                        other.append(repr(exc))

            threads = [threading.Thread(target=worker, args=(k,))
                       for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            print(len(ran) + len(refused), len(ran) > 0, other)
            interp.close()
            ''')
        self.assertEqual(out.strip(), '400 True []')

    def test_create_close_racing_list_all(self):
        out = self.assert_script_ok('''
            import threading, subinterp
            stop = threading.Event()
            errors = set()

            def lister():
                # An interpreter that list_all() named and that is closed
                # since then is not found; nothing else may go wrong.
                while not stop.is_set():
                    for interp in subinterp.list_all():
                        try:
                            interp.is_running()
                        except subinterp.InterpreterNotFoundError:
                            pass
                        except BaseException as exc:
                            errors.add(f'{type(exc).__name__}: {exc}'
                                       .replace(str(interp.id), 'N'))

            t = threading.Thread(target=lister)
            t.start()
            for _ in range(60):
                subinterp.create().close()
            stop.set()
            t.join()
            print(sorted(errors), len(subinterp.list_all()))
            ''')
        self.assertEqual(out.strip(), '[] 1')


@unittest.skipIf(UNDER_SANITIZER, "a sanitizer's allocator holds freed "
                 'memory in quarantine: RSS says nothing about leaks there')
class MemoryTests(ScriptTestBase):

    def test_create_close_memory_bounded(self):
        # CPython 3.12/3.13 themselves keep about 1.7 MiB per create+close
        # of an isolated interpreter (measured with _interpreters, no
        # subinterp). Allow 4 MiB a cycle: a leak of the interpreter's own
        # state or of our per-interpreter data would exceed it.
        out = self.assert_script_ok(_with_rss('''
            import subinterp

            def cycle():
                interp = subinterp.create()
                interp.exec('x = [str(i) for i in range(1000)]')
                interp.call(len, 'abc')
                interp.close()

            for _ in range(20):
                cycle()
            before = rss_mib()
            for _ in range(100):
                cycle()
            print(rss_mib() - before)
            '''))
        grown = float(out)
        self.assertLess(grown, 100 * 4.0, f'{grown:.1f} MiB for 100 cycles')

    def test_call_values_memory_bounded(self):
        # 20,000 calls that each pass 10 KiB both ways: 400 MiB if each
        # leaked, under 30 MiB when nothing does.
        out = self.assert_script_ok(_with_rss('''
            import subinterp
            interp = subinterp.create()
            payload = {'bytes': b'x' * 4096, 'str': 'y' * 4096,
                       'list': list(range(200)), 'big': 7**2000}
            for _ in range(500):
                interp.call(dict, payload)
            before = rss_mib()
            for _ in range(20_000):
                interp.call(dict, payload)
            print(rss_mib() - before)
            '''))
        grown = float(out)
        self.assertLess(grown, 30.0, f'{grown:.1f} MiB for 20000 calls')

    def test_failures_memory_bounded(self):
        # 10,000 ExecutionFailed with their snapshots.
        out = self.assert_script_ok(_with_rss('''
            import subinterp
            interp = subinterp.create()

            def fail():
                for _ in range(200):
                    try:
                        interp.exec('raise ValueError("x" * 1000)')
                    except subinterp.ExecutionFailed:
                        pass

            fail()
            before = rss_mib()
            for _ in range(50):
                fail()
            print(rss_mib() - before)
            '''))
        grown = float(out)
        self.assertLess(grown, 30.0, f'{grown:.1f} MiB for 10000 failures')

    def test_shared_buffers_freed(self):
        # 300 buffers of 1 MiB, each passed to the other interpreter and
        # dropped on both sides: 300 MiB if they leaked.
        out = self.assert_script_ok(_with_rss('''
            import subinterp
            interp = subinterp.create()
            for _ in range(20):
                interp.call(len, subinterp.SharedBuffer(2**20))
            before = rss_mib()
            for _ in range(300):
                buf = subinterp.SharedBuffer(2**20)
                memoryview(buf)[::4096] = b'x' * 256
                interp.call(bytes, memoryview(buf)[:16])
                del buf
            print(rss_mib() - before)
            '''))
        grown = float(out)
        self.assertLess(grown, 60.0, f'{grown:.1f} MiB for 300 MiB of buffers')


if __name__ == '__main__':
    unittest.main()
