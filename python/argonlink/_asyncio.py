"""The asyncio API: ``argonlink.Server``, ``argonlink.Client``, ``argonlink.Connection``.

Fast paths never leave the event loop's thread: ``send`` queues at once when the send buffer
has room and ``recv`` returns at once when a message is waiting. Only real waits go through the
Rust runtime, and a cancelled wait never loses a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

from . import _argonlink
from ._common import (
    FILES_CHANNEL,
    ChannelInfo,
    ClientBase,
    ConnectionInfo,
    ServerBase,
    channel_name,
    channels_of,
    file_carrier,
)
from ._files import AsyncTransfers
from ._options import BytesLike, KdfParams
from ._requests import (
    DEFAULT_CONCURRENCY,
    REQUESTS_CHANNEL,
    AsyncHandler,
    AsyncRequester,
    Request,
    iterate_requests,
    serve_requests,
)
from .exceptions import (
    ChannelError,
    ChannelFinished,
    ConnectionClosed,
    ConnectionClosedOK,
    Timeout,
)

__all__ = ["Channel", "Client", "Connection", "Handler", "Request", "Server"]

logger = logging.getLogger("argonlink")

T = TypeVar("T")


async def _bounded(aw: Awaitable[Any], timeout: float | None, what: str) -> Any:
    if timeout is None:
        return await aw
    try:
        async with asyncio.timeout(timeout):
            return await aw
    except TimeoutError as exc:
        if isinstance(exc, Timeout):
            raise
        raise Timeout(f"{what} timed out after {timeout} s") from None


class _Doorbell:
    """One per event loop: receivers wait on a single watched socket instead of a future per
    wait that a tokio thread completes through the GIL (see ``doorbell.rs``). A waiting receiver
    arms its connection with the bell and a token; the connection's reading task rings it."""

    __slots__ = ("__weakref__", "native", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.native = _argonlink.Doorbell()
        self.waiters: dict[int, asyncio.Future[None]] = {}
        loop.add_reader(self.native.fileno(), self._ring)

    async def wait(self, arm: Callable[[int], bool], disarm: Callable[[int], None]) -> None:
        """Until the bell rings for a new token that ``arm`` registered (unless ``arm`` says
        the wait is over already); a cancelled wait is ``disarm``-ed."""
        token = next(_tokens)
        if arm(token):
            return
        waiter = self.waiters[token] = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            if self.waiters.pop(token, None) is not None:  # not rung: we gave up
                disarm(token)

    def _ring(self) -> None:
        for token in self.native.drain():
            waiter = self.waiters.pop(token, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)


_doorbells: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Doorbell | None] = (
    weakref.WeakKeyDictionary()
)
_tokens = itertools.count(1)


def _doorbell(loop: asyncio.AbstractEventLoop) -> _Doorbell | None:
    try:
        return _doorbells[loop]
    except KeyError:
        pass
    bell: _Doorbell | None
    try:
        bell = _Doorbell(loop)
    except (NotImplementedError, OSError):  # a loop that cannot watch sockets (proactor)
        bell = None
    _doorbells[loop] = bell
    return bell


async def _readable(native: _argonlink.NativeEndpoint) -> None:
    """Until ``native.try_recv`` has something to say. Takes nothing (cancel-safe)."""
    bell = _doorbell(asyncio.get_running_loop())
    if bell is None:
        await native.readable()
        return
    ring = bell.native
    await bell.wait(lambda token: native.arm(ring, token), native.disarm)


async def _acceptable(native: _argonlink.NativeConnection, queue: str = "") -> None:
    """Until ``native.try_accept_channel(queue)`` has something to say. Takes nothing."""
    bell = _doorbell(asyncio.get_running_loop())
    if bell is None:
        await native.acceptable(queue)
        return
    ring = bell.native
    await bell.wait(
        lambda token: native.arm_accept(ring, token, queue),
        lambda token: native.disarm_accept(token, queue),
    )


async def _writable(native: _argonlink.NativeEndpoint, size: int) -> None:
    """Until ``native.try_send`` of ``size`` bytes may succeed (room, a new connection, the
    end). Cancel-safe: queues nothing."""
    bell = _doorbell(asyncio.get_running_loop())
    if bell is None:  # pragma: no cover - callers check first
        raise RuntimeError("no doorbell for this event loop")
    ring = bell.native
    await bell.wait(lambda token: native.arm_writable(ring, token, size), native.disarm_writable)


async def _send_waiting(native: _argonlink.NativeEndpoint, data: BytesLike, session: bool) -> None:
    """Queue ``data`` once the send buffer has room (``try_send`` just said it had none)."""
    if session or _doorbell(asyncio.get_running_loop()) is None:
        # Exactly-once sessions bound what is unacknowledged, not the send buffer.
        await native.send(data)
        return
    if not isinstance(data, bytes):
        data = bytes(data)  # one copy now, not one per try
    while not native.try_send(data):
        await _writable(native, len(data))


async def _wait_for(take: Callable[[], T | None], ready: Callable[[], Awaitable[None]]) -> T:
    while True:
        await ready()  # completes when `take` has something to say; takes nothing itself
        item = take()
        if item is not None:
            return item


async def _next(
    take: Callable[[], T | None],
    ready: Callable[[], Awaitable[None]],
    timeout: float | None,
    what: str,
) -> T:
    """Take the next item: at once if one is queued, else wait (cancel-safe: the wait takes
    nothing, so a cancelled caller loses no item)."""
    item = take()
    if item is not None:
        return item
    result: T = await _bounded(_wait_for(take, ready), timeout, what)
    return result


class Channel(ChannelInfo):
    """One channel of a connection: an ordered stream of messages each way, with its own flow
    control, so a slow reader here never holds up the connection's other channels.
    ``async for msg in channel`` reads until the peer finishes it. ``async with`` closes it
    (resets it if the block raised)."""

    __slots__ = ()

    async def send(self, data: BytesLike, *, timeout: float | None = None) -> None:
        """Queue one message on the channel; waits (at most ``timeout`` s) while its send
        buffer is full. Raises :class:`~argonlink.ChannelClosed` after :meth:`finish`,
        :class:`~argonlink.ChannelReset` after a reset."""
        native = self._native
        if not native.try_send(data):
            await _bounded(_send_waiting(native, data, False), timeout, "send")

    async def recv(self, timeout: float | None = None) -> bytes:
        """The next message. Raises :class:`~argonlink.ChannelFinished` once the peer finished
        the channel and every message was taken; :class:`~argonlink.ChannelReset` after a
        reset; ``ConnectionClosed*`` once the connection ended."""
        native = self._native
        return await _next(native.try_recv, functools.partial(_readable, native), timeout, "recv")

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ChannelFinished:
            raise StopAsyncIteration from None

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything sent on the channel was written to the socket."""
        await _bounded(self._native.flush(), timeout, "flush")

    async def close(self) -> None:
        """Finish the channel, then wait (at most the connection's ``close_timeout``) for the
        peer to finish it too, dropping what it still sends; a peer that does not finish in
        time gets a reset."""
        await self._native.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if ev is None:
            await self.close()
        elif not self.closed:
            self.reset()


class Connection(ConnectionInfo, AsyncTransfers):
    """An authenticated, encrypted connection. ``async for msg in conn`` reads until the peer
    closes cleanly; an abnormal end raises :class:`~argonlink.ConnectionClosedError`. Files:
    ``send_file``/``recv_file``, ``send_stream``/``recv_stream``."""

    __slots__ = ()

    async def send(self, data: BytesLike, *, timeout: float | None = None) -> None:
        """Queue one message. Waits (at most ``timeout`` s) while the send buffer is full.

        Raises :class:`~argonlink.MessageTooLarge` (nothing sent) above the peer's limit and
        :class:`~argonlink.ConnectionClosed` once the connection is closing or closed."""
        native = self._native
        if not native.try_send(data):
            session = isinstance(native, _argonlink.NativeLink)
            await _bounded(_send_waiting(native, data, session), timeout, "send")

    async def recv(self, timeout: float | None = None) -> bytes:
        """The next message. Raises :class:`~argonlink.ConnectionClosedOK` after a clean close
        (once every earlier message was received), :class:`~argonlink.ConnectionClosedError`
        after an abnormal one, :class:`~argonlink.Timeout` when ``timeout`` s pass."""
        native = self._native
        return await _next(native.try_recv, functools.partial(_readable, native), timeout, "recv")

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything sent so far was written to the socket or, on the server's end
        of an exactly-once session, acknowledged by the client's application."""
        await _bounded(self._native.flush(), timeout, "flush")

    async def _open_reserved(self, name: str, timeout: float | None) -> Channel:
        """Open a channel of one of the library's own names (no check of the prefix)."""
        native = channels_of(self._native)
        opened = native.try_open_channel(name)
        if opened is None:
            opened = await _bounded(native.open_channel(name), timeout, "open_channel")
        return Channel(opened)

    async def _accept_reserved(self, name: str, timeout: float | None) -> Channel:
        native = channels_of(self._native)
        take = functools.partial(native.try_accept_channel, name)
        ready = functools.partial(_acceptable, native, name)
        return Channel(await _next(take, ready, timeout, "accept_channel"))

    def _listen(self, name: str) -> None:
        channels_of(self._native).listen(name)

    def _unlisten(self, name: str) -> None:
        channels_of(self._native).unlisten(name)

    async def _lanes(self, timeout: float | None) -> Connection:
        """The connection a directory transfer opens its channels on: this one."""
        if file_carrier(self._native, incoming=True) is None:
            raise ChannelError("directories need channels, which this connection does not carry")
        return self

    @contextlib.asynccontextmanager
    async def _file_stream(
        self, incoming: bool, timeout: float | None
    ) -> AsyncIterator[Connection | Channel]:
        """Where one file transfer runs: a channel of its own (accepted from the peer's file
        channels, or opened), or this connection when it carries no channels for files."""
        if file_carrier(self._native, incoming) is None:
            yield self
            return
        if incoming:
            channel = await self._accept_reserved(FILES_CHANNEL, timeout)
        else:
            channel = await self._open_reserved(FILES_CHANNEL, timeout)
        try:
            yield channel
        except BaseException as exc:
            channel._end_transfer(exc)
            raise
        channel._end_transfer(None)

    async def open_channel(
        self, name: str | None = None, *, timeout: float | None = None
    ) -> Channel:
        """Open a channel (the peer gets it from :meth:`accept_channel`). Waits (at most
        ``timeout`` s) while the peer's limit of open channels is reached."""
        native = channels_of(self._native)
        opened = native.try_open_channel(channel_name(name))
        if opened is None:
            opened = await _bounded(
                native.open_channel(channel_name(name)), timeout, "open_channel"
            )
        return Channel(opened)

    async def accept_channel(self, timeout: float | None = None) -> Channel:
        """The next channel the peer opened. Raises ``ConnectionClosed*`` once the connection
        ended and every channel it opened was taken."""
        native = channels_of(self._native)
        take = native.try_accept_channel
        ready = functools.partial(_acceptable, native)
        return Channel(await _next(take, ready, timeout, "accept_channel"))

    async def request(self, data: BytesLike, *, timeout: float | None = None) -> bytes:
        """Send a request and return the peer's reply (its ``serve_requests`` handler's, or
        what its ``requests()`` loop answered). Many may be outstanding at once. Raises
        :class:`~argonlink.RemoteError` when the peer's handler raised,
        :class:`~argonlink.Timeout` after ``timeout`` s; a timeout or a cancellation cancels
        the handler's side too."""
        return await (await self._requester()).request(data, timeout)

    async def _requester(self) -> AsyncRequester:
        current = self._requests
        if isinstance(current, AsyncRequester) and current.usable:
            return current
        if isinstance(current, asyncio.Future):
            requester: AsyncRequester = await asyncio.shield(current)
            return requester
        opening: asyncio.Future[AsyncRequester] = asyncio.get_running_loop().create_future()
        self._requests = opening
        try:
            native = channels_of(self._native)
            requester = AsyncRequester(Channel(await native.open_channel(REQUESTS_CHANNEL)))
        except BaseException as exc:
            self._requests = None
            opening.set_exception(exc)
            opening.exception()  # retrieved: waiters get it, nobody else needs to
            raise
        self._requests = requester
        opening.set_result(requester)
        return requester

    async def serve_requests(
        self,
        handler: AsyncHandler,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        tracebacks: bool = False,
    ) -> None:
        """Answer the peer's requests with ``handler(data) -> bytes`` until the connection
        ends: a coroutine function runs as a task per request, at most ``concurrency`` at
        once; a plain function (it must not block) runs inline, one request after the other,
        which is faster for quick answers. A handler's exception goes back as
        :class:`~argonlink.RemoteError` (its type and message; its traceback too with
        ``tracebacks=True``); a request the caller gave up on is cancelled."""
        await serve_requests(
            self._accept_requests, handler, concurrency=concurrency, tracebacks=tracebacks
        )

    def requests(self, *, concurrency: int = DEFAULT_CONCURRENCY) -> AsyncIterator[Request]:
        """``async for req in conn.requests(): await req.reply(...)``: the peer's requests as
        they come, until the connection ends; at most ``concurrency`` taken and not yet
        answered (more wait at the caller). ``req.cancelled`` turns true if the caller gives
        up (a late answer is dropped)."""
        return iterate_requests(self._accept_requests, concurrency=concurrency)

    async def _accept_requests(self) -> Channel:
        native = channels_of(self._native)
        take = functools.partial(native.try_accept_channel, REQUESTS_CHANNEL)
        ready = functools.partial(_acceptable, native, REQUESTS_CHANNEL)
        return Channel(await _next(take, ready, None, "accept requests"))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Flush what ``send`` accepted, send CLOSE, wait for the peer's (at most
        ``close_timeout``). Idempotent."""
        await self._native.close(code, reason)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


Handler = Callable[[Connection], Awaitable[None]]


class Server(ServerBase[Handler]):
    """Accepts authenticated connections.

    ``async with Server(host, port, password=...) as server`` binds (port 0: any free port)
    and derives the key once, off the event loop. Take connections with ``await
    server.accept()`` or ``async for conn in server``, or pass ``handler=`` to have each one
    served in its own task (closed when the handler returns).
    """

    def _init_serving(self) -> None:
        self._serving: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> Self:
        """Bind and start accepting (idempotent)."""
        if self._native is None:
            self._native = await _argonlink.bind(**self._bind_args())
            if self._handler is not None:
                self._serving = asyncio.create_task(self._serve())
        return self

    async def accept(self, timeout: float | None = None) -> Connection:
        """The next authenticated connection. Raises ConnectionClosedOK once the server closed."""
        native = self._started
        return Connection(await _next(native.try_accept, native.acceptable, timeout, "accept"))

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Connection:
        try:
            return await self.accept()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def _serve(self) -> None:
        assert self._handler is not None
        async for conn in self:
            task = asyncio.create_task(self._run_handler(self._handler, conn))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    @staticmethod
    async def _run_handler(handler: Handler, conn: Connection) -> None:
        try:
            await handler(conn)
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("connection handler failed for %s", conn.remote_address)
        finally:
            await conn.close()

    async def serve_forever(self) -> None:
        """With ``handler=``: serve until the server is closed."""
        await self.start()
        if self._serving is None:
            raise RuntimeError("serve_forever() needs a handler= (or use accept())")
        await self._serving

    async def set_password(
        self,
        password: str | BytesLike | None = None,
        *,
        password_hash: str | None = None,
        kdf: KdfParams | None = None,
        grace: float = 0.0,
        identity: str | None = None,
    ) -> int:
        """Switch to a new password (or PHC string), derived off the event loop: the shared
        one, or with ``identity=`` that peer's own (from then on it no longer uses the shared
        one; a revoked identity is admitted again). New handshakes use it at once;
        connections authenticated with the key it replaces are closed with code 4002
        (re-authenticate) now, or after ``grace`` seconds during which both are accepted.
        Returns the new key epoch (of that password)."""
        args = self._password_args(password, password_hash, kdf, identity)
        epoch: int = await self._started.set_password(grace=grace, **args)
        return epoch

    async def close(self, handler_timeout: float = 5.0) -> None:
        """Stop listening and close every live connection (code 1001), then wait for the
        handlers, at most ``handler_timeout`` seconds before cancelling the rest. Idempotent."""
        if self._native is not None:
            await self._native.close()
        if self._serving is not None:
            await self._serving
        if self._handlers:
            _, stuck = await asyncio.wait(self._handlers, timeout=handler_timeout)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.gather(*stuck, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class Client(ClientBase[Connection], AsyncTransfers):
    """Dials a server: ``async with Client(host, port, password=...) as client``.

    ``send``/``recv``/``async for`` use the current connection. With ``reconnect=`` (a
    :class:`~argonlink.ReconnectPolicy`, or True for the defaults) a dropped connection is
    re-established with a full handshake: ``send`` waits meanwhile (bounded by its timeout) and
    ``recv`` carries on with the next connection. A wrong password is never retried.

    With ``exactly_once=True`` the client and the server keep one session across connections
    (reconnecting by default; with ``reconnect=False`` it dials once and the session ends with
    that connection): every message whose ``send`` returned is delivered exactly
    once and in order, whatever happens to the connections, while both processes live.
    ``flush()`` waits until the server's application received everything.
    """

    _connection_type = Connection
    #: The connection requests go on (kept: its requests channel is opened once).
    _request_conn: Connection | None = None

    async def connect(self) -> Connection:
        """Connect (with a policy: keep trying until connected or out of attempts). Raises
        AuthenticationError, ProtocolError, Timeout (``open_timeout``) or OSError."""
        self._native = await _argonlink.open_link(**self._open_args())
        return self.connection

    async def wait_connected(self, timeout: float | None = None) -> Connection:
        """The current connection, waiting while reconnecting."""
        native = await _bounded(self._link.wait_connected(), timeout, "wait_connected")
        return Connection(native)

    async def send(self, data: BytesLike, *, timeout: float | None = None) -> None:
        link = self._link
        if not link.try_send(data):
            await _bounded(_send_waiting(link, data, self.exactly_once), timeout, "send")

    async def recv(self, timeout: float | None = None) -> bytes:
        link = self._link
        return await _next(link.try_recv, functools.partial(_readable, link), timeout, "recv")

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything sent so far was written to the socket or, with
        ``exactly_once``, acknowledged: received by the server's application. Raises
        :class:`~argonlink.Timeout` after ``timeout`` s (nothing is lost: the messages stay
        queued)."""
        await _bounded(self._link.flush(), timeout, "flush")

    async def _lanes(self, timeout: float | None) -> Connection:
        if self.exactly_once:
            raise ChannelError(
                "directories need channels: exactly-once sessions do not carry them yet"
            )
        conn = await self.wait_connected(timeout)
        return await conn._lanes(timeout)

    @contextlib.asynccontextmanager
    async def _file_stream(
        self, incoming: bool, timeout: float | None
    ) -> AsyncIterator[Client | Channel | Connection]:
        if self.exactly_once:  # the session's default channel (channels are not carried yet)
            yield self
            return
        conn = await self.wait_connected(timeout)
        async with conn._file_stream(incoming, timeout) as stream:
            yield stream

    async def open_channel(
        self, name: str | None = None, *, timeout: float | None = None
    ) -> Channel:
        """Open a channel on the current connection (waiting while reconnecting); it ends
        with that connection."""
        channels_of(self._link)  # refuses exactly-once sessions before any wait
        conn = await self.wait_connected(timeout)
        return await conn.open_channel(name, timeout=timeout)

    async def accept_channel(self, timeout: float | None = None) -> Channel:
        """The next channel the server opened on the current connection."""
        channels_of(self._link)
        conn = await self.wait_connected(timeout)
        return await conn.accept_channel(timeout)

    async def request(self, data: BytesLike, *, timeout: float | None = None) -> bytes:
        """A request on the current connection (waiting while reconnecting); see
        :meth:`argonlink.Connection.request`. A request in flight when the connection drops
        fails with its error: whether the server ran it is unknown."""
        channels_of(self._link)
        conn = await self.wait_connected(timeout)
        held = self._request_conn
        if held is None or held.handshake_hash != conn.handshake_hash:
            self._request_conn = held = conn
        return await held.request(data, timeout=timeout)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Stop reconnecting and close the current connection. Idempotent."""
        if self._native is not None:
            await self._native.close(code, reason)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
