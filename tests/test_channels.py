"""Channels from Python, asyncio and blocking: opening and accepting, order, half-close, reset,
a slow reader that holds up nobody else, limits, and what channels refuse to do."""

from __future__ import annotations

import asyncio
import threading
import time

import argonlink
import argonlink.sync
import pytest
from argonlink import (
    ChannelClosed,
    ChannelError,
    ChannelFinished,
    ChannelReset,
    ConfigError,
    ConnectionClosedOK,
    Timeout,
)
from support import KDF, PASSWORD

MIB = 1024 * 1024


async def test_open_accept_and_messages_both_ways(server: argonlink.Server) -> None:
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        mine = await client.open_channel("jobs")
        await mine.send(b"first")
        theirs = await conn.accept_channel(timeout=5)
        assert (theirs.name, theirs.id) == ("jobs", mine.id) and mine.id % 2 == 1
        assert await theirs.recv(timeout=5) == b"first"
        await theirs.send(b"reply")
        assert await mine.recv(timeout=5) == b"reply"
        # The connection's own messages go on beside it (the default channel).
        await client.send(b"plain")
        assert await conn.recv(timeout=5) == b"plain"
        # A server opens channels too: even ids.
        back = await conn.open_channel()
        assert back.id % 2 == 0 and back.name == ""
        await back.send(b"from the server")
        got = await client.accept_channel(timeout=5)
        assert await got.recv(timeout=5) == b"from the server"
        assert repr(got) == f"<Channel id={back.id} name=''>"


async def test_order_and_half_close_end_iteration(server: argonlink.Server) -> None:
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        ch = await client.open_channel("numbers")
        for i in range(2000):
            await ch.send(i.to_bytes(4, "big") * (i % 50 + 1))
        ch.finish()
        with pytest.raises(ChannelClosed):
            await ch.send(b"after finish")
        theirs = await conn.accept_channel(timeout=5)
        got = [m async for m in theirs]
        assert [int.from_bytes(m[:4], "big") for m in got] == list(range(2000))
        with pytest.raises(ChannelFinished):
            await theirs.recv(timeout=1)
        # Half-closed: the other direction still works, until it finishes too.
        await theirs.send(b"still here")
        theirs.finish()
        assert [m async for m in ch] == [b"still here"]


async def test_reset_reaches_the_peer_with_its_code(server: argonlink.Server) -> None:
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        ch = await client.open_channel("doomed")
        await ch.send(b"x")
        theirs = await conn.accept_channel(timeout=5)
        assert await theirs.recv(timeout=5) == b"x"
        theirs.reset(4242, "not today")
        with pytest.raises(ChannelReset) as info:
            await ch.recv(timeout=5)
        assert (info.value.code, info.value.reason, info.value.by_peer) == (
            4242,
            "not today",
            True,
        )
        with pytest.raises(ChannelReset):
            await ch.send(b"y")
        with pytest.raises(ChannelReset) as mine:
            await theirs.recv(timeout=1)
        assert not mine.value.by_peer and "this side" in str(mine.value)
        assert ch.closed and theirs.closed
        with pytest.raises(ConfigError):
            ch.reset(7)  # 1-999 are the protocol's
        # The connection is unharmed.
        await client.send(b"after")
        assert await conn.recv(timeout=5) == b"after"


@pytest.mark.slow
async def test_a_slow_channel_holds_up_neither_the_others_nor_the_connection(
    server: argonlink.Server,
) -> None:
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        slow, fast = await client.open_channel("slow"), await client.open_channel("fast")
        slow_in, fast_in = await conn.accept_channel(5), await conn.accept_channel(5)
        chunk = b"s" * 65536

        async def stuff() -> None:
            while True:
                await slow.send(chunk)

        stuffer = asyncio.create_task(stuff())
        total = 1024 * MIB  # 1 GiB

        async def pump() -> None:
            block = b"f" * MIB
            for _ in range(total // MIB):
                await fast.send(block)
            fast.finish()

        pumper = asyncio.create_task(pump())
        started = time.monotonic()
        got = 0
        async for m in fast_in:
            got += len(m)
        await pumper
        elapsed = time.monotonic() - started
        assert got == total
        # Nobody read the slow channel: it holds its window (256 KiB), whatever was sent.
        assert slow_in.queued * len(chunk) <= 256 * 1024
        assert not stuffer.done()
        # Pings and the connection's own messages still get through.
        await client.send(b"alive")
        assert await conn.recv(timeout=5) == b"alive"
        print(f"fast channel beside a stalled one: {total / elapsed / 1e6:.0f} MB/s")
        stuffer.cancel()
        slow_in.reset()


async def test_async_with_closes_and_resets_on_error(server: argonlink.Server) -> None:
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        async with await client.open_channel("ok") as ch:
            await ch.send(b"one")
            theirs = await conn.accept_channel(5)
            assert await theirs.recv(5) == b"one"
            theirs.finish()  # so that close() does not wait for it
        with pytest.raises(ChannelFinished):
            await theirs.recv(5)
        with pytest.raises(RuntimeError):
            async with await client.open_channel("bad") as bad:
                raise RuntimeError("boom")
        # Reset before anyone accepted it: gone from the accept queue once both resets crossed
        # (nothing held); taken before that, it reports the reset.
        try:
            other = await conn.accept_channel(0.5)
        except Timeout:
            pass
        else:
            with pytest.raises(ChannelReset):
                await other.recv(5)
        assert bad.closed


async def test_open_waits_while_the_peer_is_at_its_limit() -> None:
    async with argonlink.Server(
        "127.0.0.1", 0, password=PASSWORD, kdf=KDF, max_channels=2
    ) as server:
        host, port = server.address
        async with argonlink.Client(host, port, password=PASSWORD) as client:
            conn = await server.accept(timeout=5)
            a, b = await client.open_channel(), await client.open_channel()
            with pytest.raises(Timeout):
                await client.open_channel(timeout=0.2)
            # Both sides end one: a place is free again.
            a.finish()
            theirs = await conn.accept_channel(5)
            theirs.finish()
            third = await client.open_channel(timeout=5)
            assert third.id == 5
            assert b.id == 3


async def test_channels_end_with_their_connection(server: argonlink.Server) -> None:
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        ch = await client.open_channel()
        theirs = await conn.accept_channel(5)
        await client.close()
        with pytest.raises(ConnectionClosedOK):
            await theirs.recv(5)
        with pytest.raises(ConnectionClosedOK):
            await conn.accept_channel(5)
        assert ch.closed


async def test_exactly_once_sessions_refuse_channels(server: argonlink.Server) -> None:
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD, exactly_once=True) as client:
        with pytest.raises(ChannelError, match="exactly-once"):
            await client.open_channel()
        conn = await server.accept(timeout=5)
        with pytest.raises(ChannelError):
            await conn.open_channel()


def test_blocking_channels(sync_server: argonlink.sync.Server) -> None:
    host, port = sync_server.address
    with argonlink.sync.Client(host, port, password=PASSWORD) as client:
        conn = sync_server.accept(timeout=5)
        received: list[bytes] = []

        def serve() -> None:
            with conn.accept_channel(timeout=5) as ch:
                for m in ch:
                    received.append(m)
                    ch.send(m.upper())

        worker = threading.Thread(target=serve)
        worker.start()
        with client.open_channel("echo") as ch:
            for word in (b"alpha", b"beta", b"gamma"):
                ch.send(word)
                assert ch.recv(timeout=5) == word.upper()
        worker.join(10)
        assert not worker.is_alive()
        assert received == [b"alpha", b"beta", b"gamma"]
        with pytest.raises(Timeout):
            conn.accept_channel(timeout=0.1)
