"""Exactly-once sessions: every message whose send() returned is delivered once, in order,
across any number of dropped connections, while both processes live."""

from __future__ import annotations

import asyncio
import random
import threading

import argonlink
import pytest
from argonlink import sync
from proxy import CutMidRecord, Proxy, Tamper
from support import KDF, PASSWORD

FAST_RECONNECT = argonlink.ReconnectPolicy(initial_delay=0.005, max_delay=0.05)


def numbered(i: int, rng: random.Random) -> bytes:
    # Sizes from empty-ish to several frames, so cuts land mid-message too.
    size = rng.choice((0, 10, 1000, 70_000, 200_000)) + rng.randrange(16)
    return i.to_bytes(4, "big") + bytes([i % 251]) * size


def number_of(msg: bytes) -> int:
    i = int.from_bytes(msg[:4], "big")
    assert msg[4:] == bytes([i % 251]) * (len(msg) - 4), f"message {i} corrupted"
    return i


class RandomCuts:
    """Cut each of the first ``cuts`` connections once, at a random record in one random
    direction (handshake records included, except on the very first connection, which has to
    authenticate once for the client to know its password is right)."""

    def __init__(self, cuts: int, seed: int) -> None:
        self.cuts = cuts
        self.rng = random.Random(seed)
        self.plan: dict[int, tuple[str, int, int]] = {}
        self.lock = threading.Lock()

    def _for(self, number: int) -> tuple[str, int, int] | None:
        if number >= self.cuts:
            return None
        with self.lock:
            if number not in self.plan:
                first = 3 if number == 0 else 0
                self.plan[number] = (
                    self.rng.choice(("c2s", "s2c")),
                    self.rng.randrange(first, 40),
                    self.rng.randrange(0, 300),
                )
            return self.plan[number]

    def tamper(self, direction: str) -> object:
        def factory(number: int) -> Tamper | None:
            plan = self._for(number)
            if plan is None or plan[0] != direction:
                return None
            return CutMidRecord(index=plan[1], keep=plan[2], reset=plan[2] % 2 == 0)

        return factory


async def test_exactly_once_across_100_random_cuts_both_ways():
    errors: list[str] = []

    async def echo(conn: argonlink.Connection) -> None:
        assert conn.exactly_once
        expect = 0
        async for msg in conn:
            i = number_of(msg)
            if i != expect:
                errors.append(f"server got {i}, expected {expect}")
            expect += 1
            await conn.send(msg)

    cuts = RandomCuts(100, seed=random.randrange(1 << 30))
    async with argonlink.Server(password=PASSWORD, kdf=KDF, handler=echo) as server:
        with Proxy(server.address, c2s=cuts.tamper("c2s"), s2c=cuts.tamper("s2c")) as proxy:
            client = argonlink.Client(
                *proxy.address,
                password=PASSWORD,
                exactly_once=True,
                reconnect=FAST_RECONNECT,
                open_timeout=5,
            )
            async with client:
                rng = random.Random(7)
                sent = 0

                async def sender() -> None:
                    nonlocal sent
                    # Keep traffic flowing until every planned cut has happened (the client
                    # is on its 101st connection).
                    while len(proxy.connections) <= 100 or sent < 500:
                        await client.send(numbered(sent, rng), timeout=30)
                        sent += 1
                    await client.flush(timeout=30)

                received = 0

                async def receiver() -> None:
                    nonlocal received
                    while not (send_task.done() and received == sent):
                        try:
                            msg = await client.recv(timeout=0.5)
                        except argonlink.Timeout:
                            continue
                        assert number_of(msg) == received, "echo out of order or duplicated"
                        received += 1

                send_task = asyncio.create_task(sender())
                await asyncio.wait_for(asyncio.gather(send_task, receiver()), 120)
                stats = client.stats()
            assert errors == []
            assert received == sent >= 500
            assert len(proxy.connections) >= 101
            # Cuts before the handshake completed are failed dials, not reconnects.
            assert client.reconnects >= 50
            assert stats["unacknowledged"] == 0
            # Cuts with messages queued but not yet read make the sender resend some of them.
            print(f"{sent} messages, {client.reconnects} reconnects, stats {stats}")


def test_exactly_once_blocking_across_cuts():
    cuts = RandomCuts(20, seed=random.randrange(1 << 30))
    got: list[int] = []
    with sync.Server(password=PASSWORD, kdf=KDF) as server:
        with Proxy(server.address, c2s=cuts.tamper("c2s"), s2c=cuts.tamper("s2c")) as proxy:
            client = sync.Client(
                *proxy.address, password=PASSWORD, exactly_once=True, reconnect=FAST_RECONNECT
            )
            with client:
                conn = server.accept(timeout=5)
                assert conn.exactly_once

                def read() -> None:
                    while True:
                        msg = conn.recv(timeout=30)
                        if msg == b"end":
                            return
                        got.append(number_of(msg))

                reader = threading.Thread(target=read)
                reader.start()
                rng = random.Random(1)
                i = 0
                while len(proxy.connections) <= 20 or i < 200:
                    client.send(numbered(i, rng), timeout=30)
                    i += 1
                client.send(b"end")
                client.flush(timeout=30)
                reader.join(30)
            assert got == list(range(i))
            assert len(proxy.connections) >= 21


async def test_one_server_connection_per_session_across_reconnects():
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        with Proxy(server.address, c2s=lambda n: CutMidRecord(4, 0) if n < 3 else None) as proxy:
            async with argonlink.Client(
                *proxy.address, password=PASSWORD, exactly_once=True, reconnect=FAST_RECONNECT
            ) as client:
                conn = await server.accept(timeout=5)
                for i in range(20):
                    await client.send(b"%d" % i)
                assert [await conn.recv(timeout=10) for _ in range(20)] == [
                    b"%d" % i for i in range(20)
                ]
                assert client.reconnects >= 3
                # The reconnects resumed the session: no new connection for accept().
                with pytest.raises(argonlink.Timeout):
                    await server.accept(timeout=0.3)
                assert server.stats()["sessions"] == 1
            # The client's close ends the server's end of the session, cleanly.
            with pytest.raises(argonlink.ConnectionClosedOK):
                await conn.recv(timeout=5)
        assert server.stats()["sessions"] == 0


async def test_flush_waits_until_the_peer_application_received_everything():
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        async with argonlink.Client(*server.address, password=PASSWORD, exactly_once=True) as c:
            conn = await server.accept(timeout=5)
            for i in range(3):
                await c.send(b"m%d" % i)
            # Nothing read on the server yet: nothing is acknowledged.
            with pytest.raises(argonlink.Timeout):
                await c.flush(timeout=0.3)
            assert c.unacknowledged == 3
            for _ in range(3):
                await conn.recv(timeout=5)
            await c.flush(timeout=5)
            assert c.unacknowledged == 0
            # And the other way round.
            await conn.send(b"back")
            with pytest.raises(argonlink.Timeout):
                await conn.flush(timeout=0.3)
            assert await c.recv(timeout=5) == b"back"
            await conn.flush(timeout=5)


async def test_a_session_the_server_lost_ends_the_client_with_session_lost():
    async with argonlink.Server(password=PASSWORD, kdf=KDF, session_linger=0.2) as server:
        # The first connection is cut after its first data frame; the client comes back only
        # after the server gave the session up.
        slow = argonlink.ReconnectPolicy(initial_delay=1.0, max_delay=1.0, jitter=0.0)
        with Proxy(server.address, c2s=lambda n: CutMidRecord(4, 0) if n == 0 else None) as proxy:
            async with argonlink.Client(
                *proxy.address, password=PASSWORD, exactly_once=True, reconnect=slow
            ) as client:
                conn = await server.accept(timeout=5)
                await client.send(b"one")
                await client.send(b"two")
                with pytest.raises(argonlink.ConnectionClosedError) as info:
                    await client.recv(timeout=10)
                assert info.value.code == 4003
                assert "no longer has this session" in str(info.value)
                # The server's end saw the session expire: also an error, never a clean end.
                assert await conn.recv(timeout=5) == b"one"
                with pytest.raises(argonlink.ConnectionClosedError) as server_side:
                    await conn.recv(timeout=5)
                assert server_side.value.code == 4003
            assert len(proxy.connections) == 2


async def test_plain_clients_still_get_plain_connections():
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        async with argonlink.Client(*server.address, password=PASSWORD) as client:
            conn = await server.accept(timeout=5)
            assert not conn.exactly_once
            assert not client.exactly_once
            await client.send(b"x")
            await client.flush(timeout=5)  # written to the socket
            assert await conn.recv(timeout=5) == b"x"


async def test_a_file_crosses_cut_connections_without_noticing(tmp_path):
    src = tmp_path / "src.bin"
    rng = random.Random(3)
    block = rng.randbytes(1 << 20)
    src.write_bytes(b"".join(block[i:] + block[:i] for i in range(16)))
    dest = tmp_path / "dest"
    dest.mkdir()
    # Cut five connections, each after a random number of the client's frames (the data
    # direction: a 16 MiB file is hundreds of frames, so every cut happens).
    cut_rng = random.Random()

    def cut(number: int) -> Tamper | None:
        if number >= 5:
            return None
        return CutMidRecord(index=cut_rng.randrange(3, 60), keep=cut_rng.randrange(300))

    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        with Proxy(server.address, c2s=cut) as proxy:
            async with argonlink.Client(
                *proxy.address, password=PASSWORD, exactly_once=True, reconnect=FAST_RECONNECT
            ) as client:
                conn = await server.accept(timeout=5)
                receiving = asyncio.create_task(conn.recv_file(dest, timeout=30))
                sent = await client.send_file(src, timeout=30)
                received = await asyncio.wait_for(receiving, 30)
            assert len(proxy.connections) == 6
    assert received.path.read_bytes() == src.read_bytes()
    assert sent.sha256 == received.sha256
    # The session carried the transfer across the cuts: nothing had to be resumed.
    assert received.resumed_from == 0
