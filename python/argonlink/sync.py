"""The blocking API: the same names and behaviour as the asyncio API, for threads and scripts.

Every wait releases the GIL, honours Ctrl-C, and takes an optional ``timeout`` in seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self

from . import _argonlink
from ._common import ConnectionInfo, describe_server
from ._options import BytesLike, KdfParams, Password, RekeyPolicy, credentials, link_options
from .exceptions import ConfigError, ConnectionClosed, ConnectionClosedOK

__all__ = ["Client", "Connection", "Handler", "Server"]

logger = logging.getLogger("argonlink")


class Connection(ConnectionInfo):
    """An authenticated, encrypted connection. ``for msg in conn`` reads until the peer closes
    cleanly; an abnormal end raises :class:`~argonlink.ConnectionClosedError`."""

    __slots__ = ()

    def send(self, data: BytesLike, *, timeout: float | None = None) -> None:
        """Queue one message; waits (at most ``timeout`` s) while the send buffer is full."""
        self._native.send_blocking(data, timeout)

    def recv(self, timeout: float | None = None) -> bytes:
        """The next message; see :meth:`argonlink.Connection.recv`."""
        return self._native.recv_blocking(timeout)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                yield self.recv()
            except ConnectionClosedOK:
                return

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


class Server:
    """Accepts authenticated connections; see :class:`argonlink.Server`. With ``handler=``,
    each connection is served in its own thread and closed when the handler returns."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        password: str | BytesLike | None = None,
        password_hash: str | None = None,
        handler: Handler | None = None,
        kdf: KdfParams = KdfParams.RFC9106,
        node_id: bytes | str | None = None,
        handshake_timeout: float | None = None,
        max_pending_handshakes: int | None = None,
        accept_backlog: int | None = None,
        max_message_size: int | None = None,
        send_buffer: int | None = None,
        recv_buffer: int | None = None,
        close_timeout: float | None = None,
        rekey: RekeyPolicy | None = None,
    ) -> None:
        if (password is None) == (password_hash is None):
            raise ConfigError("give exactly one of password= or password_hash=")
        self._host, self._port = host, port
        self._password, self._password_hash = password, password_hash
        self._kdf = kdf
        self._handler = handler
        self._options = link_options(
            node_id=node_id,
            handshake_timeout=handshake_timeout,
            max_pending_handshakes=max_pending_handshakes,
            accept_backlog=accept_backlog,
            max_message_size=max_message_size,
            send_buffer=send_buffer,
            recv_buffer=recv_buffer,
            close_timeout=close_timeout,
            rekey=rekey,
        )
        self._native: _argonlink.NativeServer | None = None
        self._serving: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> Self:
        """Bind and start accepting (idempotent)."""
        with self._lock:
            if self._native is None:
                self._native = _argonlink.bind_blocking(
                    self._host,
                    self._port,
                    self._options,
                    self._kdf.as_tuple(),
                    password=self._password,
                    password_hash=self._password_hash,
                )
                self._password = None
                if self._handler is not None:
                    self._serving = threading.Thread(
                        target=self._serve, name="argonlink-accept", daemon=True
                    )
                    self._serving.start()
        return self

    @property
    def _started(self) -> _argonlink.NativeServer:
        if self._native is None:
            raise RuntimeError("the server is not started; use 'with' or start()")
        return self._native

    @property
    def address(self) -> tuple[str, int]:
        return self._started.address

    @property
    def node_id(self) -> bytes:
        return self._options.node_id

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
            threading.Thread(
                target=self._run_handler, args=(handler, conn), name="argonlink-handler", daemon=True
            ).start()

    @staticmethod
    def _run_handler(handler: Handler, conn: Connection) -> None:
        try:
            handler(conn)
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("connection handler failed for %s", conn.remote_address)
        finally:
            conn.close()

    def serve_forever(self) -> None:
        """With ``handler=``: serve until the server is closed (from another thread)."""
        self.start()
        if self._serving is None:
            raise RuntimeError("serve_forever() needs a handler= (or use accept())")
        while self._serving.is_alive():
            self._serving.join(0.1)  # short joins keep Ctrl-C responsive

    def close(self) -> None:
        """Stop listening and close every live connection (code 1001). Idempotent."""
        if self._native is not None:
            self._native.close_blocking()
        if self._serving is not None and self._serving is not threading.current_thread():
            self._serving.join()

    def stats(self) -> dict[str, Any]:
        return self._started.stats()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return describe_server(type(self), self._native)


class Client:
    """Dials a server: ``with Client(host, port, password=...) as client``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        password: Password,
        node_id: bytes | str | None = None,
        open_timeout: float | None = None,
        close_timeout: float | None = None,
        max_message_size: int | None = None,
        send_buffer: int | None = None,
        recv_buffer: int | None = None,
        rekey: RekeyPolicy | None = None,
        kdf_floor: KdfParams | None = None,
        kdf_cap: KdfParams | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._credentials = credentials(password)
        self._options = link_options(
            node_id=node_id,
            open_timeout=open_timeout,
            close_timeout=close_timeout,
            max_message_size=max_message_size,
            send_buffer=send_buffer,
            recv_buffer=recv_buffer,
            rekey=rekey,
            kdf_floor=kdf_floor,
            kdf_cap=kdf_cap,
        )
        self._connection: Connection | None = None

    def connect(self) -> Connection:
        """Open a new authenticated connection."""
        native = _argonlink.connect_blocking(
            self._host, self._port, self._credentials, self._options
        )
        self._connection = Connection(native)
        return self._connection

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("not connected; use 'with' or connect()")
        return self._connection

    @property
    def node_id(self) -> bytes:
        return self._options.node_id

    @property
    def key_derivations(self) -> int:
        return self._credentials.key_derivations

    def send(self, data: BytesLike, *, timeout: float | None = None) -> None:
        self.connection.send(data, timeout=timeout)

    def recv(self, timeout: float | None = None) -> bytes:
        return self.connection.recv(timeout)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.connection)

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self._connection is not None:
            self._connection.close(code, reason)

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self._host}:{self._port} {self._connection!r}>"
