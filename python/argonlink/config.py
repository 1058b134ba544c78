"""Typed settings for argonlink servers and clients, from code, a TOML file or the environment.

Design
------
Two frozen dataclasses, :class:`ServerConfig` and :class:`ClientConfig`, each holding exactly
the settings its class accepts, and :class:`Config`, which holds one of each (the ``[server]``
and ``[client]`` tables of a file).

* **Two section types, not one flat one.** The sides share a dozen settings but differ in the
  rest (``kdf``, ``max_connections`` and the handshake limits against ``reconnect``,
  ``open_timeout``, ``kdf_floor`` and ``kdf_cap``) and in how they may hold a password (only a
  server can use a PHC string). With one type, a client setting in a server section would be
  silently ignored; with two it is an "unknown setting" at load and a type error under mypy.
* **One** :class:`Config` **around them.** A node in a server-to-server mesh usually listens
  *and* dials, so one file and one environment describe both sides, and :func:`load` has a
  single return type. ``cfg.server`` and ``cfg.client`` always exist (with defaults); what a side
  *needs* (a password source, the client's host and port) is checked when it is built.
* **Sources, not secrets.** A config names where the password is (an environment variable, a
  file, or for servers a PHC string in either); it is read by :meth:`ServerConfig.kwargs` /
  :meth:`~ServerConfig.build` at that moment, never at load time, so a config can be printed,
  logged and compared. ``repr`` shows the source, never the password.
* **Every value knows where it came from.** ``cfg.server.sources["port"]`` is, say,
  ``"environment variable ARGONLINK_PORT"``; every error starts with that label.

Layers
------
:func:`load` stacks, lowest first: the library defaults < the TOML file < environment variables
< keyword overrides. Inside the environment, ``ARGONLINK_SERVER_*`` / ``ARGONLINK_CLIENT_*``
beat the plain ``ARGONLINK_*`` name, which applies to every side that has the setting (``host``
and ``port`` too: give the sides different values with the prefixed names). Keyword overrides
work the same way: ``port=7000`` for both sides, ``client={"port": 7001}`` for one; an override
that is ``None`` is ignored, so a CLI can pass its parsed options straight through.

* ``rekey`` and ``reconnect`` tables merge field by field across layers; ``reconnect = false``
  turns reconnecting off, ``true`` or any table of fields turns it on (defaults for the rest).
* ``kdf``, ``kdf_floor`` and ``kdf_cap`` are replaced whole: a preset name or all three costs.
* The password source is one setting with four spellings: a layer that names one replaces any
  source from a lower layer; two spellings in the same layer are an error.
* Relative paths in a file are relative to that file's directory; from the environment or a
  keyword, to the working directory at the time the password is read.

Environment variables: ``ARGONLINK_<SETTING>`` in capitals (``ARGONLINK_PORT``,
``ARGONLINK_OPEN_TIMEOUT``, ``ARGONLINK_PASSWORD_FILE``, ``ARGONLINK_KDF=owasp``), table fields
as ``ARGONLINK_<TABLE>_<FIELD>`` (``ARGONLINK_REKEY_INTERVAL``, ``ARGONLINK_RECONNECT_MAX_DELAY``,
``ARGONLINK_KDF_M_COST`` with ``_T_COST`` and ``_P_COST``). Booleans are ``true/false/1/0/yes/no``;
``ARGONLINK_RECONNECT_MAX_ATTEMPTS=none`` means no limit. An unknown ``ARGONLINK_*`` variable is an
error (a typo must not silently fall back to a default), except one that a ``password_env`` /
``password_hash_env`` setting names.

Rules
-----
* ``port`` is 0..65535 (a server's 0: any free port; a client refuses 0 when it is built).
* Timeouts are positive seconds (at most 1e9); ``ping_interval = 0`` turns keepalive off.
* Argon2 costs below the OWASP minimum (``m_cost=19456, t_cost=2, p_cost=1``, compared cost by
  cost, as clients do) are refused unless ``allow_weak_kdf = true``: a server's ``kdf``, the
  costs inside its PHC string (checked when it is read), and a client's ``kdf_floor``.
* ``kdf`` cannot be combined with a PHC string source: the string carries its own costs.
* ``file_mode`` is an integer (``0o640`` in TOML) or a string of octal digits (``"640"``, as
  in ``ARGONLINK_FILE_MODE=640``); 0o600 at least (the owner reads and writes), 0o777 at most.
* A password file must be a regular file that neither group nor others can access (like ssh's
  private keys: ``chmod 600``); one trailing newline is stripped; an empty password is refused.

Example (every setting; all are optional except a password source, and a client's host/port)::

    # node.toml
    [server]
    host = "0.0.0.0"
    port = 7000
    password_file = "/etc/argonlink/password"   # or password_env = "LINK_PASSWORD", or
                                                # password_hash_file / password_hash_env (PHC)
    kdf = "rfc9106"                  # "owasp", or { m_cost = 65536, t_cost = 3, p_cost = 4 }
    allow_weak_kdf = false
    node_id = "db-1"
    max_message_size = 16777216
    send_buffer = 4194304
    recv_buffer = 4194304
    close_timeout = 5.0
    handshake_timeout = 10.0
    max_pending_handshakes = 256
    max_pending_per_source = 128     # per IPv4 address / IPv6 /64; leave out: half the above
    max_sessions = 1024              # exactly-once sessions alive at once
    accept_backlog = 128
    max_connections = 1000
    ping_interval = 15.0             # 0: no keepalive
    ping_timeout = 45.0
    idle_timeout = 600.0
    rekey = { bytes = 68719476736, frames = 16777216, interval = 3600.0 }
    # Receiving files (argonlink serve --dir, recv_file_kwargs()); not passed to the Server.
    max_file_size = 1099511627776    # bytes; leave out: no limit (serve --max-size)
    transfer_timeout = 3600.0        # seconds for one whole transfer (serve --timeout)
    file_mode = 0o600                # received files' permissions (serve --mode)
    allow_hidden_names = false       # names starting with "." (serve --allow-hidden)
    max_partial_files = 32           # partial files of unfinished transfers in the directory
    max_partial_bytes = 68719476736  # ... and the bytes they may hold (64 GiB)
    min_free_space = 268435456       # refuse rather than leave less free (256 MiB)

    [client]
    host = "db-2.internal"
    port = 7000
    password_env = "LINK_PASSWORD"   # or password_file = "password" (next to node.toml)
    allow_weak_kdf = false
    node_id = "db-1"
    open_timeout = 10.0
    close_timeout = 5.0
    max_message_size = 16777216
    send_buffer = 4194304
    recv_buffer = 4194304
    ping_interval = 15.0
    ping_timeout = 45.0
    idle_timeout = 600.0
    kdf_floor = "owasp"
    kdf_cap = { m_cost = 262144, t_cost = 10, p_cost = 16 }
    rekey = { interval = 600.0 }     # the other fields keep their defaults

    [client.reconnect]               # or reconnect = true (all defaults); false: off (default)
    initial_delay = 0.1
    max_delay = 30.0
    multiplier = 2.0
    jitter = 0.2
    max_attempts = 10                # leave out: no limit

Use::

    cfg = argonlink.config.load("node.toml")            # + ARGONLINK_* + overrides
    async with cfg.server.build(handler=serve) as server: ...
    async with cfg.client.build() as client: ...
    with cfg.client.build(sync=True) as client: ...      # argonlink.sync.Client
    argonlink.Server(**cfg.server.kwargs())              # the same, by hand
    conn.recv_file("incoming/", **cfg.server.recv_file_kwargs())  # the file settings
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, Self, TypeAlias, overload

from . import _argonlink
from . import sync as _sync
from ._asyncio import Client as _AsyncClient
from ._asyncio import Handler as _AsyncHandler
from ._asyncio import Server as _AsyncServer
from ._files import check_mode
from ._options import KdfParams, ReconnectPolicy, RekeyPolicy, link_options, native_message
from .exceptions import ConfigError

__all__ = ["ENV_PREFIX", "ClientConfig", "Config", "ServerConfig", "load"]

#: Environment variables starting with this are settings.
ENV_PREFIX: Final = "ARGONLINK_"

PathLike: TypeAlias = "str | os.PathLike[str]"

_MAX_SECONDS: Final = 1e9  # larger values make the native layer panic (Duration overflow)
_U32: Final = 2**32 - 1
_U64: Final = 2**64 - 1
_SECTIONS: Final = ("server", "client")
_SERVER_PASSWORD_KEYS: Final = (
    "password_env",
    "password_file",
    "password_hash_env",
    "password_hash_file",
)
_HASH_KEYS: Final = ("password_hash_env", "password_hash_file")
#: Settings that go to the native LinkOptions (checked there once more, as a backstop).
_LINK_KEYS: Final = (
    "node_id",
    "max_message_size",
    "send_buffer",
    "recv_buffer",
    "close_timeout",
    "open_timeout",
    "handshake_timeout",
    "max_pending_handshakes",
    "max_pending_per_source",
    "max_sessions",
    "accept_backlog",
    "rekey",
    "kdf_floor",
    "kdf_cap",
    "ping_interval",
    "ping_timeout",
    "idle_timeout",
    "max_connections",
    "max_unacked",
    "session_linger",
    "exactly_once",
)
#: A server's settings for receiving files -> the keyword of recv_file they become.
_FILE_KEYS: Final = {
    "max_file_size": "max_size",
    "transfer_timeout": "total_timeout",
    "file_mode": "mode",
    "allow_hidden_names": "allow_hidden",
    "max_partial_files": "max_partials",
    "max_partial_bytes": "max_partial_bytes",
    "min_free_space": "min_free_space",
}
#: Settings that are not passed to Server/Client as they are.
_NOT_PASSED: Final = frozenset(
    {"host", "port", "allow_weak_kdf", *_SERVER_PASSWORD_KEYS, *_FILE_KEYS}
)


# --------------------------------------------------------------------------------------------
# Checking one value: each returns the normalized value or raises _Bad.


class _Bad(Exception):
    """A value is wrong; ``sub`` names the field inside a table setting."""

    def __init__(self, message: str, sub: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.sub = sub


def _show(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _suggest(word: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def _int(value: object, lo: int, hi: int = _U64) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Bad(f"expected an integer, got {_show(value)}")
    if not lo <= value <= hi:
        bound = f"at least {lo}" if hi == _U64 else f"between {lo} and {hi}"
        raise _Bad(f"must be {bound}, got {value}")
    return value


def _number(value: object, what: str = "a number") -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _Bad(f"expected {what}, got {_show(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _Bad(f"must be finite, got {value}")
    return number


def _seconds(value: object, *, zero_ok: bool = False) -> float:
    number = _number(value, "a number of seconds")
    if number < 0 or (number == 0 and not zero_ok) or number > _MAX_SECONDS:
        low = "zero or more" if zero_ok else "more than zero"
        raise _Bad(f"must be {low} seconds (and at most {_MAX_SECONDS:g}), got {value}")
    return number


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected a string, got {_show(value)}")
    if not value:
        raise _Bad("must not be empty")
    return value


def _k_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_show(value)}")
    return value


def _k_port(value: object) -> int:
    return _int(value, 0, 65535)


def _k_env_name(value: object) -> str:
    name = _text(value)
    if "=" in name or "\0" in name:
        raise _Bad(f"not an environment variable name: {name!r}")
    return name


def _k_path(value: object) -> Path:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return Path(_text(value)).expanduser()


def _k_node_id(value: object) -> str | bytes:
    if isinstance(value, bytes | bytearray):
        if len(value) != 16:
            raise _Bad(f"must be 16 bytes or a name (a string), got {len(value)} bytes")
        return bytes(value)
    return _text(value)


def _k_size(value: object) -> int:
    return _int(value, 1)


def _k_timeout(value: object) -> float:
    return _seconds(value)


def _k_interval(value: object) -> float:
    return _seconds(value, zero_ok=True)


def _k_bytes(value: object) -> int:
    return _int(value, 0)


def _k_mode(value: object) -> int:
    if isinstance(value, str):  # "640", "0640", "0o640": octal, as chmod takes it
        digits = value.strip().lower().removeprefix("0o")
        if not digits or any(c not in "01234567" for c in digits):
            raise _Bad(f"expected a permission mode in octal (such as 0o600), got {value!r}")
        value = int(digits, 8)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Bad(f"expected a permission mode (such as 0o600), got {_show(value)}")
    try:
        return check_mode(value)
    except ConfigError as exc:
        raise _Bad(str(exc).removeprefix("mode ")) from None


_KDF_FIELDS: Final = ("m_cost", "t_cost", "p_cost")
_REKEY_FIELDS: Final = tuple(f.name for f in dataclasses.fields(RekeyPolicy))
_RECONNECT_FIELDS: Final = tuple(f.name for f in dataclasses.fields(ReconnectPolicy))


def _k_kdf(value: object) -> KdfParams:
    if isinstance(value, str):
        try:
            params = KdfParams.preset(value)
        except ConfigError as exc:
            raise _Bad(str(exc)) from None
    elif isinstance(value, Mapping):
        unknown = [k for k in value if k not in _KDF_FIELDS]
        if unknown:
            key = str(unknown[0])
            raise _Bad(f"unknown Argon2 cost{_suggest(key, _KDF_FIELDS)}", sub=key)
        missing = [k for k in _KDF_FIELDS if k not in value]
        if missing:
            raise _Bad(f"an explicit table needs all of m_cost, t_cost, p_cost; missing {missing}")
        costs: dict[str, int] = {}
        for name in _KDF_FIELDS:
            try:
                costs[name] = _int(value[name], 1, _U32)
            except _Bad as bad:
                raise _Bad(bad.message, sub=name) from None
        try:  # Argon2's own limits (lanes, memory per lane), as the key derivation checks them
            _argonlink.check_kdf(*costs.values())
        except ConfigError as exc:
            raise _Bad(native_message(exc)) from None
        params = KdfParams(**costs)
    elif isinstance(value, KdfParams):
        params = value
        for name in _KDF_FIELDS:
            try:
                _int(getattr(params, name), 1, _U32)
            except _Bad as bad:
                raise _Bad(bad.message, sub=name) from None
    else:
        raise _Bad(
            "expected a preset name ('rfc9106' or 'owasp') or a table "
            f"{{m_cost, t_cost, p_cost}}, got {_show(value)}"
        )
    return params


def _fields_of(value: object, names: tuple[str, ...], what: str, policy: type) -> dict[str, Any]:
    if isinstance(value, policy):
        return {name: getattr(value, name) for name in names}
    if isinstance(value, Mapping):
        for key in value:
            if key not in names:
                raise _Bad(f"unknown {what} field{_suggest(str(key), names)}", sub=str(key))
        return dict(value)
    raise _Bad(f"expected a table of {what} fields {list(names)}, got {_show(value)}")


def _checked(values: dict[str, Any], checks: Mapping[str, Callable[[object], object]]) -> None:
    for name, check in checks.items():
        if name in values:
            try:
                values[name] = check(values[name])
            except _Bad as bad:
                raise _Bad(bad.message, sub=name) from None


def _k_rekey(value: object) -> RekeyPolicy:
    values = _fields_of(value, _REKEY_FIELDS, "rekey", RekeyPolicy)
    _checked(values, {"bytes": _k_size, "frames": _k_size, "interval": _k_timeout})
    try:
        return RekeyPolicy(**values)
    except ConfigError as exc:
        raise _policy_error(exc, RekeyPolicy) from None


def _max_attempts(value: object) -> int | None:
    return None if value is None else _int(value, 1, _U32)


def _policy_error(exc: ConfigError, policy: type[Any]) -> _Bad:
    """A policy's own check (the native one) failed: point at the field it names, unless the
    message is about several fields."""
    message = str(exc).removeprefix(policy.__name__)
    field, _, rest = message.removeprefix(".").partition(" ")
    fields = policy.__slots__
    if message.startswith(".") and not any(f in rest for f in fields):
        return _Bad(rest, sub=field)
    return _Bad(str(exc))


def _k_reconnect(value: object) -> ReconnectPolicy | None:
    if value is None or value is False:
        return None
    if value is True:
        return ReconnectPolicy()
    if not isinstance(value, ReconnectPolicy | Mapping):
        raise _Bad(
            f"expected true, false or a table of reconnect fields {list(_RECONNECT_FIELDS)}, "
            f"got {_show(value)}"
        )
    values = _fields_of(value, _RECONNECT_FIELDS, "reconnect", ReconnectPolicy)
    _checked(
        values,
        {
            "initial_delay": _k_interval,
            "max_delay": _k_interval,
            "multiplier": _number,
            "jitter": _number,
            "max_attempts": _max_attempts,
        },
    )
    try:
        return ReconnectPolicy(**values)  # the ranges, and what concerns several fields
    except ConfigError as exc:
        raise _policy_error(exc, ReconnectPolicy) from None


@dataclass(frozen=True, slots=True)
class _Spec:
    """How one setting is checked, and how its environment variable is parsed."""

    check: Callable[[object], object]
    env: str  # "str", "int", "float", "bool", or "" (only through its table fields)
    required: bool = False  # None is not allowed (the field has a non-None default)


_COMMON_SPECS: Final[dict[str, _Spec]] = {
    "password_env": _Spec(_k_env_name, "str"),
    "password_file": _Spec(_k_path, "str"),
    "allow_weak_kdf": _Spec(_k_bool, "bool", required=True),
    "node_id": _Spec(_k_node_id, "str"),
    "max_message_size": _Spec(_k_size, "int"),
    "send_buffer": _Spec(_k_size, "int"),
    "recv_buffer": _Spec(_k_size, "int"),
    "close_timeout": _Spec(_k_timeout, "float"),
    "rekey": _Spec(_k_rekey, ""),
    "ping_interval": _Spec(_k_interval, "float"),
    "ping_timeout": _Spec(_k_timeout, "float"),
    "idle_timeout": _Spec(_k_timeout, "float"),
    "max_unacked": _Spec(_k_size, "int"),
}
_SPECS: Final[dict[str, dict[str, _Spec]]] = {
    "server": {
        "host": _Spec(_text, "str", required=True),
        "port": _Spec(_k_port, "int", required=True),
        **_COMMON_SPECS,
        "password_hash_env": _Spec(_k_env_name, "str"),
        "password_hash_file": _Spec(_k_path, "str"),
        "kdf": _Spec(_k_kdf, "str"),
        "handshake_timeout": _Spec(_k_timeout, "float"),
        "max_pending_handshakes": _Spec(_k_size, "int"),
        "max_pending_per_source": _Spec(_k_size, "int"),
        "max_sessions": _Spec(_k_size, "int"),
        "accept_backlog": _Spec(_k_size, "int"),
        "max_connections": _Spec(_k_size, "int"),
        "session_linger": _Spec(_k_timeout, "float"),
        "max_file_size": _Spec(_k_bytes, "int"),
        "transfer_timeout": _Spec(_k_timeout, "float"),
        "file_mode": _Spec(_k_mode, "str"),
        "allow_hidden_names": _Spec(_k_bool, "bool", required=True),
        "max_partial_files": _Spec(_k_size, "int"),
        "max_partial_bytes": _Spec(_k_bytes, "int"),
        "min_free_space": _Spec(_k_bytes, "int"),
    },
    "client": {
        "host": _Spec(_text, "str"),
        "port": _Spec(_k_port, "int"),
        **_COMMON_SPECS,
        "reconnect": _Spec(_k_reconnect, "bool"),
        "exactly_once": _Spec(_k_bool, "bool"),
        "open_timeout": _Spec(_k_timeout, "float"),
        "kdf_floor": _Spec(_k_kdf, "str"),
        "kdf_cap": _Spec(_k_kdf, "str"),
    },
}
#: Table settings and how each field's environment variable is parsed. rekey and reconnect
#: merge field by field across layers; the Argon2 tables are replaced whole.
_TABLES: Final[dict[str, dict[str, str]]] = {
    "rekey": {"bytes": "int", "frames": "int", "interval": "float"},
    "reconnect": {
        "initial_delay": "float",
        "max_delay": "float",
        "multiplier": "float",
        "jitter": "float",
        "max_attempts": "int?",
    },
    "kdf": dict.fromkeys(_KDF_FIELDS, "int"),
    "kdf_floor": dict.fromkeys(_KDF_FIELDS, "int"),
    "kdf_cap": dict.fromkeys(_KDF_FIELDS, "int"),
}
_MERGED_TABLES: Final = ("rekey", "reconnect")
_WHOLE_TABLES: Final = ("kdf", "kdf_floor", "kdf_cap")

_SECRET_HINT: Final = (
    "; a password never goes into a config: name where it is with password_file or "
    "password_env (servers: also password_hash_file or password_hash_env)"
)


def _unknown_hint(key: str, section: str) -> str:
    if key in ("password", "password_hash"):
        return _SECRET_HINT
    other = "client" if section == "server" else "server"
    if key in _SPECS[other]:
        return f"; {key} is a {other} setting, not a {section} one"
    return _suggest(key, _SPECS[section])


# --------------------------------------------------------------------------------------------
# The section dataclasses.


def _label(cfg: ServerConfig | ClientConfig, path: str) -> str:
    """Where ``path`` (a setting, or ``table.field``) came from, for an error message."""
    sources = cfg.sources
    head = path.split(".", 1)[0]
    for key in (path, head):
        if key in sources:
            return sources[key]
    parts = sorted({src for p, src in sources.items() if p.startswith(head + ".")})
    if parts:
        return " and ".join(parts)
    return f"{type(cfg).__name__}({head}=...)"


def _error(cfg: ServerConfig | ClientConfig, path: str, message: str) -> ConfigError:
    return ConfigError(f"{_label(cfg, path)}: {message}")


def _finish(cfg: ServerConfig | ClientConfig, section: str) -> None:
    """Check and normalize every field of a freshly made section (its __post_init__)."""
    object.__setattr__(cfg, "sources", MappingProxyType(dict(cfg.sources)))
    for name, spec in _SPECS[section].items():
        value = getattr(cfg, name)
        if value is None and not spec.required:
            continue
        try:
            value = spec.check(value)
        except _Bad as bad:
            path = f"{name}.{bad.sub}" if bad.sub else name
            message = bad.message
            if bad.sub and path not in cfg.sources:  # the label names the table, not the field
                message = f"{bad.sub}: {message}"
            raise _error(cfg, path, message) from None
        object.__setattr__(cfg, name, value)

    given = [k for k in _SERVER_PASSWORD_KEYS if getattr(cfg, k, None) is not None]
    if len(given) > 1:
        where = " and ".join(_label(cfg, k) for k in given)
        raise ConfigError(f"{where}: give only one password source, got {' and '.join(given)}")

    allow_weak = cfg.allow_weak_kdf
    if isinstance(cfg, ServerConfig):
        if cfg.kdf is not None and given and given[0] in _HASH_KEYS:
            raise _error(
                cfg,
                "kdf",
                f"kdf has no effect with {given[0]} (the PHC string carries its own Argon2 "
                "costs); remove one of them",
            )
        if cfg.kdf is not None and not allow_weak and not _strong(cfg.kdf):
            raise _error(cfg, "kdf", _weak_message(cfg.kdf, "kdf"))
    else:
        floor = cfg.kdf_floor or KdfParams.OWASP
        cap = cfg.kdf_cap or KdfParams.CLIENT_CAP
        if cfg.kdf_floor is not None and not allow_weak and not _strong(floor):
            raise _error(cfg, "kdf_floor", _weak_message(floor, "kdf_floor"))
        if not _at_most(floor, cap):
            where = " and ".join(
                _label(cfg, k) for k in ("kdf_floor", "kdf_cap") if getattr(cfg, k) is not None
            )
            raise ConfigError(
                f"{where}: kdf_floor {_costs(floor)} is above kdf_cap {_costs(cap)} in some "
                "cost; no server could satisfy both"
            )

    link = {k: v for k in _LINK_KEYS if (v := getattr(cfg, k, None)) is not None}
    try:  # the native checks across settings (buffers, ping_interval < ping_timeout, ...)
        link_options(**link)
    except ConfigError as exc:
        message = native_message(exc)
        named = [k for k in link if link[k] is not None and re.search(rf"\b{k}\b", message)]
        where = " and ".join(_label(cfg, k) for k in named) or f"[{section}] settings"
        raise ConfigError(f"{where}: {message}") from None


def _costs(p: KdfParams) -> str:
    return f"(m_cost={p.m_cost}, t_cost={p.t_cost}, p_cost={p.p_cost})"


def _at_most(p: KdfParams, cap: KdfParams) -> bool:
    return p.m_cost <= cap.m_cost and p.t_cost <= cap.t_cost and p.p_cost <= cap.p_cost


def _strong(p: KdfParams) -> bool:
    return _at_most(KdfParams.OWASP, p)


def _weak_message(p: KdfParams, what: str) -> str:
    return (
        f"{what} {_costs(p)} is below the OWASP minimum for Argon2id {_costs(KdfParams.OWASP)}; "
        "set allow_weak_kdf = true to use it anyway"
    )


def _replace(cfg: Any, changes: dict[str, Any]) -> Any:
    cls_name = type(cfg).__name__
    section = "server" if isinstance(cfg, ServerConfig) else "client"
    for key in changes:
        if key not in _SPECS[section]:
            raise ConfigError(
                f"{cls_name}.replace({key}=...): unknown setting{_unknown_hint(key, section)}"
            )
    sources = {p: s for p, s in cfg.sources.items() if p.split(".", 1)[0] not in changes}
    sources.update({k: f"{cls_name}.replace({k}=...)" for k in changes})
    return dataclasses.replace(cfg, sources=sources, **changes)


def _settings(cfg: ServerConfig | ClientConfig) -> dict[str, Any]:
    return {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(cfg)
        if f.name in _SPECS["server"] or f.name in _SPECS["client"]
        if f.name not in _NOT_PASSED and getattr(cfg, f.name) is not None
    }


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything :class:`argonlink.Server` / :class:`argonlink.sync.Server` takes, with the
    password as a *source*. ``None`` means the library default. Invalid values raise
    :class:`~argonlink.ConfigError` on construction, naming where each came from."""

    host: str = "127.0.0.1"
    port: int = 0
    password_env: str | None = None
    password_file: Path | None = None
    password_hash_env: str | None = None
    password_hash_file: Path | None = None
    kdf: KdfParams | None = None  # None: KdfParams.RFC9106
    allow_weak_kdf: bool = False
    node_id: str | bytes | None = None
    max_message_size: int | None = None
    send_buffer: int | None = None
    recv_buffer: int | None = None
    close_timeout: float | None = None
    rekey: RekeyPolicy | None = None
    ping_interval: float | None = None
    ping_timeout: float | None = None
    idle_timeout: float | None = None
    handshake_timeout: float | None = None
    max_pending_handshakes: int | None = None
    max_pending_per_source: int | None = None
    max_sessions: int | None = None
    accept_backlog: int | None = None
    max_connections: int | None = None
    max_unacked: int | None = None
    session_linger: float | None = None
    #: Receiving files: see :meth:`recv_file_kwargs` (None: the library default).
    max_file_size: int | None = None
    transfer_timeout: float | None = None
    file_mode: int | None = None  # None: 0o600
    allow_hidden_names: bool = False
    max_partial_files: int | None = None
    max_partial_bytes: int | None = None
    min_free_space: int | None = None
    #: Where each setting came from (``"port"``, ``"rekey.interval"`` -> a label), for messages.
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        _finish(self, "server")

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, checked again (``dataclasses.replace`` that keeps
        :attr:`sources` right)."""
        result: Self = _replace(self, changes)
        return result

    def kwargs(self, *, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Keyword arguments for ``argonlink.Server`` / ``argonlink.sync.Server``, with
        ``password=`` or ``password_hash=`` read from its source now (``env``: where
        ``password_env`` / ``password_hash_env`` are looked up; default ``os.environ``).
        The result holds the secret: pass it on, do not keep or print it."""
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port}
        kwargs.update(_read_secret(self, os.environ if env is None else env))
        kwargs.update(_settings(self))
        return kwargs

    def recv_file_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``recv_file`` from the file settings (``max_file_size`` ->
        ``max_size``, ``transfer_timeout`` -> ``total_timeout``, ``file_mode`` -> ``mode``,
        ``allow_hidden_names`` -> ``allow_hidden``, ``max_partial_files`` -> ``max_partials``,
        ``max_partial_bytes``, ``min_free_space``); unset ones are left out."""
        return {
            keyword: value
            for key, keyword in _FILE_KEYS.items()
            if (value := getattr(self, key)) is not None
        }

    @overload
    def build(
        self,
        handler: _AsyncHandler | None = None,
        *,
        sync: Literal[False] = False,
        env: Mapping[str, str] | None = None,
    ) -> _AsyncServer: ...
    @overload
    def build(
        self,
        handler: _sync.Handler | None = None,
        *,
        sync: Literal[True],
        env: Mapping[str, str] | None = None,
    ) -> _sync.Server: ...
    @overload
    def build(
        self, handler: Any = None, *, sync: bool, env: Mapping[str, str] | None = None
    ) -> _AsyncServer | _sync.Server: ...
    def build(
        self, handler: Any = None, *, sync: bool = False, env: Mapping[str, str] | None = None
    ) -> _AsyncServer | _sync.Server:
        """A new (not yet started) ``argonlink.Server``, or ``argonlink.sync.Server`` with
        ``sync=True``; the password is read from its source now."""
        if sync:
            return _sync.Server(handler=handler, **self.kwargs(env=env))
        return _AsyncServer(handler=handler, **self.kwargs(env=env))


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything :class:`argonlink.Client` / :class:`argonlink.sync.Client` takes, with the
    password as a *source*. ``host`` and ``port`` may stay unset until the client is built.
    ``reconnect`` is None (off) or a :class:`~argonlink.ReconnectPolicy` (``True`` and tables
    are accepted and normalized)."""

    host: str | None = None
    port: int | None = None
    password_env: str | None = None
    password_file: Path | None = None
    allow_weak_kdf: bool = False
    node_id: str | bytes | None = None
    max_message_size: int | None = None
    send_buffer: int | None = None
    recv_buffer: int | None = None
    close_timeout: float | None = None
    rekey: RekeyPolicy | None = None
    ping_interval: float | None = None
    ping_timeout: float | None = None
    idle_timeout: float | None = None
    reconnect: ReconnectPolicy | None = None
    exactly_once: bool | None = None
    max_unacked: int | None = None
    open_timeout: float | None = None
    kdf_floor: KdfParams | None = None  # None: KdfParams.OWASP
    kdf_cap: KdfParams | None = None  # None: KdfParams.CLIENT_CAP
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        _finish(self, "client")

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, checked again (keeps :attr:`sources` right)."""
        result: Self = _replace(self, changes)
        return result

    def kwargs(self, *, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Keyword arguments for ``argonlink.Client`` / ``argonlink.sync.Client``, with
        ``password=`` read from its source now. Holds the secret: do not keep or print it."""
        if self.port == 0:
            raise _error(self, "port", "a client needs a port between 1 and 65535, got 0")
        for key in ("host", "port"):
            if getattr(self, key) is None:
                raise ConfigError(
                    f"the client needs a {key}: set [client] {key} in the config file, "
                    f"{ENV_PREFIX}CLIENT_{key.upper()} (or {ENV_PREFIX}{key.upper()}), "
                    f"or client={{{key!r}: ...}}"
                )
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port}
        kwargs.update(_read_secret(self, os.environ if env is None else env))
        kwargs.update(_settings(self))
        return kwargs

    @overload
    def build(
        self, *, sync: Literal[False] = False, env: Mapping[str, str] | None = None
    ) -> _AsyncClient: ...
    @overload
    def build(
        self, *, sync: Literal[True], env: Mapping[str, str] | None = None
    ) -> _sync.Client: ...
    @overload
    def build(
        self, *, sync: bool, env: Mapping[str, str] | None = None
    ) -> _AsyncClient | _sync.Client: ...
    def build(
        self, *, sync: bool = False, env: Mapping[str, str] | None = None
    ) -> _AsyncClient | _sync.Client:
        """A new (not yet connected) ``argonlink.Client``, or ``argonlink.sync.Client`` with
        ``sync=True``; the password is read from its source now."""
        if sync:
            return _sync.Client(**self.kwargs(env=env))
        return _AsyncClient(**self.kwargs(env=env))


# --------------------------------------------------------------------------------------------
# Reading the secret (only when building).

_PHC = re.compile(r"\$argon2id\$(?:v=\d+\$)?([^$]+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+")


def _read_secret(cfg: ServerConfig | ClientConfig, env: Mapping[str, str]) -> dict[str, Any]:
    keys = _SERVER_PASSWORD_KEYS if isinstance(cfg, ServerConfig) else _SERVER_PASSWORD_KEYS[:2]
    given = [k for k in keys if getattr(cfg, k, None) is not None]
    if not given:
        side = "server" if isinstance(cfg, ServerConfig) else "client"
        options = ", ".join(keys)
        raise ConfigError(
            f"no password source for the {side}: set one of {options} in [{side}], "
            f"as {ENV_PREFIX}{side.upper()}_<SETTING> / {ENV_PREFIX}<SETTING>, or as a keyword"
        )
    key = given[0]  # exactly one: checked on construction
    label = _label(cfg, key)
    what = "PHC string" if key in _HASH_KEYS else "password"
    if key.endswith("_env"):
        name: str = getattr(cfg, key)
        value = env.get(name)
        if value is None:
            raise ConfigError(f"{label}: the environment variable {name} is not set")
        secret: str | bytes = value
    else:
        secret = _read_secret_file(getattr(cfg, key), label, what)
    if not secret:
        raise ConfigError(f"{label}: the {what} is empty")
    if key not in _HASH_KEYS:
        return {"password": secret}
    phc = _phc_text(secret, label)
    if isinstance(cfg, ServerConfig) and not cfg.allow_weak_kdf:
        costs = _phc_costs(phc, label)
        if not _strong(costs):
            raise ConfigError(f"{label}: {_weak_message(costs, 'the PHC string has costs')}")
    return {"password_hash": phc}


def _read_secret_file(path: Path, label: str, what: str) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ConfigError(f"{label}: cannot open the {what} file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)  # the file we opened, not whatever the path names now
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{label}: the {what} file {path} is not a regular file")
        if os.name == "posix" and st.st_mode & 0o077:
            mode = stat.S_IMODE(st.st_mode)
            raise ConfigError(
                f"{label}: permissions {mode:04o} for the {what} file {path} are too open; it "
                f"must not be accessible by group or others (chmod 600 {path})"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read the {what} file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data.removesuffix(b"\n")


def _phc_text(secret: str | bytes, label: str) -> str:
    bad = ConfigError(f"{label}: does not hold an argon2id PHC string ($argon2id$v=19$m=...)")
    if isinstance(secret, bytes):
        try:
            secret = secret.decode("ascii")
        except UnicodeDecodeError:
            raise bad from None
    phc = secret.strip()
    if not _PHC.fullmatch(phc):
        raise bad
    return phc


def _phc_costs(phc: str, label: str) -> KdfParams:
    match = _PHC.fullmatch(phc)
    assert match is not None
    costs: dict[str, str] = {}
    for part in match.group(1).split(","):
        name, _, value = part.partition("=")
        costs[name] = value
    try:
        return KdfParams(int(costs["m"]), int(costs["t"]), int(costs["p"]))
    except (KeyError, ValueError):
        raise ConfigError(f"{label}: the PHC string lacks valid m=, t=, p= costs") from None


# --------------------------------------------------------------------------------------------
# Layers: section -> {setting or "table.field": (raw value, source label)}.

_Entry: TypeAlias = tuple[object, str]
_Layer: TypeAlias = dict[str, dict[str, _Entry]]


def _empty_layer() -> _Layer:
    return {section: {} for section in _SECTIONS}


def _table_entries(
    section: str,
    table: Mapping[str, object],
    label: Callable[[str], str],
    *,
    base_dir: Path | None = None,
    skip_none: bool = False,
) -> dict[str, _Entry]:
    specs = _SPECS[section]
    out: dict[str, _Entry] = {}
    for key, value in table.items():
        if skip_none and value is None:
            continue
        if key not in specs:
            raise ConfigError(f"{label(key)}: unknown setting{_unknown_hint(key, section)}")
        policy = RekeyPolicy if key == "rekey" else ReconnectPolicy
        if key in _MERGED_TABLES and isinstance(value, (Mapping, policy)):
            names = _TABLES[key]
            if isinstance(value, Mapping):
                for sub, sub_value in value.items():
                    if sub not in names:
                        raise ConfigError(
                            f"{label(f'{key}.{sub}')}: unknown {key} field{_suggest(sub, names)}"
                        )
                    out[f"{key}.{sub}"] = (sub_value, label(f"{key}.{sub}"))
            else:  # a whole policy object: every field, so it replaces lower layers
                for sub in names:
                    out[f"{key}.{sub}"] = (getattr(value, sub), label(key))
            if key == "reconnect":
                out[key] = (True, label(key))
            continue
        if base_dir is not None and specs[key].check is _k_path and isinstance(value, str):
            path = Path(value).expanduser()
            value = str(path if path.is_absolute() else base_dir / path)
        out[key] = (value, label(key))
    return out


def _file_label(file: Path, section: str) -> Callable[[str], str]:
    return lambda key: f"{file}: [{section}] {key}"


def _toml_layer(path: PathLike) -> _Layer:
    file = Path(path)
    try:
        with file.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    layer = _empty_layer()
    base_dir = file.absolute().parent  # relative paths in the file are relative to it
    for top, table in data.items():
        if top not in _SECTIONS:
            if top in _SPECS["server"] or top in _SPECS["client"] or top == "password":
                hint = "; settings go in a [server] or [client] table"
            else:
                hint = _suggest(top, _SECTIONS)
            raise ConfigError(f"{file}: unknown table or key {top!r}{hint}")
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: {top} must be a table ([{top}])")
        layer[top] = _table_entries(top, table, _file_label(file, top), base_dir=base_dir)
    return layer


def _env_names() -> dict[str, tuple[bool, tuple[str, ...], str]]:
    """Every recognized variable -> (role-specific?, sections, setting or "table.field")."""
    names: dict[str, tuple[bool, tuple[str, ...], str]] = {}
    for role in (None, *_SECTIONS):
        sections = _SECTIONS if role is None else (role,)
        prefix = ENV_PREFIX if role is None else f"{ENV_PREFIX}{role.upper()}_"
        paths: dict[str, list[str]] = {}
        for section in sections:
            for key, spec in _SPECS[section].items():
                if spec.env:
                    paths.setdefault(key, []).append(section)
                for sub in _TABLES.get(key, {}):
                    paths.setdefault(f"{key}.{sub}", []).append(section)
        for path, owners in paths.items():
            name = prefix + path.replace(".", "_").upper()
            names[name] = (role is not None, tuple(owners), path)
    return names


_ENV_NAMES: Final = _env_names()
_BOOLS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _env_kind(section: str, path: str) -> str:
    if "." in path:
        table, sub = path.split(".", 1)
        return _TABLES[table][sub]
    return _SPECS[section][path].env


def _parse_env(kind: str, raw: str) -> object:
    text = raw.strip()
    if kind == "str":
        return raw
    if kind == "bool":
        if text.lower() not in _BOOLS:
            raise _Bad(f"expected true/false/1/0/yes/no, got {raw!r}")
        return _BOOLS[text.lower()]
    if kind == "int?" and text.lower() == "none":
        return None
    if kind in ("int", "int?"):
        try:
            return int(text, 10)
        except ValueError:
            raise _Bad(f"expected an integer, got {raw!r}") from None
    try:
        return float(text)
    except ValueError:
        raise _Bad(f"expected a number, got {raw!r}") from None


def _env_layers(env: Mapping[str, str]) -> tuple[list[_Layer], list[str]]:
    """The generic and the role-specific layer, and the unrecognized ARGONLINK_* names."""
    generic, specific = _empty_layer(), _empty_layer()
    unknown: list[str] = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        target = _ENV_NAMES.get(name)
        if target is None:
            unknown.append(name)
            continue
        is_specific, sections, path = target
        for section in sections:
            try:
                value = _parse_env(_env_kind(section, path), env[name])
            except _Bad as bad:
                raise ConfigError(f"environment variable {name}: {bad.message}") from None
            layer = specific if is_specific else generic
            layer[section][path] = (value, f"environment variable {name}")
    for layer in (generic, specific):
        for entries in layer.values():
            _fold_env_tables(entries)
    return [generic, specific], unknown


def _fold_env_tables(entries: dict[str, _Entry]) -> None:
    """Argon2 fields become one whole table; reconnect fields turn reconnecting on."""
    for table in _WHOLE_TABLES:
        subs = {p: e for p, e in entries.items() if p.startswith(table + ".")}
        if not subs:
            continue
        labels = " and ".join(src for _, src in subs.values())
        if table in entries:
            raise ConfigError(f"{entries[table][1]} and {labels}: give a preset or the costs")
        for p in subs:
            del entries[p]
        entries[table] = ({p.split(".", 1)[1]: v for p, (v, _) in subs.items()}, labels)
    if "reconnect" not in entries:
        subs_labels = [src for p, (_, src) in entries.items() if p.startswith("reconnect.")]
        if subs_labels:
            entries["reconnect"] = (True, subs_labels[0])


def _kwargs_layers(overrides: Mapping[str, object]) -> list[_Layer]:
    generic, specific = _empty_layer(), _empty_layer()

    def kw(path: str, section: str | None = None) -> str:
        parts = path.split(".")
        inner = "".join(f"[{p!r}]" for p in parts[1:])
        if section is None:
            return f"keyword argument {parts[0]}{inner}"
        return f"keyword argument {section}[{parts[0]!r}]{inner}"

    for key, value in overrides.items():
        if value is None:
            continue
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"keyword argument {key}: expected a mapping of {key} settings, "
                    f"got {type(value).__name__}"
                )
            specific[key] = _table_entries(
                key, value, functools.partial(kw, section=key), skip_none=True
            )
            continue
        owners = [s for s in _SECTIONS if key in _SPECS[s]]
        if not owners:
            hint = (
                _SECRET_HINT
                if key in ("password", "password_hash")
                else _suggest(key, [*_SPECS["server"], *_SPECS["client"], *_SECTIONS])
            )
            raise ConfigError(f"keyword argument {key}: unknown setting{hint}")
        for section in owners:
            generic[section].update(_table_entries(section, {key: value}, kw))
    return [generic, specific]


def _merge(layers: Iterable[_Layer]) -> _Layer:
    merged = _empty_layer()
    for layer in layers:
        for section, entries in layer.items():
            acc = merged[section]
            if any(k in entries for k in _SERVER_PASSWORD_KEYS):
                for k in _SERVER_PASSWORD_KEYS:  # a new source replaces a lower layer's
                    acc.pop(k, None)
            acc.update(entries)
    return merged


def _section(section: str, entries: dict[str, _Entry]) -> Any:
    values: dict[str, Any] = {}
    for key in _SPECS[section]:
        prefix = key + "."
        subs = {p[len(prefix) :]: v for p, (v, _) in entries.items() if p.startswith(prefix)}
        head = entries.get(key)
        if key == "reconnect":
            if head is not None and not isinstance(head[0], bool):
                values[key] = head[0]  # the wrong type: reported by the check
            elif head is not None and head[0]:
                values[key] = subs
        elif key in _MERGED_TABLES:
            values[key] = head[0] if head is not None else (subs or None)
        elif head is not None:
            values[key] = head[0]
    sources = {p: src for p, (_, src) in entries.items()}
    cls = ServerConfig if section == "server" else ClientConfig
    return cls(**values, sources=sources)


def _assemble(layers: list[_Layer], unknown_env: Iterable[str] = ()) -> Config:
    merged = _merge(layers)
    named = {
        str(entries[k][0])
        for entries in merged.values()
        for k in ("password_env", "password_hash_env")
        if k in entries
    }
    unknown = [n for n in unknown_env if n not in named]
    if unknown:
        raise ConfigError(
            "; ".join(
                f"environment variable {n}: unknown setting"
                + (_SECRET_HINT if n == ENV_PREFIX + "PASSWORD" else _suggest(n, _ENV_NAMES))
                for n in unknown
            )
        )
    return Config(
        server=_section("server", merged["server"]), client=_section("client", merged["client"])
    )


@dataclass(frozen=True, slots=True)
class Config:
    """A node's settings: the ``[server]`` and ``[client]`` sides. See the module docs."""

    server: ServerConfig = field(default_factory=ServerConfig)
    client: ClientConfig = field(default_factory=ClientConfig)

    @classmethod
    def from_kwargs(cls, **settings: Any) -> Config:
        """Defaults < ``settings`` (``port=...`` for both sides, ``server={...}`` for one)."""
        return _assemble(_kwargs_layers(settings))

    @classmethod
    def from_toml(cls, path: PathLike) -> Config:
        """Defaults < the file's ``[server]`` and ``[client]`` tables."""
        return _assemble([_toml_layer(path)])

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        """Defaults < ``ARGONLINK_*`` variables."""
        layers, unknown = _env_layers(env)
        return _assemble(layers, unknown)


def load(
    path: PathLike | None = None, *, env: Mapping[str, str] = os.environ, **overrides: Any
) -> Config:
    """Defaults < the TOML file at ``path`` (if given) < ``ARGONLINK_*`` in ``env`` (pass
    ``{}`` to skip) < ``overrides``. Passwords are not read here; see ``build``/``kwargs``."""
    layers = [_toml_layer(path)] if path is not None else []
    env_layers, unknown = _env_layers(env)
    return _assemble([*layers, *env_layers, *_kwargs_layers(overrides)], unknown)
