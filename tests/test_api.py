"""The public API, asyncio and blocking: round trips, ordering, limits, closing, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from typing import Any

import argonlink
import argonlink.sync
import pytest
from argonlink import (
    AuthenticationError,
    ConfigError,
    ConnectionClosedError,
    ConnectionClosedOK,
    MessageTooLarge,
    RekeyPolicy,
    Timeout,
)
from support import KDF, PASSWORD

MIB = 1024 * 1024


async def test_async_round_trip(server: argonlink.Server) -> None:
    host, port = server.address
    async with argonlink.Client(host, port, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        await client.send(b"hello")
        assert await conn.recv(timeout=5) == b"hello"
        await conn.send(bytearray(b"ok"))
        assert await client.recv(timeout=5) == b"ok"
        await client.send(memoryview(b"xyz")[1:])
        assert await conn.recv(timeout=5) == b"yz"
        assert conn.peer_node_id == client.node_id.hex()
        assert client.connection.peer_node_id == server.node_id.hex()
        assert conn.handshake_hash == client.connection.handshake_hash
        assert conn.remote_address == client.connection.local_address


def test_sync_round_trip(sync_server: argonlink.sync.Server) -> None:
    with argonlink.sync.Client(*sync_server.address, password=PASSWORD) as client:
        conn = sync_server.accept(timeout=5)
        client.send(b"hi")
        assert conn.recv(timeout=5) == b"hi"
        conn.send(b"there")
        assert client.recv(timeout=5) == b"there"
        client.close()
        assert list(conn) == []
        assert conn.closed


async def test_ten_thousand_messages_arrive_in_order(server: argonlink.Server) -> None:
    async with argonlink.Client(*server.address, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)

        async def produce() -> None:
            for i in range(10_000):
                await client.send(i.to_bytes(4, "big") + os.urandom(i % 200))
            await client.close()

        producer = asyncio.create_task(produce())
        got = [int.from_bytes(m[:4], "big") async for m in conn]
        await producer
        assert got == list(range(10_000))


def test_sync_ten_thousand_messages_arrive_in_order(sync_server: argonlink.sync.Server) -> None:
    with argonlink.sync.Client(*sync_server.address, password=PASSWORD) as client:
        conn = sync_server.accept(timeout=5)

        def produce() -> None:
            for i in range(10_000):
                client.send(i.to_bytes(4, "big"))
            client.close()

        t = threading.Thread(target=produce)
        t.start()
        got = [int.from_bytes(m, "big") for m in conn]
        t.join()
        assert got == list(range(10_000))


async def test_sixteen_mib_message_and_the_limit(server: argonlink.Server) -> None:
    async with argonlink.Client(*server.address, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        big = os.urandom(16 * MIB)
        await client.send(big)
        assert await conn.recv(timeout=30) == big
        assert client.connection.peer_max_message_size == argonlink.DEFAULT_MAX_MESSAGE_SIZE
        with pytest.raises(MessageTooLarge):
            await client.send(b"x" * (16 * MIB + 1))
        # Refused locally: nothing was sent, the connection is still fine.
        await client.send(b"after")
        assert await conn.recv(timeout=5) == b"after"


async def test_limit_announced_by_the_receiver_is_learned_by_the_sender() -> None:
    async with argonlink.Server(password=PASSWORD, kdf=KDF, max_message_size=1000) as srv:
        async with argonlink.Client(*srv.address, password=PASSWORD) as client:
            assert client.connection.peer_max_message_size == 1000
            with pytest.raises(MessageTooLarge):
                await client.send(b"x" * 1001)
            await client.send(b"x" * 1000)
            conn = await srv.accept(timeout=5)
            assert len(await conn.recv(timeout=5)) == 1000


async def test_fifty_concurrent_clients(server: argonlink.Server) -> None:
    creds = argonlink.Credentials(PASSWORD)

    async def one(i: int) -> bytes:
        async with argonlink.Client(*server.address, password=creds) as c:
            await c.send(f"client {i}".encode())
            return await c.recv(timeout=10)

    echoes: list[asyncio.Task[None]] = []

    async def echo() -> None:
        for _ in range(50):
            conn = await server.accept(timeout=10)
            echoes.append(asyncio.create_task(echo_one(conn)))

    async def echo_one(conn: argonlink.Connection) -> None:
        async for msg in conn:
            await conn.send(msg.upper())

    acceptor = asyncio.create_task(echo())
    replies = await asyncio.gather(*(one(i) for i in range(50)))
    await acceptor
    await asyncio.gather(*echoes)
    assert sorted(replies) == sorted(f"CLIENT {i}".encode() for i in range(50))
    assert creds.key_derivations == 1
    assert server.stats()["key_derivations"] == 1


async def test_cancelled_recv_leaves_the_connection_usable(server: argonlink.Server) -> None:
    async with argonlink.Client(*server.address, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        for _ in range(20):
            pending = asyncio.create_task(conn.recv())
            await asyncio.sleep(0.001)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
        with pytest.raises(Timeout):
            await conn.recv(timeout=0.05)
        await client.send(b"still here")
        assert await conn.recv(timeout=5) == b"still here"


async def test_messages_racing_a_cancelled_recv_are_not_lost(server: argonlink.Server) -> None:
    async with argonlink.Client(*server.address, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        received: list[bytes] = []
        sent = [str(i).encode() for i in range(300)]

        async def send_all() -> None:
            for m in sent:
                await client.send(m)
                await asyncio.sleep(0)

        sender = asyncio.create_task(send_all())
        while len(received) < len(sent):
            with contextlib.suppress(Timeout):
                received.append(await conn.recv(timeout=0.0005))
        await sender
        assert received == sent


async def test_close_drains_and_reports_clean(server: argonlink.Server) -> None:
    async with argonlink.Client(*server.address, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        for i in range(100):
            await client.send(b"m%d" % i)
        await client.close(reason="bye")
        assert [m async for m in conn] == [b"m%d" % i for i in range(100)]
        with pytest.raises(ConnectionClosedOK) as exc:
            await conn.recv()
        assert exc.value.code == 1000 and exc.value.reason == "bye"
        assert conn.close_reason == "bye"
        with pytest.raises(ConnectionClosedOK):
            await client.send(b"after close")
        await client.close()  # idempotent


async def test_abort_is_an_error_for_the_peer(server: argonlink.Server) -> None:
    async with argonlink.Client(*server.address, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        await client.send(b"before")
        await asyncio.sleep(0.05)
        client.connection.abort()
        assert await conn.recv(timeout=5) == b"before"
        with pytest.raises(ConnectionClosedError) as exc:
            async for _ in conn:
                pass
        assert "without a CLOSE" in exc.value.reason


async def test_server_close_closes_clients_with_going_away() -> None:
    srv = await argonlink.Server(password=PASSWORD, kdf=KDF).start()
    async with argonlink.Client(*srv.address, password=PASSWORD) as client:
        await srv.accept(timeout=5)
        await srv.close()
        with pytest.raises(ConnectionClosedOK) as exc:
            await client.recv(timeout=5)
        assert exc.value.code == 1001


async def test_wrong_password_raises_within_the_open_timeout(server: argonlink.Server) -> None:
    with pytest.raises(AuthenticationError):
        async with argonlink.Client(*server.address, password="wrong", open_timeout=5):
            pass
    with pytest.raises(Timeout):
        await server.accept(timeout=0.2)


async def test_password_hash_server(password: str) -> None:
    phc = argonlink.hash_password(password, KDF)
    assert phc.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    async with argonlink.Server(password_hash=phc) as srv:
        async with argonlink.Client(*srv.address, password=password) as client:
            await client.send(b"phc")
            assert await (await srv.accept(timeout=5)).recv(timeout=5) == b"phc"
        assert srv.stats()["key_derivations"] == 0
        with pytest.raises(AuthenticationError):
            await argonlink.Client(*srv.address, password="other").connect()


async def test_client_refuses_weak_or_excessive_server_costs() -> None:
    weak = argonlink.KdfParams(8 * 1024, 1, 1)
    async with argonlink.Server(password=PASSWORD, kdf=weak) as srv:
        with pytest.raises(argonlink.ProtocolError, match="floor"):
            await argonlink.Client(*srv.address, password=PASSWORD).connect()
        ok = argonlink.Client(*srv.address, password=PASSWORD, kdf_floor=weak)
        await (await ok.connect()).close()
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as srv:
        capped = argonlink.Client(
            *srv.address, password=PASSWORD, kdf_cap=argonlink.KdfParams(8 * 1024, 1, 1)
        )
        with pytest.raises(argonlink.ProtocolError, match="cap"):
            await capped.connect()
        assert capped.key_derivations == 0


def test_sync_recv_timeout_and_accept_timeout(sync_server: argonlink.sync.Server) -> None:
    with pytest.raises(Timeout):
        sync_server.accept(timeout=0.1)
    with argonlink.sync.Client(*sync_server.address, password=PASSWORD) as client:
        conn = sync_server.accept(timeout=5)
        with pytest.raises(Timeout):
            conn.recv(timeout=0.1)
        client.send(b"late")
        assert conn.recv(timeout=5) == b"late"


def test_sync_handler_server() -> None:
    def echo(conn: argonlink.sync.Connection) -> None:
        for msg in conn:
            conn.send(msg[::-1])

    with argonlink.sync.Server(password=PASSWORD, kdf=KDF, handler=echo) as srv:
        with argonlink.sync.Client(*srv.address, password=PASSWORD) as client:
            client.send(b"abc")
            assert client.recv(timeout=5) == b"cba"


def test_sync_close_waits_for_the_handlers_again_when_called_again() -> None:
    # close() is idempotent: a close that stopped waiting can be followed by one that waits
    # for the handlers still running (the pytest plugin closes every server before waiting).
    entered, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def handler(conn: argonlink.sync.Connection) -> None:
        entered.set()
        with contextlib.suppress(argonlink.ConnectionClosed):
            conn.recv()  # until the server's close ends the connection
        release.wait()
        finished.append(True)

    srv = argonlink.sync.Server(password=PASSWORD, kdf=KDF, handler=handler).start()
    with argonlink.sync.Client(*srv.address, password=PASSWORD):
        assert entered.wait(5)
        srv.close(handler_timeout=0)
    assert not finished
    release.set()
    srv.close(handler_timeout=60)
    assert finished


async def test_async_handler_server() -> None:
    async def echo(conn: argonlink.Connection) -> None:
        async for msg in conn:
            await conn.send(msg * 2)

    async with argonlink.Server(password=PASSWORD, kdf=KDF, handler=echo) as srv:
        async with argonlink.Client(*srv.address, password=PASSWORD) as client:
            await client.send(b"ab")
            assert await client.recv(timeout=5) == b"abab"


def test_no_secret_in_repr_or_errors() -> None:
    secret = "s3cret-Pa55word-xyz"
    creds = argonlink.Credentials(secret)
    srv = argonlink.sync.Server(password=secret, kdf=KDF)
    client = argonlink.sync.Client("127.0.0.1", 1, password=secret)
    texts = [repr(creds), repr(srv), repr(client), repr(creds._native)]
    with srv:
        texts.append(repr(srv))
        try:
            argonlink.sync.Client(*srv.address, password=secret + "!").connect()
        except AuthenticationError as e:
            texts.append(str(e))
    phc = argonlink.hash_password(secret, KDF)
    assert all(secret not in t and phc.split("$")[-1] not in t for t in texts), texts


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_message_size": 0},
        {"close_timeout": -1},
        {"send_buffer": 10},
        {"node_id": b"short"},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        argonlink.sync.Client("127.0.0.1", 1, password=PASSWORD, **kwargs)  # type: ignore[arg-type]


def test_bad_kdf_params_and_server_password_choice() -> None:
    with pytest.raises(ConfigError):
        argonlink.KdfParams(0, 1, 1)
    with pytest.raises(ConfigError):
        argonlink.sync.Server()
    with pytest.raises(ConfigError):
        argonlink.sync.Server(password="a", password_hash="b")
    with pytest.raises(ConfigError):
        argonlink.sync.Server(password_hash="not a phc string").start()


EXIT_SCRIPT = """
import asyncio, sys, threading, time
import argonlink, argonlink.sync

srv = argonlink.sync.Server(password="pw", kdf=argonlink.KdfParams.OWASP).start()

def late_sender():
    conn = srv.accept()
    time.sleep(float(sys.argv[1]))
    try:
        for _ in range(1000):
            conn.send(b"late")
    except argonlink.Error:
        pass

threading.Thread(target=late_sender, daemon=True).start()

async def main():
    conn = await argonlink.Client(*srv.address, password="pw").connect()
    for _ in range(50):
        asyncio.get_running_loop().create_task(conn.recv())
    await asyncio.sleep(0)

asyncio.run(main())
"""


@pytest.mark.slow
def test_interpreter_exit_while_messages_arrive_is_clean() -> None:
    """Waits that complete while the interpreter exits must not abort the process (before the
    runtime was shut down at exit, about 1 run in 7 died of SIGABRT here)."""
    import subprocess
    import sys

    for delay_ms in range(0, 40, 2):
        done = subprocess.run(
            [sys.executable, "-c", EXIT_SCRIPT, str(delay_ms / 1000)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (delay_ms, done.returncode, done.stderr[-2000:])


def test_defaults_come_from_the_native_layer() -> None:
    from argonlink import _argonlink
    from argonlink._options import DEFAULTS

    native = _argonlink.defaults()
    assert dict(DEFAULTS) == native
    assert RekeyPolicy() == RekeyPolicy(
        native["rekey_bytes"], native["rekey_frames"], native["rekey_interval"]
    )
    assert argonlink.ReconnectPolicy().as_tuple() == tuple(
        native[f"reconnect_{k}"]
        for k in ("initial_delay", "max_delay", "multiplier", "jitter", "max_attempts")
    )
    assert argonlink.KdfParams.OWASP.as_tuple() == native["kdf_floor"]
    assert argonlink.KdfParams.CLIENT_CAP.as_tuple() == native["kdf_cap"]
    assert native["max_message_size"] == argonlink.DEFAULT_MAX_MESSAGE_SIZE
    assert _argonlink.LinkOptions().max_message_size == native["max_message_size"]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        # Each is refused by the check a client runs when it dials with the policy.
        (lambda: argonlink.ReconnectPolicy(multiplier=2e6), "multiplier must be between 1"),
        (lambda: argonlink.ReconnectPolicy(jitter=float("nan")), "jitter must be between"),
        (lambda: argonlink.ReconnectPolicy(max_attempts=0), "max_attempts must be between 1"),
        (lambda: RekeyPolicy(interval=float("nan")), "interval must be a positive number"),
        (lambda: argonlink.KdfParams(64, 1, 16), "at least 8 KiB per lane"),
        (lambda: argonlink.KdfParams(2**31, 2, 2**24), "invalid Argon2 parameters"),
    ],
)
def test_policies_are_checked_by_the_native_rules(make: Any, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        make()
