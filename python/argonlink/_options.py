"""Settings shared by the asyncio and blocking APIs: key-derivation costs, rekey policy,
node ids, and the translation into the native ``LinkOptions``.

The defaults and the range checks are the native layer's (``_argonlink.defaults()`` and the
``check_*`` functions, the same code a server or client runs): this module only checks that
values have the right Python type before they cross, and gives them a Python shape."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Final, TypeAlias

from . import _argonlink
from .exceptions import ConfigError

__all__ = [
    "DEFAULTS",
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

#: Every library default, from the native layer (where they are defined once).
DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(_argonlink.defaults())

#: The largest message a side accepts unless configured otherwise (16 MiB).
DEFAULT_MAX_MESSAGE_SIZE: Final[int] = DEFAULTS["max_message_size"]

_U32: Final = 2**32 - 1
_U64: Final = 2**64 - 1


def _integer(value: object, name: str, top: int = _U64) -> None:
    """A Python int the native layer can hold (bool is not a number here)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if not 0 <= value <= top:
        bound = "below 2**32" if top == _U32 else "a positive integer"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")


def _seconds(value: object, name: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}")


def _native_check(policy: type[Any], check: Callable[..., None], *args: object) -> None:
    """Run the native check. Its message starts with the field it is about, if one: that
    becomes ``Policy.field ...``, the rest ``Policy: ...``."""
    try:
        check(*args)
    except ConfigError as exc:
        message = native_message(exc)
        joint = "." if message.split(" ", 1)[0] in policy.__slots__ else ": "
        raise ConfigError(f"{policy.__name__}{joint}{message}") from None


def native_message(exc: ConfigError) -> str:
    """A native ConfigError's text without the generic prefix."""
    return str(exc).removeprefix("invalid configuration: ")


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
            _integer(getattr(self, name), f"KdfParams.{name}", _U32)
        _native_check(KdfParams, _argonlink.check_kdf, *self.as_tuple())

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


KdfParams.RFC9106 = KdfParams(*DEFAULTS["kdf_rfc9106"])
KdfParams.OWASP = KdfParams(*DEFAULTS["kdf_owasp"])
KdfParams.CLIENT_CAP = KdfParams(*DEFAULTS["kdf_cap"])
#: What a server derives its key with unless told otherwise.
SERVER_KDF: Final = KdfParams(*DEFAULTS["kdf"])


@dataclass(frozen=True, slots=True)
class RekeyPolicy:
    """When each direction replaces its key: after ``bytes``, ``frames`` or ``interval`` seconds,
    whichever comes first. A peer past twice these limits is disconnected."""

    bytes: int = DEFAULTS["rekey_bytes"]
    frames: int = DEFAULTS["rekey_frames"]
    interval: float = DEFAULTS["rekey_interval"]

    def __post_init__(self) -> None:
        _integer(self.bytes, "RekeyPolicy.bytes")
        _integer(self.frames, "RekeyPolicy.frames")
        _seconds(self.interval, "RekeyPolicy.interval")
        _native_check(RekeyPolicy, _argonlink.check_rekey, self.bytes, self.frames, self.interval)


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How a client redials after its connection drops: delays grow from ``initial_delay`` by
    ``multiplier`` up to ``max_delay`` (seconds), each scaled by a random factor in
    ``[1 - jitter, 1 + jitter]``; ``max_attempts`` failed dials in a row end the client (None:
    keep trying). Every reconnect runs the full handshake; a wrong password is never retried."""

    initial_delay: float = DEFAULTS["reconnect_initial_delay"]
    max_delay: float = DEFAULTS["reconnect_max_delay"]
    multiplier: float = DEFAULTS["reconnect_multiplier"]
    jitter: float = DEFAULTS["reconnect_jitter"]
    max_attempts: int | None = DEFAULTS["reconnect_max_attempts"]

    def __post_init__(self) -> None:
        for name in ("initial_delay", "max_delay", "multiplier", "jitter"):
            _seconds(getattr(self, name), f"ReconnectPolicy.{name}")
        if self.max_attempts is not None:
            _integer(self.max_attempts, "ReconnectPolicy.max_attempts", _U32)
        _native_check(ReconnectPolicy, _argonlink.check_reconnect, self.as_tuple())

    def as_tuple(self) -> tuple[float, float, float, float, int | None]:
        return (self.initial_delay, self.max_delay, self.multiplier, self.jitter, self.max_attempts)


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """How a server slows down online password guessing. Each failed handshake (a wrong
    password, an unknown identity, or bytes that look the same) counts against its source (an
    IPv4 address or IPv6 /64): after ``free_failures`` the source gets one handshake per delay,
    starting at ``initial_delay`` seconds and doubling with each further failure up to
    ``max_delay``; its failures are forgotten ``forget_after`` seconds after the last one.
    Beyond ``global_failures_per_minute`` failures from all sources together, sources without
    a recent success share one schedule at that rate (0: no global limit). A connection whose
    turn would come after the handshake deadline is closed at once. ``Server(throttle=False)``
    turns it off."""

    free_failures: int = DEFAULTS["throttle_free_failures"]
    initial_delay: float = DEFAULTS["throttle_initial_delay"]
    max_delay: float = DEFAULTS["throttle_max_delay"]
    forget_after: float = DEFAULTS["throttle_forget_after"]
    global_failures_per_minute: int = DEFAULTS["throttle_global_failures_per_minute"]

    def __post_init__(self) -> None:
        _integer(self.free_failures, "ThrottlePolicy.free_failures", _U32)
        _integer(self.global_failures_per_minute, "ThrottlePolicy.global_failures_per_minute", _U32)
        for name in ("initial_delay", "max_delay", "forget_after"):
            _seconds(getattr(self, name), f"ThrottlePolicy.{name}")
        _native_check(ThrottlePolicy, _argonlink.check_throttle, self.as_tuple())

    def as_tuple(self) -> tuple[int, float, float, float, int]:
        return (
            self.free_failures,
            self.initial_delay,
            self.max_delay,
            self.forget_after,
            self.global_failures_per_minute,
        )


class Credentials:
    """A client-side identity and password, and the keys derived from the password.

    Share one ``Credentials`` between many clients of the same servers to run Argon2 once per
    server key instead of once per client. The password is copied into memory that is wiped when
    the object is collected; the ``str``/``bytes`` you passed in is Python's and cannot be.
    ``identity`` (printable ASCII, at most 255 characters, no spaces) picks this client's password
    on a server with per-peer passwords; it travels in the clear. None: anonymous.
    """

    __slots__ = ("_native",)

    def __init__(self, password: str | BytesLike, identity: str | None = None) -> None:
        self._native = _argonlink.NativeCredentials(password, identity)

    @property
    def identity(self) -> str | None:
        return self._native.identity

    @property
    def key_derivations(self) -> int:
        """How many Argon2 derivations this credential has run."""
        return self._native.key_derivations

    def __repr__(self) -> str:
        who = "" if self.identity is None else f"identity={self.identity!r}, "
        return f"Credentials({who}<hidden>)"


Password: TypeAlias = "str | BytesLike | Credentials"


def credentials(
    password: Password | None, identity: str | None = None
) -> _argonlink.NativeCredentials:
    if password is None:
        raise ConfigError("a password is required")
    if isinstance(password, Credentials):
        if identity is not None and identity != password.identity:
            raise ConfigError("identity= differs from the identity of the Credentials given")
        return password._native
    return _argonlink.NativeCredentials(password, identity)


class PasswordHash:
    """A PHC string (``$argon2id$...``, from :func:`hash_password`) given where a password could
    be: a peer's entry in ``Server(peers=...)``. It is password-equivalent; ``repr`` hides it."""

    __slots__ = ("phc",)

    def __init__(self, phc: str) -> None:
        if not isinstance(phc, str) or not phc.startswith("$argon2id$"):
            raise ConfigError("a password hash is a PHC string starting with $argon2id$")
        self.phc = phc

    def __repr__(self) -> str:
        return "PasswordHash(<hidden>)"


PeerSecret: TypeAlias = "str | BytesLike | PasswordHash"


#: ``Server(peers=...)``: a mapping, or a function that looks an identity up (None: unknown).
Peers: TypeAlias = "Mapping[str, PeerSecret] | Callable[[str], PeerSecret | None]"


def _split(secret: PeerSecret) -> tuple[str | BytesLike | None, str | None]:
    if isinstance(secret, PasswordHash):
        return (None, secret.phc)
    if isinstance(secret, str | bytes | bytearray | memoryview):
        return (secret, None)
    raise ConfigError("a peer's secret is a password (str or bytes) or a PasswordHash")


def peer_lookup(
    peers: Peers | None,
) -> Callable[[str], tuple[str | BytesLike | None, str | None] | None] | None:
    """``Server(peers=function)`` as the native bind takes it: a function of the identity that
    returns None or (password, password hash)."""
    if peers is None or isinstance(peers, Mapping):
        return None
    if not callable(peers) or inspect.iscoroutinefunction(peers):
        raise ConfigError(
            "peers= maps identities to passwords, or is a plain function of the identity "
            "(it runs on a worker thread, so not async)"
        )
    lookup = peers

    def ask(identity: str) -> tuple[str | BytesLike | None, str | None] | None:
        secret = lookup(identity)
        return None if secret is None else _split(secret)

    return ask


def peer_specs(
    peers: Peers | None,
) -> list[tuple[str, str | BytesLike | None, str | None]]:
    """``Server(peers=mapping)`` as the native bind takes it: (identity, password, hash)."""
    if peers is None or not isinstance(peers, Mapping):
        return []
    out: list[tuple[str, str | BytesLike | None, str | None]] = []
    for identity, secret in peers.items():
        if not isinstance(identity, str) or not identity:
            raise ConfigError("peer identities are non-empty strings")
        out.append((identity, *_split(secret)))
    return out


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
    throttle: ThrottlePolicy | bool | None = None,
    max_channels: int | None = None,
    channel_window: int | None = None,
    channel_buffer: int | None = None,
) -> _argonlink.LinkOptions:
    if throttle is not None and not isinstance(throttle, ThrottlePolicy | bool):
        raise ConfigError("throttle must be a ThrottlePolicy, True (the defaults) or False (off)")
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
        throttle=throttle.as_tuple() if isinstance(throttle, ThrottlePolicy) else None,
        throttle_off=throttle is False,
        max_channels=max_channels,
        channel_window=channel_window,
        channel_buffer=channel_buffer,
    )


def hash_password(password: str | BytesLike, kdf: KdfParams = KdfParams.RFC9106) -> str:
    """Derive a PHC string (``$argon2id$v=19$...``) for ``Server(password_hash=...)``.

    The result lets a server authenticate clients without holding the plaintext password, but it
    is password-equivalent for this protocol: store it like a password.
    """
    return _argonlink.hash_password(password, *kdf.as_tuple())
