import threading
import types
from collections.abc import Buffer, Callable, Iterable, Mapping
from typing import Any, Self, SupportsIndex, TypeVar

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

from . import channels as channels
from .queues import (
    UNBOUND as UNBOUND,
    UNBOUND_ERROR as UNBOUND_ERROR,
    UNBOUND_REMOVE as UNBOUND_REMOVE,
    ItemInterpreterDestroyed as ItemInterpreterDestroyed,
    Queue as Queue,
    QueueEmpty as QueueEmpty,
    QueueError as QueueError,
    QueueFull as QueueFull,
    QueueNotFoundError as QueueNotFoundError,
    create as create_queue,
)

_R = TypeVar('_R')


class InterpreterError(Exception): ...


class InterpreterNotFoundError(InterpreterError): ...


class NotShareableError(TypeError): ...


class ExceptionInfo:
    type: types.SimpleNamespace
    msg: str
    formatted: str
    errdisplay: str
    cause: ExceptionInfo | None
    context: ExceptionInfo | None
    def __init__(
        self,
        type: types.SimpleNamespace,
        msg: str,
        formatted: str,
        errdisplay: str,
        cause: ExceptionInfo | None = None,
        context: ExceptionInfo | None = None,
        pickled: bytes | None = None,
    ) -> None: ...
    def rebuild(self) -> BaseException | None: ...


class ExecutionFailed(InterpreterError):
    excinfo: ExceptionInfo
    def __init__(self, excinfo: ExceptionInfo) -> None: ...


class SharedBuffer(Buffer):
    def __init__(self, size: SupportsIndex, /) -> None: ...
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __release_buffer__(self, buffer: memoryview, /) -> None: ...
    @property
    def nbytes(self) -> int: ...


class Interpreter:
    def __new__(cls, id: int, /) -> Self: ...
    @property
    def id(self) -> int: ...
    @property
    def whence(self) -> str: ...
    def __hash__(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def __reduce__(self) -> tuple[type[Interpreter], tuple[int]]: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc_info: object) -> None: ...
    def is_running(self) -> bool: ...
    def close(self) -> None: ...
    def prepare_main(
        self,
        ns: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        /,
        **kwargs: Any,
    ) -> None: ...
    def exec(self, code: str | types.CodeType | Callable[[], object], /) -> None: ...
    def call(self, callable: Callable[..., _R], /, *args: Any, **kwargs: Any) -> _R: ...
    def call_in_thread(
        self, callable: Callable[..., object], /, *args: Any, **kwargs: Any
    ) -> threading.Thread: ...


def create(*, isolated: bool = True) -> Interpreter: ...
def list_all() -> list[Interpreter]: ...
def get_current() -> Interpreter: ...
def get_main() -> Interpreter: ...
def is_shareable(obj: object) -> bool: ...
