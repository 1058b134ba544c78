"""The settings: ``ENV_PREFIX``, the groups of keys (password sources, what goes to the native
link options, the file settings), and each side's settings with how each is checked and how its
environment variable is parsed (``_SPECS``, ``_TABLES``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .checks import (
    _KDF_FIELDS,
    _k_bool,
    _k_bytes,
    _k_env_name,
    _k_identity,
    _k_interval,
    _k_kdf,
    _k_mode,
    _k_node_id,
    _k_path,
    _k_port,
    _k_reconnect,
    _k_rekey,
    _k_size,
    _k_throttle,
    _k_timeout,
    _suggest,
    _text,
)

#: Environment variables starting with this are settings.
ENV_PREFIX: Final = "ARGONLINK_"

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
    "throttle",
    "max_channels",
    "channel_window",
    "channel_buffer",
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
    {"host", "port", "allow_weak_kdf", "peers_file", *_SERVER_PASSWORD_KEYS, *_FILE_KEYS}
)


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
    "max_channels": _Spec(_k_size, "int"),
    "channel_window": _Spec(_k_size, "int"),
    "channel_buffer": _Spec(_k_size, "int"),
}
_SPECS: Final[dict[str, dict[str, _Spec]]] = {
    "server": {
        "host": _Spec(_text, "str", required=True),
        "port": _Spec(_k_port, "int", required=True),
        **_COMMON_SPECS,
        "password_hash_env": _Spec(_k_env_name, "str"),
        "password_hash_file": _Spec(_k_path, "str"),
        "peers_file": _Spec(_k_path, "str"),
        "kdf": _Spec(_k_kdf, "str"),
        "handshake_timeout": _Spec(_k_timeout, "float"),
        "max_pending_handshakes": _Spec(_k_size, "int"),
        "max_pending_per_source": _Spec(_k_size, "int"),
        "max_sessions": _Spec(_k_size, "int"),
        "accept_backlog": _Spec(_k_size, "int"),
        "max_connections": _Spec(_k_size, "int"),
        "session_linger": _Spec(_k_timeout, "float"),
        "throttle": _Spec(_k_throttle, "bool"),
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
        "identity": _Spec(_k_identity, "str"),
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
    "throttle": {
        "free_failures": "int",
        "initial_delay": "float",
        "max_delay": "float",
        "forget_after": "float",
        "global_failures_per_minute": "int",
    },
    "kdf": dict.fromkeys(_KDF_FIELDS, "int"),
    "kdf_floor": dict.fromkeys(_KDF_FIELDS, "int"),
    "kdf_cap": dict.fromkeys(_KDF_FIELDS, "int"),
}
_MERGED_TABLES: Final = ("rekey", "reconnect", "throttle")
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
