"""The public methods, once for asyncio (:class:`AsyncTransfers`) and once blocking
(:class:`BlockingTransfers`), and the checks of their arguments.

Separate because this is the façade the connection and client classes inherit: it checks
what the caller passed, builds the steps with a source or a sink, and hands them to a driver.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
from pathlib import Path
from typing import Any, Final, Protocol

from ..exceptions import ConfigError
from .defaults import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_FILE_MODE,
    DEFAULT_MAX_PARTIAL_BYTES,
    DEFAULT_MAX_PARTIALS,
    DEFAULT_MIN_FREE_SPACE,
)
from .directory import (
    DEFAULT_LANES,
    MAX_LANES,
    _Received,
    recv_dir_async,
    recv_dir_blocking,
    send_dir_async,
    send_dir_blocking,
)
from .effects import _Steps
from .names import check_name
from .receipt import DirReceipt, FileReceipt, Progress
from .runner import _AsyncStream, _BlockingStream, _run_async, _run_blocking
from .sink import Writable, _DirLimits, _DirSink, _StreamSink
from .source import Readable, _open_file, _Source
from .steps import _receive_steps, _Receiving, _send_steps
from .wire import _MAX_SIZE


class _AsyncPeer(Protocol):
    """A connection or a client, as the transfer methods see it."""

    def _peer_message_limit(self) -> int: ...
    async def _lanes(self, timeout: float | None) -> Any: ...
    def _file_stream(
        self, incoming: bool, timeout: float | None
    ) -> contextlib.AbstractAsyncContextManager[_AsyncStream]: ...


class _BlockingPeer(Protocol):
    def _peer_message_limit(self) -> int: ...
    def _lanes(self, timeout: float | None) -> Any: ...
    def _file_stream(
        self, incoming: bool, timeout: float | None
    ) -> contextlib.AbstractContextManager[_BlockingStream]: ...


def _peer_of(side: object) -> str | None:
    """The identity the peer authenticated as, which a resumable partial file belongs to."""
    identity = getattr(side, "peer_identity", None)
    return identity if isinstance(identity, str) else None


#: A chunk leaves this much room below the peer's message limit (for the DATA header and for
#: any framing a wrapping client might add).
_CHUNK_MARGIN: Final = 64


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
    return _send_steps(functools.partial(_open_file, path, resume), name, progress, chunk)


def _stream_steps(
    fileobj: Readable, name: str, size: int | None, progress: Progress | None, chunk: int
) -> _Steps:
    if size is not None and (not isinstance(size, int) or not 0 <= size <= _MAX_SIZE):
        raise ConfigError(f"size must be a non-negative integer or None, got {size!r}")

    def open_source() -> _Source:
        return _Source(fileobj, owned=False, size=size)

    return _send_steps(open_source, check_name(name, allow_hidden=True), progress, chunk)


def _dest_steps(
    dest_dir: str | os.PathLike[str],
    overwrite: bool,
    progress: Progress | None,
    choices: _Receiving,
    limits: _DirLimits,
    peer: str | None,
) -> _Steps:
    dest = Path(dest_dir)
    if not dest.is_dir():  # before a message is taken: nothing is lost
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(dest))
    return _receive_steps(lambda: _DirSink(dest, overwrite, limits, peer), progress, choices)


def _dir_limits(
    mode: int, max_partials: int, max_partial_bytes: int, min_free_space: int
) -> _DirLimits:
    return _DirLimits(
        check_mode(mode),
        _count(max_partials, "max_partials", 1),
        _count(max_partial_bytes, "max_partial_bytes"),
        _count(min_free_space, "min_free_space"),
    )


def _dir_name(path: str | os.PathLike[str], name: str | None) -> tuple[Path, str]:
    root = Path(path)
    if name is None:
        name = root.resolve().name
    return root, check_name(name, allow_hidden=True)


def _lanes(lanes: int) -> int:
    return _count(lanes, "lanes", 1) and min(lanes, MAX_LANES)


def _dir_receiving(
    dest_dir: str | os.PathLike[str],
    peer: object,
    overwrite: bool,
    progress: Progress | None,
    choices: _Receiving,
    limits: _DirLimits,
) -> _Received:
    dest = Path(dest_dir)
    if not dest.is_dir():  # before a channel is taken: nothing is lost
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(dest))
    return _Received(dest, overwrite, limits, _peer_of(peer), choices, progress)


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

        The file is read once, hashed as it is sent. The transfer runs on a channel of its own,
        so messages and other transfers move beside it. With ``resume`` (the default) a transfer
        that was cut off is resumed by calling ``send_file`` again (usually on a new
        connection): the receiver kept what arrived, and the rest follows once the sender has
        checked that what was kept is this file's first bytes. ``resume=False``: the receiver
        deletes what arrived of an interrupted transfer.

        Raises :class:`~argonlink.TransferError` (a subclass for a refused name, an existing file, a
        failed verification) when either side refuses, ``OSError`` when the file cannot be read, and
        :class:`~argonlink.ConnectionClosed` when the link fails (the receiver keeps its partial
        file for a resume) and :class:`~argonlink.Timeout` when a wait takes too long (the
        transfer is abandoned, the receiver is told, the connection carries on). A ``progress``
        callback that raises cancels the transfer (the receiver is told)."""
        chunk = _chunk(chunk_size, self._peer_message_limit())
        steps = _file_steps(path, name, progress, chunk, resume)
        async with self._file_stream(False, timeout) as stream:
            return await _run_async(steps, stream, timeout)

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

        The transfer comes on a channel of its own; plain messages stay for ``recv``. (On an
        exactly-once session, which carries no channels yet, it comes among the messages: a
        message that is not a file offer then raises :class:`~argonlink.UnexpectedMessage`,
        which carries it as ``.message``.) Raises :class:`~argonlink.TransferError` subclasses
        for refusals, :class:`~argonlink.ConnectionClosed` when the link fails and
        :class:`~argonlink.Timeout` when ``timeout`` (each single wait) or ``total_timeout``
        (the whole transfer, from its offer on) passes: the transfer is abandoned, the sender
        is told, and the connection carries on. A partial file of a resumable
        transfer stays for the sender's next attempt; :func:`~argonlink.remove_stale_partials`
        removes old ones."""
        limits = _dir_limits(mode, max_partials, max_partial_bytes, min_free_space)
        choices = _receiving(max_size, allow_hidden, total_timeout)
        steps = _dest_steps(dest_dir, overwrite, progress, choices, limits, _peer_of(self))
        async with self._file_stream(True, timeout) as stream:
            return await _run_async(steps, stream, timeout)

    async def send_dir(
        self: _AsyncPeer,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        progress: Progress | None = None,
        lanes: int = DEFAULT_LANES,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: float | None = None,
    ) -> DirReceipt:
        """Send the directory at ``path`` (its regular files, in all its folders) to the peer,
        which must be in ``recv_dir``; it arrives as ``DEST/NAME`` (``name`` defaults to the
        directory's own name).

        Each file gets the guarantees of :meth:`send_file` (verified, durable, resumable); up
        to ``lanes`` files (at most 16) move at once, each lane a channel of its own. Returns
        once the receiver has every file and has confirmed a manifest of all of them.
        ``progress(files_done, files_total)`` is called as files finish. Symlinks, devices
        and sockets are not sent (``receipt.skipped``); empty folders are not made.

        Sending a directory again after a cut delivers what is missing: files already there
        with the same content are kept (compared by SHA-256), partial files resume. Raises
        :class:`~argonlink.IncompleteDirectory` (with the receipt) when some files were not
        delivered, and like :meth:`send_file` otherwise."""
        root, dir_name = _dir_name(path, name)
        chunk = _chunk(chunk_size, self._peer_message_limit())
        conn = await self._lanes(timeout)
        return await send_dir_async(conn, root, dir_name, _lanes(lanes), chunk, progress, timeout)

    async def recv_dir(
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
    ) -> DirReceipt:
        """Receive one directory (from ``send_dir``) into ``dest_dir``, as
        ``dest_dir/NAME/...``: each file as :meth:`recv_file` receives one (the same checks of
        every name and folder, limits, permissions, verification and atomic placement; folders
        are made as needed, readable by whom the files are). ``max_size`` and
        ``total_timeout`` apply to each file; the partial files stay in ``dest_dir`` itself,
        under its quota. ``progress(files_done, files_total)`` as files finish. Raises
        :class:`~argonlink.IncompleteDirectory` (with the receipt) when some files were
        refused."""
        limits = _dir_limits(mode, max_partials, max_partial_bytes, min_free_space)
        choices = _receiving(max_size, allow_hidden, total_timeout)
        state = _dir_receiving(dest_dir, self, overwrite, progress, choices, limits)
        conn = await self._lanes(timeout)
        return await recv_dir_async(conn, state, timeout)

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
        steps = _stream_steps(fileobj, name, size, progress, chunk)
        async with self._file_stream(False, timeout) as stream:
            return await _run_async(steps, stream, timeout)

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
        async with self._file_stream(True, timeout) as stream:
            return await _run_async(steps, stream, timeout)


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
        steps = _file_steps(path, name, progress, chunk, resume)
        with self._file_stream(False, timeout) as stream:
            return _run_blocking(steps, stream, timeout)

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
        steps = _dest_steps(dest_dir, overwrite, progress, choices, limits, _peer_of(self))
        with self._file_stream(True, timeout) as stream:
            return _run_blocking(steps, stream, timeout)

    def send_dir(
        self: _BlockingPeer,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        progress: Progress | None = None,
        lanes: int = DEFAULT_LANES,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: float | None = None,
    ) -> DirReceipt:
        """See :meth:`argonlink.Connection.send_dir` (the lanes are threads)."""
        root, dir_name = _dir_name(path, name)
        chunk = _chunk(chunk_size, self._peer_message_limit())
        conn = self._lanes(timeout)
        return send_dir_blocking(conn, root, dir_name, _lanes(lanes), chunk, progress, timeout)

    def recv_dir(
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
    ) -> DirReceipt:
        """See :meth:`argonlink.Connection.recv_dir` (the lanes are threads)."""
        limits = _dir_limits(mode, max_partials, max_partial_bytes, min_free_space)
        choices = _receiving(max_size, allow_hidden, total_timeout)
        state = _dir_receiving(dest_dir, self, overwrite, progress, choices, limits)
        return recv_dir_blocking(self._lanes(timeout), state, timeout)

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
        steps = _stream_steps(fileobj, name, size, progress, chunk)
        with self._file_stream(False, timeout) as stream:
            return _run_blocking(steps, stream, timeout)

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
        with self._file_stream(True, timeout) as stream:
            return _run_blocking(steps, stream, timeout)
