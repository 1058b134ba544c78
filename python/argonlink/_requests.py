"""Request/response over a connection (PROTOCOL.md §10): many requests outstanding at once on
one channel, matched to their replies by id; a caller that gives up cancels the handler's
side; a handler's exception comes back as :class:`~argonlink.RemoteError`.

The caller opens one channel named ``argonlink.requests`` per connection and sends REQUESTs on
it; the responder answers each with a REPLY or an ERROR on the same channel, in any order. The
peer's channels of that name never reach ``accept_channel``: the responder takes them with
``serve_requests`` or ``requests()``.

Every message on the channel is ``kind: u8 ‖ id: u64 ‖ body``:

========  ====  =========  ==========================================================
kind      code  direction  body
========  ====  =========  ==========================================================
REQUEST   1     →          the request
REPLY     2     ←          the reply
ERROR     3     ←          UTF-8 JSON ``{"type", "message", "traceback"}``, ≤ 64 KiB
CANCEL    4     →          empty: the caller gave up; the handler is cancelled, no answer
========  ====  =========  ==========================================================
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import logging
import struct
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Final

from .exceptions import (
    ChannelError,
    ConfigError,
    ConnectionClosed,
    MessageTooLarge,
    RemoteError,
    Timeout,
)

if TYPE_CHECKING:
    from ._asyncio import Channel
    from .sync import Channel as BlockingChannel

__all__ = ["REQUESTS_CHANNEL"]

logger = logging.getLogger("argonlink.requests")

#: The name of the channel requests travel on (reserved: ``open_channel`` refuses it).
REQUESTS_CHANNEL: Final = "argonlink.requests"

REQUEST, REPLY, ERROR, CANCEL = 1, 2, 3, 4
_HEADER: Final = struct.Struct(">BQ")
#: What an ERROR's JSON may take at most; longer messages and tracebacks are cut.
MAX_ERROR: Final = 64 * 1024
#: Handlers run at once per connection by default; more requests wait in the channel (its
#: window holds them back at the caller).
DEFAULT_CONCURRENCY: Final = 64

AsyncHandler = Callable[[bytes], Awaitable[bytes] | bytes]
BlockingHandler = Callable[[bytes], bytes]


class ProtocolViolation(ChannelError):
    """The peer broke the request protocol on its channel (the channel is reset)."""


def encode(kind: int, request_id: int, body: bytes | bytearray | memoryview = b"") -> bytes:
    return _HEADER.pack(kind, request_id) + body


def decode(message: bytes) -> tuple[int, int, memoryview]:
    if len(message) < _HEADER.size:
        raise ProtocolViolation(f"a request-channel message of {len(message)} bytes")
    kind, request_id = _HEADER.unpack_from(message)
    return kind, request_id, memoryview(message)[_HEADER.size :]


def error_body(exc: BaseException, *, with_traceback: bool) -> bytes:
    """What an ERROR carries for ``exc``: its type's name and message, and its traceback only
    when the responder asked for that (it may show file paths and data)."""
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    fields: dict[str, str | None] = {"type": name, "message": str(exc), "traceback": None}
    if with_traceback:
        fields["traceback"] = "".join(traceback.format_exception(exc))
    body = json.dumps(fields).encode()
    while len(body) > MAX_ERROR:  # cut the longest field until it fits
        longest = max(("message", "traceback"), key=lambda k: len(fields[k] or ""))
        text = fields[longest] or ""
        fields[longest] = text[: len(text) // 2] + " [cut]"
        body = json.dumps(fields).encode()
    return body


def remote_error(body: memoryview) -> RemoteError:
    if len(body) > MAX_ERROR:
        raise ProtocolViolation(f"an ERROR of {len(body)} bytes (at most {MAX_ERROR})")
    try:
        fields = json.loads(bytes(body))
        name, message = str(fields["type"]), str(fields["message"])
        tb = fields.get("traceback")
    except (ValueError, KeyError, TypeError, RecursionError):
        raise ProtocolViolation("an ERROR that is not the JSON object of §10") from None
    return RemoteError(name, message, tb if isinstance(tb, str) else None)


def answer_of(kind: int, request_id: int, body: memoryview, sent: int) -> bytes | RemoteError:
    """What an answer from the responder means, checked before any request is touched: the
    reply's bytes or the RemoteError; ProtocolViolation for one no honest responder sends."""
    if not 0 < request_id < sent:
        raise ProtocolViolation(f"an answer for request {request_id}, which was never sent")
    if kind == REPLY:
        return bytes(body)
    if kind == ERROR:
        return remote_error(body)
    raise ProtocolViolation(f"kind {kind} from a responder")


def settle(
    reply: asyncio.Future[bytes] | concurrent.futures.Future[bytes], answer: bytes | RemoteError
) -> None:
    """Complete a waiting request with its answer (either driver's future)."""
    if isinstance(answer, RemoteError):
        reply.set_exception(answer)
    else:
        reply.set_result(answer)


def check_concurrency(concurrency: int) -> int:
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ConfigError(f"concurrency must be a positive integer, got {concurrency!r}")
    return concurrency


# ---- the caller, asyncio ----


class AsyncRequester:
    """The caller's end on one connection: one channel, the requests waiting for an answer,
    and the task that reads the answers. Bound: one pending entry per request sent and not
    yet answered or given up."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._next = 1
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        #: CANCELs waiting for room in the channel (one per request given up, at most).
        self._cancels: set[asyncio.Task[None]] = set()

    async def request(self, data: bytes | bytearray | memoryview, timeout: float | None) -> bytes:
        if self._failed is not None:
            raise self._failed
        request_id = self._next
        self._next += 1
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="argonlink-replies")
        try:
            # The timeout bounds the whole request, the wait to send included (a saturated
            # responder holds the channel's window back).
            async with asyncio.timeout(timeout):
                await self._channel.send(encode(REQUEST, request_id, data))
                return await reply
        except TimeoutError as exc:
            self._give_up(request_id)
            if isinstance(exc, Timeout):
                raise
            raise Timeout(f"request timed out after {timeout} s") from None
        except BaseException:
            self._give_up(request_id)
            raise
        finally:
            self._pending.pop(request_id, None)

    def _give_up(self, request_id: int) -> None:
        """Cancelled, timed out, or not sent: the handler's side is told to stop. Still pending
        means no answer came (the reader takes answered ones out); the future itself may be
        cancelled by now, with the waiting task."""
        if self._pending.pop(request_id, None) is None:
            return
        message = encode(CANCEL, request_id)
        try:
            if self._channel._native.try_send(message):
                return
        except (ChannelError, ConnectionClosed):
            return  # the channel is gone: so is the handler's side
        task = asyncio.get_running_loop().create_task(self._send_quietly(message))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def _send_quietly(self, message: bytes) -> None:
        with contextlib.suppress(ChannelError, ConnectionClosed):
            await self._channel.send(message)

    async def _read(self) -> None:
        try:
            async for message in self._channel:
                kind, request_id, body = decode(message)
                answer = answer_of(kind, request_id, body, self._next)
                reply = self._pending.pop(request_id, None)
                if reply is not None and not reply.done():  # else the caller gave up on it
                    settle(reply, answer)
            raise ChannelError("the responder finished the requests channel")
        except ProtocolViolation as exc:
            self._channel.reset()
            self._fail(exc)
        except BaseException as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            exc = ChannelError("the requests channel was closed")
        self._failed = exc
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(exc)
        self._pending.clear()

    @property
    def usable(self) -> bool:
        return self._failed is None


# ---- the responder, asyncio ----


class Request:
    """One request to answer: ``data``, then :meth:`reply` (or :meth:`fail`) once. ``cancelled``
    turns true when the caller gave up; an answer after that is dropped."""

    __slots__ = ("_answered", "_channel", "_on_done", "cancelled", "data", "id")

    def __init__(self, channel: Channel, request_id: int, data: bytes) -> None:
        self._channel = channel
        self.id = request_id
        self.data = data
        self.cancelled = False
        self._answered = False
        #: Called once, when the request is answered or its caller gave up.
        self._on_done: Callable[[], None] | None = None

    async def reply(self, data: bytes | bytearray | memoryview) -> None:
        """Send the reply. Raises MessageTooLarge (nothing sent: answer with :meth:`fail`)
        when it is larger than the caller accepts."""
        await self._answer(encode(REPLY, self.id, data))

    async def fail(self, exc: BaseException, *, with_traceback: bool = False) -> None:
        """Answer with an error: the caller's ``request`` raises RemoteError for it."""
        await self._answer(encode(ERROR, self.id, error_body(exc, with_traceback=with_traceback)))

    async def _answer(self, message: bytes) -> None:
        if self._answered:
            raise RuntimeError(f"request {self.id} was answered already")
        if not self.cancelled:
            await self._channel.send(message)  # marked answered only once it went
        self._answered = True
        self._done()

    def _done(self) -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done()

    def __repr__(self) -> str:
        return f"<Request id={self.id} {len(self.data)} bytes>"


async def read_requests(
    channel: Channel,
    on_request: Callable[[Request], Awaitable[None]],
    on_cancel: Callable[[int], None],
) -> None:
    """Read one request channel until the caller finishes it: each REQUEST goes to
    ``on_request`` (which applies backpressure by not returning, and raises ProtocolViolation
    for an id still outstanding), each CANCEL to ``on_cancel``. A message that breaks the
    protocol resets the channel; a channel that ends (reset, or with its connection) ends the
    reading quietly."""
    try:
        async for message in channel:
            kind, request_id, body = decode(message)
            if kind == REQUEST:
                await on_request(Request(channel, request_id, bytes(body)))
            elif kind == CANCEL:
                on_cancel(request_id)
            else:
                raise ProtocolViolation(f"kind {kind} from a caller")
    except ProtocolViolation as exc:
        logger.warning("requests channel reset: %s", exc, extra={"reason": str(exc)})
        channel.reset()
    except (ChannelError, ConnectionClosed):
        pass


async def _answer(req: Request, handler: AsyncHandler, tracebacks: bool, inline: bool) -> None:
    """Run ``handler`` for ``req`` and answer it; an exception (a reply the caller cannot take
    among them) goes back as an ERROR. Cancelled (the caller gave up): no answer."""
    try:
        result = handler(req.data)
        if inspect.isawaitable(result):
            result = await result
        await req.reply(result)
    except asyncio.CancelledError:
        if inline:
            raise  # not a CANCEL (a request running inline is never cancelled): our own task's
        req.cancelled = True
    except (ChannelError, ConnectionClosed):
        pass
    except Exception as exc:
        with contextlib.suppress(ChannelError, ConnectionClosed, RuntimeError):
            await req.fail(exc, with_traceback=tracebacks)


async def serve_requests(
    accept: Callable[[], Awaitable[Channel]],
    handler: AsyncHandler,
    *,
    concurrency: int,
    tracebacks: bool,
) -> None:
    """Answer every request on every requests channel ``accept`` yields, with ``handler``, at
    most ``concurrency`` at once (per connection); returns when the connection ends."""
    limit = asyncio.Semaphore(check_concurrency(concurrency))
    readers: set[asyncio.Task[None]] = set()
    inline = not inspect.iscoroutinefunction(handler)

    async def serve_channel(channel: Channel) -> None:
        # Bound: the requests running, at most `concurrency`.
        running: dict[int, asyncio.Task[None]] = {}

        def finished(request_id: int) -> Callable[[asyncio.Task[None]], None]:
            # A done-callback, not a `finally` in the task: a task cancelled before it ever
            # ran (a CANCEL right behind its REQUEST) runs no code of its own.
            def done(_: asyncio.Task[None]) -> None:
                running.pop(request_id, None)
                limit.release()

            return done

        async def on_request(req: Request) -> None:
            if req.id in running:
                raise ProtocolViolation(f"request {req.id} sent while still outstanding")
            await limit.acquire()
            if inline:
                # A plain handler runs right here: no task, no extra turn of the event loop
                # (the next request is read once it returned).
                try:
                    await _answer(req, handler, tracebacks, inline=True)
                finally:
                    limit.release()
                return
            task = asyncio.create_task(_answer(req, handler, tracebacks, inline=False))
            running[req.id] = task
            task.add_done_callback(finished(req.id))

        def on_cancel(request_id: int) -> None:
            task = running.get(request_id)
            if task is not None:
                task.cancel()

        try:
            await read_requests(channel, on_request, on_cancel)
            if running:
                await asyncio.gather(*running.values(), return_exceptions=True)
        finally:
            for task in list(running.values()):
                task.cancel()

    try:
        while True:
            try:
                channel = await accept()
            except ConnectionClosed:
                break
            task = asyncio.create_task(serve_channel(channel), name="argonlink-requests")
            readers.add(task)
            task.add_done_callback(readers.discard)
        if readers:
            await asyncio.gather(*readers, return_exceptions=True)
    finally:
        for task in list(readers):
            task.cancel()


async def iterate_requests(
    accept: Callable[[], Awaitable[Channel]], *, concurrency: int
) -> AsyncIterator[Request]:
    """Every request of every requests channel ``accept`` yields, in arrival order per
    channel. At most ``concurrency`` are taken and not yet answered (queued here or handed
    out): more wait in the channel, at the caller. A request the caller cancels is marked
    (``cancelled``), and skipped if not handed out yet."""
    limit = asyncio.Semaphore(check_concurrency(concurrency))
    queue: asyncio.Queue[Request | None] = asyncio.Queue()
    # Bound: the requests taken and not answered, at most `concurrency`.
    outstanding: dict[tuple[int, int], Request] = {}

    async def feed_channel(channel: Channel) -> None:
        async def on_request(req: Request) -> None:
            key = (channel.id, req.id)
            if key in outstanding:
                raise ProtocolViolation(f"request {req.id} sent while still outstanding")
            await limit.acquire()

            def done() -> None:
                outstanding.pop(key, None)
                limit.release()

            req._on_done = done
            outstanding[key] = req
            queue.put_nowait(req)

        def on_cancel(request_id: int) -> None:
            req = outstanding.get((channel.id, request_id))
            if req is not None:
                req.cancelled = True
                req._done()  # its late answer is dropped; its place is free

        await read_requests(channel, on_request, on_cancel)

    async def feed() -> None:
        feeders: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    channel = await accept()
                except ConnectionClosed:
                    break
                task = asyncio.create_task(feed_channel(channel))
                feeders.add(task)
                task.add_done_callback(feeders.discard)
            if feeders:
                await asyncio.gather(*feeders, return_exceptions=True)
        finally:
            for task in list(feeders):
                task.cancel()
            queue.put_nowait(None)

    feeder = asyncio.create_task(feed(), name="argonlink-requests")
    try:
        while True:
            req = await queue.get()
            if req is None:
                return
            if req.cancelled:
                continue
            yield req
    finally:
        feeder.cancel()


# ---- the caller, blocking ----


class BlockingRequester:
    """The caller's end on one connection for threads: any number of threads may call
    :meth:`request` at once; one reader thread matches the answers."""

    def __init__(self, channel: BlockingChannel) -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self._next = 1
        self._pending: dict[int, concurrent.futures.Future[bytes]] = {}
        self._failed: BaseException | None = None
        self._reader: threading.Thread | None = None

    def request(self, data: bytes | bytearray | memoryview, timeout: float | None) -> bytes:
        reply: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._failed is not None:
                raise self._failed
            request_id = self._next
            self._next += 1
            self._pending[request_id] = reply
            if self._reader is None:
                self._reader = threading.Thread(
                    target=self._read, name="argonlink-replies", daemon=True
                )
                self._reader.start()
        try:
            self._channel.send(encode(REQUEST, request_id, data), timeout=timeout)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return reply.result(left)
            except concurrent.futures.TimeoutError:
                raise Timeout(f"request timed out after {timeout} s") from None
        except BaseException:
            with self._lock:
                given_up = self._pending.pop(request_id, None) is not None
            if given_up:
                with contextlib.suppress(ChannelError, ConnectionClosed):
                    self._channel._native.try_send(encode(CANCEL, request_id))
            raise
        finally:
            with self._lock:
                self._pending.pop(request_id, None)

    def _read(self) -> None:
        try:
            for message in self._channel:
                kind, request_id, body = decode(message)
                with self._lock:
                    sent = self._next
                answer = answer_of(kind, request_id, body, sent)
                with self._lock:
                    reply = self._pending.pop(request_id, None)
                if reply is not None:
                    settle(reply, answer)
            raise ChannelError("the responder finished the requests channel")
        except ProtocolViolation as exc:
            self._channel.reset()
            self._fail(exc)
        except BaseException as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self._failed = exc
            pending = list(self._pending.values())
            self._pending.clear()
        for reply in pending:
            if not reply.done():
                reply.set_exception(exc)

    @property
    def usable(self) -> bool:
        return self._failed is None


def serve_requests_blocking(
    accept: Callable[[], BlockingChannel],
    handler: BlockingHandler,
    *,
    concurrency: int,
    tracebacks: bool,
) -> None:
    """The blocking :func:`serve_requests`: ``concurrency`` worker threads per connection;
    returns when the connection ends. A cancelled request whose handler already runs cannot
    be stopped (a thread cannot be interrupted): its answer is dropped."""
    check_concurrency(concurrency)
    pool = concurrent.futures.ThreadPoolExecutor(
        concurrency, thread_name_prefix="argonlink-handler"
    )
    slots = threading.Semaphore(concurrency)
    readers: list[threading.Thread] = []

    def serve_channel(channel: BlockingChannel) -> None:
        # Bounds: both hold only requests that are running (at most `concurrency`).
        running: set[int] = set()
        cancelled: set[int] = set()
        guard = threading.Lock()

        def answer(request_id: int, data: bytes) -> None:
            try:
                try:
                    message = encode(REPLY, request_id, handler(data))
                except Exception as exc:
                    message = encode(ERROR, request_id, error_body(exc, with_traceback=tracebacks))
                with guard:
                    running.discard(request_id)
                    if request_id in cancelled:
                        cancelled.discard(request_id)
                        return
                try:
                    channel.send(message)
                except MessageTooLarge as exc:  # a reply larger than the caller accepts
                    channel.send(encode(ERROR, request_id, error_body(exc, with_traceback=False)))
            except (ChannelError, ConnectionClosed):
                pass
            except Exception:
                logger.exception("answering request %d failed", request_id)
            finally:
                slots.release()

        try:
            for message in channel:
                kind, request_id, body = decode(message)
                if kind == REQUEST:
                    with guard:
                        if request_id in running:
                            raise ProtocolViolation(f"request {request_id} sent twice")
                        running.add(request_id)
                    slots.acquire()
                    pool.submit(answer, request_id, bytes(body))
                elif kind == CANCEL:
                    with guard:
                        if request_id in running:
                            cancelled.add(request_id)
                else:
                    raise ProtocolViolation(f"kind {kind} from a caller")
        except ProtocolViolation as exc:
            logger.warning("requests channel reset: %s", exc, extra={"reason": str(exc)})
            channel.reset()
        except (ChannelError, ConnectionClosed):
            pass

    try:
        while True:
            try:
                channel = accept()
            except ConnectionClosed:
                break
            reader = threading.Thread(target=serve_channel, args=(channel,), daemon=True)
            reader.start()
            # Bound: the channels being read (those whose reader ended are let go).
            readers[:] = [r for r in readers if r.is_alive()]
            readers.append(reader)
        for reader in readers:
            reader.join()
    finally:
        pool.shutdown(wait=True)
