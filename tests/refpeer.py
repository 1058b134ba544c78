"""A reference peer that completes real handshakes and then sends what an honest peer never would.

Written from docs/PROTOCOL.md on top of the independent protocol model in ``noise_model.py``
(Noise ``NNpsk0`` from pyca ``cryptography`` primitives), not from the library's code, so
that it can play the authenticated hostile peer: one that knows the password and breaks the
rules on purpose (tiny fragments, floods of control frames, impossible session numbers,
reserved close codes, never reading). Like a protocol-bugs test runner, each misbehaviour is
a method or a plaintext builder; the tests in ``test_hostile.py`` assert the exact outcome.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from noise_model import HELLO, MSG2_LEN, FrameCipher, ModelClient, noise_nonce
from proxy import PARAMS_LEN, recv_exact

# Frame types and DATA flags (PROTOCOL.md §4.1).
DATA, PING, PONG, CLOSE, REKEY, CONFIRM, ACK, RESUME = range(1, 9)
MORE, LENGTH = 0x01, 0x02
#: The most of a message one frame carries: first fragment, middle fragments (M14).
FIRST_FRAGMENT = 65509
MAX_CHUNK = 65517
#: The nonce reserved for rekeying (§4.4).
REKEY_NONCE = (1 << 64) - 1


class Cipher(FrameCipher):
    """The model's transport direction, keeping its key so that it can follow REKEY (§4.4)."""

    def __init__(self, key: bytes) -> None:
        super().__init__(key)
        self.key = key

    def open_body(self, body: bytes) -> bytes:
        """Open a frame given without its length prefix."""
        plaintext = self._aead.decrypt(noise_nonce(self.n), body, b"")
        self.n += 1
        return plaintext

    def rekey(self) -> None:
        self.key = self._aead.encrypt(noise_nonce(REKEY_NONCE), bytes(32), b"")[:32]
        self._aead = AESGCM(self.key)


# Plaintext builders: each returns one frame's plaintext, honest or not.


def data(chunk: bytes, *, more: bool = False, total: int | None = None) -> bytes:
    flags = (MORE if more else 0) | (LENGTH if total is not None else 0)
    head = bytes([DATA, flags]) + (struct.pack(">Q", total) if total is not None else b"")
    return head + chunk


def ping(value: int) -> bytes:
    return bytes([PING]) + struct.pack(">Q", value)


def close(code: int, reason: bytes = b"") -> bytes:
    return bytes([CLOSE]) + struct.pack(">H", code) + reason


def ack(next_expected: int) -> bytes:
    return bytes([ACK]) + struct.pack(">Q", next_expected)


def confirm(
    session_id: bytes | None = None,
    *,
    resume: bool = False,
    next_expected: int = 0,
    window: int = 1 << 20,
) -> bytes:
    """CONFIRM, bare or with a 29-byte session request (§4.5)."""
    if session_id is None:
        return bytes([CONFIRM])
    return (
        bytes([CONFIRM, 1 if resume else 0])
        + session_id
        + struct.pack(">QI", next_expected, window)
    )


CONFIRM_BARE = confirm()


@dataclass
class Frame:
    type: int
    body: bytes

    @property
    def close_code(self) -> int:
        assert self.type == CLOSE, self
        return int(struct.unpack_from(">H", self.body)[0])

    @property
    def value(self) -> int:
        """The u64 of a PING, PONG or ACK."""
        return int(struct.unpack(">Q", self.body)[0])


class HostilePeer:
    """A client that completes a real handshake with a PSK, then sends whatever it is told."""

    def __init__(
        self,
        address: tuple[str, int],
        psk: bytes,
        *,
        first: bytes | None = None,
        rcvbuf: int | None = None,
        source: str | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connecting, so the window the peer sees is small from the start.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            self.sock.bind((source, 0))
        self.sock.settimeout(5)
        self.sock.connect(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        model = ModelClient(psk)
        self.sock.sendall(HELLO)
        params = recv_exact(self.sock, PARAMS_LEN)
        self.sock.sendall(model.message1(params))
        msg2 = recv_exact(self.sock, 2 + MSG2_LEN)
        noise = model._noise
        assert noise is not None
        payload = noise.read_message2(msg2[2:])
        #: Message 2's admission byte: 0 accepted, 1 busy (§3.4).
        self.admission = payload[8]
        k_send, k_recv = noise.state.split()
        self.send_cipher = Cipher(k_send)
        self.recv_cipher = Cipher(k_recv)
        self._buf = b""
        # The first frame: CONFIRM unless told otherwise (b"" sends nothing).
        first = CONFIRM_BARE if first is None else first
        if first:
            self.send(first)

    # Sending

    def send(self, *plaintexts: bytes) -> None:
        """Seal each plaintext as one frame; all in one write."""
        self.sock.sendall(b"".join(self.send_cipher.seal(p) for p in plaintexts))

    def send_each(self, plaintexts: list[bytes]) -> None:
        """Seal each plaintext as one frame, each in its own write (its own TCP segment)."""
        for p in plaintexts:
            self.sock.sendall(self.send_cipher.seal(p))

    def send_sealed_tampered(self, plaintext: bytes) -> None:
        """One frame with a bit flipped in its ciphertext: it fails authentication."""
        record = bytearray(self.send_cipher.seal(plaintext))
        record[-1] ^= 0x01
        self.sock.sendall(bytes(record))

    # Receiving

    def recv_frame(self, timeout: float = 5.0) -> Frame | None:
        """The next frame (REKEY followed silently), or None at end of stream."""
        deadline = time.monotonic() + timeout
        while True:
            while len(self._buf) >= 2:
                (length,) = struct.unpack_from(">H", self._buf)
                if len(self._buf) < 2 + length:
                    break
                body, self._buf = self._buf[2 : 2 + length], self._buf[2 + length :]
                plain = self.recv_cipher.open_body(body)
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

    def raw_until_closed(self, timeout: float = 5.0) -> bytes:
        """The bytes that arrive until end of stream (for streams we cannot decrypt)."""
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

    def __enter__(self) -> HostilePeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def expect_close(peer: HostilePeer, code: int, timeout: float = 5.0) -> list[Frame]:
    """The peer's remaining frames end with CLOSE ``code`` and then end of stream."""
    try:
        frames = peer.frames_until_closed(timeout)
    except InvalidTag as exc:  # pragma: no cover - a broken stream fails the test
        raise AssertionError("a frame from the server failed authentication") from exc
    assert frames, "the server closed without a CLOSE frame"
    assert frames[-1].type == CLOSE, frames
    assert frames[-1].close_code == code, frames[-1]
    return frames
