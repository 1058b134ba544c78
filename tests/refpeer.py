"""A reference peer that completes real handshakes and then sends what an honest peer never would.

Written from docs/PROTOCOL.md on top of the independent protocol model in ``noise_model.py``
(CPace on libsodium's ristretto255, Noise ``NNpsk0`` on pyca ``cryptography`` primitives,
Argon2id from ``cryptography`` too), not from the library's code, so that it can play the
authenticated hostile peer: one that knows the password and breaks the rules on purpose. Like
the "protocol bugs" switches of a TLS test runner, every misbehaviour is a plaintext builder, a
:class:`Bugs` switch or a method; the tests in ``test_hostile.py`` assert the exact outcome.

Two roles:

* :class:`RefClient` dials a real argonlink server, runs the client side of the handshake
  (CPace responder, Noise initiator) with the PRS under an identity of its choice (optionally
  replaying a recorded hello and message 1, or stopping after the hello), sends CONFIRM (bare,
  with a session request, or anything else as the first frame) and then sends raw frames of
  any type, flags and body and reads the server's frames.
* :class:`RefServer` listens for a real argonlink ``Client``, answers its hello with parameters
  it chooses (salt, costs, epoch, node id), derives the PRS from the password and those, runs
  the server side (CPace initiator with the share in the parameters, Noise responder), reads the
  client's CONFIRM and then sends raw frames: so the same attacks also run against clients. It
  keeps what it saw of each handshake (:class:`Exchange`), also of one that failed: the
  material of a man in the middle posing as the server.

Both sides follow REKEY (§4.4) on the frames they read, and can rekey their own direction.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from noise_model import (
    LIMITS_LEN,
    MSG1_LEN,
    MSG2_LEN,
    PARAMS_FIXED_LEN,
    ModelClient,
    ModelServer,
    derive_prs,
    limits,
    noise_nonce,
)
from proxy import HELLO_FIXED_LEN, PARAMS_LEN, recv_exact, recv_hello

__all__ = [
    "ACK",
    "CHANNEL_WINDOW",
    "CLOSE",
    "CONFIRM",
    "CONFIRM_BARE",
    "DATA",
    "FIRST_FRAGMENT",
    "LENGTH",
    "MAX_CHUNK",
    "MAX_PLAINTEXT",
    "MESSAGE_CREDIT",
    "MORE",
    "PING",
    "PONG",
    "REKEY",
    "REKEY_FRAME",
    "RESUME",
    "VALID_CLOSE_CODES",
    "Bugs",
    "Cipher",
    "Exchange",
    "Frame",
    "HostilePeer",
    "Params",
    "RefClient",
    "RefServer",
    "ServerSide",
    "Transport",
    "ack",
    "blocked",
    "ch_data",
    "close",
    "confirm",
    "data",
    "derive_prs",
    "expect_close",
    "fin",
    "fragments",
    "is_valid_close_code",
    "open_channel",
    "ping",
    "pong",
    "reset",
    "resume",
    "window",
]

# Frame types and DATA flags (PROTOCOL.md §4.1).
DATA, PING, PONG, CLOSE, REKEY, CONFIRM, ACK, RESUME = range(1, 9)
CH_DATA, OPEN, WINDOW, BLOCKED, FIN, RESET = range(9, 15)
MORE, LENGTH = 0x01, 0x02
#: The largest plaintext a frame holds: 65535 - 16 (tag).
MAX_PLAINTEXT = 65519
#: The most of a message one frame carries: a first fragment (type, flags, total) and a middle
#: or single one (type, flags) (§4.2, M14).
FIRST_FRAGMENT = MAX_PLAINTEXT - 10
MAX_CHUNK = MAX_PLAINTEXT - 2
#: The nonce reserved for rekeying (§4.4).
REKEY_NONCE = (1 << 64) - 1
#: Close codes that may travel in a CLOSE (§4.3, M20), besides the application ranges.
VALID_CLOSE_CODES = frozenset({1000, 1001, 1002, 1009, 1013, 4001, 4002, 4003})


def is_valid_close_code(code: int) -> bool:
    return code in VALID_CLOSE_CODES or 3000 <= code <= 3999 or 4100 <= code <= 4999


# --------------------------------------------------------------------------------------------
# Transport cipher and plaintext builders


class Cipher:
    """One direction of the transport, with its key so that it can follow REKEY (§4.4)."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.aead = AESGCM(key)
        self.n = 0

    def seal(self, plaintext: bytes) -> bytes:
        """The whole record: u16 length, ciphertext, tag."""
        ct = self.aead.encrypt(noise_nonce(self.n), plaintext, b"")
        self.n += 1
        return struct.pack(">H", len(ct)) + ct

    def open(self, body: bytes) -> bytes:
        """A record without its length prefix; raises InvalidTag."""
        plaintext = self.aead.decrypt(noise_nonce(self.n), body, b"")
        self.n += 1
        return plaintext

    def rekey(self) -> None:
        """k' = the first 32 bytes of ENCRYPT(k, 2^64 - 1, "", 32 zero bytes); n continues."""
        self.key = self.aead.encrypt(noise_nonce(REKEY_NONCE), bytes(32), b"")[:32]
        self.aead = AESGCM(self.key)


# Each builder returns one frame's plaintext, honest or not: the arguments may break any rule.


def data(
    chunk: bytes, *, more: bool = False, total: int | None = None, flags: int | None = None
) -> bytes:
    """DATA: flags (computed from ``more`` and ``total`` unless given), the total, the chunk."""
    if flags is None:
        flags = (MORE if more else 0) | (LENGTH if total is not None else 0)
    head = bytes([DATA, flags]) + (struct.pack(">Q", total) if total is not None else b"")
    return head + chunk


def fragments(
    message: bytes, *, first: int = FIRST_FRAGMENT, middle: int = MAX_CHUNK
) -> list[bytes]:
    """The DATA plaintexts of one message. With the defaults, the honest cut of §4.2; with a
    smaller ``first``/``middle`` (e.g. 1), the tiny fragments no honest sender produces."""
    if len(message) <= MAX_CHUNK and first == FIRST_FRAGMENT and middle == MAX_CHUNK:
        return [data(message)]
    out = [data(message[:first], more=True, total=len(message))]
    pos = first
    while len(message) - pos > middle:
        out.append(data(message[pos : pos + middle], more=True))
        pos += middle
    out.append(data(message[pos:]))
    return out


# Channels (§4.7): each builder takes any id, 0 and unopened ones included.


def ch_data(channel: int, chunk: bytes, *, more: bool = False, total: int | None = None) -> bytes:
    """CH_DATA: channel, flags, the total if given, the chunk."""
    flags = (MORE if more else 0) | (LENGTH if total is not None else 0)
    head = bytes([CH_DATA]) + struct.pack(">IB", channel, flags)
    return head + (struct.pack(">Q", total) if total is not None else b"") + chunk


def open_channel(channel: int, name: bytes = b"") -> bytes:
    return bytes([OPEN]) + struct.pack(">I", channel) + name


def window(channel: int, limit: int) -> bytes:
    return bytes([WINDOW]) + struct.pack(">IQ", channel, limit)


def blocked(channel: int, needed: int) -> bytes:
    return bytes([BLOCKED]) + struct.pack(">IQ", channel, needed)


def fin(channel: int) -> bytes:
    return bytes([FIN]) + struct.pack(">I", channel)


def reset(channel: int, code: int = 0, reason: bytes = b"") -> bytes:
    return bytes([RESET]) + struct.pack(">IH", channel, code) + reason


#: A channel's initial window by default (the credit a peer may use before any WINDOW), and
#: what a message costs besides its bytes (§4.7).
CHANNEL_WINDOW = 256 * 1024
MESSAGE_CREDIT = 64


def ping(value: int) -> bytes:
    return bytes([PING]) + struct.pack(">Q", value)


def pong(value: int) -> bytes:
    return bytes([PONG]) + struct.pack(">Q", value)


def close(code: int, reason: bytes = b"") -> bytes:
    return bytes([CLOSE]) + struct.pack(">H", code) + reason


#: REKEY's plaintext (empty body). Send it with :meth:`Transport.rekey` to switch keys too.
REKEY_FRAME = bytes([REKEY])


def ack(next_expected: int) -> bytes:
    return bytes([ACK]) + struct.pack(">Q", next_expected)


def confirm(
    session_id: bytes | None = None,
    *,
    resume: bool = False,
    next_expected: int = 0,
    window: int = 1 << 20,
    flags: int | None = None,
) -> bytes:
    """CONFIRM, bare or with a 29-byte session request: flags u8, session_id 16,
    next_expected u64, window u32 (§4.5)."""
    if session_id is None:
        return bytes([CONFIRM])
    if flags is None:
        flags = 1 if resume else 0
    return bytes([CONFIRM, flags]) + session_id + struct.pack(">QI", next_expected, window)


CONFIRM_BARE = confirm()


def resume(status: int, next_expected: int = 0, window: int = 1 << 20) -> bytes:
    """RESUME (13 bytes of body): status u8, next_expected u64, window u32 (§4.5)."""
    return bytes([RESUME, status]) + struct.pack(">QI", next_expected, window)


@dataclass
class Frame:
    """A decrypted frame: its type byte and the rest."""

    type: int
    body: bytes

    @property
    def close_code(self) -> int:
        assert self.type == CLOSE, self
        return int(struct.unpack_from(">H", self.body)[0])

    @property
    def value(self) -> int:
        """The u64 of a PING, PONG or ACK."""
        assert self.type in (PING, PONG, ACK), self
        return int(struct.unpack(">Q", self.body)[0])

    @property
    def resume_fields(self) -> tuple[int, int, int]:
        """RESUME's (status, next_expected, window)."""
        assert self.type == RESUME and len(self.body) == 13, self
        status, next_expected, window = struct.unpack(">BQI", self.body)
        return int(status), int(next_expected), int(window)

    @property
    def session_request(self) -> tuple[int, bytes, int, int] | None:
        """A CONFIRM's (flags, session_id, next_expected, window), None for a bare one."""
        assert self.type == CONFIRM, self
        if not self.body:
            return None
        assert len(self.body) == 29, self
        flags, next_expected, window = (
            self.body[0],
            *struct.unpack_from(">QI", self.body, 17),
        )
        return int(flags), self.body[1:17], int(next_expected), int(window)

    def message(self) -> tuple[int, int | None, bytes]:
        """DATA's (flags, total or None, chunk)."""
        assert self.type == DATA, self
        flags = self.body[0]
        if flags & LENGTH:
            return flags, int(struct.unpack_from(">Q", self.body, 1)[0]), self.body[9:]
        return flags, None, self.body[1:]


# --------------------------------------------------------------------------------------------
# Server parameters


@dataclass(frozen=True)
class Params:
    """The first 56 server parameter bytes (§3.2), with whatever values the test wants; the
    server's nonce and share, fresh on each connection, follow them on the wire."""

    salt: bytes = field(default_factory=lambda: os.urandom(16))
    m_cost: int = 19456
    t_cost: int = 2
    p_cost: int = 1
    epoch: int = 1
    node_id: bytes = field(default_factory=lambda: os.urandom(16))
    other_epoch: int = 0
    version: int = 2
    suite: int = 1

    def encode(self) -> bytes:
        return (
            struct.pack(">HH", self.version, self.suite)
            + self.salt
            + struct.pack(">IIII", self.m_cost, self.t_cost, self.p_cost, self.epoch)
            + self.node_id
            + struct.pack(">I", self.other_epoch)
        )

    @classmethod
    def decode(cls, raw: bytes) -> Params:
        """From the 104 bytes on the wire (or their first 56)."""
        assert len(raw) in (PARAMS_FIXED_LEN, PARAMS_LEN)
        version, suite = struct.unpack_from(">HH", raw)
        m, t, p, epoch = struct.unpack_from(">IIII", raw, 20)
        (other,) = struct.unpack_from(">I", raw, 52)
        return cls(raw[4:20], m, t, p, epoch, raw[36:52], other, version, suite)

    def prs(self, password: bytes) -> bytes:
        return derive_prs(password, self.salt, self.m_cost, self.t_cost, self.p_cost)


# --------------------------------------------------------------------------------------------
# The transport phase, either role


@dataclass
class Bugs:
    """Protocol-bug switches for :meth:`Transport.send_message` and the handshake.

    ``first_fragment``/``middle_fragment``: cut messages this small (None: honest, full
    fragments); ``one_segment_per_frame``: every frame its own write, so with TCP_NODELAY its
    own TCP segment; ``rcvbuf``: a tiny receive buffer set before connecting (a peer that does
    not read stalls the other side's writes at once)."""

    first_fragment: int | None = None
    middle_fragment: int | None = None
    one_segment_per_frame: bool = False
    rcvbuf: int | None = None


class Closing:
    """``with`` support for the peer's sockets: ``close()`` on the way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Transport(Closing):
    """A connected socket with the two transport ciphers: send raw frames, read frames."""

    sock: socket.socket
    send_cipher: Cipher
    recv_cipher: Cipher
    bugs: Bugs

    def _init_transport(self, sock: socket.socket, k_send: bytes, k_recv: bytes) -> None:
        self.sock = sock
        self.send_cipher = Cipher(k_send)
        self.recv_cipher = Cipher(k_recv)
        self._buf = b""
        #: Wire bytes this side sent after the handshake.
        self.sent_bytes = 0

    # Sending

    def send(self, *plaintexts: bytes) -> None:
        """Seal each plaintext as one frame; all in one write."""
        records = b"".join(self.send_cipher.seal(p) for p in plaintexts)
        self.sock.sendall(records)
        self.sent_bytes += len(records)

    def send_each(self, plaintexts: list[bytes]) -> None:
        """Seal each plaintext as one frame, each in its own write (its own TCP segment)."""
        for p in plaintexts:
            record = self.send_cipher.seal(p)
            self.sock.sendall(record)
            self.sent_bytes += len(record)

    def send_message(self, message: bytes) -> None:
        """One application message, cut as the :class:`Bugs` switches say."""
        chunks = fragments(
            message,
            first=self.bugs.first_fragment or FIRST_FRAGMENT,
            middle=self.bugs.middle_fragment or MAX_CHUNK,
        )
        if self.bugs.one_segment_per_frame:
            self.send_each(chunks)
        else:
            self.send(*chunks)

    def send_raw(self, raw: bytes) -> None:
        """Bytes as they are (a bad length prefix, a replayed record, ...)."""
        self.sock.sendall(raw)
        self.sent_bytes += len(raw)

    def send_tampered(self, plaintext: bytes) -> None:
        """One frame with a bit flipped in its tag: it fails authentication."""
        record = bytearray(self.send_cipher.seal(plaintext))
        record[-1] ^= 0x01
        self.send_raw(bytes(record))

    def rekey(self) -> None:
        """Send REKEY under the current key and switch this direction to the next one."""
        self.send(REKEY_FRAME)
        self.send_cipher.rekey()

    def flood(
        self, plaintext_of: Callable[[int], bytes] | bytes, count: int, *, batch: int = 2000
    ) -> int:
        """Send ``count`` frames, ``plaintext_of(i)`` for i = 0, 1, ..., in writes of ``batch``
        frames; returns the wire bytes sent. ``plaintext_of`` may also be fixed bytes."""
        sent_before = self.sent_bytes
        for start in range(0, count, batch):
            stop = min(count, start + batch)
            if isinstance(plaintext_of, bytes):
                self.send(*[plaintext_of] * (stop - start))
            else:
                self.send(*[plaintext_of(i) for i in range(start, stop)])
        return self.sent_bytes - sent_before

    # Receiving

    def recv_frame(self, timeout: float = 5.0) -> Frame | None:
        """The next frame (REKEY followed silently), or None at end of stream. Raises
        TimeoutError if nothing whole arrives in time, InvalidTag on a frame that does not
        authenticate."""
        deadline = time.monotonic() + timeout
        while True:
            while len(self._buf) >= 2:
                (length,) = struct.unpack_from(">H", self._buf)
                if len(self._buf) < 2 + length:
                    break
                body, self._buf = self._buf[2 : 2 + length], self._buf[2 + length :]
                plain = self.recv_cipher.open(body)
                if plain[0] == REKEY:
                    self.recv_cipher.rekey()
                    continue
                return Frame(plain[0], plain[1:])
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the peer")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                if self._buf:
                    raise AssertionError(f"stream ended inside a frame ({len(self._buf)} bytes)")
                return None
            self._buf += chunk

    def frames_until_closed(self, timeout: float = 5.0) -> list[Frame]:
        """Every frame until the peer's end of stream."""
        frames: list[Frame] = []
        while (frame := self.recv_frame(timeout)) is not None:
            frames.append(frame)
        return frames

    def frames_for(self, seconds: float) -> list[Frame]:
        """The frames that arrive within ``seconds`` (stops early at end of stream)."""
        frames: list[Frame] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = self.recv_frame(left)
            except TimeoutError:
                break
            if frame is None:
                break
            frames.append(frame)
        return frames

    def raw_until_closed(self, timeout: float = 5.0) -> bytes:
        """The bytes that arrive until end of stream (for streams we do not decrypt)."""
        self.sock.settimeout(timeout)
        got = self._buf
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return got
            if not chunk:
                return got
            got += chunk

    def close(self) -> None:
        self.sock.close()


def _stream_socket(source: str | None, rcvbuf: int | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Before connecting, so the window the peer sees is small from the start.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source is not None:
        sock.bind((source, 0))
    return sock


# --------------------------------------------------------------------------------------------
# Client role


class RefClient(Transport):
    """A client that completes a real handshake with a PRS, then sends whatever it is told.

    ``identity``: the identity its hello names (default none). ``first``: the first transport
    frame's plaintext (default a bare CONFIRM; ``b""`` sends nothing after message 1).
    ``replay``: (hello, message 1 record) recorded from another connection, sent instead of our
    own; the handshake then stops after message 1 (it was made for another connection's server
    share, so the server cannot open it). ``hello_only``: stop after the hello.
    ``connect_only``: send nothing at all. ``before_message1``: called between the parameters
    and message 1, where a first-time client runs Argon2."""

    def __init__(
        self,
        address: tuple[str, int],
        prs: bytes,
        *,
        identity: bytes = b"",
        first: bytes | None = None,
        bugs: Bugs | None = None,
        source: str | None = None,
        replay: tuple[bytes, bytes] | None = None,
        hello_only: bool = False,
        connect_only: bool = False,
        rcvbuf: int | None = None,
        timeout: float = 5.0,
        before_message1: Callable[[], object] | None = None,
    ) -> None:
        self.bugs = bugs or Bugs()
        if rcvbuf is not None:
            self.bugs.rcvbuf = rcvbuf
        sock = _stream_socket(source, self.bugs.rcvbuf)
        sock.settimeout(timeout)
        sock.connect(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self._buf = b""
        self.sent_bytes = 0
        self.admission: int | None = None
        self.params: bytes | None = None
        self.model = ModelClient(prs, identity=identity)
        if connect_only:
            return
        sock.sendall(replay[0] if replay else self.model.hello)
        if hello_only:
            return
        self.params = recv_exact(sock, PARAMS_LEN)
        if before_message1 is not None:
            before_message1()
        if replay is not None:
            sock.sendall(replay[1])
            return
        #: Our hello and message 1 record, as a replayer would have recorded them.
        self.recorded = (self.model.hello, self.model.message1(self.params))
        sock.sendall(self.recorded[1])
        _, _, payload2 = self.model.finish(recv_exact(sock, 2 + MSG2_LEN))
        #: Message 2's admission byte: 0 accepted, 1 busy (§3.5).
        self.admission = payload2[LIMITS_LEN]
        #: The server's max message size (§3.5).
        self.peer_max_message = int.from_bytes(payload2[:8], "big")
        k_send, k_recv = self.model.keys()
        self._init_transport(sock, k_send, k_recv)
        first = CONFIRM_BARE if first is None else first
        if first:
            self.send(first)


#: The name the first tests used for the client role.
HostilePeer = RefClient


def expect_close(peer: Transport, code: int, timeout: float = 5.0) -> list[Frame]:
    """The peer's remaining frames end with CLOSE ``code`` and then end of stream."""
    try:
        frames = peer.frames_until_closed(timeout)
    except InvalidTag as exc:  # pragma: no cover - a broken stream fails the test
        raise AssertionError("a frame from the other side failed authentication") from exc
    assert frames, "closed without a CLOSE frame"
    assert frames[-1].type == CLOSE, frames
    assert frames[-1].close_code == code, frames[-1]
    return frames


# --------------------------------------------------------------------------------------------
# Server role


class ServerSide(Transport):
    """One connection accepted by :class:`RefServer`, after the handshake: ``confirm`` holds
    the client's first frame (normally CONFIRM, maybe with a session request)."""

    def __init__(self, sock: socket.socket, k_send: bytes, k_recv: bytes, bugs: Bugs) -> None:
        self.bugs = bugs
        self._init_transport(sock, k_send, k_recv)
        self.confirm: Frame | None = None
        #: The identity the client's hello named, and its message 1 payload: node id and max
        #: message size.
        self.client_identity = b""
        self.client_node_id = b""
        self.client_max_message = 0


@dataclass
class Exchange:
    """What :class:`RefServer` saw and sent in one handshake, up to message 1: the client's
    hello, the 104 parameter bytes it answered with, the CPace scalar ``ya`` behind the share in
    them, and the client's message 1 record (empty if none came)."""

    hello: bytes
    params: bytes
    scalar: bytes
    message1: bytes = b""


class RefServer(Closing):
    """Listens; answers a real client's hello with :class:`Params` of its choosing and runs the
    server side of the handshake with the PRS derived from ``password`` and those params, for
    any identity the hello names (like a server with one shared password)."""

    def __init__(
        self,
        password: str | bytes,
        *,
        params: Params | None = None,
        max_message: int = 1 << 24,
        admission: int = 0,
        bugs: Bugs | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.params = params or Params()
        pw = password.encode() if isinstance(password, str) else password
        self.prs = self.params.prs(pw)
        self.max_message = max_message
        self.admission = admission
        self.bugs = bugs or Bugs()
        #: Every handshake so far, in order, including those that failed at message 1.
        self.exchanges: list[Exchange] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(64)
        self.address: tuple[str, int] = self.listener.getsockname()

    def accept(self, timeout: float = 10.0, *, read_confirm: bool = True) -> ServerSide:
        """The next client, handshake done; with ``read_confirm`` its first frame read too.
        A message 1 that does not open (InvalidTag) or carries an unacceptable share
        (ValueError) raises after the connection was closed without a word, as a server does."""
        self.listener.settimeout(timeout)
        sock, _ = self.listener.accept()
        try:
            return self._handshake(sock, timeout, read_confirm)
        except BaseException:
            sock.close()
            raise

    def _handshake(self, sock: socket.socket, timeout: float, read_confirm: bool) -> ServerSide:
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.bugs.rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.bugs.rcvbuf)
        hello = recv_hello(sock, timeout)
        assert hello[:8] == b"ALNK\x00\x02\x00\x01", hello
        model = ModelServer(self.prs, self.params.encode())
        exchange = Exchange(hello, model.answer(hello), model.scalar)
        self.exchanges.append(exchange)
        sock.sendall(exchange.params)
        exchange.message1 = recv_exact(sock, 2 + MSG1_LEN, timeout)
        payload1 = model.read_message1(exchange.message1)
        payload2 = limits(self.max_message) + bytes([self.admission])
        sock.sendall(model.message2(payload2))
        k_c2s, k_s2c = model.keys()
        side = ServerSide(sock, k_s2c, k_c2s, self.bugs)
        side.client_identity = hello[HELLO_FIXED_LEN:]
        side.client_node_id = payload1[:16]
        side.client_max_message = int.from_bytes(payload1[16:24], "big")
        if read_confirm:
            side.confirm = side.recv_frame(timeout)
        return side

    def close(self) -> None:
        self.listener.close()
