"""subinterp.sandbox with interpreter isolation: every script in a fresh
isolated interpreter, with a time limit and an output limit, and nothing
left for the next script."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from subinterp import sandbox

_PROCESS_ISOLATION = (hasattr(sandbox._subinterp, 'lockdown')
                      and sandbox._subinterp.landlock_abi() > 0)
SANITIZED = any(lib in os.environ.get('LD_PRELOAD', '') for lib in ('libasan', 'libtsan'))


def write_scripts(folder, scripts):
    """Writes (name, source) pairs into `folder`; their paths, in order."""
    paths = []
    for name, source in scripts:
        paths.append(os.path.join(folder, name))
        with open(paths[-1], 'w') as f:
            f.write(source)
    return paths


class SandboxTestBase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.sb = sandbox.Sandbox(workers=2, grace=0.5)

    @classmethod
    def tearDownClass(cls):
        cls.sb.close()

    def run_script(self, source, **options):
        return self.sb.run(source, **options)


class Results(SandboxTestBase):

    def test_value_of_the_last_expression_and_output(self):
        r = self.run_script('print("hi")\nimport sys\nprint("err", file=sys.stderr)\n6 * 7')
        self.assertEqual((r.status, r.value, r.stdout, r.stderr), ('ok', 42, 'hi\n', 'err\n'))
        self.assertIsNone(r.error)
        self.assertFalse(r.stuck)
        self.assertGreater(r.elapsed, 0)

    def test_result_variable_and_inputs(self):
        r = self.run_script('result = {"sum": a + sum(b)}\nx = 1', inputs={'a': 1, 'b': [2, 3]})
        self.assertEqual((r.status, r.value), ('ok', {'sum': 6}))
        r = self.run_script('x = 1')
        self.assertEqual((r.status, r.value), ('ok', None))

    def test_errors_have_type_message_and_traceback(self):
        r = self.run_script('def f():\n    raise KeyError("nope")\nf()')
        self.assertEqual(r.status, 'error')
        self.assertEqual((r.error.type, r.error.message), ('KeyError', "'nope'"))
        self.assertIn('File "<script>", line 2, in f', r.error.traceback)
        self.assertNotIn('sandbox prelude', r.error.traceback)
        r = self.run_script('1 +')
        self.assertEqual((r.status, r.error.type), ('error', 'SyntaxError'))

    def test_an_exception_whose_str_raises(self):
        r = self.run_script('class E(Exception):\n'
                            '    def __str__(self):\n'
                            '        raise RuntimeError("no str")\n'
                            'raise E()')
        self.assertEqual((r.status, r.error.type), ('error', 'E'))
        self.assertIn('str() of the exception failed', r.error.message)

    def test_a_value_that_cannot_leave_its_interpreter(self):
        r = self.run_script('import threading\nthreading.Lock()')
        self.assertEqual(r.status, 'error')
        self.assertIn("cannot leave its interpreter", r.error.message)

    def test_exits_are_errors(self):
        for source, kind in [('raise SystemExit(3)', 'SystemExit'),
                             ('raise KeyboardInterrupt', 'KeyboardInterrupt')]:
            with self.subTest(source=source):
                r = self.run_script(source)
                self.assertEqual((r.status, r.error.type), ('error', kind))
        self.assertEqual(self.run_script('1').value, 1)  # the sandbox serves on

    def test_to_json(self):
        r = self.run_script('print("a"); {1, 2}')
        d = json.loads(json.dumps(r.to_json()))
        self.assertEqual((d['status'], d['stdout'], d['value']), ('ok', 'a\n', '{1, 2}'))
        for key in ('status', 'stdout', 'stderr', 'error', 'elapsed'):
            self.assertIn(key, d)

    def test_bad_arguments(self):
        with self.assertRaises(TypeError):
            self.sb.run(b'1')
        with self.assertRaises(ValueError):
            self.sb.run('1', timeout=0)
        with self.assertRaises(ValueError):
            self.sb.run('1', output_limit=-1)
        with self.assertRaises(TypeError):
            self.sb.run('1', inputs=[1])
        with self.assertRaises(ValueError):
            sandbox.Sandbox(workers=0)
        with self.assertRaises(ValueError):
            sandbox.Sandbox(isolation='chroot')


class Isolation(SandboxTestBase):

    def test_nothing_reaches_the_next_script(self):
        for tamper in ['import builtins; builtins.len = None; builtins.print = None',
                       'import sys; sys.modules["json"] = None; sys.path[:] = []',
                       'import os; os.environ["SANDBOX_LEAK"] = "1"\n'
                       'import sys; sys.stdout = None',
                       'global leaked\nleaked = 1']:
            with self.subTest(tamper=tamper):
                self.assertIn(self.run_script(tamper).status, ('ok', 'error'))
                r = self.run_script('import json, sys\n'
                                    'print(len([1]))\n'
                                    '"leaked" in globals(), json.dumps(1), bool(sys.path)')
                self.assertEqual((r.status, r.value, r.stdout), ('ok', (False, '1', True), '1\n'),
                                 r.error)

    def test_each_script_has_a_new_interpreter(self):
        ids = {self.run_script('import subinterp\nsubinterp.get_current().id').value
               for _ in range(5)}
        self.assertEqual(len(ids), 5)


class Limits(SandboxTestBase):

    def test_python_loop_past_the_time_limit(self):
        start = time.monotonic()
        r = self.run_script('while True:\n    pass', timeout=0.5)
        elapsed = time.monotonic() - start
        self.assertEqual((r.status, r.error.type, r.stuck), ('timeout', 'TimeoutError', False))
        self.assertIn('time limit (0.5 s)', r.error.message)
        self.assertLess(elapsed, 2)

    def test_a_script_that_catches_the_timeout_is_left_behind(self):
        start = time.monotonic()
        r = self.run_script('while True:\n'
                            '    try:\n'
                            '        while True:\n'
                            '            pass\n'
                            '    except BaseException:\n'
                            '        pass', timeout=0.3)
        elapsed = time.monotonic() - start
        self.assertEqual((r.status, r.stuck), ('timeout', True))
        self.assertIn('did not stop', r.error.message)
        self.assertLess(elapsed, 0.3 + 0.5 + 1.0)  # timeout + grace, and no more
        # The sandbox keeps its workers.
        self.assertEqual([x.value for x in self.sb.map(['1', '2', '3'])], [1, 2, 3])

    def test_a_script_stuck_in_c_code_does_not_block_its_caller(self):
        # sum() over a range runs in C with the GIL held: TimeoutError
        # cannot land until it returns (a few seconds here).
        start = time.monotonic()
        r = self.run_script('sum(range(6 * 10**7))', timeout=0.2)
        elapsed = time.monotonic() - start
        self.assertEqual(r.status, 'timeout')
        if r.stuck:
            self.assertLess(elapsed, 0.2 + 0.5 + 1.0)
        self.assertEqual(self.run_script('"still here"').value, 'still here')

    def test_output_limit(self):
        r = self.run_script('while True:\n    print("x" * 999)', output_limit=10_000)
        self.assertEqual(r.status, 'output_limit')
        self.assertEqual(len(r.stdout), 10_000)
        r = self.run_script('import sys\nprint("a" * 60)\nsys.stderr.write("b" * 60)',
                            output_limit=100)
        self.assertEqual(r.status, 'output_limit')
        self.assertEqual(len(r.stdout) + len(r.stderr), 100)
        # An output limit caught by the script still counts.
        r = self.run_script('try:\n    print("y" * 200)\nexcept BaseException:\n    pass\n1',
                            output_limit=50)
        self.assertEqual(r.status, 'output_limit')


class Policy(SandboxTestBase):
    """What a script may do beyond computing: refused unless allowed."""

    def assertRefused(self, source, event, **options):
        r = self.run_script(source, **options)
        self.assertEqual((r.status, r.error.type if r.error else None), ('error', 'PermissionError'),
                         r)
        self.assertIn(event, r.error.message)
        return r

    def test_no_new_processes(self):
        marker = os.path.join(tempfile.gettempdir(), f'sandbox-marker-{os.getpid()}')
        self.assertRefused('import subprocess\nsubprocess.run(["true"])', 'subprocess.Popen')
        self.assertRefused(f'import os\nos.system("touch {marker}")', 'os.system')
        # CPython refuses fork() and exec() in isolated interpreters itself.
        for call, word in [('os.fork()', 'fork'), ('os.execv("/bin/true", ["true"])', 'exec')]:
            r = self.run_script(f'import os\n{call}')
            self.assertEqual((r.status, r.error.type), ('error', 'RuntimeError'))
            self.assertIn(f'{word} not supported', r.error.message)
        self.assertRefused('import os\nos.posix_spawn("/bin/true", ["true"], {})',
                           'os.posix_spawn')
        self.assertFalse(os.path.exists(marker))
        r = self.run_script('import subprocess\nsubprocess.run(["true"]).returncode',
                            allow='subprocess')
        self.assertEqual((r.status, r.value), ('ok', 0), r)

    def test_no_sockets(self):
        with socket.socket() as listener:
            listener.bind(('127.0.0.1', 0))
            listener.listen()
            listener.settimeout(0.2)
            port = listener.getsockname()[1]
            self.assertRefused(f'import socket\nsocket.create_connection(("127.0.0.1", {port}))',
                               'socket')
            with self.assertRaises(socket.timeout):
                listener.accept()  # nothing connected
            r = self.run_script(f'import socket\n'
                                f's = socket.create_connection(("127.0.0.1", {port}))\n'
                                f's.close()', allow=['network'])
            self.assertEqual(r.status, 'ok', r)
            listener.accept()[0].close()

    def test_writes_only_under_scratch(self):
        outside = os.path.join(tempfile.gettempdir(), f'sandbox-outside-{os.getpid()}')
        self.assertRefused(f'open({outside!r}, "w").write("x")', 'writing')
        self.assertRefused(f'import os\nos.open({outside!r}, os.O_WRONLY | os.O_CREAT)', 'writing')
        self.assertRefused('import os\nos.remove("/etc/hostname")', 'os.remove')
        self.assertFalse(os.path.exists(outside))
        r = self.run_script('import os\n'
                            'p = os.path.join(SCRATCH, "f")\n'
                            'open(p, "w").write("inside")\n'
                            'os.rename(p, p + "2")\n'
                            'open(p + "2").read(), SCRATCH')
        self.assertEqual(r.status, 'ok', r)
        self.assertEqual(r.value[0], 'inside')
        deadline = time.monotonic() + 5  # removed after the script, off its path
        while os.path.exists(r.value[1]) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(os.path.exists(r.value[1]))
        # Reading is allowed.
        self.assertEqual(self.run_script('len(open("/etc/hostname").read()) >= 0').value, True)
        r = self.run_script(f'open({outside!r}, "w").write("x")', allow='write')
        self.assertEqual(r.status, 'ok', r)
        os.unlink(outside)

    def test_no_touching_what_the_process_shares(self):
        self.assertRefused('import os, signal\nos.kill(os.getpid(), signal.SIGTERM)', 'os.kill')
        self.assertRefused('import os\nos.chdir("/")', 'os.chdir')
        self.assertRefused('import os\nos.environ["SANDBOX_LEAK"] = "1"', 'os.putenv')
        self.assertNotIn('SANDBOX_LEAK', os.environ)

    def test_unknown_permissions(self):
        with self.assertRaises(ValueError):
            self.sb.run('1', allow=['everything'])


class Pool(unittest.TestCase):

    def test_map_keeps_order_and_runs_in_parallel(self):
        with sandbox.Sandbox(workers=2) as sb:
            results = list(sb.map([f'{i} * 2' for i in range(20)], timeout=5))
        self.assertEqual([r.value for r in results], [i * 2 for i in range(20)])

    def test_submit_gives_futures(self):
        with sandbox.Sandbox(workers=2) as sb:
            futures = [sb.submit('import time; time.sleep(0.2); 1') for _ in range(4)]
            start = time.monotonic()
            self.assertEqual([f.result(10).value for f in futures], [1, 1, 1, 1])
        with self.assertRaises(RuntimeError):
            sb.submit('1')

    def test_run_function(self):
        r = sandbox.run('2 ** 10')
        self.assertEqual((r.status, r.value), ('ok', 1024))
        with self.assertRaises(ValueError):
            sandbox.run('1', isolation='container')
        with self.assertRaisesRegex(ValueError, "needs isolation='process'"):
            sandbox.run('1', memory=1 << 30)

    def test_scripts_on_several_threads(self):
        out = []
        with sandbox.Sandbox(workers=2) as sb:
            def go(n):
                out.append(sb.run(f'{n} + 1').value)
            threads = [threading.Thread(target=go, args=(n,)) for n in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        self.assertEqual(sorted(out), list(range(1, 9)))


class CommandLine(unittest.TestCase):

    def run_cli(self, *args, input=None):
        return subprocess.run([sys.executable, '-m', 'subinterp', 'run', *args],
                              capture_output=True, text=True, input=input, timeout=60)

    def test_ctrl_c_does_not_wait_for_running_scripts(self):
        # SIGINT with its default action in the command (a parent may have
        # left it ignored): exec from a child that resets it.
        start = ('import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); '
                 'os.execv(sys.executable, [sys.executable, "-m", "subinterp", "run", '
                 '*sys.argv[1:]])')
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_scripts(tmp, [('a.py', 'import time\ntime.sleep(60)'),
                                        ('b.py', 'while True:\n    pass')])
            for isolation, bound in [('interpreter', 15), ('process', 5)]:
                if isolation == 'process' and not _PROCESS_ISOLATION:
                    continue
                with self.subTest(isolation=isolation):
                    proc = subprocess.Popen(
                        [sys.executable, '-c', start, *paths, '--timeout', '120',
                         '--isolation', isolation], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
                    time.sleep(2.0)  # both scripts running
                    began = time.monotonic()
                    proc.send_signal(signal.SIGINT)
                    _, err = proc.communicate(timeout=60)
                    self.assertEqual(proc.returncode, 130, err)
                    self.assertIn('subinterp run: interrupted', err)
                    self.assertLess(time.monotonic() - began, bound)

    def test_json_lines_and_exit_status(self):
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_scripts(tmp, [('ok.py', 'print("one")\n1 + 1\n'),
                                        ('loop.py', 'while True:\n    pass\n'),
                                        ('bad.py', 'raise ValueError("bad")\n'),
                                        ('flood.py', 'while True:\n    print("x" * 100)\n')])
            proc = self.run_cli(*paths, '--json', '--timeout', '0.5', '--output-limit', '1K',
                                '--jobs', '2')
            self.assertEqual(proc.returncode, 1, proc.stderr)
            lines = [json.loads(line) for line in proc.stdout.splitlines()]
            self.assertEqual([d['status'] for d in lines],
                             ['ok', 'timeout', 'error', 'output_limit'])
            self.assertEqual([d['script'] for d in lines], paths)
            self.assertEqual((lines[0]['stdout'], lines[0]['value']), ('one\n', 2))
            self.assertEqual(lines[2]['error']['type'], 'ValueError')
            self.assertEqual(len(lines[3]['stdout']), 1024)
            for d in lines:
                for key in ('status', 'stdout', 'stderr', 'error', 'elapsed'):
                    self.assertIn(key, d)
            self.assertNotIn('[', proc.stderr)  # no progress bar off a terminal
            # Every script ok: exit status 0; the human form.
            proc = self.run_cli(paths[0])
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertIn(f'==> {paths[0]}: ok', proc.stdout)
            self.assertIn('one\n= 2', proc.stdout)

    def test_many_scripts_run_in_recycled_child_processes(self):
        # CPython keeps memory of every interpreter: past --recycle-after
        # scripts, each batch runs in a child process that takes it away.
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i in range(9):
                paths.append(os.path.join(tmp, f's{i}.py'))
                with open(paths[-1], 'w') as f:
                    f.write(f'import os\nprint({i})\n(os.getpid(), {i})\n')
            proc = self.run_cli(*paths, '--json', '--recycle-after', '4')
            self.assertEqual(proc.returncode, 0, proc.stderr)
            lines = [json.loads(line) for line in proc.stdout.splitlines()]
            self.assertEqual([d['script'] for d in lines], paths)
            self.assertEqual([d['value'][1] for d in lines], list(range(9)))
            pids = [d['value'][0] for d in lines]
            self.assertEqual([len(set(pids[i:i + 4])) for i in (0, 4, 8)], [1, 1, 1])
            self.assertEqual(len(set(pids)), 3)
            proc = self.run_cli(paths[0], '-', '--recycle-after', '1', input='1\n')
            self.assertEqual(proc.returncode, 2)
            self.assertIn("'-' (stdin) cannot be one of more than 1 scripts", proc.stderr)

    def test_stdin_and_clear_errors(self):
        proc = self.run_cli('-', '--json', input='6 * 7\n')
        self.assertEqual((proc.returncode, json.loads(proc.stdout)['value']), (0, 42))
        for args, message in [(['/no/such/script.py'], 'No such file'),
                              (['-', '--memory', '256M'], '--memory needs --isolation process'),
                              (['-', '--recycle-after', '0'], 'at least 1'),
                              (['-', '--jobs', '0'], '--jobs must be at least 1'),
                              (['-', '--allow', 'everything'], "unknown ['everything']")]:
            with self.subTest(args=args):
                proc = self.run_cli(*args, input='1\n')
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertIn(message, proc.stderr)
        proc = self.run_cli('-', '--output-limit', '12X', input='1\n')
        self.assertEqual(proc.returncode, 2)
        self.assertIn('is not a size', proc.stderr)

    @unittest.skipUnless(hasattr(sandbox._subinterp, 'lockdown')
                         and sandbox._subinterp.landlock_abi() > 0,
                         'process isolation needs libseccomp at build time and Landlock')
    def test_process_isolation_with_a_memory_limit(self):
        with tempfile.TemporaryDirectory() as folder:
            paths = write_scripts(folder, [
                ('ok.py', 'print("hi")\n6 * 7'),
                ('bomb.py', 'x = []\nwhile True:\n    x.append(bytearray(10**7))'),
                ('spawn.py', 'import os\nos.system("true")')])
            proc = self.run_cli(*paths, '--isolation', 'process', '--memory', '128M', '--json',
                                '--timeout', '20')
        self.assertEqual(proc.returncode, 1, proc.stderr)
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        statuses = [line['status'] for line in lines]
        if SANITIZED and statuses[1] == 'killed':
            statuses[1] = 'memory'  # ASan's allocator may end the worker at RLIMIT_AS
        self.assertEqual(statuses, ['ok', 'memory', 'error'])
        self.assertEqual((lines[0]['value'], lines[0]['stdout']), (42, 'hi\n'))
        self.assertEqual(lines[2]['error']['type'], 'PermissionError')


@unittest.skipUnless(hasattr(sandbox._subinterp, 'lockdown')
                     and sandbox._subinterp.landlock_abi() > 0,
                     'process isolation needs libseccomp at build time and Landlock')
class ProcessIsolation(unittest.TestCase):
    """isolation='process': scripts in confined worker processes."""

    @classmethod
    def setUpClass(cls):
        cls.sb = sandbox.Sandbox(workers=2, isolation='process', grace=0.5,
                                 memory=256 << 20)

    @classmethod
    def tearDownClass(cls):
        cls.sb.close()

    def test_results_and_values_cross_the_process_boundary(self):
        value = {'a': [1, 2.5, 3j, 2**80, b'x', bytearray(b'y'), None, True],
                 (1, 2): frozenset({'z'}), 's': {4}}
        r = self.sb.run('print("out")\nimport sys\nprint("err", file=sys.stderr)\n'
                        'result = dict(given)\nresult["n"] = n + 1',
                        inputs={'given': value, 'n': 41})
        self.assertEqual((r.status, r.stdout, r.stderr), ('ok', 'out\n', 'err\n'), r)
        self.assertEqual(r.value, dict(value, n=42))
        self.assertGreater(r.elapsed, 0)
        r = self.sb.run('def f():\n    raise KeyError("k")\nf()')
        self.assertEqual((r.status, r.error.type, r.error.message), ('error', 'KeyError', "'k'"))
        self.assertIn('line 2, in f', r.error.traceback)

    def test_what_cannot_cross(self):
        r = self.sb.run('class C:\n    pass\nC()')
        self.assertEqual(r.status, 'error')
        self.assertIn('cannot leave', r.error.message)
        with self.assertRaises(sandbox.NotShareableError):
            self.sb.submit('1', inputs={'f': lambda: 0})
        self.assertEqual(self.sb.run('1 + 1').value, 2)

    def test_every_script_in_a_fresh_interpreter_in_a_worker(self):
        seen = [self.sb.run('import os, subinterp\n(os.getpid(), subinterp.get_current().id)')
                for _ in range(6)]
        self.assertTrue(all(r.ok for r in seen), seen)
        self.assertEqual(len({tuple(r.value) for r in seen}), 6)
        self.assertNotIn(os.getpid(), {r.value[0] for r in seen})

    def test_memory_limit(self):
        r = self.sb.run('x = []\nwhile True:\n    x.append(bytearray(10**7))', timeout=20)
        if SANITIZED and r.status == 'killed':
            # A sanitizer's allocator may end the process at RLIMIT_AS.
            self.assertEqual(r.error.type, 'WorkerDied')
        else:
            self.assertEqual((r.status, r.error.type), ('memory', 'MemoryError'), r.error)
        r = self.sb.run('len(bytearray(50 << 20))')  # under the limit: fine
        self.assertEqual((r.status, r.value), ('ok', 50 << 20))

    def test_a_killed_worker_is_replaced(self):
        with sandbox.Sandbox(workers=1, isolation='process') as sb:
            self.assertEqual(sb.run('1').value, 1)  # its one worker is up
            (victim,) = sb._pids
            future = sb.submit('import time\ntime.sleep(30)', timeout=60)
            time.sleep(0.5)
            os.kill(victim, signal.SIGKILL)
            r = future.result(30)
            self.assertEqual((r.status, r.error.type), ('killed', 'WorkerDied'), r)
            self.assertIn('SIGKILL', r.error.message)
            self.assertEqual(sb.run('6 * 7').value, 42)
            self.assertEqual(len(sb._pids), 2)

    def test_recycling_after_k_scripts(self):
        with sandbox.Sandbox(workers=1, isolation='process', recycle_after=3) as sb:
            pids = [sb.run('import os\nos.getpid()').value for _ in range(7)]
        self.assertEqual(len(set(pids)), 3, pids)
        self.assertEqual(pids[:3], [pids[0]] * 3)

    def test_allow_is_bounded_by_the_sandbox(self):
        with self.assertRaisesRegex(ValueError, 'not allowed by this sandbox'):
            self.sb.run('1', allow=['network'])
        with self.assertRaises(ValueError):
            sandbox.Sandbox(isolation='process', memory=-1)


if __name__ == '__main__':
    unittest.main()
