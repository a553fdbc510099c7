"""Channels between interpreters (PEP 554).

``create_channel()`` returns the two ends of a new channel,
``(RecvChannel, SendChannel)``. Both ends are shareable: pass them to
:meth:`subinterp.Interpreter.call`, :meth:`~subinterp.Interpreter.prepare_main`
or through a queue or another channel, and every interpreter sees the same
channel. A channel lives while any interpreter holds one of its ends.

``SendChannel.send(obj)`` waits until the object has been received;
``send_nowait(obj)`` does not wait. ``send_buffer(obj)`` sends a memoryview of
``obj``: when its memory belongs to a :class:`subinterp.SharedBuffer`, the
receiver gets a view of the same bytes (no copy); other read-only buffers are
copied once; other writable ones are refused (the writes would not be seen).

``close()`` on either end closes the channel: later sends raise
:exc:`ChannelClosedError`. Closed from the send end, the items already sent
can still be received (iteration stops after the last); closed from the
receive end, they are dropped and blocked senders raise
:exc:`ChannelClosedError`. Receiving from a closed, drained channel raises
:exc:`ChannelClosedError`; nothing hangs.

Blocking calls release the GIL, take exact float timeouts (then raise
:exc:`TimeoutError`) and answer Ctrl-C in the main thread.
"""

from . import _subinterp

__all__ = [
    'create_channel', 'list_all_channels',
    'RecvChannel', 'SendChannel',
    'ChannelError', 'ChannelNotFoundError', 'ChannelEmptyError',
    'ChannelClosedError',
]


class ChannelError(RuntimeError):
    """Base class of the channel errors."""


class ChannelNotFoundError(ChannelError):
    """The channel does not exist (any more)."""


class ChannelEmptyError(ChannelError):
    """recv_nowait() found nothing to receive."""


class ChannelClosedError(ChannelError):
    """The channel is closed (and, for a receive, drained)."""


def create_channel():
    """Return ``(recv, send)``: the two ends of a new channel."""
    return _subinterp.channel_create()


def list_all_channels():
    """Return ``[(recv, send), ...]`` for every channel that exists."""
    ends = []
    for cid in _subinterp.channel_list_all():
        try:
            ends.append((RecvChannel(cid), SendChannel(cid)))
        except ChannelNotFoundError:
            pass  # released meanwhile
    return ends


class RecvChannel(_subinterp.RecvChannel):
    """The receiving end of a channel: ``RecvChannel(id)``.

    Methods (implemented in C++):

    ``recv(*, timeout=None)``
        Return the next object, waiting for one (up to ``timeout`` seconds,
        then :exc:`TimeoutError`). :exc:`ChannelClosedError` once the channel
        is closed and drained.
    ``recv_nowait(default=<unset>)``
        Return the next object, or ``default``; without a default, raise
        :exc:`ChannelEmptyError`.
    ``close()``
        Close the channel; items not yet received are dropped.

    Iterating yields objects until the channel is closed and drained.
    Properties: ``id``, ``is_closed``.
    """

    __slots__ = ()

    def __new__(cls, id, /):
        if not isinstance(id, int):
            raise TypeError(f'id must be an int, got {id!r}')
        return _subinterp.channel_from_id(id, False)

    def __repr__(self):
        return f'{type(self).__name__}(id={self.id})'

    def __reduce__(self):
        return (type(self), (self.id,))


class SendChannel(_subinterp.SendChannel):
    """The sending end of a channel: ``SendChannel(id)``.

    Methods (implemented in C++):

    ``send(obj, *, timeout=None)``
        Send ``obj`` and wait until it is received (up to ``timeout``
        seconds; then it is withdrawn and :exc:`TimeoutError` raised).
    ``send_nowait(obj)``
        Send ``obj`` without waiting; return True if a receiver was
        already waiting for it.
    ``send_buffer(obj, *, timeout=None)``, ``send_buffer_nowait(obj)``
        The same for ``memoryview(obj)``: shared memory travels without a
        copy.
    ``close()``
        Close the channel; items already sent can still be received.

    Properties: ``id``, ``is_closed``.
    """

    __slots__ = ()

    def __new__(cls, id, /):
        if not isinstance(id, int):
            raise TypeError(f'id must be an int, got {id!r}')
        return _subinterp.channel_from_id(id, True)

    def __repr__(self):
        return f'{type(self).__name__}(id={self.id})'

    def __reduce__(self):
        return (type(self), (self.id,))


_subinterp.register(
    SendChannel=SendChannel,
    RecvChannel=RecvChannel,
    ChannelError=ChannelError,
    ChannelNotFoundError=ChannelNotFoundError,
    ChannelEmptyError=ChannelEmptyError,
    ChannelClosedError=ChannelClosedError,
)
