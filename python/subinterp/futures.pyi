from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures.thread import BrokenThreadPool
from typing import Any, TypeVar

from . import ExecutionFailed as ExecutionFailed

__all__ = ['InterpreterPoolExecutor', 'BrokenInterpreterPool', 'ExecutionFailed']

_T = TypeVar('_T')


class BrokenInterpreterPool(BrokenThreadPool): ...


class InterpreterPoolExecutor(Executor):
    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = '',
        initializer: Callable[..., object] | str | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_worker: int | None = None,
    ) -> None: ...
    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]: ...
    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[_T]: ...
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...
