"""The layers that :func:`load` stacks: each maps a section to its settings (a setting, or a
table's ``"table.field"``) with the raw value and the label of where it came from;
``_table_entries`` turns one table of settings into entries, ``_merge`` stacks the layers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeAlias

from .._options import ReconnectPolicy, RekeyPolicy
from ..exceptions import ConfigError
from .checks import _k_path, _suggest
from .specs import _MERGED_TABLES, _SECTIONS, _SERVER_PASSWORD_KEYS, _SPECS, _TABLES, _unknown_hint

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
