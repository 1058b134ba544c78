"""The file layer: a TOML file's ``[server]`` and ``[client]`` tables, each value labelled with
the file and its key; relative paths are relative to the file's directory."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

from ..exceptions import ConfigError
from .checks import _suggest
from .layers import _empty_layer, _Layer, _table_entries
from .specs import _SECTIONS, _SPECS

PathLike: TypeAlias = "str | os.PathLike[str]"


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
