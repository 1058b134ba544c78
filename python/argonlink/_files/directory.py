"""Directories: ``send_dir`` / ``recv_dir``, many file transfers in parallel lanes.

A directory transfer is announced on a channel of its own (``argonlink.dir``): DIRECTORY
{name, files, size}, answered by ACCEPT (or REFUSE). Its files then travel on up to ``lanes``
channels named ``argonlink.dir/<id>`` (the announcing channel's id), each carrying one file
transfer after another with the ordinary protocol, so a directory of many small files is not
one round trip and one fsync after another. At the end the sender sends END {files delivered,
manifest} on the announcing channel and the receiver, which computed the same manifest over
what it stored, answers DONE or REFUSE 3. See docs/PROTOCOL.md, "Directories".

Separate because it only arranges transfers (the walk, the lanes, the manifest); each file's
protocol is the one in :mod:`.steps`, and its disk side the one in :mod:`.sink`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import hmac
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from ..exceptions import (
    ChannelError,
    ChannelFinished,
    DestinationExists,
    Error,
    IncompleteDirectory,
    Timeout,
    TransferCode,
    TransferError,
    UnsafeName,
)
from .names import _shown, check_name
from .receipt import DirReceipt, FileReceipt
from .runner import _BlockingStream, _in_thread, _run_async, _run_blocking
from .sink import _dir_mode, _DirLimits, _DirSink, _open_folders
from .source import _open_file
from .steps import _protocol_error, _receive_steps, _Receiving, _reply, _send_steps
from .wire import (
    MAX_DEPTH,
    Accept,
    Directory,
    Done,
    End,
    Malformed,
    Offer,
    decode,
    encode_accept,
    encode_directory,
    encode_done,
    encode_end,
    encode_refuse,
    is_file_message,
)

DIR_CHANNEL: Final = "argonlink.dir"
DEFAULT_LANES: Final = 8
#: The most lanes a receiver takes for one directory; more are reset (a bound on the threads or
#: tasks, and the open partial files, one directory transfer can make a receiver hold).
MAX_LANES: Final = 16
#: How often a blocking receiver looks for new lanes while it waits for the directory's end.
_LANE_POLL: Final = 0.05
_EMPTY: Final = hashlib.sha256().digest()


def lane_name(channel_id: int) -> str:
    return f"{DIR_CHANNEL}/{channel_id}"


@dataclass(frozen=True, slots=True)
class _Entry:
    path: Path  # on the sender's disk
    folders: tuple[str, ...]
    name: str
    size: int

    @property
    def rel(self) -> str:
        return "/".join((*self.folders, self.name))


def _walk(root: Path) -> tuple[list[_Entry], list[str]]:
    """The regular files under ``root`` (sorted by path, names checked), and the paths of what
    is neither a file nor a folder (symlinks, devices, sockets: never sent)."""
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")
    entries: list[_Entry] = []
    skipped: list[str] = []
    stack: list[tuple[tuple[str, ...], Path]] = [((), root)]
    while stack:
        folders, here = stack.pop()
        if len(folders) > MAX_DEPTH:
            raise UnsafeName(f"{'/'.join(folders)} is nested deeper than {MAX_DEPTH} folders")
        with os.scandir(here) as found:
            for item in found:
                rel = (*folders, item.name)
                st = item.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    check_name(item.name, allow_hidden=True)
                    stack.append((rel, Path(item.path)))
                elif stat.S_ISREG(st.st_mode):
                    check_name(item.name, allow_hidden=True)
                    entries.append(_Entry(Path(item.path), folders, item.name, st.st_size))
                else:
                    skipped.append("/".join(rel))
    entries.sort(key=lambda e: e.rel)
    return entries, sorted(skipped)


def _manifest(files: dict[str, FileReceipt]) -> bytes:
    """SHA-256 over every delivered file's path and hash, in path order: what both sides
    compare at the end."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + bytes.fromhex(files[rel].sha256) + b"\n")
    return digest.digest()


def _size(files: dict[str, FileReceipt]) -> int:
    return sum(r.size for r in files.values())


def _first_failure(failed: dict[str, BaseException]) -> tuple[int, str]:
    rel, exc = next(iter(failed.items()))
    code = exc.code if isinstance(exc, TransferError) else TransferCode.IO_ERROR
    return code, f"{len(failed)} file(s) not delivered; the first, {_shown(rel)}: {exc}"


class _Lanes(Protocol):
    """The connection side of a directory transfer (the asyncio connection classes)."""

    async def _open_reserved(self, name: str, timeout: float | None) -> Any: ...
    async def _accept_reserved(self, name: str, timeout: float | None) -> Any: ...
    def _listen(self, name: str) -> None: ...
    def _unlisten(self, name: str) -> None: ...


class _BlockingLanes(Protocol):
    def _open_reserved(self, name: str, timeout: float | None) -> Any: ...
    def _accept_reserved(self, name: str, timeout: float | None) -> Any: ...
    def _listen(self, name: str) -> None: ...
    def _unlisten(self, name: str) -> None: ...


def _end(channel: Any, exc: BaseException | None) -> None:
    """End a channel of the transfer (FIN or RESET, see ``ChannelInfo._end_transfer``)."""
    with contextlib.suppress(TransferError):
        channel._end_transfer(exc)


class _Sending:
    """The files still to send, shared by the lanes, and what became of each."""

    def __init__(self, entries: list[_Entry], progress: Callable[[int, int], None] | None) -> None:
        self._todo = iter(entries)
        self._lock = threading.Lock()
        self.total = len(entries)
        self.files: dict[str, FileReceipt] = {}
        self.failed: dict[str, BaseException] = {}
        self._progress = progress

    def next(self) -> _Entry | None:
        with self._lock:
            return next(self._todo, None)

    def done(self, entry: _Entry, outcome: FileReceipt | BaseException) -> None:
        with self._lock:
            if isinstance(outcome, FileReceipt):
                self.files[entry.rel] = outcome
            else:
                self.failed[entry.rel] = outcome
            count = len(self.files) + len(self.failed)
        if self._progress is not None:
            self._progress(count, self.total)

    def leftovers(self, why: BaseException) -> None:
        """Files no lane could take (every lane ended): not delivered."""
        while (entry := self.next()) is not None:
            self.failed[entry.rel] = why


def _file_steps(entry: _Entry, chunk: int) -> Any:
    return _send_steps(
        functools.partial(_open_file, entry.path, True), entry.name, None, chunk, entry.folders
    )


def _lane_over(exc: BaseException) -> bool:
    """After this, the lane's channel is out of step (or gone): it takes no more files. A
    refusal, or this side's trouble with one file's disk, ends that file only."""
    if isinstance(exc, TransferError):
        return exc.code == TransferCode.PROTOCOL
    return isinstance(exc, Error) or not isinstance(exc, OSError | ValueError)


def _sent_receipt(name: str, sending: _Sending, skipped: list[str], start: float) -> DirReceipt:
    files = dict(sorted(sending.files.items()))
    receipt = DirReceipt(
        name, files, sending.failed, tuple(skipped), None, _size(files), time.monotonic() - start
    )
    if sending.failed:
        code, reason = _first_failure(sending.failed)
        raise IncompleteDirectory(code, reason, receipt)
    return receipt


async def send_dir_async(
    conn: _Lanes,
    root: Path,
    name: str,
    lanes: int,
    chunk: int,
    progress: Callable[[int, int], None] | None,
    timeout: float | None,
) -> DirReceipt:
    start = time.monotonic()
    entries, skipped = await _in_thread(_walk, (root,))
    sending = _Sending(entries, progress)
    announce = await conn._open_reserved(DIR_CHANNEL, timeout)
    failure: BaseException | None = None
    try:
        total = sum(e.size for e in entries)
        await announce.send(encode_directory(name, len(entries), total), timeout=timeout)
        _reply(await announce.recv(timeout), Accept, "the directory offer")
        lane = lane_name(announce.id)

        async def run_lane() -> None:
            entry = sending.next()
            if entry is None:
                return
            channel = await conn._open_reserved(lane, timeout)
            error: BaseException | None = None
            try:
                while entry is not None:
                    try:
                        receipt = await _run_async(_file_steps(entry, chunk), channel, timeout)
                    except BaseException as exc:
                        sending.done(entry, exc)
                        if _lane_over(exc):
                            raise
                    else:
                        sending.done(entry, receipt)
                    entry = sending.next()
            except BaseException as exc:
                error = exc
                raise
            finally:
                _end(channel, error)

        results = await asyncio.gather(
            *(run_lane() for _ in range(min(lanes, len(entries)))), return_exceptions=True
        )
        _after_lanes(results, sending)
        manifest = _manifest(sending.files)
        await announce.send(encode_end(len(sending.files), manifest), timeout=timeout)
        done: Done = _reply(await announce.recv(timeout), Done, "the end of the directory")
        if done.size != len(sending.files) or done.sha256 != manifest:
            raise _protocol_error("the receiver confirmed another manifest")
    except BaseException as exc:
        failure = exc
        raise
    finally:
        _end(announce, failure)
    return _sent_receipt(name, sending, skipped, start)


def _after_lanes(results: list[Any], sending: _Sending) -> None:
    """Every lane ended: a cancellation goes on; files no lane took are not delivered."""
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        sending.leftovers(errors[0])


def send_dir_blocking(
    conn: _BlockingLanes,
    root: Path,
    name: str,
    lanes: int,
    chunk: int,
    progress: Callable[[int, int], None] | None,
    timeout: float | None,
) -> DirReceipt:
    start = time.monotonic()
    entries, skipped = _walk(root)
    sending = _Sending(entries, progress)
    announce = conn._open_reserved(DIR_CHANNEL, timeout)
    failure: BaseException | None = None
    try:
        total = sum(e.size for e in entries)
        announce.send(encode_directory(name, len(entries), total), timeout=timeout)
        _reply(announce.recv(timeout), Accept, "the directory offer")
        lane = lane_name(announce.id)

        def run_lane() -> None:
            entry = sending.next()
            if entry is None:
                return
            channel = conn._open_reserved(lane, timeout)
            error: BaseException | None = None
            try:
                while entry is not None:
                    try:
                        receipt = _run_blocking(_file_steps(entry, chunk), channel, timeout)
                    except BaseException as exc:
                        sending.done(entry, exc)
                        if _lane_over(exc):
                            raise
                    else:
                        sending.done(entry, receipt)
                    entry = sending.next()
            except BaseException as exc:
                error = exc
                raise
            finally:
                _end(channel, error)

        count = min(lanes, len(entries))
        results: list[Any] = []
        if count:
            with concurrent.futures.ThreadPoolExecutor(count, "argonlink-dir-lane") as pool:
                futures = [pool.submit(run_lane) for _ in range(count)]
                results = [f.exception() for f in futures]
        _after_lanes(results, sending)
        manifest = _manifest(sending.files)
        announce.send(encode_end(len(sending.files), manifest), timeout=timeout)
        done: Done = _reply(announce.recv(timeout), Done, "the end of the directory")
        if done.size != len(sending.files) or done.sha256 != manifest:
            raise _protocol_error("the receiver confirmed another manifest")
    except BaseException as exc:
        failure = exc
        raise
    finally:
        _end(announce, failure)
    return _sent_receipt(name, sending, skipped, start)


# ---- receiving ---------------------------------------------------------------------------


class _Received:
    """What the receiver of one directory knows and has stored so far (shared by its lanes)."""

    def __init__(
        self,
        dest: Path,
        overwrite: bool,
        limits: _DirLimits,
        peer: str | None,
        choices: _Receiving,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.dest, self.overwrite, self.limits, self.peer = dest, overwrite, limits, peer
        self.choices = dataclasses.replace(choices, directory=True)
        self.progress = progress
        self.name = ""
        self.expected = 0
        self.files: dict[str, FileReceipt] = {}
        self.failed: dict[str, BaseException] = {}
        self._lock = threading.Lock()

    def steps(self) -> tuple[Any, list[Offer]]:
        offers: list[Offer] = []
        sink = functools.partial(
            _DirSink, self.dest, self.overwrite, self.limits, self.peer, (self.name,)
        )
        return _receive_steps(sink, None, self.choices, offers), offers

    def done(self, offers: list[Offer], outcome: FileReceipt | BaseException) -> None:
        if not offers:
            return  # nothing was offered (the lane ended): nothing to count
        rel = "/".join((*offers[0].folders, offers[0].name))
        with self._lock:
            if isinstance(outcome, FileReceipt):
                self.files[rel] = outcome
            else:
                self.failed[rel] = outcome
            count = len(self.files) + len(self.failed)
        if self.progress is not None:
            self.progress(count, self.expected)

    def open_root(self, msg: bytes) -> None:
        """Check the directory's offer and make its folder in ``dest`` (or find it there: a
        directory sent again after a cut)."""
        if not is_file_message(msg):
            raise _protocol_error("expected a directory offer")
        try:
            offer = decode(msg)
        except Malformed as bad:
            raise _protocol_error(f"a malformed directory offer: {bad}") from None
        if not isinstance(offer, Directory):
            raise _protocol_error("expected a directory offer")
        self.name = check_name(offer.name, allow_hidden=self.choices.allow_hidden)
        self.expected = offer.files
        try:
            fd = _open_folders(self.dest, (self.name,), _dir_mode(self.limits.mode), create=True)
        except (NotADirectoryError, FileExistsError):
            raise DestinationExists(
                f"{_shown(self.name)} exists at the receiver and is not a directory"
            ) from None
        assert fd is not None
        os.close(fd)

    def finish(self, msg: bytes) -> tuple[bytes, TransferError | None]:
        """The sender's END: the reply, and the error to raise if the manifests differ."""
        end: End = _reply(msg, End, "the directory")
        if end.size != len(self.files) or not hmac.compare_digest(
            end.sha256, _manifest(self.files)
        ):
            problem = (
                f"the directory's manifest does not match: the sender delivered {end.size} "
                f"file(s), {len(self.files)} arrived"
            )
            error = TransferError(TransferCode.VERIFICATION_FAILED, problem)
            return encode_refuse(error.code, problem), error
        return encode_done(end.size, end.sha256), None

    def receipt(self, start: float) -> DirReceipt:
        files = dict(sorted(self.files.items()))
        path = self.dest / self.name
        receipt = DirReceipt(
            self.name, files, self.failed, (), path, _size(files), time.monotonic() - start
        )
        if self.failed:
            code, reason = _first_failure(self.failed)
            raise IncompleteDirectory(code, reason, receipt)
        return receipt


def _refusal(exc: BaseException) -> bytes:
    if isinstance(exc, TransferError):
        return encode_refuse(exc.code, exc.reason)
    if isinstance(exc, OSError):
        return encode_refuse(TransferCode.IO_ERROR, "the receiver had an I/O error")
    return encode_refuse(TransferCode.CANCELLED, "the receiver cancelled the transfer")


def _lane_ended(exc: BaseException) -> bool:
    """The sender finished the lane where a new file's offer would come: the lane is done."""
    return isinstance(exc, ChannelFinished)


async def recv_dir_async(conn: _Lanes, state: _Received, timeout: float | None) -> DirReceipt:
    announce = await conn._accept_reserved(DIR_CHANNEL, timeout)
    failure: BaseException | None = None
    workers: set[asyncio.Task[None]] = set()
    lane = lane_name(announce.id)
    try:
        msg = await announce.recv(timeout)
        start = time.monotonic()
        try:
            await _in_thread(state.open_root, (msg,))
        except Exception as exc:
            with contextlib.suppress(Error):
                await announce.send(_refusal(exc))
            raise
        conn._listen(lane)
        await announce.send(encode_accept(0, _EMPTY), timeout=timeout)
        end_wait = asyncio.ensure_future(announce.recv())
        try:
            while not end_wait.done():
                accept = asyncio.ensure_future(conn._accept_reserved(lane, None))
                await asyncio.wait({end_wait, accept}, return_when=asyncio.FIRST_COMPLETED)
                if not accept.done():
                    accept.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await accept
                    continue
                channel = accept.result()
                if len(workers) >= MAX_LANES:
                    _end(channel, ChannelError("too many lanes"))
                    continue
                workers.add(asyncio.create_task(_serve_lane(channel, state, timeout)))
            await asyncio.gather(*workers)
        finally:
            end_wait.cancel()
        reply, error = state.finish(end_wait.result())
        await announce.send(reply, timeout=timeout)
        if error is not None:
            raise error
    except BaseException as exc:
        failure = exc
        raise
    finally:
        conn._unlisten(lane)
        for worker in workers:
            worker.cancel()
        _end(announce, failure)
    return state.receipt(start)


async def _serve_lane(channel: Any, state: _Received, timeout: float | None) -> None:
    """One lane: file after file until the sender finishes it."""
    error: BaseException | None = None
    try:
        while True:
            steps, offers = state.steps()
            try:
                state.done(offers, await _run_async(steps, channel, timeout))
            except BaseException as exc:
                if _lane_ended(exc) and not offers:
                    return
                state.done(offers, exc)
                if _lane_over(exc):
                    raise
    except BaseException as exc:
        error = exc
        if isinstance(exc, Exception):
            return  # recorded; the other lanes go on
        raise
    finally:
        _end(channel, error)


def recv_dir_blocking(conn: _BlockingLanes, state: _Received, timeout: float | None) -> DirReceipt:
    announce = conn._accept_reserved(DIR_CHANNEL, timeout)
    failure: BaseException | None = None
    lane = lane_name(announce.id)
    try:
        msg = announce.recv(timeout)
        start = time.monotonic()
        try:
            state.open_root(msg)
        except Exception as exc:
            with contextlib.suppress(Error):
                announce.send(_refusal(exc))
            raise
        conn._listen(lane)
        announce.send(encode_accept(0, _EMPTY), timeout=timeout)
        ended: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        threading.Thread(
            target=_read_end, args=(announce, ended), name="argonlink-dir-end", daemon=True
        ).start()
        with concurrent.futures.ThreadPoolExecutor(MAX_LANES, "argonlink-dir-lane") as pool:
            lanes: list[concurrent.futures.Future[None]] = []
            while not ended.done():
                try:
                    channel = conn._accept_reserved(lane, _LANE_POLL)
                except Timeout:
                    continue
                if len(lanes) >= MAX_LANES:
                    _end(channel, ChannelError("too many lanes"))
                    continue
                lanes.append(pool.submit(_serve_lane_blocking, channel, state, timeout))
            for future in lanes:
                future.result()
        reply, error = state.finish(ended.result())
        announce.send(reply, timeout=timeout)
        if error is not None:
            raise error
    except BaseException as exc:
        failure = exc
        raise
    finally:
        conn._unlisten(lane)
        _end(announce, failure)
    return state.receipt(start)


def _read_end(announce: _BlockingStream, ended: concurrent.futures.Future[bytes]) -> None:
    try:
        ended.set_result(announce.recv(None))
    except BaseException as exc:
        ended.set_exception(exc)


def _serve_lane_blocking(channel: Any, state: _Received, timeout: float | None) -> None:
    error: BaseException | None = None
    try:
        while True:
            steps, offers = state.steps()
            try:
                state.done(offers, _run_blocking(steps, channel, timeout))
            except BaseException as exc:
                if _lane_ended(exc) and not offers:
                    return
                state.done(offers, exc)
                if _lane_over(exc):
                    raise
    except BaseException as exc:
        error = exc
        if isinstance(exc, Exception):
            return
        raise
    finally:
        _end(channel, error)
