"""The security properties of argonlink, proved against the real library on real sockets.

Each group below proves one numbered property of ``docs/PROTOCOL.md`` §8 ("Security properties
and their tests"): 1-8, 10 and 11 (9, re-authentication, and 12, rekeying, are tested
elsewhere); one more group proves the limits on password guessing of §7 (no offline guessing
from a recorded handshake, one guess per handshake for an active attacker). Every test is
written so that it fails if its property breaks, and where a failure could also come from the
test's own machinery (the proxy, the protocol model) a positive control shows that machinery
working on the same path.

Wire tampering goes through ``tests/proxy.py``. Property 4 (forward secrecy), the password
guessing attacks and a few handshake probes need the protocol's cryptography on the test side:
``tests/noise_model.py`` is an independent model of the wire protocol (CPace's encodings,
generator and transcript on libsodium's ristretto255, the Noise symmetric state, the NNpsk0
handshake, the frame cipher, a model client and a model server, on top of pyca
``cryptography``'s X25519, AES-256-GCM and Argon2id). It is checked below against published test
vectors (RFC 7748, the GCM spec, RFC 5869, a Noise NNpsk0 vector, the CPace draft's vectors) and
against the library itself (a model client completes a handshake with the real server and
exchanges messages, and the reference server built on the model serves a real client), so the
model is known to be exactly the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import hashlib
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import argonlink
import pytest
import rbcl
from argonlink import (
    AuthenticationError,
    ConnectionClosedError,
    ConnectionClosedOK,
    ProtocolError,
    Timeout,
    sync,
)
from noise_model import (
    CONFIRM_FRAME,
    LIMITS_LEN,
    MSG1_LEN,
    MSG1_NOISE_LEN,
    MSG2_LEN,
    PARAMS_FIXED_LEN,
    SHARE_LEN,
    FrameCipher,
    InvalidTag,
    ModelClient,
    ModelServer,
    NoiseInitiator,
    NoiseResponder,
    SymmetricState,
    aead_decrypt,
    aead_encrypt,
    calculate_generator,
    data_frame,
    derive_prs,
    generator_string,
    handshake_generator,
    isk_ir,
    limits,
    lv_cat,
    make_hello,
    noise_hkdf,
    noise_nonce,
    prepend_len,
    prs_from_phc,
    scalar_mult_vfy,
    x25519,
    x25519_public,
)
from proxy import (
    C2S_CONFIRM,
    C2S_FIRST_DATA,
    C2S_HELLO,
    C2S_MSG1,
    HELLO_FIXED_LEN,
    PARAMS_LEN,
    S2C_FIRST_DATA,
    S2C_MSG2,
    S2C_PARAMS,
    CloseAfter,
    CutMidRecord,
    Direction,
    Drop,
    Duplicate,
    FlipBit,
    Inject,
    Out,
    Proxy,
    RecordParser,
    Replace,
    Swap,
    Tamper,
    TcpService,
    hello_length,
    read_hello,
    read_record,
    recv_exact,
    recv_until_closed,
    split_records,
)
from refpeer import Params, RefServer

pytestmark = pytest.mark.timeout(30)

PASSWORD = "correct horse battery staple"
WRONG_PASSWORD = "incorrect horse battery staple"
KDF = argonlink.KdfParams.OWASP
#: Argon2 costs far below the client's default floor, for tests that derive a key per guess.
CHEAP_KDF = argonlink.KdfParams(8 * 1024, 1, 1)
MESSAGES = [b"message %d " % i + b"." * (8 + i) for i in range(6)]


# ============================================================================================
# The test machinery: the proxy's framing and the protocol model (tests/noise_model.py)


@pytest.mark.parametrize("identity", [b"", b"node-7", b"\x00" * 3, b"x" * 255])
def test_proxy_record_parser(identity: bytes) -> None:
    """The proxy's framing, fed byte by byte: a hello as long as its identity length byte says
    (its identity may hold a zero, a length-prefix-like byte), then u16-prefixed records."""
    hello = make_hello(identity)
    assert len(hello) == HELLO_FIXED_LEN + len(identity)
    stream = hello + b"\x00\x03abc" + b"\x00\x00" + b"\x00\x01z" + b"\x00\x05pa"
    parser = RecordParser(hello_length)
    records = [r for i in range(len(stream)) for r in parser.feed(stream[i : i + 1])]
    assert records == [hello, b"\x00\x03abc", b"\x00\x00", b"\x00\x01z"]
    assert parser.pending == b"\x00\x05pa"
    assert split_records(stream, Direction.C2S.preamble) == (records, b"\x00\x05pa")
    params = os.urandom(PARAMS_LEN)
    assert split_records(params + b"\x00\x01z", Direction.S2C.preamble) == (
        [params, b"\x00\x01z"],
        b"",
    )


def test_crypto_model_known_answers() -> None:
    """The model's use of its primitives against published vectors, so its verdicts below can be
    trusted: X25519's argument order and encodings, the Noise nonce and the ciphertext + tag
    layout of AES-GCM, and Noise's HKDF."""
    # RFC 7748 §5.2, first X25519 vector: x25519(scalar, u), both little-endian.
    scalar = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    expected = "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
    assert x25519(scalar, u).hex() == expected
    # RFC 7748 §6.1: Alice's and Bob's public keys and their shared secret.
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    alice_pub, bob_pub = x25519_public(alice), x25519_public(bob)
    assert alice_pub.hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert bob_pub.hex() == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert x25519(alice, bob_pub).hex() == x25519(bob, alice_pub).hex() == shared
    # GCM spec (McGrew & Viega) test cases 13 and 14: AES-256, zero key, zero IV -- which is the
    # Noise nonce for n = 0 -- and no plaintext, or one zero block.
    assert noise_nonce(0) == bytes(12)
    assert aead_encrypt(bytes(32), 0, b"", b"").hex() == "530f8afbc74536b9a963b4f1c4cb738b"
    sealed = aead_encrypt(bytes(32), 0, b"", bytes(16))
    assert sealed.hex() == "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"
    assert aead_decrypt(bytes(32), 0, b"", sealed) == bytes(16)
    with pytest.raises(InvalidTag):
        aead_decrypt(bytes(32), 0, b"", sealed[:-1] + b"\0")
    with pytest.raises(InvalidTag):  # the counter is in the nonce
        aead_decrypt(bytes(32), 1, b"", sealed)
    # RFC 5869 A.3 (HKDF-SHA256, empty salt and info): Noise's HKDF with an empty chaining key
    # is HKDF with salt = ck, info = "", so its outputs, concatenated, start with that OKM.
    okm = "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    assert b"".join(noise_hkdf(b"", b"\x0b" * 22, 2))[:42].hex() == okm


# draft-irtf-cfrg-cpace-21, the test vector for CPace with ristretto255 and SHA-512 (the group
# G_Coffee25519 of its JSON vectors); ya and yb are little-endian scalars.
CPACE_VECTOR = {
    "PRS": "50617373776f7264",
    "CI": "0b415f696e69746961746f720b425f726573706f6e646572",
    "sid": "7e4b4791d6a8ef019b936c79fb7f2c57",
    "g": "222b6b195fe84b1652badb6f6a3ae3d24341e7306967f0b8115b40d5698c7e56",
    "ya": "da3d23700a9e5699258aef94dc060dfda5ebb61f02a5ea77fad53f4ff0976d08",
    "ADa": "414461",
    "Ya": "d6bac480f2c386c394efc7c47adb9925dcd2630b64f240c50f8d0eec482b9157",
    "yb": "d2316b454718c35362d83d69df6320f38578ed5984651435e2949762d900b80d",
    "ADb": "414462",
    "Yb": "3ea7e0b19560d7c0b0f5734f63b955286dfa8232b5ebe63324e2d9e7433f7258",
    "K": "80b69a8a76457ab6a4d7f887a4bf6b55a2f80ac19c333f917a05fc9887c8b40f",
    "ISK_IR": "b69effbf61b51d56401c0f65601abe428de8206feaaf0e32198896dcae7b35cd"
    "2b38950a39dfd5d4a79164614c2984f7daa460b588c1e80c3fa2068af7900447",
}


def test_cpace_model_matches_the_draft_vectors() -> None:
    """The model's CPace -- the draft's string functions, its generator string (zero padding
    included), element derivation, shares, K and the initiator-responder ISK -- reproduces
    draft-irtf-cfrg-cpace-21's vectors byte for byte; and the abort cases refuse."""
    # The draft's prepend_len and lv_cat vectors (LEB128 lengths: one byte below 128).
    assert prepend_len(b"") == b"\x00"
    assert prepend_len(b"1234").hex() == "0431323334"
    assert prepend_len(bytes(range(127))) == b"\x7f" + bytes(range(127))
    assert prepend_len(bytes(range(128))) == b"\x80\x01" + bytes(range(128))
    assert lv_cat(b"1234", b"5", b"", b"678").hex() == "043132333401350003363738"

    v = {k: bytes.fromhex(h) for k, h in CPACE_VECTOR.items()}
    # "ZPAD length: 100": DSI, PRS and the padding fill SHA-512's first 128-byte block.
    dsi = b"CPaceRistretto255"
    expected = lv_cat(dsi, v["PRS"], bytes(100), v["CI"], v["sid"])
    assert generator_string(dsi, v["PRS"], v["CI"], v["sid"], 128) == expected
    assert len(lv_cat(dsi, v["PRS"], bytes(100))) == 128
    assert calculate_generator(v["PRS"], v["CI"], v["sid"]) == v["g"]
    assert scalar_mult_vfy(v["ya"], v["g"]) == v["Ya"]
    assert scalar_mult_vfy(v["yb"], v["g"]) == v["Yb"]
    assert scalar_mult_vfy(v["ya"], v["Yb"]) == scalar_mult_vfy(v["yb"], v["Ya"]) == v["K"]
    isk = isk_ir(v["sid"], v["K"], v["Ya"], v["Yb"], v["ADa"], v["ADb"])
    assert isk == v["ISK_IR"]
    # The associated data is in the transcript: argonlink's empty ADa, ADb give another ISK.
    assert isk_ir(v["sid"], v["K"], v["Ya"], v["Yb"]) != isk

    # Abort: the identity, an encoding that does not decode, a non-canonical one (p itself).
    p_encoded = bytes([0xED]) + b"\xff" * 30 + b"\x7f"
    for bad in (bytes(32), b"\xff" * 32, p_encoded, v["Ya"][:31]):
        assert scalar_mult_vfy(v["ya"], bad) is None, bad.hex()
    assert rbcl.crypto_core_ristretto255_is_valid_point(v["Ya"])


def test_model_client_and_model_server_agree() -> None:
    """The model's two sides of argonlink's handshake (hello, parameters with Ya, message 1 with
    Yb, message 2) agree on ISK and on the transport keys; one with another PRS, or with a hello
    or parameters changed on the way (here: the identity), fails at message 1."""
    prs = os.urandom(32)
    fixed = Params(salt=os.urandom(16)).encode()
    client, server = ModelClient(prs, identity=b"node-7"), ModelServer(prs, fixed)
    params = server.answer(client.hello)
    assert len(params) == PARAMS_LEN and params[:PARAMS_FIXED_LEN] == fixed
    assert params[72:] == scalar_mult_vfy(
        server.scalar, handshake_generator(prs, client.hello, params)
    )
    payload = server.read_message1(client.message1(params))
    assert payload == client.node_id + limits(client.max_message)
    assert client.isk == server.isk and client.psk == server.isk[:32]
    send, recv, payload2 = client.finish(server.message2(bytes(LIMITS_LEN + 1)))
    assert payload2 == bytes(LIMITS_LEN + 1)
    k_c2s, k_s2c = server.keys()
    assert FrameCipher(k_c2s).open(send.seal(CONFIRM_FRAME)) == CONFIRM_FRAME
    assert recv.open(FrameCipher(k_s2c).seal(b"back")) == b"back"

    wrong = ModelServer(os.urandom(32), fixed)
    other = ModelClient(prs)
    with pytest.raises(InvalidTag):
        wrong.read_message1(other.message1(wrong.answer(other.hello)))
    swapped = ModelServer(prs, fixed)
    other = ModelClient(prs, identity=b"node-7")
    params = swapped.answer(make_hello(b"node-8", nonce=other.hello[12:28]))
    with pytest.raises(InvalidTag):
        swapped.read_message1(other.message1(params))


# Noise_NNpsk0_25519_AESGCM_SHA256 from the cacophony project's Noise test vectors (as shipped
# in snow's tests/vectors/cacophony.txt): prologue "John Galt", one PSK, fixed ephemeral keys;
# messages 0 and 1 are the handshake, then transport messages alternate, initiator first.
NOISE_VECTOR = {
    "prologue": "4a6f686e2047616c74",
    "psk": "54686973206973206d7920417573747269616e20706572737065637469766521",
    "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
    "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
    "handshake_hash": "9f3b1f9afd7767767b5b9d1069844a6154fdbdcc36dfb3e31c0fffc5c973d530",
}
NOISE_VECTOR_MESSAGES = [  # (payload, ciphertext)
    (
        "4c756477696720766f6e204d69736573",
        "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
        "7c37a89fc17813788d30df2d59501d6066f5f8aecc3406bbd9829f2d24a531b1",
    ),
    (
        "4d757272617920526f746862617264",
        "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
        "2f29d79368ef9de4e1ae7a362fb05bf0ad668e026bf5714554497b3a720461",
    ),
    ("462e20412e20486179656b", "7c01e898a6201f36aecee532e29cd0b7f8ffa29d3366ad0dce39a6"),
    ("4361726c204d656e676572", "a9ff535aace3db6a1da1a7fb00fe2de2622bb373abad9fb42c00e0"),
    (
        "4a65616e2d426170746973746520536179",
        "6cfc49a3e65472edc2d0152abe5ce950170a8a47c959f30bd48b5f0aacf29adbfd",
    ),
    (
        "457567656e2042f6686d20766f6e2042617765726b",
        "9bc86e6d974ed21ba04604a94aa68de21677eb409ead070c0cd569b069ee19ba142aa4c1a9",
    ),
]


def test_noise_model_matches_published_vector() -> None:
    """The model's Noise layer -- symmetric state, psk modifier, the NNpsk0 pattern, Split and
    the transport nonces -- reproduces a published Noise_NNpsk0_25519_AESGCM_SHA256 vector byte
    for byte, as the initiator (NoiseInitiator, which ModelClient uses), as the responder
    (NoiseResponder, which ModelServer uses) and as the attacker (_attack, the procedure of
    property 4, which reads the transcript with the Noise psk)."""
    v = {k: bytes.fromhex(h) for k, h in NOISE_VECTOR.items()}
    messages = [(bytes.fromhex(p), bytes.fromhex(c)) for p, c in NOISE_VECTOR_MESSAGES]
    (payload1, msg1), (payload2, msg2) = messages[:2]
    assert msg2[:32] == x25519_public(v["resp_ephemeral"])

    initiator = NoiseInitiator(v["prologue"], v["psk"], v["init_ephemeral"])
    assert initiator.write_message1(payload1) == msg1
    assert initiator.read_message2(msg2) == payload2
    assert initiator.handshake_hash == v["handshake_hash"]
    send, recv = initiator.split()
    for i, (payload, ciphertext) in enumerate(messages[2:]):
        record = struct.pack(">H", len(ciphertext)) + ciphertext  # argonlink's length prefix
        if i % 2 == 0:
            assert send.seal(payload) == record
        else:
            assert recv.open(record) == payload

    # The same vector through the model's responder.
    responder = NoiseResponder(v["prologue"], v["psk"], v["resp_ephemeral"])
    assert responder.read_message1(msg1) == payload1
    assert responder.write_message2(payload2) == msg2
    r_send, r_recv = responder.split()
    (p3, c3), (p4, c4) = messages[2:4]
    assert r_recv.open(struct.pack(">H", len(c3)) + c3) == p3
    assert r_send.seal(p4)[2:] == c4

    # The attacker's procedure on the same transcript: with the ee DH value it reads everything;
    # without it (the guess "no ee at all"), message 1 only.
    ee = x25519(v["init_ephemeral"], x25519_public(v["resp_ephemeral"]))
    assert ee == x25519(v["resp_ephemeral"], x25519_public(v["init_ephemeral"]))
    read1, msg2_ok, k1, k2 = _attack(v["prologue"], msg1, msg2, v["psk"], ee)
    assert (read1, msg2_ok) == (payload1, True)
    assert FrameCipher(k1).seal(p3)[2:] == c3 and FrameCipher(k2).seal(p4)[2:] == c4
    read1, msg2_ok, k1, _ = _attack(v["prologue"], msg1, msg2, v["psk"], None)
    assert (read1, msg2_ok) == (payload1, False)
    assert FrameCipher(k1).seal(p3)[2:] != c3


# ============================================================================================
# Fixtures and helpers


@pytest.fixture(scope="session")
def phc() -> str:
    """One server key for the whole session (OWASP costs): servers built from it derive nothing,
    and its hash is the PRS, which property 4 hands to the attacker."""
    return argonlink.hash_password(PASSWORD, KDF)


@pytest.fixture(scope="session")
def prs(phc: str) -> bytes:
    return prs_from_phc(phc)


# Every server here runs without throttling of failed handshakes: these tests play the attacker
# many times over against one server, which the throttle (tests/test_throttle.py) would shut out.
@pytest.fixture
async def server(phc: str) -> AsyncIterator[argonlink.Server]:
    async with argonlink.Server(
        throttle=False, password_hash=phc, handshake_timeout=5, close_timeout=1
    ) as srv:
        yield srv


@pytest.fixture
def sync_server(phc: str) -> Iterator[sync.Server]:
    with sync.Server(
        throttle=False, password_hash=phc, handshake_timeout=5, close_timeout=1
    ) as srv:
        yield srv


Password = str | argonlink.Credentials


def client(address: tuple[str, int], password: Password = PASSWORD, **kw: Any) -> argonlink.Client:
    options: dict[str, Any] = {"open_timeout": 5, "close_timeout": 1, **kw}
    return argonlink.Client(*address, password=password, **options)


def sync_client(address: tuple[str, int], password: Password = PASSWORD, **kw: Any) -> sync.Client:
    options: dict[str, Any] = {"open_timeout": 5, "close_timeout": 1, **kw}
    return sync.Client(*address, password=password, **options)


async def assert_serving(server: argonlink.Server) -> None:
    """A correct client still gets through and a message still round-trips."""
    async with client(server.address) as c:
        accepted = await server.accept(timeout=5)
        await c.send(b"still serving")
        assert await accepted.recv(timeout=5) == b"still serving"
        await accepted.send(b"yes")
        assert await c.recv(timeout=5) == b"yes"
        await accepted.close()


def assert_serving_sync(server: sync.Server) -> None:
    with sync_client(server.address) as c:
        accepted = server.accept(timeout=5)
        c.send(b"still serving")
        assert accepted.recv(timeout=5) == b"still serving"
        accepted.close()


async def assert_nothing_accepted(server: argonlink.Server, wait: float = 0.3) -> None:
    with pytest.raises(Timeout):
        await server.accept(timeout=wait)


def assert_nothing_accepted_sync(server: sync.Server, wait: float = 0.3) -> None:
    with pytest.raises(Timeout):
        server.accept(timeout=wait)


async def drain(
    conn: argonlink.Connection, timeout: float = 5.0
) -> tuple[list[bytes], argonlink.ConnectionClosed | None]:
    """``async for`` over ``conn``: (messages, the ConnectionClosed that ended it, or None if the
    iteration stopped by itself). A hang fails the test (TimeoutError)."""
    got: list[bytes] = []
    try:
        async with asyncio.timeout(timeout):
            async for message in conn:
                got.append(message)
    except argonlink.ConnectionClosed as exc:
        return got, exc
    return got, None


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def tampering_proxy(address: tuple[str, int], direction: Direction, tamper: Tamper) -> Proxy:
    if direction is Direction.C2S:
        return Proxy(address, c2s=tamper)
    return Proxy(address, s2c=tamper)


def raw_connection(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# ============================================================================================
# Property 1: mutual authentication


async def test_wrong_client_password_async(server: argonlink.Server) -> None:
    """A client with the wrong password gets AuthenticationError well within open_timeout, sends
    nothing past message 1 (no CONFIRM, no data frame), nothing is accepted, and the server keeps
    serving a correct client afterwards."""
    with Proxy(server.address) as proxy:
        start = time.monotonic()
        with pytest.raises(AuthenticationError):
            await client(proxy.address, WRONG_PASSWORD).connect()
        assert time.monotonic() - start < 2.0
        (pc,) = await proxy.wait_for_connections_async(1)
        assert await pc.wait_closed_async(5)
    assert len(pc.records(Direction.C2S)) == 2  # hello, message 1: nothing else left the client
    assert len(pc.received(Direction.S2C)) == PARAMS_LEN  # the params only: no message 2
    assert len(pc.records(Direction.C2S)[C2S_MSG1]) == 2 + MSG1_LEN
    await assert_nothing_accepted(server)
    stats = server.stats()
    assert (stats["auth_failures"], stats["handshakes_ok"]) == (1, 0)
    await assert_serving(server)


async def test_wrong_server_password_async() -> None:
    """A server holding a different password cannot answer: the client's connect raises
    AuthenticationError (fast), and the server accepts nothing."""
    async with argonlink.Server(
        throttle=False, password=WRONG_PASSWORD, kdf=KDF, handshake_timeout=5
    ) as srv:
        start = time.monotonic()
        with pytest.raises(AuthenticationError):
            await client(srv.address).connect()
        assert time.monotonic() - start < 2.0
        await assert_nothing_accepted(srv)
        assert srv.stats()["handshakes_ok"] == 0


def test_wrong_client_password_sync(sync_server: sync.Server) -> None:
    """The blocking API: the same as test_wrong_client_password_async."""
    start = time.monotonic()
    with pytest.raises(AuthenticationError):
        sync_client(sync_server.address, WRONG_PASSWORD).connect()
    assert time.monotonic() - start < 2.0
    assert_nothing_accepted_sync(sync_server)
    assert sync_server.stats()["auth_failures"] == 1
    assert_serving_sync(sync_server)


def test_wrong_server_password_sync() -> None:
    """The blocking API: the same as test_wrong_server_password_async."""
    with sync.Server(throttle=False, password=WRONG_PASSWORD, kdf=KDF, handshake_timeout=5) as srv:
        start = time.monotonic()
        with pytest.raises(AuthenticationError):
            sync_client(srv.address).connect()
        assert time.monotonic() - start < 2.0
        assert_nothing_accepted_sync(srv)
        assert srv.stats()["handshakes_ok"] == 0


async def test_client_never_hangs_on_a_silent_server() -> None:
    """A peer that accepts TCP and never answers: connect ends with Timeout at open_timeout."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up

    with TcpService(silent) as fake:
        start = time.monotonic()
        with pytest.raises(Timeout):
            await client(fake.address, open_timeout=0.5).connect()
        assert 0.4 < time.monotonic() - start < 2.0


# ============================================================================================
# Property 2: replay


def test_replayed_client_stream_delivers_nothing(sync_server: sync.Server) -> None:
    """A client's complete byte stream (hello, message 1, CONFIRM, data, CLOSE), recorded, then
    replayed turn by turn on a new connection: the server answers the hello with parameters
    holding a fresh nonce and a fresh CPace share, so the recorded message 1, made for the old
    share, fails like a wrong password and the server hangs up without a word. accept() yields
    nothing."""
    with Proxy(sync_server.address) as proxy:
        with sync_client(proxy.address) as c:
            original = sync_server.accept(timeout=5)
            for m in MESSAGES:
                c.send(m)
            assert [original.recv(timeout=5) for _ in MESSAGES] == MESSAGES
        (pc,) = proxy.wait_for_connections(1)
        assert pc.wait_closed(5)
    records = pc.records(Direction.C2S)
    assert len(records) == 3 + len(MESSAGES) + 1  # hello, msg1, CONFIRM, data..., CLOSE
    recorded_s2c = pc.records(Direction.S2C)

    with raw_connection(sync_server.address) as sock:
        sock.sendall(records[C2S_HELLO])
        params = recv_exact(sock, PARAMS_LEN)
        old = recorded_s2c[S2C_PARAMS]
        assert params[:PARAMS_FIXED_LEN] == old[:PARAMS_FIXED_LEN]  # same key, same server
        assert params[56:72] != old[56:72] and params[72:] != old[72:]  # fresh nonce and share
        sock.sendall(b"".join(records[C2S_MSG1:]))
        tail, how, _ = recv_until_closed(sock, 5)
    assert tail == b""  # no message 2
    assert how in ("eof", "reset")

    assert_nothing_accepted_sync(sync_server)
    stats = sync_server.stats()
    assert (stats["handshakes_ok"], stats["auth_failures"]) == (1, 1)


def test_replayed_server_stream_fails_the_client(sync_server: sync.Server) -> None:
    """The server's recorded bytes (params, message 2, frames) replayed by a fake server to a new
    client with the right password: the recorded share is on another connection's generator (the
    new client's nonce is in it) and message 2 was made for another client ephemeral key, so
    the client raises AuthenticationError (its Noise read of message 2 fails)."""
    with Proxy(sync_server.address) as proxy:
        with sync_client(proxy.address) as c:
            accepted = sync_server.accept(timeout=5)
            for m in MESSAGES:
                accepted.send(m)
            assert [c.recv(timeout=5) for _ in MESSAGES] == MESSAGES
        (pc,) = proxy.wait_for_connections(1)
        assert pc.wait_closed(5)
    recorded = pc.records(Direction.S2C)
    steps: list[str] = []

    async def replay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_hello(reader)
        writer.write(recorded[S2C_PARAMS])
        await writer.drain()
        steps.append("params")
        msg1 = await read_record(reader)
        steps.append(f"msg1 {len(msg1)}")
        writer.write(b"".join(recorded[S2C_MSG2:]))
        await writer.drain()
        steps.append("replayed")
        await reader.read()

    with TcpService(replay) as fake:
        with pytest.raises(AuthenticationError):
            sync_client(fake.address).connect()
        assert wait_until(lambda: len(steps) == 3, 5)
        assert fake.errors == []
    assert steps == ["params", f"msg1 {2 + MSG1_LEN}", "replayed"]


# ============================================================================================
# Property 3: fresh keys


def test_same_password_same_plaintext_different_ciphertext(sync_server: sync.Server) -> None:
    """Two connections, same password, same messages in both directions: every encrypted record
    differs (msg1, msg2, CONFIRM, data), and so do the nonces and the CPace shares, though the
    rest of the hello and params is identical. CONFIRM is the sharpest check: same plaintext,
    same nonce (0), so equal ciphertext would mean equal keys. Within one connection, the same
    message twice also encrypts differently."""
    same = b"the same plaintext, byte for byte"
    with Proxy(sync_server.address) as proxy:
        sessions = []
        for _ in range(2):
            with sync_client(proxy.address) as c:
                accepted = sync_server.accept(timeout=5)
                c.send(same)
                c.send(same)
                assert [accepted.recv(timeout=5) for _ in range(2)] == [same, same]
                accepted.send(same)
                assert c.recv(timeout=5) == same
                sessions.append((c.connection.handshake_hash, accepted.handshake_hash))
        pcs = proxy.wait_for_connections(2)
        assert all(pc.wait_closed(5) for pc in pcs)
    c2s_1, c2s_2 = (pc.records(Direction.C2S) for pc in pcs)
    s2c_1, s2c_2 = (pc.records(Direction.S2C) for pc in pcs)
    (hello_1, hello_2), (params_1, params_2) = (
        (c2s_1[C2S_HELLO], c2s_2[C2S_HELLO]),
        (s2c_1[S2C_PARAMS], s2c_2[S2C_PARAMS]),
    )
    assert hello_1[:12] + hello_1[28:] == hello_2[:12] + hello_2[28:]
    assert hello_1[12:28] != hello_2[12:28]  # client nonces
    assert params_1[:PARAMS_FIXED_LEN] == params_2[:PARAMS_FIXED_LEN]
    assert params_1[56:72] != params_2[56:72] and params_1[72:] != params_2[72:]
    yb_1, yb_2 = c2s_1[C2S_MSG1][2:34], c2s_2[C2S_MSG1][2:34]
    assert yb_1 != yb_2
    for i in (C2S_MSG1, C2S_CONFIRM, C2S_FIRST_DATA, C2S_FIRST_DATA + 1):
        assert len(c2s_1[i]) == len(c2s_2[i])
        assert c2s_1[i] != c2s_2[i], f"client record {i} repeated across connections"
    for i in (S2C_MSG2, S2C_FIRST_DATA):
        assert len(s2c_1[i]) == len(s2c_2[i])
        assert s2c_1[i] != s2c_2[i], f"server record {i} repeated across connections"
    assert c2s_1[C2S_FIRST_DATA] != c2s_1[C2S_FIRST_DATA + 1]
    (c1, s1), (c2, s2) = sessions
    assert c1 == s1 and c2 == s2 and c1 != c2


# ============================================================================================
# Property 4: forward secrecy


def test_model_client_interoperates_with_the_server(sync_server: sync.Server, prs: bytes) -> None:
    """Positive control for the protocol model: our own client (tests/noise_model.py, PRS from
    the PHC string) completes the handshake with the real server, which accepts it and exchanges
    messages both ways. So the model's CPace, key schedule, nonces and framing are the
    library's."""
    model = ModelClient(prs)
    with raw_connection(sync_server.address) as sock:
        send, recv = model.handshake(sock)
        sock.sendall(send.seal(data_frame(b"from the model")))
        accepted = sync_server.accept(timeout=5)
        assert bytes.fromhex(accepted.peer_node_id) == model.node_id
        assert accepted.recv(timeout=5) == b"from the model"
        accepted.send(b"to the model")
        record = recv_exact(sock, 2 + 2 + len(b"to the model") + 16)
        assert recv.open(record) == data_frame(b"to the model")
        accepted.abort()


def _noise_parts(c2s: list[bytes], s2c: list[bytes]) -> tuple[bytes, bytes, bytes]:
    """A recorded argonlink handshake's Noise layer: (prologue, message 1, message 2), the
    messages without their length prefixes (message 1 also without the client's share)."""
    msg1_record = c2s[C2S_MSG1]
    share = msg1_record[2 : 2 + SHARE_LEN]
    prologue = c2s[C2S_HELLO] + s2c[S2C_PARAMS] + share
    return prologue, msg1_record[2 + SHARE_LEN :], s2c[S2C_MSG2][2:]


def _attack(
    prologue: bytes, msg1: bytes, msg2: bytes, psk: bytes, ee: bytes | None
) -> tuple[bytes, bool, bytes, bytes]:
    """What an attacker computes from a recorded Noise handshake, its psk and a guess ``ee`` for
    the one value it lacks (the ephemeral-ephemeral DH; None: leave it out of the key schedule).
    Returns (message 1 payload, whether message 2's tag verified, key c->s, key s->c)."""
    ss = SymmetricState(prologue)
    ss.mix_key_and_hash(psk)
    ss.mix_hash(msg1[:32])
    ss.mix_key(msg1[:32])
    payload1 = ss.decrypt_and_hash(msg1[32:])  # the psk is enough for this
    ss.mix_hash(msg2[:32])
    ss.mix_key(msg2[:32])
    if ee is not None:
        ss.mix_key(ee)
    try:
        copy.deepcopy(ss).decrypt_and_hash(msg2[32:])
        msg2_ok = True
    except InvalidTag:
        msg2_ok = False
    k1, k2 = ss.split()
    return payload1, msg2_ok, k1, k2


def _opens(key: bytes, record: bytes, nonce: int) -> bool:
    cipher = FrameCipher(key)
    cipher.n = nonce
    try:
        cipher.open(record)
    except InvalidTag:
        return False
    return True


def _guesses(psk: bytes, e_i: bytes, e_r: bytes) -> dict[str, bytes | None]:
    """Every plausible stand-in for the ee DH that can be computed from a psk + public bytes."""
    return {
        "no ee at all": None,
        "zeros": bytes(32),
        "psk": psk,
        "client ephemeral": e_i,
        "server ephemeral": e_r,
        "hash of both ephemerals": hashlib.sha256(e_i + e_r).digest(),
        "X25519(psk, client e)": x25519(psk, e_i),
        "X25519(psk, server e)": x25519(psk, e_r),
        "X25519(client e as scalar, server e)": x25519(e_i, e_r),
        "X25519(server e as scalar, client e)": x25519(e_r, e_i),
    }


def _decrypts_and_hashes(ss: SymmetricState, ciphertext: bytes) -> bool:
    """Noise DecryptAndHash that goes on when the tag fails (an attacker keeps the transcript
    hash either way): whether the ciphertext opened."""
    assert ss.k is not None
    try:
        aead_decrypt(ss.k, ss.n, ss.h, ciphertext)
        opened = True
    except InvalidTag:
        opened = False
    ss.n += 1
    ss.mix_hash(ciphertext)
    return opened


def _psk_candidates(
    prs: bytes, c2s: list[bytes], s2c: list[bytes], scalars: Sequence[bytes] = ()
) -> dict[str, bytes]:
    """Every Noise psk an attacker can compute from a PRS and the public bytes of a handshake
    (and from CPace scalars it holds, if it took part): the PRS itself (version 1's design),
    the generator, and ISK with every K it can form. Written for either layout: a share in
    the parameters (bytes 72..104) and before Noise message 1, or none."""
    hello, params, msg1 = c2s[C2S_HELLO], s2c[S2C_PARAMS], c2s[C2S_MSG1]
    ya, yb = params[72:104], msg1[2:-MSG1_NOISE_LEN]
    sid = hello[12:28] + params[56:72]
    g = handshake_generator(prs, hello, params)
    ks = {"the generator": g, "Ya": ya, "Yb": yb, "the identity": bytes(32)}
    for i, y in enumerate(scalars):
        for name, point in (("Yb", yb), ("Ya", ya), ("g", g)):
            k = scalar_mult_vfy(y, point)
            if k is not None:
                ks[f"scalar {i} * {name}"] = k
    psks = {"PRS": prs, "generator": g, "SHA-512(PRS)": hashlib.sha512(prs).digest()[:32]}
    for name, k in ks.items():
        psks[f"ISK with K = {name}"] = isk_ir(sid, k, ya, yb)[:32]
    return psks


def _what_opens(
    prs: bytes, c2s: list[bytes], s2c: list[bytes], scalars: Sequence[bytes] = ()
) -> set[str]:
    """Which of message 1, message 2 and the CONFIRM frame of a recorded handshake open under
    some key schedule an attacker holding ``prs`` (and ``scalars``) can compute: every psk of
    _psk_candidates, the prologue with and without what comes before Noise message 1, and
    every stand-in for the ee DH of _guesses."""
    hello, params, msg1_record = c2s[C2S_HELLO], s2c[S2C_PARAMS], c2s[C2S_MSG1]
    msg1 = msg1_record[-MSG1_NOISE_LEN:]
    e_i = msg1[:32]
    msg2 = s2c[S2C_MSG2][2:] if len(s2c) > S2C_MSG2 else b""
    confirm = c2s[C2S_CONFIRM] if len(c2s) > C2S_CONFIRM else b""
    prologues = {hello + params, hello + params + msg1_record[2:-MSG1_NOISE_LEN]}
    opened: set[str] = set()
    for psk in _psk_candidates(prs, c2s, s2c, scalars).values():
        for prologue in prologues:
            ss = SymmetricState(prologue)
            ss.mix_key_and_hash(psk)
            ss.mix_hash(e_i)
            ss.mix_key(e_i)
            if _decrypts_and_hashes(ss, msg1[32:]):
                opened.add("message 1")
            if not msg2:
                continue
            e_r = msg2[:32]
            ss.mix_hash(e_r)
            ss.mix_key(e_r)
            for ee in _guesses(psk, e_i, e_r).values():
                attempt = copy.deepcopy(ss)
                if ee is not None:
                    attempt.mix_key(ee)
                if _decrypts_and_hashes(copy.deepcopy(attempt), msg2[32:]):
                    opened.add("message 2")
                if confirm and _opens(attempt.split()[0], confirm, 0):
                    opened.add("CONFIRM")
    return opened


def test_forward_secrecy_needs_an_ephemeral_private_key(
    sync_server: sync.Server, prs: bytes
) -> None:
    """The Noise psk + recorded transcript cannot decrypt a session; the ephemeral private key
    can.

    What this proves: on one and the same recorded transcript (the model client talking to the
    real server through the proxy), the attacker's procedure -- the exact Noise key schedule,
    fed with the psk (ISK[0:32], which the model client computed) and every public byte --
    decrypts message 1 (revealing the client's node id and its ephemeral *public* key, which is
    sent in clear anyway) but then needs the ee DH value. Given the client's ephemeral private
    key (which only the client had, and which a forward-secret implementation erases) it
    decrypts message 2 and every frame in both directions; given any value computable from the
    psk and the transcript (listed in _guesses) it decrypts nothing. If the session keys
    stopped depending on the ee DH (a pattern without ee, or keys derived from the psk and
    public values only), the "no ee at all" guess or another one would open the frames and the
    test would fail. One step further back: the PRS (the server's PHC hash) with the client's
    CPace scalar opens message 1 and no more; the PRS alone opens nothing.

    What it does not prove: that X25519 or ristretto255 CDH is hard (no test can), that the
    library erases its ephemeral keys and scalars from memory (forward secrecy also needs that),
    or that no other derivation from public values exists. Note also that the PRS does let an
    *active* attacker impersonate either side (it is what CPace authenticates with); forward
    secrecy is about recordings."""
    secret_c, secret_s = b"attack at dawn, client to server", b"attack at dawn, server to client"
    model = ModelClient(prs)
    with Proxy(sync_server.address) as proxy:
        with raw_connection(proxy.address) as sock:
            send, recv = model.handshake(sock)
            sock.sendall(send.seal(data_frame(secret_c)))
            accepted = sync_server.accept(timeout=5)
            assert accepted.recv(timeout=5) == secret_c
            accepted.send(secret_s)
            record = recv_exact(sock, 2 + 2 + len(secret_s) + 16)
            assert recv.open(record) == data_frame(secret_s)
            accepted.abort()
        (pc,) = proxy.wait_for_connections(1)
        assert pc.wait_closed(5)
    c2s, s2c = pc.records(Direction.C2S), pc.records(Direction.S2C)
    wire = pc.received(Direction.C2S) + pc.received(Direction.S2C)
    assert secret_c not in wire and secret_s not in wire
    prologue, msg1, msg2 = _noise_parts(c2s, s2c)
    e_i, e_r = msg1[:32], msg2[:32]
    assert e_i == model.e_pub and c2s[C2S_MSG1][2:34] == model.share
    psk = model.psk

    # Positive control: with the ephemeral private key, the same procedure reads everything.
    payload1, msg2_ok, k1, k2 = _attack(prologue, msg1, msg2, psk, x25519(model.e_priv, e_r))
    assert payload1[:16] == model.node_id and msg2_ok
    assert FrameCipher(k1).open(c2s[C2S_CONFIRM]) == CONFIRM_FRAME
    c_open, s_open = FrameCipher(k1), FrameCipher(k2)
    c_open.n = 1
    assert c_open.open(c2s[C2S_FIRST_DATA]) == data_frame(secret_c)
    assert s_open.open(s2c[S2C_FIRST_DATA]) == data_frame(secret_s)

    # Without it: message 1 still opens (the psk suffices), nothing after it does.
    for name, guess in _guesses(psk, e_i, e_r).items():
        payload1, msg2_ok, k1, k2 = _attack(prologue, msg1, msg2, psk, guess)
        assert payload1[:16] == model.node_id
        assert not msg2_ok, name
        assert not _opens(k1, c2s[C2S_CONFIRM], 0), name
        assert not _opens(k1, c2s[C2S_FIRST_DATA], 1), name
        assert not _opens(k2, s2c[S2C_FIRST_DATA], 0), name

    # The PRS and the client's CPace scalar give ISK, so message 1; the PRS alone, nothing.
    assert _what_opens(prs, c2s, s2c, [model.scalar]) == {"message 1"}
    assert _what_opens(prs, c2s, s2c) == set()


async def test_prs_and_library_transcript_do_not_decrypt(
    server: argonlink.Server, prs: bytes
) -> None:
    """The same attack on sessions between the real client and the real server, with the PRS
    (what the server's PHC string holds) instead of the Noise psk: no key schedule the attacker
    can compute opens message 1, message 2 or CONFIRM (in version 1, the PHC hash was the Noise
    psk and opened message 1); the plaintext appears nowhere on the wire; a second session with
    the same password and plaintext shares no encrypted bytes."""
    secret = b"the launch codes are 0000, tell no one"
    transcripts = []
    with Proxy(server.address) as proxy:
        for n in range(2):
            async with client(proxy.address) as c:
                accepted = await server.accept(timeout=5)
                await c.send(secret)
                assert await accepted.recv(timeout=5) == secret
                await accepted.send(secret)
                assert await c.recv(timeout=5) == secret
            pc = (await proxy.wait_for_connections_async(n + 1))[n]
            assert await pc.wait_closed_async(5)
            transcripts.append((pc.records(Direction.C2S), pc.records(Direction.S2C)))
            wire = pc.received(Direction.C2S) + pc.received(Direction.S2C)
            assert secret not in wire
    for c2s, s2c in transcripts:
        assert _what_opens(prs, c2s, s2c) == set()
    (a_c2s, a_s2c), (b_c2s, b_s2c) = transcripts
    assert a_c2s[C2S_FIRST_DATA] != b_c2s[C2S_FIRST_DATA]
    assert a_s2c[S2C_FIRST_DATA] != b_s2c[S2C_FIRST_DATA]


# ============================================================================================
# No offline guessing; one online guess per connection (PROTOCOL.md §7)

#: An attacker's dictionary: 19 wrong passwords, some close to the right one, and the right one.
DICTIONARY = [
    "password",
    "123456",
    "letmein",
    "correct horse battery",
    "correct horse battery stapler",
    "Correct horse battery staple",
    "incorrect horse battery staple",
    "horse battery staple correct",
    "correct-horse-battery-staple",
    "correcthorsebatterystaple",
    PASSWORD,
    "trustno1",
    "hunter2",
    "dragon",
    "monkey",
    "qwerty",
    "iloveyou",
    "sunshine",
    "princess",
    "argonlink",
]


def _guess_passwords(
    dictionary: list[str],
    c2s: list[bytes],
    s2c: list[bytes],
    scalars: dict[str, list[bytes]] | None = None,
) -> list[str]:
    """The best offline attack on a recorded handshake: for each candidate, the PRS under the
    salt and costs in the parameters, then every key schedule of _what_opens; a candidate
    "passes" if anything opens. ``scalars[word]``: CPace scalars the attacker holds that it may
    use with that word (a man in the middle holds the one behind the share it sent)."""
    params = s2c[S2C_PARAMS]
    salt = params[4:20]
    m_cost, t_cost, p_cost = struct.unpack_from(">III", params, 20)
    passed = []
    for word in dictionary:
        prs = derive_prs(word.encode(), salt, m_cost, t_cost, p_cost)
        if _what_opens(prs, c2s, s2c, (scalars or {}).get(word, [])):
            passed.append(word)
    return passed


def _psk_only_handshake(hello: bytes, params: bytes, prs: bytes) -> tuple[list[bytes], list[bytes]]:
    """Version 1's design, made by the model's initiator and responder: Noise NNpsk0 with the
    PRS itself as psk and the hello and parameters as prologue (no CPace), then CONFIRM."""
    initiator = NoiseInitiator(hello + params, prs, os.urandom(32))
    responder = NoiseResponder(hello + params, prs)
    msg1 = initiator.write_message1(os.urandom(16) + limits(1 << 20))
    responder.read_message1(msg1)
    msg2 = responder.write_message2(limits(1 << 20) + b"\x00")
    initiator.read_message2(msg2)
    send, _ = initiator.split()
    c2s = [hello, struct.pack(">H", len(msg1)) + msg1, send.seal(CONFIRM_FRAME)]
    return c2s, [params, struct.pack(">H", len(msg2)) + msg2]


def test_a_recorded_handshake_tests_no_password_guess() -> None:
    """Offline guessing: every byte of a real version 2 session (real server, real client,
    through the proxy) and a 20-word dictionary holding the right password. The attacker of
    _guess_passwords derives each word's PRS (cheap Argon2 costs, so the test is fast), the
    generator, and every ISK and key schedule it can form without the ephemeral scalars: not one
    word opens message 1, message 2 or CONFIRM, so the right one is not singled out.

    Control, with the same attacker code and the same hello and parameters: a PSK-only
    handshake (version 1's design, the PRS as Noise psk, made by the model) gives the password
    away -- exactly the right word passes. And the attacker does hold the right PRS: its
    derivation for the right word equals the server's PHC hash."""
    phc = argonlink.hash_password(PASSWORD, CHEAP_KDF)
    real = sync.Server(throttle=False, password_hash=phc, handshake_timeout=5, close_timeout=1)
    with real as srv, Proxy(srv.address) as proxy:
        with sync_client(proxy.address, kdf_floor=CHEAP_KDF) as c:
            accepted = srv.accept(timeout=5)
            c.send(b"a secret")
            assert accepted.recv(timeout=5) == b"a secret"
            accepted.send(b"another")
            assert c.recv(timeout=5) == b"another"
        (pc,) = proxy.wait_for_connections(1)
        assert pc.wait_closed(5)
    c2s, s2c = pc.records(Direction.C2S), pc.records(Direction.S2C)
    assert len(c2s) > C2S_FIRST_DATA and len(s2c) > S2C_FIRST_DATA
    params = s2c[S2C_PARAMS]
    salt, costs = params[4:20], struct.unpack_from(">III", params, 20)
    assert costs == CHEAP_KDF.as_tuple()
    assert derive_prs(PASSWORD.encode(), salt, *costs) == prs_from_phc(phc)

    assert _guess_passwords(DICTIONARY, c2s, s2c) == []

    v1_c2s, v1_s2c = _psk_only_handshake(c2s[C2S_HELLO], params, prs_from_phc(phc))
    assert _guess_passwords(DICTIONARY, v1_c2s, v1_s2c) == [PASSWORD]


@pytest.mark.parametrize("guess", ["hunter2", PASSWORD], ids=["wrong-guess", "right-guess"])
def test_a_server_impostor_tests_one_guess_per_connection(guess: str) -> None:
    """An active man in the middle posing as the server (the reference server, knowing one
    guessed password) and a real client with the right password. With a wrong guess the client
    fails with AuthenticationError, and the impostor, holding message 1 and the scalar behind the
    share it sent, can test no other word: every word of the dictionary, the right one included,
    fails against the recorded message 1 (its scalar tried with each of them), and so does its
    own guess. With the right guess the client connects and the impostor opens message 1 (the
    one-guess oracle is real): with its scalar exactly the right word passes, without it none."""
    params = Params(m_cost=CHEAP_KDF.m_cost, t_cost=CHEAP_KDF.t_cost, p_cost=CHEAP_KDF.p_cost)
    outcome: dict[str, Any] = {}
    with RefServer(guess, params=params) as impostor:

        def serve() -> None:
            try:
                outcome["side"] = impostor.accept(timeout=5)
            except (InvalidTag, ValueError) as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=serve)
        worker.start()
        if guess == PASSWORD:
            with sync_client(impostor.address, kdf_floor=CHEAP_KDF) as c:
                node_id = c.node_id
            worker.join(10)
            assert outcome["side"].client_node_id == node_id
            outcome["side"].close()
        else:
            with pytest.raises(AuthenticationError):
                sync_client(impostor.address, kdf_floor=CHEAP_KDF).connect()
            worker.join(10)
            assert isinstance(outcome["error"], InvalidTag)
    (exchange,) = impostor.exchanges
    c2s, s2c = [exchange.hello, exchange.message1], [exchange.params]
    assert len(exchange.message1) == 2 + MSG1_LEN
    if guess == PASSWORD:
        assert _guess_passwords(DICTIONARY, c2s, s2c, {guess: [exchange.scalar]}) == [PASSWORD]
        assert _guess_passwords(DICTIONARY, c2s, s2c) == []
    else:
        everywhere = {word: [exchange.scalar] for word in DICTIONARY}
        assert _guess_passwords(DICTIONARY, c2s, s2c, everywhere) == []


# ============================================================================================
# Property 5: integrity


TAMPER_AT = 2  # the third message: two good ones go first
INTEGRITY_CASES: dict[str, tuple[Callable[[int], Tamper], int]] = {
    # name: (tamper at record index, how many messages the receiver must get)
    "flip-ciphertext-bit": (lambda i: FlipBit(i, offset=2), TAMPER_AT),
    "flip-tag-bit": (lambda i: FlipBit(i, offset=-1), TAMPER_AT),
    "flip-length-bit": (lambda i: FlipBit(i, offset=1), TAMPER_AT),
    "drop": (Drop, TAMPER_AT),
    "duplicate": (Duplicate, TAMPER_AT + 1),  # the original copy is genuine; the replay is not
    "reorder": (Swap, TAMPER_AT),
}


@pytest.mark.parametrize("direction", [Direction.C2S, Direction.S2C], ids=["c2s", "s2c"])
@pytest.mark.parametrize("case", list(INTEGRITY_CASES))
async def test_tampered_frame_ends_the_connection(
    server: argonlink.Server, case: str, direction: Direction
) -> None:
    """One data frame altered, dropped, duplicated or swapped with the next: the receiver gets
    exactly the messages before it, then ConnectionClosedError; the sender's side ends too."""
    make, expected = INTEGRITY_CASES[case]
    first = C2S_FIRST_DATA if direction is Direction.C2S else S2C_FIRST_DATA
    with tampering_proxy(server.address, direction, make(first + TAMPER_AT)) as proxy:
        c = client(proxy.address)
        conn = await c.connect()
        accepted = await server.accept(timeout=5)
        sender, receiver = (conn, accepted) if direction is Direction.C2S else (accepted, conn)
        for m in MESSAGES:
            await sender.send(m)
        delivered, error = await drain(receiver)
        assert delivered == MESSAGES[:expected]
        assert isinstance(error, ConnectionClosedError), error
        with pytest.raises(ConnectionClosedError):  # and it stays that way
            await receiver.recv(timeout=1)
        with pytest.raises(ConnectionClosedError):
            await sender.recv(timeout=5)
        (pc,) = await proxy.wait_for_connections_async(1)
        assert await pc.wait_closed_async(5)
    _assert_tampered_as_intended(case, pc.records(direction), pc.forwarded(direction), first)
    await assert_serving(server)


def _assert_tampered_as_intended(case: str, sent: list[bytes], fwd: bytes, first: int) -> None:
    """The proxy passed every record before the target untouched and did to the target what the
    case says (so a pass cannot come from the proxy doing something else)."""
    i = first + TAMPER_AT
    before = b"".join(sent[:i])
    assert fwd.startswith(before)
    rest = fwd[len(before) :]
    if case.startswith("flip"):
        diff = bytes(a ^ b for a, b in zip(rest, sent[i], strict=False))
        assert sum(bin(x).count("1") for x in diff) == 1
    elif case == "drop":
        assert rest.startswith(sent[i + 1])
    elif case == "duplicate":
        assert rest.startswith(sent[i] + sent[i])
    else:
        assert case == "reorder"
        assert rest.startswith(sent[i + 1] + sent[i])


HANDSHAKE_EDITS: dict[str, tuple[Direction, Tamper, type[Exception]]] = {
    # A wrong message 1 length is refused by the server, which hangs up: the client, seeing
    # the connection end after its message 1, reports AuthenticationError as for a wrong key.
    # So does an edited share: it either does not decode or gives the server another K.
    "msg1-length": (Direction.C2S, FlipBit(C2S_MSG1, offset=1), AuthenticationError),
    "msg1-share-first-byte": (Direction.C2S, FlipBit(C2S_MSG1, offset=2), AuthenticationError),
    "msg1-share-last-byte": (
        Direction.C2S,
        FlipBit(C2S_MSG1, offset=2 + 31, mask=0x20),
        AuthenticationError,
    ),
    "msg1-ephemeral": (Direction.C2S, FlipBit(C2S_MSG1, offset=2 + 32), AuthenticationError),
    "msg1-payload": (Direction.C2S, FlipBit(C2S_MSG1, offset=2 + 64), AuthenticationError),
    "msg1-tag": (Direction.C2S, FlipBit(C2S_MSG1, offset=-1), AuthenticationError),
    "msg2-length": (Direction.S2C, FlipBit(S2C_MSG2, offset=1), ProtocolError),
    "msg2-ephemeral": (Direction.S2C, FlipBit(S2C_MSG2, offset=2), AuthenticationError),
    "msg2-payload": (Direction.S2C, FlipBit(S2C_MSG2, offset=2 + 32), AuthenticationError),
    "msg2-tag": (Direction.S2C, FlipBit(S2C_MSG2, offset=-1), AuthenticationError),
}


@pytest.mark.parametrize("case", list(HANDSHAKE_EDITS))
async def test_tampered_handshake_message_fails(server: argonlink.Server, case: str) -> None:
    """One bit flipped in message 1 (length, client share, ephemeral key, encrypted payload,
    tag) or message 2: connect fails with the error given in HANDSHAKE_EDITS and nothing is
    accepted."""
    direction, tamper, expected = HANDSHAKE_EDITS[case]
    with tampering_proxy(server.address, direction, tamper) as proxy:
        with pytest.raises(expected):
            await client(proxy.address).connect()
        (pc,) = await proxy.wait_for_connections_async(1)
        assert await pc.wait_closed_async(5)
    assert len(pc.records(Direction.C2S)) == 2  # no CONFIRM: the client never got keys
    await assert_nothing_accepted(server)
    await assert_serving(server)


CONFIRM_EDITS: dict[str, Tamper] = {
    "flip": FlipBit(C2S_CONFIRM),
    "drop": Drop(C2S_CONFIRM),  # the first data frame arrives first
    "reorder": Swap(C2S_CONFIRM),
    "replace-with-stale": Replace(C2S_CONFIRM, b""),  # filled in with another session's CONFIRM
}


@pytest.mark.parametrize("case", list(CONFIRM_EDITS))
async def test_connection_without_valid_confirm_is_never_accepted(
    server: argonlink.Server, case: str
) -> None:
    """Key confirmation: if the client's first frame is not a CONFIRM that opens under this
    session's keys (altered, missing, out of order, or a CONFIRM recorded from another session),
    accept() never yields the connection and none of the client's messages is delivered. The
    client, which cannot know, has its connection end with ConnectionClosedError."""
    tamper = copy.deepcopy(CONFIRM_EDITS[case])
    if isinstance(tamper, Replace):
        with Proxy(server.address) as recorder:
            async with client(recorder.address):
                await server.accept(timeout=5)
            (old,) = await recorder.wait_for_connections_async(1)
            assert await old.wait_closed_async(5)
        tamper.data = old.records(Direction.C2S)[C2S_CONFIRM]
    with Proxy(server.address, c2s=tamper) as proxy:
        conn = await client(proxy.address).connect()
        for m in MESSAGES:
            with contextlib.suppress(argonlink.ConnectionClosed):
                await conn.send(m)
        delivered, error = await drain(conn)
        assert delivered == []
        assert isinstance(error, ConnectionClosedError), error
    await assert_nothing_accepted(server)
    assert server.stats()["handshakes_ok"] == (1 if isinstance(tamper, Replace) else 0)
    await assert_serving(server)


async def test_duplicated_confirm_ends_the_connection(server: argonlink.Server) -> None:
    """A second copy of CONFIRM right after the first: the connection is accepted (the first
    one is genuine), then ends with ConnectionClosedError before any message is delivered."""
    with Proxy(server.address, c2s=Duplicate(C2S_CONFIRM)) as proxy:
        conn = await client(proxy.address).connect()
        accepted = await server.accept(timeout=5)
        for m in MESSAGES:
            with contextlib.suppress(argonlink.ConnectionClosed):
                await conn.send(m)
        delivered, error = await drain(accepted)
        assert delivered == []
        assert isinstance(error, ConnectionClosedError), error


BIG = bytes(range(256)) * 800  # 204,800 bytes: four DATA frames


@pytest.mark.parametrize(
    "tamper",
    [Drop(C2S_FIRST_DATA + 2), FlipBit(C2S_FIRST_DATA + 3), CloseAfter(C2S_FIRST_DATA + 3)],
    ids=["drop-fragment", "flip-fragment", "cut-between-fragments"],
)
async def test_fragmented_message_is_all_or_nothing(
    server: argonlink.Server, tamper: Tamper
) -> None:
    """A message larger than one frame travels as several; dropping or altering one fragment, or
    cutting the stream between two fragments (each frame whole), delivers nothing of it: the
    receiver gets the message before, then ConnectionClosedError."""
    with Proxy(server.address, c2s=tamper) as proxy:
        conn = await client(proxy.address).connect()
        accepted = await server.accept(timeout=5)
        for m in (b"before", BIG, b"after"):
            with contextlib.suppress(argonlink.ConnectionClosed):
                await conn.send(m)
        delivered, error = await drain(accepted)
        assert delivered == [b"before"]
        assert isinstance(error, ConnectionClosedError), error
        (pc,) = await proxy.wait_for_connections_async(1)
        assert await pc.wait_closed_async(5)
    # BIG really was split: full-size frames follow "before" (the tamper hits the 2nd or 3rd).
    fragments = pc.records(Direction.C2S)[C2S_FIRST_DATA + 1 : C2S_FIRST_DATA + 3]
    assert [len(f) for f in fragments] == [2 + 0xFFFF] * 2


# ============================================================================================
# Property 6: truncation


CUTS: dict[str, Callable[[int], Tamper]] = {
    "after-a-frame": lambda i: CloseAfter(i),
    "inside-a-frame": lambda i: CutMidRecord(i, keep=9),
    "inside-a-length-prefix": lambda i: CutMidRecord(i, keep=1),
    "reset": lambda i: CloseAfter(i, reset=True),
}


@pytest.mark.parametrize("direction", [Direction.C2S, Direction.S2C], ids=["c2s", "s2c"])
@pytest.mark.parametrize("cut", list(CUTS))
async def test_truncation_is_an_error(
    server: argonlink.Server, cut: str, direction: Direction
) -> None:
    """The TCP stream cut after two data frames (or inside the third, or by RST): the receiver's
    ``async for`` yields the two messages and then raises ConnectionClosedError -- it must not
    end quietly as if the peer had closed."""
    first = C2S_FIRST_DATA if direction is Direction.C2S else S2C_FIRST_DATA
    with tampering_proxy(server.address, direction, CUTS[cut](first + 2)) as proxy:
        conn = await client(proxy.address).connect()
        accepted = await server.accept(timeout=5)
        sender, receiver = (conn, accepted) if direction is Direction.C2S else (accepted, conn)
        for m in MESSAGES:
            with contextlib.suppress(argonlink.ConnectionClosed):
                await sender.send(m)
        delivered, error = await drain(receiver)
        assert delivered == MESSAGES[:2]
        assert isinstance(error, ConnectionClosedError), error
        with pytest.raises(ConnectionClosedError):
            await receiver.recv(timeout=1)
        assert receiver.closed
        (pc,) = await proxy.wait_for_connections_async(1)
        assert await pc.wait_closed_async(5)
        assert pc.cut


def test_truncation_is_an_error_sync(sync_server: sync.Server) -> None:
    """The blocking API: ``for msg in conn`` after a cut raises ConnectionClosedError too."""
    with Proxy(sync_server.address, c2s=CutMidRecord(C2S_FIRST_DATA + 2, keep=9)) as proxy:
        c = sync_client(proxy.address)
        conn = c.connect()
        accepted = sync_server.accept(timeout=5)
        for m in MESSAGES:
            with contextlib.suppress(argonlink.ConnectionClosed):
                conn.send(m)
        assert wait_until(lambda: accepted.closed, 5)  # so the loop below cannot block
        delivered: list[bytes] = []
        with pytest.raises(ConnectionClosedError):
            for m in accepted:
                delivered.append(m)
        assert delivered == MESSAGES[:2]


async def test_dropped_close_frame_is_not_a_clean_end(server: argonlink.Server) -> None:
    """An attacker who suppresses the CLOSE frame and passes on the FIN cannot make the end look
    clean: the server gets every message, then ConnectionClosedError, not ConnectionClosedOK."""
    close_index = C2S_FIRST_DATA + len(MESSAGES)
    with Proxy(server.address, c2s=Drop(close_index)) as proxy:
        conn = await client(proxy.address).connect()
        accepted = await server.accept(timeout=5)
        for m in MESSAGES:
            await conn.send(m)
        await conn.close()
        delivered, error = await drain(accepted)
        assert delivered == MESSAGES
        assert isinstance(error, ConnectionClosedError), error
        (pc,) = await proxy.wait_for_connections_async(1)
        assert await pc.wait_closed_async(5)
    assert pc.records(Direction.C2S)[close_index][2:] not in pc.forwarded(Direction.C2S)


@pytest.mark.parametrize("closer", ["client", "server"])
async def test_clean_close_ends_iteration(server: argonlink.Server, closer: str) -> None:
    """After a proper close() (CLOSE frames both ways, through the same proxy), the other side's
    ``async for`` ends by itself with every message, and recv() raises ConnectionClosedOK."""
    with Proxy(server.address) as proxy:
        conn = await client(proxy.address).connect()
        accepted = await server.accept(timeout=5)
        sender, receiver = (conn, accepted) if closer == "client" else (accepted, conn)
        for m in MESSAGES:
            await sender.send(m)
        await sender.close()
        delivered, error = await drain(receiver)
        assert delivered == MESSAGES
        assert error is None
        with pytest.raises(ConnectionClosedOK):
            await receiver.recv(timeout=5)
        (pc,) = await proxy.wait_for_connections_async(1)
        assert await pc.wait_closed_async(5)
        assert not pc.cut


def test_clean_close_ends_iteration_sync(sync_server: sync.Server) -> None:
    with Proxy(sync_server.address, raw=True) as proxy:
        conn = sync_client(proxy.address).connect()
        accepted = sync_server.accept(timeout=5)
        for m in MESSAGES:
            conn.send(m)
        conn.close()
        assert wait_until(lambda: accepted.closed, 5)
        assert list(accepted) == MESSAGES
        with pytest.raises(ConnectionClosedOK):
            accepted.recv(timeout=5)
        (pc,) = proxy.wait_for_connections(1)
        assert pc.wait_closed(5)
    # hello, msg1, CONFIRM, the messages, CLOSE; then the server's CLOSE came back.
    assert len(pc.records(Direction.C2S)) == 3 + len(MESSAGES) + 1
    assert len(pc.records(Direction.S2C)) == 2 + 1


# ============================================================================================
# Property 7: reflection and misrouting


async def test_node_dialing_itself_is_refused(phc: str) -> None:
    """Server and client configured with the same node id: the client refuses with
    ProtocolError (it sees its own id in the server parameters); nothing is accepted."""
    async with argonlink.Server(throttle=False, password_hash=phc, node_id="node-a") as srv:
        with pytest.raises(ProtocolError):
            await client(srv.address, node_id="node-a").connect()
        await assert_nothing_accepted(srv)
        async with client(srv.address, node_id="node-b"):  # control: another id is fine
            await srv.accept(timeout=5)


def test_server_refuses_a_client_with_its_own_node_id(phc: str, prs: bytes) -> None:
    """The server's own check: a client (the model, which does not check) presenting the
    server's node id in message 1 gets no message 2, and nothing is accepted. Control: the same
    model client with another node id is answered."""
    with sync.Server(
        throttle=False, password_hash=phc, node_id="node-a", handshake_timeout=5
    ) as srv:
        for node_id, answered in ((srv.node_id, False), (os.urandom(16), True)):
            model = ModelClient(prs, node_id=node_id)
            with raw_connection(srv.address) as sock:
                sock.sendall(model.hello)
                params = recv_exact(sock, PARAMS_LEN)
                assert params[36:52] == srv.node_id
                sock.sendall(model.message1(params))
                if answered:
                    model.finish(recv_exact(sock, 2 + MSG2_LEN))
                else:
                    tail, how, _ = recv_until_closed(sock, 5)
                    assert (tail, how) == (b"", "eof")
                    assert_nothing_accepted_sync(srv)
                    stats = srv.stats()
                    assert (stats["handshakes_failed"], stats["auth_failures"]) == (1, 0)


def misrouting_relay(
    first: tuple[str, int], second: tuple[str, int] | None
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A man in the middle: the client's hello goes to ``first``, whose params it shows the
    client; the client's message 1 then goes (after the same hello) to a new connection to
    ``second`` (None: on to ``first``, the connection whose params the client saw), and
    whatever that answers is relayed both ways."""

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = await read_hello(reader)
        a_reader, a_writer = await asyncio.open_connection(*first)
        a_writer.write(hello)
        writer.write(await a_reader.readexactly(PARAMS_LEN))
        await writer.drain()
        msg1 = await read_record(reader)
        if second is None:
            b_reader, b_writer = a_reader, a_writer
        else:
            b_reader, b_writer = await asyncio.open_connection(*second)
            b_writer.write(hello)
            await b_reader.readexactly(PARAMS_LEN)
            a_writer.close()
        b_writer.write(msg1)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()

        try:
            await asyncio.gather(pipe(reader, b_writer), pipe(b_reader, writer))
        finally:
            b_writer.close()

    return relay


@pytest.mark.parametrize("target", ["same-connection", "same-server", "other-server"])
async def test_message1_forwarded_to_another_server_is_refused(phc: str, target: str) -> None:
    """Servers A and B share the key (same PHC string: same salt, costs and PRS) but have
    different node ids. A relay shows the client A's parameters and forwards its message 1 to
    B: B refuses (its parameters, in CI and the prologue, hold another node id, nonce and
    share), the client gets AuthenticationError, and B accepts nothing. Forwarded to a new
    connection of A itself it fails the same way (a fresh nonce and share on every connection).
    Control: the same relay passing message 1 on to the connection it was made for works."""
    async with (
        argonlink.Server(
            throttle=False, password_hash=phc, node_id="node-a", handshake_timeout=5
        ) as a,
        argonlink.Server(
            throttle=False, password_hash=phc, node_id="node-b", handshake_timeout=5
        ) as b,
    ):
        second = {"same-connection": None, "same-server": a, "other-server": b}[target]
        relay_to = misrouting_relay(a.address, None if second is None else second.address)
        with TcpService(relay_to) as relay:
            if second is None:
                async with client(relay.address) as c:
                    accepted = await a.accept(timeout=5)
                    await c.send(b"through the relay")
                    assert await accepted.recv(timeout=5) == b"through the relay"
            else:
                with pytest.raises(AuthenticationError):
                    await client(relay.address).connect()
                await assert_nothing_accepted(second)
                await assert_nothing_accepted(a if second is b else b, 0.05)
                assert second.stats()["auth_failures"] == 1
            assert relay.errors == []


# ============================================================================================
# Property 8: downgrade and any other edit of the plaintext messages


# The client's reaction to a one-bit edit (xor 0x01) of each byte of the server parameters:
# version/suite edits are refused on parsing, Argon2 costs outside [OWASP floor, client cap] are
# refused before any derivation, a share that no longer decodes is refused before message 1;
# every other edit (salt, costs within bounds, epoch, node id, nonce, a share that still decodes)
# gives the two sides different generators or ISKs, and the server drops message 1.
PARAMS_FIELDS = [
    ("version", 0, 2, {0: ProtocolError, 1: ProtocolError}),
    ("suite", 2, 4, {2: ProtocolError, 3: ProtocolError}),
    ("salt", 4, 20, {}),
    # m = 19456 KiB: the top byte -> 16 GiB (over the cap); the others stay within bounds.
    ("m_cost", 20, 24, {20: ProtocolError}),
    # t = 2: high bytes -> over the cap of 10 passes; the low byte -> 3 passes.
    ("t_cost", 24, 28, {24: ProtocolError, 25: ProtocolError, 26: ProtocolError}),
    # p = 1: high bytes -> over the cap of 16 lanes; the low byte -> 0 lanes, below the floor.
    ("p_cost", 28, 32, dict.fromkeys(range(28, 32), ProtocolError)),
    ("epoch", 32, 36, {}),
    ("node_id", 36, 52, {}),
    ("other_epoch", 52, 56, {}),
    ("nonce", 56, 72, {}),
    # Ya: judged per connection (the share is fresh each time), see _expected_params_error.
    ("share", 72, 104, {}),
]
SHARE_AT = 72


def _expected_params_error(offset: int, original: bytes) -> type[Exception]:
    """The client's reaction to ``original`` (the parameters as the server sent them) with bit 0
    of byte ``offset`` flipped."""
    if offset >= SHARE_AT:
        edited = bytearray(original[SHARE_AT:])
        edited[offset - SHARE_AT] ^= 0x01
        share = bytes(edited)
        decodes = rbcl.crypto_core_ristretto255_is_valid_point(share) and share != bytes(32)
        return AuthenticationError if decodes else ProtocolError
    for _name, start, end, special in PARAMS_FIELDS:
        if start <= offset < end:
            return special.get(offset, AuthenticationError)
    raise AssertionError(offset)


def _client_outcome(address: tuple[str, int]) -> str:
    try:
        sync_client(address).connect().abort()
    except (argonlink.Error, OSError) as exc:
        return type(exc).__name__
    return "connected"


@dataclasses.dataclass
class EditIdentity(Tamper):
    """Rewrite the hello's identity (its length byte and the bytes after it)."""

    identity: bytes

    def on_record(self, index: int, record: bytes) -> Out:
        if index != C2S_HELLO:
            return Out([record])
        fixed = record[: HELLO_FIXED_LEN - 1]
        return Out([fixed + bytes([len(self.identity)]) + self.identity])


#: Hello bytes 8..12 are the key epoch hint and 12..28 the client nonce: the server does not
#: judge them (any epoch it does not hold gets the current parameters) but they are in CPace's
#: CI (the nonce in sid too), so the edit breaks the handshake at message 1 instead.
HELLO_JUDGED = range(8)
#: An identity put into the hello in transit: printable ones are taken (a shared password
#: serves any identity) and fail at message 1, others are refused at once (M3).
IDENTITY_EDITS = {
    b"x": "AuthenticationError",
    b"peer-b": "AuthenticationError",
    b" ": "ProtocolError",
    b"\x7f": "ProtocolError",
    b"ok\x00": "ProtocolError",
    b"caf\xc3\xa9": "ProtocolError",
}


def test_edited_hello_fails_the_handshake(sync_server: sync.Server) -> None:
    """Each of the first 28 bytes of the client hello flipped in transit (connection n edits
    byte n), then an identity put into it. Magic, version and suite, or an identity with a byte
    outside 0x21..0x7E: the server refuses the hello and closes without a word, so connect
    raises ProtocolError. The epoch hint, the nonce, a printable identity: the server answers
    with its parameters, and message 1 then fails (AuthenticationError). Nothing is accepted
    either way."""
    flips = range(HELLO_FIXED_LEN - 1)
    with Proxy(sync_server.address, c2s=lambda n: FlipBit(C2S_HELLO, offset=n)) as proxy:
        outcomes = {i: _client_outcome(proxy.address) for i in flips}
        for n, pc in enumerate(proxy.wait_for_connections(len(flips))):
            assert pc.wait_closed(5)
            assert (pc.records(Direction.S2C) == []) == (n in HELLO_JUDGED)
    expected = {i: "ProtocolError" if i in HELLO_JUDGED else "AuthenticationError" for i in flips}
    assert outcomes == expected
    identity_outcomes = {}
    for identity, outcome in IDENTITY_EDITS.items():
        with Proxy(sync_server.address, c2s=EditIdentity(identity)) as proxy:
            identity_outcomes[identity] = _client_outcome(proxy.address)
            (pc,) = proxy.wait_for_connections(1)
            assert pc.wait_closed(5)
            answered = [PARAMS_LEN] if outcome == "AuthenticationError" else []
            assert [len(r) for r in pc.records(Direction.S2C)] == answered, identity
            assert pc.records(Direction.C2S, forwarded=True)[C2S_HELLO].endswith(identity)
    assert identity_outcomes == IDENTITY_EDITS
    assert_nothing_accepted_sync(sync_server)
    assert sync_server.stats()["handshakes_failed"] == len(flips) + len(IDENTITY_EDITS)
    with Proxy(sync_server.address) as proxy:  # control: the same path, untouched, works
        assert _client_outcome(proxy.address) == "connected"


def test_edited_params_fail_the_handshake(sync_server: sync.Server) -> None:
    """Each byte of the server parameters flipped in transit (one proxy per byte): the handshake
    fails every time, with the error given in PARAMS_FIELDS, and nothing is accepted. An edited
    other_epoch also makes the client retry once under that epoch, which fails the same way."""
    outcomes, expected = {}, {}
    for offset in range(PARAMS_LEN):
        with Proxy(sync_server.address, s2c=lambda n, o=offset: FlipBit(S2C_PARAMS, offset=o)) as p:
            outcomes[offset] = _client_outcome(p.address)
            original = p.connections[0].records(Direction.S2C)[S2C_PARAMS]
            expected[offset] = _expected_params_error(offset, original).__name__
    assert outcomes == expected
    # Both kinds of share edit happened (half of all encodings decode, the lowest bit never).
    share_outcomes = {expected[i] for i in range(SHARE_AT, PARAMS_LEN)}
    assert share_outcomes == {"AuthenticationError", "ProtocolError"}
    assert expected[SHARE_AT] == "ProtocolError"  # the sign bit: never a canonical encoding
    assert_nothing_accepted_sync(sync_server)
    stats = sync_server.stats()
    assert stats["handshakes_ok"] == 0
    # A flipped bit in bytes 52-54 makes other_epoch a large number: the client retries once.
    # In byte 55 it makes other_epoch 1, the epoch just refused: no retry.
    attempts = {i: 2 if 52 <= i < 55 else 1 for i in range(PARAMS_LEN)}
    auth = [i for i, name in expected.items() if name == "AuthenticationError"]
    assert stats["auth_failures"] == sum(attempts[i] for i in auth)
    with Proxy(sync_server.address) as proxy:
        assert _client_outcome(proxy.address) == "connected"


def _params_with(params: bytes, offset: int, value: int) -> bytes:
    return params[:offset] + struct.pack(">I", value) + params[offset + 4 :]


@pytest.mark.parametrize(
    ("name", "offset", "value"),
    [
        ("m-below-floor", 20, KDF.m_cost - 1),
        ("t-below-floor", 24, 1),
        ("m-8KiB", 20, 8),
        ("m-over-cap", 20, 1 << 22),
        ("version-1", 0, 0x0001_0001),
        ("version-3", 0, 0x0003_0001),
        ("suite-2", 0, 0x0002_0002),
    ],
)
def test_kdf_and_version_downgrades_are_refused(
    sync_server: sync.Server, name: str, offset: int, value: int
) -> None:
    """Deliberate downgrades of the server parameters (cheaper Argon2 for guessing, version 1
    without CPace, other versions or suites) are refused by the client before it derives or
    sends anything."""

    class Rewrite(Tamper):
        def on_record(self, index: int, record: bytes) -> Out:
            if index == S2C_PARAMS:
                return Out([_params_with(record, offset, value)])
            return Out([record])

    with Proxy(sync_server.address, s2c=Rewrite()) as proxy:
        assert _client_outcome(proxy.address) == "ProtocolError", name
        (pc,) = proxy.wait_for_connections(1)
        assert pc.wait_closed(5)
        assert len(pc.records(Direction.C2S)) == 1  # hello only: no message 1 was sent
    assert_nothing_accepted_sync(sync_server, 0.1)


# ============================================================================================
# Property 10: denial of service


async def test_many_handshakes_cost_one_key_derivation() -> None:
    """20 concurrent clients sharing one Credentials: one Argon2 run on the client side, one on
    the server (at start-up), 20 connections."""
    async with argonlink.Server(
        throttle=False, password=PASSWORD, kdf=KDF, handshake_timeout=5
    ) as srv:
        assert srv.stats()["key_derivations"] == 1
        creds = argonlink.Credentials(PASSWORD)
        clients = [client(srv.address, creds) for _ in range(20)]
        conns = await asyncio.gather(*(c.connect() for c in clients))
        accepted = [await srv.accept(timeout=5) for _ in clients]
        assert len(conns) == len(accepted) == 20
        assert creds.key_derivations == 1
        assert all(c.key_derivations == 1 for c in clients)
        stats = srv.stats()
        assert (stats["key_derivations"], stats["handshakes_ok"]) == (1, 20)
        for conn in conns:
            conn.abort()


@pytest.mark.parametrize("stage", ["silent", "inside-hello", "after-hello", "after-message-1"])
def test_idle_handshake_is_cut_at_the_deadline(phc: str, prs: bytes, stage: str) -> None:
    """A connection that stalls anywhere before CONFIRM is closed at handshake_timeout (0.5 s),
    not before and not much after."""
    with sync.Server(throttle=False, password_hash=phc, handshake_timeout=0.5) as srv:
        with raw_connection(srv.address) as sock:
            start = time.monotonic()
            model = ModelClient(prs)
            if stage == "inside-hello":
                sock.sendall(model.hello[:20])
            elif stage != "silent":
                sock.sendall(model.hello)
                params = recv_exact(sock, PARAMS_LEN)
                if stage == "after-message-1":
                    sock.sendall(model.message1(params))
                    model.finish(recv_exact(sock, 2 + MSG2_LEN))  # a valid message 2
            tail, how, _ = recv_until_closed(sock, 5)
            elapsed = time.monotonic() - start
        assert (tail, how) == (b"", "eof")
        assert 0.4 <= elapsed < 2.5, elapsed
        assert wait_until(lambda: srv.stats()["handshakes_failed"] == 1, 2)
        assert srv.stats()["pending_handshakes"] == 0
        assert_nothing_accepted_sync(srv, 0.05)
        assert_serving_sync(srv)


@pytest.mark.parametrize(
    "prefix",
    [b"\xff\xff", b"\x00\x00", b"\x00\x75", b"\x00\x48", b"\x00\x68", b"\x00\x74\x00"],
    ids=["0xffff", "zero", "117", "72-as-in-version-1", "104-without-limits", "116-then-stall"],
)
def test_bad_message1_length_is_refused_at_once(sync_server: sync.Server, prefix: bytes) -> None:
    """A length prefix other than 116 for message 1 (huge 0xFFFF, zero, 117, version 1's 72,
    104 before the limits were announced) is refused as soon as it is read -- the server waits
    for no body (handshake_timeout is 5 s) -- and a 116-byte message 1 that never comes
    (b"\\x00\\x74" + 1 byte) waits for the deadline instead of being answered. The server
    keeps serving."""
    with raw_connection(sync_server.address) as sock:
        sock.sendall(make_hello())
        recv_exact(sock, PARAMS_LEN)
        sock.sendall(prefix)
        valid_length = prefix == b"\x00\x74\x00"
        tail, how, elapsed = recv_until_closed(sock, 0.5 if valid_length else 3.0)
    assert tail == b""
    if valid_length:
        assert how == "timeout"  # a valid length: the server waits for the rest
    else:
        assert how == "eof" and elapsed < 1.0, (how, elapsed)  # well before the 5 s deadline
    assert_serving_sync(sync_server)


@pytest.mark.parametrize(
    "injected",
    [b"\xff\xff" + os.urandom(0xFFFF), b"\x00\x10" + os.urandom(16), b"\x00\x00"],
    ids=["huge-with-garbage", "below-minimum", "zero"],
)
async def test_bad_frame_length_ends_only_that_connection(
    server: argonlink.Server, injected: bytes
) -> None:
    """A bogus frame injected after the first message of an established session (a full 64 KiB
    of garbage under a 0xFFFF prefix, or a length below the smallest sealed frame): that
    connection ends with ConnectionClosedError after the first message, and the server goes on
    serving others."""
    with Proxy(server.address, c2s=Inject(C2S_FIRST_DATA + 1, injected)) as proxy:
        conn = await client(proxy.address).connect()
        accepted = await server.accept(timeout=5)
        for m in MESSAGES:
            with contextlib.suppress(argonlink.ConnectionClosed):
                await conn.send(m)
        delivered, error = await drain(accepted)
        assert delivered == MESSAGES[:1]
        assert isinstance(error, ConnectionClosedError), error
    await assert_serving(server)


def test_pending_handshakes_are_capped(phc: str) -> None:
    """max_pending_handshakes=4 (so at most 2 per source) and 20 idle sockets from one address:
    the oldest pending handshakes of that source are evicted (closed) as new ones arrive, at
    most 2 stay pending, and a real client from the same address still gets in (it evicts an
    idle one, never waits behind them)."""
    with sync.Server(
        throttle=False, password_hash=phc, max_pending_handshakes=4, handshake_timeout=10
    ) as srv:
        idle = [raw_connection(srv.address) for _ in range(20)]
        try:
            assert wait_until(lambda: srv.stats()["handshakes_evicted"] == 18, 5)
            assert srv.stats()["pending_handshakes"] == 2
            start = time.monotonic()
            assert_serving_sync(srv)
            assert time.monotonic() - start < 2.0
            assert srv.stats()["handshakes_evicted"] == 19
            # The 19 oldest were closed by the server; the newest is still pending.
            closed = [recv_until_closed(s, 0.5)[1] for s in idle[:19]]
            assert all(how in ("eof", "reset") for how in closed), closed
            still_open = [recv_until_closed(s, 0.05)[1] for s in idle[19:]]
            assert still_open == ["timeout"]
            assert srv.stats()["pending_handshakes"] == 1
        finally:
            for s in idle:
                s.close()


# ============================================================================================
# Property 11: no oracle


def _probe_after_params(
    address: tuple[str, int], message1: Callable[[bytes, bytes], bytes], identity: bytes = b""
) -> tuple[bytes, str]:
    """Send a fresh hello naming ``identity``, read the parameters, send ``message1(hello,
    params)``: what comes back, and how does the connection end? (Both reactions must also be
    immediate, far from the deadline.)"""
    with raw_connection(address) as sock:
        hello = make_hello(identity)
        sock.sendall(hello)
        params = recv_exact(sock, PARAMS_LEN)
        sock.sendall(message1(hello, params))
        tail, how, elapsed = recv_until_closed(sock, 3.0)
    assert elapsed < 1.0, elapsed
    return tail, how


def _model_message1(prs: bytes) -> Callable[[bytes, bytes], bytes]:
    """A well-formed message 1 from the model client with ``prs``, for the connection's hello
    and parameters."""

    def make(hello: bytes, params: bytes) -> bytes:
        model = ModelClient(prs)
        model.hello = hello
        return model.message1(params)

    return make


def _message1_with_share(share: bytes) -> Callable[[bytes, bytes], bytes]:
    """A message 1 whose client share is ``share``, the rest random."""
    return lambda _h, _p: struct.pack(">H", MSG1_LEN) + share + os.urandom(MSG1_NOISE_LEN)


#: Message 1s that must all get the same reaction: a wrong password, bytes at random (a share
#: that almost surely does not decode), a share that decodes and Noise bytes at random, and the
#: identity as share (K would be the identity).
WRONG_MESSAGE1: dict[str, Callable[[], Callable[[bytes, bytes], bytes]]] = {
    "wrong-password": lambda: _model_message1(os.urandom(32)),
    "random-bytes": lambda: lambda _h, _p: struct.pack(">H", MSG1_LEN) + os.urandom(MSG1_LEN),
    "valid-share-random-rest": lambda: _message1_with_share(
        bytes(rbcl.crypto_core_ristretto255_random())
    ),
    "identity-share": lambda: _message1_with_share(bytes(32)),
}


def test_wrong_password_and_random_bytes_look_the_same(
    sync_server: sync.Server, prs: bytes
) -> None:
    """After the hello and the parameters, a well-formed message 1 made with a wrong key, 104
    random bytes, a valid share with random Noise bytes, and the identity as share get the same
    observable reaction: zero bytes back, then FIN. A real client with the wrong password sees
    the same (the proxy records nothing after the parameters). Control: a message 1 with the
    right key is answered with message 2, so the probe can tell."""
    addr = sync_server.address
    reactions = {name: _probe_after_params(addr, make()) for name, make in WRONG_MESSAGE1.items()}
    assert reactions == dict.fromkeys(WRONG_MESSAGE1, (b"", "eof"))

    with Proxy(addr) as proxy:
        with pytest.raises(AuthenticationError):
            sync_client(proxy.address, WRONG_PASSWORD).connect()
        (pc,) = proxy.wait_for_connections(1)
        assert pc.wait_closed(5)
    assert len(pc.records(Direction.C2S)) == 2  # hello and message 1 went out...
    assert len(pc.received(Direction.S2C)) == PARAMS_LEN  # ...and nothing came back after them

    with raw_connection(addr) as sock:  # control: the right key is answered
        model = ModelClient(prs)
        sock.sendall(model.hello)
        sock.sendall(model.message1(recv_exact(sock, PARAMS_LEN)))
        assert len(recv_exact(sock, 2 + MSG2_LEN)) == 2 + MSG2_LEN
    # All these failures are the same kind inside the server too.
    failures = len(WRONG_MESSAGE1) + 1
    assert wait_until(lambda: sync_server.stats()["auth_failures"] == failures, 2)


def _hello_and_params(address: tuple[str, int], identity: bytes) -> bytes:
    """The parameters a server answers a hello naming ``identity`` with (then hang up)."""
    with raw_connection(address) as sock:
        sock.sendall(make_hello(identity))
        return recv_exact(sock, PARAMS_LEN)


def test_unknown_identity_looks_like_a_wrong_password() -> None:
    """M26, on a server with per-peer passwords only: a hello naming an identity it has no
    password for is answered with parameters like a known one's (version, suite, costs, epoch 1,
    no other epoch, the node id, a share that decodes), with a salt that is the same on every
    try and differs between identities; a message 1 then gets what a wrong password gets for a
    known identity: nothing, then FIN. Control: the known identity with the right password is
    answered with message 2."""
    phc_a = argonlink.hash_password(PASSWORD, KDF)
    prs = prs_from_phc(phc_a)
    with sync.Server(
        throttle=False, peers={"peer-a": argonlink.PasswordHash(phc_a)}, handshake_timeout=5
    ) as srv:
        known = _hello_and_params(srv.address, b"peer-a")
        unknown = [_hello_and_params(srv.address, b"nobody") for _ in range(2)]
        other = _hello_and_params(srv.address, b"somebody-else")
        for params in [*unknown, other]:
            assert params[:4] == known[:4]  # version, suite
            assert params[20:56] == known[20:56]  # costs, epoch, node id, other epoch
            assert struct.unpack_from(">I", params, 32) == (1,)
            assert rbcl.crypto_core_ristretto255_is_valid_point(params[72:])
        assert unknown[0][4:20] == unknown[1][4:20] != other[4:20]
        assert known[4:20] not in (unknown[0][4:20], other[4:20])
        assert unknown[0][56:] != unknown[1][56:]  # nonce and share fresh, as for anyone

        def attempt(identity: bytes, key: bytes) -> tuple[bytes, str]:
            return _probe_after_params(srv.address, _model_message1(key), identity)

        assert attempt(b"nobody", prs) == attempt(b"peer-a", os.urandom(32)) == (b"", "eof")
        with raw_connection(srv.address) as sock:  # control: the right key is answered
            model = ModelClient(prs, identity=b"peer-a")
            sock.sendall(model.hello)
            sock.sendall(model.message1(recv_exact(sock, PARAMS_LEN)))
            model.finish(recv_exact(sock, 2 + MSG2_LEN))
        assert_nothing_accepted_sync(srv, 0.05)


def test_an_identity_authenticates_with_its_own_password_only() -> None:
    """§3.8 with per-peer passwords: each identity gets in with its own password and the server
    reports it; one peer's password presented under another's identity, an unknown identity,
    and an identity swapped in transit (the proxy renames peer-a to peer-b in the hello) all
    fail like a wrong password, and nothing is accepted."""
    pw_a, pw_b = "peer a's password", "peer b's password"
    with sync.Server(
        throttle=False, peers={"peer-a": pw_a, "peer-b": pw_b}, kdf=KDF, handshake_timeout=5
    ) as srv:
        for identity, password in (("peer-a", pw_a), ("peer-b", pw_b)):
            with sync_client(srv.address, password, identity=identity) as c:
                accepted = srv.accept(timeout=5)
                assert accepted.peer_identity == identity
                c.send(identity.encode())
                assert accepted.recv(timeout=5) == identity.encode()
        for identity, password in (("peer-b", pw_a), ("peer-a", pw_b), ("peer-c", pw_a)):
            with pytest.raises(AuthenticationError):
                sync_client(srv.address, password, identity=identity).connect()
        with Proxy(srv.address, c2s=EditIdentity(b"peer-b")) as proxy:
            with pytest.raises(AuthenticationError):
                sync_client(proxy.address, pw_b, identity="peer-a").connect()
        assert_nothing_accepted_sync(srv, 0.1)
        assert srv.stats()["handshakes_ok"] == 2


# ============================================================================================
# Non-argonlink traffic


def _tls_client_hello() -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="example.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


NOT_ARGONLINK = {
    "garbage": os.urandom(4096),
    "http": b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
    "tls-client-hello": _tls_client_hello(),
    "huge-length": b"\xff\xff" + os.urandom(64),
    "nothing": b"",
    "hello-then-garbage": make_hello() + os.urandom(512),
    # Version 1's 12-byte hello, padded to the length of a version 2 one.
    "version-1-hello": b"ALNK\x00\x01\x00\x01\x00\x00\x00\x00" + bytes(17),
}


@pytest.mark.parametrize("payload", list(NOT_ARGONLINK))
def test_non_argonlink_traffic_leaves_the_server_serving(
    sync_server: sync.Server, payload: str
) -> None:
    """Garbage, an HTTP request, a TLS ClientHello, version 1's hello: the server answers nothing
    (only a valid hello gets the public parameters), closes the connection, and keeps
    serving."""
    with raw_connection(sync_server.address) as sock:
        sock.sendall(NOT_ARGONLINK[payload])
        if payload == "nothing":
            sock.shutdown(socket.SHUT_WR)
        tail, how, _ = recv_until_closed(sock, 3.0)
    assert how in ("eof", "reset")
    assert len(tail) == (PARAMS_LEN if payload == "hello-then-garbage" else 0)
    assert_nothing_accepted_sync(sync_server, 0.05)
    assert_serving_sync(sync_server)
