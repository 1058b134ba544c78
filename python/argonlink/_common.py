"""What the asyncio and blocking classes share: read-only connection facts and stats."""

from __future__ import annotations

from typing import Any

from . import _argonlink


class ConnectionInfo:
    """Properties common to ``argonlink.Connection`` and ``argonlink.sync.Connection``."""

    __slots__ = ("_native",)

    def __init__(self, native: _argonlink.NativeConnection) -> None:
        self._native = native

    @property
    def remote_address(self) -> tuple[str, int]:
        return self._native.remote_address

    @property
    def local_address(self) -> tuple[str, int]:
        return self._native.local_address

    @property
    def peer_node_id(self) -> str:
        """The peer's node id, hex."""
        return self._native.peer_node_id

    @property
    def peer_max_message_size(self) -> int:
        """The largest message the peer accepts; ``send`` refuses larger ones locally."""
        return self._native.peer_max_message_size

    @property
    def session_id(self) -> bytes:
        """A unique, public name for this session (the Noise handshake hash)."""
        return self._native.session_id

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

    def abort(self) -> None:
        """End the connection at once, without the closing handshake."""
        self._native.abort()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        host, port = self.remote_address
        return f"<{type(self).__qualname__} {state} remote={host}:{port}>"


def describe_server(cls: type, native: _argonlink.NativeServer | None) -> str:
    if native is None:
        return f"<{cls.__qualname__} not started>"
    host, port = native.address
    state = "closed" if native.closed else "listening"
    return f"<{cls.__qualname__} {state} on {host}:{port}>"
