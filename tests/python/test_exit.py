"""Process exit with interpreters still open, each case in a fresh python:
exit code as the script asks, no 'Fatal Python error', no crash, nothing
on stderr that the script did not print."""

import sys
import unittest

import subinterp
from helpers import UNDER_TSAN, ScriptTestBase, describe, run_script


class ForkTests(ScriptTestBase):

    @unittest.skipIf(UNDER_TSAN, 'ThreadSanitizer ends a forked child that '
                     'starts a thread (die_after_fork)')
    def test_fork_after_close_child_starts_afresh(self):
        # The runtime thread does not exist in the child: creating an
        # interpreter there must start a new one, not wait for the old.
        out = self.assert_script_ok('''
            import os, warnings, subinterp
            warnings.simplefilter('ignore', DeprecationWarning)  # fork with threads
            old = subinterp.create()
            old.exec('x = 1')
            old.close()
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    assert [i.id for i in subinterp.list_all()] == [0]
                    new = subinterp.create()
                    assert new.call(lambda: 6 * 7) == 42
                    new.close()
                except BaseException as exc:
                    print('child failed:', repr(exc), flush=True)
                    code = 2
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            print('child', os.waitstatus_to_exitcode(status))
            print('parent', subinterp.create().call(lambda: 1 + 1))
            ''')
        self.assertEqual(out.split(), ['child', '0', 'parent', '2'])

    def test_fork_with_open_interpreter_warns(self):
        # CPython cannot fork with sub-interpreters alive; the warning
        # comes before the fork (the child is left out: it cannot run).
        out = self.assert_script_ok('''
            import warnings, subinterp
            interp = subinterp.create()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always')
                subinterp._warn_before_fork()
            print([str(w.message).split(':')[0] for w in caught
                   if w.category is RuntimeWarning])
            ''')
        self.assertEqual(out.strip(),
                         "['fork() with 1 subinterp interpreter(s) open']")


class LeftOpenTests(ScriptTestBase):

    def test_idle_interpreters_left_open(self):
        out = self.assert_script_ok('''
            import subinterp
            keep = [subinterp.create() for _ in range(5)]
            keep.append(subinterp.create(isolated=False))
            for i, interp in enumerate(keep):
                interp.prepare_main(i=i)
                interp.exec('data = [i] * 1000')
            print('end', len(subinterp.list_all()))
            ''')
        self.assertEqual(out.strip(), 'end 7')

    def test_interpreter_with_state_left_open(self):
        out = self.assert_script_ok('''
            import subinterp
            interp = subinterp.create()
            buf = interp.call(subinterp.SharedBuffer, 64)
            interp.exec(
                'import threading, json, collections\\n'
                'import subinterp\\n'
                'state = {"lock": threading.Lock()}\\n'
                'me = subinterp.get_current()\\n'
                'main = subinterp.get_main()\\n')
            print('end')
            ''')
        self.assertEqual(out.strip(), 'end')

    def test_nested_interpreter_left_open(self):
        # An interpreter created by another interpreter, both left open.
        out = self.assert_script_ok('''
            import subinterp
            outer = subinterp.create()
            outer.exec('import subinterp\\n'
                       'inner = subinterp.create()\\n'
                       'inner.exec("x = 1")\\n')
            print('end', len(subinterp.list_all()))
            ''')
        self.assertEqual(out.strip(), 'end 3')

    def test_interpreter_held_only_by_another(self):
        out = self.assert_script_ok('''
            import subinterp
            a, b = subinterp.create(), subinterp.create()
            b.prepare_main(other=a)
            del a
            print('end', len(subinterp.list_all()))
            ''')
        self.assertEqual(out.strip(), 'end 3')

    def test_closing_holder_closes_held(self):
        # b holds the last reference to a; closing b drops it, which
        # closes a (while b is being finalized).
        out = self.assert_script_ok('''
            import gc, subinterp
            a, b = subinterp.create(), subinterp.create()
            aid = a.id
            b.prepare_main(other=a)
            del a
            gc.collect()
            b.close()
            print('end', aid in [i.id for i in subinterp.list_all()])
            ''')
        self.assertEqual(out.strip(), 'end False')

    def test_self_reference_left_open(self):
        # An interpreter holding an Interpreter object for itself.
        out = self.assert_script_ok('''
            import subinterp
            interp = subinterp.create()
            interp.exec('import subinterp; me = subinterp.get_current()')
            del interp
            print('end')
            ''')
        self.assertEqual(out.strip(), 'end')

    def test_sys_exit_code_kept(self):
        self.assert_script_ok('''
            import sys, subinterp
            keep = [subinterp.create() for _ in range(3)]
            sys.exit(5)
            ''', returncode=5)

    def test_uncaught_exception_in_main(self):
        proc_out = self.assert_script_ok('''
            import subinterp
            keep = [subinterp.create() for _ in range(3)]
            raise RuntimeError('main failed')
            ''', returncode=1, quiet_stderr=False)
        self.assertEqual(proc_out, '')

    def test_call_in_thread_finishes_before_exit(self):
        # Non-daemon threads are joined before the interpreters are ended.
        out = self.assert_script_ok('''
            import atexit, time, subinterp
            interp = subinterp.create()
            start = time.monotonic()
            t = interp.call_in_thread(time.sleep, 0.5)
            atexit.register(lambda: print(
                t.is_alive(), time.monotonic() - start >= 0.5))
            print('main end')
            ''')
        self.assertEqual(out.splitlines(), ['main end', 'False True'])

    def test_daemon_thread_blocked_in_queue_get(self):
        # The wait is refused at exit; its interpreter stops running and is
        # ended, instead of Python's finalization aborting on it.
        out = self.assert_script_ok('''
            import threading, time, subinterp
            q = subinterp.create_queue()
            interp = subinterp.create()
            def wait(q):
                return q.get()
            threading.Thread(target=interp.call, args=(wait, q),
                             daemon=True).start()
            time.sleep(0.3)
            print('main end')
            ''', quiet_stderr=False)
        self.assertEqual(out.strip(), 'main end')

    def test_end_begun_by_a_dropped_reference_at_exit(self):
        # The last reference to `idle` goes on a daemon thread while exit
        # runs, which starts its end (a slow atexit function) then: exit
        # waits for that end instead of ending the interpreter twice.
        proc = run_script('''
            import threading, time, subinterp
            busy = subinterp.create()
            def run_busy():
                try:
                    busy.call(time.sleep, 1)
                except Exception:
                    pass
            threading.Thread(target=run_busy, daemon=True).start()
            idle = subinterp.create()
            idle.exec("""if 1:
                import atexit, os, time
                def slow():
                    os.write(1, b'idle atexit start\\\\n')
                    time.sleep(1.5)
                    os.write(1, b'idle atexit end\\\\n')
                atexit.register(slow)
                """)
            q = subinterp.create_queue()
            def drop_when_exit_begins():
                global idle
                try:
                    q.get()
                except Exception:
                    pass
                del idle
            threading.Thread(target=drop_when_exit_begins, daemon=True).start()
            time.sleep(0.2)
            print('main end', flush=True)
            ''')
        self.assertEqual(proc.returncode, 0, describe(proc))
        self.assertNotIn('Fatal Python error', proc.stderr, describe(proc))
        self.assertEqual(proc.stdout.split('\n')[:3],
                         ['main end', 'idle atexit start', 'idle atexit end'],
                         describe(proc))

    def test_daemon_thread_blocked_in_channel_calls(self):
        out = self.assert_script_ok('''
            import threading, time, subinterp
            from subinterp import channels
            r, s = channels.create_channel()
            r2, s2 = channels.create_channel()
            for func, arg in ((lambda r: r.recv(), r), (lambda s: s.send(1), s2)):
                interp = subinterp.create()
                threading.Thread(target=interp.call, args=(func, arg),
                                 daemon=True).start()
            time.sleep(0.3)
            print('main end')
            ''', quiet_stderr=False)
        self.assertEqual(out.strip(), 'main end')

    def test_daemon_thread_running_a_loop(self):
        # A run that never ends by itself gets SystemExit at exit.
        proc = run_script('''
            import threading, time, subinterp
            interp = subinterp.create()
            def spin():
                while True:
                    pass
            threading.Thread(target=interp.call, args=(spin,),
                             daemon=True).start()
            time.sleep(0.3)
            print('main end')
            ''')
        self.assertEqual(proc.returncode, 0, describe(proc))
        self.assertNotIn('Fatal Python error', proc.stderr, describe(proc))
        # (The thread's report of SystemExit may be cut short by the exit.)
        self.assertEqual(proc.stdout.strip(), 'main end')

    def test_user_atexit_can_use_interpreters(self):
        # Hooks registered after importing subinterp run before it ends
        # the interpreters.
        out = self.assert_script_ok('''
            import atexit, subinterp
            interp = subinterp.create()
            atexit.register(lambda: print(interp.call(abs, -9)))
            ''')
        self.assertEqual(out.strip(), '9')


class ShutdownHookTests(ScriptTestBase):

    def test_only_main_registers_shutdown(self):
        # Importing subinterp in another interpreter adds no atexit hook
        # there: only the main interpreter's exit ends interpreters.
        interp = subinterp.create()
        interp.exec('import atexit\n'
                    'before = atexit._ncallbacks()\n'
                    'import subinterp\n'
                    'assert atexit._ncallbacks() == before, before\n')


class Py312CrashTests(ScriptTestBase):
    """CPython 3.12.1 aborts the process when an isolated interpreter that
    imported hashlib, ssl or asyncio is ended (unless the main interpreter
    imported them first). The runtime must keep users out of it."""

    SCRIPT = '''
        import subinterp
        for name in ('hashlib', 'ssl', 'asyncio'):
            interp = subinterp.create()
            interp.exec(f'import {name}')
            interp.close()
            print(name, 'ok')
        '''

    def test_refused_extension_then_second_interpreter(self):
        # 3.12.1 runs the single-phase init of _datetime, _decimal and
        # _zoneinfo in the isolated interpreter before refusing it; the
        # next interpreter's import then double-frees. Each package below
        # pulls one of them in (or falls back to pure Python). An import
        # may fail cleanly (3.12's zoneinfo needs the C datetime API); the
        # process must live.
        names = ('datetime', 'decimal', 'zoneinfo', 'fractions',
                 'statistics', 'sqlite3', 'http.client', 'urllib.request')
        out = self.assert_script_ok(f'''
            import subinterp
            for name in {names!r}:
                result = 'ok'
                for _ in range(2):
                    interp = subinterp.create()
                    try:
                        interp.exec(f'import {{name}}')
                    except subinterp.ExecutionFailed as exc:
                        result = exc.excinfo.type.__name__
                    interp.close()
                print(name, result)
            ''')
        got = dict(line.split() for line in out.splitlines())
        self.assertEqual(sorted(got), sorted(names))
        refused = {name: r for name, r in got.items() if r != 'ok'}
        if sys.version_info >= (3, 13):
            self.assertEqual(refused, {})
        else:
            self.assertLessEqual(set(refused), {'zoneinfo'})

    def test_import_then_close(self):
        out = self.assert_script_ok(self.SCRIPT)
        self.assertEqual(out.splitlines(),
                         ['hashlib ok', 'ssl ok', 'asyncio ok'])

    def test_all_three_then_close(self):
        out = self.assert_script_ok('''
            import subinterp
            for _ in range(3):
                interp = subinterp.create()
                interp.exec('import hashlib, ssl, asyncio')
                interp.close()
            print('ok')
            ''')
        self.assertEqual(out.strip(), 'ok')

    def test_import_then_left_open(self):
        out = self.assert_script_ok('''
            import subinterp
            keep = []
            for name in ('hashlib', 'ssl', 'asyncio'):
                interp = subinterp.create()
                interp.exec(f'import {name}')
                keep.append(interp)
            print('end')
            ''')
        self.assertEqual(out.strip(), 'end')

    def test_use_then_close(self):
        out = self.assert_script_ok('''
            import subinterp
            interp = subinterp.create()
            interp.exec('import asyncio, hashlib\\n'
                        'async def f():\\n'
                        '    return hashlib.sha256(b"x").hexdigest()[:8]\\n'
                        'h = asyncio.run(f())\\n'
                        'assert h == "2d711642", h\\n')
            interp.close()
            print('ok')
            ''')
        self.assertEqual(out.strip(), 'ok')


if __name__ == '__main__':
    unittest.main()
