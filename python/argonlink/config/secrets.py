"""Reading the secret, only when a side is built (never at load): the password or PHC string
from the environment variable or the file its source names; secret files' checks (a regular
file that only its owner can access); PHC strings and the strength of their costs."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._options import KdfParams, PasswordHash
from ..exceptions import ConfigError
from .checks import _Bad, _k_identity, _strong, _weak_message
from .labels import _label, _Sourced
from .specs import _HASH_KEYS, _SERVER_PASSWORD_KEYS, ENV_PREFIX

_PHC = re.compile(r"\$argon2id\$(?:v=\d+\$)?([^$]+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+")


def _read_secret(cfg: _Sourced, side: str, env: Mapping[str, str]) -> dict[str, Any]:
    """``password=`` or ``password_hash=`` from the source that ``cfg`` (the ``side``,
    "server" or "client") names, read now; a server's ``peers=`` from its peers file."""
    keys = _SERVER_PASSWORD_KEYS if side == "server" else _SERVER_PASSWORD_KEYS[:2]
    given = [k for k in keys if getattr(cfg, k, None) is not None]
    peers = _read_peers(cfg) if getattr(cfg, "peers_file", None) is not None else None
    if not given and peers is not None:
        return {"peers": peers}
    if not given:
        options = ", ".join((*keys, "peers_file") if side == "server" else keys)
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
    out: dict[str, Any] = {} if peers is None else {"peers": peers}
    if key not in _HASH_KEYS:
        return {**out, "password": secret}
    return {**out, "password_hash": _checked_phc(cfg, secret, label)}


def _checked_phc(cfg: _Sourced, secret: str | bytes, label: str) -> str:
    phc = _phc_text(secret, label)
    if not cfg.allow_weak_kdf:
        costs = _phc_costs(phc, label)
        if not _strong(costs):
            raise ConfigError(f"{label}: {_weak_message(costs, 'the PHC string has costs')}")
    return phc


def _read_peers(cfg: _Sourced) -> dict[str, PasswordHash]:
    """The peers file: a secret file (checked as a password file is) in TOML, with one PHC
    string per identity in its ``[peers]`` table. Only PHC strings: a file that lists many
    peers holds no plaintext password."""
    path: Path = getattr(cfg, "peers_file")  # noqa: B009 - a server's setting only
    label = _label(cfg, "peers_file")
    data = _read_secret_file(path, label, "peers")
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{label}: {path} is not valid TOML: {exc}") from None
    peers = table.get("peers")
    if set(table) != {"peers"} or not isinstance(peers, dict) or not peers:
        raise ConfigError(
            f'{label}: {path} must hold one [peers] table, identity = "$argon2id$..." '
            "(argonlink hash-password --identity NAME prints such a line)"
        )
    out: dict[str, PasswordHash] = {}
    for identity, phc in peers.items():
        where = f"{label}: {path}: [peers] {identity!r}"
        try:
            _k_identity(identity)
        except _Bad as bad:
            raise ConfigError(f"{where}: the identity {bad.message}") from None
        if not isinstance(phc, str):
            raise ConfigError(f"{where}: must be a PHC string ($argon2id$...)")
        out[identity] = PasswordHash(_checked_phc(cfg, phc, where))
    return out


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
