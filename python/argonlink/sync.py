"""The blocking API: the same names and behaviour as the asyncio API, for threads and scripts.

Every wait releases the GIL, honours Ctrl-C, and takes an optional ``timeout`` in seconds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

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
from ._files import BlockingTransfers, FileReceipt
from ._options import BytesLike, KdfParams
from ._requests import (
    DEFAULT_CONCURRENCY,
    REQUESTS_CHANNEL,
    BlockingHandler,
    BlockingRequester,
    serve_requests_blocking,
)
from .exceptions import ChannelError, ChannelFinished, ConnectionClosed, ConnectionClosedOK

__all__ = ["Channel", "Client", "Connection", "FileReceipt", "Handler", "Server"]

logger = logging.getLogger("argonlink")

#: Guards a client's choice of the connection its requests go on.
_requesters_lock = threading.Lock()


def _until_clean_close(recv: Callable[[], bytes]) -> Iterator[bytes]:
    """Messages until the peer closes cleanly; any other end raises."""
    while True:
        try:
            yield recv()
        except ConnectionClosedOK:
            return


class Channel(ChannelInfo):
    """One channel of a connection; see :class:`argonlink.Channel`. ``for msg in channel``
    reads until the peer finishes it; ``with`` closes it (resets it if the block raised)."""

    __slots__ = ()

    def send(self, data: BytesLike, *, timeout: float | None = None) -> None:
        """Queue one message; waits (at most ``timeout`` s) while the send buffer is full."""
        self._native.send_blocking(data, timeout)

    def recv(self, timeout: float | None = None) -> bytes:
        """The next message; see :meth:`argonlink.Channel.recv`."""
        return self._native.recv_blocking(timeout)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                yield self.recv()
            except ChannelFinished:
                return

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything sent on the channel was written to the socket."""
        self._native.flush_blocking(timeout)

    def close(self) -> None:
        """See :meth:`argonlink.Channel.close`."""
        self._native.close_blocking()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if ev is None:
            self.close()
        elif not self.closed:
            self.reset()


class Connection(ConnectionInfo, BlockingTransfers):
    """An authenticated, encrypted connection. ``for msg in conn`` reads until the peer closes
    cleanly; an abnormal end raises :class:`~argonlink.ConnectionClosedError`. Files:
    ``send_file``/``recv_file``, ``send_stream``/``recv_stream``."""

    __slots__ = ()

    def send(self, data: BytesLike, *, timeout: float | None = None) -> None:
        """Queue one message; waits (at most ``timeout`` s) while the send buffer is full."""
        self._native.send_blocking(data, timeout)

    def recv(self, timeout: float | None = None) -> bytes:
        """The next message; see :meth:`argonlink.Connection.recv`."""
        return self._native.recv_blocking(timeout)

    def __iter__(self) -> Iterator[bytes]:
        return _until_clean_close(self.recv)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything sent so far was written to the socket or, on the server's end
        of an exactly-once session, acknowledged by the client's application."""
        self._native.flush_blocking(timeout)

    def _open_reserved(self, name: str, timeout: float | None) -> Channel:
        return Channel(channels_of(self._native).open_channel_blocking(name, timeout))

    def _accept_reserved(self, name: str, timeout: float | None) -> Channel:
        return Channel(channels_of(self._native).accept_channel_blocking(timeout, name))

    def _listen(self, name: str) -> None:
        channels_of(self._native).listen(name)

    def _unlisten(self, name: str) -> None:
        channels_of(self._native).unlisten(name)

    def _lanes(self, timeout: float | None) -> Connection:
        if file_carrier(self._native, incoming=True) is None:
            raise ChannelError("directories need channels, which this connection does not carry")
        return self

    @contextlib.contextmanager
    def _file_stream(self, incoming: bool, timeout: float | None) -> Iterator[Connection | Channel]:
        """Where one file transfer runs; see :meth:`argonlink.Connection._file_stream`."""
        if file_carrier(self._native, incoming) is None:
            yield self
            return
        if incoming:
            channel = self._accept_reserved(FILES_CHANNEL, timeout)
        else:
            channel = self._open_reserved(FILES_CHANNEL, timeout)
        try:
            yield channel
        except BaseException as exc:
            channel._end_transfer(exc)
            raise
        channel._end_transfer(None)

    def open_channel(self, name: str | None = None, *, timeout: float | None = None) -> Channel:
        """Open a channel; see :meth:`argonlink.Connection.open_channel`."""
        native = channels_of(self._native)
        return Channel(native.open_channel_blocking(channel_name(name), timeout))

    def accept_channel(self, timeout: float | None = None) -> Channel:
        """The next channel the peer opened; see :meth:`argonlink.Connection.accept_channel`."""
        return Channel(channels_of(self._native).accept_channel_blocking(timeout))

    def request(self, data: BytesLike, *, timeout: float | None = None) -> bytes:
        """Send a request and return the peer's reply; see
        :meth:`argonlink.Connection.request`. Any number of threads may wait at once."""
        return self._requester(timeout).request(data, timeout)

    def _requester(self, timeout: float | None) -> BlockingRequester:
        current = self._requests
        if isinstance(current, BlockingRequester) and current.usable:
            return current
        # This connection's lock only: another connection's open never waits behind it.
        with self._opening:
            current = self._requests
            if isinstance(current, BlockingRequester) and current.usable:
                return current
            native = channels_of(self._native)
            channel = Channel(native.open_channel_blocking(REQUESTS_CHANNEL, timeout))
            self._requests = requester = BlockingRequester(channel)
            return requester

    def serve_requests(
        self,
        handler: BlockingHandler,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        tracebacks: bool = False,
    ) -> None:
        """Answer the peer's requests with ``handler(data) -> bytes`` in ``concurrency``
        threads until the connection ends; see :meth:`argonlink.Connection.serve_requests`.
        A request the caller gave up on while its handler runs cannot be stopped (threads
        cannot be interrupted): its answer is dropped."""
        native = channels_of(self._native)
        serve_requests_blocking(
            lambda: Channel(native.accept_channel_blocking(None, REQUESTS_CHANNEL)),
            handler,
            concurrency=concurrency,
            tracebacks=tracebacks,
        )

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Flush, send CLOSE, wait for the peer's (at most ``close_timeout``). Idempotent."""
        self._native.close_blocking(code, reason)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


Handler = Callable[[Connection], None]


class Server(ServerBase[Handler]):
    """Accepts authenticated connections; see :class:`argonlink.Server`. With ``handler=``,
    each connection is served in its own thread and closed when the handler returns."""

    def _init_serving(self) -> None:
        self._serving: threading.Thread | None = None
        self._handlers: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def start(self) -> Self:
        """Bind and start accepting (idempotent)."""
        with self._lock:
            if self._native is None:
                self._native = _argonlink.bind_blocking(**self._bind_args())
                if self._handler is not None:
                    self._serving = threading.Thread(
                        target=self._serve, name="argonlink-accept", daemon=True
                    )
                    self._serving.start()
        return self

    def accept(self, timeout: float | None = None) -> Connection:
        """The next authenticated connection. Raises ConnectionClosedOK once the server closed."""
        return Connection(self._started.accept_blocking(timeout))

    def __iter__(self) -> Iterator[Connection]:
        while True:
            try:
                yield self.accept()
            except ConnectionClosed:
                return

    def _serve(self) -> None:
        assert self._handler is not None
        handler = self._handler
        for conn in self:
            thread = threading.Thread(
                target=self._run_handler,
                args=(handler, conn),
                name="argonlink-handler",
                daemon=True,
            )
            with self._lock:
                self._handlers.add(thread)
            thread.start()

    def _run_handler(self, handler: Handler, conn: Connection) -> None:
        try:
            handler(conn)
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("connection handler failed for %s", conn.remote_address)
        finally:
            try:
                conn.close()
            finally:  # even if closing fails, the thread is no longer a running handler
                with self._lock:
                    self._handlers.discard(threading.current_thread())

    def serve_forever(self) -> None:
        """With ``handler=``: serve until the server is closed (from another thread)."""
        self.start()
        if self._serving is None:
            raise RuntimeError("serve_forever() needs a handler= (or use accept())")
        while self._serving.is_alive():
            self._serving.join(0.1)  # short joins keep Ctrl-C responsive

    def set_password(
        self,
        password: str | BytesLike | None = None,
        *,
        password_hash: str | None = None,
        kdf: KdfParams | None = None,
        grace: float = 0.0,
        identity: str | None = None,
    ) -> int:
        """See :meth:`argonlink.Server.set_password`. Returns the new key epoch."""
        args = self._password_args(password, password_hash, kdf, identity)
        return self._started.set_password_blocking(grace=grace, **args)

    def close(self, handler_timeout: float = 5.0) -> None:
        """Stop listening and close every live connection (code 1001), then wait for the
        handlers, at most ``handler_timeout`` seconds (a handler that ignores its closed
        connection is left running as a daemon thread). Idempotent."""
        if self._native is not None:
            self._native.close_blocking()
        me = threading.current_thread()
        if self._serving is not None and self._serving is not me:
            self._serving.join()
        deadline = time.monotonic() + handler_timeout
        with self._lock:
            handlers = [t for t in self._handlers if t is not me]
        for thread in handlers:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Client(ClientBase[Connection], BlockingTransfers):
    """Dials a server: ``with Client(host, port, password=...) as client``; see
    :class:`argonlink.Client` (the same options, ``reconnect=`` included)."""

    _connection_type = Connection
    #: The connection requests go on (kept: its requests channel is opened once).
    _request_conn: Connection | None = None

    def connect(self) -> Connection:
        """Connect (with a policy: keep trying until connected or out of attempts)."""
        self._native = _argonlink.open_link_blocking(**self._open_args())
        return self.connection

    def wait_connected(self, timeout: float | None = None) -> Connection:
        """The current connection, waiting while reconnecting."""
        return Connection(self._link.wait_connected_blocking(timeout))

    def send(self, data: BytesLike, *, timeout: float | None = None) -> None:
        self._link.send_blocking(data, timeout)

    def recv(self, timeout: float | None = None) -> bytes:
        return self._link.recv_blocking(timeout)

    def __iter__(self) -> Iterator[bytes]:
        return _until_clean_close(self.recv)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything sent so far was written to the socket or, with
        ``exactly_once``, acknowledged: received by the server's application. Raises
        :class:`~argonlink.Timeout` after ``timeout`` s (nothing is lost: the messages stay
        queued)."""
        self._link.flush_blocking(timeout)

    def _lanes(self, timeout: float | None) -> Connection:
        if self.exactly_once:
            raise ChannelError(
                "directories need channels: exactly-once sessions do not carry them yet"
            )
        return self.wait_connected(timeout)._lanes(timeout)

    @contextlib.contextmanager
    def _file_stream(
        self, incoming: bool, timeout: float | None
    ) -> Iterator[Client | Channel | Connection]:
        if self.exactly_once:  # the session's default channel (channels are not carried yet)
            yield self
            return
        with self.wait_connected(timeout)._file_stream(incoming, timeout) as stream:
            yield stream

    def open_channel(self, name: str | None = None, *, timeout: float | None = None) -> Channel:
        """Open a channel on the current connection (waiting while reconnecting); it ends
        with that connection."""
        channels_of(self._link)
        return self.wait_connected(timeout).open_channel(name, timeout=timeout)

    def accept_channel(self, timeout: float | None = None) -> Channel:
        """The next channel the server opened on the current connection."""
        channels_of(self._link)
        return self.wait_connected(timeout).accept_channel(timeout)

    def request(self, data: BytesLike, *, timeout: float | None = None) -> bytes:
        """A request on the current connection; see :meth:`argonlink.Client.request`."""
        channels_of(self._link)
        conn = self.wait_connected(timeout)
        with _requesters_lock:
            held = self._request_conn
            if held is None or held.handshake_hash != conn.handshake_hash:
                self._request_conn = held = conn
        return held.request(data, timeout=timeout)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Stop reconnecting and close the current connection. Idempotent."""
        if self._native is not None:
            self._native.close_blocking(code, reason)

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
