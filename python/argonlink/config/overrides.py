"""The keyword layers: ``port=7000`` for every side that has the setting, ``client={...}`` for
one side; an override that is ``None`` is left out."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from ..exceptions import ConfigError
from .checks import _suggest
from .layers import _empty_layer, _Layer, _table_entries
from .specs import _SECRET_HINT, _SECTIONS, _SPECS


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
