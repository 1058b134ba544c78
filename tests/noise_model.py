"""An independent model of argonlink's wire protocol, for tests that play the attacker.

This module reimplements, on the test side, what argonlink puts on the wire (docs/PROTOCOL.md,
version 2): the client hello and the server parameters; CPace (draft-irtf-cfrg-cpace-21, suite
CPACE-RISTR255-SHA512, initiator-responder: its string encodings ``prepend_len`` and ``lv_cat``,
the generator string, the scalar sampling and the ISK transcript), keyed by the Argon2id PRS;
the ``Noise_NNpsk0_25519_AESGCM_SHA256`` handshake (Noise spec revision 34) with ISK[0:32] as
its psk and the hello, the parameters and the client's share as prologue; and the transport
frames (u16 length prefix, AES-256-GCM under a per-direction key and a counter nonce, no
associated data). It is written from the specifications, not from the library's code, and is
used for two things:

* to play the attacker: try password guesses on a recorded handshake, open message 1 with a
  key it was given, try every key schedule an eavesdropper could compute, forge or replay
  handshake messages (``tests/test_security.py``);
* to cross-check the library: :class:`ModelClient` completes a real handshake with a real
  server and exchanges frames with it, and :class:`ModelServer` (inside ``tests/refpeer.py``)
  does the same with a real client, which shows that model and library agree byte for byte.

The primitives are not reimplemented: the ristretto255 group (element derivation from a hash,
decoding, encoding, scalar multiplication) comes from libsodium through ``rbcl``; X25519,
AES-256-GCM and Argon2id from pyca ``cryptography``; SHA-256, SHA-512 and HMAC from the
standard library. What is written here is the protocol around them -- CPace's encodings,
generator string and transcript, Noise's HKDF (§4.3), symmetric state (§5.2) and psk modifier
(§9), the NNpsk0 message pattern, the AESGCM nonce format (§12) and argonlink's messages and
framing -- and ``test_security.py`` checks it against published vectors (RFC 7748, the GCM
spec, RFC 5869, the Noise test vectors of the cacophony project, the CPace draft's vectors for
its string functions and for ristretto255) as well as against the library itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct

import rbcl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from proxy import HELLO_FIXED_LEN, PARAMS_LEN, recv_exact

__all__ = [
    "CI_LABEL",
    "CONFIRM_FRAME",
    "DSI",
    "DSI_ISK",
    "LIMITS_LEN",
    "MSG1_LEN",
    "MSG1_NOISE_LEN",
    "MSG2_LEN",
    "PARAMS_FIXED_LEN",
    "PROTOCOL_NAME",
    "SHARE_LEN",
    "FrameCipher",
    "InvalidTag",
    "ModelClient",
    "ModelServer",
    "NoiseInitiator",
    "NoiseResponder",
    "SymmetricState",
    "aead_decrypt",
    "aead_encrypt",
    "calculate_generator",
    "cpace_ci",
    "cpace_sid",
    "data_frame",
    "derive_prs",
    "generator_string",
    "handshake_generator",
    "isk_ir",
    "limits",
    "lv_cat",
    "make_hello",
    "noise_hkdf",
    "noise_nonce",
    "noise_prologue",
    "prepend_len",
    "prs_from_phc",
    "sample_scalar",
    "scalar_mult_vfy",
    "x25519",
    "x25519_public",
]

PROTOCOL_NAME = b"Noise_NNpsk0_25519_AESGCM_SHA256"
DH_LEN = 32
TAG_LEN = 16

#: A CPace share: an encoded ristretto255 element.
SHARE_LEN = 32
#: The server parameters before the server's nonce (the whole of version 1's, §3.2).
PARAMS_FIXED_LEN = 56
#: The parameters that go into CPace's channel identifier: all but the share.
PARAMS_CI_LEN = 72
#: What each side announces it accepts (§3.4): max message (u64), default window, channel
#: window, max channels (u32 each).
LIMITS_LEN = 20
#: Noise message 1 (client ephemeral key, 36-byte payload: node id and limits, tag); on the
#: wire the client's share comes before it under one u16 length prefix (§3.4). Noise message 2
#: (server ephemeral key, 21-byte payload: limits and admission, tag) follows its own u16
#: prefix (§3.5).
MSG1_NOISE_LEN = DH_LEN + 16 + LIMITS_LEN + TAG_LEN
MSG1_LEN = SHARE_LEN + MSG1_NOISE_LEN
MSG2_LEN = DH_LEN + LIMITS_LEN + 1 + TAG_LEN


def limits(
    max_message: int,
    *,
    window: int = 4 << 20,
    channel_window: int = 256 << 10,
    max_channels: int = 128,
) -> bytes:
    """The 20 bytes a side announces: what it accepts (the library's defaults but for the
    message size)."""
    return struct.pack(">QIII", max_message, window, channel_window, max_channels)


#: CPace's domain separation for G_Ristretto255 and its ISK (draft-irtf-cfrg-cpace-21).
DSI = b"CPaceRistretto255"
DSI_ISK = DSI + b"_ISK"
#: SHA-512's input block size, s_in_bytes in the draft.
SHA512_BLOCK = 128
#: The first field of argonlink's CI (§3.3).
CI_LABEL = b"argonlink/2"


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


class NoiseResponder:
    """The responder of ``NNpsk0``: reads ``-> psk, e`` and writes ``<- e, ee`` (Noise §7.4,
    §9.2), for any prologue and payloads. Knows its ephemeral private key."""

    def __init__(self, prologue: bytes, psk: bytes, e_priv: bytes | None = None) -> None:
        self._psk = psk
        self.e_priv = e_priv if e_priv is not None else os.urandom(32)
        self.e_pub = x25519_public(self.e_priv)
        self.state = SymmetricState(prologue)
        self._e_initiator = b""

    def read_message1(self, message: bytes) -> bytes:
        """Message 1 without its prefix: the initiator's payload. Raises InvalidTag."""
        ss, e_i = self.state, message[:DH_LEN]
        ss.mix_key_and_hash(self._psk)  # psk
        ss.mix_hash(e_i)  # e (and, with a psk, MixKey(e))
        ss.mix_key(e_i)
        self._e_initiator = e_i
        return ss.decrypt_and_hash(message[DH_LEN:])

    def write_message2(self, payload: bytes) -> bytes:
        ss = self.state
        ss.mix_hash(self.e_pub)
        ss.mix_key(self.e_pub)
        ss.mix_key(x25519(self.e_priv, self._e_initiator))  # ee
        return self.e_pub + ss.encrypt_and_hash(payload)

    def split(self) -> tuple[FrameCipher, FrameCipher]:
        """(sending cipher, receiving cipher) for the transport phase."""
        k1, k2 = self.state.split()
        return FrameCipher(k2), FrameCipher(k1)


# --------------------------------------------------------------------------------------------
# CPace (draft-irtf-cfrg-cpace-21), G_Ristretto255 with SHA-512; libsodium does the group


def prepend_len(data: bytes) -> bytes:
    """The draft's prepend_len: the LEB128 encoding of ``len(data)``, then ``data``."""
    length, encoded = len(data), bytearray()
    while True:
        if length < 128:
            encoded.append(length)
        else:
            encoded.append((length & 0x7F) | 0x80)
        length >>= 7
        if length == 0:
            return bytes(encoded) + data


def lv_cat(*parts: bytes) -> bytes:
    """The draft's lv_cat: each part with its length prepended, concatenated."""
    return b"".join(prepend_len(part) for part in parts)


def generator_string(dsi: bytes, prs: bytes, ci: bytes, sid: bytes, s_in_bytes: int) -> bytes:
    """The draft's generator_string: zero padding fills the first hash block after DSI and PRS."""
    len_zpad = max(0, s_in_bytes - 1 - len(prepend_len(prs)) - len(prepend_len(dsi)))
    return lv_cat(dsi, prs, bytes(len_zpad), ci, sid)


def calculate_generator(prs: bytes, ci: bytes, sid: bytes) -> bytes:
    """G_Ristretto255.calculate_generator: element_derivation (ristretto255's one-way map, which
    is what libsodium's from_hash computes) of SHA-512(generator string); its encoding."""
    digest = hashlib.sha512(generator_string(DSI, prs, ci, sid, SHA512_BLOCK)).digest()
    return bytes(rbcl.crypto_core_ristretto255_from_hash(digest))


def sample_scalar() -> bytes:
    """A scalar as the draft samples it for ristretto255: 32 random bytes, the top 4 bits of
    the last one cleared (a little-endian integer below 2^252, so below the group order)."""
    scalar = bytearray(os.urandom(32))
    scalar[31] &= 0x0F
    return bytes(scalar)


def scalar_mult_vfy(scalar: bytes, point: bytes) -> bytes | None:
    """The draft's scalar_mult_vfy: the encoding of scalar * decode(point), or None (abort) if
    ``point`` does not decode or the product is the identity (libsodium refuses both)."""
    if len(point) != SHARE_LEN:
        return None
    try:
        return bytes(rbcl.crypto_scalarmult_ristretto255(scalar, point))
    except RuntimeError:
        return None


def isk_ir(sid: bytes, k: bytes, ya: bytes, yb: bytes, ada: bytes = b"", adb: bytes = b"") -> bytes:
    """ISK in initiator-responder mode: SHA-512(lv_cat(DSI_ISK, sid, K) ‖ transcript_ir), with
    transcript_ir = lv_cat(Ya, ADa) ‖ lv_cat(Yb, ADb)."""
    return hashlib.sha512(lv_cat(DSI_ISK, sid, k) + lv_cat(ya, ada) + lv_cat(yb, adb)).digest()


# --------------------------------------------------------------------------------------------
# argonlink's messages and its use of CPace and Noise (PROTOCOL.md §1, §3)


def derive_prs(password: bytes, salt: bytes, m_cost: int, t_cost: int, p_cost: int) -> bytes:
    """PRS = Argon2id(password, salt, m, t, p, version 0x13, 32 bytes) (§1, RFC 9106)."""
    kdf = Argon2id(salt=salt, length=32, iterations=t_cost, lanes=p_cost, memory_cost=m_cost)
    return kdf.derive(password)


def prs_from_phc(phc: str) -> bytes:
    """A PHC string's hash is the PRS (PROTOCOL.md §1)."""
    encoded = phc.rsplit("$", 1)[1]
    prs = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    assert len(prs) == 32
    return prs


def make_hello(
    identity: bytes = b"",
    *,
    epoch_hint: int = 0,
    nonce: bytes | None = None,
    version: int = 2,
    suite: int = 1,
) -> bytes:
    """A client hello (§3.1): magic, version, suite, epoch hint, a fresh 16-byte nonce unless
    one is given, the identity's length and the identity."""
    nonce = os.urandom(16) if nonce is None else nonce
    assert len(nonce) == 16 and len(identity) < 256
    head = b"ALNK" + struct.pack(">HHI", version, suite, epoch_hint) + nonce
    return head + bytes([len(identity)]) + identity


def cpace_ci(hello: bytes, params: bytes) -> bytes:
    """CI = lv_cat("argonlink/2", hello, params[0..72]) (§3.3)."""
    return lv_cat(CI_LABEL, hello, params[:PARAMS_CI_LEN])


def cpace_sid(hello: bytes, params: bytes) -> bytes:
    """sid = client nonce ‖ server nonce (§3.3)."""
    return hello[12:28] + params[PARAMS_FIXED_LEN:PARAMS_CI_LEN]


def handshake_generator(prs: bytes, hello: bytes, params: bytes) -> bytes:
    """The CPace generator of one connection: from the PRS, its hello and its parameters (only
    the first 72 bytes of which, everything before the server's share, are used)."""
    return calculate_generator(prs, cpace_ci(hello, params), cpace_sid(hello, params))


def noise_prologue(hello: bytes, params: bytes, client_share: bytes) -> bytes:
    """The Noise prologue: the hello, all 104 parameter bytes and the client's share (§2)."""
    return hello + params + client_share


def data_frame(message: bytes) -> bytes:
    """Plaintext of a single-frame DATA message (PROTOCOL.md §4.1: type 0x01, flags 0)."""
    return b"\x01\x00" + message


#: Plaintext of the CONFIRM frame (type 0x06, empty body), the client's first transport frame.
CONFIRM_FRAME = b"\x06"


class ModelClient:
    """The client side of the handshake (CPace responder B, Noise initiator), written from the
    specifications and the wire layout in docs/PROTOCOL.md §3 (not from the library's code).
    Knows its CPace scalar and its ephemeral private key; one instance serves one connection
    (its hello carries a fresh nonce)."""

    def __init__(
        self,
        prs: bytes,
        *,
        identity: bytes = b"",
        epoch_hint: int = 0,
        node_id: bytes | None = None,
        max_message: int = 1 << 20,
        e_priv: bytes | None = None,
        scalar: bytes | None = None,
    ) -> None:
        self.prs = prs
        self.identity = identity
        self.hello = make_hello(identity, epoch_hint=epoch_hint)
        self.node_id = node_id if node_id is not None else os.urandom(16)
        self.max_message = max_message
        self.e_priv = e_priv if e_priv is not None else os.urandom(32)
        self.e_pub = x25519_public(self.e_priv)
        #: yb, and once message 1 is made: Yb, ISK and the Noise psk (ISK[0:32]).
        self.scalar = scalar if scalar is not None else sample_scalar()
        self.share = b""
        self.isk = b""
        self.psk = b""
        self._noise: NoiseInitiator | None = None

    def message1(self, params: bytes) -> bytes:
        """The u16-prefixed message 1 for these server parameters. Raises ValueError if the
        server's share does not decode or gives the identity (the client aborts, §3.2)."""
        assert len(params) == PARAMS_LEN
        server_share = params[PARAMS_CI_LEN:]
        g = handshake_generator(self.prs, self.hello, params)
        share = scalar_mult_vfy(self.scalar, g)
        k = scalar_mult_vfy(self.scalar, server_share)
        if share is None or k is None:
            raise ValueError("the server's CPace share is not acceptable")
        self.share = share
        self.isk = isk_ir(cpace_sid(self.hello, params), k, server_share, share)
        self.psk = self.isk[:32]
        self._noise = NoiseInitiator(
            noise_prologue(self.hello, params, share), self.psk, self.e_priv
        )
        payload = self.node_id + limits(self.max_message)
        msg1 = share + self._noise.write_message1(payload)
        assert len(msg1) == MSG1_LEN
        return struct.pack(">H", MSG1_LEN) + msg1

    def finish(self, msg2_record: bytes) -> tuple[FrameCipher, FrameCipher, bytes]:
        """Process message 2: (sending cipher, receiving cipher, server payload)."""
        assert self._noise is not None and len(msg2_record) == 2 + MSG2_LEN
        payload = self._noise.read_message2(msg2_record[2:])
        send, recv = self._noise.split()
        return send, recv, payload

    def keys(self) -> tuple[bytes, bytes]:
        """The transport keys after message 2: (client -> server, server -> client)."""
        assert self._noise is not None
        return self._noise.state.split()

    def handshake(self, sock: socket.socket) -> tuple[FrameCipher, FrameCipher]:
        """Run the whole client handshake on a connected socket and send CONFIRM."""
        sock.sendall(self.hello)
        params = recv_exact(sock, PARAMS_LEN)
        sock.sendall(self.message1(params))
        send, recv, payload = self.finish(recv_exact(sock, 2 + MSG2_LEN))
        assert len(payload) == LIMITS_LEN + 1 and payload[LIMITS_LEN] == 0  # limits, admitted
        sock.sendall(send.seal(CONFIRM_FRAME))
        return send, recv


class ModelServer:
    """The server side of one connection's handshake (CPace initiator A, Noise responder), from
    the same specifications. ``fixed`` are the first 56 parameter bytes (version, suite, salt,
    costs, epoch, node id, other epoch): the server's nonce and share are made here. Knows its
    CPace scalar and its ephemeral private key."""

    def __init__(
        self,
        prs: bytes,
        fixed: bytes,
        *,
        scalar: bytes | None = None,
        nonce: bytes | None = None,
        e_priv: bytes | None = None,
    ) -> None:
        assert len(fixed) == PARAMS_FIXED_LEN
        self.prs = prs
        self.fixed = fixed
        self.scalar = scalar if scalar is not None else sample_scalar()
        self.nonce = nonce if nonce is not None else os.urandom(16)
        self.e_priv = e_priv
        self.hello = b""
        self.params = b""
        self.isk = b""
        self._noise: NoiseResponder | None = None

    def answer(self, hello: bytes) -> bytes:
        """The 104 parameter bytes that answer ``hello``, with Ya on this connection's
        generator."""
        assert len(hello) >= HELLO_FIXED_LEN
        self.hello = hello
        head = self.fixed + self.nonce
        share = scalar_mult_vfy(self.scalar, handshake_generator(self.prs, hello, head))
        assert share is not None
        self.params = head + share
        return self.params

    def read_message1(self, record: bytes) -> bytes:
        """The client's message 1 payload (node id, limits) from the u16-prefixed
        record. Raises ValueError for a share that does not decode or gives the identity,
        InvalidTag for a message 1 that does not open (a wrong password among others)."""
        assert struct.unpack_from(">H", record)[0] == len(record) - 2 == MSG1_LEN
        client_share = record[2 : 2 + SHARE_LEN]
        k = scalar_mult_vfy(self.scalar, client_share)
        if k is None:
            raise ValueError("the client's CPace share is not acceptable")
        server_share = self.params[PARAMS_CI_LEN:]
        self.isk = isk_ir(cpace_sid(self.hello, self.params), k, server_share, client_share)
        prologue = noise_prologue(self.hello, self.params, client_share)
        self._noise = NoiseResponder(prologue, self.isk[:32], self.e_priv)
        return self._noise.read_message1(record[2 + SHARE_LEN :])

    def message2(self, payload: bytes) -> bytes:
        """The u16-prefixed message 2 carrying ``payload`` (limits, admission)."""
        assert self._noise is not None
        msg2 = self._noise.write_message2(payload)
        assert len(msg2) == MSG2_LEN
        return struct.pack(">H", MSG2_LEN) + msg2

    def keys(self) -> tuple[bytes, bytes]:
        """The transport keys after message 2: (client -> server, server -> client)."""
        assert self._noise is not None
        return self._noise.state.split()
