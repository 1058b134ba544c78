"""Checking one value: the ``_k_*`` checkers of the settings (each returns the normalized value
or raises :class:`_Bad`), the helpers they share, and whether Argon2 costs are strong enough."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from .. import _argonlink
from .._files import check_mode
from .._options import KdfParams, ReconnectPolicy, RekeyPolicy, ThrottlePolicy, native_message
from ..exceptions import ConfigError

_MAX_SECONDS: Final = 1e9  # larger values make the native layer panic (Duration overflow)
_U32: Final = 2**32 - 1
_U64: Final = 2**64 - 1


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


def _k_identity(value: object) -> str:
    """A client's identity: what the hello carries (PROTOCOL.md §3.1)."""
    text = _text(value)
    if not 1 <= len(text) <= 255 or not all("!" <= ch <= "~" for ch in text):
        raise _Bad("must be 1 to 255 printable ASCII characters without spaces")
    return text


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
_THROTTLE_FIELDS: Final = tuple(f.name for f in dataclasses.fields(ThrottlePolicy))


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


def _switch_table(
    value: object, fields: tuple[str, ...], name: str, policy: type[Any]
) -> dict[str, Any]:
    """The fields of a setting that is true, false or a table (true and false handled by the
    caller): a table, or a policy object, else what the setting may be."""
    if not isinstance(value, policy | Mapping):
        raise _Bad(
            f"expected true, false or a table of {name} fields {list(fields)}, got {_show(value)}"
        )
    return _fields_of(value, fields, name, policy)


def _k_reconnect(value: object) -> ReconnectPolicy | None:
    if value is None or value is False:
        return None
    if value is True:
        return ReconnectPolicy()
    values = _switch_table(value, _RECONNECT_FIELDS, "reconnect", ReconnectPolicy)
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


def _k_throttle(value: object) -> ThrottlePolicy | bool:
    """``false`` (off), ``true`` (the defaults) or a table of ThrottlePolicy fields."""
    if value is True or value is False:
        return value
    values = _switch_table(value, _THROTTLE_FIELDS, "throttle", ThrottlePolicy)
    _checked(
        values,
        {
            "free_failures": lambda v: _int(v, 0, _U32),
            "initial_delay": _k_timeout,
            "max_delay": _k_timeout,
            "forget_after": _k_timeout,
            "global_failures_per_minute": lambda v: _int(v, 0, _U32),
        },
    )
    try:
        return ThrottlePolicy(**values)
    except ConfigError as exc:
        raise _policy_error(exc, ThrottlePolicy) from None


# --------------------------------------------------------------------------------------------
# Argon2 costs against the OWASP minimum, cost by cost (as clients compare them).


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
