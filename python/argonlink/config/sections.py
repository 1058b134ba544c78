"""The section dataclasses, :class:`ServerConfig` and :class:`ClientConfig`: each setting checked
and normalized on construction with the label of where it came from (``_finish``), the checks
across settings, ``replace`` (``_replace``), and what each passes to its Server or Client."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Self, overload

from .. import sync as _sync
from .._asyncio import Client as _AsyncClient
from .._asyncio import Handler as _AsyncHandler
from .._asyncio import Server as _AsyncServer
from .._options import (
    KdfParams,
    ReconnectPolicy,
    RekeyPolicy,
    ThrottlePolicy,
    link_options,
    native_message,
)
from ..exceptions import ConfigError
from .checks import _at_most, _Bad, _costs, _strong, _weak_message
from .labels import _error, _label
from .secrets import _read_secret
from .specs import (
    _FILE_KEYS,
    _HASH_KEYS,
    _LINK_KEYS,
    _NOT_PASSED,
    _SERVER_PASSWORD_KEYS,
    _SPECS,
    ENV_PREFIX,
    _unknown_hint,
)


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
    #: A TOML secret file with one PHC string per client identity (``[peers]``).
    peers_file: Path | None = None
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
    max_channels: int | None = None
    channel_window: int | None = None
    channel_buffer: int | None = None
    session_linger: float | None = None
    #: ``False``: no throttling of failed handshakes; None: the defaults.
    throttle: ThrottlePolicy | bool | None = None
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
        ``password=`` or ``password_hash=`` read from its source now (and ``peers=`` from
        ``peers_file``) (``env``: where
        ``password_env`` / ``password_hash_env`` are looked up; default ``os.environ``).
        The result holds the secret: pass it on, do not keep or print it."""
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port}
        kwargs.update(_read_secret(self, "server", os.environ if env is None else env))
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
    #: The identity the client names (its password on a server with per-peer passwords).
    identity: str | None = None
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
    max_channels: int | None = None
    channel_window: int | None = None
    channel_buffer: int | None = None
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
        kwargs.update(_read_secret(self, "client", os.environ if env is None else env))
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
