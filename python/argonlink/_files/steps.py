"""The protocol, once: the sender's and the receiver's steps as generators that yield
effects (:mod:`.effects`) instead of doing I/O.

Separate because this is the protocol logic itself (which message comes when, what is checked,
what is refused and how a failure reaches the peer), free of connections and threads (it reads
the clock only to time itself); :mod:`.runner` drives it, blocking or with ``await``.
"""

from __future__ import annotations

import contextlib
import hmac
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..exceptions import (
    DestinationExists,
    Error,
    TransferCode,
    TransferError,
    UnexpectedMessage,
    UnsafeName,
    VerificationFailed,
)
from .effects import _POLL, _RECV, _Deadline, _Effect, _Run, _Send, _Sleep, _Steps
from .names import _shown, check_name
from .receipt import FileReceipt, Progress
from .sink import _Sink
from .source import _Source
from .wire import (
    DATA_HEAD_LEN,
    Accept,
    Cancel,
    Data,
    Done,
    End,
    Have,
    Malformed,
    Offer,
    Proof,
    Refuse,
    decode,
    encode_accept,
    encode_cancel,
    encode_done,
    encode_end,
    encode_have,
    encode_offer,
    encode_proof,
    encode_refuse,
    is_file_message,
    kind_name,
)

_LOCK_WAIT: Final = 5.0  # seconds a receiver waits for another transfer of the same file
_LOCK_POLL: Final = (0.01, 0.25)  # first and longest pause between two tries of the lock
_HASH_STEP: Final = 64 << 20  # bytes hashed per worker-thread call (keeps cancellation prompt)


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


def _reply(msg: bytes, expected: type | tuple[type, ...] | None, step: str) -> Any:
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
    progress: Progress | None,
    chunk: int,
    folders: tuple[str, ...] | None = None,
) -> _Steps:
    """``folders``: in a directory transfer, the folders the file is in (then the receiver may
    answer HAVE: it has a file of that size there already)."""
    start = time.monotonic()
    source: _Source = yield _Run(open_source)
    try:
        size, resumable = source.size, source.resumable
        total = -1 if size is None else size
        yield _Send(encode_offer(name, size, resumable, folders or ()))
        expected = Accept if folders is None else (Accept, Have)
        accept: Accept | Have = _reply((yield _RECV), expected, "the file offer")
        if isinstance(accept, Have):
            receipt = yield from _compare(source, name, accept, start)
            return receipt
        offset = accept.offset
        try:  # from here on the receiver waits for data: any failure must reach it as CANCEL
            if (not resumable and offset != 0) or (size is not None and offset > size):
                raise _protocol_error(f"the receiver asked to resume from offset {offset}")
            if offset:
                # The receiver continues only if what it kept is ours: prove we have those
                # bytes (the hash of the whole file needs them read anyway); it answers with
                # the offset to send from, this one or 0.
                step = (offset, _HASH_STEP, accept.challenge)
                while not (yield _Run(source.hash_prefix, step)):
                    pass
                yield _Send(encode_proof(source.proof()))
                verdict: Accept = _reply((yield _RECV), Accept, "the proof")
                if verdict.offset not in (0, offset):
                    raise _protocol_error(f"the receiver answered the proof with {verdict.offset}")
                if verdict.offset == 0:
                    yield _Run(source.restart)  # it kept another file's bytes: start over
                    offset = 0
            pos = offset
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
            yield _Run(source.check_unchanged, (_shown(name),))
        except Exception as exc:
            if _is_link_failure(exc):
                raise
            code, reason = _local_failure(exc, "sender")
            if isinstance(exc, TransferError) and exc.by_peer:
                code, reason = TransferCode.CANCELLED, "the receiver refused"
            with contextlib.suppress(Error):  # the receiver drains until it hears this
                yield _Send(encode_cancel(code, reason))
            raise
        digest = source.digest()
        yield _Send(encode_end(pos, digest))
        done: Done = _reply((yield _RECV), Done, "the end of the file")
        if done.size != pos or done.sha256 != digest:
            raise _protocol_error("the receiver confirmed a different size or hash")
        return FileReceipt(name, pos, digest.hex(), None, offset, time.monotonic() - start)
    finally:
        source.close()


def _compare(source: _Source, name: str, have: Have, start: float) -> _Steps:
    """The receiver has a file of this size under the name already (a directory sent again):
    hash ours and send END only; the receiver keeps its file if the hashes match."""
    try:
        if have.size != source.size:
            raise _protocol_error(f"the receiver has {have.size} bytes of a file of {source.size}")
        assert source.size is not None
        while not (yield _Run(source.hash_prefix, (source.size, _HASH_STEP))):
            pass
        yield _Run(source.check_unchanged, (_shown(name),))
    except Exception as exc:
        if _is_link_failure(exc):
            raise
        code, reason = _local_failure(exc, "sender")
        with contextlib.suppress(Error):
            yield _Send(encode_cancel(code, reason))
        raise
    digest = source.digest()
    yield _Send(encode_end(have.size, digest))
    done: Done = _reply((yield _RECV), Done, "the end of the file")
    if done.size != have.size or done.sha256 != digest:
        raise _protocol_error("the receiver confirmed a different size or hash")
    return FileReceipt(name, have.size, digest.hex(), None, have.size, time.monotonic() - start)


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
    #: Part of a directory transfer: offers may name folders, and a file that is there
    #: already with the same content counts as received.
    directory: bool = False


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


def _check_proof(sink: _Sink, name: str, offset: int) -> Generator[_Effect, Any, int]:
    """After a resuming ACCEPT: the sender's PROOF says whether the kept bytes are its file's
    first bytes. Answer with the offset to continue from: ``offset``, or 0 (emptied)."""
    msg: bytes = yield _RECV
    try:
        proof = decode(msg) if is_file_message(msg) else None
    except Malformed as bad:
        raise _protocol_error(f"a malformed message after ACCEPT: {bad}") from None
    if isinstance(proof, Cancel):
        raise TransferError(
            TransferCode.CANCELLED,
            f"the sender cancelled {_shown(name)}: {proof.reason}",
            by_peer=True,
        )
    if not isinstance(proof, Proof):
        raise _protocol_error(f"{kind_name(msg)} where the proof of the kept bytes belongs")
    if not sink.proves(proof.mac):
        yield _Run(sink.restart)
        offset = 0
    yield _Send(encode_accept(offset, bytes(32)))
    return offset


def _keep_if_same(sink: _Sink, name: str, offer: Offer, start: float) -> _Steps:
    """A file of the offer's size is there already: ask for END only, and keep ours if the
    sender's hash is the same (DONE), else refuse as EXISTS."""
    assert offer.size is not None
    yield _Send(encode_have(offer.size))
    msg: bytes = yield _RECV
    try:
        end = decode(msg) if is_file_message(msg) else None
    except Malformed as bad:
        raise _protocol_error(f"a malformed message after HAVE: {bad}") from None
    if isinstance(end, Cancel):
        raise TransferError(
            TransferCode.CANCELLED,
            f"the sender cancelled {_shown(name)}: {end.reason}",
            by_peer=True,
        )
    if not isinstance(end, End) or end.size != offer.size:
        raise _protocol_error(f"{kind_name(msg)} after HAVE")
    if not (yield _Run(sink.same_as, (name, end.sha256))):
        raise DestinationExists(
            f"{_shown(name)} already exists at the receiver, with other content"
        )
    yield _Send(encode_done(offer.size, end.sha256))
    path = sink.final_path(name)
    return FileReceipt(
        name, offer.size, end.sha256.hex(), path, offer.size, time.monotonic() - start
    )


# Over 80 lines: the receiver's exchange in the order it happens (offer, accept, data, verify,
# commit), each phase with the refusal it owes the sender; read top to bottom.
def _receive_steps(
    make_sink: Callable[[], _Sink],
    progress: Progress | None,
    choices: _Receiving,
    offers: list[Offer] | None = None,
) -> _Steps:
    """``offers``: the offer is appended to it once it arrived (a directory's lanes report
    each file by its path)."""
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
    if offers is not None:
        offers.append(offer)
    sink = make_sink()
    try:
        try:
            name = check_name(offer.name, allow_hidden=choices.allow_hidden)
            if offer.folders and not choices.directory:
                raise UnsafeName(f"{_shown(name)} is offered inside folders, outside a directory")
            for folder in offer.folders:
                check_name(folder, allow_hidden=choices.allow_hidden)
            if max_size is not None and offer.size is not None and offer.size > max_size:
                raise TransferError(
                    TransferCode.TOO_LARGE,
                    f"{_shown(name)} has {offer.size} bytes; the receiver takes at most {max_size}",
                )
            if (yield _Run(sink.have, (name, offer))):
                receipt = yield from _keep_if_same(sink, name, offer, start)
                return receipt
            offset = yield from _open_sink(sink, name, offer)
            while not (yield _Run(sink.hash_prefix, (_HASH_STEP,))):
                pass
            challenge = sink.challenge()
        except Exception as exc:
            if _is_link_failure(exc):
                raise
            code, reason = _local_failure(exc, "receiver")
            yield _Send(encode_refuse(code, reason))
            raise
        yield _Send(encode_accept(offset, challenge))
        if offset:
            offset = yield from _check_proof(sink, name, offset)
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
            # What is on its way is read and dropped, so that the REFUSE is read (on a channel,
            # a reader that stops reading would reset it, and the peer would never read it).
            yield from _drain()
            raise
        digest = sink.digest()
        problem = None
        if end_msg.size != pos or (offer.size is not None and offer.size != pos):
            problem = f"{_shown(name)}: {pos} bytes arrived, the sender announced {end_msg.size}"
        elif not hmac.compare_digest(end_msg.sha256, digest):
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
