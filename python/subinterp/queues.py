"""Queues shared by interpreters (PEP 734, as ``concurrent.interpreters``
ships them in Python 3.14).

A :class:`Queue` is a FIFO that every interpreter of the process can use. Items
are copied in (captured) on ``put()`` and rebuilt in the interpreter that calls
``get()``; handles such as other queues, channel ends and :class:`SharedBuffer`
views arrive as the same object, not a copy. A queue is itself shareable: pass
it to :meth:`Interpreter.call`, :meth:`Interpreter.prepare_main` or through
another queue, and every interpreter sees the same queue. It lives while any
interpreter holds it.

Blocking calls wait on the runtime's own wait lists with the GIL released:
timeouts are exact float seconds (no polling), and a blocked call in the main
thread of the main interpreter answers Ctrl-C.

``put()``, ``get()`` and their ``_nowait`` forms run in C++; this module adds
the class around them, the exceptions and the markers.
"""

import queue as _queue

from . import _subinterp

__all__ = [
    'UNBOUND', 'UNBOUND_ERROR', 'UNBOUND_REMOVE',
    'create', 'list_all',
    'Queue',
    'QueueError', 'QueueNotFoundError', 'QueueEmpty', 'QueueFull',
    'ItemInterpreterDestroyed',
]


class QueueError(RuntimeError):
    """Base class of the queue errors."""


class QueueNotFoundError(QueueError):
    """The queue does not exist (any more), or it was closed."""


class QueueEmpty(QueueError, _queue.Empty):
    """Raised from get_nowait() when the queue is empty.

    It is also raised from get() if it times out.
    """


class QueueFull(QueueError, _queue.Full):
    """Raised from put_nowait() when the queue is full.

    It is also raised from put() if it times out.
    """


class ItemInterpreterDestroyed(QueueError):
    """Raised from get() for an item whose interpreter was closed, when the
    item was put with ``unbounditems=UNBOUND_ERROR``."""


class UnboundItem:
    """Represents a queue item no longer bound to an interpreter.

    An item is unbound when the interpreter that added it to the queue is
    closed. With the ``UNBOUND`` policy, get() returns this marker in its
    place.
    """

    __slots__ = ()

    def __new__(cls):
        raise TypeError('use subinterp.queues.UNBOUND')

    def __repr__(self):
        return 'subinterp.queues.UNBOUND'

    def __reduce__(self):
        return 'UNBOUND'


class _Marker:
    """A policy for queue items whose interpreter was closed (see
    :func:`create`)."""

    __slots__ = ('_name',)

    def __init__(self, name):
        self._name = name

    def __repr__(self):
        return f'subinterp.queues.{self._name}'

    def __reduce__(self):
        return self._name


#: get() returns this in place of an item whose interpreter was closed.
UNBOUND = object.__new__(UnboundItem)
#: get() raises ItemInterpreterDestroyed for an item whose interpreter was closed.
UNBOUND_ERROR = _Marker('UNBOUND_ERROR')
#: An item whose interpreter was closed is removed from the queue.
UNBOUND_REMOVE = _Marker('UNBOUND_REMOVE')


def create(maxsize=0, *, unbounditems=UNBOUND):
    """Return a new cross-interpreter queue.

    ``maxsize`` bounds the number of items (0 or less: unbounded; the
    queue's ``maxsize`` is still the value given, as in Python 3.14).
    ``unbounditems`` is the default policy of :meth:`Queue.put` for items
    whose interpreter is closed before they are got: ``UNBOUND`` (get()
    returns the ``UNBOUND`` marker), ``UNBOUND_ERROR`` (get() raises
    :exc:`ItemInterpreterDestroyed`) or ``UNBOUND_REMOVE`` (the item is
    dropped).
    """
    if not isinstance(maxsize, int):
        raise TypeError(f'maxsize must be an int, not {type(maxsize).__name__}')
    return _subinterp.queue_create(maxsize, unbounditems)


def list_all():
    """Return a list of all open queues."""
    queues = []
    for qid in _subinterp.queue_list_all():
        try:
            queues.append(Queue(qid))
        except QueueNotFoundError:
            pass  # closed or released meanwhile
    return queues


class Queue(_subinterp.Queue):
    """A cross-interpreter queue: ``Queue(id)`` is the queue with that id.

    There is one object per queue in each interpreter.

    Methods (all implemented in C++):

    ``put(obj, block=True, timeout=None, *, unbounditems=None)``
        Add ``obj``; while the queue is full, wait (up to ``timeout``
        seconds, then raise :exc:`QueueFull`). ``unbounditems`` overrides the
        queue's policy for this item.
    ``put_nowait(obj, *, unbounditems=None)``
        ``put(obj, block=False)``.
    ``get(block=True, timeout=None)``
        Remove and return the oldest item; while there is none, wait (up to
        ``timeout`` seconds, then raise :exc:`QueueEmpty`).
    ``get_nowait()``
        ``get(block=False)``.
    ``qsize()``, ``empty()``, ``full()``
        The number of items now, and whether it is 0 / ``maxsize``.
    ``close()``
        (Beyond 3.14.) Drop the items and close the queue: blocked and later
        calls raise :exc:`QueueNotFoundError`.

    Properties: ``id``, ``maxsize``, ``unbounditems``, ``is_closed``.
    """

    __slots__ = ()

    def __new__(cls, id, /):
        if not isinstance(id, int):
            raise TypeError(f'id must be an int, got {id!r}')
        return _subinterp.queue_from_id(id)

    def __repr__(self):
        return f'{type(self).__name__}({self.id})'

    def __reduce__(self):
        return (type(self), (self.id,))


_subinterp.register(
    Queue=Queue,
    QueueError=QueueError,
    QueueNotFoundError=QueueNotFoundError,
    QueueEmpty=QueueEmpty,
    QueueFull=QueueFull,
    ItemInterpreterDestroyed=ItemInterpreterDestroyed,
    UNBOUND=UNBOUND,
    UNBOUND_ERROR=UNBOUND_ERROR,
    UNBOUND_REMOVE=UNBOUND_REMOVE,
)
