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


@dataclass(frozen=True, slots=True)
class DirReceipt:
    """What a finished directory transfer delivered, on either side.

    ``files`` maps each delivered file's path inside the directory (folders joined with ``/``)
    to its :class:`FileReceipt`; ``failed`` maps each file that was not delivered to the
    :class:`~argonlink.TransferError` (or ``OSError``) that stopped it; ``skipped`` (sender
    only) lists what is neither a regular file nor a folder (symlinks, devices, sockets), which
    is never sent. ``path`` is where the receiver put the directory (None for the sender);
    ``size`` the bytes of the delivered files; ``elapsed`` in seconds."""

    name: str
    files: dict[str, FileReceipt]
    failed: dict[str, BaseException]
    skipped: tuple[str, ...] = ()
    path: Path | None = None
    size: int = 0
    elapsed: float = 0.0
