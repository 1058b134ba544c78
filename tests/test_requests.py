"""Request/response (PROTOCOL.md §10): many outstanding at once, matched by id; remote errors;
timeouts and cancellation reach the handler; the blocking API; a request channel is never what
``accept_channel`` returns."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import argonlink
import argonlink.sync
import pytest
from argonlink import ChannelError, ConfigError, RemoteError, Timeout
from support import KDF, PASSWORD


async def test_ten_thousand_outstanding_requests(server: argonlink.Server) -> None:
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)

        async def handler(data: bytes) -> bytes:
            await asyncio.sleep(0.01 * (data[0] % 3))  # answers come back out of order
            return data[::-1]

        serving = asyncio.create_task(conn.serve_requests(handler, concurrency=1000))
        payloads = [i.to_bytes(4, "big") + b"-payload" for i in range(10_000)]
        started = time.monotonic()
        replies = await asyncio.gather(*(client.request(p, timeout=60) for p in payloads))
        elapsed = time.monotonic() - started
        assert replies == [p[::-1] for p in payloads]
        print(f"10,000 requests at once: {len(payloads) / elapsed:.0f}/s")
        # The requests channel never shows up as an application channel.
        with pytest.raises(Timeout):
            await conn.accept_channel(timeout=0.1)
        await client.close()
        await asyncio.wait_for(serving, 5)


async def test_a_handlers_exception_comes_back_as_remote_error(server: argonlink.Server) -> None:
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)

        class Refused(Exception):
            pass

        def handler(data: bytes) -> bytes:
            if data == b"bad":
                raise Refused("no such key: bad")
            if data == b"worse":
                raise KeyError("worse")
            return b"ok"

        serving = asyncio.create_task(conn.serve_requests(handler))
        with pytest.raises(RemoteError) as info:
            await client.request(b"bad", timeout=5)
        assert info.value.type_name.endswith("Refused")
        assert info.value.message == "no such key: bad"
        assert info.value.traceback is None  # not unless the responder asks
        with pytest.raises(RemoteError) as info:
            await client.request(b"worse", timeout=5)
        assert info.value.type_name == "KeyError" and str(info.value) == "KeyError: 'worse'"
        assert await client.request(b"fine", timeout=5) == b"ok"  # the channel goes on
        serving.cancel()


async def test_tracebacks_only_when_asked(server: argonlink.Server) -> None:
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)

        def handler(data: bytes) -> bytes:
            raise ValueError("x" * 200_000)  # longer than an ERROR may carry

        serving = asyncio.create_task(conn.serve_requests(handler, tracebacks=True))
        with pytest.raises(RemoteError) as info:
            await client.request(b"?", timeout=5)
        assert info.value.traceback is not None and "ValueError" in info.value.traceback
        assert len(info.value.message) < 65536 and info.value.message.startswith("xxx")
        serving.cancel()


async def test_a_timeout_or_cancellation_cancels_the_handler(server: argonlink.Server) -> None:
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def handler(data: bytes) -> bytes:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return b"too late"

        serving = asyncio.create_task(conn.serve_requests(handler))
        with pytest.raises(Timeout):
            await client.request(b"slow", timeout=0.2)
        await asyncio.wait_for(cancelled.wait(), 5)
        # A caller's own cancellation does the same.
        started.clear()
        cancelled.clear()
        pending = asyncio.create_task(client.request(b"slow"))
        await asyncio.wait_for(started.wait(), 5)
        pending.cancel()
        await asyncio.wait_for(cancelled.wait(), 5)
        serving.cancel()


async def test_requests_loop_answers_in_any_order(server: argonlink.Server) -> None:
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)

        async def responder() -> None:
            held = []
            async for req in conn.requests():
                held.append(req)
                if len(held) == 3:
                    for r in reversed(held):
                        await r.reply(r.data.upper())
                    held.clear()

        serving = asyncio.create_task(responder())
        replies = await asyncio.gather(
            *(client.request(w, timeout=5) for w in (b"a", b"b", b"c", b"d", b"e", b"f"))
        )
        assert replies == [b"A", b"B", b"C", b"D", b"E", b"F"]
        serving.cancel()


async def test_requests_the_peer_never_answers_fail_when_it_goes(server: argonlink.Server) -> None:
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        waiting = asyncio.create_task(client.request(b"anyone?"))
        await asyncio.sleep(0.1)
        await conn.close()
        with pytest.raises((ChannelError, argonlink.ConnectionClosed)):
            await asyncio.wait_for(waiting, 5)


async def test_reserved_names_and_sessions() -> None:
    async with argonlink.Server(
        "127.0.0.1", 0, password=PASSWORD, kdf=argonlink.KdfParams.OWASP
    ) as srv:
        host, port = srv.address
        async with argonlink.Client(host, port, password=PASSWORD) as client:
            with pytest.raises(ConfigError):
                await client.open_channel("argonlink.requests")
        async with argonlink.Client(host, port, password=PASSWORD, exactly_once=True) as c2:
            with pytest.raises(ChannelError):
                await c2.request(b"x", timeout=1)


def test_blocking_requests_from_many_threads(sync_server: argonlink.sync.Server) -> None:
    host, port = sync_server.address
    with argonlink.sync.Client(host, port, password=PASSWORD) as client:
        conn = sync_server.accept(timeout=5)

        def handler(data: bytes) -> bytes:
            if data == b"boom":
                raise RuntimeError("boom")
            time.sleep(0.001)
            return data * 2

        serving = threading.Thread(target=conn.serve_requests, args=(handler,), daemon=True)
        serving.start()
        results: dict[int, bytes] = {}

        def call(i: int) -> None:
            for j in range(50):
                key = f"{i}.{j}".encode()
                assert client.request(key, timeout=10) == key * 2
            results[i] = b"done"

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(results) == 8
        with pytest.raises(RemoteError, match="boom"):
            client.request(b"boom", timeout=5)
        client.close()
        serving.join(10)
        assert not serving.is_alive()


async def test_a_reply_larger_than_the_caller_accepts_comes_back_as_an_error() -> None:
    async def big(data: bytes) -> bytes:
        return b"z" * 200_000

    async with argonlink.Server("127.0.0.1", 0, password=PASSWORD, kdf=KDF) as srv:
        host, port = srv.address
        for handler in (big, lambda data: b"z" * 200_000):  # a task, and inline
            async with argonlink.Client(
                host, port, password=PASSWORD, max_message_size=100_000
            ) as client:
                conn = await srv.accept(timeout=5)
                serving = asyncio.create_task(conn.serve_requests(handler))
                with pytest.raises(RemoteError) as info:
                    await client.request(b"big", timeout=5)
                assert info.value.type_name == "argonlink.exceptions.MessageTooLarge"
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving


async def test_requests_given_up_while_queued_free_their_place(server: argonlink.Server) -> None:
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        gate = asyncio.Event()

        async def handler(data: bytes) -> bytes:
            if data == b"slow":
                await gate.wait()
            return data

        serving = asyncio.create_task(conn.serve_requests(handler, concurrency=2))
        # Far more give-ups than places, many cancelled before their handler started.
        for _ in range(20):
            with pytest.raises(Timeout):
                await asyncio.gather(*(client.request(b"slow", timeout=0.05) for _ in range(5)))
        gate.set()
        assert await client.request(b"after", timeout=5) == b"after"
        serving.cancel()


async def test_a_hostile_responder_cannot_hang_the_caller(server: argonlink.Server) -> None:
    """Answers no honest responder sends: an ERROR that is not JSON (or nested too deeply to
    parse), an answer for an id never sent. The requests fail, the channel is reset, nothing
    hangs."""
    from argonlink._asyncio import Channel
    from argonlink._requests import ERROR, REPLY, encode

    host, port = server.address
    for bad in (
        encode(ERROR, 1, b"not json"),
        encode(ERROR, 1, b"[" * 100_000),
        encode(REPLY, 7, b"never asked"),
        encode(REPLY, 0, b"zero"),
    ):
        async with argonlink.Client(host, port, password=PASSWORD) as client:
            conn = await server.accept(timeout=5)
            pending = asyncio.create_task(client.request(b"q"))
            native = conn._conn
            raw = None
            while raw is None:
                raw = native.try_accept_channel("argonlink.requests")
                await asyncio.sleep(0.01)
            channel = Channel(raw)
            await channel.recv(timeout=5)
            await channel.send(bad)
            with pytest.raises(ChannelError):
                await asyncio.wait_for(pending, 5)
