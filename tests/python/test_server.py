"""The WSGI server (subinterp.server): real sockets on loopback, real HTTP
clients (http.client, and raw sockets for the shapes clients will not
send), the apps of wsgi_apps.py served by sub-interpreter workers."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import subinterp
import subinterp.server

from helpers import check_no_sanitizer_report

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 30


class Served:
    """A server of wsgi_apps.router in this process, on a free port."""

    def __init__(self, app='wsgi_apps:router', **options):
        self.tmp = tempfile.TemporaryDirectory()
        self.error_log = os.path.join(self.tmp.name, 'error.log')
        options.setdefault('workers', 2)
        options.setdefault('bind', ['127.0.0.1:0'])
        options.setdefault('pythonpath', [HERE])
        self.server = subinterp.server.Server(app, error_logfile=self.error_log, **options)
        self.urls = self.server.start()
        self.port = int(self.urls[0].rsplit(':', 1)[1])
        self.waiter = threading.Thread(target=self.server.wait)
        self.waiter.start()

    def stop(self, graceful=True):
        self.server.stop(graceful=graceful)
        self.waiter.join(TIMEOUT)
        alive = self.waiter.is_alive()
        self.tmp_log = self.log()
        self.tmp.cleanup()
        if alive:
            raise AssertionError('the server did not stop')

    def log(self):
        try:
            with open(self.error_log) as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def connection(self):
        return http.client.HTTPConnection('127.0.0.1', self.port, timeout=TIMEOUT)

    def raw(self, data, *, read_until_close=True, timeout=TIMEOUT):
        with socket.create_connection(('127.0.0.1', self.port), timeout=timeout) as s:
            s.sendall(data)
            if not read_until_close:
                return s.recv(65536)
            chunks = []
            while True:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            return b''.join(chunks)


class ServerTestBase(unittest.TestCase):
    options = {}

    @classmethod
    def setUpClass(cls):
        cls.served = Served(**cls.options)

    @classmethod
    def tearDownClass(cls):
        cls.served.stop()

    def get(self, path, method='GET', body=None, headers=None):
        conn = self.served.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def echo(self, path='/echo', **kwargs):
        status, _, body = self.get(path, **kwargs)
        self.assertEqual(status, 200, body)
        return json.loads(body)


class Environ(ServerTestBase):

    def test_hello(self):
        status, headers, body = self.get('/hello')
        self.assertEqual((status, body), (200, b'Hello, world!\n'))
        self.assertEqual(headers['Content-Length'], '14')

    def test_required_keys(self):
        env = self.echo('/echo/a%20b/%C3%A9?x=1&y=%20')
        for key in ('REQUEST_METHOD', 'SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING',
                    'SERVER_NAME', 'SERVER_PORT', 'SERVER_PROTOCOL', 'wsgi.version',
                    'wsgi.url_scheme', 'wsgi.input', 'wsgi.errors', 'wsgi.multithread',
                    'wsgi.multiprocess', 'wsgi.run_once', 'REMOTE_ADDR'):
            self.assertIn(key, env)
        self.assertEqual(env['REQUEST_METHOD'], 'GET')
        self.assertEqual(env['SCRIPT_NAME'], '')
        # PEP 3333: %-decoded bytes, as latin-1 text.
        self.assertEqual(env['PATH_INFO'], '/echo/a b/\xc3\xa9')
        self.assertEqual(env['QUERY_STRING'], 'x=1&y=%20')
        self.assertEqual(env['SERVER_PROTOCOL'], 'HTTP/1.1')
        self.assertEqual(env['SERVER_PORT'], str(self.served.port))
        self.assertEqual(env['wsgi.version'], [1, 0])
        self.assertEqual(env['wsgi.url_scheme'], 'http')
        self.assertEqual(env['REMOTE_ADDR'], '127.0.0.1')
        self.assertIs(env['wsgi.multiprocess'], False)

    def test_headers(self):
        env = self.echo(headers={'X-Custom': 'v\xe9', 'Content-Type': 'text/x'})
        self.assertEqual(env['HTTP_X_CUSTOM'], 'v\xe9')  # latin-1
        self.assertEqual(env['CONTENT_TYPE'], 'text/x')
        self.assertNotIn('HTTP_CONTENT_TYPE', env)

    def test_repeated_headers_are_joined_and_underscores_dropped(self):
        raw = self.served.raw(b'GET /echo HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-A: 2\r\n'
                              b'X_B: spoof\r\nConnection: close\r\n\r\n')
        env = json.loads(raw.split(b'\r\n\r\n', 1)[1])
        self.assertEqual(env['HTTP_X_A'], '1, 2')
        self.assertNotIn('HTTP_X_B', env)


class Bodies(ServerTestBase):

    def test_content_length_body_every_way_of_reading(self):
        data = b'line one\nline two\nlast'
        expected = {
            'read': data, 'read3': data,
            'readline': b'line |one\n|line |two\n|last',
            'readlines': b'line one\n|line two\n|last',
            'iter': b'line one\n|line two\n|last',
        }
        for how, want in expected.items():
            with self.subTest(how=how):
                env = self.echo(f'/echo?read={how}', method='POST', body=data)
                self.assertEqual(env['body'].encode('latin-1'), want)
                self.assertEqual(env['CONTENT_LENGTH'], str(len(data)))

    def test_chunked_request_body(self):
        raw = self.served.raw(b'POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n'
                              b'Connection: close\r\n\r\n'
                              b'5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n')
        env = json.loads(raw.split(b'\r\n\r\n', 1)[1])
        self.assertEqual(env['body'], 'hello world')
        self.assertEqual(env['CONTENT_LENGTH'], '11')

    def test_expect_100_continue(self):
        with socket.create_connection(('127.0.0.1', self.served.port), timeout=TIMEOUT) as s:
            s.sendall(b'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n'
                      b'Expect: 100-continue\r\nConnection: close\r\n\r\n')
            first = s.recv(1024)
            self.assertTrue(first.startswith(b'HTTP/1.1 100 Continue\r\n'), first)
            s.sendall(b'data')
            rest = b''
            while chunk := s.recv(65536):
                rest += chunk
        self.assertIn(b'"body": "data"', rest)


class Responses(ServerTestBase):

    def test_chunked_when_no_length(self):
        raw = self.served.raw(b'GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        head, _, body = raw.partition(b'\r\n\r\n')
        self.assertIn(b'Transfer-Encoding: chunked', head)
        status, _, text = self.get('/stream')
        self.assertEqual((status, text), (200, b'one,two,three'))

    def test_http10_without_length_closes(self):
        raw = self.served.raw(b'GET /stream HTTP/1.0\r\n\r\n')
        head, _, body = raw.partition(b'\r\n\r\n')
        self.assertTrue(head.startswith(b'HTTP/1.0 200'), head)
        self.assertNotIn(b'chunked', head)
        self.assertEqual(body, b'one,two,three')

    def test_head_has_no_body(self):
        raw = self.served.raw(b'HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        head, _, body = raw.partition(b'\r\n\r\n')
        self.assertIn(b'Content-Length: 14', head)
        self.assertEqual(body, b'')

    def test_keep_alive_and_pipelining(self):
        conn = self.served.connection()
        for _ in range(3):
            conn.request('GET', '/hello')
            r = conn.getresponse()
            self.assertEqual(r.read(), b'Hello, world!\n')
        conn.close()
        raw = self.served.raw(b'GET /hello HTTP/1.1\r\nHost: x\r\n\r\n'
                              b'GET /echo?read=read HTTP/1.1\r\nHost: x\r\n\r\n'
                              b'GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        self.assertEqual(raw.count(b'HTTP/1.1 200'), 3)
        first = raw.index(b'Hello')
        second = raw.index(b'REQUEST_METHOD')
        third = raw.index(b'Hello', second)
        self.assertLess(first, second)
        self.assertLess(second, third)

    def test_http10_closes_by_default(self):
        raw = self.served.raw(b'GET /hello HTTP/1.0\r\n\r\n')  # returns at close
        self.assertTrue(raw.startswith(b'HTTP/1.0 200'), raw)

    def test_close_is_called(self):
        marker = os.environ.get('SUBINTERP_TEST_MARKER')
        status, _, body = self.get('/closing')
        self.assertEqual((status, body), (200, b'body'))
        with open(marker) as f:
            self.assertIn('closed', f.read())

    def test_exc_info_replaces_the_status(self):
        status, _, body = self.get('/exc_info')
        self.assertEqual((status, body), (503, b'replaced'))


class Binds(unittest.TestCase):

    def test_ipv4_ipv6_and_unix_sockets_at_once(self):
        tmp = tempfile.mkdtemp()
        path = os.path.join(tmp, 'app.sock')
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(('::1', 0))
            binds = ['127.0.0.1:0', '[::1]:0', f'unix:{path}']
        except OSError:
            binds = ['127.0.0.1:0', f'unix:{path}']  # no IPv6 loopback here
        served = Served(bind=binds)
        try:
            self.assertEqual(len(served.urls), len(binds))
            self.assertIn(f'unix:{path}', served.urls)
            for url in served.urls:
                with self.subTest(url=url):
                    if url.startswith('unix:'):
                        s = socket.socket(socket.AF_UNIX)
                        s.connect(path)
                    else:
                        host, port = url[len('http://'):].rsplit(':', 1)
                        s = socket.create_connection((host.strip('[]'), int(port)))
                    with s:
                        s.sendall(b'GET /echo HTTP/1.0\r\nHost: x\r\n\r\n')
                        data = b''
                        while True:
                            piece = s.recv(65536)
                            if not piece:
                                break
                            data += piece
                    head, _, body = data.partition(b'\r\n\r\n')
                    self.assertTrue(head.startswith(b'HTTP/1.0 200'), head)
                    env = json.loads(body)
                    if url.startswith('unix:'):
                        self.assertEqual(env['SERVER_NAME'], 'localhost')
                        self.assertEqual(env['REMOTE_ADDR'], '')
                    elif '[' in url:
                        self.assertEqual(env['REMOTE_ADDR'], '::1')
                        self.assertEqual(env['SERVER_PORT'], url.rsplit(':', 1)[1])
                    else:
                        self.assertEqual(env['REMOTE_ADDR'], '127.0.0.1')
                        self.assertEqual(env['SERVER_PORT'], url.rsplit(':', 1)[1])
        finally:
            served.stop()
        # The socket file goes with the server.
        self.assertFalse(os.path.exists(path))
        os.rmdir(tmp)


class ProxyHeaders(unittest.TestCase):

    def test_forwarded_headers_only_from_allowed_addresses(self):
        headers = {'X-Forwarded-For': '203.0.113.7, 10.0.0.1', 'X-Forwarded-Proto': 'https'}
        for allow, honoured in [('127.0.0.1,::1', True), ('*', True), ('10.9.8.7', False)]:
            with self.subTest(forwarded_allow_ips=allow):
                served = Served(forwarded_allow_ips=allow)
                try:
                    conn = served.connection()
                    conn.request('GET', '/echo', headers=headers)
                    env = json.loads(conn.getresponse().read())
                    conn.close()
                finally:
                    served.stop()
                if honoured:
                    self.assertEqual(env['REMOTE_ADDR'], '203.0.113.7')
                    self.assertEqual(env['wsgi.url_scheme'], 'https')
                else:
                    self.assertEqual(env['REMOTE_ADDR'], '127.0.0.1')
                    self.assertEqual(env['wsgi.url_scheme'], 'http')


class LogLevels(unittest.TestCase):

    def test_lines_below_the_level_are_left_out(self):
        logs = {}
        for level in ('debug', 'error'):
            served = Served(log_level=level)
            try:
                self.assertEqual(served.raw(b'NOT A REQUEST\r\n\r\n')[:12], b'HTTP/1.1 400')
                conn = served.connection()
                conn.request('GET', '/raises')
                self.assertEqual(conn.getresponse().status, 500)
                conn.close()
                served.server.reload()
                deadline = time.monotonic() + TIMEOUT
                while ('new interpreter' not in served.log() and level == 'debug'
                       and time.monotonic() < deadline):
                    time.sleep(0.05)
            finally:
                served.stop()
            logs[level] = served.tmp_log
        self.assertIn('[DEBUG] refused a request', logs['debug'])
        self.assertIn('[INFO] worker 0: new interpreter (reload)', logs['debug'])
        self.assertIn('[ERROR] Error handling request /raises', logs['debug'])
        self.assertIn('[ERROR] Error handling request /raises', logs['error'])
        self.assertNotIn('[DEBUG]', logs['error'])
        self.assertNotIn('[INFO]', logs['error'])


class KeepAliveTimeout(ServerTestBase):
    options = {'keep_alive': 0.5}

    def test_idle_connections_are_closed_after_keep_alive(self):
        with socket.create_connection(('127.0.0.1', self.served.port), timeout=TIMEOUT) as s:
            s.sendall(b'GET /hello HTTP/1.1\r\nHost: x\r\n\r\n')
            data = b''
            while not data.endswith(b'Hello, world!\n'):
                data += s.recv(65536)
            start = time.monotonic()
            self.assertEqual(s.recv(65536), b'')  # closed by the server
            elapsed = time.monotonic() - start
        self.assertGreater(elapsed, 0.3)
        self.assertLess(elapsed, 3)


class Streaming(ServerTestBase):
    """Bodies that go out while the application runs."""

    def read_until(self, sock, needle, limit):
        data = b''
        deadline = time.monotonic() + limit
        while needle not in data:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                piece = sock.recv(65536)
            except socket.timeout:
                break
            if not piece:
                break
            data += piece
        return data

    def test_pieces_reach_the_client_as_they_are_made(self):
        for query, first in [('pause=1.5', b'first,'), ('pause=1.5&write=1', b'written,')]:
            with self.subTest(query=query):
                with socket.create_connection(('127.0.0.1', self.served.port)) as s:
                    start = time.monotonic()
                    s.sendall(b'GET /trickle?' + query.encode() +
                              b' HTTP/1.1\r\nHost: x\r\n\r\n')
                    data = self.read_until(s, first, 1.2)
                    # The app sleeps 1.5 s before its next piece.
                    self.assertIn(first, data)
                    self.assertLess(time.monotonic() - start, 1.2)
                    self.assertIn(b'Transfer-Encoding: chunked', data)
                    data += self.read_until(s, b'0\r\n\r\n', TIMEOUT)
                    self.assertTrue(data.endswith(b'6\r\nsecond\r\n0\r\n\r\n'), data)
        # And through a client that decodes the chunks.
        status, headers, body = self.get('/trickle?pause=0&write=1')
        self.assertEqual((status, body), (200, b'written,first,second'))

    def test_close_is_called_when_the_client_goes_away_mid_response(self):
        marker = os.environ['SUBINTERP_TEST_MARKER']
        with open(marker, 'w'):
            pass
        with socket.create_connection(('127.0.0.1', self.served.port)) as s:
            s.sendall(b'GET /endless HTTP/1.1\r\nHost: x\r\n\r\n')
            self.assertIn(b'200 OK', self.read_until(s, b'xxxx', TIMEOUT))
            # The app would send 64 TiB: leave after a little.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(marker) as f:
                text = f.read()
            if 'endless closed' in text:
                break
            time.sleep(0.05)
        self.assertIn('endless closed after', text)
        self.assertLess(int(text.split()[-1]), 10000)  # it stopped early
        # The worker serves on, and logged no traceback for a client that left.
        self.assertEqual(self.get('/hello')[0], 200)
        self.assertNotIn('endless', self.served.log())

    def test_file_wrapper_sends_regular_files_by_descriptor(self):
        data = os.urandom(3 * 1024 * 1024 + 17)
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(data)
        self.addCleanup(os.unlink, f.name)
        path = f.name
        # _NoRead raises if read: the bytes can only have left by sendfile.
        status, headers, body = self.get(f'/sendfile?path={path}')
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(headers['Content-Length'], str(len(data)))
        self.assertEqual(body, data)
        status, headers, body = self.get(f'/sendfile?path={path}&skip=1000')
        self.assertEqual((status, body), (200, data[1000:]))
        status, headers, body = self.get(f'/sendfile?path={path}&length=5000')
        self.assertEqual((status, body), (200, data[:5000]))
        status, headers, body = self.get(f'/sendfile?path={path}', method='HEAD')
        self.assertEqual((status, body), (200, b''))
        self.assertEqual(headers['Content-Length'], str(len(data)))
        # A file object without a descriptor is iterated instead.
        status, headers, body = self.get(f'/sendfile?path={path}&copy=1')
        self.assertEqual((status, body), (200, data))
        # Keep-alive goes on after a file.
        conn = self.served.connection()
        for _ in range(3):
            conn.request('GET', f'/sendfile?path={path}&skip={len(data) - 10}')
            self.assertEqual(conn.getresponse().read(), data[-10:])
        conn.close()

    def test_large_sequence_bodies(self):
        status, headers, body = self.get('/big?n=30')
        self.assertEqual(status, 200)
        self.assertEqual(len(body), 3000000)
        self.assertEqual(body[:100000], b'A' * 100000)
        self.assertEqual(body[-100000:], bytes([65 + 29 % 26]) * 100000)

    def test_error_after_the_response_began_closes_the_connection(self):
        for path in ('/late_error', '/late_exc_info'):
            with self.subTest(path=path):
                data = self.served.raw(f'GET {path} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
                self.assertTrue(data.startswith(b'HTTP/1.1 200 OK'), data)
                self.assertIn(b'begun', data)
                self.assertFalse(data.endswith(b'0\r\n\r\n'), data)  # no proper end
        log = self.served.log()
        self.assertIn('failed after the response began', log)
        self.assertIn("KeyError: 'late'", log)

    def test_body_and_content_length_disagree(self):
        for how in ('list', 'stream'):
            with self.subTest(how=how):
                # Longer than said: cut at the length, and the connection
                # serves the next request properly.
                data = self.served.raw(
                    f'GET /wrong_length?say=4&how={how} HTTP/1.1\r\nHost: x\r\n\r\n'
                    f'GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'.encode())
                first, _, rest = data.partition(b'\r\n\r\n')
                self.assertIn(b'Content-Length: 4', first)
                self.assertTrue(rest.startswith(b'0123HTTP/1.1 200 OK'), rest)
                self.assertTrue(rest.endswith(b'Hello, world!\n'), rest)
                # Shorter than said: the connection closes after it.
                data = self.served.raw(
                    f'GET /wrong_length?say=20&how={how} HTTP/1.1\r\nHost: x\r\n\r\n'
                    f'GET /hello HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
                self.assertTrue(data.endswith(b'\r\n\r\n0123456789'), data)
        self.assertIn('more than its Content-Length', self.served.log())


class AppErrors(ServerTestBase):

    def test_errors_give_500_and_a_logged_traceback(self):
        cases = {
            '/raises': 'ValueError: the app raised this',
            '/returns_str': 'returned str items, not bytes',
            '/no_start': 'did not call start_response',
            '/twice': 'start_response() called a second time',
            '/bad_header': 'invalid header',
        }
        for path, logged in cases.items():
            with self.subTest(path=path):
                status, _, _ = self.get(path)
                self.assertEqual(status, 500)
                deadline = time.monotonic() + 5
                while logged not in self.served.log() and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.assertIn(logged, self.served.log())
        # The server lives on.
        self.assertEqual(self.get('/hello')[0], 200)


class BadInput(ServerTestBase):
    options = {'limit_request_body': 1000}

    def status_of(self, data):
        raw = self.served.raw(data)
        match = re.match(rb'HTTP/1\.[01] (\d{3})', raw)
        return int(match.group(1)) if match else raw

    def test_refusals(self):
        cases = [
            (b'GARBAGE\r\n\r\n', 400),
            (b'GET /hello HTTP/9.9\r\n\r\n', 400),
            (b'GET /' + b'a' * 5000 + b' HTTP/1.1\r\nHost: x\r\n\r\n', 414),
            (b'GET / HTTP/1.1\r\n' + b''.join(b'X-%d: v\r\n' % i for i in range(120))
             + b'\r\n', 431),
            (b'GET / HTTP/1.1\r\nX-Big: ' + b'v' * 9000 + b'\r\n\r\n', 431),
            (b'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n' + b'x' * 5000,
             413),
            (b'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n'
             b'\r\nabcd', 400),
            (b'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n'
             b'Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n', 400),
            (b'POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n'
             b'zz\r\nabcd\r\n0\r\n\r\n', 400),
            (b'GET / HTTP/1.1\r\nBad Header: v\r\n\r\n', 400),
        ]
        for data, want in cases:
            with self.subTest(data=data[:60]):
                self.assertEqual(self.status_of(data), want)
        self.assertEqual(self.get('/hello')[0], 200)

    def test_client_gone_mid_request(self):
        for _ in range(20):
            with socket.create_connection(('127.0.0.1', self.served.port)) as s:
                s.sendall(b'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab')
        self.assertEqual(self.get('/hello')[0], 200)


class SlowRequests(ServerTestBase):
    options = {'workers': 2}

    def test_a_slow_request_holds_only_its_thread(self):
        slow = threading.Thread(target=self.get, args=('/slow?s=1.5',))
        slow.start()
        time.sleep(0.2)
        start = time.monotonic()
        for _ in range(5):
            self.assertEqual(self.get('/hello')[0], 200)
        elapsed = time.monotonic() - start
        slow.join()
        self.assertLess(elapsed, 1.0)


class SlowRequestsOnABusyThread(unittest.TestCase):

    def test_connections_of_a_busy_thread_are_served_meanwhile(self):
        # Keep-alive connections on a thread's event loop before a request
        # there turned slow are served by a helper thread: in the other
        # worker, or with --threads in the same one.
        for options in ({'workers': 2, 'threads': 1}, {'workers': 1, 'threads': 2}):
            with self.subTest(**options):
                served = Served(timeout=0, **options)
                try:
                    conns = [served.connection() for _ in range(4)]
                    for conn in conns:
                        conn.request('GET', '/hello')
                        self.assertEqual(conn.getresponse().read(), b'Hello, world!\n')
                    slow = [served.connection()]
                    for conn in slow:
                        conn.request('GET', '/slow?s=2')
                    time.sleep(0.3)
                    start = time.monotonic()
                    for _ in range(3):
                        for conn in conns:
                            conn.request('GET', '/hello')
                            self.assertEqual(conn.getresponse().read(), b'Hello, world!\n')
                    elapsed = time.monotonic() - start
                    for conn in slow:
                        self.assertEqual(conn.getresponse().status, 200)
                    for conn in conns + slow:
                        conn.close()
                    self.assertLess(elapsed, 1.0)
                    if options['threads'] == 1:
                        self.assertOneRequestAtATime(served)
                finally:
                    served.stop()

    def assertOneRequestAtATime(self, served):
        """Without --threads a worker runs one request at a time, also while
        helper threads serve a busy thread's connections."""
        conns = [served.connection() for _ in range(6)]
        for conn in conns:
            conn.request('GET', '/hello')
            conn.getresponse().read()
        results = []

        def go(conn, path):
            conn.request('GET', path)
            results.append(conn.getresponse().read().decode())
        calls = [threading.Thread(target=go, args=(conns[0], '/inflight?s=1.5'))]
        calls[0].start()
        time.sleep(0.3)  # a helper now serves the busy thread's other connections
        calls += [threading.Thread(target=go, args=(c, '/inflight?s=0.1')) for c in conns[1:]]
        for t in calls[1:]:
            t.start()
        for t in calls:
            t.join(TIMEOUT)
        for conn in conns:
            conn.close()
        self.assertEqual(len(results), 6)
        self.assertEqual(set(results), {'1 False'}, results)


WEBAPPS = os.path.join(HERE, 'webapps')
DIST_PACKAGES = '/usr/lib/python3/dist-packages'


def debian_package(name):
    """Skips unless Debian's python3-<name> is installed (scripts/deps.sh
    installs it)."""
    if not os.path.isdir(os.path.join(DIST_PACKAGES, name)):
        raise unittest.SkipTest(f"Debian's python3-{name} is not installed")


class SlowClients(ServerTestBase):
    options = {'workers': 2, 'read_timeout': 2.0}

    def test_trickling_clients_block_nobody_and_are_closed(self):
        slow = []
        for _ in range(200):
            s = socket.create_connection(('127.0.0.1', self.served.port), timeout=TIMEOUT)
            s.sendall(b'G')
            slow.append(s)
        try:
            start = time.monotonic()
            for i in range(3):  # a byte a second from each, while others are served
                for s in slow:
                    try:
                        s.sendall(b'ET /hello HTTP/1.1\r\n'[i:i + 1])
                    except OSError:
                        pass
                for _ in range(5):
                    t0 = time.monotonic()
                    self.assertEqual(self.get('/hello')[0], 200)
                    self.assertLess(time.monotonic() - t0, 1.0)
                time.sleep(max(0.0, start + i + 1 - time.monotonic()))
            # Past the timeout, every slow connection is closed by the server.
            deadline = time.monotonic() + 10
            closed = 0
            for s in slow:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    data = s.recv(1024)
                    closed += data == b'' or data.startswith(b'HTTP/1.1 4')
                except ConnectionResetError:
                    closed += 1
                except socket.timeout:
                    pass
            self.assertEqual(closed, 200)
        finally:
            for s in slow:
                s.close()


class RequestTimeout(ServerTestBase):
    options = {'workers': 1, 'timeout': 1.0}

    def test_python_code_past_the_timeout_gets_timeouterror(self):
        start = time.monotonic()
        status, _, _ = self.get('/spin')
        elapsed = time.monotonic() - start
        self.assertEqual(status, 500)
        self.assertLess(elapsed, 5)  # the app would spin for 20 s
        self.assertIn('TimeoutError', self.served.log())
        self.assertIn('ran past the timeout', self.served.log())
        # The same worker serves on.
        self.assertEqual(self.get('/hello')[0], 200)

    def test_a_request_stuck_outside_python_gets_its_worker_replaced(self):
        before = int(self.get('/whoami')[2])
        stuck = threading.Thread(target=self.get, args=('/slow?s=5',))
        stuck.start()  # time.sleep: TimeoutError waits until it returns
        replaced = 'new interpreter (a request stuck past twice the timeout)'
        deadline = time.monotonic() + 3.5
        while replaced not in self.served.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn('a new worker takes its place', self.served.log())
        self.assertIn(replaced, self.served.log())
        start = time.monotonic()
        status, _, body = self.get('/whoami')
        self.assertEqual(status, 200)
        self.assertLess(time.monotonic() - start, 1.0)
        self.assertNotEqual(int(body), before)
        stuck.join()
        self.assertEqual(self.get('/hello')[0], 200)


class AccessLog(unittest.TestCase):

    def test_default_and_custom_formats(self):
        with tempfile.TemporaryDirectory() as tmp:
            logs = {}
            for name, fmt in [('default', None),
                              ('custom', '%(m)s|%(U)s|%(q)s|%(s)s|%(B)s|%(b)s|%({X-Test}i)s|'
                                         '%({Content-Type}o)s|%(H)s|%(D)s|%%')]:
                path = os.path.join(tmp, name + '.log')
                served = Served(workers=1, access_logfile=path, access_logformat=fmt)
                try:
                    conn = served.connection()
                    conn.request('GET', '/hello?a=1', headers={'X-Test': 'xt',
                                                             'User-Agent': 'ua/1',
                                                             'Referer': 'http://r/'})
                    conn.getresponse().read()
                    conn.request('HEAD', '/hello')
                    conn.getresponse().read()
                    conn.close()
                finally:
                    served.stop()
                with open(path) as f:
                    logs[name] = f.read().splitlines()
        get, head = logs['default']
        self.assertRegex(get, r'^127\.0\.0\.1 - - \[\d\d/\w\w\w/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                              r'"GET /hello\?a=1 HTTP/1\.1" 200 14 "http://r/" "ua/1"$')
        self.assertIn('"HEAD /hello HTTP/1.1" 200 - "-"', head)
        get, head = logs['custom']
        fields = get.split('|')
        self.assertEqual(fields[:9], ['GET', '/hello', 'a=1', '200', '14', '14', 'xt',
                                      'text/plain', 'HTTP/1.1'])
        self.assertTrue(fields[9].isdigit())
        self.assertEqual(fields[10], '%')
        self.assertEqual(head.split('|')[4:6], ['0', '-'])

    def test_unknown_atom(self):
        with self.assertRaisesRegex(ValueError, "unknown atom 'zz'"):
            subinterp.server.Server('wsgi_apps:router', bind=['127.0.0.1:0'],
                                    access_logformat='%(zz)s')


class Validated(ServerTestBase):
    """Every request through wsgiref.validate.validator."""
    options = {'app': 'validated:router', 'pythonpath': [WEBAPPS, HERE]}

    def test_routes_pass_the_validator(self):
        for path, method, body in [('/hello', 'GET', None), ('/echo', 'POST', b'abc'),
                                   ('/stream', 'GET', None), ('/closing', 'GET', None),
                                   ('/exc_info', 'GET', None)]:
            with self.subTest(path=path):
                status, _, _ = self.get(path, method=method, body=body)
                self.assertIn(status, (200, 503))
        log = self.served.log()
        self.assertNotIn('AssertionError', log)
        self.assertNotIn('WSGIWarning', log)


class FlaskApp(ServerTestBase):

    @classmethod
    def setUpClass(cls):
        debian_package('flask')
        cls.options = {'app': 'validated:flask()',
                       'pythonpath': [WEBAPPS, HERE, DIST_PACKAGES]}
        super().setUpClass()

    def test_flask_routes(self):
        status, headers, body = self.get('/flask/hello')
        self.assertEqual((status, body), (200, b'Hello from Flask\n'), self.served.log())
        status, _, body = self.get('/flask/json', method='POST', body=b'{"a": [1, 2]}',
                                   headers={'Content-Type': 'application/json'})
        self.assertEqual(status, 200, self.served.log())
        self.assertEqual(json.loads(body), {'got': {'a': [1, 2]}, 'method': 'POST',
                                            'path': '/flask/json'})
        status, _, body = self.get('/flask/template/x%3Cy')
        self.assertEqual((status, body), (200, b'<p>x&lt;y &amp; 42</p>'))
        self.assertEqual(self.get('/flask/missing')[0], 404)
        self.assertNotIn('AssertionError', self.served.log())


class DjangoApp(ServerTestBase):

    @classmethod
    def setUpClass(cls):
        debian_package('django')
        if sys.version_info >= (3, 13):
            raise unittest.SkipTest("Debian 12's Django 3.2 imports cgi, which Python 3.13 "
                                    "removed (PEP 594)")
        cls.options = {'app': 'djproject.wsgi:application',
                       'pythonpath': [WEBAPPS, DIST_PACKAGES]}
        super().setUpClass()

    def test_django_routes(self):
        status, _, body = self.get('/django/hello')
        self.assertEqual((status, body), (200, b'Hello from Django\n'), self.served.log())
        status, _, body = self.get('/django/echo?x=1', method='POST', body=b'payload')
        self.assertEqual(status, 200, self.served.log())
        self.assertEqual(json.loads(body), {'method': 'POST', 'query': {'x': '1'},
                                            'body': 'payload'})
        self.assertEqual(self.get('/django/missing')[0], 404)


class Threads(ServerTestBase):
    options = {'workers': 1, 'threads': 4}

    def test_threads_of_one_worker_overlap_waits(self):
        env = self.echo()
        self.assertIs(env['wsgi.multithread'], True)
        threads = [threading.Thread(target=self.get, args=('/slow?s=0.5',)) for _ in range(4)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertLess(time.monotonic() - start, 1.5)


class Recycling(ServerTestBase):
    options = {'workers': 1, 'max_requests': 3}

    def test_max_requests_replaces_the_interpreter(self):
        ids = [int(self.get('/whoami')[2]) for _ in range(9)]
        self.assertEqual(len(set(ids)), 3, ids)
        self.assertEqual(ids, sorted(ids))
        for i in range(0, 9, 3):
            self.assertEqual(len(set(ids[i:i + 3])), 1, ids)
        # Retired interpreters are closed, not kept.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            alive = {i.id for i in subinterp.list_all()}
            if not alive & set(ids[:6]):
                break
            time.sleep(0.05)
        self.assertFalse(alive & set(ids[:6]), (alive, ids))


class Reload(ServerTestBase):
    options = {'workers': 2}

    def test_reload_swaps_workers_and_refuses_nothing(self):
        before = {int(self.get('/whoami')[2]) for _ in range(10)}
        failures = []
        done = threading.Event()
        answered = [0]

        def load():
            conn = self.served.connection()
            while not done.is_set():
                try:
                    conn.request('GET', '/whoami')
                    r = conn.getresponse()
                    r.read()
                    if r.status != 200:
                        failures.append(r.status)
                    answered[0] += 1
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(repr(exc))
                    conn = self.served.connection()
                try:  # a new connection each time, too
                    status, _, _ = self.get('/hello')
                    if status != 200:
                        failures.append(status)
                except OSError as exc:
                    failures.append(repr(exc))

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        self.served.server.reload()
        deadline = time.monotonic() + 15
        after = set()
        while time.monotonic() < deadline:
            after = {int(self.get('/whoami')[2]) for _ in range(10)}
            if not after & before:
                break
            time.sleep(0.1)
        time.sleep(0.3)
        done.set()
        for t in threads:
            t.join()
        self.assertEqual(failures, [])
        self.assertGreater(answered[0], 10)
        self.assertFalse(after & before, (before, after))
        # Both slots got a new worker (which thread answers is the kernel's
        # and Asio's choice, so the ids seen may be one or two).
        self.assertEqual(self.served.log().count('new interpreter (reload)'), 2)


class CommandLine(unittest.TestCase):

    def start(self, *args):
        env = dict(os.environ)
        proc = subprocess.Popen(
            [sys.executable, '-m', 'subinterp', 'serve', 'wsgi_apps:router',
             '-b', '127.0.0.1:0', '-w', '2', '--pythonpath', HERE, *args],
            cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r'Listening at: http://127\.0\.0\.1:(\d+) \((\d+)\)', line)
            if match:
                self.assertEqual(int(match.group(2)), proc.pid)
                return proc, int(match.group(1)), lines
        proc.kill()
        out, err = proc.communicate()
        self.fail('no "Listening at" line:\n' + ''.join(lines) + err)

    def listening_port(self, proc):
        """The port of the server's "Listening at" line on its stderr."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            match = re.search(r'Listening at: http://127\.0\.0\.1:(\d+)', line)
            if match:
                return int(match.group(1))
            if not line:
                break
        self.fail('no "Listening at" line')

    def finish(self, proc):
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            self.fail('the server did not exit:\n' + err)
        check_no_sanitizer_report(err)
        return out, err

    def test_sigterm_is_graceful(self):
        proc, port, _ = self.start('--access-logfile', '-')
        result = {}

        def slow_request():
            conn = http.client.HTTPConnection('127.0.0.1', port, timeout=TIMEOUT)
            conn.request('GET', '/slow?s=1')
            result['status'] = conn.getresponse().status

        t = threading.Thread(target=slow_request)
        t.start()
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        t.join(TIMEOUT)
        out, err = self.finish(proc)
        self.assertEqual(result.get('status'), 200, err)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn('"GET /slow?s=1 HTTP/1.1" 200', out)
        # No longer accepting.
        with self.assertRaises(OSError):
            socket.create_connection(('127.0.0.1', port), timeout=2)

    def test_sigint_stops(self):
        proc, port, _ = self.start()
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=TIMEOUT)
        conn.request('GET', '/hello')
        self.assertEqual(conn.getresponse().read(), b'Hello, world!\n')
        proc.send_signal(signal.SIGINT)
        out, err = self.finish(proc)
        self.assertEqual(proc.returncode, 0, err)

    def busy(self, port, path):
        """Starts a request that keeps the only thread busy; returns its thread."""
        result = {}

        def request():
            try:
                conn = http.client.HTTPConnection('127.0.0.1', port, timeout=TIMEOUT)
                try:
                    conn.request('GET', path)
                    result['status'] = conn.getresponse().status
                finally:
                    conn.close()
            except OSError as e:
                result['error'] = e
        t = threading.Thread(target=request)
        t.start()
        time.sleep(0.5)
        return t, result

    def test_signals_are_heard_while_every_thread_is_busy(self):
        for path, sig, args, within in [
                # Python code gets SystemExit raised in it: the stop is at once.
                ('/spin', signal.SIGINT, (), 3),
                ('/spin', signal.SIGTERM, ('--graceful-timeout', '1'), 4),
                # A request in C code (time.sleep) is not waited for; the
                # process exits after the grace period it gives interpreters.
                ('/slow?s=25', signal.SIGINT, (), 10)]:
            with self.subTest(path=path, signal=sig.name):
                proc, port, _ = self.start('-w', '1', '--timeout', '0', *args)
                t, result = self.busy(port, path)
                start = time.monotonic()
                proc.send_signal(sig)
                out, err = self.finish(proc)
                self.assertLess(time.monotonic() - start, within, err)
                self.assertEqual(proc.returncode, 0, err)
                self.assertIn('Stopping', err)
                t.join(TIMEOUT)
                self.assertTrue(result, 'the client got neither a response nor an error')
                if path == '/spin':
                    self.assertIn('SystemExit', err)

    def test_sighup_while_every_thread_is_busy(self):
        proc, port, _ = self.start('-w', '1')
        t, result = self.busy(port, '/slow?s=3')
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        out, err = self.finish(proc)
        t.join(TIMEOUT)
        self.assertEqual(result.get('status'), 200, err)
        self.assertEqual(proc.returncode, 0, err)
        # The reload began while the request was still running.
        self.assertIn('Reloading', err)
        self.assertLess(err.index('Reloading'), err.index('Stopping'))

    def test_sighup_reloads(self):
        proc, port, _ = self.start()

        def whoami():
            conn = http.client.HTTPConnection('127.0.0.1', port, timeout=TIMEOUT)
            conn.request('GET', '/whoami')
            return int(conn.getresponse().read())

        before = {whoami() for _ in range(6)}
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            after = {whoami() for _ in range(6)}
            if not after & before:
                break
            time.sleep(0.1)
        self.assertFalse(after & before, (before, after))
        proc.send_signal(signal.SIGTERM)
        out, err = self.finish(proc)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn('Reloading', err)

    def test_bad_app_is_a_clear_error(self):
        proc = subprocess.run(
            [sys.executable, '-m', 'subinterp', 'serve', 'no_such_module:app',
             '-b', '127.0.0.1:0', '-w', '1'],
            cwd=HERE, capture_output=True, text=True, timeout=TIMEOUT)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("No module named 'no_such_module'", proc.stderr)
        self.assertNotIn('Fatal Python error', proc.stderr)

    def test_chdir_puts_the_folder_first(self):
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, 'here_app.py'), 'w') as f:
                f.write('import os\n'
                        'def application(environ, start_response):\n'
                        '    body = os.getcwd().encode()\n'
                        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
                        '    return [body]\n')
            proc = subprocess.Popen(
                [sys.executable, '-m', 'subinterp', 'serve', 'here_app:application',
                 '-b', '127.0.0.1:0', '-w', '1', '--chdir', tmp],
                cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                port = self.listening_port(proc)
                conn = http.client.HTTPConnection('127.0.0.1', port, timeout=TIMEOUT)
                conn.request('GET', '/')
                self.assertEqual(conn.getresponse().read().decode(), os.path.realpath(tmp))
                conn.close()
            finally:
                proc.send_signal(signal.SIGTERM)
                self.finish(proc)
            self.assertEqual(proc.returncode, 0)

    def test_a_c_module_that_refuses_isolated_interpreters(self):
        proc = subprocess.Popen(
            [sys.executable, '-m', 'subinterp', 'serve', 'ctypes_app:application',
             '-b', '127.0.0.1:0', '-w', '1', '--pythonpath', WEBAPPS],
            cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if sys.version_info < (3, 13):
            # 3.12's _ctypes: a clear error, no crash, exit status 1.
            out, err = self.finish(proc)
            self.assertEqual(proc.returncode, 1, err)
            self.assertIn('the application failed to load in a worker', err)
            self.assertIn('module _ctypes does not support loading in subinterpreters', err)
            self.assertNotIn('Fatal Python error', err)
            return
        port = self.listening_port(proc)
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=TIMEOUT)
        conn.request('GET', '/')
        self.assertEqual(conn.getresponse().read(), b'4')
        conn.close()
        proc.send_signal(signal.SIGTERM)
        self.finish(proc)
        self.assertEqual(proc.returncode, 0)

    def test_bad_bind_is_a_clear_error(self):
        proc = subprocess.run(
            [sys.executable, '-m', 'subinterp', 'serve', 'wsgi_apps:router',
             '-b', 'nonsense:port'],
            cwd=HERE, capture_output=True, text=True, timeout=TIMEOUT)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("bad port 'port'", proc.stderr)


def setUpModule():
    fd, path = tempfile.mkstemp(prefix='subinterp-close-')
    os.close(fd)
    os.environ['SUBINTERP_TEST_MARKER'] = path


if __name__ == '__main__':
    unittest.main()
