"""The environment layers: ``ARGONLINK_*`` (every side that has the setting) and
``ARGONLINK_SERVER_*`` / ``ARGONLINK_CLIENT_*`` (one side), each variable parsed by its
setting's kind; table fields as ``ARGONLINK_<TABLE>_<FIELD>``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ..exceptions import ConfigError
from .checks import _Bad
from .layers import _empty_layer, _Entry, _Layer
from .specs import _SECTIONS, _SPECS, _TABLES, _WHOLE_TABLES, ENV_PREFIX


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
