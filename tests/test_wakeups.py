"""How asyncio receivers are woken (one watched socket per event loop, a token per wait):
concurrent waiters, waits that give up, the end of a connection, and threads that send."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import argonlink
import argonlink.sync
import pytest
from argonlink import ConnectionClosedOK, Timeout
from support import KDF, PASSWORD


async def test_concurrent_receivers_on_one_connection(server: argonlink.Server) -> None:
    async with argonlink.Client(*server.address, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        waiters = [asyncio.create_task(conn.recv(timeout=5)) for _ in range(3)]
        await asyncio.sleep(0.05)  # all three are waiting
        for i in range(3):
            await client.send(b"m%d" % i)
        got = await asyncio.gather(*waiters)
        assert sorted(got) == [b"m0", b"m1", b"m2"]


async def test_waits_that_give_up_lose_nothing(server: argonlink.Server) -> None:
    async with argonlink.Client(*server.address, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        for _ in range(200):  # each registers a wake-up and withdraws it
            with pytest.raises(Timeout):
                await client.recv(timeout=0.001)
        task = asyncio.create_task(client.recv())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await conn.send(b"still here")
        assert await client.recv(timeout=5) == b"still here"
        await client.send(b"and back")
        assert await conn.recv(timeout=5) == b"and back"


async def test_a_waiting_receiver_sees_the_close(server: argonlink.Server) -> None:
    async with argonlink.Client(*server.address, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        waiting = asyncio.create_task(client.recv(timeout=5))
        await asyncio.sleep(0.05)
        await conn.send(b"last")
        await conn.close()
        assert await waiting == b"last"
        with pytest.raises(ConnectionClosedOK):
            await client.recv(timeout=5)


async def test_many_waits_in_a_row(server: argonlink.Server) -> None:
    """Each message arrives while its receiver is already waiting."""
    async with argonlink.Client(*server.address, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)

        async def echo() -> None:
            async for msg in conn:
                await conn.send(msg)

        echoing = asyncio.create_task(echo())
        for i in range(500):
            await client.send(b"%d" % i)
            assert await client.recv(timeout=5) == b"%d" % i
        await client.close()
        await asyncio.wait_for(echoing, 5)


def echo(conn: argonlink.sync.Connection) -> None:
    for msg in conn:
        conn.send(msg)


def test_receivers_in_two_event_loops() -> None:
    """Two threads, each with its own event loop (and so its own doorbell)."""
    results: list[bytes] = []
    with argonlink.sync.Server("127.0.0.1", 0, password=PASSWORD, kdf=KDF, handler=echo) as srv:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        threads = [threading.Thread(target=run, args=(srv.address, results)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert results == [b"ping", b"ping"]


def run(address: tuple[str, int], results: list[bytes]) -> None:
    async def main() -> None:
        async with argonlink.Client(*address, password=PASSWORD) as client:
            await client.send(b"ping")
            results.append(await client.recv(timeout=5))

    asyncio.run(main())


async def test_senders_wait_for_room_and_the_close_wakes_them(server: argonlink.Server) -> None:
    """A full send buffer: waiting senders are woken as it drains, and by the close."""
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD, send_buffer=64 * 1024) as client:
        conn = await server.accept(timeout=5)
        block = bytes(60 * 1024)
        senders = [asyncio.create_task(client.send(block, timeout=10)) for _ in range(8)]
        await asyncio.sleep(0.05)
        for _ in range(8):  # the peer reads: every sender gets room in turn
            assert len(await conn.recv(timeout=5)) == len(block)
        await asyncio.gather(*senders)

        # Wait with no reader until a timeout: nothing is queued by a send that gave up.
        sent = 0
        with pytest.raises(Timeout):
            for _ in range(1000):
                await client.send(block, timeout=0.2)
                sent += 1
        waiting = asyncio.create_task(client.send(block))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        closing = asyncio.create_task(client.connection.close())
        with pytest.raises(argonlink.ConnectionClosed):
            await waiting  # woken by the close, not by room (nobody reads yet)
        received = 0
        with contextlib.suppress(argonlink.ConnectionClosedOK):
            while True:
                await conn.recv(timeout=5)
                received += 1
        await closing
        assert received == sent
