"""Multiple isolated interpreters in one process, each with its own GIL.

This package gives CPython 3.12 and 3.13 the API that Python 3.14 ships as
:mod:`concurrent.interpreters` (PEP 734): code written for 3.14 runs after
changing ``from concurrent import interpreters`` to
``import subinterp as interpreters``.

Beyond 3.14 it passes more values between interpreters (lists, dicts, sets,
big ints, lambdas, closures and functions defined in ``__main__``, by value),
copies ``sys.path`` into new interpreters, offers the legacy shared-GIL
configuration (``create(isolated=False)``) for extension modules that need it,
and :class:`SharedBuffer`, memory that several interpreters read and write
without copying.

The work is done by the C++ extension ``subinterp._subinterp`` and the core
library beside it (``libsubinterp.so``, shared with every C++ host in the
process); this module adds the friendly classes, argument handling and
documentation.
"""

import atexit
import importlib
import os
import sys
import threading
import types
import weakref


def _import_extension():
    """The extension, also from a build tree.

    An installed package holds the extension. In a source checkout the
    package is in python/ and the extension in <build>/python/subinterp, both
    on sys.path: the package's path then takes that folder in too.
    """
    name = __name__ + '._subinterp'
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        missing = exc
    for entry in sys.path:
        folder = os.path.join(entry or os.curdir, __name__)
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        if (any(n.startswith('_subinterp.') and n.endswith('.so') for n in names)
                and folder not in __path__):
            __path__.append(folder)
            return importlib.import_module(name)
    raise missing


_subinterp = _import_extension()
SharedBuffer = _subinterp.SharedBuffer

__all__ = [
    'get_current', 'get_main', 'create', 'list_all', 'is_shareable',
    'Interpreter',
    'InterpreterError', 'InterpreterNotFoundError', 'ExecutionFailed',
    'NotShareableError',
    'ExceptionInfo', 'SharedBuffer',
    'create_queue', 'Queue', 'QueueError', 'QueueNotFoundError', 'QueueEmpty',
    'QueueFull', 'ItemInterpreterDestroyed',
    'UNBOUND', 'UNBOUND_ERROR', 'UNBOUND_REMOVE',
]


# --- exceptions --------------------------------------------------------------

class InterpreterError(Exception):
    """A cross-interpreter operation failed.

    Raised, for example, when closing an interpreter that is running, the
    main interpreter or the current one, or when running code in an
    interpreter that this package did not create.
    """


class InterpreterNotFoundError(InterpreterError):
    """The interpreter does not exist (it was never created or is closed)."""


class NotShareableError(TypeError):
    """An object cannot be passed to another interpreter.

    The message names the object's type and where it sits in the value
    being passed, e.g. ``args[1]['key']`` or ``result``.
    """


_EXEC_FAILURE_STR = """\
{superstr}

Uncaught in the interpreter:

{formatted}"""


class ExecutionFailed(InterpreterError):
    """An exception was raised and not caught in another interpreter.

    Raised by :meth:`Interpreter.exec` and :meth:`Interpreter.call`. The
    original exception object stays behind in the other interpreter (objects
    do not cross interpreters); :attr:`excinfo`, an :class:`ExceptionInfo`,
    describes it, and ``str()`` of this exception includes the remote
    traceback.
    """

    def __init__(self, excinfo):
        msg = excinfo.formatted
        if not msg:
            if excinfo.type and excinfo.msg:
                msg = f'{excinfo.type.__name__}: {excinfo.msg}'
            else:
                msg = excinfo.type.__name__ or excinfo.msg
        super().__init__(msg)
        self.excinfo = excinfo

    def __str__(self):
        try:
            formatted = self.excinfo.errdisplay
        except Exception:
            return super().__str__()
        if not formatted:
            return super().__str__()
        return _EXEC_FAILURE_STR.format(superstr=super().__str__(),
                                        formatted=formatted)

    def __reduce__(self):
        # The default would call ExecutionFailed(msg); we need the excinfo,
        # e.g. when this exception escapes a nested interpreter.
        return (type(self), (self.excinfo,), self.__dict__)


class ExceptionInfo:
    """A snapshot of an exception raised in another interpreter.

    Attributes:

    ``type``
        an object with the ``__name__``, ``__qualname__`` and ``__module__``
        of the exception's class (the class itself stays behind).
    ``msg``
        ``str()`` of the exception.
    ``formatted``
        the exception formatted without its traceback, as
        ``traceback.format_exception_only()`` gives it.
    ``errdisplay``
        the whole traceback display, as Python prints it for an uncaught
        exception, including the ``__cause__``/``__context__`` chain.
    ``cause``, ``context``
        :class:`ExceptionInfo` of the exception's ``__cause__`` and
        ``__context__``, or ``None``.

    Instances are made by this package from the snapshot the extension takes;
    they can be pickled, so they travel between interpreters too.
    """

    __slots__ = ('type', 'msg', 'formatted', 'errdisplay', 'cause', 'context',
                 '_pickled')

    def __init__(self, type, msg, formatted, errdisplay, cause=None,
                 context=None, pickled=None):
        self.type = type
        self.msg = msg
        self.formatted = formatted
        self.errdisplay = errdisplay
        self.cause = cause
        self.context = context
        self._pickled = pickled

    @classmethod
    def _from_raw(cls, raw):
        """Build from the extension's raw snapshot tuple (see
        docs/extension.md); ``None`` gives ``None``."""
        if raw is None:
            return None
        (name, qualname, module, msg, formatted, errdisplay,
         cause, context, pickled) = raw
        exctype = types.SimpleNamespace(
            __name__=name, __qualname__=qualname, __module__=module)
        # The text ends with the newline that traceback's functions add; the
        # message and display of ExecutionFailed do without it, as in 3.14.
        return cls(exctype, msg,
                   formatted.rstrip('\n') if formatted else formatted,
                   errdisplay.rstrip('\n') if errdisplay else errdisplay,
                   cls._from_raw(cause), cls._from_raw(context), pickled)

    def rebuild(self):
        """Return a copy of the original exception, or ``None``.

        The copy is unpickled from the bytes taken in the other interpreter,
        so it exists only when the exception could be pickled there and its
        class can be imported here. It has no traceback, ``__cause__`` or
        ``__context__``; those are described by this snapshot.
        """
        if self._pickled is None:
            return None
        try:
            # As values are unpickled: classes of the pure-Python fallbacks
            # of stdlib C modules (3.12's _pydecimal, _pydatetime) are this
            # interpreter's own.
            exc = _subinterp.unpickle(self._pickled)
        except Exception:
            return None
        return exc if isinstance(exc, BaseException) else None

    def __reduce__(self):
        return (type(self), (self.type, self.msg, self.formatted,
                             self.errdisplay, self.cause, self.context,
                             self._pickled))

    def __repr__(self):
        t = self.type
        return (f'{type(self).__name__}(type={t.__module__}.{t.__qualname__},'
                f' msg={self.msg!r})')


_subinterp.register(
    InterpreterError=InterpreterError,
    InterpreterNotFoundError=InterpreterNotFoundError,
    ExecutionFailed=ExecutionFailed,
    NotShareableError=NotShareableError,
    make_excinfo=ExceptionInfo._from_raw,
)

from .queues import (  # noqa: E402  (needs the classes registered above)
    create as create_queue, Queue, QueueError, QueueNotFoundError, QueueEmpty,
    QueueFull, ItemInterpreterDestroyed, UNBOUND, UNBOUND_ERROR, UNBOUND_REMOVE,
)
from . import channels  # noqa: E402,F401


# --- module functions --------------------------------------------------------

def create(*, isolated=True):
    """Create a new, idle interpreter and return its :class:`Interpreter`.

    With ``isolated=True`` (the default) the interpreter has its own GIL and
    runs in parallel with the others; only extension modules that support
    per-interpreter GILs import there. ``isolated=False`` gives the legacy
    configuration that shares the main interpreter's GIL, for extension
    modules that need it.

    The new interpreter starts with a copy of the calling interpreter's
    ``sys.path``, so modules that import here (for example those beside the
    running script) import there too.

    The interpreter is closed when :meth:`Interpreter.close` is called or
    when the last :class:`Interpreter` object for it, in any interpreter, is
    gone; interpreters still open when the main interpreter exits are closed
    then.
    """
    interpid = _subinterp.create(bool(isolated))
    interp = Interpreter(interpid, _whence=_subinterp.WHENCE_SUBINTERP,
                         _ownsref=True)
    try:
        _copy_sys_path(interpid)
    except BaseException:
        try:
            interp.close()
        except InterpreterError:
            pass
        raise
    return interp


def _copy_sys_path(interpid):
    # One exec of a literal, which binds no name in the new __main__.
    path = [p for p in sys.path if isinstance(p, str)]
    _subinterp.exec(interpid, f'__import__("sys").path[:] = {path!r}\n')


def list_all():
    """Return an :class:`Interpreter` for every interpreter in the process,
    the main interpreter first, then the others in the order of creation."""
    interps = []
    # In id order, which is creation order (main first), as 3.14 lists them.
    for interpid, whence in sorted(_subinterp.list_all()):
        try:
            interps.append(Interpreter(interpid, _whence=whence))
        except InterpreterNotFoundError:
            pass  # closed since the list was taken
    return interps


def get_current():
    """Return the :class:`Interpreter` this code runs in."""
    interpid, whence = _subinterp.get_current()
    return Interpreter(interpid, _whence=whence)


def get_main():
    """Return the main interpreter's :class:`Interpreter`."""
    interpid, whence = _subinterp.get_main()
    return Interpreter(interpid, _whence=whence)


def is_shareable(obj):
    """Return whether ``obj`` can be passed to another interpreter.

    ``obj`` can be passed when :meth:`Interpreter.call` and
    :meth:`Interpreter.prepare_main` accept it as an argument; otherwise
    they raise :exc:`NotShareableError`.
    """
    return _subinterp.is_shareable(obj)


# --- Interpreter -------------------------------------------------------------

_WHENCE_TO_STR = {
    _subinterp.WHENCE_UNKNOWN: 'unknown',
    _subinterp.WHENCE_RUNTIME: 'runtime init',
    _subinterp.WHENCE_CAPI: 'C-API',
    _subinterp.WHENCE_SUBINTERP: 'subinterp module',
}

# One Interpreter object per id in each interpreter.
_known = weakref.WeakValueDictionary()
_known_lock = threading.Lock()


class Interpreter(_subinterp.InterpreterBase):
    """A single Python interpreter in this process.

    Attributes:

    ``id``
        the interpreter's process-wide id (an ``int``).
    ``whence``
        where it was created: ``'runtime init'`` (the main interpreter),
        ``'subinterp module'`` (by :func:`create`), ``'C-API'`` (by other
        code through the C API) or ``'unknown'``.

    There is at most one object per interpreter in each interpreter;
    ``Interpreter(id)`` returns it. Use :func:`create`, :func:`get_current`,
    :func:`get_main` or :func:`list_all` to obtain one.

    For an interpreter made by :func:`create`, each interpreter's object
    holds a reference that keeps the interpreter open; when the last one is
    gone, the interpreter is closed (at once if idle, else when its current
    run ends). :meth:`close`, :meth:`prepare_main`, :meth:`exec` and
    :meth:`call` work only on interpreters made by :func:`create`; on others
    they raise :exc:`InterpreterError`.

    An :class:`Interpreter` can be passed to another interpreter (by pickle),
    where it names the same interpreter. Used in a ``with`` statement it is
    closed at the end of the block.
    """

    __slots__ = ('_id', '_whence', '_ownsref', '__weakref__')

    def __new__(cls, id, /, _whence=None, _ownsref=None):
        if not isinstance(id, int):
            raise TypeError(f'id must be an int, got {id!r}')
        id = int(id)
        if id < 0:
            raise ValueError(f'id must be a non-negative int, got {id!r}')
        if _whence is None:
            if _ownsref:
                _whence = _subinterp.WHENCE_SUBINTERP
            else:
                # May raise InterpreterNotFoundError.
                _whence = _subinterp.whence(id)
        if _ownsref is None:
            _ownsref = _whence == _subinterp.WHENCE_SUBINTERP
        with _known_lock:
            self = _known.get(id)
            if self is None:
                self = super().__new__(cls)
                self._id = id
                self._whence = _whence
                self._ownsref = False
                if _ownsref:
                    # May raise InterpreterNotFoundError; then the object is
                    # dropped and never cached.
                    _subinterp.incref(id)
                    self._ownsref = True
                _known[id] = self
        return self

    def __repr__(self):
        return f'{type(self).__name__}({self._id})'

    def __hash__(self):
        return hash(self._id)

    def __eq__(self, other):
        if not isinstance(other, Interpreter):
            return NotImplemented
        return self._id == other._id

    def __del__(self):
        self._decref()

    def __reduce__(self):
        # By name of a function that the runtime recognises in pickles: the
        # object then travels as a handle that keeps its interpreter open.
        return (_interpreter_from_id, (self._id,))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        try:
            self.close()
        except InterpreterNotFoundError:
            pass  # already closed in the block

    def _decref(self):
        if not getattr(self, '_ownsref', False):
            return
        self._ownsref = False
        try:
            _subinterp.decref(self._id)
        except InterpreterNotFoundError:
            pass

    @property
    def id(self):
        """The interpreter's process-wide id."""
        return self._id

    @property
    def whence(self):
        """Where the interpreter was created (a string; see the class)."""
        return _WHENCE_TO_STR.get(self._whence, 'unknown')

    def is_running(self):
        """Return whether the interpreter is running code.

        An interpreter made by :func:`create` runs while :meth:`exec` or
        :meth:`call` runs in it, from any thread. The main interpreter always
        runs (its ``__main__``), as in Python 3.14. Any interpreter also
        runs while code runs in it through CPython's own private module
        (``_interpreters`` on 3.13, ``_xxsubinterpreters`` on 3.12). Raises
        :exc:`InterpreterNotFoundError` if the interpreter no longer exists.
        """
        if self._whence == _subinterp.WHENCE_RUNTIME:
            return True
        return _subinterp.is_running(self._id)

    def _require_ours(self):
        if self._whence != _subinterp.WHENCE_SUBINTERP:
            raise InterpreterError(
                f'unrecognized interpreter {self._id} ({self.whence}): only '
                f'interpreters made by subinterp.create() run code here')

    def close(self):
        """Finalize and destroy the interpreter.

        Raises :exc:`InterpreterError` if the interpreter is running, is the
        main or the current interpreter, or was not made by :func:`create`,
        and :exc:`InterpreterNotFoundError` if it is already closed.
        """
        _subinterp.destroy(self._id)
        # Its references went with it.
        self._ownsref = False

    def prepare_main(self, ns=None, /, **kwargs):
        """Bind the given values as globals of the interpreter's ``__main__``.

        ``ns`` is a mapping or an iterable of ``(name, value)`` pairs;
        keyword arguments are bound too. Every value is passed as
        :meth:`call` passes arguments, so each must be shareable; if one is
        not, :exc:`NotShareableError` is raised. Raises ``ValueError`` when
        there is nothing to bind and :exc:`InterpreterError` for an
        interpreter not made by :func:`create`.
        """
        ns = dict(ns, **kwargs) if ns is not None else kwargs
        if not ns:
            raise ValueError('nothing to bind: pass a mapping or keywords')
        for name in ns:
            if not isinstance(name, str):
                raise TypeError(f'names must be str, got {name!r}')
        self._require_ours()
        _subinterp.set_main_attrs(self._id, ns)

    def exec(self, code, /):
        """Run ``code`` in the interpreter's ``__main__`` namespace.

        ``code`` is source text (``str``), a code object, or a function that
        takes no arguments, whose body is run. This is like the builtin
        :func:`exec` with the ``__dict__`` of the interpreter's ``__main__``
        as globals and locals. It returns nothing, and blocks the calling
        thread (not the calling interpreter) until done.

        An exception uncaught in the code raises :exc:`ExecutionFailed` here,
        whose ``excinfo`` describes it and whose message shows its traceback;
        a syntax error in the source is such an exception. Raises
        ``TypeError`` for another kind of ``code``, and
        :exc:`InterpreterError` for an interpreter not made by
        :func:`create`.
        """
        self._require_ours()
        _subinterp.exec(self._id, code)

    def call(self, callable, /, *args, **kwargs):
        """Call ``callable(*args, **kwargs)`` in the interpreter; return the
        result.

        The callable, the arguments and the result are passed between the
        interpreters as values: ``None``, bools, ints of any size, floats,
        complex numbers, str, bytes, bytearray (copied), tuples, lists,
        dicts, sets and frozensets of values, :class:`SharedBuffer` and
        memoryviews of one (shared, not copied), and, by pickle, anything
        else that pickles. Functions travel by reference when importable in
        the other interpreter, and by value when defined in ``__main__``, as
        lambdas or as closures. What cannot be passed raises
        :exc:`NotShareableError` naming its type and its place
        (``args[1]['key']``, ``result``).

        An exception uncaught in the call raises :exc:`ExecutionFailed`, as
        :meth:`exec` does. This blocks the calling thread until done.
        """
        if not _callable(callable):
            raise TypeError(f'{callable!r} is not callable')
        self._require_ours()
        return _subinterp.call(self._id, callable, args, kwargs)

    def call_in_thread(self, callable, /, *args, **kwargs):
        """Start a thread that calls ``callable(*args, **kwargs)`` in the
        interpreter, and return that :class:`threading.Thread`.

        The result is discarded; an exception goes to
        :func:`threading.excepthook`, as any exception uncaught in a thread.
        """
        t = threading.Thread(target=self._call, args=(callable, args, kwargs))
        t.start()
        return t

    def _call(self, callable, args, kwargs):
        self.call(callable, *args, **kwargs)


_callable = callable  # Interpreter.call's argument shadows the builtin.


def _interpreter_from_id(id):
    # What pickled Interpreter objects are rebuilt with.
    return Interpreter(id)


_subinterp.register(Interpreter=Interpreter)


# --- process exit ------------------------------------------------------------

def _warn_before_fork():
    # CPython 3.12 and 3.13 cannot fork a process that has sub-interpreters:
    # the child hangs (3.12) or aborts (3.13) while deleting them. A fork
    # cannot be refused from here, so say why before it happens.
    open_ = [i for i, whence in _subinterp.list_all()
             if whence == _subinterp.WHENCE_SUBINTERP]
    if open_:
        import warnings
        warnings.warn(
            f'fork() with {len(open_)} subinterp interpreter(s) open: '
            f'CPython {sys.version_info[0]}.{sys.version_info[1]} cannot fork '
            f'such a process (the child hangs or aborts); close them first, '
            f'or use multiprocessing\'s "spawn" or "forkserver" start method',
            RuntimeWarning, stacklevel=2)


def _register_shutdown():
    # Only the main interpreter's exit ends the process; interpreters still
    # open then must be ended before Python finalizes.
    if _subinterp.get_current()[0] == _subinterp.get_main()[0]:
        atexit.register(_subinterp.shutdown)
        os.register_at_fork(before=_warn_before_fork)


_register_shutdown()
