"""The top: :class:`Config` (a node's two sections) and :func:`load`, which stack the layers
(defaults < file < environment < keywords), refuse unknown ``ARGONLINK_*`` variables and make
the sections from the merged entries."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import ConfigError
from .checks import _suggest
from .env import _ENV_NAMES, _env_layers
from .layers import _Entry, _Layer, _merge
from .overrides import _kwargs_layers
from .sections import ClientConfig, ServerConfig
from .specs import _MERGED_TABLES, _SECRET_HINT, _SPECS, ENV_PREFIX
from .toml import PathLike, _toml_layer


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
    """A node's settings: the ``[server]`` and ``[client]`` sides. See :mod:`argonlink.config`."""

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
