"""An authenticated hostile peer (``refpeer.py``) against a real server: each test names the
requirement of docs/PROTOCOL.md it checks (M-numbers) and asserts the exact outcome: the close
code on the wire, what the application saw, and, where memory is the point, the server's RSS
growth (the server then runs in its own process) against a control run of honest traffic."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import argonlink
import pytest
from argonlink import sync
from noise_model import psk_from_phc
from refpeer import (
    CLOSE,
    FIRST_FRAGMENT,
    MAX_CHUNK,
    PONG,
    RESUME,
    HostilePeer,
    ack,
    close,
    confirm,
    data,
    expect_close,
    ping,
)

PASSWORD = "hostile peer test password"
KDF = argonlink.KdfParams.OWASP
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def phc() -> str:
    return argonlink.hash_password(PASSWORD, KDF)


@pytest.fixture(scope="module")
def psk(phc: str) -> bytes:
    return psk_from_phc(phc)


@pytest.fixture
def srv(phc: str) -> Iterator[sync.Server]:
    with sync.Server(password_hash=phc, handshake_timeout=5, close_timeout=1) as server:
        yield server


def accepted(server: sync.Server) -> sync.Connection:
    return server.accept(timeout=5)


def assert_app_sees_error(conn: sync.Connection, code: int = 1002) -> None:
    """The application learns the connection failed, with the code, never a clean close."""
    with pytest.raises(argonlink.ConnectionClosedError) as exc:
        conn.recv(timeout=5)
    assert exc.value.code == code, exc.value


# ============================================================================================
# M14: every fragment but the last is full


def test_tiny_first_fragment_is_refused_with_1002(srv: sync.Server, psk: bytes) -> None:
    with HostilePeer(srv.address, psk) as peer:
        conn = accepted(srv)
        peer.send_each([data(b"x", more=True, total=1_000_000), data(b"y", more=True)])
        expect_close(peer, 1002)
        assert_app_sees_error(conn)


def test_short_middle_fragment_is_refused_with_1002(srv: sync.Server, psk: bytes) -> None:
    total = FIRST_FRAGMENT + 2 * MAX_CHUNK
    with HostilePeer(srv.address, psk) as peer:
        conn = accepted(srv)
        peer.send(data(b"a" * FIRST_FRAGMENT, more=True, total=total), data(b"b", more=True))
        expect_close(peer, 1002)
        assert_app_sees_error(conn)


def test_full_fragments_are_delivered(srv: sync.Server, psk: bytes) -> None:
    """The control: the same message cut as M14 says arrives whole."""
    total = FIRST_FRAGMENT + MAX_CHUNK + 3
    with HostilePeer(srv.address, psk) as peer:
        conn = accepted(srv)
        peer.send(
            data(b"a" * FIRST_FRAGMENT, more=True, total=total),
            data(b"b" * MAX_CHUNK, more=True),
            data(b"c" * 3),
        )
        assert conn.recv(timeout=5) == b"a" * FIRST_FRAGMENT + b"b" * MAX_CHUNK + b"ccc"


# ============================================================================================
# Memory: the server in its own process, RSS against the attacker's bytes and a control run


class ServerProcess:
    def __init__(self, phc: str, **options: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "hostile_server.py"), phc, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert self.proc.stdout is not None
        self.address = ("127.0.0.1", int(self.proc.stdout.readline()))

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def settled_rss(self) -> int:
        """RSS once it stopped moving (the server finished reading what it will read)."""
        last = self.rss()
        for _ in range(50):
            time.sleep(0.1)
            now = self.rss()
            if abs(now - last) < 64 * 1024:
                return now
            last = now
        return last

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


RECV_BUFFER = 1 << 20


def _flood_messages(address: tuple[str, int], psk: bytes, messages: list[bytes]) -> int:
    """Send each message as one DATA frame in its own TCP segment until the server stops
    reading; returns the wire bytes sent."""
    sent = 0
    with HostilePeer(address, psk) as peer:
        peer.sock.settimeout(2)
        try:
            for m in messages:
                record = peer.send_cipher.seal(data(m))
                peer.sock.sendall(record)
                sent += len(record)
        except (TimeoutError, OSError):
            pass  # the server stopped reading: its recv_buffer is full
        time.sleep(0.5)
        return sent


def test_tiny_messages_hold_no_more_than_recv_buffer(phc: str, psk: bytes) -> None:
    """1-byte messages, one TCP segment each, that the application never reads: the server
    holds about recv_buffer, as it does for the same bytes sent honestly in large messages.
    (Before messages were copied out of the read buffer, each pinned its own read buffer:
    ~100x the attacker's bytes.)"""
    growth = {}
    for kind, messages in (
        ("control", [b"m" * 60_000] * 40),
        ("tiny", [b"x"] * 40_000),
    ):
        server = ServerProcess(phc, recv_buffer=RECV_BUFFER)
        try:
            before = server.settled_rss()
            sent = _flood_messages(server.address, psk, messages)
            growth[kind] = (server.settled_rss() - before, sent)
        finally:
            server.close()
    (tiny, tiny_sent), (control, _) = growth["tiny"], growth["control"]
    print(
        f"RSS growth: tiny messages {tiny >> 10} KiB for {tiny_sent >> 10} KiB on the wire; "
        f"control {control >> 10} KiB; recv_buffer {RECV_BUFFER >> 10} KiB"
    )
    # Each held message costs its bytes plus bookkeeping, counted as 64 against recv_buffer.
    assert tiny <= max(4 * RECV_BUFFER, 3 * control), growth


def test_ping_flood_from_a_peer_that_never_reads_holds_one_pong(phc: str, psk: bytes) -> None:
    """M24: PINGs from a peer that does not read: the server's memory stays flat (one PONG
    queued, not one per PING), and when the peer reads, the last PONG echoes the last PING."""
    server = ServerProcess(phc)
    pings = 400_000
    try:
        with HostilePeer(server.address, psk, rcvbuf=4096) as peer:
            before = server.settled_rss()
            peer.sock.settimeout(10)
            batch = 2000
            for start in range(0, pings, batch):
                peer.sock.sendall(
                    b"".join(peer.send_cipher.seal(ping(v)) for v in range(start, start + batch))
                )
            growth = server.settled_rss() - before
            print(f"RSS growth after {pings} PINGs ({pings * 27 >> 20} MiB): {growth >> 10} KiB")
            # One queued PONG per PING was ~50 bytes each: 20 MiB here.
            assert growth < 4 << 20, growth
            last = None
            while True:
                try:
                    frame = peer.recv_frame(timeout=1)
                except TimeoutError:
                    break
                assert frame is not None and frame.type == PONG, frame
                last = frame.value
            assert last == pings - 1
    finally:
        server.close()


# ============================================================================================
# M22: session windows below the minimum


def test_session_window_below_minimum_is_refused(srv: sync.Server, psk: bytes) -> None:
    for window in (0, 1023):
        with HostilePeer(srv.address, psk, first=confirm(os.urandom(16), window=window)) as peer:
            frames = expect_close(peer, 1002)
            assert all(f.type != RESUME for f in frames), frames
    with pytest.raises(argonlink.Timeout):
        srv.accept(timeout=0.3)


# ============================================================================================
# M23: a resume naming numbers the session cannot continue from


def test_impossible_resume_is_refused_and_the_session_survives(
    srv: sync.Server, psk: bytes
) -> None:
    sid = os.urandom(16)
    with HostilePeer(srv.address, psk, first=confirm(sid)) as first:
        frame = first.recv_frame()
        assert frame is not None and frame.type == RESUME and frame.body[0] == 0
        session = accepted(srv)
        session.send(b"one")
        assert first.recv_frame() is not None  # message 0
    # The server sent one message: resuming at 5 names messages it never sent.
    with HostilePeer(srv.address, psk, first=confirm(sid, resume=True, next_expected=5)) as bad:
        frames = expect_close(bad, 1002)
        assert all(f.type != RESUME for f in frames), frames
    # The session is as it was: its real client resumes at 1.
    with HostilePeer(srv.address, psk, first=confirm(sid, resume=True, next_expected=1)) as ok:
        frame = ok.recv_frame()
        assert frame is not None and frame.type == RESUME and frame.body[0] == 1, frame


# ============================================================================================
# M19, M20: close codes, and CLOSE before FIN on a protocol error


@pytest.mark.parametrize("code", [0, 999, 1005, 1006, 2000, 4000, 5000])
def test_reserved_close_codes_are_a_protocol_error(srv: sync.Server, psk: bytes, code: int) -> None:
    with HostilePeer(srv.address, psk) as peer:
        conn = accepted(srv)
        peer.send(close(code, b"not really"))
        expect_close(peer, 1002)
        assert_app_sees_error(conn)


def test_protocol_errors_send_close_before_fin(srv: sync.Server, psk: bytes) -> None:
    bad_frames = [
        bytes([0x7F]),  # unknown type
        bytes([0x02, 1, 2, 3]),  # PING of the wrong size
        ack(1),  # ACK outside a session
        confirm(),  # CONFIRM again
    ]
    for bad in bad_frames:
        with HostilePeer(srv.address, psk) as peer:
            conn = accepted(srv)
            peer.send(bad)
            expect_close(peer, 1002)
            assert_app_sees_error(conn)


def test_a_tag_failure_gets_nothing_back(srv: sync.Server, psk: bytes) -> None:
    with HostilePeer(srv.address, psk) as peer:
        conn = accepted(srv)
        peer.send_sealed_tampered(data(b"x"))
        assert peer.raw_until_closed() == b""
        with pytest.raises(argonlink.ConnectionClosedError):
            conn.recv(timeout=5)


def test_a_message_over_the_limit_gets_1009(phc: str, psk: bytes) -> None:
    with sync.Server(password_hash=phc, max_message_size=100_000) as server:
        with HostilePeer(server.address, psk) as peer:
            conn = accepted(server)
            peer.send(data(b"a" * FIRST_FRAGMENT, more=True, total=10_000_000))
            expect_close(peer, 1009)
            assert_app_sees_error(conn, 1009)


def test_application_cannot_close_with_a_reserved_code(srv: sync.Server, psk: bytes) -> None:
    with HostilePeer(srv.address, psk) as peer:
        conn = accepted(srv)
        with pytest.raises(ValueError):
            conn.close(code=1006)
        conn.close(code=4100, reason="app")
        frames = peer.frames_until_closed()
        assert frames[-1].type == CLOSE and frames[-1].close_code == 4100


# ============================================================================================
# M7: a replayed message 1 holds no connection slot


def test_message1_without_confirm_holds_no_slot(phc: str, psk: bytes) -> None:
    """Connections that present a valid message 1 (a replayer's, or a client's that never
    confirms) and then sit: with max_connections=2, a real client still gets in."""
    with sync.Server(password_hash=phc, max_connections=2, handshake_timeout=10) as server:
        idle = [HostilePeer(server.address, psk, first=b"") for _ in range(6)]
        try:
            assert all(p.admission == 0 for p in idle)
            with sync.Client(*server.address, password=PASSWORD, open_timeout=5) as c:
                conn = accepted(server)
                c.send(b"through")
                assert conn.recv(timeout=5) == b"through"
        finally:
            for p in idle:
                p.close()


# ============================================================================================
# M25: an idle-connection flood from one source does not evict a client from another


FLOOD = """
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
socks, end = [], time.monotonic() + seconds
while time.monotonic() < end:
    s = socket.socket()
    s.setblocking(False)
    s.bind(("127.0.0.2", 0))
    try:
        s.connect((host, port))
    except BlockingIOError:
        pass
    except OSError:
        s.close()
        continue
    socks.append(s)
    if len(socks) > 2000:
        socks.pop(0).close()
"""


def test_idle_flood_from_one_source_does_not_evict_a_fresh_client() -> None:
    """A flood of idle connections from 127.0.0.2 (another process, as fast as it can open
    them) at and beyond the pending cap, while a first-time client (its own server key, so a
    cold cache: it runs Argon2 between the parameters and message 1) connects from 127.0.0.1,
    then more clients: every one gets in."""
    password = "a password only this test uses"
    phc = argonlink.hash_password(password, KDF)
    with sync.Server(password_hash=phc, max_pending_handshakes=32, handshake_timeout=10) as srv:
        flood = subprocess.Popen([sys.executable, "-c", FLOOD, *map(str, srv.address), "20"])
        try:
            deadline = time.monotonic() + 5
            while srv.stats()["handshakes_evicted"] < 100 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert srv.stats()["handshakes_evicted"] >= 100
            for _ in range(5):
                with sync.Client(*srv.address, password=password, open_timeout=10) as c:
                    conn = accepted(srv)
                    c.send(b"in")
                    assert conn.recv(timeout=5) == b"in"
        finally:
            flood.kill()
            flood.wait()


# ============================================================================================
# Sessions alive on a server are bounded (PROTOCOL.md §4.6)


def test_sessions_beyond_max_sessions_are_refused_as_busy(phc: str, psk: bytes) -> None:
    with sync.Server(password_hash=phc, max_sessions=2) as server:
        kept = []
        for _ in range(2):
            peer = HostilePeer(server.address, psk, first=confirm(os.urandom(16)))
            frame = peer.recv_frame()
            assert frame is not None and frame.type == RESUME and frame.body[0] == 0
            kept.append(peer)
        try:
            with HostilePeer(server.address, psk, first=confirm(os.urandom(16))) as third:
                expect_close(third, 1013)
        finally:
            for p in kept:
                p.close()


def test_pending_per_source_is_configurable(phc: str) -> None:
    with sync.Server(password_hash=phc, max_pending_per_source=3, handshake_timeout=10) as srv:
        idle = [socket.create_connection(srv.address) for _ in range(10)]
        try:
            deadline = time.monotonic() + 5
            while srv.stats()["handshakes_evicted"] < 7 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert srv.stats()["handshakes_evicted"] == 7
            assert srv.stats()["pending_handshakes"] == 3
        finally:
            for s in idle:
                s.close()
    with pytest.raises(argonlink.ConfigError):
        sync.Server(password_hash=phc, max_pending_per_source=0)
