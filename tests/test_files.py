"""File transfer: round trips, resume after a cut, verification, unsafe names, no overwrite,
refusals in both directions, bounded memory on a 1 GiB file.

Offers with bad names are built by hand from docs/PROTOCOL.md ("File transfer"), not with the
library's encoder, so these tests also pin the wire format.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import argonlink
import argonlink.sync
import pytest
from argonlink import (
    ConnectionClosed,
    DestinationExists,
    FileReceipt,
    Timeout,
    TransferCode,
    TransferError,
    UnexpectedMessage,
    UnsafeName,
    VerificationFailed,
    _files,
)
from proxy import CloseAfter, Proxy
from support import PASSWORD

MIB = 1 << 20
CHUNK = 1 << 20  # the default chunk size
HEAD = b"ALNKFILE\x02"  # magic and version 2


def content(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating bytes (a flipped byte anywhere changes the hash)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest() * 32  # 1 KiB per step
        counter += 1
    return bytes(out[:size])


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def partials(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(".argonlink-part"))


class Recorder:
    """A progress callback that records its calls."""

    def __init__(self, check: Callable[[int, int], None] | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self._check = check

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))
        if self._check is not None:
            self._check(done, total)

    def assert_complete(self, size: int, *, total: int | None = None) -> None:
        total = size if total is None else total
        assert self.calls, "progress was never called"
        dones = [d for d, _ in self.calls]
        assert dones == sorted(dones), f"not monotone: {dones}"
        assert all(t == total for _, t in self.calls), self.calls
        assert self.calls[-1][0] == size


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        yield executor


@pytest.fixture
def link(
    sync_server: argonlink.sync.Server,
) -> Iterator[tuple[argonlink.sync.Client, argonlink.sync.Connection]]:
    """A connected blocking client and the server's end of the connection."""
    with argonlink.sync.Client(*sync_server.address, password=PASSWORD) as client:
        conn = sync_server.accept(timeout=5)
        yield client, conn
        conn.close()


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "dest"
    d.mkdir()
    return d


def offer(body: Any, *, version: int = 2) -> bytes:
    """An OFFER built from the documented wire format."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()  # \uXXXX escapes
    return b"ALNKFILE" + bytes([version, 0x01]) + raw


def file_channel(side: Any) -> argonlink.sync.Channel:
    """A channel of the kind ``send_file`` opens, to send offers built by hand on."""
    conn = side.connection if isinstance(side, argonlink.sync.Client) else side
    return argonlink.sync.Channel(conn._conn.open_channel_blocking("argonlink.file"))


async def async_file_channel(side: Any) -> argonlink.Channel:
    conn = side.connection if isinstance(side, argonlink.Client) else side
    return argonlink.Channel(await conn._conn.open_channel("argonlink.file"))


def parse_refuse(msg: bytes) -> tuple[int, str]:
    assert msg[:10] == HEAD + b"\x03", msg[:16]
    (code,) = struct.unpack(">H", msg[10:12])
    return code, msg[12:].decode()


# --------------------------------------------------------------------------------------------
# Round trips

SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * MIB + 123]


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_sync(size: int, link: Any, dest: Path, tmp_path: Path, pool: Any) -> None:
    client, conn = link
    data = content(size, seed=size)
    src = write(tmp_path / "payload.bin", data)
    final = dest / "payload.bin"

    def never_under_final_name(done: int, total: int) -> None:
        # While data arrives it is never visible under the final name.
        assert not final.exists()

    received = Recorder(never_under_final_name)
    sent = Recorder()
    fut = pool.submit(conn.recv_file, dest, progress=received, timeout=10)
    receipt = client.send_file(src, progress=sent, timeout=10)
    # send_file returned: the receiver has already verified and stored the file.
    assert final.read_bytes() == data
    got: FileReceipt = fut.result(10)
    assert receipt.sha256 == got.sha256 == sha(data)
    assert receipt.size == got.size == size
    assert got.path == final and receipt.path is None
    assert receipt.resumed_from == got.resumed_from == 0
    assert receipt.name == got.name == "payload.bin"
    assert got.elapsed >= 0 and receipt.elapsed >= 0
    sent.assert_complete(size)
    received.assert_complete(size)
    assert os.listdir(dest) == ["payload.bin"]  # no partial left behind


@pytest.mark.parametrize("size", SIZES)
async def test_round_trip_async(size: int, server: argonlink.Server, tmp_path: Path) -> None:
    data = content(size, seed=size + 1)
    src = write(tmp_path / "a.bin", data)
    dest = tmp_path / "dest"
    dest.mkdir()
    async with argonlink.Client(*server.address, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        sent, received = Recorder(), Recorder()
        receipt, got = await asyncio.gather(
            client.send_file(src, name="b.bin", progress=sent, timeout=10),
            conn.recv_file(dest, progress=received, timeout=10),
        )
    assert (dest / "b.bin").read_bytes() == data
    assert receipt.sha256 == got.sha256 == sha(data)
    assert got.path == dest / "b.bin" and got.size == size
    sent.assert_complete(size)
    received.assert_complete(size)
    assert os.listdir(dest) == ["b.bin"]


class PipeLike:
    """A stream with ``read`` only: no seek, no readinto, short reads (like a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int) -> bytes:
        n = min(n, 1000)
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out


def test_stream_of_unknown_size_into_a_directory(link: Any, dest: Path, pool: Any) -> None:
    client, conn = link
    data = content(3 * MIB + 7, seed=3)
    sent, received = Recorder(), Recorder()
    fut = pool.submit(conn.recv_file, dest, progress=received, timeout=10)
    receipt = client.send_stream(PipeLike(data), "stream.bin", progress=sent, timeout=10)
    got = fut.result(10)
    assert (dest / "stream.bin").read_bytes() == data
    assert receipt.sha256 == got.sha256 == sha(data)
    sent.assert_complete(len(data), total=-1)  # -1: the size was not known in advance
    received.assert_complete(len(data), total=-1)
    assert os.listdir(dest) == ["stream.bin"]


async def test_stream_into_a_file_object_async(server: argonlink.Server) -> None:
    data = content(2 * MIB + 1, seed=4)
    async with argonlink.Client(*server.address, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        out = io.BytesIO()
        receipt, got = await asyncio.gather(
            client.send_stream(io.BytesIO(data), "x.bin", size=len(data)),
            conn.recv_stream(out),
        )
    assert out.getvalue() == data
    assert receipt.sha256 == got.sha256 == sha(data) and got.path is None


def test_stream_shorter_than_its_announced_size_is_cancelled(
    link: Any, dest: Path, pool: Any
) -> None:
    client, conn = link
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    with pytest.raises(TransferError, match="shrank") as sender_err:
        client.send_stream(io.BytesIO(b"abc"), "short.bin", size=10, timeout=10)
    assert not sender_err.value.by_peer
    with pytest.raises(TransferError) as receiver_err:
        fut.result(10)
    assert receiver_err.value.code == TransferCode.CANCELLED and receiver_err.value.by_peer
    assert os.listdir(dest) == []  # a stream's partial file never outlives its transfer


# --------------------------------------------------------------------------------------------
# Cut mid-way, then resumed


def first_connection_cut_after(records: int) -> Callable[[int], CloseAfter | None]:
    # Records 0-2 are the handshake; each 1 MiB message is 17 frames of at most 64 KiB.
    return lambda number: CloseAfter(records) if number == 0 else None


def test_cut_transfer_leaves_a_partial_that_the_next_send_resumes(
    sync_server: argonlink.sync.Server, dest: Path, tmp_path: Path, pool: Any
) -> None:
    data = content(6 * MIB + 5, seed=5)
    src = write(tmp_path / "big.bin", data)
    final = dest / "big.bin"
    with Proxy(sync_server.address, c2s=first_connection_cut_after(3 + 1 + 17 * 3 + 5)) as proxy:
        with argonlink.sync.Client(*proxy.address, password=PASSWORD) as client:
            conn = sync_server.accept(timeout=5)
            fut = pool.submit(conn.recv_file, dest, timeout=10)
            with pytest.raises(ConnectionClosed):
                client.send_file(src, timeout=10)
            with pytest.raises(ConnectionClosed):
                fut.result(10)
        assert not final.exists()
        [part] = partials(dest)
        kept = part.stat().st_size
        assert 0 < kept < len(data)
        assert part.read_bytes() == data[:kept]  # a prefix of the file, nothing else

        with argonlink.sync.Client(*proxy.address, password=PASSWORD) as client:
            conn = sync_server.accept(timeout=5)
            fut = pool.submit(conn.recv_file, dest, timeout=10)
            sent = Recorder()
            receipt = client.send_file(src, progress=sent, timeout=10)
            got = fut.result(10)
    assert receipt.resumed_from == got.resumed_from == kept
    assert sent.calls[0] == (kept, len(data))  # progress starts where the receiver was
    assert final.read_bytes() == data
    assert got.sha256 == sha(data)
    assert os.listdir(dest) == ["big.bin"]


async def test_cancelling_an_async_receiver_keeps_the_partial_for_a_resume(
    server: argonlink.Server, tmp_path: Path
) -> None:
    data = content(8 * MIB, seed=14)
    src = write(tmp_path / "k.bin", data)
    dest = tmp_path / "dest"
    dest.mkdir()
    async with argonlink.Client(*server.address, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        halfway = asyncio.Event()

        def note(done: int, total: int) -> None:
            if done >= 3 * MIB:
                halfway.set()

        receiving = asyncio.create_task(conn.recv_file(dest, progress=note))
        sending = asyncio.create_task(client.send_file(src, timeout=10))
        await asyncio.wait_for(halfway.wait(), 10)
        receiving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiving
        # The transfer had a channel of its own: the sender learns at once, and the
        # connection carries on.
        with pytest.raises(TransferError) as err:
            await sending
        assert err.value.code == TransferCode.CANCELLED and err.value.by_peer
        assert not (dest / "k.bin").exists()
        [part] = partials(dest)
        assert 0 < part.stat().st_size < len(data)
        assert part.read_bytes() == data[: part.stat().st_size]
        receipt, got = await asyncio.gather(client.send_file(src), conn.recv_file(dest))
    assert receipt.resumed_from == got.resumed_from > 0
    assert (dest / "k.bin").read_bytes() == data
    assert os.listdir(dest) == ["k.bin"]


async def test_transfers_and_messages_move_at_once(
    server: argonlink.Server, tmp_path: Path
) -> None:
    """Each transfer has a channel of its own: two files and a stream of messages cross one
    connection at the same time, and each arrives whole."""
    dest = tmp_path / "dest"
    dest.mkdir()
    files = [write(tmp_path / f"f{i}.bin", content(6 * MIB, seed=30 + i)) for i in range(2)]
    async with argonlink.Client(*server.address, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        seen: list[int] = []  # bytes received of each file whenever a message arrives

        async def messages() -> list[bytes]:
            got = []
            for _ in range(200):
                got.append(await conn.recv(timeout=10))
                seen.append(len(partials(dest)))
            return got

        async def chatter() -> None:
            for i in range(200):
                await client.send(b"m%d" % i)
                await asyncio.sleep(0.002)

        results = await asyncio.gather(
            *(client.send_file(f, timeout=10, chunk_size=256 << 10) for f in files),
            *(conn.recv_file(dest, timeout=10) for _ in files),
            messages(),
            chatter(),
        )
    assert results[4] == [b"m%d" % i for i in range(200)]
    assert max(seen) == 2, "the two transfers were never under way at the same time"
    for f in files:
        assert (dest / f.name).read_bytes() == f.read_bytes()


def test_a_wrong_proof_empties_the_partial_and_reveals_nothing(
    link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    """A peer offering another's name and size learns nothing of the kept bytes (the ACCEPT
    carries a random challenge, not their hash), and without the PROOF of them it starts
    over: the kept bytes never end up in what it sends."""
    client, conn = link
    victim = content(2000, seed=40)
    key = _files._partial_key("v.bin", len(victim), None)
    write(dest / _files._partial_name("v.bin", key), victim[:1000])
    challenges = []
    for _ in range(2):
        fut = pool.submit(conn.recv_file, dest, timeout=10)
        channel = file_channel(client)
        channel.send(offer({"name": "v.bin", "size": len(victim), "resume": True}))
        accept = channel.recv(timeout=10)
        assert accept[:10] == HEAD + b"\x02" and struct.unpack(">Q", accept[10:18])[0] == 1000
        challenges.append(accept[18:])
        assert hashlib.sha256(victim[:1000]).digest() not in accept
        channel.reset()
        with pytest.raises(TransferError):
            fut.result(10)
    assert challenges[0] != challenges[1]  # fresh each time
    # A wrong proof: told to start at 0, and the partial is emptied.
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    channel = file_channel(client)
    channel.send(offer({"name": "v.bin", "size": len(victim), "resume": True}))
    channel.recv(timeout=10)
    channel.send(HEAD + b"\x0a" + bytes(32))  # PROOF
    verdict = channel.recv(timeout=10)
    assert verdict[:10] == HEAD + b"\x02" and struct.unpack(">Q", verdict[10:18])[0] == 0
    mine = b"m" * len(victim)
    channel.send(HEAD + b"\x04" + struct.pack(">Q", 0) + mine)
    channel.send(HEAD + b"\x05" + struct.pack(">Q", len(mine)) + hashlib.sha256(mine).digest())
    assert channel.recv(timeout=10)[:10] == HEAD + b"\x06"  # DONE
    assert fut.result(10).resumed_from == 0
    assert (dest / "v.bin").read_bytes() == mine


def test_a_sender_that_gives_up_before_its_offer_leaves_the_receiver_usable(
    link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    with pytest.raises(FileNotFoundError):
        client.send_file(tmp_path / "missing.bin", timeout=10)
    with pytest.raises(TransferError) as err:
        fut.result(10)
    assert err.value.code == TransferCode.CANCELLED and err.value.by_peer
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    client.send_file(write(tmp_path / "there.bin", b"there"), timeout=10)
    assert fut.result(10).size == 5


def test_send_file_reads_the_file_once(
    link: Any, dest: Path, tmp_path: Path, pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, conn = link
    data = content(5 * MIB + 7, seed=31)
    src = write(tmp_path / "once.bin", data)
    real, read = _files._Source._fill, [0]

    def counting(self: Any, view: memoryview) -> int:
        n: int = real(self, view)
        read[0] += n
        return n

    monkeypatch.setattr(_files._Source, "_fill", counting)
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    client.send_file(src, timeout=10)
    fut.result(10)
    assert read[0] == len(data)
    # A resumed transfer reads the kept part (to hash it) and the rest (to send it): once too.
    (dest / "once.bin").unlink()
    key = _files._partial_key("once.bin", len(data), None)
    write(dest / _files._partial_name("once.bin", key), data[: 3 * MIB])
    read[0] = 0
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    assert client.send_file(src, timeout=10).resumed_from == 3 * MIB
    fut.result(10)
    assert read[0] == len(data)
    assert (dest / "once.bin").read_bytes() == data


def test_another_file_of_the_same_name_never_resumes_from_a_partial(
    sync_server: argonlink.sync.Server, dest: Path, tmp_path: Path, pool: Any
) -> None:
    one, other = content(4 * MIB, seed=6), content(4 * MIB, seed=7)  # same name, same size
    src = tmp_path / "same.bin"
    with Proxy(sync_server.address, c2s=first_connection_cut_after(3 + 1 + 17 * 2 + 3)) as proxy:
        write(src, one)
        with argonlink.sync.Client(*proxy.address, password=PASSWORD) as client:
            conn = sync_server.accept(timeout=5)
            fut = pool.submit(conn.recv_file, dest, timeout=10)
            with pytest.raises(ConnectionClosed):
                client.send_file(src, timeout=10)
            with pytest.raises(ConnectionClosed):
                fut.result(10)
        [part_of_one] = partials(dest)
        assert part_of_one.stat().st_size > 0

        write(src, other)
        with argonlink.sync.Client(*proxy.address, password=PASSWORD) as client:
            conn = sync_server.accept(timeout=5)
            fut = pool.submit(conn.recv_file, dest, timeout=10)
            receipt = client.send_file(src, timeout=10)
            assert fut.result(10).resumed_from == receipt.resumed_from == 0
    assert (dest / "same.bin").read_bytes() == other  # none of the first file's bytes in it
    assert partials(dest) == []  # its partial was found, did not match, and was started over


def test_a_raising_progress_callback_cancels_and_the_partial_stays(
    link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    data = content(4 * MIB, seed=8)
    src = write(tmp_path / "c.bin", data)

    def stop_halfway(done: int, total: int) -> None:
        if done >= 2 * MIB:
            raise KeyError("stop")

    fut = pool.submit(conn.recv_file, dest, timeout=10)
    with pytest.raises(KeyError):
        client.send_file(src, progress=stop_halfway, timeout=10)
    with pytest.raises(TransferError) as err:
        fut.result(10)
    assert err.value.code == TransferCode.CANCELLED and err.value.by_peer
    assert "cancelled" in str(err.value)
    assert not (dest / "c.bin").exists()
    # The connection is still in step, and the next attempt resumes.
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    receipt = client.send_file(src, timeout=10)
    assert fut.result(10).resumed_from == receipt.resumed_from > 0
    assert (dest / "c.bin").read_bytes() == data


def test_a_second_receiver_of_the_same_file_waits_then_reports_busy(
    link: Any, dest: Path, tmp_path: Path, pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, conn = link
    monkeypatch.setattr(_files.steps, "_LOCK_WAIT", 0.3)
    data = content(1000, seed=9)
    src = write(tmp_path / "d.bin", data)
    key = _files._partial_key("d.bin", len(data), None)
    holder = os.open(dest / _files._partial_name("d.bin", key), os.O_RDWR | os.O_CREAT)
    try:
        assert _files._try_lock(holder)  # another transfer of this file is under way
        fut = pool.submit(conn.recv_file, dest, timeout=10)
        with pytest.raises(TransferError, match="another transfer") as err:
            client.send_file(src, timeout=10)
        assert err.value.code == TransferCode.BUSY and err.value.by_peer
        with pytest.raises(TransferError):
            fut.result(10)
    finally:
        os.close(holder)
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    client.send_file(src, timeout=10)
    assert (dest / "d.bin").read_bytes() == data


async def test_contended_offers_never_hold_up_other_work(
    server: argonlink.Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offers for a partial file that another transfer holds wait for its lock; however many
    there are, they must not take the threads that other work needs: the loop's default
    executor, and the file operations of an unrelated transfer."""
    waiters = 16  # more than the default executor has threads on a small machine
    monkeypatch.setattr(_files.steps, "_LOCK_WAIT", 20.0)  # the waiters outlast the unrelated work
    dest = tmp_path / "dest"
    dest.mkdir()
    part = dest / _files._partial_name("held.bin", _files._partial_key("held.bin", 24, None))
    holder = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
    real_try_lock, refused = _files._try_lock, [0]

    def counting_try_lock(fd: int) -> bool:
        locked = real_try_lock(fd)
        refused[0] += not locked
        return locked

    monkeypatch.setattr(_files.sink, "_try_lock", counting_try_lock)
    src = write(tmp_path / "other.bin", content(3 * MIB, seed=22))
    async with contextlib.AsyncExitStack() as stack:
        assert real_try_lock(holder)
        stack.callback(os.close, holder)
        tasks: list[asyncio.Task[FileReceipt]] = []
        held: list[argonlink.Channel] = []
        for _ in range(waiters):
            client = await stack.enter_async_context(
                argonlink.Client(*server.address, password=PASSWORD)
            )
            conn = await server.accept(timeout=10)
            tasks.append(asyncio.create_task(conn.recv_file(dest)))
            channel = await async_file_channel(client)
            held.append(channel)  # kept open while the offer waits
            await channel.send(offer({"name": "held.bin", "size": 24, "resume": True}))
        stack.push_async_callback(cancel_all, tasks)
        while refused[0] < 2 * waiters:  # they are all waiting (or, before the fix, many are)
            assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
            await asyncio.sleep(0.01)

        loop = asyncio.get_running_loop()
        other = await stack.enter_async_context(
            argonlink.Client(*server.address, password=PASSWORD)
        )
        other_conn = await server.accept(timeout=10)
        unrelated = asyncio.gather(
            loop.run_in_executor(None, lambda: "default executor ran"),
            other.send_file(src),
            other_conn.recv_file(dest),
        )
        await asyncio.wait([unrelated, *tasks], return_when=asyncio.FIRST_COMPLETED)
        assert unrelated.done(), "the unrelated work waited for the contended offers"
        ran, sent, got = unrelated.result()
        assert ran == "default executor ran" and sent.sha256 == got.sha256
        assert not any(t.done() for t in tasks)  # still waiting for the lock
    assert (dest / "other.bin").read_bytes() == src.read_bytes()


async def cancel_all(tasks: list[asyncio.Task[FileReceipt]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_contended_offer_is_refused_as_busy_after_the_wait(
    server: argonlink.Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_files.steps, "_LOCK_WAIT", 0.3)
    dest = tmp_path / "dest"
    dest.mkdir()
    data = content(100, seed=23)
    src = write(tmp_path / "b.bin", data)
    key = _files._partial_key("b.bin", len(data), None)
    holder = os.open(dest / _files._partial_name("b.bin", key), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert _files._try_lock(holder)
        async with argonlink.Client(*server.address, password=PASSWORD) as client:
            conn = await server.accept(timeout=5)
            sent, got = await asyncio.gather(
                client.send_file(src, timeout=10),
                conn.recv_file(dest, timeout=10),
                return_exceptions=True,
            )
    finally:
        os.close(holder)
    assert isinstance(sent, TransferError) and sent.code == TransferCode.BUSY and sent.by_peer
    assert isinstance(got, TransferError) and got.code == TransferCode.BUSY


# --------------------------------------------------------------------------------------------
# Verification


def test_corrupted_data_is_rejected_and_nothing_is_stored(
    link: Any, dest: Path, tmp_path: Path, pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, conn = link
    data = content(3 * MIB, seed=10)
    src = write(tmp_path / "e.bin", data)
    real = _files._Source.read_data

    def corrupting(self: Any, offset: int, chunk: int) -> bytearray | None:
        msg = real(self, offset, chunk)  # hashed as read: the sender believes it is right
        if msg is not None and offset == CHUNK:
            msg[-1] ^= 0x01
        return msg

    monkeypatch.setattr(_files._Source, "read_data", corrupting)
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    with pytest.raises(VerificationFailed) as sender_err:
        client.send_file(src, timeout=10)
    assert sender_err.value.by_peer and "SHA-256" in str(sender_err.value)
    with pytest.raises(VerificationFailed):
        fut.result(10)
    assert os.listdir(dest) == []  # no final file, and the bad partial is gone too

    monkeypatch.setattr(_files._Source, "read_data", real)
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    assert client.send_file(src, timeout=10).resumed_from == 0
    assert (dest / "e.bin").read_bytes() == data


# --------------------------------------------------------------------------------------------
# Names

BAD_NAMES = [
    "",
    ".",
    "..",
    "...",
    "../escape",
    "../../etc/passwd",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "..\\escape",
    "C:\\Windows\\x",
    "C:x",
    "file.txt:stream",
    "nul\x00byte",
    "line\nbreak",
    "tab\there",
    "\x1b[31mred",
    "del\x7f",
    "c1\x85",
    "bidi\u202etxt.exe",
    "para\u2029sep",
    # Unicode format characters (category Cf): invisible, so two names would look the same.
    "zero\u200bwidth",
    "word\u2060joiner",
    "\ufeffbom.txt",
    "arabic\u061cmark",
    "soft\u00adhyphen",
    "zwj\u200d.txt",
    "lrm\u200e.txt",
    "isolate\u2066x\u2069",
    "tag\U000e0041",
    "CON",
    "con",
    "PRN.txt",
    "AUX.tar.gz",
    "NUL",
    "Nul.log",
    "COM1",
    "com9.txt",
    "LPT1",
    "lpt9.dat",
    "CON .txt",
    "COM¹",
    "CONIN$",
    "x" * 256,
    "é" * 128,  # 256 bytes of UTF-8
    "\ud800",  # a lone surrogate: not UTF-8
    "name.argonlink-part",
]
GOOD_NAMES = ["x" * 255, "é" * 127, "COM10", "CONSOLE.txt", "a..b", "名前.txt", "-", "x."]
#: Refused by a receiver unless it opts in (allow_hidden=True); the sender leaves it to the
#: receiver.
HIDDEN_NAMES = [".bashrc", ".ssh", ".hidden", ".x.tar.gz"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_unsafe_names_are_refused_and_nothing_is_written(
    name: str, link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    before = sorted(tmp_path.rglob("*"))
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    channel = file_channel(client)
    channel.send(offer({"name": name, "size": 5, "resume": True}))
    code, reason = parse_refuse(channel.recv(timeout=10))
    assert code == TransferCode.UNSAFE_NAME, reason
    with pytest.raises(UnsafeName):
        fut.result(10)
    assert os.listdir(dest) == []
    assert sorted(tmp_path.rglob("*")) == before  # nothing anywhere else either
    assert "\x1b" not in reason and "\n" not in reason  # safe to print


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_unsafe_names_are_refused_by_the_sender_before_sending(
    name: str, link: Any, tmp_path: Path
) -> None:
    client, conn = link
    src = write(tmp_path / "ok.bin", b"hello")
    with pytest.raises(UnsafeName):
        client.send_file(src, name=name)
    with pytest.raises(Timeout):
        conn.recv(timeout=0.1)  # nothing was sent
    assert conn._conn.try_accept_channel("argonlink.file") is None  # no channel was opened


@pytest.mark.parametrize("name", GOOD_NAMES, ids=repr)
def test_unusual_but_safe_names_are_accepted(
    name: str, link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    src = write(tmp_path / "src.bin", b"data")
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    client.send_file(src, name=name, timeout=10)
    assert fut.result(10).path == dest / name
    assert (dest / name).read_bytes() == b"data"


@pytest.mark.parametrize("name", HIDDEN_NAMES, ids=repr)
def test_hidden_names_are_refused_unless_the_receiver_opts_in(
    name: str, link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    src = write(tmp_path / "src.bin", b"dot")
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    with pytest.raises(UnsafeName, match="starts with") as err:
        client.send_file(src, name=name, timeout=10)  # the sender leaves it to the receiver
    assert err.value.by_peer
    with pytest.raises(UnsafeName):
        fut.result(10)
    assert os.listdir(dest) == []

    fut = pool.submit(conn.recv_file, dest, allow_hidden=True, timeout=10)
    client.send_file(src, name=name, timeout=10)
    assert fut.result(10).path == dest / name
    assert (dest / name).read_bytes() == b"dot"
    with pytest.raises(UnsafeName):
        argonlink.check_name(name)
    assert argonlink.check_name(name, allow_hidden=True) == name


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_received_files_are_private_whatever_the_senders_mode(
    link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    data = content(2 * MIB + 1, seed=20)
    src = write(tmp_path / "public.bin", data)
    src.chmod(0o644)
    partial_modes: list[int] = []

    def look(done: int, total: int) -> None:
        partial_modes.extend(mode_of(p) for p in partials(dest))

    fut = pool.submit(conn.recv_file, dest, progress=look, timeout=10)
    client.send_file(src, timeout=10)
    assert fut.result(10).path == dest / "public.bin"
    assert partial_modes and set(partial_modes) == {0o600}  # never readable by others
    assert mode_of(dest / "public.bin") == 0o600

    # A receiver may ask for another mode; it gets exactly that, whatever the umask.
    old_umask = os.umask(0o077)
    try:
        fut = pool.submit(conn.recv_file, dest, mode=0o640, timeout=10)
        client.send_file(src, name="shared.bin", timeout=10)
        fut.result(10)
    finally:
        os.umask(old_umask)
    assert mode_of(dest / "shared.bin") == 0o640
    with pytest.raises(argonlink.ConfigError):
        conn.recv_file(dest, mode=0o4755)  # no setuid: refused before anything is taken
    with pytest.raises(argonlink.ConfigError):
        conn.recv_file(dest, mode=0o444)  # the owner must be able to write (to resume)


def test_a_resumed_partial_gets_the_receivers_mode(
    link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    data = content(3000, seed=21)
    src = write(tmp_path / "r.bin", data)
    key = _files._partial_key("r.bin", len(data), None)
    part = write(dest / _files._partial_name("r.bin", key), data[:1000])
    part.chmod(0o644)  # left by an older receiver
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    assert client.send_file(src, timeout=10).resumed_from == 1000
    fut.result(10)
    assert mode_of(dest / "r.bin") == 0o600


def test_a_symlink_in_place_of_the_partial_file_is_not_followed(
    link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    data = b"secret payload"
    src = write(tmp_path / "f.bin", data)
    victim = write(tmp_path / "victim", b"untouched")
    key = _files._partial_key("f.bin", len(data), None)
    (dest / _files._partial_name("f.bin", key)).symlink_to(victim)
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    with pytest.raises(TransferError) as err:
        client.send_file(src, timeout=10)
    assert err.value.code == TransferCode.IO_ERROR
    with pytest.raises(OSError):
        fut.result(10)
    assert victim.read_bytes() == b"untouched"
    assert not (dest / "f.bin").exists()


# --------------------------------------------------------------------------------------------
# Overwriting


def test_an_existing_file_is_kept_unless_overwrite(
    link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    src = write(tmp_path / "g.txt", b"new content")
    existing = write(dest / "g.txt", b"old content")
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    with pytest.raises(DestinationExists, match="already exists") as err:
        client.send_file(src, timeout=10)
    assert err.value.by_peer
    with pytest.raises(DestinationExists):
        fut.result(10)
    assert existing.read_bytes() == b"old content"
    assert os.listdir(dest) == ["g.txt"]

    fut = pool.submit(conn.recv_file, dest, overwrite=True, timeout=10)
    client.send_file(src, timeout=10)
    fut.result(10)
    assert existing.read_bytes() == b"new content"
    assert os.listdir(dest) == ["g.txt"]


def test_a_file_that_appears_during_the_transfer_is_not_overwritten(
    link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    data = content(3 * MIB, seed=11)
    src = write(tmp_path / "h.bin", data)
    final = dest / "h.bin"

    def someone_else_writes_it(done: int, total: int) -> None:
        if done and not final.exists():
            final.write_bytes(b"theirs")

    fut = pool.submit(conn.recv_file, dest, progress=someone_else_writes_it, timeout=10)
    with pytest.raises(DestinationExists):
        client.send_file(src, timeout=10)
    with pytest.raises(DestinationExists):
        fut.result(10)
    assert final.read_bytes() == b"theirs"  # the no-clobber move refused at the last step
    assert partials(dest) == []


# --------------------------------------------------------------------------------------------
# What is not a file, malformed offers, refusals in the middle


def test_a_plain_message_is_handed_back_not_lost(link: Any, dest: Path, tmp_path: Path) -> None:
    client, conn = link
    # Messages on the connection are not a transfer's: recv_file leaves them for recv.
    client.send(b"just a message")
    with pytest.raises(Timeout):
        conn.recv_file(dest, timeout=0.2)
    assert conn.recv(timeout=5) == b"just a message"
    # On a file channel, what is not an offer is handed back.
    channel = file_channel(client)
    channel.send(b"not an offer")
    with pytest.raises(UnexpectedMessage) as err:
        conn.recv_file(dest, timeout=5)
    assert err.value.message == b"not an offer"
    assert b"not an offer" not in str(err.value).encode()
    stray_data = HEAD + b"\x04" + struct.pack(">Q", 0) + b"xyz"
    channel = file_channel(client)
    channel.send(stray_data)
    with pytest.raises(UnexpectedMessage) as err:
        conn.recv_file(dest, timeout=5)
    assert err.value.message == stray_data
    assert os.listdir(dest) == []


@pytest.mark.parametrize(
    "raw",
    [
        offer(b"not json"),
        offer(b"[1, 2]"),
        offer({"size": 1}),
        offer({"name": 5}),
        offer({"name": "a", "size": -1}),
        offer({"name": "a", "size": True}),
        offer({"name": "a", "size": 2**63}),
        offer({"name": "a", "size": 1.5}),
        offer({"name": "a", "size": 1, "resume": "yes"}),
        offer({"name": "a", "resume": True}),
        offer({"name": "a", "size": 1, "folders": "sub"}),
        offer({"name": "a", "size": 1, "folders": [1]}),
        offer({"name": "a", "size": 1, "folders": ["d"] * 65}),
        offer({"name": "a" * 5000}),
        offer(b"[" * 3000 + b"]" * 3000),
        offer({"name": "a"}, version=1),
        b"ALNKFILE\x01",
    ],
    ids=lambda raw: repr(raw[8:40]),
)
def test_malformed_offers_are_refused_without_harm(
    raw: bytes, link: Any, dest: Path, pool: Any
) -> None:
    client, conn = link
    fut = pool.submit(conn.recv_file, dest, timeout=10)
    channel = file_channel(client)
    channel.send(raw)
    code, _ = parse_refuse(channel.recv(timeout=10))
    assert code == TransferCode.PROTOCOL
    with pytest.raises(TransferError) as err:
        fut.result(10)
    assert err.value.code == TransferCode.PROTOCOL
    assert os.listdir(dest) == []


def test_max_size_refuses_a_stream_mid_way_and_the_link_stays_in_step(
    link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    fut = pool.submit(conn.recv_file, dest, max_size=2 * MIB, timeout=10)
    sent = Recorder()
    with pytest.raises(TransferError) as err:
        client.send_stream(io.BytesIO(content(64 * MIB, seed=12)), "big", progress=sent)
    assert err.value.code == TransferCode.TOO_LARGE and err.value.by_peer
    assert sent.calls[-1][0] < 32 * MIB  # the sender stopped early, not at the end
    with pytest.raises(TransferError):
        fut.result(10)
    assert os.listdir(dest) == []
    # Both sides are in step: the next transfer on the same connection works.
    fut = pool.submit(conn.recv_file, dest, max_size=2 * MIB, timeout=10)
    client.send_file(write(tmp_path / "small", b"fits"), timeout=10)
    assert fut.result(10).size == 4


def test_max_size_refuses_a_known_size_at_the_offer(
    link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    fut = pool.submit(conn.recv_file, dest, max_size=10, timeout=10)
    with pytest.raises(TransferError, match="at most 10") as err:
        client.send_file(write(tmp_path / "eleven", b"x" * 11), timeout=10)
    assert err.value.code == TransferCode.TOO_LARGE
    with pytest.raises(TransferError):
        fut.result(10)
    assert os.listdir(dest) == []


# --------------------------------------------------------------------------------------------
# Limits against filling the disk


def stale_partial(dest: Path, name: str, size: int, age_days: float) -> Path:
    part = write(dest / _files._partial_name(name, hashlib.md5(name.encode()).hexdigest()), b"")
    with open(part, "r+b") as f:
        f.truncate(size)  # sparse: the quota counts the length
    os.utime(part, (time.time() - age_days * 86400,) * 2)
    return part


def test_the_partial_quota_removes_the_oldest_unused_partials_first(
    link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    oldest = stale_partial(dest, "oldest", 10, age_days=3)  # in use by a live transfer
    older = stale_partial(dest, "older", 10, age_days=2)
    newer = stale_partial(dest, "newer", 10, age_days=1)
    holder = os.open(oldest, os.O_RDWR)
    try:
        assert _files._try_lock(holder)
        fut = pool.submit(conn.recv_file, dest, max_partials=3, timeout=10)
        client.send_file(write(tmp_path / "new.bin", b"new data"), timeout=10)
        fut.result(10)
    finally:
        os.close(holder)
    assert oldest.exists() and newer.exists()  # a live transfer's partial is never removed
    assert not older.exists()  # the oldest unused one made room
    assert (dest / "new.bin").read_bytes() == b"new data"


def test_the_byte_quota_counts_what_partials_hold(
    link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    first = stale_partial(dest, "first", 600, age_days=2)
    second = stale_partial(dest, "second", 600, age_days=1)
    fut = pool.submit(conn.recv_file, dest, max_partial_bytes=1000, timeout=10)
    client.send_file(write(tmp_path / "n.bin", b"x" * 5000), timeout=10)  # itself not counted
    fut.result(10)
    assert not first.exists() and second.exists()
    # Resuming a partial that is already there needs no room: nothing else is removed.
    data = content(3000, seed=24)
    key = _files._partial_key("r.bin", len(data), None)
    write(dest / _files._partial_name("r.bin", key), data[:1000])
    fut = pool.submit(conn.recv_file, dest, max_partials=1, max_partial_bytes=0, timeout=10)
    assert client.send_file(write(tmp_path / "r.bin", data), timeout=10).resumed_from == 1000
    fut.result(10)
    assert second.exists()


def test_live_transfers_filling_the_quota_make_a_new_offer_busy(
    link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    live = [stale_partial(dest, f"live{i}", 10, age_days=1) for i in range(2)]
    holders = [os.open(p, os.O_RDWR) for p in live]
    try:
        assert all(_files._try_lock(fd) for fd in holders)
        fut = pool.submit(conn.recv_file, dest, max_partials=2, timeout=10)
        with pytest.raises(TransferError, match="unfinished transfers") as err:
            client.send_file(write(tmp_path / "late.bin", b"late"), timeout=10)
        assert err.value.code == TransferCode.BUSY and err.value.by_peer
        with pytest.raises(TransferError):
            fut.result(10)
        assert partials(dest) == sorted(live)  # nothing created, nothing removed
    finally:
        for fd in holders:
            os.close(fd)
    fut = pool.submit(conn.recv_file, dest, max_partials=2, timeout=10)  # still in step
    client.send_file(tmp_path / "late.bin", timeout=10)
    assert fut.result(10).size == 4


def test_running_out_of_disk_space_mid_stream_refuses_and_removes_the_partial(
    link: Any, dest: Path, tmp_path: Path, pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, conn = link
    reserve = 100 * MIB
    monkeypatch.setattr(_files.sink, "_SPACE_STEP", MIB)

    def free_bytes(directory: Path, fd: int | None = None) -> int:
        # A disk with 4 MiB above the reserve, shrinking as the partial files grow.
        return reserve + 4 * MIB - sum(p.stat().st_size for p in partials(dest))

    monkeypatch.setattr(_files.sink, "_free_bytes", free_bytes)
    fut = pool.submit(conn.recv_file, dest, min_free_space=reserve, timeout=10)
    sent = Recorder()
    with pytest.raises(TransferError, match="free disk space") as err:
        client.send_stream(PipeLike(content(64 * MIB, seed=25)), "s.bin", progress=sent)
    assert err.value.code == TransferCode.TOO_LARGE and err.value.by_peer
    assert sent.calls[-1][0] < 32 * MIB  # stopped early
    with pytest.raises(TransferError):
        fut.result(10)
    assert os.listdir(dest) == []  # the stream's partial is gone

    # A stream offer is refused at once when the reserve is not there at all.
    monkeypatch.setattr(_files.sink, "_free_bytes", lambda directory, fd=None: reserve - 1)
    fut = pool.submit(conn.recv_file, dest, min_free_space=reserve, timeout=10)
    with pytest.raises(TransferError) as err:
        client.send_stream(io.BytesIO(b"tiny"), "t.bin", timeout=10)
    assert err.value.code == TransferCode.TOO_LARGE
    with pytest.raises(TransferError):
        fut.result(10)
    assert os.listdir(dest) == []


def test_a_known_size_needs_room_above_the_reserve(
    link: Any, dest: Path, tmp_path: Path, pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, conn = link
    monkeypatch.setattr(_files.sink, "_free_bytes", lambda directory, fd=None: 1000 + 99)
    fut = pool.submit(conn.recv_file, dest, min_free_space=1000, timeout=10)
    with pytest.raises(TransferError, match="free disk space") as err:
        client.send_file(write(tmp_path / "k.bin", b"x" * 100), timeout=10)
    assert err.value.code == TransferCode.TOO_LARGE
    with pytest.raises(TransferError):
        fut.result(10)
    assert os.listdir(dest) == []


def test_total_timeout_bounds_a_transfer_from_its_offer_on(
    link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    # The wait for the offer does not count: the clock starts when it arrives.
    fut = pool.submit(conn.recv_file, dest, total_timeout=0.5)
    time.sleep(1.0)
    client.send_file(write(tmp_path / "a.bin", b"in time"), timeout=10)
    assert fut.result(10).size == 7

    # A sender that offers and then stalls is given up on, however slowly it trickles.
    data = b"y" * 100
    fut = pool.submit(conn.recv_file, dest, total_timeout=0.5, timeout=10)
    channel = file_channel(client)
    channel.send(offer({"name": "slow.bin", "size": len(data), "resume": True}))
    assert channel.recv(timeout=10)[:10] == HEAD + b"\x02"  # ACCEPT
    with pytest.raises(Timeout, match="total_timeout"):
        fut.result(10)
    assert not (dest / "slow.bin").exists()
    assert len(partials(dest)) == 1  # resumable: kept for the next attempt
    with pytest.raises(argonlink.ConfigError):
        conn.recv_file(dest, total_timeout=0)


def test_send_to_a_peer_that_answers_with_a_plain_message(
    link: Any, tmp_path: Path, pool: Any
) -> None:
    client, conn = link

    def not_a_file_receiver() -> None:
        native = conn._conn.accept_channel_blocking(5, "argonlink.file")
        channel = argonlink.sync.Channel(native)
        channel.recv(timeout=5)  # the offer
        channel.send(b"I only do messages")

    pool.submit(not_a_file_receiver)
    with pytest.raises(UnexpectedMessage) as err:
        client.send_file(write(tmp_path / "i", b"data"), timeout=10)
    assert err.value.message == b"I only do messages"


def test_recv_file_needs_an_existing_directory(
    link: Any, dest: Path, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    sending = pool.submit(client.send_file, write(tmp_path / "kept", b"kept"), timeout=10)
    with pytest.raises(NotADirectoryError):
        conn.recv_file(tmp_path / "missing")
    assert conn.recv_file(dest, timeout=5).size == 4  # the offer was not taken
    assert sending.result(10).size == 4


def test_transfer_errors_survive_pickling() -> None:
    import pickle

    for exc in (
        UnsafeName("bad", by_peer=True),
        DestinationExists("there"),
        VerificationFailed("hash"),
        UnexpectedMessage(b"msg"),
        TransferError(99, "unknown code"),
    ):
        copy = pickle.loads(pickle.dumps(exc))
        assert type(copy) is type(exc) and str(copy) == str(exc)
        assert copy.code == exc.code and copy.by_peer == exc.by_peer


# --------------------------------------------------------------------------------------------
# Stale partial files


def test_remove_stale_partials(dest: Path) -> None:
    old = write(dest / f".a.{'0' * 32}.argonlink-part", b"old")
    fresh = write(dest / f".b.{'1' * 32}.argonlink-part", b"fresh")
    other = write(dest / "c.txt", b"not a partial")
    os.utime(old, (time.time() - 10 * 86400,) * 2)
    os.utime(other, (time.time() - 10 * 86400,) * 2)
    assert argonlink.remove_stale_partials(dest) == [old]
    assert sorted(os.listdir(dest)) == sorted([fresh.name, other.name])


# --------------------------------------------------------------------------------------------
# 1 GiB, cut half-way and resumed, in two processes with bounded memory

WORKER = Path(__file__).with_name("files_worker.py")


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_one_gib_cut_and_resumed_in_bounded_memory(tmp_path: Path) -> None:
    size = 1 << 30
    block = content(MIB, seed=13)  # a repeating, pseudo-random 1 MiB block
    src, dest = tmp_path / "gib.bin", tmp_path / "dest"
    dest.mkdir()
    digest = hashlib.sha256()
    try:
        with open(src, "wb") as f:
            for i in range(size // MIB):
                chunk = i.to_bytes(8, "big") + block[8:]  # every block differs a little
                f.write(chunk)
                digest.update(chunk)
        env = dict(os.environ, FILES_WORKER_PASSWORD=PASSWORD)
        receiver = subprocess.Popen(
            [sys.executable, str(WORKER), "receive", str(dest), str(size // 2)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert receiver.stdout is not None
        port = receiver.stdout.readline().strip()
        sender = subprocess.run(
            [sys.executable, str(WORKER), "send", port, str(src)],
            capture_output=True,
            env=env,
            text=True,
            timeout=150,
            check=False,
        )
        out, _ = receiver.communicate(timeout=60)
        assert sender.returncode == 0, sender.stderr
        assert receiver.returncode == 0
        sent, got = json.loads(sender.stdout), json.loads(out)

        assert sent["first"] == "cut" and got["first"] == "cut"
        assert got["final_existed_after_cut"] is False
        assert size // 4 < got["resumed_from"] <= size // 2 + 32 * MIB
        assert sent["resumed_from"] == got["resumed_from"]
        assert sent["sha256"] == got["sha256"] == digest.hexdigest()
        final = dest / "gib.bin"
        assert final.stat().st_size == size
        with open(final, "rb") as f:
            assert hashlib.file_digest(f, "sha256").hexdigest() == digest.hexdigest()
        for who, side in (("sender", sent), ("receiver", got)):
            growth = side["hwm_kib_end"] - side["hwm_kib_start"]
            print(f"{who}: peak RSS grew by {growth / 1024:.1f} MiB for 1 GiB")
            assert growth < 200 * 1024, f"peak RSS grew by {growth // 1024} MiB"
    finally:
        for path in (src, dest / "gib.bin"):
            path.unlink(missing_ok=True)


def test_both_apis_have_the_same_file_methods() -> None:
    for name in ("send_file", "recv_file", "send_stream", "recv_stream"):
        a = getattr(argonlink.Connection, name)
        b = getattr(argonlink.sync.Connection, name)
        assert asyncio.iscoroutinefunction(a) and not asyncio.iscoroutinefunction(b)
        assert getattr(argonlink.Client, name) is a
        assert getattr(argonlink.sync.Client, name) is b
