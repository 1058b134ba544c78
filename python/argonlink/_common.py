"""What the asyncio and blocking classes share: read-only connection facts and stats."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Final, Generic, TypeVar

from . import _argonlink
from ._options import (
    SERVER_KDF,
    BytesLike,
    Credentials,
    KdfParams,
    Password,
    Peers,
    ReconnectPolicy,
    RekeyPolicy,
    ThrottlePolicy,
    credentials,
    link_options,
    peer_lookup,
    peer_specs,
)
from .exceptions import (
    ChannelError,
    ChannelFinished,
    ChannelReset,
    ConfigError,
    Error,
    TransferCode,
    TransferError,
)

H = TypeVar("H")
C = TypeVar("C", bound="ConnectionInfo")


class ChannelInfo:
    """Properties common to ``argonlink.Channel`` and ``argonlink.sync.Channel``."""

    __slots__ = ("_native", "_settled")

    def __init__(self, native: _argonlink.NativeChannel) -> None:
        self._native = native
        #: A file transfer on this channel exchanged its last word (DONE, REFUSE or CANCEL).
        self._settled = False

    @property
    def id(self) -> int:
        """The channel's id on its connection (odd: the client opened it; even: the server)."""
        return self._native.id

    @property
    def name(self) -> str:
        """The name its opener gave it (may be empty)."""
        return self._native.name

    @property
    def closed(self) -> bool:
        """True once the channel was reset (by either side) or its connection ended."""
        return self._native.closed

    @property
    def queued(self) -> int:
        """Messages received and not yet taken."""
        return self._native.queued

    def finish(self) -> None:
        """Half-close: no more messages from this side (the peer's ``recv`` raises
        :class:`~argonlink.ChannelFinished` once it took the last); this side still receives."""
        self._native.finish()

    def reset(self, code: int = 0, reason: str = "") -> None:
        """Abandon the channel both ways at once: what is queued or unread is dropped and the
        peer's calls raise :class:`~argonlink.ChannelReset` with ``code`` (0, or 1000-65535)."""
        self._native.reset(code, reason)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} name={self.name!r}>"

    def _end_transfer(self, exc: BaseException | None) -> None:
        """After a file transfer on its own channel: finish the channel when both sides agree
        the exchange is over (DONE, REFUSE or CANCEL was sent or read: a reset would drop it
        unread); reset it otherwise (a timeout, a cancellation, a failure before a word was
        said), so that the peer learns at once. The connection carries on either way."""
        agreed = exc is None or self._settled
        with contextlib.suppress(Error):
            if agreed:
                self._native.finish()
            else:
                self._native.reset(0, "the transfer was abandoned")
        if isinstance(exc, ChannelFinished):
            raise TransferError(
                TransferCode.CANCELLED, "the peer ended the transfer without a word", by_peer=True
            ) from exc
        if isinstance(exc, ChannelReset) and exc.by_peer:
            # The peer gave the transfer up (cancelled, timed out) without a word in the file
            # protocol: to the caller that is the peer cancelling it.
            raise TransferError(
                TransferCode.CANCELLED, f"the peer abandoned the transfer ({exc})", by_peer=True
            ) from exc


#: The channels single files travel on (docs/PROTOCOL.md, "File transfer").
FILES_CHANNEL: Final = "argonlink.file"


def channel_name(name: str | None) -> str:
    name = name or ""
    if len(name.encode()) > 255:
        raise ConfigError("a channel name is at most 255 bytes of UTF-8")
    if name.startswith("argonlink."):
        raise ConfigError(f"channel names starting with 'argonlink.' are reserved: {name!r}")
    return name


def channels_of(
    native: _argonlink.NativeConnection | _argonlink.NativeLink,
) -> _argonlink.NativeConnection:
    """The connection whose channels an endpoint opens and accepts."""
    if isinstance(native, _argonlink.NativeLink):
        if native.exactly_once:
            raise ChannelError(
                "channels are not carried by exactly-once sessions yet: open them on a "
                "connection without exactly_once"
            )
        conn = native.connection
        if conn is None:  # pragma: no cover - links start with a connection
            raise RuntimeError("not connected yet")
        return conn
    return native


def file_carrier(
    native: _argonlink.NativeConnection | _argonlink.NativeLink, incoming: bool
) -> _argonlink.NativeConnection | None:
    """The connection on whose channels a file transfer runs, or None: on the default channel,
    when the connection carries no channels for it (an exactly-once session, or the receiving
    side announced ``max_channels=0``). Both sides come to the same answer."""
    if isinstance(native, _argonlink.NativeLink):  # the server's end of a session
        return None
    limit = native.max_channels if incoming else native.peer_max_channels
    return native if limit > 0 else None


class ConnectionInfo:
    """Properties common to ``argonlink.Connection`` and ``argonlink.sync.Connection``.

    A server hands out either a plain connection or, to a client that asked for
    ``exactly_once``, the server's end of a session that lives across the client's
    connections; both look the same. Address and handshake facts are the current (or last)
    connection's."""

    __slots__ = ("_native", "_opening", "_requests")

    def __init__(self, native: _argonlink.NativeConnection | _argonlink.NativeLink) -> None:
        self._native = native
        #: The caller's end of request/response on this connection, once used.
        self._requests: Any = None
        #: Held while the blocking API opens the requests channel (one opener at a time).
        self._opening = threading.Lock()

    @property
    def _conn(self) -> _argonlink.NativeConnection:
        native = self._native
        if isinstance(native, _argonlink.NativeConnection):
            return native
        conn = native.connection
        if conn is None:  # pragma: no cover - sessions start with a connection
            raise RuntimeError("no connection yet")
        return conn

    @property
    def exactly_once(self) -> bool:
        """True for the server's end of an exactly-once session."""
        return isinstance(self._native, _argonlink.NativeLink)

    @property
    def unacknowledged(self) -> int:
        """Exactly-once sessions: messages sent and not yet acknowledged (0 otherwise)."""
        native = self._native
        return native.unacknowledged if isinstance(native, _argonlink.NativeLink) else 0

    @property
    def remote_address(self) -> tuple[str, int]:
        return self._conn.remote_address

    @property
    def local_address(self) -> tuple[str, int]:
        return self._conn.local_address

    @property
    def peer_node_id(self) -> str:
        """The peer's node id, hex."""
        return self._conn.peer_node_id

    @property
    def peer_identity(self) -> str | None:
        """On a server: the identity the client authenticated as (with a per-peer password the
        handshake proved it; under the shared password it is only what a holder of that
        password claimed). None: anonymous, or this is a client's connection."""
        return self._conn.peer_identity

    @property
    def peer_max_message_size(self) -> int:
        """The largest message the peer accepts; ``send`` refuses larger ones locally."""
        return self._conn.peer_max_message_size

    @property
    def key_epoch(self) -> int:
        """The server key epoch this connection authenticated under."""
        return self._conn.key_epoch

    @property
    def handshake_hash(self) -> bytes:
        """The Noise handshake hash: a public name unique to this connection (channel
        binding). A new connection of the same exactly-once session has a new one."""
        return self._conn.handshake_hash

    @property
    def closed(self) -> bool:
        """True once the connection has ended."""
        return self._native.closed

    @property
    def close_code(self) -> int | None:
        exc = self._native.close_exception
        return None if exc is None else exc.code

    @property
    def close_reason(self) -> str | None:
        exc = self._native.close_exception
        return None if exc is None else exc.reason

    def stats(self) -> dict[str, Any]:
        """Messages and payload bytes in and out, rekeys in each direction."""
        return self._native.stats()

    def _peer_message_limit(self) -> int:
        return self._conn.peer_max_message_size

    def abort(self) -> None:
        """End the connection at once, without the closing handshake."""
        self._native.abort()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        host, port = self.remote_address
        return f"<{type(self).__qualname__} {state} remote={host}:{port}>"


class ServerBase(Generic[H]):
    """Settings and read-only state shared by the asyncio and blocking servers."""

    _native: _argonlink.NativeServer | None = None  # also for repr() of a half-built object

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        password: str | BytesLike | None = None,
        password_hash: str | None = None,
        peers: Peers | None = None,
        handler: H | None = None,
        kdf: KdfParams | None = None,
        node_id: bytes | str | None = None,
        handshake_timeout: float | None = None,
        max_pending_handshakes: int | None = None,
        max_pending_per_source: int | None = None,
        max_sessions: int | None = None,
        accept_backlog: int | None = None,
        max_message_size: int | None = None,
        send_buffer: int | None = None,
        recv_buffer: int | None = None,
        close_timeout: float | None = None,
        rekey: RekeyPolicy | None = None,
        max_connections: int | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        idle_timeout: float | None = None,
        session_linger: float | None = None,
        max_unacked: int | None = None,
        throttle: ThrottlePolicy | bool | None = None,
        max_channels: int | None = None,
        channel_window: int | None = None,
        channel_buffer: int | None = None,
    ) -> None:
        if password is not None and password_hash is not None:
            raise ConfigError("give password= or password_hash=, not both")
        if password is None and password_hash is None and not peers:
            raise ConfigError("give password= (or password_hash=), peers=, or both")
        if not 0 <= port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {port}")
        self._host, self._port = host, port
        self._password, self._password_hash = password, password_hash
        self._peers = peer_specs(peers)
        self._peer_lookup = peer_lookup(peers)
        self._kdf = kdf or SERVER_KDF
        self._handler = handler
        self._options = link_options(
            node_id=node_id,
            handshake_timeout=handshake_timeout,
            max_pending_handshakes=max_pending_handshakes,
            max_pending_per_source=max_pending_per_source,
            max_sessions=max_sessions,
            accept_backlog=accept_backlog,
            max_message_size=max_message_size,
            send_buffer=send_buffer,
            recv_buffer=recv_buffer,
            close_timeout=close_timeout,
            rekey=rekey,
            max_connections=max_connections,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            idle_timeout=idle_timeout,
            session_linger=session_linger,
            max_unacked=max_unacked,
            throttle=throttle,
            max_channels=max_channels,
            channel_window=channel_window,
            channel_buffer=channel_buffer,
        )
        self._native: _argonlink.NativeServer | None = None
        self._init_serving()

    def _init_serving(self) -> None:
        """Set up what the concrete server needs to run a handler."""

    def _bind_args(self) -> dict[str, Any]:
        """Arguments for the native bind; the password (or its password-equivalent hash) is
        dropped from this object."""
        args = {
            "host": self._host,
            "port": self._port,
            "options": self._options,
            "kdf": self._kdf.as_tuple(),
            "password": self._password,
            "password_hash": self._password_hash,
            "peers": self._peers,
            "peer_lookup": self._peer_lookup,
        }
        self._password = self._password_hash = None
        self._peers = []
        return args

    @property
    def _started(self) -> _argonlink.NativeServer:
        if self._native is None:
            raise RuntimeError("the server is not started; use a 'with' block or start()")
        return self._native

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        return self._started.address

    @property
    def node_id(self) -> bytes:
        return self._options.node_id

    @property
    def key_epoch(self) -> int:
        """The key epoch new clients of the shared password authenticate under (1 at start,
        +1 per change; 0 without a shared password)."""
        return self._started.key_epoch

    def key_epoch_of(self, identity: str) -> int:
        """The key epoch new clients of ``identity`` authenticate under (its own password's,
        else the shared one's); 0 when the identity is not accepted."""
        return self._started.key_epoch_of(identity)

    def revoke(self, identity: str) -> int:
        """Refuse ``identity`` from now on (it is treated as unknown) and close its live
        connections and exactly-once sessions at once, with code 4004 (revoked: a reconnecting
        client stops). ``set_password(..., identity=...)`` admits it again. Returns how many
        connections and sessions it ended. Revoking an identity that authenticates with the
        shared password stops that name only: a holder of the shared password can come back
        under another; change the shared password to lock a holder out."""
        return self._started.revoke(identity)

    def _password_args(
        self,
        password: str | BytesLike | None,
        password_hash: str | None,
        kdf: KdfParams | None,
        identity: str | None,
    ) -> dict[str, Any]:
        if (password is None) == (password_hash is None):
            raise ConfigError("give exactly one of password= or password_hash=")
        if password_hash is not None and kdf is not None:
            raise ConfigError("kdf= applies to password=; a password_hash carries its own costs")
        return {
            "kdf": (kdf or self._kdf).as_tuple(),
            "password": password,
            "password_hash": password_hash,
            "identity": identity,
        }

    def stats(self) -> dict[str, Any]:
        """Handshakes (ok, failed, auth failures, evicted), key derivations, password changes,
        the key epoch, live connections."""
        return self._started.stats()

    def __repr__(self) -> str:
        if self._native is None:
            return f"<{type(self).__qualname__} not started>"
        host, port = self._native.address
        state = "closed" if self._native.closed else "listening"
        return f"<{type(self).__qualname__} {state} on {host}:{port}>"


class ClientBase(Generic[C]):
    """Settings and read-only state shared by the asyncio and blocking clients."""

    _connection_type: type[C]
    _native: _argonlink.NativeLink | None = None

    def __init__(
        self,
        host: str,
        port: int,
        *,
        password: Password,
        identity: str | None = None,
        node_id: bytes | str | None = None,
        reconnect: ReconnectPolicy | bool | None = None,
        open_timeout: float | None = None,
        close_timeout: float | None = None,
        max_message_size: int | None = None,
        send_buffer: int | None = None,
        recv_buffer: int | None = None,
        rekey: RekeyPolicy | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        idle_timeout: float | None = None,
        kdf_floor: KdfParams | None = None,
        kdf_cap: KdfParams | None = None,
        exactly_once: bool = False,
        max_unacked: int | None = None,
        max_channels: int | None = None,
        channel_window: int | None = None,
        channel_buffer: int | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._credentials = credentials(password, identity)
        if reconnect is None:
            # A session that cannot reconnect keeps its promise for one connection only, so
            # exactly-once reconnects unless told not to (reconnect=False: one dial, no redial).
            reconnect = exactly_once
        self._reconnect = ReconnectPolicy() if reconnect is True else (reconnect or None)
        self._options = link_options(
            node_id=node_id,
            open_timeout=open_timeout,
            close_timeout=close_timeout,
            max_message_size=max_message_size,
            send_buffer=send_buffer,
            recv_buffer=recv_buffer,
            rekey=rekey,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            idle_timeout=idle_timeout,
            kdf_floor=kdf_floor,
            kdf_cap=kdf_cap,
            exactly_once=exactly_once,
            max_unacked=max_unacked,
            max_channels=max_channels,
            channel_window=channel_window,
            channel_buffer=channel_buffer,
        )
        self._native: _argonlink.NativeLink | None = None

    def _open_args(self) -> dict[str, Any]:
        policy = self._reconnect.as_tuple() if self._reconnect else None
        return {
            "host": self._host,
            "port": self._port,
            "credentials": self._credentials,
            "options": self._options,
            "reconnect": policy,
        }

    @property
    def _link(self) -> _argonlink.NativeLink:
        if self._native is None:
            raise RuntimeError("not connected; use a 'with' block or connect()")
        return self._native

    @property
    def connection(self) -> C:
        """The current connection (while reconnecting or after the end: the last one)."""
        native = self._link.connection
        if native is None:
            raise RuntimeError("not connected yet")
        return self._connection_type(native)

    @property
    def connected(self) -> bool:
        """True while a connection is up."""
        return self._native is not None and self._native.connected

    @property
    def reconnects(self) -> int:
        """Connections re-established after a drop."""
        return 0 if self._native is None else self._native.reconnects

    @property
    def exactly_once(self) -> bool:
        """True when this client runs an exactly-once session."""
        return self._options.exactly_once

    @property
    def unacknowledged(self) -> int:
        """Exactly-once: messages sent and not yet acknowledged by the server's application."""
        return 0 if self._native is None else self._native.unacknowledged

    @property
    def node_id(self) -> bytes:
        return self._options.node_id

    @property
    def key_derivations(self) -> int:
        """Argon2 runs this client performed (one per password and server key in the whole
        process: clients with the same password share the run, counted by the one that ran it)."""
        return self._credentials.key_derivations

    def _peer_message_limit(self) -> int:
        return self.connection.peer_max_message_size

    def stats(self) -> dict[str, Any]:
        """The current connection's counters, plus reconnects and key derivations."""
        out: dict[str, Any] = dict(self._native.stats()) if self._native is not None else {}
        out.update(connected=self.connected, key_derivations=self.key_derivations)
        return out

    @property
    def identity(self) -> str | None:
        """The identity this client names in its handshakes (None: anonymous)."""
        return self._credentials.identity

    def set_password(self, password: Password) -> None:
        """Use this password for the next handshakes (a reconnect after the server's password
        changed), under the same identity (a ``Credentials`` brings its own). The current
        connection is unaffected."""
        identity = None if isinstance(password, Credentials) else self._credentials.identity
        self._credentials = credentials(password, identity)
        if self._native is not None:
            self._native.set_credentials(self._credentials)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<{type(self).__qualname__} {self._host}:{self._port} {state}>"
