"""Where a section's value came from (its label: ``"environment variable ARGONLINK_PORT"``,
``"node.toml: [server] port"``, ...), as every error about it begins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..exceptions import ConfigError


class _Sourced(Protocol):
    """A :class:`ServerConfig` or a :class:`ClientConfig`, as far as labels and the secret
    reader look at one."""

    @property
    def sources(self) -> Mapping[str, str]: ...
    @property
    def allow_weak_kdf(self) -> bool: ...


def _label(cfg: _Sourced, path: str) -> str:
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


def _error(cfg: _Sourced, path: str, message: str) -> ConfigError:
    return ConfigError(f"{_label(cfg, path)}: {message}")
