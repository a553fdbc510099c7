"""A WSGI server whose workers are sub-interpreters.

One process serves a WSGI application on every core: each worker is an
isolated interpreter that imports the application once. The options have
gunicorn's names::

    python -m subinterp serve myapp:application -b 127.0.0.1:8000 -w 4

or, from Python::

    import subinterp.server
    subinterp.server.serve('myapp:application', bind=['127.0.0.1:8000'])

See docs/server.md.
"""

import os
import sys
import time

__all__ = ['serve', 'Server', 'DEFAULTS']

# gunicorn's defaults, where gunicorn has the option.
DEFAULTS = {
    'bind': ['127.0.0.1:8000'],
    'workers': None,            # one per core
    'threads': 1,
    'backlog': 2048,
    'timeout': 30.0,            # a request's time in the application
    'read_timeout': 30.0,       # a client's time to send its request
    'graceful_timeout': 30.0,
    'keep_alive': 2.0,
    'limit_request_line': 4094,
    'limit_request_fields': 100,
    'limit_request_field_size': 8190,
    'limit_request_body': 0,    # no limit
    'max_requests': 0,          # never recycle
    'max_requests_jitter': 0,
    'access_logfile': None,
    'access_logformat': None,   # gunicorn's default
    'error_logfile': '-',
    'log_level': 'info',
    'chdir': None,
    'pythonpath': None,
    'forwarded_allow_ips': '127.0.0.1,::1',
}

_LEVELS = ('debug', 'info', 'warning', 'error', 'critical')


def _server_class():
    from . import _server
    return _server.Server


def Server(app, **options):
    """A started-later server object: ``start()`` returns the URLs it
    listens at, ``wait()`` blocks until ``stop(graceful=True)``."""
    opts = dict(DEFAULTS)
    unknown = set(options) - set(opts)
    if unknown:
        raise TypeError(f'unknown server options: {", ".join(sorted(unknown))}')
    opts.update(options)
    if not isinstance(app, str) or ':' not in app and not app:
        raise ValueError(f'app must be "MODULE:VARIABLE", not {app!r}')
    binds = opts['bind']
    if isinstance(binds, str):
        binds = [binds]
    if not binds:
        raise ValueError('bind: at least one address is needed')
    level = str(opts['log_level']).lower()
    if level not in _LEVELS:
        raise ValueError(f'log_level must be one of {", ".join(_LEVELS)}, not {level!r}')
    threads = int(opts['threads'])
    if threads < 1:
        raise ValueError('threads must be at least 1')
    workers = opts['workers']
    if workers is not None and int(workers) < 1:
        raise ValueError('workers must be at least 1')
    pythonpath = opts['pythonpath'] or []
    if isinstance(pythonpath, str):
        pythonpath = [p for p in pythonpath.split(',') if p]
    pythonpath = [os.path.abspath(p) for p in pythonpath]
    if opts['chdir']:
        os.chdir(opts['chdir'])
    # gunicorn puts the working folder first on the path.
    cwd = os.getcwd()
    pythonpath = pythonpath + [cwd] if cwd not in pythonpath else pythonpath
    allow = opts['forwarded_allow_ips']
    if isinstance(allow, str):
        allow = [a.strip() for a in allow.split(',') if a.strip()]
    return _server_class()(
        app=app,
        binds=list(binds),
        workers=int(workers) if workers else 0,
        threads=threads,
        backlog=int(opts['backlog']),
        keep_alive=float(opts['keep_alive']),
        graceful_timeout=float(opts['graceful_timeout']),
        timeout=float(opts['timeout'] or 0),
        read_timeout=float(opts['read_timeout']),
        limit_request_line=int(opts['limit_request_line']),
        limit_request_fields=int(opts['limit_request_fields']),
        limit_request_field_size=int(opts['limit_request_field_size']),
        limit_request_body=int(opts['limit_request_body'] or 0),
        max_requests=int(opts['max_requests'] or 0),
        max_requests_jitter=int(opts['max_requests_jitter'] or 0),
        pythonpath=pythonpath,
        access_log=opts['access_logfile'] or '',
        access_log_format=opts['access_logformat'] or '',
        error_log=opts['error_logfile'] or '',
        log_level=level,
        forwarded_allow_ips=allow,
    )


def _log(where, message):
    line = (time.strftime('[%Y-%m-%d %H:%M:%S %z]') + f' [{os.getpid()}] [INFO] {message}\n')
    if where in (None, '', '-'):
        sys.stderr.write(line)
        sys.stderr.flush()
    else:
        with open(where, 'a') as f:
            f.write(line)


def serve(app, *, ready=None, **options):
    """Serve ``app`` ("MODULE:VARIABLE") until SIGTERM (graceful: requests in
    flight finish within ``graceful_timeout``) or SIGINT/SIGQUIT (at once).
    SIGHUP reloads: new workers import the application again.

    ``ready``, if given, is called with the list of URLs listened at once
    the sockets accept. Options: see :data:`DEFAULTS` (gunicorn's names,
    with ``_`` for ``-``).
    """
    server = Server(app, **options)
    where = options.get('error_logfile', DEFAULTS['error_logfile'])
    _log(where, f'Starting subinterp server ({app})')
    urls = server.start(signals=True)
    for url in urls:
        _log(where, f'Listening at: {url} ({os.getpid()})')
    if ready is not None:
        ready(urls)
    server.wait()
    _log(where, 'Shutting down')
    return server
