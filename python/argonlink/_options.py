"""Settings shared by the asyncio and blocking APIs: key-derivation costs, rekey policy,
node ids, and the translation into the native ``LinkOptions``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from . import _argonlink
from .exceptions import ConfigError

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "BytesLike",
    "Credentials",
    "KdfParams",
    "Password",
    "ReconnectPolicy",
    "RekeyPolicy",
]

#: What ``send`` and passwords accept.
BytesLike: TypeAlias = bytes | bytearray | memoryview

#: The largest message a side accepts unless configured otherwise (16 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024


def _positive_int(value: object, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _positive_number(value: object, name: str, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (value >= 0 if allow_zero else value > 0):  # type: ignore[operator]
        raise ConfigError(
            f"{name} must be a {'non-negative' if allow_zero else 'positive'} "
            f"number of seconds, got {value!r}"
        )


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id costs: memory in KiB (``m_cost``), passes (``t_cost``), lanes (``p_cost``)."""

    m_cost: int
    t_cost: int
    p_cost: int

    #: RFC 9106 §4 second recommendation (64 MiB, 3 passes, 4 lanes); the server default.
    RFC9106: ClassVar[KdfParams]
    #: OWASP's minimum for Argon2id (19 MiB, 2 passes, 1 lane); the client's default floor.
    OWASP: ClassVar[KdfParams]
    #: The most a client spends by default when a server asks (256 MiB, 10 passes, 16 lanes).
    CLIENT_CAP: ClassVar[KdfParams]

    def __post_init__(self) -> None:
        for name in ("m_cost", "t_cost", "p_cost"):
            value = getattr(self, name)
            _positive_int(value, f"KdfParams.{name}")
            if value >= 1 << 32:
                raise ConfigError(f"KdfParams.{name} must be below 2**32, got {value!r}")
        if self.m_cost < 8 * self.p_cost:
            raise ConfigError("KdfParams.m_cost must be at least 8 KiB per lane")

    @classmethod
    def preset(cls, name: str) -> KdfParams:
        """``"rfc9106"`` or ``"owasp"``."""
        presets = {"rfc9106": cls.RFC9106, "owasp": cls.OWASP}
        try:
            return presets[name.lower()]
        except KeyError:
            raise ConfigError(
                f"unknown KDF preset {name!r}; choose one of {sorted(presets)}"
            ) from None

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.m_cost, self.t_cost, self.p_cost)


KdfParams.RFC9106 = KdfParams(64 * 1024, 3, 4)
KdfParams.OWASP = KdfParams(19 * 1024, 2, 1)
KdfParams.CLIENT_CAP = KdfParams(256 * 1024, 10, 16)


@dataclass(frozen=True, slots=True)
class RekeyPolicy:
    """When each direction replaces its key: after ``bytes``, ``frames`` or ``interval`` seconds,
    whichever comes first. A peer past twice these limits is disconnected."""

    bytes: int = 1 << 36
    frames: int = 1 << 24
    interval: float = 3600.0

    def __post_init__(self) -> None:
        _positive_int(self.bytes, "RekeyPolicy.bytes")
        _positive_int(self.frames, "RekeyPolicy.frames")
        _positive_number(self.interval, "RekeyPolicy.interval")


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How a client redials after its connection drops: delays grow from ``initial_delay`` by
    ``multiplier`` up to ``max_delay`` (seconds), each scaled by a random factor in
    ``[1 - jitter, 1 + jitter]``; ``max_attempts`` failed dials in a row end the client (None:
    keep trying). Every reconnect runs the full handshake; a wrong password is never retried."""

    initial_delay: float = 0.1
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        _positive_number(self.initial_delay, "ReconnectPolicy.initial_delay", allow_zero=True)
        _positive_number(self.max_delay, "ReconnectPolicy.max_delay", allow_zero=True)
        if self.initial_delay > self.max_delay:
            raise ConfigError("ReconnectPolicy.initial_delay must not exceed max_delay")
        if not self.multiplier >= 1:
            raise ConfigError("ReconnectPolicy.multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigError("ReconnectPolicy.jitter must be between 0 and 1")
        if self.max_attempts is not None:
            _positive_int(self.max_attempts, "ReconnectPolicy.max_attempts")

    def as_tuple(self) -> tuple[float, float, float, float, int | None]:
        return (self.initial_delay, self.max_delay, self.multiplier, self.jitter, self.max_attempts)


class Credentials:
    """A client-side password and the keys derived from it.

    Share one ``Credentials`` between many clients of the same servers to run Argon2 once per
    server key instead of once per client. The password is copied into memory that is wiped when
    the object is collected; the ``str``/``bytes`` you passed in is Python's and cannot be.
    """

    __slots__ = ("_native",)

    def __init__(self, password: str | BytesLike) -> None:
        self._native = _argonlink.NativeCredentials(password)

    @property
    def key_derivations(self) -> int:
        """How many Argon2 derivations this credential has run."""
        return self._native.key_derivations

    def __repr__(self) -> str:
        return "Credentials(<hidden>)"


Password: TypeAlias = "str | BytesLike | Credentials"


def credentials(password: Password | None) -> _argonlink.NativeCredentials:
    if password is None:
        raise ConfigError("a password is required")
    if isinstance(password, Credentials):
        return password._native
    return _argonlink.NativeCredentials(password)


def node_id_bytes(node_id: bytes | str | None) -> bytes | None:
    """A node id is 16 bytes; a name (``"db-1"``) is hashed into one."""
    if node_id is None:
        return None
    if isinstance(node_id, str):
        return hashlib.sha256(b"argonlink node id\0" + node_id.encode()).digest()[:16]
    if len(node_id) != 16:
        raise ConfigError("node_id must be 16 bytes or a name (str)")
    return bytes(node_id)


def link_options(
    *,
    node_id: bytes | str | None = None,
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
    rekey: RekeyPolicy | None = None,
    kdf_floor: KdfParams | None = None,
    kdf_cap: KdfParams | None = None,
    ping_interval: float | None = None,
    ping_timeout: float | None = None,
    idle_timeout: float | None = None,
    max_connections: int | None = None,
    exactly_once: bool = False,
    max_unacked: int | None = None,
    session_linger: float | None = None,
) -> _argonlink.LinkOptions:
    return _argonlink.LinkOptions(
        node_id=node_id_bytes(node_id),
        max_message_size=max_message_size,
        send_buffer=send_buffer,
        recv_buffer=recv_buffer,
        close_timeout=close_timeout,
        open_timeout=open_timeout,
        handshake_timeout=handshake_timeout,
        max_pending_handshakes=max_pending_handshakes,
        max_pending_per_source=max_pending_per_source,
        max_sessions=max_sessions,
        accept_backlog=accept_backlog,
        rekey_bytes=rekey.bytes if rekey else None,
        rekey_frames=rekey.frames if rekey else None,
        rekey_interval=rekey.interval if rekey else None,
        kdf_floor=kdf_floor.as_tuple() if kdf_floor else None,
        kdf_cap=kdf_cap.as_tuple() if kdf_cap else None,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        idle_timeout=idle_timeout,
        max_connections=max_connections,
        exactly_once=exactly_once,
        max_unacked=max_unacked,
        session_linger=session_linger,
    )


def hash_password(password: str | BytesLike, kdf: KdfParams = KdfParams.RFC9106) -> str:
    """Derive a PHC string (``$argon2id$v=19$...``) for ``Server(password_hash=...)``.

    The result lets a server authenticate clients without holding the plaintext password, but it
    is password-equivalent for this protocol: store it like a password.
    """
    return _argonlink.hash_password(password, *kdf.as_tuple())
