"""An independent model of argonlink's wire protocol, for tests that play the attacker.

This module reimplements, on the test side, what argonlink puts on the wire (docs/PROTOCOL.md):
the ``Noise_NNpsk0_25519_AESGCM_SHA256`` handshake (Noise spec revision 34) with the hello and
the server parameters as prologue, and the transport frames (u16 length prefix, AES-256-GCM
under a per-direction key and a counter nonce, no associated data). It is written from the
specifications, not from the library's code, and is used for two things:

* to play the attacker: open a recorded message 1 with the PSK, try every key schedule an
  eavesdropper could compute, forge or replay handshake messages (``tests/test_security.py``);
* to cross-check the library: :class:`ModelClient` completes a real handshake with a real
  server and exchanges frames with it, which shows that model and library agree byte for byte.

The primitives are not reimplemented: X25519 and AES-256-GCM come from pyca ``cryptography``
(OpenSSL), SHA-256 and HMAC from the standard library. What is written here is the protocol
around them -- Noise's HKDF (§4.3), symmetric state (§5.2) and psk modifier (§9), the NNpsk0
message pattern, the AESGCM nonce format (§12) and argonlink's framing -- and
``test_security.py`` checks it against published vectors (RFC 7748, the GCM spec, RFC 5869, and
the Noise test vectors of the cacophony project) as well as against the library itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from proxy import PARAMS_LEN, recv_exact

__all__ = [
    "CONFIRM_FRAME",
    "HELLO",
    "MSG1_LEN",
    "MSG2_LEN",
    "PROTOCOL_NAME",
    "FrameCipher",
    "InvalidTag",
    "ModelClient",
    "NoiseInitiator",
    "SymmetricState",
    "aead_decrypt",
    "aead_encrypt",
    "data_frame",
    "noise_hkdf",
    "noise_nonce",
    "psk_from_phc",
    "x25519",
    "x25519_public",
]

PROTOCOL_NAME = b"Noise_NNpsk0_25519_AESGCM_SHA256"
DH_LEN = 32
TAG_LEN = 16

#: The client hello: "ALNK", version 1, suite 1, no key epoch hint (PROTOCOL.md §3.1).
HELLO = b"ALNK\x00\x01\x00\x01\x00\x00\x00\x00"
#: Noise message 1 (client ephemeral key, 24-byte payload, tag) and 2 (server ephemeral key,
#: 9-byte payload, tag), each sent after a u16 length prefix (PROTOCOL.md §3.3, §3.4).
MSG1_LEN = DH_LEN + 24 + TAG_LEN
MSG2_LEN = DH_LEN + 9 + TAG_LEN


# --------------------------------------------------------------------------------------------
# Primitives (cryptography and hashlib do the work)


def x25519(scalar: bytes, u: bytes) -> bytes:
    """RFC 7748 X25519(scalar, u): any 32 bytes as the scalar (clamped), any 32 bytes as u.

    Raises ValueError if the result is all zeros (``u`` of small order): OpenSSL refuses it."""
    private = X25519PrivateKey.from_private_bytes(scalar)
    return private.exchange(X25519PublicKey.from_public_bytes(u))


def x25519_public(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key (X25519 of the base point, u = 9)."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def noise_nonce(n: int) -> bytes:
    """Noise AESGCM nonce (§12): 32 zero bits, then the counter as a big-endian u64."""
    return bytes(4) + n.to_bytes(8, "big")


def aead_encrypt(key: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    """Noise ENCRYPT(k, n, ad, plaintext) for AESGCM: ciphertext followed by the 16-byte tag."""
    return AESGCM(key).encrypt(noise_nonce(n), plaintext, ad)


def aead_decrypt(key: bytes, n: int, ad: bytes, ciphertext: bytes) -> bytes:
    """Noise DECRYPT(k, n, ad, ciphertext); raises InvalidTag if it does not authenticate."""
    return AESGCM(key).decrypt(noise_nonce(n), ciphertext, ad)


def noise_hkdf(ck: bytes, ikm: bytes, n: int) -> list[bytes]:
    """Noise HKDF(chaining_key, input_key_material, num_outputs) with HMAC-SHA256 (§4.3)."""
    temp = hmac.new(ck, ikm, hashlib.sha256).digest()
    out, prev = [], b""
    for i in range(1, n + 1):
        prev = hmac.new(temp, prev + bytes([i]), hashlib.sha256).digest()
        out.append(prev)
    return out


# --------------------------------------------------------------------------------------------
# Noise


class SymmetricState:
    """Noise spec rev 34 §5.2 with the psk modifier (§9), SHA-256 and AES-256-GCM.

    Holds bytes only (a new AESGCM object per operation), so ``copy.deepcopy`` works on it."""

    def __init__(self, prologue: bytes) -> None:
        assert len(PROTOCOL_NAME) == 32  # exactly HASHLEN: used as h as is, no hashing
        self.h = self.ck = PROTOCOL_NAME
        self.k: bytes | None = None
        self.n = 0
        self.mix_hash(prologue)

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, self.k = noise_hkdf(self.ck, ikm, 2)
        self.n = 0

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, self.k = noise_hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.n = 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        assert self.k is not None
        ct = aead_encrypt(self.k, self.n, self.h, plaintext)
        self.n += 1
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ct: bytes) -> bytes:
        assert self.k is not None
        plaintext = aead_decrypt(self.k, self.n, self.h, ct)
        self.n += 1
        self.mix_hash(ct)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """(initiator -> responder key, responder -> initiator key)."""
        k1, k2 = noise_hkdf(self.ck, b"", 2)
        return k1, k2


class FrameCipher:
    """One direction of the transport: u16 length prefix + AES-GCM under a counter nonce, no AD."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.n = 0

    def seal(self, plaintext: bytes) -> bytes:
        ct = self._aead.encrypt(noise_nonce(self.n), plaintext, b"")
        self.n += 1
        return struct.pack(">H", len(ct)) + ct

    def open(self, record: bytes) -> bytes:
        (length,) = struct.unpack_from(">H", record)
        assert length == len(record) - 2, "not one whole record"
        plaintext = self._aead.decrypt(noise_nonce(self.n), record[2:], b"")
        self.n += 1
        return plaintext


class NoiseInitiator:
    """The initiator of ``NNpsk0``: ``-> psk, e`` then ``<- e, ee`` (Noise §7.4 with §9.2), for
    any prologue and payloads. Knows its ephemeral private key."""

    def __init__(self, prologue: bytes, psk: bytes, e_priv: bytes) -> None:
        self._psk = psk
        self.e_priv = e_priv
        self.e_pub = x25519_public(e_priv)
        self.state = SymmetricState(prologue)

    def write_message1(self, payload: bytes) -> bytes:
        """Message 1 (without a length prefix): the ephemeral key, then the sealed payload."""
        ss = self.state
        ss.mix_key_and_hash(self._psk)  # psk token
        ss.mix_hash(self.e_pub)  # e token (and, with a psk, MixKey(e))
        ss.mix_key(self.e_pub)
        return self.e_pub + ss.encrypt_and_hash(payload)

    def read_message2(self, message: bytes) -> bytes:
        """Process message 2 (without its length prefix): the responder's payload. Raises
        InvalidTag if it does not authenticate."""
        ss, e_r = self.state, message[:DH_LEN]
        ss.mix_hash(e_r)  # e token
        ss.mix_key(e_r)
        ss.mix_key(x25519(self.e_priv, e_r))  # ee
        return ss.decrypt_and_hash(message[DH_LEN:])

    def split(self) -> tuple[FrameCipher, FrameCipher]:
        """(sending cipher, receiving cipher) for the transport phase."""
        k1, k2 = self.state.split()
        return FrameCipher(k1), FrameCipher(k2)

    @property
    def handshake_hash(self) -> bytes:
        return self.state.h


# --------------------------------------------------------------------------------------------
# argonlink on top of Noise


def data_frame(message: bytes) -> bytes:
    """Plaintext of a single-frame DATA message (PROTOCOL.md §4.1: type 0x01, flags 0)."""
    return b"\x01\x00" + message


#: Plaintext of the CONFIRM frame (type 0x06, empty body), the client's first transport frame.
CONFIRM_FRAME = b"\x06"


class ModelClient:
    """The client side of the handshake, written from the Noise spec and the wire layout in
    docs/PROTOCOL.md §3 (not from the library's code). Knows its ephemeral private key.
    """

    def __init__(
        self,
        psk: bytes,
        *,
        node_id: bytes | None = None,
        max_message: int = 1 << 20,
        e_priv: bytes | None = None,
    ) -> None:
        self.psk = psk
        self.node_id = node_id if node_id is not None else os.urandom(16)
        self.max_message = max_message
        self.e_priv = e_priv if e_priv is not None else os.urandom(32)
        self.e_pub = x25519_public(self.e_priv)
        self._noise: NoiseInitiator | None = None

    def message1(self, params: bytes) -> bytes:
        """The u16-prefixed message 1 for these server parameters (prologue: hello + params)."""
        self._noise = NoiseInitiator(HELLO + params, self.psk, self.e_priv)
        payload = self.node_id + self.max_message.to_bytes(8, "big")
        msg1 = self._noise.write_message1(payload)
        assert len(msg1) == MSG1_LEN
        return struct.pack(">H", MSG1_LEN) + msg1

    def finish(self, msg2_record: bytes) -> tuple[FrameCipher, FrameCipher, bytes]:
        """Process message 2: (sending cipher, receiving cipher, server payload)."""
        assert self._noise is not None and len(msg2_record) == 2 + MSG2_LEN
        payload = self._noise.read_message2(msg2_record[2:])
        send, recv = self._noise.split()
        return send, recv, payload

    def handshake(self, sock: socket.socket) -> tuple[FrameCipher, FrameCipher]:
        """Run the whole client handshake on a connected socket and send CONFIRM."""
        sock.sendall(HELLO)
        params = recv_exact(sock, PARAMS_LEN)
        sock.sendall(self.message1(params))
        send, recv, payload = self.finish(recv_exact(sock, 2 + MSG2_LEN))
        assert len(payload) == 9 and payload[8] == 0  # max message size, admitted
        sock.sendall(send.seal(CONFIRM_FRAME))
        return send, recv


def psk_from_phc(phc: str) -> bytes:
    """A PHC string's hash is the PSK (PROTOCOL.md §1; kdf.rs, ServerKey::from_phc)."""
    encoded = phc.rsplit("$", 1)[1]
    psk = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    assert len(psk) == 32
    return psk
