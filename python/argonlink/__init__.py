"""argonlink: secure server-to-server links.

Two servers that share a password exchange messages over TCP: Argon2id turns the password
into a key once, every connection runs a fresh mutually authenticated handshake (the CPace
PAKE, so a recorded handshake lets no one test password guesses, then Noise
``Noise_NNpsk0_25519_AESGCM_SHA256``), and messages travel in AES-256-GCM frames. A server may
hold one password per client identity (``peers=``) besides, or instead of, a shared one.

asyncio::

    async with argonlink.Server("127.0.0.1", 0, password="pw") as server:
        conn = await server.accept()
        msg = await conn.recv(timeout=5)

blocking: the same names under :mod:`argonlink.sync`.

Files: ``await conn.send_file(path)`` on one side, ``await conn.recv_file(dest_dir)`` on the
other (SHA-256 verified, resumable, never a partial file under the final name).
"""

from __future__ import annotations

import atexit

from . import _argonlink, sync
from ._argonlink import __version__
from ._asyncio import Channel, Client, Connection, Handler, Request, Server
from ._files import DirReceipt, FileReceipt, Progress, check_name, remove_stale_partials
from ._options import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Credentials,
    KdfParams,
    PasswordHash,
    ReconnectPolicy,
    RekeyPolicy,
    ThrottlePolicy,
    hash_password,
)
from .exceptions import (
    AuthenticationError,
    ChannelClosed,
    ChannelError,
    ChannelFinished,
    ChannelReset,
    ConfigError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    DestinationExists,
    Error,
    IncompleteDirectory,
    MessageTooLarge,
    ProtocolError,
    RemoteError,
    Timeout,
    TransferCode,
    TransferError,
    UnexpectedMessage,
    UnsafeName,
    VerificationFailed,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "AuthenticationError",
    "Channel",
    "ChannelClosed",
    "ChannelError",
    "ChannelFinished",
    "ChannelReset",
    "Client",
    "ConfigError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Credentials",
    "DestinationExists",
    "DirReceipt",
    "Error",
    "FileReceipt",
    "Handler",
    "IncompleteDirectory",
    "KdfParams",
    "MessageTooLarge",
    "PasswordHash",
    "Progress",
    "ProtocolError",
    "ReconnectPolicy",
    "RekeyPolicy",
    "RemoteError",
    "Request",
    "Server",
    "ThrottlePolicy",
    "Timeout",
    "TransferCode",
    "TransferError",
    "UnexpectedMessage",
    "UnsafeName",
    "VerificationFailed",
    "__version__",
    "check_name",
    "hash_password",
    "remove_stale_partials",
    "sync",
]

# Stop the runtime's threads before the interpreter finalizes (see src/python/runtime.rs).
atexit.register(_argonlink.shutdown)
