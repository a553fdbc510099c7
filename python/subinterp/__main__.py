"""``python -m subinterp``: the command line of subinterp.

    python -m subinterp serve MODULE:VARIABLE [options]   (see --help)
    python -m subinterp run SCRIPT... [options]           (see --help)

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


def _size(text):
    """'256M' -> bytes (K, M, G suffixes, powers of 1024)."""
    units = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    t = text.strip().upper().removesuffix('B')
    try:
        if t and t[-1] in units:
            value = float(t[:-1]) * units[t[-1]]
        else:
            value = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a size (like 64K, 256M, 1G)')
    if value < 0:
        raise argparse.ArgumentTypeError(f'{text!r}: a size must not be negative')
    return int(value)


def _run_parser(sub):
    p = sub.add_parser(
        'run', help='run scripts, each in a fresh isolated interpreter, with limits',
        description='Run Python scripts, each in a fresh isolated interpreter that is never '
                    'used again, with a time limit and an output limit, several at once. '
                    'The exit status is 0 when every script ended ok, else 1. See '
                    'docs/sandbox.md for what this isolation does and does not stop.')
    p.add_argument('scripts', nargs='+', metavar='SCRIPT', help="script files ('-': stdin)")
    p.add_argument('--timeout', type=float, default=5.0, metavar='SECONDS',
                   help='time limit per script (default 5)')
    p.add_argument('--output-limit', type=_size, default=1 << 20, metavar='SIZE',
                   help='stdout and stderr together, per script (default 1M)')
    p.add_argument('--memory', type=_size, metavar='SIZE',
                   help='memory limit per script (process isolation only)')
    p.add_argument('--isolation', choices=['interpreter', 'process'], default='interpreter')
    p.add_argument('--allow', action='append', default=[], metavar='WHAT',
                   help='let scripts do WHAT: subprocess, network, write, process, ctypes '
                        '(repeatable)')
    p.add_argument('-j', '--jobs', type=int, metavar='N',
                   help='scripts at once (default: one per core)')
    p.add_argument('--json', action='store_true',
                   help="one JSON object per script and line, in the scripts' order")
    return p


def _run(args):
    import json
    import os
    from . import sandbox
    if args.isolation == 'process':
        print('subinterp run: error: --isolation process is not available yet',
              file=sys.stderr)
        return 2
    if args.memory is not None:
        print('subinterp run: error: --memory needs --isolation process: interpreters in one '
              'process share its memory, so no limit per script can be promised',
              file=sys.stderr)
        return 2
    if args.jobs is not None and args.jobs < 1:
        print('subinterp run: error: --jobs must be at least 1', file=sys.stderr)
        return 2
    sources = []
    for path in args.scripts:
        try:
            if path == '-':
                sources.append(sys.stdin.read())
            else:
                with open(path, encoding='utf-8') as f:
                    sources.append(f.read())
        except (OSError, UnicodeDecodeError) as exc:
            print(f'subinterp run: error: {path}: {exc}', file=sys.stderr)
            return 2
    try:
        sandbox_ = sandbox.Sandbox(workers=args.jobs or os.cpu_count() or 1)
    except ValueError as exc:
        print(f'subinterp run: error: {exc}', file=sys.stderr)
        return 2
    progress = len(sources) > 1 and sys.stderr.isatty()
    counts = {}
    all_ok = True
    try:
        futures = [sandbox_.submit(src, timeout=args.timeout, output_limit=args.output_limit,
                                   allow=args.allow) for src in sources]
        for n, (path, future) in enumerate(zip(args.scripts, futures), 1):
            r = future.result()
            all_ok = all_ok and r.ok
            counts[r.status] = counts.get(r.status, 0) + 1
            if progress:
                done = int(30 * n / len(futures))
                summary = ', '.join(f'{k} {v}' for k, v in sorted(counts.items()))
                print(f'\r[{"#" * done}{"." * (30 - done)}] {n}/{len(futures)}  {summary}',
                      end='', file=sys.stderr, flush=True)
            if args.json:
                line = r.to_json()
                line['script'] = path
                print(json.dumps(line), flush=True)
                continue
            print(f'==> {path}: {r.status} in {r.elapsed:.3f} s'
                  + (' (stuck: left behind)' if r.stuck else ''))
            if r.stdout:
                print(r.stdout, end='' if r.stdout.endswith('\n') else '\n')
            if r.stderr:
                print(r.stderr, end='' if r.stderr.endswith('\n') else '\n')
            if r.error:
                print(r.error.traceback or f'{r.error.type}: {r.error.message}', end='')
                if not (r.error.traceback or '').endswith('\n'):
                    print()
                if r.status != 'error':  # why it was stopped
                    print(f'{r.error.type}: {r.error.message}')
            elif r.value is not None:
                print(f'= {r.value!r}')
    except ValueError as exc:
        print(f'subinterp run: error: {exc}', file=sys.stderr)
        return 2
    finally:
        if progress:
            print(file=sys.stderr)
        sandbox_.close()
    return 0 if all_ok else 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog='subinterp' if argv is None and
                                     not sys.argv[0].endswith('__main__.py')
                                     else 'python -m subinterp')
    sub = parser.add_subparsers(dest='command', required=True)
    _serve_parser(sub)
    _run_parser(sub)
    args = parser.parse_args(argv)
    if args.command == 'run':
        return _run(args)
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
