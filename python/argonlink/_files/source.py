"""Reading: the sender's side of the disk. A :class:`_Source` reads a file or a stream chunk
by chunk into DATA messages and hashes what it read.

Separate because it is the sender's only contact with the file; the steps call it through
``_Run`` effects, so that it runs in a worker thread under asyncio.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import stat
from collections.abc import Callable
from typing import Protocol

from ..exceptions import TransferCode, TransferError
from .defaults import DEFAULT_CHUNK_SIZE
from .wire import _HEAD, _HEAD_LEN, _U64, DATA, DATA_HEAD_LEN, MAGIC, VERSION


class Readable(Protocol):
    """A binary file-like object to send: ``read(n)`` returns at most ``n`` bytes, ``b""`` at
    the end. ``readinto`` is used when present."""

    def read(self, size: int, /) -> bytes: ...


class _Source:
    """Reads chunks into DATA messages and hashes what it read: the file is read once, whether
    the transfer is new or resumed (the part the receiver has is hashed, not sent)."""

    def __init__(
        self,
        fileobj: Readable,
        *,
        owned: bool,
        size: int | None = None,
        resumable: bool = False,
        stamp: tuple[int, int] | None = None,
    ) -> None:
        self._f = fileobj
        self._owned = owned
        self._hash = hashlib.sha256()
        self._hashed = 0
        self.size = size
        self.resumable = resumable and size is not None
        #: A file's (size, mtime_ns) when it was opened: a file changed during the transfer is
        #: not sent as if it were one version of it.
        self._stamp = stamp
        self._proof: hmac.HMAC | None = None

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

    def hash_prefix(self, offset: int, limit: int, challenge: bytes | None = None) -> bool:
        """Hash up to ``limit`` more of the first ``offset`` bytes (the part the receiver says it
        has; with ``challenge``, into :meth:`proof` too); True once all of them are hashed. The
        file is then positioned at ``offset``."""
        if challenge is not None and self._proof is None:
            self._proof = hmac.new(challenge, digestmod="sha256")
        buf = bytearray(min(limit, offset - self._hashed, DEFAULT_CHUNK_SIZE))
        done = 0
        with memoryview(buf) as view:
            while done < limit and self._hashed < offset:
                want = min(len(view), offset - self._hashed)
                n = self._fill(view[:want])
                if n == 0:
                    raise TransferError(TransferCode.CANCELLED, "the file shrank while being sent")
                self._hash.update(view[:n])
                if self._proof is not None:
                    self._proof.update(view[:n])
                self._hashed += n
                done += n
        return self._hashed >= offset

    def proof(self) -> bytes:
        assert self._proof is not None
        return self._proof.digest()

    def restart(self) -> None:
        """Back to the first byte, with a fresh hash (the receiver's copy was not ours)."""
        self.seek(0)
        self._hash = hashlib.sha256()
        self._hashed = 0

    def check_unchanged(self, name: str) -> None:
        """After the last byte: a file whose size or modification time moved since it was
        opened was not read as one version of it, and is not offered as one."""
        if self._stamp is None:
            return
        fileno = getattr(self._f, "fileno", None)
        if fileno is None:  # pragma: no cover - files opened here have one
            return
        st = os.fstat(fileno())
        if (st.st_size, st.st_mtime_ns) != self._stamp:
            raise TransferError(TransferCode.CANCELLED, f"{name} changed while it was being sent")

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
    stamp = (st.st_size, st.st_mtime_ns)
    return _Source(f, owned=True, size=st.st_size, resumable=resume, stamp=stamp)
