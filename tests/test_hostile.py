"""The reference peer (``refpeer.py``) against the real library, in both roles: each test names
the requirement of docs/PROTOCOL.md it checks (M-numbers) and asserts the exact outcome: the
close code on the wire, what the application saw, and, where memory is the point, the server's
RSS growth (the server then runs in its own process, ``hostile_server.py``) against the bytes
the attacker sent and against a control run of honest traffic. No test asserts a duration:
deadlines only bound how long a test may wait for an outcome.
Its servers run without throttling of failed handshakes (``throttle=False``): the reference
peer fails handshakes on purpose, many times over.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import argonlink
import pytest
from argonlink import sync
from noise_model import prs_from_phc
from proxy import C2S_HELLO, C2S_MSG1, Direction, Proxy
from refpeer import (
    CHANNEL_WINDOW,
    CLOSE,
    CONFIRM,
    DATA,
    FIRST_FRAGMENT,
    MAX_CHUNK,
    MESSAGE_CREDIT,
    PING,
    PONG,
    REKEY_FRAME,
    RESUME,
    Bugs,
    Frame,
    RefClient,
    RefServer,
    ServerSide,
    ack,
    blocked,
    ch_data,
    close,
    confirm,
    data,
    expect_close,
    fin,
    fragments,
    open_channel,
    ping,
    pong,
    reset,
    resume,
    window,
)

PASSWORD = "hostile peer test password"
KDF = argonlink.KdfParams.OWASP
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def phc() -> str:
    return argonlink.hash_password(PASSWORD, KDF)


@pytest.fixture(scope="module")
def prs(phc: str) -> bytes:
    return prs_from_phc(phc)


@pytest.fixture
def srv(phc: str) -> Iterator[sync.Server]:
    with sync.Server(
        throttle=False, password_hash=phc, handshake_timeout=5, close_timeout=1
    ) as server:
        yield server


def accepted(server: sync.Server) -> sync.Connection:
    return server.accept(timeout=5)


def assert_app_sees_error(conn: sync.Connection, code: int = 1002) -> None:
    """The application learns the connection failed, with the code, never a clean close and
    never a message."""
    with pytest.raises(argonlink.ConnectionClosedError) as exc:
        conn.recv(timeout=5)
    assert exc.value.code == code, exc.value


def assert_not_accepted(server: sync.Server) -> None:
    with pytest.raises(argonlink.Timeout):
        server.accept(timeout=0.3)


# ============================================================================================
# The reference peer itself: honest use interoperates (the positive controls)


def test_reference_client_interoperates(srv: sync.Server, prs: bytes) -> None:
    with RefClient(srv.address, prs) as peer:
        assert peer.admission == 0
        conn = accepted(srv)
        long = os.urandom(3 * MAX_CHUNK)
        peer.send_message(b"short")
        peer.send_message(long)
        assert conn.recv(timeout=5) == b"short"
        assert conn.recv(timeout=5) == long
        conn.send(b"back")
        frame = peer.recv_frame()
        assert frame is not None and frame.message() == (0, None, b"back")
        peer.send(ping(7))
        frame = peer.recv_frame()
        assert frame is not None and frame.type == PONG and frame.value == 7
        # Rekey our direction, then a message under the new key.
        peer.rekey()
        peer.send_message(b"after rekey")
        assert conn.recv(timeout=5) == b"after rekey"
        peer.send(close(1000))
        assert expect_close(peer, 1000)
        with pytest.raises(argonlink.ConnectionClosedOK):
            conn.recv(timeout=5)


def test_reference_server_interoperates() -> None:
    """The server role: params we chose, PRS from Argon2id(password, our salt and costs), CPace
    and Noise on top; the identity the client named (none) reaches the reference server."""
    with RefServer(PASSWORD) as ref:
        got: dict[str, object] = {}

        def serve() -> None:
            side = ref.accept()
            got["confirm"] = side.confirm
            got["hello"] = (side.client_identity, side.client_node_id)
            side.send(data(b"from the reference server"))
            got["frame"] = side.recv_frame()
            side.send(close(1000))
            got["rest"] = side.frames_until_closed()

        thread = threading.Thread(target=serve)
        thread.start()
        with sync.Client(*ref.address, password=PASSWORD, open_timeout=5) as client:
            assert client.recv(timeout=5) == b"from the reference server"
            client.send(b"to it")
            thread.join(10)
            with pytest.raises(argonlink.ConnectionClosedOK):
                client.recv(timeout=5)
        assert got["hello"] == (b"", client.node_id)
        assert got["confirm"] == Frame(CONFIRM, b"")
        assert got["frame"] == Frame(DATA, b"\x00to it")
        assert got["rest"] == [Frame(CLOSE, b"\x03\xe8")]


# ============================================================================================
# M14, M15: every fragment but the last is full; no control frame inside a message


def test_one_byte_fragments_one_segment_each_are_refused(srv: sync.Server, prs: bytes) -> None:
    """A 70 000-byte message as 1-byte DATA fragments, each its own TCP segment: the server
    answers CLOSE 1002 and delivers nothing of it."""
    bugs = Bugs(first_fragment=1, middle_fragment=1, one_segment_per_frame=True)
    with RefClient(srv.address, prs, bugs=bugs) as peer:
        conn = accepted(srv)
        # The server may close while we are still sending: that is the point.
        with contextlib.suppress(OSError):
            peer.send_message(os.urandom(70_000))
        expect_close(peer, 1002)
        assert_app_sees_error(conn)


A, B, C = b"a" * FIRST_FRAGMENT, b"b" * MAX_CHUNK, b"c"

# Each sequence ends with the frame that breaks the rule: a frame sent after it could meet a
# closed socket, whose reset may destroy the CLOSE on its way back.
MALFORMED_MESSAGES: dict[str, list[bytes]] = {
    "first fragment one byte short": [data(A[:-1], more=True, total=FIRST_FRAGMENT + 10)],
    "middle fragment short": [
        data(A, more=True, total=FIRST_FRAGMENT + 2 * MAX_CHUNK),
        data(B[:-1], more=True),
    ],
    "tiny first fragment": [data(b"x", more=True, total=1_000_000)],
    "fragments overrun the total": [data(A, more=True, total=FIRST_FRAGMENT + 10), data(C * 20)],
    "last fragment ends before the total": [
        data(A, more=True, total=FIRST_FRAGMENT + 100),
        data(C * 10),
    ],
    "a middle fragment overruns the total": [
        data(A, more=True, total=FIRST_FRAGMENT + 10),
        data(B, more=True),
    ],
    "a first fragment inside a message": [
        data(A, more=True, total=FIRST_FRAGMENT + MAX_CHUNK + 1),
        data(A, more=True, total=FIRST_FRAGMENT + 1),
    ],
    "a continuation with no message begun": [data(B, more=True)],
    "LENGTH without MORE": [data(C, flags=0x02, total=1)],
    "unknown DATA flag bit": [data(C, flags=0x04)],
    "PING between fragments": [data(A, more=True, total=FIRST_FRAGMENT + 1), ping(1)],
    "a message that fits one frame, fragmented": [
        data(A, more=True, total=FIRST_FRAGMENT + 1),
        data(C),
    ],
}


@pytest.mark.parametrize("case", sorted(MALFORMED_MESSAGES))
def test_malformed_fragments_are_refused_with_1002(srv: sync.Server, prs: bytes, case: str) -> None:
    with RefClient(srv.address, prs) as peer:
        conn = accepted(srv)
        peer.send(*MALFORMED_MESSAGES[case])
        expect_close(peer, 1002)
        assert_app_sees_error(conn)


def test_full_fragments_and_rekey_between_them_are_delivered(srv: sync.Server, prs: bytes) -> None:
    """The control: a message cut as M14 says arrives whole, also with a REKEY between two of
    its fragments (M15's one exception)."""
    message = os.urandom(FIRST_FRAGMENT + MAX_CHUNK + 3)
    first, middle, last = fragments(message)
    assert len(first) == 65519 and len(middle) == 65519 and len(last) == 2 + 3
    with RefClient(srv.address, prs) as peer:
        conn = accepted(srv)
        peer.send(first, middle)
        peer.rekey()
        peer.send(last)
        assert conn.recv(timeout=5) == message


# ============================================================================================
# Memory: the server in its own process, RSS against the attacker's bytes and a control run


class ServerProcess:
    def __init__(self, phc: str, **options: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "hostile_server.py"), "serve", phc, json.dumps(options)],
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

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


RECV_BUFFER = 1 << 20


def _send_until_stalled(peer: RefClient, records: Iterator[bytes]) -> int:
    """Write records, each its own write, until the server stops reading (a write makes no
    progress for a while) or they run out; returns the wire bytes sent. Never cuts a record."""
    sent = 0
    peer.sock.setblocking(False)
    for record in records:
        view = memoryview(record)
        while view:
            _, writable, _ = select.select([], [peer.sock], [], 1.0)
            if not writable:
                return sent + len(record) - len(view)
            try:
                n = peer.sock.send(view)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return sent + len(record) - len(view)
            view = view[n:]
        sent += len(record)
    return sent


def _grow(phc: str, prs: bytes, messages: list[bytes]) -> tuple[int, int, list[Frame]]:
    """(server RSS growth, wire bytes, the server's frames) for these single-frame messages,
    one TCP segment each, sent to a server whose application never reads."""
    with ServerProcess(phc, recv_buffer=RECV_BUFFER) as server:
        before = server.settled_rss()
        with RefClient(server.address, prs) as peer:
            sent = _send_until_stalled(peer, (peer.send_cipher.seal(data(m)) for m in messages))
            growth = server.settled_rss() - before
            frames = peer.frames_until_closed()
    return growth, sent, frames


@pytest.mark.slow
def test_tiny_messages_past_the_window_are_cut_off(phc: str, prs: bytes) -> None:
    """1-byte messages that the application never reads, sent past the default channel's
    window (recv_buffer; each message counts its length + 64): the server takes exactly what
    the window allows, ends the connection with CLOSE 1002 at the frame that overruns it, and
    held a small multiple of recv_buffer meanwhile. (When each message kept a slice of the read
    buffer alive: ~100x the attacker's bytes; before windows, the reader stopped at the
    bound.)"""
    tiny, tiny_sent, frames = _grow(phc, prs, [b"x"] * 150_000)
    print(
        f"RSS growth: 1-byte messages {tiny >> 10} KiB for {tiny_sent >> 10} KiB on the wire "
        f"({tiny / tiny_sent:.1f}x); recv_buffer {RECV_BUFFER >> 10} KiB"
    )
    record = 2 + 1 + 1 + 1 + 16  # prefix, type, flags, the byte, tag
    taken = RECV_BUFFER // (1 + 64)
    assert taken * record <= tiny_sent <= (taken + 4096) * record, tiny_sent
    assert any(f.type == CLOSE and f.close_code == 1002 for f in frames), frames[-3:]
    assert tiny <= 6 * RECV_BUFFER, (tiny, tiny_sent)


def _pump(
    sock: socket.socket, make: Callable[[], bytes], seconds: float, done: Callable[[], bool]
) -> int:
    """Keep writing what ``make`` returns for ``seconds`` or until ``done()``, whole records
    only, as fast as the socket takes them; returns the bytes written. Stops early when the
    connection fails."""
    sock.setblocking(False)
    pending = memoryview(b"")
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done():
        if not pending:
            pending = memoryview(make())
        _, writable, _ = select.select([], [sock], [], 0.05)
        if not writable:
            continue
        try:
            n = sock.send(pending)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            break
        pending = pending[n:]
        sent += n
    sock.setblocking(True)
    return sent


@pytest.mark.slow
def test_ping_flood_from_a_peer_that_never_reads_holds_one_pong(phc: str, prs: bytes) -> None:
    """M24: PINGs from a peer that does not read: the server's memory stays flat (one PONG
    queued, not one per PING), and when the peer reads, the last PONG echoes the last PING."""
    pings = 400_000
    with ServerProcess(phc) as server:
        with RefClient(server.address, prs, rcvbuf=4096) as peer:
            before = server.settled_rss()
            peer.sock.settimeout(10)
            sent = peer.flood(ping, pings)
            growth = server.settled_rss() - before
            print(f"RSS growth after {pings} PINGs ({sent >> 20} MiB): {growth >> 10} KiB")
            # One queued PONG per PING was ~35 bytes each: 14 MiB here.
            assert growth < max(sent // 10, 1 << 20), (growth, sent)
            last = None
            for frame in peer.frames_for(2):
                assert frame.type == PONG, frame
                last = frame.value
            assert last == pings - 1


@pytest.mark.parametrize("kind", ["PONG", "ACK", "REKEY"])
@pytest.mark.slow
def test_control_frame_floods_do_not_grow_memory(phc: str, prs: bytes, kind: str) -> None:
    """Unsolicited PONGs, ACK(0) on a session, REKEY after REKEY: nothing to hold; the server's
    RSS grows by a small fraction of what the peer sent."""
    count = 150_000 if kind == "REKEY" else 400_000
    with ServerProcess(phc) as server:
        first = confirm(os.urandom(16)) if kind == "ACK" else None
        with RefClient(server.address, prs, first=first, rcvbuf=4096) as peer:
            if kind == "ACK":
                frame = peer.recv_frame()
                assert frame is not None and frame.resume_fields[0] == 0, frame
            before = server.settled_rss()
            peer.sock.settimeout(10)
            if kind == "REKEY":
                sent = peer.sent_bytes
                for _ in range(0, count, 1000):
                    records = []
                    for _ in range(1000):
                        records.append(peer.send_cipher.seal(REKEY_FRAME))
                        peer.send_cipher.rekey()
                    peer.send_raw(b"".join(records))
                sent = peer.sent_bytes - sent
            elif kind == "PONG":
                sent = peer.flood(pong, count)
            else:
                sent = peer.flood(ack(0), count)
            peer.send(ping(1))
            frames = peer.frames_for(3)
            growth = server.settled_rss() - before
            print(f"RSS growth after {count} {kind}s ({sent >> 20} MiB): {growth >> 10} KiB")
            # The connection is alive and answers the PING that followed the flood.
            assert Frame(PONG, (1).to_bytes(8, "big")) in frames, frames[-3:]
            assert growth < max(sent // 10, 1 << 20), (growth, sent)


# ============================================================================================
# M22: session windows below the minimum (1024 bytes)


@pytest.mark.parametrize("window", [0, 1, 1023])
def test_session_request_with_a_tiny_window_is_refused(
    srv: sync.Server, prs: bytes, window: int
) -> None:
    sid = os.urandom(16)
    with RefClient(srv.address, prs, first=confirm(sid, window=window)) as peer:
        frames = expect_close(peer, 1002)
        assert all(f.type != RESUME for f in frames), frames
    assert_not_accepted(srv)
    # The session was not created: the same id with a good window is a new session.
    with RefClient(srv.address, prs, first=confirm(sid, window=1024)) as peer:
        frame = peer.recv_frame()
        assert frame is not None and frame.resume_fields[0] == 0, frame
        accepted(srv)


_CLIENT_SCRIPT = """
import json, sys
import argonlink
from argonlink import sync
host, port, password = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {"connect": None, "sent": 0, "send_error": None}
try:
    client = sync.Client(host, port, password=password, exactly_once=True, open_timeout=3,
                         max_unacked=1 << 20,
                         reconnect=argonlink.ReconnectPolicy(initial_delay=0.05, max_delay=0.2))
    client.connect()
except Exception as exc:
    out["connect"] = [type(exc).__name__, getattr(exc, "code", None)]
else:
    try:
        for _ in range(5000):
            client.send(b"x" * 1000, timeout=0.5)
            out["sent"] += 1
    except Exception as exc:
        out["send_error"] = [type(exc).__name__, getattr(exc, "code", None)]
print(json.dumps(out), flush=True)
import os
os._exit(0)
"""


HOSTILE_RESUMES = {
    "window 0": resume(0, 0, 0),
    "window 1023": resume(0, 0, 1023),
    "resumed, for a new session": resume(1, 0),
    "unknown status 3": resume(3, 0),
    "next_expected above what the client sent": resume(0, 5),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_RESUMES))
def test_a_hostile_resume_fails_the_client(case: str) -> None:
    """A hostile server answers every session request with this RESUME: a real
    Client(exactly_once=True) must fail with a protocol error, neither keep every message it is
    given (a window of 0 made each message cost nothing against max_unacked) nor redial for
    ever. Each connection it made ends with its CLOSE 1002."""
    answer = HOSTILE_RESUMES[case]
    with RefServer(PASSWORD) as ref:
        answers: list[list[Frame]] = []
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    side = ref.accept(timeout=0.5)
                except OSError:
                    continue
                with side:
                    assert side.confirm is not None and side.confirm.session_request
                    side.send(answer)
                    answers.append(side.frames_for(2))

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _CLIENT_SCRIPT, *map(str, ref.address), PASSWORD],
                capture_output=True,
                text=True,
                timeout=8,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                check=False,
            )
        except subprocess.TimeoutExpired:
            proc = None
        finally:
            stop.set()
            thread.join(10)
    assert proc is not None, f"the client neither failed nor returned ({len(answers)} dials)"
    out = json.loads(proc.stdout)
    print(out, f"{len(answers)} dials")
    assert out["sent"] == 0, out
    error = out["connect"] or out["send_error"]
    assert error in (["ProtocolError", None], ["ConnectionClosedError", 1002]), out
    assert answers and all(
        a and a[-1].type == CLOSE and a[-1].close_code == 1002 for a in answers
    ), answers


# ============================================================================================
# M23: a resume naming numbers the session cannot continue from


def _new_session(srv: sync.Server, prs: bytes, sid: bytes) -> tuple[RefClient, sync.Connection]:
    peer = RefClient(srv.address, prs, first=confirm(sid))
    frame = peer.recv_frame()
    assert frame is not None and frame.resume_fields[0] == 0, frame
    return peer, accepted(srv)


def test_resume_above_what_was_sent_is_refused_and_the_session_survives(
    srv: sync.Server, prs: bytes
) -> None:
    sid = os.urandom(16)
    first, session = _new_session(srv, prs, sid)
    with first:
        session.send(b"one")
        frame = first.recv_frame()
        assert frame is not None and frame.message()[2] == b"one"  # message 0
    # The server sent one message: resuming at 5 names messages it never sent.
    for bad_next in (2, 5, (1 << 64) - 1):
        with RefClient(
            srv.address, prs, first=confirm(sid, resume=True, next_expected=bad_next)
        ) as bad:
            frames = expect_close(bad, 1002)
            assert all(f.type != RESUME for f in frames), frames
    # The session is as it was: its real client resumes at 1 and the session carries on.
    with RefClient(srv.address, prs, first=confirm(sid, resume=True, next_expected=1)) as ok:
        frame = ok.recv_frame()
        assert frame is not None and frame.resume_fields[:2] == (1, 0), frame
        session.send(b"two")
        frame = ok.recv_frame()
        assert frame is not None and frame.message()[2] == b"two", frame


def test_resume_below_what_was_acknowledged_is_refused(srv: sync.Server, prs: bytes) -> None:
    sid = os.urandom(16)
    first, session = _new_session(srv, prs, sid)
    with first:
        for m in (b"m0", b"m1", b"m2"):
            session.send(m)
        assert [f.message()[2] for f in (first.recv_frame() for _ in range(3)) if f] == [
            b"m0",
            b"m1",
            b"m2",
        ]
        first.send(ack(2))  # the server may forget m0 and m1
        time.sleep(0.3)
    # Asking for m0 again: the server no longer has it.
    with RefClient(srv.address, prs, first=confirm(sid, resume=True, next_expected=0)) as bad:
        frames = expect_close(bad, 1002)
        assert all(f.type != RESUME for f in frames), frames
    with RefClient(srv.address, prs, first=confirm(sid, resume=True, next_expected=2)) as ok:
        frame = ok.recv_frame()
        assert frame is not None and frame.resume_fields[0] == 1, frame
        frame = ok.recv_frame()
        assert frame is not None and frame.message()[2] == b"m2", frame


def test_impossible_acks_are_refused(srv: sync.Server, prs: bytes) -> None:
    """ACK of messages never sent (on a session) is a protocol error, like ACK without one."""
    first, session = _new_session(srv, prs, os.urandom(16))
    with first:
        session.send(b"only")
        first.send(ack(5))
        expect_close(first, 1002)


# ============================================================================================
# M19, M20: close codes, and CLOSE before FIN on a protocol error


@pytest.mark.parametrize("code", [0, 999, 1003, 1005, 1006, 1015, 2000, 2999, 4000, 4099, 5000])
def test_reserved_close_codes_are_a_protocol_error(srv: sync.Server, prs: bytes, code: int) -> None:
    with RefClient(srv.address, prs) as peer:
        conn = accepted(srv)
        peer.send(close(code, b"not really"))
        expect_close(peer, 1002)
        assert_app_sees_error(conn)


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1009, 1013, 3000, 3999, 4001, 4002, 4003, 4100, 4999]
)
def test_valid_close_codes_reach_the_application(srv: sync.Server, prs: bytes, code: int) -> None:
    """The control: a valid code is echoed and reported with that code."""
    with RefClient(srv.address, prs) as peer:
        conn = accepted(srv)
        peer.send(close(code, b"why"))
        frames = peer.frames_until_closed()
        assert frames and frames[-1].type == CLOSE and frames[-1].close_code == code, frames
        with pytest.raises(argonlink.ConnectionClosed) as exc:
            conn.recv(timeout=5)
        assert exc.value.code == code


def test_close_flood_is_answered_once(srv: sync.Server, prs: bytes) -> None:
    """A thousand CLOSEs in one write: the server answers one CLOSE (the same code) and ends;
    the application sees one clean close."""
    with RefClient(srv.address, prs) as peer:
        conn = accepted(srv)
        peer.send(*[close(1000, b"again")] * 1000)
        frames = peer.frames_until_closed()
        assert [f.close_code for f in frames] == [1000], frames
        with pytest.raises(argonlink.ConnectionClosedOK):
            conn.recv(timeout=5)


PROTOCOL_ERRORS: dict[str, bytes] = {
    "unknown type 0x7f": bytes([0x7F]),
    "type 0": bytes([0x00]),
    "PING of the wrong size": bytes([PING, 1, 2, 3]),
    "PONG of the wrong size": bytes([PONG]) + bytes(9),
    "ACK outside a session": ack(1),
    "CONFIRM again": confirm(),
    "a session request after the first frame": confirm(os.urandom(16)),
    "RESUME from the client": resume(0),
    "REKEY with a body": REKEY_FRAME + b"\x00",
    "CLOSE without a code": bytes([CLOSE, 3]),
    "CLOSE reason not UTF-8": close(1000, b"\xff\xfe"),
    "CLOSE reason of 124 bytes": close(1000, b"r" * 124),
    "empty plaintext": b"",
    # Channels (§4.7, M31, M32): frames naming what does not exist, or may not be named.
    "CH_DATA on a channel never opened": ch_data(1, b"x"),
    "OPEN with the server's parity": open_channel(2),
    "OPEN of channel 0": open_channel(0),
    "FIN of the default channel": fin(0),
    "RESET of a channel never opened": reset(5),
    "RESET with a reserved code": reset(1, 7),
    "WINDOW for a channel never opened": window(3, 1 << 20),
    "BLOCKED for a channel never opened": blocked(3, 1),
    "a channel name that is not UTF-8": open_channel(1, b"\xff"),
}


@pytest.mark.parametrize("case", sorted(PROTOCOL_ERRORS))
def test_protocol_errors_send_close_1002_before_fin(
    srv: sync.Server, prs: bytes, case: str
) -> None:
    with RefClient(srv.address, prs) as peer:
        conn = accepted(srv)
        peer.send(PROTOCOL_ERRORS[case])
        expect_close(peer, 1002)
        assert_app_sees_error(conn)


def _full_messages(channel: int, credit: int) -> list[bytes]:
    """Single-frame CH_DATA messages of the largest size, enough to use ``credit`` and pass it
    by one message."""
    chunk = b"w" * (MAX_CHUNK - 4)
    count = credit // (len(chunk) + MESSAGE_CREDIT) + 1
    return [ch_data(channel, chunk)] * count


def test_a_channel_past_its_window_gets_1002(srv: sync.Server, prs: bytes) -> None:
    """M30: a peer that sends past a channel's credit (its initial window: no WINDOW came) is
    cut off at the frame that goes past, with CLOSE 1002; everything before was delivered."""
    with RefClient(srv.address, prs) as peer:
        conn = accepted(srv)
        peer.send(open_channel(1, b"greedy"))
        messages = _full_messages(1, CHANNEL_WINDOW)
        peer.send_each(messages)
        expect_close(peer, 1002)
        ch = conn.accept_channel(timeout=5)
        got = 0
        with pytest.raises(argonlink.ConnectionClosedError) as info:
            while True:
                ch.recv(timeout=5)
                got += 1
        assert got == len(messages) - 1, got
        assert "beyond the window" in str(info.value)


def test_data_after_a_channels_fin_gets_1002(srv: sync.Server, prs: bytes) -> None:
    with RefClient(srv.address, prs) as peer:
        conn = accepted(srv)
        peer.send(open_channel(1), ch_data(1, b"last"), fin(1), ch_data(1, b"one more"))
        expect_close(peer, 1002)
        ch = conn.accept_channel(timeout=5)
        assert ch.recv(timeout=5) == b"last"
        with pytest.raises(argonlink.ChannelFinished):  # it had ended cleanly, then the rest
            ch.recv(timeout=5)
        with pytest.raises(argonlink.ConnectionClosedError):
            conn.recv(timeout=5)


def test_a_fin_in_the_middle_of_a_message_gets_1002(srv: sync.Server, prs: bytes) -> None:
    first = ch_data(1, b"x" * (MAX_CHUNK - 12), more=True, total=200_000)
    with RefClient(srv.address, prs) as peer:
        accepted(srv)
        peer.send(open_channel(1), first, fin(1))
        expect_close(peer, 1002)


def test_channels_interleave_between_fragments(srv: sync.Server, prs: bytes) -> None:
    """M15: another channel's message, a PING and the default channel's message between the
    fragments of a long message on channel 1: all delivered, in each channel's order."""
    chunk = MAX_CHUNK - 4
    total = (chunk - 8) + chunk + 10
    parts = [
        ch_data(1, b"a" * (chunk - 8), more=True, total=total),
        ch_data(1, b"b" * chunk, more=True),
        ch_data(1, b"c" * 10),
    ]
    with RefClient(srv.address, prs) as peer:
        conn = accepted(srv)
        peer.send(open_channel(1), open_channel(3))
        peer.send(parts[0], ch_data(3, b"short"), ping(7), data(b"plain"), parts[1], parts[2])
        ch1, ch3 = conn.accept_channel(timeout=5), conn.accept_channel(timeout=5)
        assert ch3.recv(timeout=5) == b"short"
        assert conn.recv(timeout=5) == b"plain"
        assert ch1.recv(timeout=5) == b"a" * (chunk - 8) + b"b" * chunk + b"c" * 10
        frames = peer.frames_for(0.5)
        assert any(f.type == PONG and f.value == 7 for f in frames), frames


@pytest.mark.slow
def test_a_channel_open_flood_holds_its_windows_and_no_more(phc: str, prs: bytes) -> None:
    """M31 and §4.6: a peer opens as many channels as the server allows (16 here), fills each
    window while the application reads none, then opens one more: CLOSE 1002 at that OPEN, and
    the server held about the windows' bytes meanwhile."""
    limit = 16
    with ServerProcess(phc, max_channels=limit, throttle=False) as server:
        before = server.settled_rss()
        with RefClient(server.address, prs) as peer:
            for i in range(limit):
                channel = 2 * i + 1
                peer.send(open_channel(channel))
                peer.send_each(_full_messages(channel, CHANNEL_WINDOW)[:-1])
            growth = server.settled_rss() - before
            peer.send(open_channel(2 * limit + 1))
            frames = peer.frames_until_closed()
        print(f"RSS growth with {limit} full channels: {growth >> 10} KiB")
        assert frames and frames[-1].type == CLOSE and frames[-1].close_code == 1002
        windows = limit * CHANNEL_WINDOW
        assert growth <= 3 * windows, (growth, windows)


def test_a_tag_failure_gets_nothing_back(srv: sync.Server, prs: bytes) -> None:
    with RefClient(srv.address, prs) as peer:
        conn = accepted(srv)
        peer.send_tampered(data(b"x"))
        assert peer.raw_until_closed() == b""
        with pytest.raises(argonlink.ConnectionClosedError):
            conn.recv(timeout=5)


def test_a_record_shorter_than_a_tag_gets_nothing_back(srv: sync.Server, prs: bytes) -> None:
    with RefClient(srv.address, prs) as peer:
        accepted(srv)
        peer.send_raw(b"\x00\x05" + bytes(5))
        # Nothing, or a CLOSE 1002 (the channel was not shown to be broken), then the end.
        frames = peer.frames_until_closed()
        assert frames in ([], [frames[0]]) and all(f.type == CLOSE for f in frames), frames
        assert all(f.close_code == 1002 for f in frames), frames


def test_rekey_as_the_first_frame_is_refused(srv: sync.Server, prs: bytes) -> None:
    """REKEY before CONFIRM: a protocol error answered with CLOSE 1002 (M8); a CONFIRM and a
    message under the new key that follow are not delivered, the connection never accepted."""
    with RefClient(srv.address, prs, first=b"") as peer:
        peer.rekey()
        with contextlib.suppress(OSError):
            peer.send(confirm(), data(b"smuggled"))
        expect_close(peer, 1002)
    assert_not_accepted(srv)


def test_data_as_the_first_frame_is_refused(srv: sync.Server, prs: bytes) -> None:
    with RefClient(srv.address, prs, first=data(b"before confirm")) as peer:
        expect_close(peer, 1002)
    assert_not_accepted(srv)


@pytest.mark.parametrize("total", [100_001, 10_000_000, (1 << 64) - 1])
def test_a_total_over_the_limit_gets_1009(phc: str, prs: bytes, total: int) -> None:
    with sync.Server(throttle=False, password_hash=phc, max_message_size=100_000) as server:
        with RefClient(server.address, prs) as peer:
            conn = accepted(server)
            peer.send(data(b"a" * FIRST_FRAGMENT, more=True, total=total))
            expect_close(peer, 1009)
            assert_app_sees_error(conn, 1009)


def test_a_single_frame_over_the_limit_gets_1009(phc: str, prs: bytes) -> None:
    with sync.Server(throttle=False, password_hash=phc, max_message_size=1000) as server:
        with RefClient(server.address, prs) as peer:
            conn = accepted(server)
            peer.send(data(b"a" * 1001))
            expect_close(peer, 1009)
            assert_app_sees_error(conn, 1009)


def test_huge_totals_reserve_nothing(phc: str, prs: bytes) -> None:
    """Many connections each announcing a 16 MiB message (the default limit) with one full
    fragment: the server holds what arrived, not what was announced."""
    with ServerProcess(phc) as server:
        before = server.settled_rss()
        peers = [RefClient(server.address, prs) for _ in range(20)]
        try:
            for peer in peers:
                peer.send(data(b"a" * FIRST_FRAGMENT, more=True, total=16 << 20))
            growth = server.settled_rss() - before
            print(f"RSS growth for 20 announced 16 MiB messages: {growth >> 10} KiB")
            assert growth < 64 << 20, growth  # 20 x 16 MiB reserved would be 320 MiB
        finally:
            for peer in peers:
                peer.close()


def test_application_cannot_close_with_a_reserved_code(srv: sync.Server, prs: bytes) -> None:
    with RefClient(srv.address, prs) as peer:
        conn = accepted(srv)
        with pytest.raises(ValueError):
            conn.close(code=1006)
        conn.close(code=4100, reason="app")
        frames = peer.frames_until_closed()
        assert frames[-1].type == CLOSE and frames[-1].close_code == 4100


# ============================================================================================
# The same attacks against a real Client (the reference peer as the server)


def _against_client(attack: Callable[[ServerSide], None]) -> tuple[list[Frame], BaseException]:
    """Run ``attack`` on the reference server's side of a real Client's connection; returns the
    frames the client sent afterwards and what the client's application saw."""
    with RefServer(PASSWORD) as ref:
        out: list[list[Frame]] = []

        def serve() -> None:
            with ref.accept() as side:
                attack(side)
                out.append(side.frames_until_closed())

        thread = threading.Thread(target=serve)
        thread.start()
        with sync.Client(*ref.address, password=PASSWORD, open_timeout=5, close_timeout=1) as c:
            with pytest.raises(argonlink.ConnectionClosed) as exc:
                c.recv(timeout=5)
            thread.join(10)
    assert out, "the reference server saw no end"
    return out[0], exc.value


@pytest.mark.parametrize("code", [0, 1005, 1006, 2000])
def test_client_treats_a_reserved_close_code_as_a_protocol_error(code: int) -> None:
    frames, error = _against_client(lambda side: side.send(close(code)))
    assert isinstance(error, argonlink.ConnectionClosedError) and error.code == 1002, error
    assert frames and frames[-1].type == CLOSE and frames[-1].close_code == 1002, frames


def test_client_refuses_tiny_fragments() -> None:
    def attack(side: ServerSide) -> None:
        side.send(data(b"x", more=True, total=100_000), data(b"y", more=True))

    frames, error = _against_client(attack)
    assert isinstance(error, argonlink.ConnectionClosedError) and error.code == 1002, error
    assert frames and frames[-1].type == CLOSE and frames[-1].close_code == 1002, frames


def test_client_answers_an_unknown_frame_with_1002() -> None:
    frames, error = _against_client(lambda side: side.send(bytes([0x7F])))
    assert isinstance(error, argonlink.ConnectionClosedError) and error.code == 1002, error
    assert frames and frames[-1].type == CLOSE and frames[-1].close_code == 1002, frames


def test_client_refuses_resume_on_a_connection_without_a_session() -> None:
    frames, error = _against_client(lambda side: side.send(resume(0)))
    assert isinstance(error, argonlink.ConnectionClosedError) and error.code == 1002, error
    assert frames and frames[-1].type == CLOSE and frames[-1].close_code == 1002, frames


# ============================================================================================
# M7: a replayed message 1 holds no connection slot


def _record_message1(server: sync.Server) -> tuple[bytes, bytes]:
    """A legitimate client's hello and message 1 record, as an eavesdropper records them."""
    with Proxy(server.address) as proxy:
        with sync.Client(*proxy.address, password=PASSWORD, open_timeout=5) as client:
            conn = accepted(server)
            client.send(b"hi")
            assert conn.recv(timeout=5) == b"hi"
            conn.abort()
        (pc,) = proxy.wait_for_connections(1)
        pc.wait_closed(5)
        records = pc.records(Direction.C2S)
    return records[C2S_HELLO], records[C2S_MSG1]


def test_replayed_message1_holds_no_slot(phc: str, prs: bytes) -> None:
    """A recorded hello and message 1 replayed on many connections: each is closed without a
    word after message 1 (it was made for another connection's server share, §3.4), and with
    max_connections=2 a legitimate client still connects and exchanges a message."""
    with sync.Server(
        throttle=False, password_hash=phc, max_connections=2, handshake_timeout=10
    ) as server:
        recorded = _record_message1(server)
        replays = [RefClient(server.address, prs, replay=recorded) for _ in range(6)]
        try:
            assert [r.raw_until_closed() for r in replays] == [b""] * 6
            for _ in range(2):
                with sync.Client(*server.address, password=PASSWORD, open_timeout=5) as c:
                    conn = accepted(server)
                    c.send(b"through")
                    assert conn.recv(timeout=5) == b"through"
                    conn.abort()
        finally:
            for replay in replays:
                replay.close()


def test_message1_without_confirm_holds_no_slot(phc: str, prs: bytes) -> None:
    """Connections that present a fresh valid message 1 and never confirm hold no slot."""
    with sync.Server(
        throttle=False, password_hash=phc, max_connections=2, handshake_timeout=10
    ) as server:
        idle = [RefClient(server.address, prs, first=b"") for _ in range(6)]
        try:
            assert all(p.admission == 0 for p in idle)
            with sync.Client(*server.address, password=PASSWORD, open_timeout=5) as c:
                conn = accepted(server)
                c.send(b"through")
                assert conn.recv(timeout=5) == b"through"
        finally:
            for p in idle:
                p.close()


def test_confirmed_connections_do_hold_slots(phc: str, prs: bytes) -> None:
    """The control: two confirmed connections fill max_connections=2; a third is busy."""
    with sync.Server(throttle=False, password_hash=phc, max_connections=2) as server:
        with RefClient(server.address, prs) as one, RefClient(server.address, prs) as two:
            accepted(server)
            accepted(server)
            assert one.admission == two.admission == 0
            time.sleep(0.2)
            with RefClient(server.address, prs) as three:
                if three.admission == 0:
                    # M7: the room was seen at message 1; the slot was gone at CONFIRM.
                    expect_close(three, 1013)
                else:
                    assert three.admission == 1


# ============================================================================================
# M25: an idle-connection flood from one source does not evict a client from another


_FRESH_CLIENT = """
import sys
from argonlink import sync
try:
    with sync.Client(sys.argv[1], int(sys.argv[2]), password=sys.argv[3], open_timeout=8) as c:
        c.send(b"in")
        assert c.recv(timeout=5) == b"welcome"
        print("ok", flush=True)
except Exception as exc:
    print(repr(exc), flush=True)
"""


def test_idle_flood_from_one_source_does_not_evict_clients_from_another(
    phc: str, prs: bytes
) -> None:
    """Idle connections (half of them only the hello) from 127.0.0.2, dialled without pause from
    another process, keep the server at max_pending_handshakes=32, while clients from
    127.0.0.1 sit between the parameters and message 1 (where a first-time client runs
    Argon2): each of those completes its handshake afterwards, and first-time real clients
    (each in a new process: a cold key cache) get in. The flooding source holds at most its
    per-source share (half the cap). (With oldest-first eviction the flood pushed out every
    waiting client.)"""
    with sync.Server(
        throttle=False, password_hash=phc, max_pending_handshakes=32, handshake_timeout=10
    ) as srv:
        gate = threading.Event()
        waiting: list[RefClient | BaseException] = []

        def slow_client() -> None:
            try:
                waiting.append(
                    RefClient(srv.address, prs, source="127.0.0.1", before_message1=gate.wait)
                )
            except Exception as exc:  # the server cut it: recorded for the assertion
                waiting.append(exc)

        slow = [threading.Thread(target=slow_client) for _ in range(8)]
        for thread in slow:
            thread.start()
        time.sleep(0.3)
        flood = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "hostile_server.py"),
                "idle-flood",
                *map(str, srv.address),
                "127.0.0.2",
                "200",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert flood.stdin is not None and flood.stdout is not None
        failures: list[str] = []
        pending: list[int] = []
        try:
            assert flood.stdout.readline().strip() == "ready"
            for _ in range(10):
                pending.append(srv.stats()["pending_handshakes"])
                time.sleep(0.05)
            gate.set()
            for thread in slow:
                thread.join(10)
            for w in waiting:
                if isinstance(w, RefClient) and w.admission == 0:
                    accepted(srv)
            for _ in range(2):
                # A new process each time: nothing in its key cache, a full Argon2 run.
                client = subprocess.Popen(
                    [sys.executable, "-c", _FRESH_CLIENT, *map(str, srv.address), PASSWORD],
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                )
                try:
                    conn = srv.accept(timeout=10)
                    assert conn.recv(timeout=5) == b"in"
                    conn.send(b"welcome")
                    conn.close()
                except argonlink.Error as exc:
                    failures.append(f"server: {exc!r}")
                out, _ = client.communicate(timeout=15)
                if out.strip() != "ok":
                    failures.append(f"client: {out.strip()}")
        finally:
            gate.set()
            flood.stdin.close()
            made = flood.stdout.readline().strip()
            flood.wait(10)
            for w in waiting:
                if isinstance(w, RefClient):
                    w.close()
        evicted = srv.stats()["handshakes_evicted"]
        completed = [w for w in waiting if isinstance(w, RefClient) and w.admission == 0]
        print(
            f"flood: {made} connections, {evicted} evicted, pending {pending}; "
            f"waiting clients completed {len(completed)}/8; real client failures {failures}"
        )
        assert evicted > 0
        assert len(completed) == 8, waiting
        assert failures == []
        # 8 from 127.0.0.1 (or fewer) and at most half the cap from the flooder.
        assert max(pending) <= 8 + 16, pending


# ============================================================================================
# Sessions alive on a server are bounded (PROTOCOL.md §4.6); pending handshakes per source


def test_sessions_beyond_max_sessions_are_refused_as_busy(phc: str, prs: bytes) -> None:
    with sync.Server(throttle=False, password_hash=phc, max_sessions=2) as server:
        kept = []
        for _ in range(2):
            peer = RefClient(server.address, prs, first=confirm(os.urandom(16)))
            frame = peer.recv_frame()
            assert frame is not None and frame.type == RESUME and frame.body[0] == 0
            kept.append(peer)
        try:
            with RefClient(server.address, prs, first=confirm(os.urandom(16))) as third:
                expect_close(third, 1013)
        finally:
            for p in kept:
                p.close()


def test_pending_per_source_is_configurable(phc: str) -> None:
    with sync.Server(
        throttle=False, password_hash=phc, max_pending_per_source=3, handshake_timeout=10
    ) as srv:
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
        sync.Server(throttle=False, password_hash=phc, max_pending_per_source=0)
