"""Files over a link: ``send_file`` / ``recv_file`` and their stream forms.

A small protocol on top of ordinary messages (``send``/``recv``), so it works over any
connection or client. It is written once, as generators that *describe* their I/O (send this,
receive one message, run this blocking file operation) without doing any of it; two thin
drivers carry the descriptions out, one with ``await`` (file operations on a small thread pool of
this module's own, so the event loop never waits for the disk and a transfer never takes a
thread of the loop's default executor) and one blocking. See docs/PROTOCOL.md, "File
transfer", for the wire format.

::

    sender                                receiver
      OFFER {name, size, sha256}  ───────▶  checks the name, finds a partial file to resume
                                  ◀───────  ACCEPT offset          (or REFUSE code, reason)
      DATA offset ‖ bytes          ───────▶  (from the offset on, chunk by chunk)
      ...                                    (a REFUSE may come early: the sender CANCELs)
      END size ‖ sha256            ───────▶  verifies, fsyncs, moves into place
                                  ◀───────  DONE size ‖ sha256     (or REFUSE)

Memory stays bounded: one chunk is read, hashed and sent at a time, and ``send`` waits while
the link's send buffer is full; the receiver writes each chunk as it comes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import struct
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TypeAlias

from ._options import BytesLike
from .exceptions import (
    ConfigError,
    DestinationExists,
    Error,
    Timeout,
    TransferCode,
    TransferError,
    UnexpectedMessage,
    UnsafeName,
    VerificationFailed,
)

if sys.platform != "win32":
    import fcntl

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_FILE_MODE",
    "DEFAULT_MAX_PARTIALS",
    "DEFAULT_MAX_PARTIAL_BYTES",
    "DEFAULT_MIN_FREE_SPACE",
    "PARTIAL_SUFFIX",
    "AsyncTransfers",
    "BlockingTransfers",
    "FileReceipt",
    "Progress",
    "check_mode",
    "check_name",
    "remove_stale_partials",
]

#: ``progress(done, total)``: bytes the receiver has so far, and the file's size (-1 while it is
#: not known: a stream sent without ``size=``).
Progress: TypeAlias = Callable[[int, int], None]

DEFAULT_CHUNK_SIZE: Final = 1 << 20
#: Hidden partial files in the destination directory end with this; peers may not use it.
PARTIAL_SUFFIX: Final = ".argonlink-part"
#: Received files are readable and writable by their owner only, unless ``mode=`` says otherwise.
DEFAULT_FILE_MODE: Final = 0o600
#: At most this many partial files in a directory before a new one is created (docs: §9.5).
DEFAULT_MAX_PARTIALS: Final = 32
#: At most this many bytes in the partial files already in a directory before a new one is made.
DEFAULT_MAX_PARTIAL_BYTES: Final = 64 << 30
#: A receiver refuses (code 4) rather than leave less than this free on the file system.
DEFAULT_MIN_FREE_SPACE: Final = 256 << 20

# --------------------------------------------------------------------------------------------
# Wire format: every message starts with MAGIC, a version byte and a type byte.

MAGIC: Final = b"ALNKFILE"
VERSION: Final = 1
_HEAD = struct.Struct(">8sBB")
_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")
_HEAD_LEN: Final = _HEAD.size  # 10
DATA_HEAD_LEN: Final = _HEAD_LEN + _U64.size  # 18: DATA's header and offset
MAX_OFFER: Final = 4096  # bytes of JSON
MAX_REASON: Final = 1024  # bytes of UTF-8
_MAX_SIZE: Final = (1 << 63) - 1
_SHA_HEX = re.compile(r"[0-9a-f]{64}")
#: A chunk leaves this much room below the peer's message limit (for the DATA header and for
#: any framing a wrapping client might add).
_CHUNK_MARGIN: Final = 64
_LOCK_WAIT: Final = 5.0  # seconds a receiver waits for another transfer of the same file
_LOCK_POLL: Final = (0.01, 0.25)  # first and longest pause between two tries of the lock
_SPACE_STEP: Final = 16 << 20  # bytes written between two checks of the free space
_FILE_WORKERS: Final = 8  # threads for the file operations of all asyncio transfers
_HASH_STEP: Final = 64 << 20  # bytes hashed per worker-thread call (keeps cancellation prompt)

OFFER, ACCEPT, REFUSE, DATA, END, DONE, CANCEL = 1, 2, 3, 4, 5, 6, 7
_KIND_NAMES: Final = {
    OFFER: "OFFER",
    ACCEPT: "ACCEPT",
    REFUSE: "REFUSE",
    DATA: "DATA",
    END: "END",
    DONE: "DONE",
    CANCEL: "CANCEL",
}


@dataclass(frozen=True, slots=True)
class Offer:
    name: str
    size: int | None  # None: a stream of unknown length
    sha256: bytes | None  # None: not known in advance (no resume)


@dataclass(frozen=True, slots=True)
class Accept:
    offset: int


@dataclass(frozen=True, slots=True)
class Refuse:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Data:
    offset: int
    data: memoryview


@dataclass(frozen=True, slots=True)
class End:
    size: int
    sha256: bytes


@dataclass(frozen=True, slots=True)
class Done:
    size: int
    sha256: bytes


@dataclass(frozen=True, slots=True)
class Cancel:
    code: int
    reason: str


Message: TypeAlias = Offer | Accept | Refuse | Data | End | Done | Cancel


class Malformed(Exception):
    """A message with the file-protocol magic whose content is not valid."""


def _head(kind: int) -> bytes:
    return _HEAD.pack(MAGIC, VERSION, kind)


def encode_offer(name: str, size: int | None, sha256: bytes | None) -> bytes:
    body = {"name": name, "size": size, "sha256": None if sha256 is None else sha256.hex()}
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    if len(text) > MAX_OFFER:  # cannot happen for a checked name; a guard, not a limit
        raise UnsafeName("the file offer would be too large")
    return _head(OFFER) + text


def encode_accept(offset: int) -> bytes:
    return _head(ACCEPT) + _U64.pack(offset)


def _coded(kind: int, code: int, reason: str) -> bytes:
    text = reason.encode("utf-8", "replace")[:MAX_REASON].decode("utf-8", "ignore").encode()
    return _head(kind) + _U16.pack(code) + text


def encode_refuse(code: int, reason: str) -> bytes:
    return _coded(REFUSE, code, reason)


def encode_cancel(code: int, reason: str) -> bytes:
    return _coded(CANCEL, code, reason)


def encode_end(size: int, sha256: bytes) -> bytes:
    return _head(END) + _U64.pack(size) + sha256


def encode_done(size: int, sha256: bytes) -> bytes:
    return _head(DONE) + _U64.pack(size) + sha256


def is_file_message(msg: bytes) -> bool:
    return msg[: len(MAGIC)] == MAGIC


def kind_name(msg: bytes) -> str:
    """For messages: the type of a file-protocol message, or "a non-file message"."""
    if not is_file_message(msg) or len(msg) < _HEAD_LEN:
        return "a message that is not part of a file transfer"
    return _KIND_NAMES.get(msg[_HEAD_LEN - 1], f"an unknown file message (type {msg[9]})")


def _peer_text(raw: bytes) -> str:
    """Text from the peer, safe to show: no control characters, bounded."""
    text = raw[:MAX_REASON].decode("utf-8", "replace")
    return "".join("?" if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)


def decode(msg: bytes) -> Message:
    """Parse a file-protocol message; raises :class:`Malformed` (the caller checked the magic)."""
    if len(msg) < _HEAD_LEN:
        raise Malformed("a file message shorter than its header")
    _, version, kind = _HEAD.unpack_from(msg)
    if version != VERSION:
        raise Malformed(f"file protocol version {version} is not supported (this side: 1)")
    body = memoryview(msg)[_HEAD_LEN:]
    if kind == OFFER:
        return _decode_offer(bytes(body))
    if kind == DATA:
        if len(body) <= _U64.size:
            raise Malformed("a DATA message without data")
        return Data(_U64.unpack_from(body)[0], body[_U64.size :])
    if kind in (REFUSE, CANCEL):
        if len(body) < _U16.size or len(body) > _U16.size + MAX_REASON:
            raise Malformed(f"a {_KIND_NAMES[kind]} message of the wrong length")
        code, reason = _U16.unpack_from(body)[0], _peer_text(bytes(body[_U16.size :]))
        return Refuse(code, reason) if kind == REFUSE else Cancel(code, reason)
    if kind == ACCEPT:
        if len(body) != _U64.size:
            raise Malformed("an ACCEPT message of the wrong length")
        return Accept(_U64.unpack_from(body)[0])
    if kind in (END, DONE):
        if len(body) != _U64.size + 32:
            raise Malformed(f"a {_KIND_NAMES[kind]} message of the wrong length")
        size, digest = _U64.unpack_from(body)[0], bytes(body[_U64.size :])
        return End(size, digest) if kind == END else Done(size, digest)
    raise Malformed(f"unknown file message type {kind}")


def _decode_offer(body: bytes) -> Offer:
    if len(body) > MAX_OFFER:
        raise Malformed(f"a file offer larger than {MAX_OFFER} bytes")
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Malformed("a file offer that is not a UTF-8 JSON object") from None
    if not isinstance(obj, dict):
        raise Malformed("a file offer that is not a JSON object")
    name, size, sha = obj.get("name"), obj.get("size"), obj.get("sha256")
    if not isinstance(name, str):
        raise Malformed("a file offer without a name")
    if size is not None and (
        not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= _MAX_SIZE
    ):
        raise Malformed("a file offer with an invalid size")
    if sha is not None and (not isinstance(sha, str) or not _SHA_HEX.fullmatch(sha)):
        raise Malformed("a file offer with an invalid sha256 (64 lowercase hex digits)")
    if sha is not None and size is None:
        raise Malformed("a file offer with a sha256 but no size")
    return Offer(name, size, None if sha is None else bytes.fromhex(sha))


# --------------------------------------------------------------------------------------------
# Names

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


# --------------------------------------------------------------------------------------------
# The result


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


# --------------------------------------------------------------------------------------------
# Effects: what the protocol asks its driver to do.


@dataclass(frozen=True, slots=True)
class _Send:
    data: BytesLike


class _Recv:
    __slots__ = ()


class _Poll:
    """A message if one is already waiting, else None (the sender's check for an early REFUSE)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class _Run:
    """A blocking file operation (run in a worker thread by the asyncio driver)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class _Sleep:
    """Pause (without holding a thread in the asyncio driver), e.g. between tries of a lock."""

    seconds: float


@dataclass(frozen=True, slots=True)
class _Deadline:
    """From now on every wait ends by ``seconds`` from now: a whole transfer's time limit."""

    seconds: float


_RECV: Final = _Recv()
_POLL: Final = _Poll()
_Effect: TypeAlias = _Send | _Recv | _Poll | _Run | _Sleep | _Deadline
_Steps: TypeAlias = Generator[_Effect, Any, FileReceipt]


class _BlockingPeer(Protocol):
    def send(self, data: BytesLike, *, timeout: float | None = None) -> None: ...
    def recv(self, timeout: float | None = None) -> bytes: ...
    def _peer_message_limit(self) -> int: ...


class _AsyncPeer(Protocol):
    async def send(self, data: BytesLike, *, timeout: float | None = None) -> None: ...
    async def recv(self, timeout: float | None = None) -> bytes: ...
    def _peer_message_limit(self) -> int: ...


def _wait(timeout: float | None, deadline: float | None) -> float | None:
    """How long the next wait may take: ``timeout``, cut short by the transfer's deadline."""
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise Timeout("the transfer took longer than its total_timeout")
    return left if timeout is None else min(timeout, left)


def _past_deadline(exc: BaseException, deadline: float | None) -> BaseException:
    """A wait cut short by the transfer's deadline says so (not just "recv timed out")."""
    if isinstance(exc, Timeout) and deadline is not None and time.monotonic() >= deadline:
        return Timeout("the transfer took longer than its total_timeout")
    return exc


def _run_blocking(steps: _Steps, peer: _BlockingPeer, timeout: float | None) -> FileReceipt:
    value: Any = None
    error: BaseException | None = None
    deadline: float | None = None
    while True:
        try:
            effect = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as stop:
            receipt: FileReceipt = stop.value
            return receipt
        value, error = None, None
        try:
            if isinstance(effect, _Send):
                peer.send(effect.data, timeout=_wait(timeout, deadline))
            elif isinstance(effect, _Recv):
                value = peer.recv(_wait(timeout, deadline))
            elif isinstance(effect, _Poll):
                with contextlib.suppress(Timeout):
                    value = peer.recv(0)
            elif isinstance(effect, _Sleep):
                time.sleep(min(effect.seconds, _wait(effect.seconds, deadline) or 0.0))
            elif isinstance(effect, _Deadline):
                deadline = time.monotonic() + effect.seconds
            else:
                value = effect.fn(*effect.args)
        except BaseException as exc:  # into the protocol, which cleans up and re-raises
            error = _past_deadline(exc, deadline)


_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _file_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that run the file operations of asyncio transfers: bounded, and not the
    loop's default executor, so that no number of transfers can hold up other work."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                _FILE_WORKERS, thread_name_prefix="argonlink-files"
            )
        return _executor


def _forget_executor() -> None:
    # A forked child has none of the parent's threads (and maybe a lock held by one of them).
    global _executor, _executor_lock
    _executor, _executor_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_executor)


async def _in_thread(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    fut = asyncio.get_running_loop().run_in_executor(_file_executor(), functools.partial(fn, *args))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        # Let the operation finish before the protocol closes its file: a descriptor must
        # not be closed (and its number reused) under a read or write still running.
        while not fut.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([fut])
        raise


async def _run_async(steps: _Steps, peer: _AsyncPeer, timeout: float | None) -> FileReceipt:
    value: Any = None
    error: BaseException | None = None
    deadline: float | None = None
    while True:
        try:
            effect = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as stop:
            receipt: FileReceipt = stop.value
            return receipt
        value, error = None, None
        try:
            if isinstance(effect, _Send):
                await peer.send(effect.data, timeout=_wait(timeout, deadline))
            elif isinstance(effect, _Recv):
                value = await peer.recv(_wait(timeout, deadline))
            elif isinstance(effect, _Poll):
                with contextlib.suppress(Timeout):
                    value = await peer.recv(0)
            elif isinstance(effect, _Sleep):
                await asyncio.sleep(min(effect.seconds, _wait(effect.seconds, deadline) or 0.0))
            elif isinstance(effect, _Deadline):
                deadline = time.monotonic() + effect.seconds
            else:
                value = await _in_thread(effect.fn, effect.args)
        except BaseException as exc:
            error = _past_deadline(exc, deadline)


# --------------------------------------------------------------------------------------------
# Reading: the sender's side of the disk.


class Readable(Protocol):
    """A binary file-like object to send: ``read(n)`` returns at most ``n`` bytes, ``b""`` at
    the end. ``readinto`` is used when present."""

    def read(self, size: int, /) -> bytes: ...


class Writable(Protocol):
    """A binary file-like object to receive into."""

    def write(self, data: bytes, /) -> object: ...


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


# --------------------------------------------------------------------------------------------
# Writing: the receiver's side of the disk.


def _partial_name(name: str, key: str) -> str:
    suffix = f".{key}{PARTIAL_SUFFIX}"
    room = 255 - 1 - len(suffix)
    stem = name.encode()[:room].decode("utf-8", "ignore")
    return f".{stem}{suffix}"


_PARTIAL = re.compile(r"\..*\.[0-9a-f]{32}" + re.escape(PARTIAL_SUFFIX), re.DOTALL)


def _partial_key(name: str, size: int, sha256: bytes) -> str:
    """A resumable partial belongs to one (name, size, content): another file of the same name
    never resumes from it."""
    material = b"argonlink partial\0" + name.encode() + b"\0" + _U64.pack(size) + sha256
    return hashlib.sha256(material).hexdigest()[:32]


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # no advisory locks: concurrent receivers are not detected
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


_OPEN_FLAGS: Final = (
    os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)


def _open_locked(path: Path, mode: int) -> int | None:
    """Open (create) ``path`` with ``mode`` and lock it; None if another transfer holds the
    lock. Never waits: the protocol pauses between tries without holding a thread."""
    for _ in range(8):  # the holder may finish and move the file away between open and lock
        fd = os.open(path, _OPEN_FLAGS, mode)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "the partial file is not a regular file", str(path))
            if not _try_lock(fd):
                os.close(fd)
                return None
            try:
                now = os.lstat(path)
                same = (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev)
            except FileNotFoundError:
                same = False
            if same:
                if os.name == "posix" and stat.S_IMODE(st.st_mode) != mode:
                    os.fchmod(fd, mode)  # a partial left by an older receiver, or the umask
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    return None


def _free_bytes(dest: Path, fd: int | None = None) -> int:
    """Bytes an unprivileged writer may still use on the file system of ``dest``."""
    if fd is not None and hasattr(os, "fstatvfs"):
        st = os.fstatvfs(fd)
        return st.f_bavail * st.f_frsize
    return shutil.disk_usage(dest).free


@dataclass(frozen=True, slots=True)
class _DirLimits:
    """What a receiver into a directory allows (see ``recv_file``)."""

    mode: int = DEFAULT_FILE_MODE
    max_partials: int = DEFAULT_MAX_PARTIALS
    max_partial_bytes: int = DEFAULT_MAX_PARTIAL_BYTES
    min_free_space: int = DEFAULT_MIN_FREE_SPACE


# Checking the quota and creating the partial file are one step for the threads of this
# process (other processes may overshoot by one file each).
_quota_lock = threading.Lock()


def _make_room(dest: Path, limits: _DirLimits) -> None:
    """Before a new partial file is created in ``dest``: the partial files already there must
    be fewer than ``max_partials`` and hold at most ``max_partial_bytes``. The oldest ones no
    transfer is using are removed until they are; if live transfers alone exceed the quota,
    the offer is refused as BUSY."""
    found: list[tuple[float, str, int]] = []
    with os.scandir(dest) as entries:
        for entry in entries:
            if not _PARTIAL.fullmatch(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((st.st_mtime, entry.name, st.st_size))
    count, total = len(found), sum(size for _, _, size in found)
    found.sort()
    for _, name, size in found:
        if count < limits.max_partials and total <= limits.max_partial_bytes:
            return
        if _remove_unused(dest / name):
            count, total = count - 1, total - size
    if count >= limits.max_partials or total > limits.max_partial_bytes:
        raise TransferError(
            TransferCode.BUSY,
            "too many unfinished transfers into this directory; try again later",
        )


def _remove_unused(path: Path) -> bool:
    """Delete the partial file at ``path`` unless a transfer holds its lock."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        if not _try_lock(fd):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


class _Sink(Protocol):
    def open(self, name: str, offer: Offer) -> int | None: ...
    def hash_prefix(self, limit: int) -> bool: ...
    def write(self, data: memoryview) -> None: ...
    def digest(self) -> bytes: ...
    def commit(self) -> Path | None: ...
    def discard(self) -> None: ...
    def close(self) -> None: ...


class _DirSink:
    """Receives into ``dest/.NAME.<key>.argonlink-part``; after verification, fsync and an
    atomic no-clobber move to ``dest/NAME``."""

    def __init__(self, dest: Path, overwrite: bool, limits: _DirLimits) -> None:
        self._dest = dest
        self._overwrite = overwrite
        self._limits = limits
        self._fd: int | None = None
        self._part: Path | None = None
        self._final: Path | None = None
        self._name = ""
        self._keep = False  # a resumable partial outlives an interrupted transfer
        self._hash = hashlib.sha256()
        self._hashed = 0
        self._offset = 0
        self._remaining: int | None = None  # bytes still to come, if the size is known
        self._unchecked = 0  # bytes written since the free space was last checked

    def _check_destination(self, final: Path, name: str) -> None:
        try:
            st = os.lstat(final)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise DestinationExists(f"{_shown(name)} exists at the receiver and is a directory")
        if not self._overwrite:
            raise DestinationExists(f"{_shown(name)} already exists at the receiver")

    def open(self, name: str, offer: Offer) -> int | None:
        """Open and lock the partial file; its length (where the sender continues), or None
        while another transfer of the same file holds it (the caller tries again)."""
        final = self._dest / name
        self._check_destination(final, name)
        resumable = offer.sha256 is not None and offer.size is not None
        if offer.size is not None and offer.sha256 is not None:
            key = _partial_key(name, offer.size, offer.sha256)
        else:
            key = secrets.token_hex(16)
        part = self._dest / _partial_name(name, key)
        with _quota_lock:
            created = not os.path.lexists(part)
            if created:
                _make_room(self._dest, self._limits)
            fd = _open_locked(part, self._limits.mode)
        if fd is None:
            return None
        try:
            have = os.fstat(fd).st_size if resumable else 0
            if offer.size is not None and have > offer.size:
                have = 0  # not a prefix of this file after all
            os.ftruncate(fd, have)
            self._remaining = None if offer.size is None else offer.size - have
            self._check_space(fd, name)
        except BaseException:
            os.close(fd)
            if not resumable or created:  # an empty partial refused at the offer: no use
                os.unlink(part)
            raise
        self._fd, self._part, self._final, self._name = fd, part, final, name
        self._keep, self._offset = resumable, have
        return have

    def _check_space(self, fd: int, name: str) -> None:
        """Refuse (TOO_LARGE) once what is still to come would leave less than the reserve
        free; a stream of unknown size only needs the reserve to be there."""
        need = (self._remaining or 0) + self._limits.min_free_space
        free = _free_bytes(self._dest, fd)
        if need > free:
            raise TransferError(
                TransferCode.TOO_LARGE,
                f"{_shown(name)}: the receiver does not have enough free disk space",
            )

    def hash_prefix(self, limit: int) -> bool:
        """Hash up to ``limit`` more bytes of what the partial file already holds; True when
        all of it is hashed (the file position is then at its end)."""
        assert self._fd is not None
        end = min(self._hashed + limit, self._offset)
        while self._hashed < end:
            data = os.pread(self._fd, min(DEFAULT_CHUNK_SIZE, end - self._hashed), self._hashed)
            if not data:
                raise OSError(errno.EIO, "the partial file shrank while being read")
            self._hash.update(data)
            self._hashed += len(data)
        if self._hashed < self._offset:
            return False
        os.lseek(self._fd, self._offset, os.SEEK_SET)
        return True

    def write(self, data: memoryview) -> None:
        assert self._fd is not None
        self._unchecked += len(data)
        if self._remaining is not None:
            self._remaining -= len(data)
        if self._unchecked >= _SPACE_STEP:  # other writers share the disk: look again
            self._unchecked = 0
            self._check_space(self._fd, self._name)
        _write_all(self._fd, data)
        self._hash.update(data)

    def digest(self) -> bytes:
        return self._hash.digest()

    def commit(self) -> Path:
        assert self._fd is not None and self._part is not None and self._final is not None
        fd, part, final = self._fd, self._part, self._final
        os.fsync(fd)
        if self._overwrite:
            os.replace(part, final)
        else:
            try:
                os.link(part, final, follow_symlinks=False)
            except FileExistsError:
                self.discard()
                raise DestinationExists(
                    f"{_shown(self._name)} already exists at the receiver"
                ) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                    raise
                self._claim_without_link(part, final)
            else:
                os.unlink(part)
        self._part = None  # moved: nothing left to clean up
        _fsync_dir(self._dest)
        self.close()
        return final

    def _claim_without_link(self, part: Path, final: Path) -> None:
        # No hard links on this file system: reserve the name with an exclusive create, then
        # replace the empty placeholder with the verified file in one rename.
        try:
            os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self._limits.mode))
        except FileExistsError:
            self.discard()
            raise DestinationExists(
                f"{_shown(self._name)} already exists at the receiver"
            ) from None
        os.replace(part, final)

    def discard(self) -> None:
        self._keep = False
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._part is not None and not self._keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._part)
            self._part = None


class _StreamSink:
    """Receives into a caller's file object, from offset 0 (streams do not resume)."""

    def __init__(self, fileobj: Writable) -> None:
        self._f = fileobj
        self._hash = hashlib.sha256()

    def open(self, name: str, offer: Offer) -> int | None:
        return 0

    def hash_prefix(self, limit: int) -> bool:
        return True

    def write(self, data: memoryview) -> None:
        self._f.write(bytes(data))
        self._hash.update(data)

    def digest(self) -> bytes:
        return self._hash.digest()

    def commit(self) -> None:
        flush: Callable[[], object] | None = getattr(self._f, "flush", None)
        if flush is not None:
            flush()

    def discard(self) -> None:
        pass

    def close(self) -> None:
        pass


def remove_stale_partials(
    dest_dir: str | os.PathLike[str], older_than: float = 7 * 86400.0
) -> list[Path]:
    """Delete partial files of interrupted transfers in ``dest_dir`` that nothing touched for
    ``older_than`` seconds (default: a week) and that no transfer is using. Returns what was
    removed. A receiver keeps a partial file so that the sender can resume; one that never
    comes back leaves it behind until this is called."""
    cutoff = time.time() - older_than
    removed: list[Path] = []
    with os.scandir(dest_dir) as entries:
        for entry in entries:
            if not _PARTIAL.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            path = Path(entry.path)
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            except OSError:
                continue
            try:
                if os.fstat(fd).st_mtime < cutoff and _try_lock(fd):
                    os.unlink(path)
                    removed.append(path)
            except OSError:
                pass
            finally:
                os.close(fd)
    return removed


# --------------------------------------------------------------------------------------------
# The protocol, once.


def _error_from_peer(code: int, reason: str) -> TransferError:
    if code == TransferCode.UNSAFE_NAME:
        return UnsafeName(reason, by_peer=True)
    if code == TransferCode.EXISTS:
        return DestinationExists(reason, by_peer=True)
    if code == TransferCode.VERIFICATION_FAILED:
        return VerificationFailed(reason, by_peer=True)
    return TransferError(code, reason, by_peer=True)


def _protocol_error(reason: str) -> TransferError:
    return TransferError(TransferCode.PROTOCOL, reason)


def _reply(msg: bytes, expected: type[Accept] | type[Done] | None, step: str) -> Any:
    """The receiver's reply: the expected message, or the error a REFUSE (or anything else)
    stands for. ``expected=None``: nothing is expected (a message during the data phase)."""
    if not is_file_message(msg):
        raise UnexpectedMessage(msg, f"expected the receiver's reply to {step}")
    try:
        reply = decode(msg)
    except Malformed as bad:
        raise _protocol_error(f"the receiver's reply to {step} is malformed: {bad}") from None
    if isinstance(reply, Refuse):
        raise _error_from_peer(reply.code, reply.reason)
    if expected is None or not isinstance(reply, expected):
        raise _protocol_error(f"the receiver replied to {step} with {kind_name(msg)}")
    return reply


def _is_link_failure(exc: BaseException) -> bool:
    """The connection failed (closed, timed out): nothing more can be said on it."""
    return isinstance(exc, Error) and not isinstance(exc, TransferError)


def _local_failure(exc: BaseException, side: str) -> tuple[int, str]:
    """What to tell the peer when this side gives up."""
    if isinstance(exc, TransferError):
        return exc.code, exc.reason
    if isinstance(exc, OSError):
        return TransferCode.IO_ERROR, f"the {side} had an I/O error"
    return TransferCode.CANCELLED, f"the {side} cancelled the transfer"


def _send_steps(
    open_source: Callable[[], _Source],
    name: str,
    resume: bool,
    progress: Progress | None,
    chunk: int,
) -> _Steps:
    start = time.monotonic()
    source: _Source = yield _Run(open_source)
    try:
        if resume:
            while not (yield _Run(source.prehash, (_HASH_STEP,))):
                pass
        size, sha = source.size, source.sha256
        total = -1 if size is None else size
        yield _Send(encode_offer(name, size, sha))
        accept: Accept = _reply((yield _RECV), Accept, "the file offer")
        offset = pos = accept.offset
        try:  # from here on the receiver waits for data: any failure must reach it as CANCEL
            if (sha is None and offset != 0) or (size is not None and offset > size):
                raise _protocol_error(f"the receiver asked to resume from offset {offset}")
            if offset:
                yield _Run(source.seek, (offset,))
            if progress is not None:
                progress(offset, total)
            while True:
                msg: bytearray | None = yield _Run(source.read_data, (pos, chunk))
                if msg is None:
                    break
                n = len(msg) - DATA_HEAD_LEN
                if size is not None and pos + n > size:
                    raise TransferError(
                        TransferCode.CANCELLED, f"{_shown(name)} grew while it was being sent"
                    )
                yield _Send(msg)
                pos += n
                if progress is not None:
                    progress(pos, total)
                early = yield _POLL
                if early is not None:
                    _reply(early, None, "a DATA message")  # raises
            if size is not None and pos != size:
                raise TransferError(
                    TransferCode.CANCELLED, f"{_shown(name)} shrank while it was being sent"
                )
            if sha is not None and offset == 0 and source.digest() != sha:
                raise TransferError(
                    TransferCode.CANCELLED, f"{_shown(name)} changed while it was being sent"
                )
        except Exception as exc:
            if _is_link_failure(exc):
                raise
            code, reason = _local_failure(exc, "sender")
            if isinstance(exc, TransferError) and exc.by_peer:
                code, reason = TransferCode.CANCELLED, "the receiver refused"
            with contextlib.suppress(Error):  # the receiver drains until it hears this
                yield _Send(encode_cancel(code, reason))
            raise
        digest = sha if sha is not None else source.digest()
        yield _Send(encode_end(pos, digest))
        done: Done = _reply((yield _RECV), Done, "the end of the file")
        if done.size != pos or done.sha256 != digest:
            raise _protocol_error("the receiver confirmed a different size or hash")
        return FileReceipt(name, pos, digest.hex(), None, offset, time.monotonic() - start)
    finally:
        source.close()


def _drain() -> Generator[_Effect, Any, None]:
    """After refusing mid-transfer: skip DATA already on its way, up to the sender's END or
    CANCEL, so that the connection is in step again."""
    while True:
        msg: bytes = yield _RECV
        if not is_file_message(msg):
            return
        try:
            if not isinstance(decode(msg), Data):
                return
        except Malformed:
            return


@dataclass(frozen=True, slots=True)
class _Receiving:
    """A receiver's choices that do not concern its directory."""

    max_size: int | None = None
    allow_hidden: bool = False
    total_timeout: float | None = None


def _open_sink(sink: _Sink, name: str, offer: Offer) -> Generator[_Effect, Any, int]:
    """Open the sink; while another transfer of the same file holds its partial file (a resume
    that raced the end of the interrupted attempt), try again for a while, pausing between
    tries without holding a thread."""
    deadline = time.monotonic() + _LOCK_WAIT
    pause, longest = _LOCK_POLL
    while True:
        offset: int | None = yield _Run(sink.open, (name, offer))
        if offset is not None:
            return offset
        left = deadline - time.monotonic()
        if left <= 0:
            raise TransferError(
                TransferCode.BUSY,
                f"{_shown(name)} is being received by another transfer; try again later",
            )
        yield _Sleep(min(pause, left))
        pause = min(pause * 2, longest)


def _receive_steps(
    make_sink: Callable[[], _Sink],
    progress: Progress | None,
    choices: _Receiving,
) -> _Steps:
    max_size = choices.max_size
    msg: bytes = yield _RECV
    start = time.monotonic()  # the transfer starts with its offer, not with the idle wait
    if choices.total_timeout is not None:
        yield _Deadline(choices.total_timeout)
    if not is_file_message(msg):
        raise UnexpectedMessage(msg)
    try:
        offer = decode(msg)
    except Malformed as bad:
        error = _protocol_error(f"a malformed file offer: {bad}")
        yield _Send(encode_refuse(error.code, error.reason))
        raise error from None
    if not isinstance(offer, Offer):
        raise UnexpectedMessage(msg, f"expected a file offer, not {kind_name(msg)}")
    sink = make_sink()
    try:
        try:
            name = check_name(offer.name, allow_hidden=choices.allow_hidden)
            if max_size is not None and offer.size is not None and offer.size > max_size:
                raise TransferError(
                    TransferCode.TOO_LARGE,
                    f"{_shown(name)} has {offer.size} bytes; the receiver takes at most {max_size}",
                )
            offset = yield from _open_sink(sink, name, offer)
            while not (yield _Run(sink.hash_prefix, (_HASH_STEP,))):
                pass
        except Exception as exc:
            if _is_link_failure(exc):
                raise
            code, reason = _local_failure(exc, "receiver")
            yield _Send(encode_refuse(code, reason))
            raise
        yield _Send(encode_accept(offset))
        total = -1 if offer.size is None else offer.size
        if progress is not None:
            progress(offset, total)
        pos = offset
        end_msg: End | None = None
        try:
            while end_msg is None:
                msg = yield _RECV
                if not is_file_message(msg):
                    raise UnexpectedMessage(msg, f"expected the rest of {_shown(name)}")
                try:
                    part = decode(msg)
                except Malformed as bad:
                    raise _protocol_error(f"a malformed message in a transfer: {bad}") from None
                if isinstance(part, End):
                    end_msg = part
                    continue
                if isinstance(part, Cancel):
                    raise TransferError(
                        TransferCode.CANCELLED,
                        f"the sender cancelled {_shown(name)}: {part.reason}",
                        by_peer=True,
                    )
                if not isinstance(part, Data):
                    raise _protocol_error(f"{kind_name(msg)} in the middle of a transfer")
                if part.offset != pos:
                    raise _protocol_error(f"data for offset {part.offset}, expected {pos}")
                end = pos + len(part.data)
                if (offer.size is not None and end > offer.size) or (
                    max_size is not None and end > max_size
                ):
                    raise TransferError(
                        TransferCode.TOO_LARGE, f"{_shown(name)} is larger than announced"
                    )
                yield _Run(sink.write, (part.data,))
                pos = end
                if progress is not None:
                    progress(pos, total)
        except Exception as exc:
            if _is_link_failure(exc) or (isinstance(exc, TransferError) and exc.by_peer):
                raise
            code, reason = _local_failure(exc, "receiver")
            yield _Send(encode_refuse(code, reason))
            if code != TransferCode.PROTOCOL:
                yield from _drain()
            raise
        digest = sink.digest()
        problem = None
        if end_msg.size != pos or (offer.size is not None and offer.size != pos):
            problem = f"{_shown(name)}: {pos} bytes arrived, the sender announced {end_msg.size}"
        elif end_msg.sha256 != digest or (offer.sha256 is not None and offer.sha256 != digest):
            problem = f"{_shown(name)}: the SHA-256 of what arrived does not match the sender's"
        if problem is not None:
            sink.discard()  # a resume from this partial would fail again
            yield _Send(encode_refuse(TransferCode.VERIFICATION_FAILED, problem))
            raise VerificationFailed(problem)
        try:
            path: Path | None = yield _Run(sink.commit)
        except Exception as exc:
            if _is_link_failure(exc):
                raise
            code, reason = _local_failure(exc, "receiver")
            yield _Send(encode_refuse(code, reason))
            raise
        yield _Send(encode_done(pos, digest))
        return FileReceipt(name, pos, digest.hex(), path, offset, time.monotonic() - start)
    finally:
        sink.close()


# --------------------------------------------------------------------------------------------
# The public methods, once for asyncio and once blocking.


def _chunk(chunk_size: int, limit: int) -> int:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return max(1, min(chunk_size, limit - _CHUNK_MARGIN))


def _max_size(max_size: int | None) -> int | None:
    if max_size is not None and (
        not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 0
    ):
        raise ConfigError(f"max_size must be a non-negative integer or None, got {max_size!r}")
    return max_size


def _count(value: int, what: str, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{what} must be an integer of at least {low}, got {value!r}")
    return value


def check_mode(mode: int) -> int:
    """``mode`` if it is a valid permission mode for received files: 0o000-0o777 (no setuid,
    setgid or sticky bit) and readable and writable by the owner (a resume reopens the file)."""
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o777:
        raise ConfigError(f"mode must be a permission mode between 0o000 and 0o777, got {mode!r}")
    if mode & 0o600 != 0o600:
        raise ConfigError(f"mode must let the owner read and write (0o600), got {mode:#o}")
    return mode


def _receiving(max_size: int | None, allow_hidden: bool, total_timeout: float | None) -> _Receiving:
    if total_timeout is not None and (
        not isinstance(total_timeout, int | float)
        or isinstance(total_timeout, bool)
        or not 0 < total_timeout < float("inf")
    ):
        raise ConfigError(
            f"total_timeout must be a positive number of seconds or None, got {total_timeout!r}"
        )
    return _Receiving(_max_size(max_size), bool(allow_hidden), total_timeout)


def _file_steps(
    path: str | os.PathLike[str],
    name: str | None,
    progress: Progress | None,
    chunk: int,
    resume: bool,
) -> _Steps:
    # A hidden name is the receiver's to refuse (it may have opted in): not checked here.
    name = check_name(
        os.path.basename(os.fspath(path)) if name is None else name, allow_hidden=True
    )
    return _send_steps(functools.partial(_open_file, path, resume), name, resume, progress, chunk)


def _stream_steps(
    fileobj: Readable, name: str, size: int | None, progress: Progress | None, chunk: int
) -> _Steps:
    if size is not None and (not isinstance(size, int) or not 0 <= size <= _MAX_SIZE):
        raise ConfigError(f"size must be a non-negative integer or None, got {size!r}")

    def open_source() -> _Source:
        source = _Source(fileobj, owned=False)
        source.size = size
        return source

    return _send_steps(open_source, check_name(name, allow_hidden=True), False, progress, chunk)


def _dest_steps(
    dest_dir: str | os.PathLike[str],
    overwrite: bool,
    progress: Progress | None,
    choices: _Receiving,
    limits: _DirLimits,
) -> _Steps:
    dest = Path(dest_dir)
    if not dest.is_dir():  # before a message is taken: nothing is lost
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(dest))
    return _receive_steps(lambda: _DirSink(dest, overwrite, limits), progress, choices)


def _dir_limits(
    mode: int, max_partials: int, max_partial_bytes: int, min_free_space: int
) -> _DirLimits:
    return _DirLimits(
        check_mode(mode),
        _count(max_partials, "max_partials", 1),
        _count(max_partial_bytes, "max_partial_bytes"),
        _count(min_free_space, "min_free_space"),
    )


class AsyncTransfers:
    """File transfer methods of ``argonlink.Connection`` and ``argonlink.Client``."""

    __slots__ = ()

    async def send_file(
        self: _AsyncPeer,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        progress: Progress | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        resume: bool = True,
        timeout: float | None = None,
    ) -> FileReceipt:
        """Send the file at ``path`` to the peer, which must be in ``recv_file``.

        Returns once the receiver has verified the whole file's SHA-256, fsynced it and moved it
        into place, so a returned receipt means the file is durably there. ``name`` is what the
        receiver calls it (default: the file's own name; it must pass
        :func:`~argonlink.check_name`). ``progress(done, total)`` is called as chunks are queued.
        ``timeout`` bounds each single wait for the peer (a reply, or room in the send buffer), not
        the whole transfer.

        With ``resume`` (the default) the file is hashed first, and a transfer that was cut off is
        resumed by calling ``send_file`` again on a new connection: the receiver kept what arrived
        and asks only for the rest. ``resume=False`` skips that first read of the file.

        Raises :class:`~argonlink.TransferError` (a subclass for a refused name, an existing file, a
        failed verification) when either side refuses, ``OSError`` when the file cannot be read, and
        :class:`~argonlink.ConnectionClosed` / :class:`~argonlink.Timeout` when the link fails;
        after those two, close the connection (the receiver keeps its partial file for a resume). A
        ``progress`` callback that raises cancels the transfer (the receiver is told)."""
        chunk = _chunk(chunk_size, self._peer_message_limit())
        return await _run_async(_file_steps(path, name, progress, chunk, resume), self, timeout)

    async def recv_file(
        self: _AsyncPeer,
        dest_dir: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
        max_size: int | None = None,
        timeout: float | None = None,
        total_timeout: float | None = None,
        mode: int = DEFAULT_FILE_MODE,
        allow_hidden: bool = False,
        max_partials: int = DEFAULT_MAX_PARTIALS,
        max_partial_bytes: int = DEFAULT_MAX_PARTIAL_BYTES,
        min_free_space: int = DEFAULT_MIN_FREE_SPACE,
    ) -> FileReceipt:
        """Receive one file (from ``send_file`` or ``send_stream``) into ``dest_dir``.

        The data goes to a hidden partial file in ``dest_dir``; only after the whole file's SHA-256
        is verified is it fsynced and moved to its name, atomically and, unless ``overwrite``, never
        over an existing file. An unsafe name (a path, a device name, control characters, ...) is
        refused and nothing is written; so is a name starting with ``.`` unless ``allow_hidden``.
        ``max_size`` refuses larger files. Every refusal is also reported to the sender, and the
        connection stays usable.

        The file is created with permissions ``mode`` (default 0o600: only its owner may read
        it), exactly, whatever the umask and the sender's copy. Limits against filling the disk
        (docs/PROTOCOL.md, "Receiver" and "Limits"): before a new partial file is made, the
        partial files already in ``dest_dir`` must be fewer than ``max_partials`` and hold at
        most ``max_partial_bytes`` (the oldest that no transfer is using are removed to make
        room; if live transfers fill the quota the offer is refused as BUSY); and the transfer
        is refused as TOO_LARGE, at the offer or while writing, when what is still to come would
        leave less than ``min_free_space`` bytes free.

        If the first message is not a file offer, raises :class:`~argonlink.UnexpectedMessage`,
        which carries it as ``.message``. Raises :class:`~argonlink.TransferError` subclasses for
        refusals, :class:`~argonlink.ConnectionClosed` / :class:`~argonlink.Timeout` when the link
        fails (``timeout`` bounds each single wait; ``total_timeout`` the whole transfer, from
        its offer on: after that Timeout, close the connection). A partial file of a resumable
        transfer stays for the sender's next attempt; :func:`~argonlink.remove_stale_partials`
        removes old ones."""
        limits = _dir_limits(mode, max_partials, max_partial_bytes, min_free_space)
        choices = _receiving(max_size, allow_hidden, total_timeout)
        steps = _dest_steps(dest_dir, overwrite, progress, choices, limits)
        return await _run_async(steps, self, timeout)

    async def send_stream(
        self: _AsyncPeer,
        fileobj: Readable,
        name: str,
        *,
        size: int | None = None,
        progress: Progress | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: float | None = None,
    ) -> FileReceipt:
        """Send a binary file-like object, from its current position to its end, as a file called
        ``name``. ``size``, if given, is announced (the receiver shows progress against it and
        refuses anything else). The SHA-256 is computed while sending and checked by the receiver at
        the end. Streams are not resumable: an interrupted stream is sent again from the start.
        Otherwise as :meth:`send_file`."""
        chunk = _chunk(chunk_size, self._peer_message_limit())
        return await _run_async(_stream_steps(fileobj, name, size, progress, chunk), self, timeout)

    async def recv_stream(
        self: _AsyncPeer,
        fileobj: Writable,
        *,
        progress: Progress | None = None,
        max_size: int | None = None,
        timeout: float | None = None,
        total_timeout: float | None = None,
        allow_hidden: bool = False,
    ) -> FileReceipt:
        """Receive one file (from ``send_file`` or ``send_stream``) into a binary file-like object,
        written as it arrives. Verification happens at the end: if this raises, discard what was
        written. Resuming is not offered (the receiver asks for everything), and no partial file
        is made (so the directory limits of :meth:`recv_file` do not apply). Otherwise as
        :meth:`recv_file`; the receipt's ``path`` is None."""
        choices = _receiving(max_size, allow_hidden, total_timeout)
        steps = _receive_steps(lambda: _StreamSink(fileobj), progress, choices)
        return await _run_async(steps, self, timeout)


class BlockingTransfers:
    """File transfer methods of ``argonlink.sync.Connection`` and ``argonlink.sync.Client``."""

    __slots__ = ()

    def send_file(
        self: _BlockingPeer,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        progress: Progress | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        resume: bool = True,
        timeout: float | None = None,
    ) -> FileReceipt:
        """See :meth:`argonlink.Connection.send_file`."""
        chunk = _chunk(chunk_size, self._peer_message_limit())
        return _run_blocking(_file_steps(path, name, progress, chunk, resume), self, timeout)

    def recv_file(
        self: _BlockingPeer,
        dest_dir: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
        max_size: int | None = None,
        timeout: float | None = None,
        total_timeout: float | None = None,
        mode: int = DEFAULT_FILE_MODE,
        allow_hidden: bool = False,
        max_partials: int = DEFAULT_MAX_PARTIALS,
        max_partial_bytes: int = DEFAULT_MAX_PARTIAL_BYTES,
        min_free_space: int = DEFAULT_MIN_FREE_SPACE,
    ) -> FileReceipt:
        """See :meth:`argonlink.Connection.recv_file`."""
        limits = _dir_limits(mode, max_partials, max_partial_bytes, min_free_space)
        choices = _receiving(max_size, allow_hidden, total_timeout)
        steps = _dest_steps(dest_dir, overwrite, progress, choices, limits)
        return _run_blocking(steps, self, timeout)

    def send_stream(
        self: _BlockingPeer,
        fileobj: Readable,
        name: str,
        *,
        size: int | None = None,
        progress: Progress | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: float | None = None,
    ) -> FileReceipt:
        """See :meth:`argonlink.Connection.send_stream`."""
        chunk = _chunk(chunk_size, self._peer_message_limit())
        return _run_blocking(_stream_steps(fileobj, name, size, progress, chunk), self, timeout)

    def recv_stream(
        self: _BlockingPeer,
        fileobj: Writable,
        *,
        progress: Progress | None = None,
        max_size: int | None = None,
        timeout: float | None = None,
        total_timeout: float | None = None,
        allow_hidden: bool = False,
    ) -> FileReceipt:
        """See :meth:`argonlink.Connection.recv_stream`."""
        choices = _receiving(max_size, allow_hidden, total_timeout)
        steps = _receive_steps(lambda: _StreamSink(fileobj), progress, choices)
        return _run_blocking(steps, self, timeout)
