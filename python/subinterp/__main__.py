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
                    'used again, with a time limit and an output limit, several at once; '
                    'with --isolation process, in confined worker processes, with a memory '
                    'limit too. The exit status is 0 when every script ended ok, else 1. '
                    'See docs/sandbox.md for what each isolation does and does not stop.')
    p.add_argument('scripts', nargs='+', metavar='SCRIPT', help="script files ('-': stdin)")
    p.add_argument('--timeout', type=float, default=5.0, metavar='SECONDS',
                   help='time limit per script (default 5)')
    p.add_argument('--output-limit', type=_size, default=1 << 20, metavar='SIZE',
                   help='stdout and stderr together, per script (default 1M)')
    p.add_argument('--memory', type=_size, metavar='SIZE',
                   help='memory limit per script: of the worker process that runs it '
                        '(process isolation only)')
    p.add_argument('--isolation', choices=['interpreter', 'process'], default='interpreter',
                   help='interpreter: fresh interpreters in this process, for code that is '
                        'buggy rather than hostile (default); process: in confined worker '
                        'processes, for hostile code')
    p.add_argument('--allow', action='append', default=[], metavar='WHAT',
                   help='let scripts do WHAT: subprocess, network, write, process, ctypes '
                        '(repeatable)')
    p.add_argument('-j', '--jobs', type=int, metavar='N',
                   help='scripts at once (default: one per core)')
    p.add_argument('--json', action='store_true',
                   help="one JSON object per script and line, in the scripts' order")
    p.add_argument('--recycle-after', type=int, metavar='N',
                   help='CPython keeps ~2.4 MiB of every interpreter: with interpreter '
                        'isolation, past N scripts run them in child processes, N each '
                        f'(default {RECYCLE_AFTER}); with process isolation, replace each '
                        f'worker after N scripts (default {WORKER_RECYCLE_AFTER})')
    return p


# CPython keeps ~2.4 MiB of every interpreter made and closed: past this
# many scripts, `run` hands them to child processes, this many each.
RECYCLE_AFTER = 400
# Scripts per worker process with process isolation.
WORKER_RECYCLE_AFTER = 25


def _results_here(args, sources):
    """Result dicts (to_json() plus 'script'), in order, run in this process."""
    import os
    from . import sandbox
    if args.isolation == 'process':
        sb = sandbox.Sandbox(workers=args.jobs or os.cpu_count() or 1, isolation='process',
                             memory=args.memory, allow=args.allow,
                             recycle_after=args.recycle_after)
    else:
        sb = sandbox.Sandbox(workers=args.jobs or os.cpu_count() or 1)
    finished = False
    try:
        futures = [sb.submit(src, timeout=args.timeout, output_limit=args.output_limit,
                             allow=args.allow) for src in sources]
        for path, future in zip(args.scripts, futures):
            r = future.result()
            line = r.to_json()
            line['script'] = path
            line['_value'] = r.value
            yield line
        finished = True
    finally:
        sb.close(wait=finished)  # Ctrl-C does not wait for the running scripts


def _results_in_children(args, batch):
    """The same, from child processes started clean, `batch` scripts each:
    each child's memory goes with it."""
    import json
    import os
    import subprocess
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for start in range(0, len(args.scripts), batch):
        cmd = [sys.executable, '-m', 'subinterp', 'run', *args.scripts[start:start + batch],
               '--json', '--timeout', str(args.timeout), '--output-limit',
               str(args.output_limit), '--recycle-after', str(batch)]
        if args.jobs:
            cmd += ['--jobs', str(args.jobs)]
        for what in args.allow:
            cmd += ['--allow', what]
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        with child.stdout:
            for text in child.stdout:
                yield json.loads(text)
        if child.wait() not in (0, 1):
            raise RuntimeError(f'a child process for scripts {start + 1}.. ended with '
                               f'status {child.returncode}')


def _print_result(line):
    print(f"==> {line['script']}: {line['status']} in {line['elapsed']:.3f} s"
          + (' (stuck: left behind)' if line.get('stuck') else ''))
    for stream in ('stdout', 'stderr'):
        if line[stream]:
            print(line[stream], end='' if line[stream].endswith('\n') else '\n')
    error = line['error']
    if error:
        print(error['traceback'] or f"{error['type']}: {error['message']}", end='')
        if not (error['traceback'] or '').endswith('\n'):
            print()
        if line['status'] != 'error':  # why it was stopped
            print(f"{error['type']}: {error['message']}")
    else:
        value = line.get('_value', line['value'])
        if value is not None:
            print(f'= {value!r}')


def _run(args):
    import json
    if args.recycle_after is None:
        args.recycle_after = (WORKER_RECYCLE_AFTER if args.isolation == 'process'
                              else RECYCLE_AFTER)
    if args.memory is not None and args.isolation != 'process':
        print('subinterp run: error: --memory needs --isolation process: interpreters in one '
              'process share its memory, so no limit per script can be promised',
              file=sys.stderr)
        return 2
    if args.jobs is not None and args.jobs < 1:
        print('subinterp run: error: --jobs must be at least 1', file=sys.stderr)
        return 2
    if args.recycle_after < 1:
        print('subinterp run: error: --recycle-after must be at least 1', file=sys.stderr)
        return 2
    from . import sandbox
    unknown = set(args.allow) - sandbox.PERMISSIONS
    if unknown:
        print(f'subinterp run: error: allow: unknown {sorted(unknown)}; '
              f'known: {sorted(sandbox.PERMISSIONS)}', file=sys.stderr)
        return 2
    sources = []
    for path in args.scripts:
        try:
            if path == '-':
                sources.append(sys.stdin.read())
            else:
                with open(path, encoding='utf-8') as f:
                    in_children = (args.isolation == 'interpreter'
                                   and len(args.scripts) > args.recycle_after)
                    sources.append('' if in_children else f.read())
        except (OSError, UnicodeDecodeError) as exc:
            print(f'subinterp run: error: {path}: {exc}', file=sys.stderr)
            return 2
    if args.isolation == 'interpreter' and len(sources) > args.recycle_after:
        if '-' in args.scripts:
            print("subinterp run: error: '-' (stdin) cannot be one of more than "
                  f'{args.recycle_after} scripts', file=sys.stderr)
            return 2
        results = _results_in_children(args, args.recycle_after)
    else:
        results = _results_here(args, sources)
    progress = len(sources) > 1 and sys.stderr.isatty()
    counts = {}
    all_ok = True
    try:
        for n, line in enumerate(results, 1):
            all_ok = all_ok and line['status'] == 'ok'
            counts[line['status']] = counts.get(line['status'], 0) + 1
            if progress:
                done = int(30 * n / len(sources))
                summary = ', '.join(f'{k} {v}' for k, v in sorted(counts.items()))
                print(f'\r[{"#" * done}{"." * (30 - done)}] {n}/{len(sources)}  {summary}',
                      end='', file=sys.stderr, flush=True)
            if args.json:
                line.pop('_value', None)
                print(json.dumps(line), flush=True)
            else:
                _print_result(line)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f'subinterp run: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('subinterp run: interrupted', file=sys.stderr)
        return 130
    finally:
        if progress:
            print(file=sys.stderr)
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
