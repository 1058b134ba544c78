"""The file protocol's messages on the wire: OFFER, ACCEPT, REFUSE, DATA, END, DONE and
CANCEL, their encoders and one decoder.

Separate because it is pure bytes in, bytes out (no files, no connection): the one place that
must match docs/PROTOCOL.md, "File transfer", byte for byte.
"""

from __future__ import annotations

import json
import struct
import unicodedata
from dataclasses import dataclass
from typing import Final, TypeAlias

from ..exceptions import UnsafeName

# Every message starts with MAGIC, a version byte and a type byte.

MAGIC: Final = b"ALNKFILE"
VERSION: Final = 2
_HEAD = struct.Struct(">8sBB")
_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")
_HEAD_LEN: Final = _HEAD.size  # 10
DATA_HEAD_LEN: Final = _HEAD_LEN + _U64.size  # 18: DATA's header and offset
MAX_OFFER: Final = 4096  # bytes of JSON
MAX_REASON: Final = 1024  # bytes of UTF-8
MAX_DEPTH: Final = 64  # folders a file of a directory transfer may be nested in
_MAX_SIZE: Final = (1 << 63) - 1

OFFER, ACCEPT, REFUSE, DATA, END, DONE, CANCEL, DIRECTORY, HAVE, PROOF = range(1, 11)
_KIND_NAMES: Final = {
    PROOF: "PROOF",
    DIRECTORY: "DIRECTORY",
    HAVE: "HAVE",
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
    resume: bool  # the sender can resume (only with a size)
    folders: tuple[str, ...] = ()  # in a directory transfer: the folders the file is in


@dataclass(frozen=True, slots=True)
class Accept:
    offset: int
    challenge: bytes  # random: the key of the sender's PROOF, when offset > 0


@dataclass(frozen=True, slots=True)
class Proof:
    """HMAC-SHA256 of the sender's first ``offset`` bytes, keyed by ACCEPT's challenge."""

    mac: bytes


@dataclass(frozen=True, slots=True)
class Directory:
    """The offer of a directory (on its own channel, §9.9)."""

    name: str
    files: int
    size: int


@dataclass(frozen=True, slots=True)
class Have:
    """In a directory transfer: the receiver has a file of this size under the name already;
    the sender sends END, and the receiver compares the hashes."""

    size: int


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


Message: TypeAlias = Offer | Accept | Refuse | Data | End | Done | Cancel | Directory | Have | Proof


class Malformed(Exception):
    """A message with the file-protocol magic whose content is not valid."""


def _head(kind: int) -> bytes:
    return _HEAD.pack(MAGIC, VERSION, kind)


def encode_offer(name: str, size: int | None, resume: bool, folders: tuple[str, ...] = ()) -> bytes:
    body: dict[str, object] = {"name": name, "size": size, "resume": resume and size is not None}
    if folders:
        body["folders"] = list(folders)
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    if len(text) > MAX_OFFER:  # cannot happen for a checked name; a guard, not a limit
        raise UnsafeName("the file offer would be too large")
    return _head(OFFER) + text


def encode_directory(name: str, files: int, size: int) -> bytes:
    text = json.dumps({"name": name, "files": files, "size": size}, ensure_ascii=False).encode()
    if len(text) > MAX_OFFER:  # cannot happen for a checked name; a guard, not a limit
        raise UnsafeName("the directory offer would be too large")
    return _head(DIRECTORY) + text


def encode_have(size: int) -> bytes:
    return _head(HAVE) + _U64.pack(size)


def encode_accept(offset: int, challenge: bytes) -> bytes:
    return _head(ACCEPT) + _U64.pack(offset) + challenge


def encode_proof(mac: bytes) -> bytes:
    return _head(PROOF) + mac


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
    if kind == DIRECTORY:
        return _decode_directory(bytes(body))
    if kind == PROOF:
        if len(body) != 32:
            raise Malformed("a PROOF message of the wrong length")
        return Proof(bytes(body))
    if kind == HAVE:
        if len(body) != _U64.size:
            raise Malformed("a HAVE message of the wrong length")
        return Have(_U64.unpack_from(body)[0])
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
        if len(body) != _U64.size + 32:
            raise Malformed("an ACCEPT message of the wrong length")
        return Accept(_U64.unpack_from(body)[0], bytes(body[_U64.size :]))
    if kind in (END, DONE):
        if len(body) != _U64.size + 32:
            raise Malformed(f"a {_KIND_NAMES[kind]} message of the wrong length")
        size, digest = _U64.unpack_from(body)[0], bytes(body[_U64.size :])
        return End(size, digest) if kind == END else Done(size, digest)
    raise Malformed(f"unknown file message type {kind}")


def _json_object(body: bytes, what: str) -> dict[str, object]:
    if len(body) > MAX_OFFER:
        raise Malformed(f"a {what} larger than {MAX_OFFER} bytes")
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Malformed(f"a {what} that is not a UTF-8 JSON object") from None
    if not isinstance(obj, dict):
        raise Malformed(f"a {what} that is not a JSON object")
    return obj


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_SIZE


def _decode_directory(body: bytes) -> Directory:
    obj = _json_object(body, "directory offer")
    name, files, size = obj.get("name"), obj.get("files"), obj.get("size")
    if not isinstance(name, str):
        raise Malformed("a directory offer without a name")
    if not _count(files) or not _count(size):
        raise Malformed("a directory offer without a valid count of files and bytes")
    assert isinstance(files, int) and isinstance(size, int)
    return Directory(name, files, size)


def _decode_offer(body: bytes) -> Offer:
    obj = _json_object(body, "file offer")
    name, size, resume = obj.get("name"), obj.get("size"), obj.get("resume", False)
    folders = obj.get("folders", [])
    if not isinstance(name, str):
        raise Malformed("a file offer without a name")
    if size is not None and (
        not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= _MAX_SIZE
    ):
        raise Malformed("a file offer with an invalid size")
    if not isinstance(resume, bool):
        raise Malformed("a file offer whose resume is not true or false")
    if resume and size is None:
        raise Malformed("a resumable file offer without a size")
    if (
        not isinstance(folders, list)
        or len(folders) > MAX_DEPTH
        or not all(isinstance(f, str) for f in folders)
    ):
        raise Malformed(f"a file offer whose folders are not a list of at most {MAX_DEPTH} names")
    return Offer(name, size, resume, tuple(folders))
