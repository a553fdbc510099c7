"""The WSGI server against gunicorn and uWSGI, side by side in one run.

Every server serves the same application file (bench/server_app.py) on
loopback. For each endpoint, wrk (-t2 -c32, Debian's) loads each server in
turn, for several interleaved rounds. Reported per server and endpoint:
req/s, p50 and p99 latency, errors (non-2xx and socket errors), whether
every connection got answers (keep-alive servers can starve some), and the
summed RSS and PSS of the server's process tree. Ratios against the best peer come
last, with the issue's targets.

    PY=$PYENV_ROOT/versions/3.13.0/bin/python3
    $PY bench/bench_server.py                 # all servers, all endpoints
    $PY bench/bench_server.py --quick         # a smoke run
    $PY bench/bench_server.py --only hello --servers subinterp,gunicorn-sync

gunicorn is Debian's, run with this python (the same interpreter build on
both sides). uWSGI and Apache's mod_wsgi are Debian's; both embed Debian's
python3.11 (a PGO/LTO build, about 1.3-1.8x faster on pure-Python code than
the pyenv CPythons, which are built without --enable-optimizations), so on
the CPU route they compare interpreter builds as much as servers. Debian's
uWSGI 2.0.21 cannot build a plugin for 3.12/3.13 (its sources use thread
state fields those versions removed).

The peers come from `bash scripts/deps.sh --bench` (wrk, gunicorn, uwsgi,
apache2 with mod_wsgi). mod_wsgi's daemon processes run as `nobody`: the
bench folder must be readable by it.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _common  # noqa: E402
REPO = os.path.dirname(HERE)
DIST = '/usr/lib/python3/dist-packages'
ENDPOINTS = {'hello': '/hello', 'cpu': '/cpu', 'flask': '/flask'}


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def servers(py, port, workers):
    """name -> (argv, env additions)"""
    app_dir = HERE
    base_env = {'PYTHONPATH': os.pathsep.join([app_dir, DIST])}
    sub_env = {'PYTHONPATH': os.pathsep.join(_subinterp_path())}
    out = {
        f'subinterp -w {workers}': (
            [py, '-m', 'subinterp', 'serve', 'server_app:application', '-b',
             f'127.0.0.1:{port}', '-w', str(workers), '--pythonpath', f'{app_dir},{DIST}',
             '--log-level', 'warning'], sub_env),
        f'gunicorn sync -w {workers}': (
            [py, '-m', 'gunicorn', '-w', str(workers), '-b', f'127.0.0.1:{port}',
             '--log-level', 'warning', 'server_app:application'], base_env),
        f'gunicorn gthread -w {workers} --threads 4': (
            [py, '-m', 'gunicorn', '-k', 'gthread', '-w', str(workers), '--threads', '4',
             '-b', f'127.0.0.1:{port}', '--log-level', 'warning',
             'server_app:application'], base_env),
    }
    if shutil.which('uwsgi') and os.path.exists('/usr/lib/uwsgi/plugins/python3_plugin.so'):
        common = ['--master', '--disable-logging', '--pythonpath', app_dir, '--pythonpath', DIST,
                  '--module', 'server_app:application', '--die-on-term']
        for procs in sorted({2, 2 * workers}):
            out[f'uwsgi http11-socket {procs}p (py3.11)'] = (
                ['uwsgi', '--plugin', 'python3', '--http11-socket', f'127.0.0.1:{port}',
                 '--processes', str(procs), *common], {})
        out[f'uwsgi http-socket {2 * workers}p (py3.11)'] = (
            ['uwsgi', '--plugin', 'python3', '--http-socket', f'127.0.0.1:{port}',
             '--processes', str(2 * workers), *common], {})
        out[f'uwsgi http11-socket {workers}p x 8t (py3.11)'] = (
            ['uwsgi', '--plugin', 'python3', '--http11-socket', f'127.0.0.1:{port}',
             '--processes', str(workers), '--threads', '8', *common], {})
    modwsgi = '/usr/lib/apache2/modules/mod_wsgi.so'
    if shutil.which('apache2') or os.path.exists('/usr/sbin/apache2'):
        if os.path.exists(modwsgi):
            for threads in (1, 4):
                conf = _modwsgi_conf(port, workers, threads)
                out[f'mod_wsgi {workers}p x {threads}t (py3.11)'] = (
                    ['/usr/sbin/apache2', '-f', conf, '-DFOREGROUND'], {})
    return out


def _modwsgi_conf(port, processes, threads):
    """An Apache config of its own (in a temporary folder): mod_wsgi in
    daemon mode, `processes` x `threads`, keep-alive on, no access log."""
    import tempfile
    root = tempfile.mkdtemp(prefix='bench-modwsgi-')
    os.chmod(root, 0o755)
    path = os.path.join(root, 'httpd.conf')
    mods = '/usr/lib/apache2/modules'
    with open(path, 'w') as f:
        f.write(f"""ServerRoot {root}
Listen 127.0.0.1:{port}
PidFile {root}/httpd.pid
ErrorLog {root}/error.log
LogLevel warn
ServerName localhost
User nobody
Group nogroup
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule wsgi_module {mods}/mod_wsgi.so
KeepAlive On
MaxKeepAliveRequests 0
WSGIDaemonProcess bench processes={processes} threads={threads} python-path={HERE}:{DIST}
WSGIProcessGroup bench
WSGIApplicationGroup %{{GLOBAL}}
WSGIScriptAlias / {HERE}/server_app.py
<Directory {HERE}>
  Require all granted
</Directory>
""")
    return path


def _subinterp_path():
    """Folders that make the measured subinterp importable (absolute)."""
    sys.path.insert(0, HERE)
    import _common
    sub = _common.import_subinterp()
    ext = os.path.dirname(os.path.dirname(os.path.abspath(sub._subinterp.__file__)))
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(sub.__file__)))
    return [ext, pkg] if ext != pkg else [pkg]


def wait_port(port, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def parse_wrk(text):
    def dur(v):
        m = re.match(r'([\d.]+)(us|ms|s)', v)
        n = float(m.group(1))
        return n / 1000 if m.group(2) == 'us' else n if m.group(2) == 'ms' else n * 1000
    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', text).group(1))
    p50 = dur(re.search(r'\s50%\s+(\S+)', text).group(1))
    p99 = dur(re.search(r'\s99%\s+(\S+)', text).group(1))
    errors = 0
    m = re.search(r'Non-2xx or 3xx responses:\s+(\d+)', text)
    if m:
        errors += int(m.group(1))
    m = re.search(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)', text)
    if m:
        errors += sum(int(x) for x in m.groups())
    return rps, p50, p99, errors




def connection_counts(port, path, seconds, conns=32):
    """Answers per connection when each of `conns` clients sends its next
    request as soon as its last answer is in, as wrk does (one thread,
    non-blocking sockets). wrk itself counts only completed requests, so a
    server that serves a few connections and leaves the others waiting
    looks fast to it; this shows such starvation. A client whose connection
    the server closes reconnects, as wrk does."""
    import selectors
    request = f'GET {path} HTTP/1.1\r\nHost: x\r\n\r\n'.encode()
    sel = selectors.DefaultSelector()
    clients = [{'answered': 0, 'buf': b'', 'sock': None} for _ in range(conns)]

    def connect(c):
        try:
            s = socket.create_connection(('127.0.0.1', port), timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            s.send(request)
        except OSError:
            c['sock'] = None
            return
        c['sock'], c['buf'] = s, b''
        sel.register(s, selectors.EVENT_READ, c)

    def drop(c):
        sel.unregister(c['sock'])
        c['sock'].close()
        c['sock'] = None

    for c in clients:
        connect(c)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for c in clients:
            if c['sock'] is None:
                connect(c)
        for key, _ in sel.select(timeout=0.05):
            c = key.data
            try:
                data = c['sock'].recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b''
            if not data:
                drop(c)
                continue
            c['buf'] += data
            while True:
                head, sep, rest = c['buf'].partition(b'\r\n\r\n')
                if not sep:
                    break
                length = 0
                for line in head.split(b'\r\n'):
                    if line[:15].lower() == b'content-length:':
                        length = int(line[15:])
                if len(rest) < length:
                    break
                c['buf'] = rest[length:]
                c['answered'] += 1
                closing = b'connection: close' in head.lower() or b'HTTP/1.0' in head[:9]
                if closing:
                    drop(c)
                    break
                try:
                    c['sock'].send(request)
                except OSError:
                    drop(c)
                    break
    for c in clients:
        if c['sock'] is not None:
            drop(c)
    return sorted(c['answered'] for c in clients)


def memory_per_worker(table_fn, py, counts=(1, 4)):
    """RSS of each server's process tree with 1 and with 4 workers, after
    the Flask route and /hello were each requested 200 times: what an extra
    worker costs (an interpreter against a process)."""
    print('\nmemory per extra worker (RSS / PSS of the process tree, MiB, after a second of '
          'load on each route)')
    header = (f"{'server':34} " + ' '.join(f'{f"-w {n}":>15}' for n in counts) +
              '  per extra worker (RSS / PSS)')
    print(header)
    print('-' * len(header))
    rows = {}
    for n in counts:
        port = free_port()
        for name, (argv, env_add) in table_fn(py, port, n).items():
            kind = name.rsplit(' -w', 1)[0] if ' -w' in name else name
            if 'uwsgi' in name or 'gthread' in name:
                continue
            env = dict(os.environ, **env_add)
            proc = subprocess.Popen(argv, cwd=HERE, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                if not wait_port(port, proc):
                    continue
                for path in ('/hello', '/flask'):
                    subprocess.run(['wrk', '-t1', f'-c{2 * n}', '-d1s',
                                    f'http://127.0.0.1:{port}{path}'], capture_output=True)
                time.sleep(0.5)
                rss, pss = _common.tree_memory(proc.pid)
                rows.setdefault(kind, {})[n] = (rss / 1024, pss / 1024)
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=30)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
    for kind, by_n in rows.items():
        if len(by_n) == len(counts):
            extra = [(by_n[counts[-1]][i] - by_n[counts[0]][i]) / (counts[-1] - counts[0])
                     for i in (0, 1)]
            print(f'{kind:34} ' + ' '.join(f'{by_n[n][0]:7.1f}/{by_n[n][1]:7.1f}' for n in counts) +
                  f'  {extra[0]:6.1f} / {extra[1]:6.1f} MiB')


def recycling_cost(py, requests=10000, every=50):
    """What --max-requests costs: the server's RSS growth per new worker
    interpreter (-w 1, one keep-alive client), against the same workload
    without recycling, and against the core alone making, importing the
    app in and closing interpreters (CPython keeps memory per interpreter)."""
    import http.client
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(_subinterp_path()))
    print(f'\nrecycling: {requests} requests on /hello, -w 1, one keep-alive client')

    def rss(pid):
        with open(f'/proc/{pid}/status') as f:
            return int(re.search(r'VmRSS:\s+(\d+)', f.read()).group(1)) / 1024

    for extra in ([], ['--max-requests', str(every)]):
        port = free_port()
        proc = subprocess.Popen(
            [py, '-m', 'subinterp', 'serve', 'server_app:application', '-b', f'127.0.0.1:{port}',
             '-w', '1', '--log-level', 'warning', *extra],
            cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not wait_port(port, proc):
                print('  the server did not start')
                continue
            conn = http.client.HTTPConnection('127.0.0.1', port, timeout=30)

            def load(n):
                for _ in range(n):
                    conn.request('GET', '/hello')
                    conn.getresponse().read()
            load(10 * every)  # past the first recycles
            before = rss(proc.pid)
            load(requests)
            after = rss(proc.pid)
            conn.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        made = requests // every if extra else 0
        label = ' '.join(extra) or 'no recycling'
        per = f': {(after - before) * 1024 / made:.0f} KiB per new interpreter' if made else ''
        print(f'  {label:20} RSS {before:6.1f} -> {after:6.1f} MiB ({made} new interpreters){per}')
    code = ('import re, sys; sys.path.insert(0, %r); import subinterp\n'
            'def rss(): return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1))\n'
            'src = "import sys, io, importlib, stat, traceback; sys.path.insert(0, %r); import server_app"\n'
            'def cycle():\n i = subinterp.create(); i.exec(src); i.close()\n'
            'for _ in range(10): cycle()\n'
            'b = rss()\n'
            'for _ in range(100): cycle()\n'
            'print((rss() - b) / 100)' % (HERE, HERE))
    out = subprocess.run([py, '-c', code], env=env, capture_output=True, text=True)
    if out.returncode == 0:
        print(f'  the core alone (create, import the app, close; 100 times): '
              f'{float(out.stdout):.0f} KiB per interpreter')


def interpreter_speed(py):
    """The CPU route's work alone, outside any server, on this python and on
    the python3.11 that uWSGI and mod_wsgi embed: how much of a gap on /cpu
    is the interpreter build's."""
    code = ('import sys, time; sys.path.insert(0, %r); import server_app; '
            'server_app._spin(80_000); t = time.perf_counter(); '
            '[server_app._spin(80_000) for _ in range(40)]; '
            'print((time.perf_counter() - t) / 40 * 1000)' % HERE)
    times = {}
    for name, exe in [('this python', py), ('python3.11', '/usr/bin/python3.11')]:
        if not os.path.exists(exe):
            continue
        out = subprocess.run([exe, '-c', code], capture_output=True, text=True)
        if out.returncode == 0:
            times[name] = float(out.stdout)
    if len(times) == 2:
        print(f"\nthe /cpu work alone: {times['this python']:.2f} ms on this python, "
              f"{times['python3.11']:.2f} ms on Debian's python3.11 "
              f"({times['this python'] / times['python3.11']:.2f}x): peers on python3.11 "
              f"get that much more from each core on /cpu")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--seconds', type=int, default=8, help='wrk duration per run (8)')
    p.add_argument('--rounds', type=int, default=3, help='interleaved rounds (3)')
    p.add_argument('--workers', type=int, default=os.cpu_count() or 2,
                   help='workers of each server (default: cores)')
    p.add_argument('--only', help='endpoints, comma-separated (hello,cpu,flask)')
    p.add_argument('--servers', help='names to keep (substring match, comma-separated)')
    p.add_argument('--quick', action='store_true', help='1 round of 2 s')
    p.add_argument('--memory', action='store_true',
                   help='only the memory per extra worker (1 and 4 workers)')
    p.add_argument('--recycling', action='store_true',
                   help='only what --max-requests costs in memory per new interpreter')
    args = p.parse_args()
    if args.quick:
        args.seconds, args.rounds = 2, 1
    if not shutil.which('wrk'):
        sys.exit('wrk is needed: apt-get install wrk')
    py = sys.executable
    if args.memory:
        memory_per_worker(servers, py)
        return
    if args.recycling:
        recycling_cost(py)
        return
    endpoints = [e for e in ENDPOINTS if not args.only or e in args.only.split(',')]
    port = free_port()
    table = servers(py, port, args.workers)
    if args.servers:
        keep = args.servers.split(',')
        table = {k: v for k, v in table.items() if any(s in k for s in keep)}
    print('=' * 78)
    print('WSGI servers on loopback: wrk -t2 -c32, same app file (bench/server_app.py)')
    print(f'python : {sys.version.split()[0]} ({py})')
    print(f'cores  : {os.cpu_count()}; {args.rounds} rounds x {args.seconds} s per run')
    print('=' * 78, flush=True)
    results = {}  # (server, endpoint) -> list of (rps, p50, p99, errors, rss)
    starve = {}
    for r in range(args.rounds):
        for name, (argv, env_add) in table.items():
            env = dict(os.environ, **env_add)
            proc = subprocess.Popen(argv, cwd=HERE, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True)
            try:
                if not wait_port(port, proc):
                    err = proc.stderr.read().decode(errors='replace') if proc.poll() is not None else ''
                    print(f'  {name}: did not start\n{err[-2000:]}')
                    continue
                for ep in endpoints:
                    url = f'http://127.0.0.1:{port}{ENDPOINTS[ep]}'
                    subprocess.run(['wrk', '-t2', '-c32', '-d1s', url], capture_output=True)
                    out = subprocess.run(['wrk', '-t2', '-c32', f'-d{args.seconds}s',
                                          '--latency', url], capture_output=True, text=True)
                    rps, p50, p99, errors = parse_wrk(out.stdout)
                    rss, pss = _common.tree_memory(proc.pid)
                    results.setdefault((name, ep), []).append((rps, p50, p99, errors, rss, pss))
                    print(f'  round {r + 1} {name:40} {ep:6} {rps:9.0f} req/s  p99 {p99:7.2f} ms',
                          flush=True)
                if r == 0 and 'hello' in endpoints:
                    starve[name] = connection_counts(port, ENDPOINTS['hello'], 3)
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=30)
                except ProcessLookupError:
                    proc.wait()
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            time.sleep(0.5)

    print()
    header = (f"{'server':42} {'endpoint':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'errors':>7} {'RSS MiB':>8} {'PSS MiB':>8}")
    print(header)
    print('-' * len(header))
    med = {}
    for (name, ep), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rps = statistics.median(x[0] for x in runs)
        p50 = statistics.median(x[1] for x in runs)
        p99 = statistics.median(x[2] for x in runs)
        errors = sum(x[3] for x in runs)
        rss = statistics.median(x[4] for x in runs) / 1024
        pss = statistics.median(x[5] for x in runs) / 1024
        med[(name, ep)] = (rps, p50, p99, errors, rss, pss)
        print(f'{name:42} {ep:8} {rps:9.0f} {p50:8.2f} {p99:8.2f} {errors:7d} {rss:8.1f} '
              f'{pss:8.1f}')
    if starve:
        print('\nanswers per connection: 32 clients, each sending its next request as soon as '
              'its answer is in (as wrk does), 3 s on /hello')
        print(f"{'server':42} {'starved':>8} {'min':>7} {'median':>7} {'max':>7} {'total':>8}")
        for k, counts in starve.items():
            print(f"{k:42} {sum(1 for x in counts if x == 0):8d} {counts[0]:7d} "
                  f"{counts[len(counts) // 2]:7d} {counts[-1]:7d} {sum(counts):8d}")

    print('\ntargets (informational; medians of the rounds):')
    ours = next((n for n in table if n.startswith('subinterp')), None)

    def fair(n):
        """No connection starved (or not measured)."""
        counts = starve.get(n)
        return counts is None or counts[0] > 0

    def clean(n, ep):
        """Fair, and errors (wrk's socket errors, non-2xx) under 1% of the
        requests: a latency is a client's only if its request succeeded."""
        rps, _, _, errors = med[(n, ep)][:4]
        return fair(n) and errors <= 0.01 * rps * args.seconds * args.rounds

    def best(ep, prefix):
        # A configuration that leaves connections unanswered is no peer to
        # beat: its req/s are those of the few connections it serves.
        cands = [(med[(n, ep)][0], n) for n in table
                 if n.startswith(prefix) and (n, ep) in med and fair(n)]
        return max(cands) if cands else None

    def line(ok, text):
        print(f"  {'PASS' if ok else 'MISS'}  {text}")

    if 'cpu' in endpoints:
        interpreter_speed(py)
    if ours:
        for ep in endpoints:
            if (ours, ep) not in med:
                continue
            rps = med[(ours, ep)][0]
            for prefix, want, label in [('uwsgi', 1.3 if ep == 'hello' else None, 'uWSGI'),
                                        ('gunicorn sync', 2.5 if ep == 'hello' else None,
                                         'gunicorn sync'),
                                        ('gunicorn', 1.2 if ep == 'flask' else None,
                                         'gunicorn (best)')]:
                b = best(ep, prefix)
                if b and want:
                    line(rps / b[0] >= want,
                         f'{ep}: {rps:.0f} / {label} {b[0]:.0f} ({b[1]}) = {rps / b[0]:.2f}x '
                         f'(target >= {want}x)')
            unfair = [n for n in table if n.startswith('uwsgi') and (n, ep) in med and not fair(n)]
            if unfair and ep == 'hello':
                print(f'  (left out as peers, for starving connections: {", ".join(unfair)})')
                raw = max((med[(n, ep)][0], n) for n in unfair)
                print(f'  (for information: {rps:.0f} / {raw[0]:.0f} of {raw[1]}, which serves '
                      f'{len(starve[raw[1]]) - sum(1 for x in starve[raw[1]] if x == 0)} of '
                      f'{len(starve[raw[1]])} connections, = {rps / raw[0]:.2f}x)')
            peers = [(med[(n, ep)][0], n) for n in table
                     if n != ours and (n, ep) in med and fair(n)]
            clean_peers = [n for _, n in peers if clean(n, ep)]
            if peers:
                top = max(peers)
                p99_best, p99_name = min((med[(n, ep)][2], n) for n in clean_peers or
                                         [n for _, n in peers])
                if ep == 'cpu':
                    line(rps >= top[0] and med[(ours, ep)][5] <= med[(top[1], ep)][5] / 2,
                         f'cpu: {rps:.0f} vs best peer {top[0]:.0f} ({top[1]}); PSS '
                         f'{med[(ours, ep)][5]:.0f} vs {med[(top[1], ep)][5]:.0f} MiB '
                         f'(target: >= its req/s at <= half its memory)')
                line(med[(ours, ep)][2] <= p99_best,
                     f'{ep}: p99 {med[(ours, ep)][2]:.2f} ms vs best peer {p99_best:.2f} ms '
                     f'({p99_name}; peers with errors left out)')
        if starve:
            mine = starve.get(ours, [0])
            line(mine[0] > 0, f'no connection starved ({ours}: '
                              f'{sum(1 for x in mine if x == 0)} of {len(mine)})')


if __name__ == '__main__':
    main()
