"""WSGI applications that tests/python/test_server.py serves."""

import json
import os
import time


def hello(environ, start_response):
    body = b'Hello, world!\n'
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]


def _jsonable(environ):
    out = {}
    for key, value in environ.items():
        if isinstance(value, (str, int, bool)) or value is None:
            out[key] = value
        elif isinstance(value, tuple):
            out[key] = list(value)
        else:
            out[key] = type(value).__name__
    return out


def echo(environ, start_response):
    """The environ as JSON, the body read in the way ?read= says."""
    how = environ['QUERY_STRING'].partition('read=')[2].partition('&')[0] or 'read'
    stream = environ['wsgi.input']
    if how == 'read':
        body = stream.read(int(environ.get('CONTENT_LENGTH') or 0))
    elif how == 'read3':
        parts = []
        while True:
            piece = stream.read(3)
            if not piece:
                break
            parts.append(piece)
        body = b''.join(parts)
    elif how == 'readline':
        parts = []
        while True:
            line = stream.readline(5)
            if not line:
                break
            parts.append(line)
        body = b'|'.join(parts)
    elif how == 'readlines':
        body = b'|'.join(stream.readlines())
    elif how == 'iter':
        body = b'|'.join(list(stream))
    else:
        body = b''
    out = _jsonable(environ)
    out['body'] = body.decode('latin-1')
    data = json.dumps(out).encode()
    start_response('200 OK', [('Content-Type', 'application/json'),
                              ('Content-Length', str(len(data)))])
    return [data]


def stream(environ, start_response):
    """No Content-Length: chunked on HTTP/1.1."""
    write = start_response('200 OK', [('Content-Type', 'text/plain')])
    write(b'one,')

    def rest():
        yield b'two,'
        yield b''
        yield b'three'
    return rest()


class _Closing:
    def __init__(self, marker):
        self.marker = marker

    def __iter__(self):
        yield b'body'

    def close(self):
        with open(self.marker, 'a') as f:
            f.write('closed\n')


def closing(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return _Closing(os.environ.get('SUBINTERP_TEST_MARKER', '/dev/null'))


def raises(environ, start_response):
    raise ValueError('the app raised this')


def returns_str(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return ['not bytes']


def no_start(environ, start_response):
    return [b'body without start_response']


def twice(environ, start_response):
    start_response('200 OK', [])
    start_response('200 OK', [])
    return [b'x']


def exc_info_replaces(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    try:
        raise KeyError('late')
    except KeyError:
        import sys
        start_response('503 Service Unavailable', [('Content-Type', 'text/plain')],
                       sys.exc_info())
    return [b'replaced']


def bad_header(environ, start_response):
    start_response('200 OK', [('X-Bad', 'a\r\nInjected: yes')])
    return [b'x']


def slow(environ, start_response):
    seconds = float(environ['QUERY_STRING'].partition('s=')[2] or 1)
    time.sleep(seconds)
    return hello(environ, start_response)


def whoami(environ, start_response):
    """The id of the interpreter that serves the request."""
    import subinterp
    body = str(subinterp.get_current().id).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]


def spin(environ, start_response):
    """Pure-Python work for up to 20 s (a timeout must end it sooner)."""
    end = time.monotonic() + 20
    while time.monotonic() < end:
        pass
    return hello(environ, start_response)


def _query(environ):
    return dict(part.partition('=')[::2] for part in environ['QUERY_STRING'].split('&') if part)


def trickle(environ, start_response):
    """Pieces with pauses between them: each must reach the client at once."""
    q = _query(environ)
    pause = float(q.get('pause', 1))
    write = start_response('200 OK', [('Content-Type', 'text/plain')])
    if q.get('write'):
        write(b'written,')
        time.sleep(pause)

    def pieces():
        yield b'first,'
        time.sleep(pause)
        yield b'second'
    return pieces()


class _Endless:
    """64 KiB pieces until closed: close() leaves a mark."""

    def __init__(self, marker):
        self.marker = marker
        self.sent = 0

    def __iter__(self):
        piece = b'x' * 65536
        while self.sent < 1 << 30:
            self.sent += 1
            yield piece

    def close(self):
        with open(self.marker, 'a') as f:
            f.write(f'endless closed after {self.sent}\n')


def endless(environ, start_response):
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    return _Endless(os.environ.get('SUBINTERP_TEST_MARKER', '/dev/null'))


class _NoRead:
    """A file object whose data may only leave by its descriptor."""

    def __init__(self, path):
        self.f = open(path, 'rb')

    def fileno(self):
        return self.f.fileno()

    def tell(self):
        return self.f.tell()

    def seek(self, *args):
        return self.f.seek(*args)

    def read(self, n=-1):
        raise AssertionError('read() was called: the file was not sent by sendfile')

    def close(self):
        self.f.close()


def sendfile(environ, start_response):
    """?path=P[&skip=N][&length=N][&copy=1]: the file by wsgi.file_wrapper."""
    import io
    q = _query(environ)
    headers = [('Content-Type', 'application/octet-stream')]
    if 'length' in q:
        headers.append(('Content-Length', q['length']))
    start_response('200 OK', headers)
    if q.get('copy'):
        with open(q['path'], 'rb') as f:
            filelike = io.BytesIO(f.read())  # no descriptor: iterated
    else:
        filelike = _NoRead(q['path'])
    filelike.seek(int(q.get('skip', 0)))
    return environ['wsgi.file_wrapper'](filelike, 8192)


def big(environ, start_response):
    """A list body above the size that is sent in one piece."""
    q = _query(environ)
    body = [bytes([65 + i % 26]) * 100000 for i in range(int(q.get('n', 20)))]
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return body


def late_error(environ, start_response):
    """Fails after the response began: the connection must close."""
    def pieces():
        yield b'begun'
        raise ValueError('failed after the response began')
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return pieces()


def late_exc_info(environ, start_response):
    """start_response(exc_info) after the header went out re-raises."""
    import sys
    write = start_response('200 OK', [('Content-Type', 'text/plain')])
    write(b'begun')
    try:
        raise KeyError('late')
    except KeyError:
        start_response('500 Internal Server Error', [], sys.exc_info())
    return [b'never']


def wrong_length(environ, start_response):
    """?say=N: a Content-Length of N for a 10-byte body, sent ?how=list|stream."""
    q = _query(environ)
    body = b'0123456789'
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', q['say'])])
    if q.get('how') == 'stream':
        return iter([body[:5], body[5:]])
    return [body]


_inflight = [0, 0]  # running now, most at once (per worker interpreter)


def inflight(environ, start_response):
    """How many requests this worker has run at once, at most."""
    _inflight[0] += 1
    _inflight[1] = max(_inflight[1], _inflight[0])
    try:
        time.sleep(float(_query(environ).get('s', 0.1)))
    finally:
        _inflight[0] -= 1
    body = f"{_inflight[1]} {environ['wsgi.multithread']}".encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]


def router(environ, start_response):
    path = environ['PATH_INFO']
    name = path.strip('/').split('/')[0] or 'hello'
    app = ROUTES.get(name)
    if app is None:
        start_response('404 Not Found', [('Content-Type', 'text/plain')])
        return [b'no such route\n']
    return app(environ, start_response)


ROUTES = {
    'hello': hello, 'echo': echo, 'stream': stream, 'closing': closing,
    'raises': raises, 'returns_str': returns_str, 'no_start': no_start,
    'twice': twice, 'exc_info': exc_info_replaces, 'bad_header': bad_header,
    'slow': slow, 'whoami': whoami, 'spin': spin, 'trickle': trickle, 'endless': endless,
    'sendfile': sendfile, 'big': big, 'late_error': late_error, 'late_exc_info': late_exc_info,
    'wrong_length': wrong_length, 'inflight': inflight,
}
