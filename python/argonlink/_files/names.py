"""File names a receiver accepts: :func:`check_name`, and how a name is shown in messages.

Separate because both sides check the same rule (the sender before it offers, the receiver
before it writes), and it depends on nothing but the name.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from ..exceptions import UnsafeName
from .defaults import PARTIAL_SUFFIX

_DEVICE = re.compile(r"(CON|PRN|AUX|NUL|CONIN\$|CONOUT\$|COM[0-9¹²³]|LPT[0-9¹²³])", re.IGNORECASE)
# Cf holds the invisible characters (zero-width spaces and joiners, BOM, bidi marks and
# overrides): two names that look the same must not be two files.
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _shown(name: str) -> str:
    text = repr(name)  # escapes control characters
    return text if len(text) <= 60 else text[:57] + "..."


def check_name(name: str, *, allow_hidden: bool = False) -> str:
    """Return ``name`` if it is safe as a single file name in any directory on any common
    system; raise :class:`~argonlink.UnsafeName` otherwise.

    Refused: empty, ``.``, ``..`` and other all-dot names; ``/``, ``\\`` and ``:`` (paths,
    drive letters, NTFS streams); control characters (Unicode category Cc), format characters
    (Cf: zero-width spaces and joiners, byte order marks, bidirectional marks and overrides),
    line and paragraph separators; Windows device names (``CON``, ``PRN``, ``AUX``, ``NUL``,
    ``COM0``-``COM9``, ``LPT0``-``LPT9``, ``CONIN$``, ``CONOUT$``, with any extension); more
    than 255 bytes of UTF-8; invalid UTF-8 (lone surrogates); the partial-file suffix
    ``.argonlink-part``; and, unless ``allow_hidden``, a name starting with ``.`` (a hidden
    file such as ``.bashrc`` is often a configuration that other programs read).
    """
    if not isinstance(name, str):
        raise UnsafeName("the file name is not a string")
    if not name.strip("."):
        raise UnsafeName(f"{_shown(name)} is not a file name")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeName(f"the file name {_shown(name)} is not valid UTF-8") from None
    if len(encoded) > 255:
        raise UnsafeName(f"the file name {_shown(name)} is longer than 255 bytes")
    for ch in name:
        if ch in "/\\:":
            raise UnsafeName(f"the file name {_shown(name)} contains {ch!r}: it must not be a path")
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise UnsafeName(
                f"the file name {_shown(name)} contains a control or invisible character"
            )
    if name.startswith(".") and not allow_hidden:
        raise UnsafeName(
            f"the file name {_shown(name)} starts with '.': the receiver takes no hidden files"
        )
    if _DEVICE.fullmatch(name.split(".", 1)[0].rstrip(" ")):
        raise UnsafeName(f"the file name {_shown(name)} is a reserved device name on Windows")
    if name.endswith(PARTIAL_SUFFIX):
        raise UnsafeName(f"the file name {_shown(name)} ends with the reserved {PARTIAL_SUFFIX}")
    return name
