"""argonlink: secure server-to-server links.

Two servers that share a password exchange messages over TCP: Argon2id turns the password
into a key once, every connection runs a fresh mutually authenticated Noise handshake
(``Noise_NNpsk0_25519_AESGCM_SHA256``), and messages travel in AES-256-GCM frames.

asyncio::

    async with argonlink.Server("127.0.0.1", 0, password="pw") as server:
        conn = await server.accept()
        msg = await conn.recv(timeout=5)

blocking: the same names under :mod:`argonlink.sync`.
"""

from __future__ import annotations

import atexit

from . import _argonlink, sync
from ._argonlink import __version__
from ._asyncio import Client, Connection, Handler, Server
from ._options import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Credentials,
    KdfParams,
    ReconnectPolicy,
    RekeyPolicy,
    hash_password,
)
from .exceptions import (
    AuthenticationError,
    ConfigError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    Error,
    MessageTooLarge,
    ProtocolError,
    Timeout,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "AuthenticationError",
    "Client",
    "ConfigError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Credentials",
    "Error",
    "Handler",
    "KdfParams",
    "MessageTooLarge",
    "ProtocolError",
    "ReconnectPolicy",
    "RekeyPolicy",
    "Server",
    "Timeout",
    "__version__",
    "hash_password",
    "sync",
]

# Stop the runtime's threads before the interpreter finalizes (see src/python/runtime.rs).
atexit.register(_argonlink.shutdown)
