"""A hostile soak of the WSGI server: 24 clients send random requests to the
test applications (tests/python/wsgi_apps.py) for a while, some pipelined,
some cut off mid-request, some dropped mid-response with a reset; the
server recycles its workers every few hundred requests, times requests out,
and is reloaded twice; then SIGINT arrives while requests run.

It fails on a crash, a sanitizer report, a hang at exit or an exit status
other than 0. Run it on a sanitizer build to make it count:

    PYTHONMALLOC=malloc ASAN_OPTIONS=detect_leaks=0 \\
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libasan.so.8:/usr/lib/x86_64-linux-gnu/libubsan.so.1 \\
        python3 bench/soak_server.py --build build/asan-py3.13 \\
            --python $PYENV_ROOT/versions/3.13.0/bin/python3 --threads 4
"""

import argparse
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
APPS = os.path.join(REPO, 'tests', 'python')
BAD = re.compile(r'Sanitizer|runtime error|Fatal Python|Segmentation|terminate called|Aborted')


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--build', required=True, help='build folder (its python/ is used)')
    p.add_argument('--python', default=sys.executable, help='the CPython to serve with')
    p.add_argument('--threads', type=int, default=1, help='threads per worker (1)')
    p.add_argument('--seconds', type=float, default=20, help='length of the load (20)')
    args = p.parse_args()

    big = tempfile.NamedTemporaryFile(delete=False)
    big.write(os.urandom(8 << 20))
    big.close()
    env = dict(os.environ, PYTHONPATH=f'{os.path.abspath(args.build)}/python:{REPO}/python',
               SUBINTERP_TEST_MARKER=os.devnull)
    proc = subprocess.Popen(
        [args.python, '-m', 'subinterp', 'serve', 'wsgi_apps:router', '-b', '127.0.0.1:0',
         '-w', '2', '--threads', str(args.threads), '--pythonpath', APPS,
         '--max-requests', '300', '--max-requests-jitter', '50', '--timeout', '2',
         '--read-timeout', '2', '--log-level', 'warning'],
        cwd=APPS, env=env, stderr=subprocess.PIPE, text=True)
    port = None
    while port is None:
        line = proc.stderr.readline()
        if not line:
            sys.exit('the server did not start')
        match = re.search(r'Listening at: http://127\.0\.0\.1:(\d+)', line)
        if match:
            port = int(match.group(1))
    errors = []
    threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True).start()

    paths = ['/hello', '/echo', '/stream', '/trickle?pause=0.05', '/endless',
             f'/sendfile?path={big.name}', f'/sendfile?path={big.name}&skip=12345', '/big?n=5',
             '/late_error', '/wrong_length?say=4&how=stream', '/slow?s=0.3', '/raises', '/spin',
             '/whoami', '/closing']
    stop = time.monotonic() + args.seconds
    counts = {'answered': 0, 'cut mid-request': 0, 'client errors': 0}

    def client(seed):
        r = random.Random(seed)
        while time.monotonic() < stop:
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=5) as s:
                    data = b''.join(
                        f'{r.choice(["GET", "GET", "HEAD", "POST"])} {r.choice(paths)} HTTP/1.1\r\n'
                        f'Host: x\r\nContent-Length: 3\r\n\r\nabc'.encode()
                        for _ in range(r.randint(1, 4)))
                    mode = r.random()
                    if mode < 0.1:
                        s.sendall(data[:r.randint(1, len(data) - 1)])
                        counts['cut mid-request'] += 1
                        continue
                    s.sendall(data)
                    got, limit = 0, r.choice([100, 70000, 10 << 20])
                    while got < limit:
                        piece = s.recv(65536)
                        if not piece:
                            break
                        got += len(piece)
                    if mode < 0.4:  # leave with a reset, mid-response
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\1\0\0\0\0\0\0\0')
                    counts['answered'] += 1
            except OSError:
                counts['client errors'] += 1

    clients = [threading.Thread(target=client, args=(i,)) for i in range(24)]
    for t in clients:
        t.start()
    for _ in range(2):
        time.sleep(args.seconds / 4)
        proc.send_signal(signal.SIGHUP)
    for t in clients:
        t.join()

    for _ in range(3):  # requests running when SIGINT comes
        socket.create_connection(('127.0.0.1', port)).sendall(
            b'GET /spin HTTP/1.1\r\nHost: x\r\n\r\n')
    time.sleep(0.5)
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        sys.exit('FAIL: the server did not exit within 30 s of SIGINT')
    time.sleep(0.5)
    os.unlink(big.name)
    bad = [line for line in ''.join(errors).splitlines() if BAD.search(line)]
    print(f'exit status {proc.returncode}, {time.monotonic() - start:.1f} s after SIGINT; {counts}')
    for line in bad[:20]:
        print('  ' + line)
    ok = proc.returncode == 0 and not bad
    print('PASS' if ok else 'FAIL')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
