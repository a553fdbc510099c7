"""The application that bench/bench_server.py serves with every server.

/hello  a fixed small body
/cpu    about 5 ms of pure-Python work (on the pyenv CPythons)
/flask  a Flask route (Debian's python3-flask, from dist-packages)
"""


def _spin(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


# Flask is imported lazily so the other routes work without it.
_flask_app = None


def _flask(environ, start_response):
    global _flask_app
    if _flask_app is None:
        from flask import Flask
        app = Flask(__name__)

        @app.route('/flask')
        def index():
            return {'hello': 'flask', 'n': 42}
        _flask_app = app
    return _flask_app(environ, start_response)


def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/hello':
        body = b'Hello, world!\n'
    elif path == '/cpu':
        body = b'%d\n' % _spin(80_000)
    elif path == '/flask':
        return _flask(environ, start_response)
    else:
        start_response('404 Not Found', [('Content-Type', 'text/plain'),
                                         ('Content-Length', '10')])
        return [b'not found\n']
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]
