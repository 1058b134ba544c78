"""Type stubs for the native module (private: use the ``argonlink`` package API)."""

from collections.abc import Callable
from typing import Any, final

from typing_extensions import disjoint_base

__all__ = [
    "Doorbell",
    "LinkOptions",
    "NativeChannel",
    "NativeConnection",
    "NativeCredentials",
    "NativeLink",
    "NativeServer",
    "__version__",
    "bind",
    "bind_blocking",
    "check_kdf",
    "check_reconnect",
    "check_rekey",
    "check_throttle",
    "defaults",
    "hash_password",
    "open_link",
    "open_link_blocking",
    "shutdown",
]

__version__: str

def shutdown() -> None: ...
def defaults() -> dict[str, Any]: ...
def check_kdf(m_cost: int, t_cost: int, p_cost: int) -> None: ...
def check_rekey(bytes: int, frames: int, interval: float) -> None: ...
def check_reconnect(policy: tuple[float, float, float, float, int | None]) -> None: ...
def check_throttle(policy: tuple[int, float, float, float, int]) -> None: ...
def hash_password(
    password: str | bytes | bytearray | memoryview, m_cost: int, t_cost: int, p_cost: int
) -> str: ...

@final
class LinkOptions:
    def __new__(
        cls,
        *,
        node_id: bytes | None = None,
        max_message_size: int | None = None,
        send_buffer: int | None = None,
        recv_buffer: int | None = None,
        close_timeout: float | None = None,
        open_timeout: float | None = None,
        handshake_timeout: float | None = None,
        max_pending_handshakes: int | None = None,
        max_pending_per_source: int | None = None,
        max_sessions: int | None = None,
        accept_backlog: int | None = None,
        rekey_bytes: int | None = None,
        rekey_frames: int | None = None,
        rekey_interval: float | None = None,
        kdf_floor: tuple[int, int, int] | None = None,
        kdf_cap: tuple[int, int, int] | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        idle_timeout: float | None = None,
        max_connections: int | None = None,
        exactly_once: bool = False,
        max_unacked: int | None = None,
        session_linger: float | None = None,
        throttle: tuple[int, float, float, float, int] | None = None,
        throttle_off: bool = False,
    ) -> LinkOptions: ...
    @property
    def node_id(self) -> bytes: ...
    @property
    def exactly_once(self) -> bool: ...
    @property
    def max_message_size(self) -> int: ...

@final
class Doorbell:
    def __new__(cls) -> Doorbell: ...
    def fileno(self) -> int: ...
    def drain(self) -> list[int]: ...

@final
class NativeCredentials:
    def __new__(
        cls, password: str | bytes | bytearray | memoryview, identity: str | None = None
    ) -> NativeCredentials: ...
    @property
    def identity(self) -> str | None: ...
    @property
    def key_derivations(self) -> int: ...

@disjoint_base
class NativeChannel:
    """What a connection and a link have in common (the base of both)."""

    def try_send(self, data: bytes | bytearray | memoryview) -> bool: ...
    async def send(self, data: bytes | bytearray | memoryview) -> None: ...
    def send_blocking(
        self, data: bytes | bytearray | memoryview, timeout: float | None = None
    ) -> None: ...
    def try_recv(self) -> bytes | None: ...
    async def readable(self) -> None: ...
    def arm(self, bell: Doorbell, token: int) -> bool: ...
    def disarm(self, token: int) -> None: ...
    def arm_writable(self, bell: Doorbell, token: int, size: int) -> bool: ...
    def disarm_writable(self, token: int) -> None: ...
    def recv_blocking(self, timeout: float | None = None) -> bytes: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...
    def close_blocking(self, code: int = 1000, reason: str = "") -> None: ...
    def abort(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def close_exception(self) -> Any: ...
    async def flush(self) -> None: ...
    def flush_blocking(self, timeout: float | None = None) -> None: ...

@final
class NativeConnection(NativeChannel):
    @property
    def remote_address(self) -> tuple[str, int]: ...
    @property
    def local_address(self) -> tuple[str, int]: ...
    @property
    def peer_node_id(self) -> str: ...
    @property
    def peer_identity(self) -> str | None: ...
    @property
    def peer_max_message_size(self) -> int: ...
    @property
    def key_epoch(self) -> int: ...
    @property
    def handshake_hash(self) -> bytes: ...
    def stats(self) -> dict[str, int]: ...

@final
class NativeServer:
    @property
    def address(self) -> tuple[str, int]: ...
    def try_accept(self) -> NativeConnection | NativeLink | None: ...
    async def acceptable(self) -> None: ...
    def accept_blocking(self, timeout: float | None = None) -> NativeConnection | NativeLink: ...
    async def close(self) -> None: ...
    def close_blocking(self) -> None: ...
    async def set_password(
        self,
        kdf: tuple[int, int, int],
        grace: float,
        password: str | bytes | bytearray | memoryview | None = None,
        password_hash: str | None = None,
        identity: str | None = None,
    ) -> int: ...
    def set_password_blocking(
        self,
        kdf: tuple[int, int, int],
        grace: float,
        password: str | bytes | bytearray | memoryview | None = None,
        password_hash: str | None = None,
        identity: str | None = None,
    ) -> int: ...
    def revoke(self, identity: str) -> int: ...
    @property
    def key_epoch(self) -> int: ...
    def key_epoch_of(self, identity: str) -> int: ...
    @property
    def closed(self) -> bool: ...
    def stats(self) -> dict[str, int]: ...

@final
class NativeLink(NativeChannel):
    async def wait_connected(self) -> NativeConnection: ...
    def wait_connected_blocking(self, timeout: float | None = None) -> NativeConnection: ...
    @property
    def connection(self) -> NativeConnection | None: ...
    @property
    def connected(self) -> bool: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def key_derivations(self) -> int: ...
    def set_credentials(self, credentials: NativeCredentials) -> None: ...
    @property
    def exactly_once(self) -> bool: ...
    @property
    def unacknowledged(self) -> int: ...
    def stats(self) -> dict[str, int]: ...

async def open_link(
    host: str,
    port: int,
    credentials: NativeCredentials,
    options: LinkOptions,
    reconnect: tuple[float, float, float, float, int | None] | None = None,
) -> NativeLink: ...
def open_link_blocking(
    host: str,
    port: int,
    credentials: NativeCredentials,
    options: LinkOptions,
    reconnect: tuple[float, float, float, float, int | None] | None = None,
) -> NativeLink: ...
async def bind(
    host: str,
    port: int,
    options: LinkOptions,
    kdf: tuple[int, int, int],
    password: str | bytes | bytearray | memoryview | None = None,
    password_hash: str | None = None,
    peers: list[tuple[str, str | bytes | bytearray | memoryview | None, str | None]] = ...,
    peer_lookup: Callable[
        [str], tuple[str | bytes | bytearray | memoryview | None, str | None] | None
    ]
    | None = None,
) -> NativeServer: ...
def bind_blocking(
    host: str,
    port: int,
    options: LinkOptions,
    kdf: tuple[int, int, int],
    password: str | bytes | bytearray | memoryview | None = None,
    password_hash: str | None = None,
    peers: list[tuple[str, str | bytes | bytearray | memoryview | None, str | None]] = ...,
    peer_lookup: Callable[
        [str], tuple[str | bytes | bytearray | memoryview | None, str | None] | None
    ]
    | None = None,
) -> NativeServer: ...
