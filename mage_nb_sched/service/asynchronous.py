"""Async twins of the service functions: the same call, with the database work run on a
bounded thread pool so the caller's event loop (the Jupyter server's, a widget's) never blocks.

``acreate_schedule = twin(create_schedule)`` gives ``await acreate_schedule(store, ...)``. The
pool is shared and bounded (:data:`MAX_WORKERS`), so a burst of REST calls queues instead of
opening a thread — and a database connection — per call.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

#: Threads doing service work for event loops. SQLite serialises writers anyway; reads run in
#: parallel up to this many.
MAX_WORKERS = 4

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="mage-nb-svc")
        return _pool


async def run_off_loop(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``function(*args, **kwargs)`` on the service pool and await its result (context
    variables are carried over, as ``asyncio.to_thread`` does)."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, function, *args, **kwargs)
    return await loop.run_in_executor(_executor(), call)


def twin(function: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """The async twin of a blocking service function (same arguments, same result)."""

    @functools.wraps(function)
    async def asynchronous(*args: P.args, **kwargs: P.kwargs) -> T:
        return await run_off_loop(function, *args, **kwargs)

    asynchronous.__name__ = f"a{function.__name__}"
    asynchronous.__qualname__ = f"a{function.__qualname__}"
    asynchronous.__doc__ = (
        f"Async twin of :func:`{function.__name__}`: the same call, run off the event loop."
        f"\n\n{function.__doc__ or ''}"
    )
    return asynchronous


def shutdown() -> None:
    """Stop the pool's threads (tests and interpreter exit); a later call starts a new pool."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True)
