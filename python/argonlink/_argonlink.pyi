"""Type stubs for the native module (private: use the ``argonlink`` package API)."""

from typing import Any, final

__all__ = [
    "LinkOptions",
    "NativeConnection",
    "NativeCredentials",
    "NativeServer",
    "__version__",
    "bind",
    "bind_blocking",
    "connect",
    "connect_blocking",
    "hash_password",
    "shutdown",
]

__version__: str

def shutdown() -> None: ...
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
        accept_backlog: int | None = None,
        rekey_bytes: int | None = None,
        rekey_frames: int | None = None,
        rekey_interval: float | None = None,
        kdf_floor: tuple[int, int, int] | None = None,
        kdf_cap: tuple[int, int, int] | None = None,
    ) -> LinkOptions: ...
    @property
    def node_id(self) -> bytes: ...
    @property
    def max_message_size(self) -> int: ...

@final
class NativeCredentials:
    def __new__(cls, password: str | bytes | bytearray | memoryview) -> NativeCredentials: ...
    @property
    def key_derivations(self) -> int: ...

@final
class NativeConnection:
    def try_send(self, data: bytes | bytearray | memoryview) -> bool: ...
    async def send(self, data: bytes | bytearray | memoryview) -> None: ...
    def send_blocking(
        self, data: bytes | bytearray | memoryview, timeout: float | None = None
    ) -> None: ...
    def try_recv(self) -> bytes | None: ...
    async def readable(self) -> None: ...
    def recv_blocking(self, timeout: float | None = None) -> bytes: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...
    def close_blocking(self, code: int = 1000, reason: str = "") -> None: ...
    def abort(self) -> None: ...
    @property
    def remote_address(self) -> tuple[str, int]: ...
    @property
    def local_address(self) -> tuple[str, int]: ...
    @property
    def peer_node_id(self) -> str: ...
    @property
    def peer_max_message_size(self) -> int: ...
    @property
    def session_id(self) -> bytes: ...
    @property
    def closed(self) -> bool: ...
    @property
    def close_exception(self) -> Any: ...
    def stats(self) -> dict[str, int]: ...

@final
class NativeServer:
    @property
    def address(self) -> tuple[str, int]: ...
    def try_accept(self) -> NativeConnection | None: ...
    async def acceptable(self) -> None: ...
    def accept_blocking(self, timeout: float | None = None) -> NativeConnection: ...
    async def close(self) -> None: ...
    def close_blocking(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def stats(self) -> dict[str, int]: ...

async def connect(
    host: str, port: int, credentials: NativeCredentials, options: LinkOptions
) -> NativeConnection: ...
def connect_blocking(
    host: str, port: int, credentials: NativeCredentials, options: LinkOptions
) -> NativeConnection: ...
async def bind(
    host: str,
    port: int,
    options: LinkOptions,
    kdf: tuple[int, int, int],
    password: str | bytes | bytearray | memoryview | None = None,
    password_hash: str | None = None,
) -> NativeServer: ...
def bind_blocking(
    host: str,
    port: int,
    options: LinkOptions,
    kdf: tuple[int, int, int],
    password: str | bytes | bytearray | memoryview | None = None,
    password_hash: str | None = None,
) -> NativeServer: ...
