"""The two drivers of the protocol's steps: :func:`_run_blocking` and :func:`_run_async`, and
the small thread pool on which the asyncio driver runs file operations.

Separate because this is the only place where the protocol's effects meet a connection, a
clock and threads; the steps themselves stay free of I/O and are written once for both.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from .._common import ChannelInfo
from .._options import BytesLike
from ..exceptions import Timeout
from .effects import _Deadline, _Poll, _Recv, _Send, _Sleep, _Steps
from .receipt import FileReceipt
from .wire import _HEAD_LEN, CANCEL, DONE, MAGIC, REFUSE

_FILE_WORKERS: Final = 8  # threads for the file operations of all asyncio transfers


class _BlockingStream(Protocol):
    """What a transfer runs on: its own channel, or a connection's default channel."""

    def send(self, data: BytesLike, *, timeout: float | None = None) -> None: ...
    def recv(self, timeout: float | None = None) -> bytes: ...


class _AsyncStream(Protocol):
    async def send(self, data: BytesLike, *, timeout: float | None = None) -> None: ...
    async def recv(self, timeout: float | None = None) -> bytes: ...


def _wait(timeout: float | None, deadline: float | None) -> float | None:
    """How long the next wait may take: ``timeout``, cut short by the transfer's deadline."""
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise Timeout("the transfer took longer than its total_timeout")
    return left if timeout is None else min(timeout, left)


def _past_deadline(exc: BaseException, deadline: float | None) -> BaseException:
    """A wait cut short by the transfer's deadline says so (not just "recv timed out")."""
    if isinstance(exc, Timeout) and deadline is not None and time.monotonic() >= deadline:
        return Timeout("the transfer took longer than its total_timeout")
    return exc


def _settle(peer: object, msg: object) -> None:
    """Note on a transfer's channel that ``msg`` (sent or read) was its last word."""
    if (
        isinstance(msg, bytes | bytearray | memoryview)
        and len(msg) >= _HEAD_LEN
        and msg[: len(MAGIC)] == MAGIC
        and msg[_HEAD_LEN - 1] in (REFUSE, CANCEL, DONE)
        and isinstance(peer, ChannelInfo)
    ):
        peer._settled = True


def _run_blocking(steps: _Steps, peer: _BlockingStream, timeout: float | None) -> FileReceipt:
    value: Any = None
    error: BaseException | None = None
    deadline: float | None = None
    while True:
        try:
            effect = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as stop:
            receipt: FileReceipt = stop.value
            return receipt
        value, error = None, None
        try:
            if isinstance(effect, _Send):
                peer.send(effect.data, timeout=_wait(timeout, deadline))
                _settle(peer, effect.data)
            elif isinstance(effect, _Recv):
                value = peer.recv(_wait(timeout, deadline))
                _settle(peer, value)
            elif isinstance(effect, _Poll):
                with contextlib.suppress(Timeout):
                    value = peer.recv(0)
                _settle(peer, value)
            elif isinstance(effect, _Sleep):
                time.sleep(min(effect.seconds, _wait(effect.seconds, deadline) or 0.0))
            elif isinstance(effect, _Deadline):
                deadline = time.monotonic() + effect.seconds
            else:
                value = effect.fn(*effect.args)
        except BaseException as exc:  # into the protocol, which cleans up and re-raises
            error = _past_deadline(exc, deadline)


_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _file_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that run the file operations of asyncio transfers: bounded, and not the
    loop's default executor, so that no number of transfers can hold up other work."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                _FILE_WORKERS, thread_name_prefix="argonlink-files"
            )
        return _executor


def _forget_executor() -> None:
    # A forked child has none of the parent's threads (and maybe a lock held by one of them).
    global _executor, _executor_lock
    _executor, _executor_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_executor)


async def _in_thread(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    fut = asyncio.get_running_loop().run_in_executor(_file_executor(), functools.partial(fn, *args))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        # Let the operation finish before the protocol closes its file: a descriptor must
        # not be closed (and its number reused) under a read or write still running.
        while not fut.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([fut])
        raise


async def _run_async(steps: _Steps, peer: _AsyncStream, timeout: float | None) -> FileReceipt:
    value: Any = None
    error: BaseException | None = None
    deadline: float | None = None
    while True:
        try:
            effect = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as stop:
            receipt: FileReceipt = stop.value
            return receipt
        value, error = None, None
        try:
            if isinstance(effect, _Send):
                await peer.send(effect.data, timeout=_wait(timeout, deadline))
                _settle(peer, effect.data)
            elif isinstance(effect, _Recv):
                value = await peer.recv(_wait(timeout, deadline))
                _settle(peer, value)
            elif isinstance(effect, _Poll):
                with contextlib.suppress(Timeout):
                    value = await peer.recv(0)
                _settle(peer, value)
            elif isinstance(effect, _Sleep):
                await asyncio.sleep(min(effect.seconds, _wait(effect.seconds, deadline) or 0.0))
            elif isinstance(effect, _Deadline):
                deadline = time.monotonic() + effect.seconds
            else:
                value = await _in_thread(effect.fn, effect.args)
        except BaseException as exc:
            error = _past_deadline(exc, deadline)
