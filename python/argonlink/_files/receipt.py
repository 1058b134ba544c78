"""What a transfer tells its caller: ``progress(done, total)`` while it runs, and a
:class:`FileReceipt` when it is done.

Separate because these two are public types, re-exported by ``argonlink``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

#: ``progress(done, total)``: bytes the receiver has so far, and the file's size (-1 while it is
#: not known: a stream sent without ``size=``).
Progress: TypeAlias = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class FileReceipt:
    """What a finished transfer delivered, on either side.

    ``sha256`` is the verified hash (hex) of the whole file; ``path`` is where the receiver
    stored it (None for the sender and for streams); ``resumed_from`` is how many bytes the
    receiver already had from an earlier, interrupted transfer; ``elapsed`` is in seconds."""

    name: str
    size: int
    sha256: str
    path: Path | None = None
    resumed_from: int = 0
    elapsed: float = 0.0
