"""The exception tree. Every error argonlink raises derives from :class:`Error`.

::

    Error
    ├── AuthenticationError          wrong password on either side
    ├── ProtocolError                not argonlink, or an unsupported version
    ├── MessageTooLarge              over the receiver's announced limit (nothing was sent)
    ├── ConfigError (ValueError)     a bad setting
    ├── Timeout (TimeoutError)       a named deadline passed
    └── ConnectionClosed (ConnectionError)
        ├── ConnectionClosedOK       both sides closed in order (code 1000 or 1001)
        └── ConnectionClosedError    truncation, integrity failure, protocol violation, ...

I/O failures while connecting (refused, unreachable) are the standard ``OSError`` subclasses.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Error",
    "MessageTooLarge",
    "ProtocolError",
    "Timeout",
]


class Error(Exception):
    """Base class of every argonlink error."""


class AuthenticationError(Error):
    """The handshake failed: one side does not know the shared password."""


class ProtocolError(Error):
    """The peer does not speak this protocol (or this version of it)."""


class MessageTooLarge(Error):
    """A message is larger than the receiver accepts; it was not sent."""


class ConfigError(Error, ValueError):
    """An invalid setting."""


class Timeout(Error, TimeoutError):
    """A deadline passed (``open_timeout``, ``recv(timeout=...)``, ...)."""


class ConnectionClosed(Error, ConnectionError):
    """The connection is closed. ``code`` and ``reason`` say how."""

    code: int
    reason: str

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        kind = "closed cleanly" if isinstance(self, ConnectionClosedOK) else "closed"
        if self.reason:
            return f"connection {kind}: {self.reason} (code {self.code})"
        return f"connection {kind} (code {self.code})"


class ConnectionClosedOK(ConnectionClosed):
    """Both sides exchanged CLOSE frames (normal closure or going away)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection ended abnormally: truncated, tampered with, or closed with an error."""
