"""``python -m subinterp``: the command line of subinterp.

    python -m subinterp serve MODULE:VARIABLE [options]   (see --help)

The same command is installed as ``subinterp`` by ``pip install``.
"""

import argparse
import sys


def _serve_parser(sub):
    p = sub.add_parser(
        'serve', help='serve a WSGI application on sub-interpreters',
        description='Serve a WSGI application; each worker is an isolated '
                    'sub-interpreter of this process. Options have gunicorn\'s names.')
    p.add_argument('app', metavar='MODULE:VARIABLE',
                   help='the WSGI application, e.g. myproject.wsgi:application')
    p.add_argument('-b', '--bind', action='append', metavar='ADDRESS',
                   help='HOST:PORT, [IPv6]:PORT or unix:PATH; repeatable; port 0 picks '
                        'a free port (default 127.0.0.1:8000)')
    p.add_argument('-w', '--workers', type=int, metavar='N',
                   help='worker interpreters (default: one per core)')
    p.add_argument('--threads', type=int, default=1, metavar='T',
                   help='threads per worker, sharing its GIL (default 1)')
    p.add_argument('--backlog', type=int, default=2048, metavar='N')
    p.add_argument('-t', '--timeout', type=float, default=30.0, metavar='S',
                   help='seconds a request may run in the application: past it, '
                        'TimeoutError is raised in it, and at twice that its worker is '
                        'replaced (default 30; 0: no limit)')
    p.add_argument('--read-timeout', type=float, default=30.0, metavar='S',
                   help='seconds a client may take to send a request (default 30)')
    p.add_argument('--graceful-timeout', type=float, default=30.0, metavar='S',
                   help='seconds requests in flight get after SIGTERM (default 30)')
    p.add_argument('--keep-alive', type=float, default=2.0, metavar='S',
                   help='seconds an idle connection is kept open (default 2)')
    p.add_argument('--max-requests', type=int, default=0, metavar='N',
                   help="replace a worker's interpreter after N requests (default: never)")
    p.add_argument('--max-requests-jitter', type=int, default=0, metavar='J',
                   help='add a random 0..J to each worker\'s --max-requests')
    p.add_argument('--limit-request-line', type=int, default=4094, metavar='BYTES')
    p.add_argument('--limit-request-fields', type=int, default=100, metavar='N')
    p.add_argument('--limit-request-field_size', '--limit-request-field-size', type=int,
                   default=8190, metavar='BYTES', dest='limit_request_field_size')
    p.add_argument('--limit-request-body', type=int, default=0, metavar='BYTES',
                   help='largest request body (default: no limit)')
    p.add_argument('--access-logfile', metavar='PATH', help="access log ('-': stdout)")
    p.add_argument('--access-logformat', metavar='FORMAT',
                   help="gunicorn's access log format (%%(h)s %%(r)s %%(s)s ...)")
    p.add_argument('--error-logfile', '--log-file', default='-', metavar='PATH',
                   dest='error_logfile', help="error log ('-': stderr, the default)")
    p.add_argument('--log-level', default='info',
                   choices=['debug', 'info', 'warning', 'error', 'critical'])
    p.add_argument('--chdir', metavar='DIR', help='change to DIR before loading the app')
    p.add_argument('--pythonpath', metavar='DIRS',
                   help='comma-separated folders to put first on sys.path')
    p.add_argument('--forwarded-allow-ips', default='127.0.0.1,::1', metavar='IPS',
                   help="addresses whose X-Forwarded-For/-Proto are honoured ('*': all)")
    return p


def main(argv=None):
    parser = argparse.ArgumentParser(prog='subinterp' if argv is None and
                                     not sys.argv[0].endswith('__main__.py')
                                     else 'python -m subinterp')
    sub = parser.add_subparsers(dest='command', required=True)
    _serve_parser(sub)
    args = parser.parse_args(argv)
    if args.command == 'serve':
        from . import server
        options = vars(args).copy()
        del options['command']
        app = options.pop('app')
        options['bind'] = options['bind'] or ['127.0.0.1:8000']
        try:
            server.serve(app, **options)
        except (ValueError, RuntimeError, OSError) as exc:
            print(f'subinterp serve: error: {exc}', file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
