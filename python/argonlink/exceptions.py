"""The exception tree. Every error argonlink raises derives from :class:`Error`.

::

    Error
    ├── AuthenticationError          wrong password on either side
    ├── ProtocolError                not argonlink, or an unsupported version
    ├── MessageTooLarge              over the receiver's announced limit (nothing was sent)
    ├── ConfigError (ValueError)     a bad setting
    ├── Timeout (TimeoutError)       a named deadline passed
    ├── ConnectionClosed (ConnectionError)
    │   ├── ConnectionClosedOK       both sides closed in order (code 1000 or 1001)
    │   └── ConnectionClosedError    truncation, integrity failure, protocol violation, ...
    ├── ChannelError                 a channel of a connection (not the connection) ended
    │   ├── ChannelFinished          the peer finished the channel and everything was read
    │   ├── ChannelClosed            this side finished the channel: nothing more is sent
    │   └── ChannelReset             the channel was reset (``.code``, ``.by_peer``)
    ├── RemoteError                  a request's handler raised (``.type_name``, ``.message``)
    └── TransferError                a file transfer was refused or failed (``.code``)
        ├── UnsafeName               a file name that could escape or misbehave on disk
        ├── DestinationExists        the file is already there (and overwrite is off)
        ├── VerificationFailed       size or SHA-256 of what arrived is not what was sent
        └── UnexpectedMessage        ``recv_file`` got a message that is no file offer

I/O failures while connecting (refused, unreachable) are the standard ``OSError`` subclasses.
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = [
    "AuthenticationError",
    "ChannelClosed",
    "ChannelError",
    "ChannelFinished",
    "ChannelReset",
    "ConfigError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "DestinationExists",
    "Error",
    "MessageTooLarge",
    "ProtocolError",
    "RemoteError",
    "Timeout",
    "TransferCode",
    "TransferError",
    "UnexpectedMessage",
    "UnsafeName",
    "VerificationFailed",
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


class ChannelError(Error):
    """A channel ended, or cannot take what was asked of it; its connection goes on."""


class ChannelFinished(ChannelError):
    """The peer finished the channel (half-close) and every message it sent was received:
    ``async for`` over a channel ends here."""


class ChannelClosed(ChannelError):
    """This side finished or closed the channel: nothing more may be sent on it."""


class ChannelReset(ChannelError):
    """The channel was reset: by the peer (``by_peer``) or by this side. What was queued or
    unread on it is gone. ``code`` is 0 (cancelled: reset without a code, or its handle was
    dropped) or an application's 1000-65535."""

    code: int
    reason: str
    by_peer: bool

    def __init__(self, code: int, reason: str = "", by_peer: bool = False) -> None:
        super().__init__(code, reason, by_peer)
        self.code = code
        self.reason = reason
        self.by_peer = by_peer

    def __str__(self) -> str:
        who = "the peer" if self.by_peer else "this side"
        text = f"channel reset by {who} (code {self.code})"
        return f"{text}: {self.reason}" if self.reason else text


class RemoteError(Error):
    """The peer's handler of a request raised: ``type_name`` is its exception's type (with its
    module, unless a builtin), ``message`` its text, ``traceback`` the peer's formatted
    traceback when the peer chose to send it (``serve_requests(tracebacks=True)``), else None."""

    type_name: str
    message: str
    traceback: str | None

    def __init__(self, type_name: str, message: str, traceback: str | None = None) -> None:
        super().__init__(type_name, message, traceback)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


class TransferCode(enum.IntEnum):
    """Why a file transfer was refused or given up; sent on the wire in REFUSE and CANCEL."""

    UNSAFE_NAME = 1
    EXISTS = 2
    VERIFICATION_FAILED = 3
    TOO_LARGE = 4
    IO_ERROR = 5
    PROTOCOL = 6
    BUSY = 7
    CANCELLED = 8
    NOT_ACCEPTED = 9


class TransferError(Error):
    """A file transfer was refused or failed. ``code`` is a :class:`TransferCode` (or a plain
    ``int`` for a code this version does not know); ``by_peer`` is True when the other side
    refused or cancelled, False when this side did. Both sides raise it: the one that refuses
    tells the other, which raises the same class."""

    code: int
    reason: str
    by_peer: bool

    def __init__(self, code: int, reason: str, *, by_peer: bool = False) -> None:
        super().__init__(code, reason)
        try:
            self.code = TransferCode(code)
        except ValueError:
            self.code = code
        self.reason = reason
        self.by_peer = by_peer

    def __str__(self) -> str:
        return f"the peer refused the transfer: {self.reason}" if self.by_peer else self.reason

    def __reduce__(self) -> tuple[Any, ...]:
        # The subclasses take other arguments than ``args``: rebuild from the attributes.
        return (_restore, (type(self), self.args), self.__dict__)


def _restore(cls: type[TransferError], args: tuple[Any, ...]) -> TransferError:
    exc = cls.__new__(cls)
    exc.args = args
    return exc


class UnsafeName(TransferError):
    """A file name that is empty, a path, a device name, too long or holds control characters.
    Nothing was written."""

    def __init__(self, reason: str, *, by_peer: bool = False) -> None:
        super().__init__(TransferCode.UNSAFE_NAME, reason, by_peer=by_peer)


class DestinationExists(TransferError):
    """A file of that name is already in the destination directory and ``overwrite`` is off.
    The existing file was left alone."""

    def __init__(self, reason: str, *, by_peer: bool = False) -> None:
        super().__init__(TransferCode.EXISTS, reason, by_peer=by_peer)


class VerificationFailed(TransferError):
    """What arrived does not have the size or SHA-256 that was sent. Nothing was stored under
    the final name, and the partial file was discarded."""

    def __init__(self, reason: str, *, by_peer: bool = False) -> None:
        super().__init__(TransferCode.VERIFICATION_FAILED, reason, by_peer=by_peer)


class IncompleteDirectory(TransferError):
    """A directory transfer ended without some of its files: :attr:`receipt` (a
    :class:`~argonlink.DirReceipt`) lists those delivered, and in ``failed`` each one that was
    not and why. ``code`` is the first failure's. Sending the directory again delivers the rest
    (files already there with the same content are kept, partial ones resume)."""

    receipt: Any

    def __init__(self, code: int, reason: str, receipt: Any, *, by_peer: bool = False) -> None:
        super().__init__(code, reason, by_peer=by_peer)
        self.receipt = receipt


class UnexpectedMessage(TransferError):
    """``recv_file``/``recv_stream`` received a message that is not a file offer. The message
    is in :attr:`message`, so nothing is lost; the connection is still usable."""

    message: bytes

    def __init__(self, message: bytes, reason: str = "expected a file offer") -> None:
        super().__init__(TransferCode.PROTOCOL, reason)
        self.message = message

    def __str__(self) -> str:
        # The content is the application's: its length only, never the bytes.
        return f"{self.reason}, got a message of {len(self.message)} bytes (see .message)"
