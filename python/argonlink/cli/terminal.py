"""A peer's messages on stdout: escaped where they could drive a terminal, unchanged into a pipe
or a file."""

from __future__ import annotations

import re
import sys

from .output import Output

# What a peer's message must not send to a terminal: C0 controls but tab and newline (ESC
# starts sequences that move the cursor, retitle the window, even answer back), DEL, C1
# controls (U+0080-U+009F; 8-bit CSI), bidirectional marks, embeddings, overrides and
# isolates (they reorder what follows), and bytes that are not UTF-8 (as surrogate escapes).
_TERMINAL_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\udc80-\udcff]"
)


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # a byte that is not UTF-8
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def terminal_safe(msg: bytes) -> bytes:
    """``msg`` with everything that could drive a terminal written as an escape (``\\x1b``,
    ``\\u202e``); tabs, newlines and other text unchanged."""
    text = msg.decode("utf-8", "surrogateescape")
    return _TERMINAL_UNSAFE.sub(_escape_char, text).encode("utf-8")


def print_message(msg: bytes, out: Output) -> None:
    if out.quiet:
        return
    with out.lock:
        # A person reads a terminal: escape. A pipe or file gets the peer's bytes unchanged.
        data = terminal_safe(msg) if sys.stdout.isatty() else msg
        sys.stdout.buffer.write(data + b"\n")
        sys.stdout.buffer.flush()
