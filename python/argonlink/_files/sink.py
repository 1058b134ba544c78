"""Writing: the receiver's side of the disk. The directory sink (a locked partial file per
transfer, resumable; the directory's quota of partial files; the free-space reserve; fsync and
an atomic no-clobber move into place), the stream sink, and :func:`remove_stale_partials`.

Separate because all of the receiver's file-system rules live here, apart from the protocol
that decides when to apply them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import os
import re
import secrets
import shutil
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from ..exceptions import DestinationExists, TransferCode, TransferError
from .defaults import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_FILE_MODE,
    DEFAULT_MAX_PARTIAL_BYTES,
    DEFAULT_MAX_PARTIALS,
    DEFAULT_MIN_FREE_SPACE,
    PARTIAL_SUFFIX,
)
from .names import _shown
from .wire import _U64, Offer

if sys.platform != "win32":
    import fcntl

_SPACE_STEP: Final = 16 << 20  # bytes written between two checks of the free space


class Writable(Protocol):
    """A binary file-like object to receive into."""

    def write(self, data: bytes, /) -> object: ...


def _partial_name(name: str, key: str) -> str:
    suffix = f".{key}{PARTIAL_SUFFIX}"
    room = 255 - 1 - len(suffix)
    stem = name.encode()[:room].decode("utf-8", "ignore")
    return f".{stem}{suffix}"


_PARTIAL = re.compile(r"\..*\.[0-9a-f]{32}" + re.escape(PARTIAL_SUFFIX), re.DOTALL)


def _partial_key(path: str, size: int, peer: str | None) -> str:
    """A resumable partial belongs to one (path, size, peer): a transfer of another size or from
    another peer never finds it. Whether its bytes are the sender's own is settled at ACCEPT
    (the sender compares the hash of what is kept with its own first bytes)."""
    who = b"" if peer is None else peer.encode()
    material = b"argonlink partial\0" + path.encode() + b"\0" + _U64.pack(size) + b"\0" + who
    return hashlib.sha256(material).hexdigest()[:32]


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # no advisory locks: concurrent receivers are not detected
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
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
    def have(self, name: str, offer: Offer) -> bool: ...
    def same_as(self, name: str, sha256: bytes) -> bool: ...
    def final_path(self, name: str) -> Path | None: ...
    def open(self, name: str, offer: Offer) -> int | None: ...
    def hash_prefix(self, limit: int) -> bool: ...
    def challenge(self) -> bytes: ...
    def proves(self, mac: bytes) -> bool: ...
    def restart(self) -> None: ...
    def write(self, data: memoryview) -> None: ...
    def digest(self) -> bytes: ...
    def commit(self) -> Path | None: ...
    def discard(self) -> None: ...
    def close(self) -> None: ...


_DIR_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_DIRECTORY", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def _dir_mode(mode: int) -> int:
    """Folders made for received files: readable (and so searchable) by whom the files are."""
    return mode | (mode & 0o444) >> 2


def _open_folders(dest: Path, folders: tuple[str, ...], mode: int, create: bool) -> int | None:
    """A descriptor of ``dest/folders...``, each folder opened without following a symlink
    (one in the way fails: nothing is ever written outside ``dest``), made with ``mode`` if
    missing and ``create``; None if one is missing and not ``create``."""
    fd = os.open(dest, _DIR_FLAGS)
    try:
        for folder in folders:
            try:
                inner = os.open(folder, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(folder, mode, dir_fd=fd)
                    os.fsync(fd)  # the new folder's name is durable before a file is in it
                inner = os.open(folder, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


class _DirSink:
    """Receives into ``dest/.NAME.<key>.argonlink-part``; after verification, fsync and an
    atomic no-clobber move to ``dest/NAME`` (in a directory transfer, to
    ``dest/DIRECTORY/FOLDERS.../NAME``: the partial files stay in ``dest``, where the quota is
    kept)."""

    def __init__(
        self,
        dest: Path,
        overwrite: bool,
        limits: _DirLimits,
        peer: str | None = None,
        root: tuple[str, ...] = (),
    ) -> None:
        self._dest = dest
        self._peer = peer
        self._root = root
        self._folders: tuple[str, ...] = ()
        self._overwrite = overwrite
        self._limits = limits
        self._fd: int | None = None
        self._part: Path | None = None
        self._final: Path | None = None
        self._name = ""
        self._keep = False  # a resumable partial outlives an interrupted transfer
        self._hash = hashlib.sha256()
        self._hashed = 0
        # A fresh key per transfer: the sender proves it has the kept bytes without this side
        # revealing anything of them (a hash of them would let a peer test guesses, or extend
        # it into a valid END for the kept bytes plus its own).
        self._challenge = secrets.token_bytes(32)
        self._proof = hmac.new(self._challenge, digestmod="sha256")
        self._offset = 0
        self._remaining: int | None = None  # bytes still to come, if the size is known
        self._unchecked = 0  # bytes written since the free space was last checked

    def _final_stat(self, final: Path, name: str) -> os.stat_result | None:
        if not self._folders:
            try:
                return os.lstat(final)
            except FileNotFoundError:
                return None
        folder = _open_folders(self._dest, self._folders, 0, create=False)
        if folder is None:
            return None
        try:
            return os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(folder)

    def have(self, name: str, offer: Offer) -> bool:
        """In a directory transfer: a regular file of the offer's size is there already (a
        directory sent again after a cut); the sender then sends only END, to compare."""
        self._folders = (*self._root, *offer.folders)
        if not self._root or self._overwrite or offer.size is None:
            return False
        st = self._final_stat(self._dest.joinpath(*self._folders, name), name)
        return st is not None and stat.S_ISREG(st.st_mode) and st.st_size == offer.size

    def final_path(self, name: str) -> Path:
        return self._dest.joinpath(*self._folders, name)

    def same_as(self, name: str, sha256: bytes) -> bool:
        """Whether the file that is there already has this SHA-256."""
        folder = _open_folders(self._dest, self._folders, 0, create=False)
        if folder is None:
            return False
        try:
            fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=folder)
        finally:
            os.close(folder)
        digest = hashlib.sha256()
        try:
            while data := os.read(fd, DEFAULT_CHUNK_SIZE):
                digest.update(data)
        finally:
            os.close(fd)
        return hmac.compare_digest(digest.digest(), sha256)

    def _check_destination(self, final: Path, name: str) -> None:
        st = self._final_stat(final, name)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            raise DestinationExists(f"{_shown(name)} exists at the receiver and is a directory")
        if not self._overwrite:
            raise DestinationExists(f"{_shown(name)} already exists at the receiver")

    def open(self, name: str, offer: Offer) -> int | None:
        """Open and lock the partial file; its length (where the sender continues), or None
        while another transfer of the same file holds it (the caller tries again)."""
        self._folders = (*self._root, *offer.folders)
        final = self._dest.joinpath(*self._folders, name)
        self._check_destination(final, name)
        resumable = offer.resume and offer.size is not None
        if offer.resume and offer.size is not None:
            key = _partial_key("/".join((*self._folders, name)), offer.size, self._peer)
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
            self._proof.update(data)
            self._hashed += len(data)
        if self._hashed < self._offset:
            return False
        os.lseek(self._fd, self._offset, os.SEEK_SET)
        return True

    def challenge(self) -> bytes:
        return self._challenge

    def proves(self, mac: bytes) -> bool:
        """Whether the sender's PROOF is of the bytes the partial file kept (its first bytes
        are ours: the transfer resumes), rather than of another file's."""
        return hmac.compare_digest(self._proof.digest(), mac)

    def restart(self) -> None:
        """The sender's first bytes differ from what the partial file kept: empty it."""
        assert self._fd is not None
        if self._remaining is not None:
            self._remaining += self._offset
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._hash = hashlib.sha256()
        self._hashed = self._offset = 0

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
        if self._folders:
            self._commit_into_folder(part, final.name)
        elif self._overwrite:
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
        if not self._folders:
            self._part = None  # moved: nothing left to clean up
            _fsync_dir(self._dest)
        self.close()
        return final

    def _commit_into_folder(self, part: Path, name: str) -> None:
        """The move into place of a directory transfer's file, through descriptors of its
        folders (made as needed, never through a symlink)."""
        folder = _open_folders(self._dest, self._folders, _dir_mode(self._limits.mode), True)
        assert folder is not None
        top = os.open(self._dest, _DIR_FLAGS)
        try:
            if self._overwrite:
                os.replace(part.name, name, src_dir_fd=top, dst_dir_fd=folder)
            else:
                try:
                    os.link(
                        part.name, name, src_dir_fd=top, dst_dir_fd=folder, follow_symlinks=False
                    )
                except FileExistsError:
                    self.discard()
                    raise DestinationExists(
                        f"{_shown(self._name)} already exists at the receiver"
                    ) from None
                os.unlink(part.name, dir_fd=top)
            self._part = None
            os.fsync(folder)
        finally:
            os.close(top)
            os.close(folder)

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

    def have(self, name: str, offer: Offer) -> bool:
        return False

    def same_as(self, name: str, sha256: bytes) -> bool:  # pragma: no cover - never has one
        return False

    def final_path(self, name: str) -> None:
        return None

    def open(self, name: str, offer: Offer) -> int | None:
        return 0

    def hash_prefix(self, limit: int) -> bool:
        return True

    def challenge(self) -> bytes:
        return bytes(32)  # never used: a stream is received from offset 0

    def proves(self, mac: bytes) -> bool:  # pragma: no cover - no PROOF at offset 0
        return False

    def restart(self) -> None:  # pragma: no cover - a stream sink accepts at 0: no restart
        raise AssertionError("a stream is received from its first byte")

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
