"""Reading: the sender's side of the disk. A :class:`_Source` reads a file or a stream chunk
by chunk into DATA messages and hashes what it read.

Separate because it is the sender's only contact with the file; the steps call it through
``_Run`` effects, so that it runs in a worker thread under asyncio.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from typing import Protocol

from .defaults import DEFAULT_CHUNK_SIZE
from .wire import _HEAD, _HEAD_LEN, _U64, DATA, DATA_HEAD_LEN, MAGIC, VERSION


class Readable(Protocol):
    """A binary file-like object to send: ``read(n)`` returns at most ``n`` bytes, ``b""`` at
    the end. ``readinto`` is used when present."""

    def read(self, size: int, /) -> bytes: ...


class _Source:
    """Reads chunks into DATA messages and hashes what it read."""

    def __init__(self, fileobj: Readable, *, owned: bool) -> None:
        self._f = fileobj
        self._owned = owned
        self._hash = hashlib.sha256()
        self._hashed = 0
        self.size: int | None = None
        self.sha256: bytes | None = None

    def _fill(self, view: memoryview) -> int:
        """Fill ``view`` unless the end comes first (pipes return short reads)."""
        readinto = getattr(self._f, "readinto", None)
        got = 0
        while got < len(view):
            if readinto is not None:
                n = readinto(view[got:])
            else:
                data = self._f.read(len(view) - got)
                n = len(data) if data is not None else None
                if n:
                    view[got : got + n] = data
            if n is None:
                raise OSError(errno.EAGAIN, "the stream is non-blocking and has no data ready")
            if n == 0:
                break
            got += n
        return got

    def read_data(self, offset: int, chunk: int) -> bytearray | None:
        """The next DATA message (its offset is ``offset``), or None at the end."""
        buf = bytearray(DATA_HEAD_LEN + chunk)
        with memoryview(buf) as view:
            got = self._fill(view[DATA_HEAD_LEN:])
            self._hash.update(view[DATA_HEAD_LEN : DATA_HEAD_LEN + got])
        if got == 0:
            return None
        _HEAD.pack_into(buf, 0, MAGIC, VERSION, DATA)
        _U64.pack_into(buf, _HEAD_LEN, offset)
        del buf[DATA_HEAD_LEN + got :]
        return buf

    def prehash(self, limit: int) -> bool:
        """Hash up to ``limit`` more bytes of the file; True once it reached the end. Then
        ``size``/``sha256`` describe the file and the source is rewound."""
        buf = bytearray(min(limit, DEFAULT_CHUNK_SIZE))
        done = 0
        with memoryview(buf) as view:
            while done < limit:
                n = self._fill(view)
                if n == 0:
                    # What was read is what is offered: size and hash always belong together.
                    self.sha256, self.size = self._hash.digest(), self._hashed
                    self._hash = hashlib.sha256()
                    self.seek(0)
                    return True
                self._hash.update(view[:n])
                self._hashed += n
                done += n
        return False

    def seek(self, offset: int) -> None:
        seek = getattr(self._f, "seek", None)
        if seek is None:
            raise OSError(errno.ESPIPE, "the stream cannot seek")
        seek(offset)

    def digest(self) -> bytes:
        return self._hash.digest()

    def close(self) -> None:
        if self._owned:
            close: Callable[[], object] | None = getattr(self._f, "close", None)
            if close is not None:
                close()


def _open_file(path: str | os.PathLike[str], resume: bool) -> _Source:
    f = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by the protocol)
    try:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{os.fspath(path)} is not a regular file; use send_stream()")
    except BaseException:
        f.close()
        raise
    source = _Source(f, owned=True)
    if not resume:
        source.size = st.st_size
    return source
