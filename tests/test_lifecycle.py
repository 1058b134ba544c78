"""Connection lifecycle: keepalive, idle timeout, closing, reconnecting, password changes (key
epochs), rekeying, the connection limit, logging and the counters behind them.

Everything uses short configured intervals (tenths of a second), never the defaults. Each test
fails if its behaviour breaks; where a test could pass for the wrong reason (a connection that
stays up because nothing checks it), a control shows the mechanism at work on the same path.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import subprocess
import sys
import threading
import time
from typing import Any

import argonlink
import pytest
from argonlink import (
    AuthenticationError,
    ConnectionClosedError,
    ConnectionClosedOK,
    ReconnectPolicy,
    RekeyPolicy,
    Timeout,
    sync,
)
from lifecycle_support import (
    BlackholeRelay,
    ServerProcess,
    free_port,
    wait_until,
    wait_until_async,
)
from proxy import Direction
from support import KDF, PASSWORD

NEW_PASSWORD = "new correct horse battery staple"
WRONG_PASSWORD = "not the password at all"
KEEPALIVE: dict[str, Any] = {"ping_interval": 0.1, "ping_timeout": 0.5}
FAST_RECONNECT = ReconnectPolicy(initial_delay=0.05, max_delay=0.5)
MIB = 1024 * 1024


async def closed_with(aw: Any) -> BaseException:
    """Await ``aw`` and return the exception it raised (failing if it returned)."""
    try:
        value = await aw
    except BaseException as exc:
        return exc
    raise AssertionError(f"expected the connection to end, got {value!r}")


# --------------------------------------------------------------------------------------------
# 1. Keepalive: a peer that goes silent (no RST, no FIN) is noticed within ping_timeout


def _assert_unresponsive(exc: BaseException) -> None:
    assert isinstance(exc, ConnectionClosedError), repr(exc)
    assert exc.code == 1006
    assert "unresponsive" in exc.reason, exc.reason


async def test_keepalive_detects_a_silent_peer_async() -> None:
    async with argonlink.Server(password=PASSWORD, kdf=KDF, **KEEPALIVE) as server:
        with BlackholeRelay(server.address) as relay:
            async with argonlink.Client(*relay.address, password=PASSWORD, **KEEPALIVE) as client:
                conn = await server.accept(timeout=5)
                await client.send(b"before")
                assert await conn.recv(timeout=5) == b"before"
                relay.blackhole.set()  # from now on nothing gets through, and nothing is closed
                start = time.monotonic()
                server_end, client_end = await asyncio.gather(
                    closed_with(conn.recv(timeout=5)), closed_with(client.recv(timeout=5))
                )
                elapsed = time.monotonic() - start
                _assert_unresponsive(server_end)
                _assert_unresponsive(client_end)
                # Not before ping_timeout (0.5 s) of silence, and well within 2 s.
                assert 0.4 <= elapsed < 2.0, elapsed
                assert conn.close_code == 1006


def test_keepalive_detects_a_silent_peer_sync() -> None:
    with sync.Server(password=PASSWORD, kdf=KDF, **KEEPALIVE) as server:
        with BlackholeRelay(server.address) as relay:
            with sync.Client(*relay.address, password=PASSWORD, **KEEPALIVE) as client:
                conn = server.accept(timeout=5)
                conn.send(b"before")
                assert client.recv(timeout=5) == b"before"
                relay.blackhole.set()
                start = time.monotonic()
                with pytest.raises(ConnectionClosedError) as server_end:
                    conn.recv(timeout=5)
                with pytest.raises(ConnectionClosedError) as client_end:
                    client.recv(timeout=5)
                elapsed = time.monotonic() - start
                _assert_unresponsive(server_end.value)
                _assert_unresponsive(client_end.value)
                assert 0.4 <= elapsed < 2.0, elapsed


@pytest.mark.slow
async def test_keepalive_keeps_a_quiet_connection_up() -> None:
    """Control for the two tests above: the same path with forwarding on and no application
    traffic for three ping timeouts stays up, because PINGs and PONGs keep flowing. (A longer
    timeout than above: a machine busy enough to stall the relay thread for 0.5 s must not
    fail it.)"""
    keepalive = {"ping_interval": 0.2, "ping_timeout": 1.0}
    async with argonlink.Server(password=PASSWORD, kdf=KDF, **keepalive) as server:
        with BlackholeRelay(server.address) as relay:
            async with argonlink.Client(*relay.address, password=PASSWORD, **keepalive) as client:
                conn = await server.accept(timeout=5)
                before = {d: len(relay.records(d)) for d in Direction}
                await asyncio.sleep(3.0)
                assert not conn.closed and not client.connection.closed
                # Keepalive frames crossed in both directions meanwhile (>= 1 per ping timeout).
                for d in Direction:
                    assert len(relay.records(d)) - before[d] >= 3, d
                await client.send(b"still here")
                assert await conn.recv(timeout=5) == b"still here"
                await conn.send(b"so am I")
                assert await client.recv(timeout=5) == b"so am I"
                assert conn.stats()["messages_received"] == 1


# --------------------------------------------------------------------------------------------
# 2. idle_timeout: no application messages for that long closes the connection cleanly


@pytest.mark.parametrize("side", ["server", "client"])
async def test_idle_timeout_closes_cleanly(side: str) -> None:
    idle = {"idle_timeout": 0.3}
    server_opts = idle if side == "server" else {}
    client_opts = idle if side == "client" else {}
    async with argonlink.Server(password=PASSWORD, kdf=KDF, **server_opts) as server:
        start = time.monotonic()
        async with argonlink.Client(*server.address, password=PASSWORD, **client_opts) as client:
            conn = await server.accept(timeout=5)
            server_end, client_end = await asyncio.gather(
                closed_with(conn.recv(timeout=5)), closed_with(client.recv(timeout=5))
            )
            elapsed = time.monotonic() - start
            for end in (server_end, client_end):
                assert isinstance(end, ConnectionClosedOK), repr(end)
                assert (end.code, end.reason) == (1000, "idle timeout")
            assert 0.3 <= elapsed < 1.5, elapsed


async def test_idle_timeout_spares_a_busy_connection() -> None:
    async with argonlink.Server(password=PASSWORD, kdf=KDF, idle_timeout=0.3) as server:
        async with argonlink.Client(*server.address, password=PASSWORD) as client:
            conn = await server.accept(timeout=5)
            start = time.monotonic()
            for i in range(8):  # a message every 0.1 s: never 0.3 s without one
                await client.send(b"tick %d" % i)
                assert await conn.recv(timeout=1) == b"tick %d" % i
                await asyncio.sleep(0.1)
            assert time.monotonic() - start > 0.6
            assert not conn.closed and not client.connection.closed
            # Control: once the messages stop, the same connection does time out.
            quiet = time.monotonic()
            with pytest.raises(ConnectionClosedOK) as exc:
                await client.recv(timeout=5)
            assert exc.value.reason == "idle timeout"
            assert 0.2 <= time.monotonic() - quiet < 1.5


def test_idle_timeout_sync() -> None:
    with sync.Server(password=PASSWORD, kdf=KDF) as server:
        with sync.Client(*server.address, password=PASSWORD, idle_timeout=0.3) as client:
            conn = server.accept(timeout=5)
            for i in range(7):  # the server's messages count as traffic for the client too
                time.sleep(0.1)
                conn.send(b"%d" % i)
                assert client.recv(timeout=1) == b"%d" % i
            assert not client.connection.closed
            with pytest.raises(ConnectionClosedOK) as exc:
                conn.recv(timeout=5)
            assert (exc.value.code, exc.value.reason) == (1000, "idle timeout")


# --------------------------------------------------------------------------------------------
# 3. Closing: flushes what send() accepted; idempotent; Server.close() is 1001 for everyone


def _numbered(i: int) -> bytes:
    return i.to_bytes(4, "big") + bytes([i % 251]) * 1000


async def test_close_flushes_everything_send_accepted() -> None:
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        client = argonlink.Client(*server.address, password=PASSWORD)
        await client.connect()
        conn = await server.accept(timeout=5)
        for i in range(2000):
            await client.send(_numbered(i))
        # Nothing has been read yet; most of it is still queued on the client side.
        await client.close(reason="all sent")
        # close() returned after the peer answered CLOSE: everything is over there already.
        assert conn.closed
        received = [m async for m in conn]
        assert received == [_numbered(i) for i in range(2000)]
        with pytest.raises(ConnectionClosedOK) as exc:
            await conn.recv()
        assert (exc.value.code, exc.value.reason) == (1000, "all sent")
        assert (conn.close_code, conn.close_reason) == (1000, "all sent")
        # Idempotent, on both sides, and quick.
        start = time.monotonic()
        await client.close()
        await client.close(code=1001, reason="again")
        await conn.close()
        assert time.monotonic() - start < 0.5
        assert (conn.close_code, conn.close_reason) == (1000, "all sent")
        with pytest.raises(ConnectionClosedOK):
            await client.send(b"after close")


def test_close_flushes_everything_send_accepted_sync() -> None:
    with sync.Server(password=PASSWORD, kdf=KDF) as server:
        with sync.Client(*server.address, password=PASSWORD) as client:
            conn = server.accept(timeout=5)
            for i in range(2000):
                conn.send(_numbered(i))
            conn.close(reason="server done")
            conn.close()  # idempotent
            assert list(client) == [_numbered(i) for i in range(2000)]
            with pytest.raises(ConnectionClosedOK) as exc:
                client.recv(timeout=1)
            assert (exc.value.code, exc.value.reason) == (1000, "server done")
            client.close()
            client.close()


async def test_server_close_flushes_and_closes_every_connection_with_1001() -> None:
    server = await argonlink.Server(password=PASSWORD, kdf=KDF).start()
    clients = [argonlink.Client(*server.address, password=PASSWORD) for _ in range(3)]
    try:
        for client in clients:
            await client.connect()
        conns = [await server.accept(timeout=5) for _ in clients]
        for n, conn in enumerate(conns):
            for i in range(500):
                await conn.send(b"%d:%d" % (n, i))
        assert server.stats()["live_connections"] == 3
        by_peer = {conn.remote_address: n for n, conn in enumerate(conns)}
        peer_of = [by_peer[client.connection.local_address] for client in clients]
        await server.close()
        for conn in conns:
            assert (conn.close_code, conn.close_reason) == (1001, "server shutting down")
        for client, n in zip(clients, peer_of, strict=True):
            received = [m async for m in client]  # ends cleanly: ConnectionClosedOK
            assert received == [b"%d:%d" % (n, i) for i in range(500)]
            with pytest.raises(ConnectionClosedOK) as exc:
                await client.recv(timeout=1)
            assert exc.value.code == 1001
        await server.close()  # idempotent
        assert server.stats()["live_connections"] == 0
        with pytest.raises(ConnectionClosedOK):
            await server.accept(timeout=1)
        with pytest.raises(OSError):
            await argonlink.Client(*server.address, password=PASSWORD, open_timeout=2).connect()
    finally:
        for client in clients:
            await client.close()
        await server.close()


def test_server_close_sync() -> None:
    server = sync.Server(password=PASSWORD, kdf=KDF).start()
    try:
        with sync.Client(*server.address, password=PASSWORD) as client:
            conn = server.accept(timeout=5)
            for i in range(500):
                conn.send(b"%d" % i)
            server.close()
            assert list(client) == [b"%d" % i for i in range(500)]
            with pytest.raises(ConnectionClosedOK) as exc:
                client.recv(timeout=1)
            assert exc.value.code == 1001
    finally:
        server.close()


# --------------------------------------------------------------------------------------------
# 4. Reconnect: the server process dies (SIGKILL) and comes back on the same port


async def test_reconnect_after_the_server_process_is_killed_async() -> None:
    port = free_port()
    kdf = KDF.as_tuple()
    first = ServerProcess(port, PASSWORD, "A", kdf).start()
    second = ServerProcess(port, PASSWORD, "B", kdf)
    client = argonlink.Client("127.0.0.1", port, password=PASSWORD, reconnect=FAST_RECONNECT)
    received: list[bytes] = []
    sent: list[str] = []
    stop = asyncio.Event()

    async def read_all() -> None:  # one recv() loop for the client's whole life
        async for msg in client:
            received.append(msg)

    async def send_forever() -> None:  # a steady stream, oblivious to the drop
        i = 0
        while not stop.is_set():
            text = f"s{i}"
            await client.send(text.encode(), timeout=10)
            sent.append(text)
            i += 1
            await asyncio.sleep(0.005)

    try:
        await client.connect()
        reader = asyncio.create_task(read_all())
        sender = asyncio.create_task(send_forever())
        await wait_until_async(lambda: received == [b"greeting from A"], 5)
        await first.wait_for_async(lambda: len(first.messages()) >= 10, 5, "messages")
        assert client.reconnects == 0
        first.kill()  # mid-stream
        assert await wait_until_async(lambda: not client.connected, 5)
        # While nobody is there, a bounded send waits out its timeout instead of failing...
        start = time.monotonic()
        with pytest.raises(Timeout):
            await client.send(b"lost", timeout=0.2)
        assert time.monotonic() - start >= 0.19
        assert not sender.done()  # ...and the unbounded sender is still waiting, not failing
        sent_before_restart = len(sent)

        await asyncio.to_thread(second.start)
        conn = await client.wait_connected(timeout=10)
        assert client.connected and client.reconnects >= 1
        assert conn.remote_address == ("127.0.0.1", port)
        # The same recv() loop carries on with the new connection.
        assert await wait_until_async(lambda: len(received) == 2, 5), received
        assert received == [b"greeting from A", b"greeting from B"]
        # The stream resumes on the new server, in order, without the timed-out message.
        await second.wait_for_async(
            lambda: len(second.messages()) >= 20, 5, "messages after reconnect"
        )
        stop.set()
        await sender
        for i in range(20):
            await client.send(f"after{i}".encode(), timeout=5)
        await second.wait_for_async(lambda: "after19" in second.messages(), 5, "after19")
        got = second.messages()
        assert "lost" not in got
        assert got[-20:] == [f"after{i}" for i in range(20)]
        resumed = [int(m[1:]) for m in got[:-20]]
        assert resumed == sorted(resumed) and resumed[0] >= len(first.messages())
        assert resumed[-1] == len(sent) - 1 > sent_before_restart
        await client.close()
        await asyncio.wait_for(reader, 5)  # the close ends iteration cleanly
    finally:
        stop.set()
        await client.close()
        first.stop()
        second.stop()


def test_reconnect_after_the_server_process_is_killed_sync() -> None:
    port = free_port()
    kdf = KDF.as_tuple()
    received: list[bytes] = []
    errors: list[BaseException] = []

    def read_all(client: sync.Client) -> None:  # one recv() loop for the client's whole life
        try:
            for msg in client:
                received.append(msg)
        except BaseException as exc:
            errors.append(exc)

    with ServerProcess(port, PASSWORD, "A", kdf) as first:
        client = sync.Client("127.0.0.1", port, password=PASSWORD, reconnect=FAST_RECONNECT)
        with client:
            reader = threading.Thread(target=read_all, args=(client,), daemon=True)
            reader.start()
            assert wait_until(lambda: received == [b"greeting from A"], 5)
            for i in range(10):
                client.send(b"a%d" % i, timeout=5)
            first.wait_for(lambda: len(first.messages()) == 10, 5, "messages")
            first.kill()
            assert wait_until(lambda: not client.connected, 5)
            start = time.monotonic()
            with pytest.raises(Timeout):
                client.send(b"lost", timeout=0.2)
            assert time.monotonic() - start >= 0.19
            with ServerProcess(port, PASSWORD, "B", kdf) as second:
                client.wait_connected(timeout=10)
                assert client.connected and client.reconnects >= 1
                assert wait_until(lambda: len(received) == 2, 5), received
                assert received == [b"greeting from A", b"greeting from B"]
                for i in range(10):
                    client.send(b"b%d" % i, timeout=5)
                second.wait_for(lambda: len(second.messages()) == 10, 5, "messages")
                assert second.messages() == [f"b{i}" for i in range(10)]
                assert first.messages() == [f"a{i}" for i in range(10)]
                client.close()
                reader.join(5)
                assert not reader.is_alive() and errors == []  # close() ended the loop cleanly


# --------------------------------------------------------------------------------------------
# 5. A wrong password is never retried, reconnect policy or not


async def test_wrong_password_with_a_reconnect_policy_fails_fast_async() -> None:
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        client = argonlink.Client(
            *server.address,
            password=WRONG_PASSWORD,
            reconnect=ReconnectPolicy(initial_delay=0.01, max_delay=0.05),
        )
        start = time.monotonic()
        with pytest.raises(AuthenticationError):
            await client.connect()
        assert time.monotonic() - start < 2.0
        await asyncio.sleep(0.5)
        assert server.stats()["auth_failures"] in (1, 2)
        assert server.stats()["handshakes_failed"] == server.stats()["auth_failures"]
        assert not client.connected


def test_wrong_password_with_a_reconnect_policy_fails_fast_sync() -> None:
    with sync.Server(password=PASSWORD, kdf=KDF) as server:
        client = sync.Client(
            *server.address,
            password=WRONG_PASSWORD,
            reconnect=ReconnectPolicy(initial_delay=0.01, max_delay=0.05),
        )
        start = time.monotonic()
        with pytest.raises(AuthenticationError):
            client.connect()
        assert time.monotonic() - start < 2.0
        time.sleep(0.5)
        assert server.stats()["auth_failures"] in (1, 2)


# --------------------------------------------------------------------------------------------
# A client's view of its link when no call is waiting on it (the link must record every state
# change, not only those someone happened to be waiting for)


def test_reconnect_is_seen_when_no_call_is_waiting() -> None:
    with sync.Server(password=PASSWORD, kdf=KDF) as server:
        with sync.Client(*server.address, password=PASSWORD, reconnect=FAST_RECONNECT) as client:
            old = server.accept(timeout=5)
            old.close(reason="bye")  # the client is idle: no recv, no send in progress
            new = server.accept(timeout=5)  # it redialed on its own
            assert wait_until(lambda: client.reconnects == 1, 2)
            time.sleep(0.1)
            client.send(b"after the reconnect", timeout=1)
            assert new.recv(timeout=1) == b"after the reconnect"
            assert client.connection.handshake_hash == new.handshake_hash


def test_connected_is_false_once_the_connection_ended() -> None:
    with sync.Server(password=PASSWORD, kdf=KDF) as server:
        with sync.Client(*server.address, password=PASSWORD) as client:  # no reconnect policy
            # The server closes; close() returns once the client answered CLOSE.
            server.accept(timeout=5).close(reason="bye")
            time.sleep(0.1)
            assert not client.connected


async def test_failed_reauthentication_is_seen_when_no_call_is_waiting() -> None:
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        client = argonlink.Client(*server.address, password=PASSWORD, reconnect=FAST_RECONNECT)
        async with client:
            await server.accept(timeout=5)
            await server.set_password(NEW_PASSWORD)  # 4002, then a redial with the old password
            assert await wait_until_async(lambda: server.stats()["auth_failures"] == 1, 2)
            await asyncio.sleep(0.1)
            with pytest.raises(AuthenticationError):
                await client.wait_connected(timeout=1)


# --------------------------------------------------------------------------------------------
# 6. Password change without grace: old sessions end at once (4002), old password refused


async def test_password_change_without_grace_async() -> None:
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        before = server.stats()
        assert server.key_epoch == 1 and before["key_derivations"] == 1
        async with argonlink.Client(*server.address, password=PASSWORD) as old_client:
            old_conn = await server.accept(timeout=5)
            assert old_conn.key_epoch == old_client.connection.key_epoch == 1
            pending = asyncio.create_task(closed_with(old_client.recv(timeout=5)))
            assert await server.set_password(NEW_PASSWORD) == 2
            assert server.key_epoch == 2
            end = await pending
            assert isinstance(end, ConnectionClosedError), repr(end)
            assert end.code == 4002 and "password" in end.reason
            with pytest.raises(ConnectionClosedError) as server_end:
                await old_conn.recv(timeout=5)
            assert server_end.value.code == 4002
        with pytest.raises(AuthenticationError):
            await argonlink.Client(*server.address, password=PASSWORD, open_timeout=5).connect()
        async with argonlink.Client(*server.address, password=NEW_PASSWORD) as new_client:
            new_conn = await server.accept(timeout=5)
            assert new_conn.key_epoch == new_client.connection.key_epoch == 2
            await new_client.send(b"under the new key")
            assert await new_conn.recv(timeout=5) == b"under the new key"
        after = server.stats()
        assert after["key_derivations"] == before["key_derivations"] + 1
        assert after["password_changes"] == 1 and after["key_epoch"] == 2
        assert after["auth_failures"] == 1


def test_password_change_without_grace_sync() -> None:
    with sync.Server(password=PASSWORD, kdf=KDF) as server:
        with sync.Client(*server.address, password=PASSWORD) as old_client:
            old_conn = server.accept(timeout=5)
            assert server.set_password(NEW_PASSWORD) == 2
            with pytest.raises(ConnectionClosedError) as exc:
                old_client.recv(timeout=5)
            assert exc.value.code == 4002 and "password" in exc.value.reason
            assert wait_until(lambda: old_conn.close_code == 4002)
        with pytest.raises(AuthenticationError):
            sync.Client(*server.address, password=PASSWORD).connect()
        with sync.Client(*server.address, password=NEW_PASSWORD) as new_client:
            assert new_client.connection.key_epoch == 2
            new_client.send(b"new")
            assert server.accept(timeout=5).recv(timeout=5) == b"new"
        assert server.stats()["key_derivations"] == 2


# --------------------------------------------------------------------------------------------
# 7. Password change with a grace window: both passwords work until it ends, then 4002


async def test_password_change_with_grace() -> None:
    old_password = argonlink.Credentials(PASSWORD)  # shared: derives once per server key
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        async with argonlink.Client(*server.address, password=old_password) as live:
            live_conn = await server.accept(timeout=5)
            assert await server.set_password(NEW_PASSWORD, grace=0.5) == 2
            changed = time.monotonic()
            during = argonlink.Client(*server.address, password=old_password)
            fresh = argonlink.Client(*server.address, password=NEW_PASSWORD)
            await asyncio.gather(during.connect(), fresh.connect())
            try:
                assert during.connection.key_epoch == 1  # the old password, in the window
                assert fresh.connection.key_epoch == 2
                accepted = {(await server.accept(timeout=5)).key_epoch for _ in range(2)}
                assert accepted == {1, 2}
                # Still open at ~0.2 s: the window is not cut short.
                await asyncio.sleep(max(0.0, changed + 0.2 - time.monotonic()))
                assert time.monotonic() - changed < 0.45, "too slow to check inside the window"
                assert not live_conn.closed and not live.connection.closed
                await live.send(b"inside the window")
                assert await live_conn.recv(timeout=1) == b"inside the window"
                # Closed with 4002 once it ends (both old-epoch connections), not before.
                for client in (live, during):
                    with pytest.raises(ConnectionClosedError) as exc:
                        await client.recv(timeout=3)
                    assert exc.value.code == 4002
                assert 0.45 <= time.monotonic() - changed < 1.5
                # The new-epoch connection is untouched.
                await fresh.send(b"new epoch")
                assert not fresh.connection.closed and fresh.connection.key_epoch == 2
            finally:
                await during.close()
                await fresh.close()
        with pytest.raises(AuthenticationError):
            await argonlink.Client(*server.address, password=old_password).connect()
        assert server.stats()["key_epoch"] == 2


def test_password_change_with_grace_sync() -> None:
    with sync.Server(password=PASSWORD, kdf=KDF) as server:
        with sync.Client(*server.address, password=PASSWORD) as live:
            live_conn = server.accept(timeout=5)
            assert server.set_password(NEW_PASSWORD, grace=0.5) == 2
            changed = time.monotonic()
            with sync.Client(*server.address, password=PASSWORD) as during:
                assert during.connection.key_epoch == 1
                assert time.monotonic() - changed < 0.45, "too slow to check inside the window"
                live.send(b"inside the window")
                assert live_conn.recv(timeout=1) == b"inside the window"
                for client in (live, during):
                    with pytest.raises(ConnectionClosedError) as exc:
                        client.recv(timeout=3)
                    assert exc.value.code == 4002
                assert 0.45 <= time.monotonic() - changed < 1.5
        with pytest.raises(AuthenticationError):
            sync.Client(*server.address, password=PASSWORD).connect()
        with sync.Client(*server.address, password=NEW_PASSWORD) as fresh:
            assert fresh.connection.key_epoch == 2


# --------------------------------------------------------------------------------------------
# 8. A reconnecting client and a password change


async def test_reconnecting_client_with_the_old_password_stops_async() -> None:
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        client = argonlink.Client(*server.address, password=PASSWORD, reconnect=FAST_RECONNECT)
        async with client:
            await server.accept(timeout=5)
            pending = asyncio.create_task(closed_with(client.recv(timeout=5)))
            await asyncio.sleep(0.05)
            start = time.monotonic()
            await server.set_password(NEW_PASSWORD)
            # Told to re-authenticate, it redials at once, fails, and says so: no retry loop.
            end = await pending
            assert isinstance(end, AuthenticationError), repr(end)
            assert time.monotonic() - start < 2.0
            with pytest.raises(AuthenticationError):
                await client.send(b"x", timeout=1)
            with pytest.raises(AuthenticationError):
                await client.wait_connected(timeout=1)
            with pytest.raises(AuthenticationError):
                await client.recv(timeout=1)
            assert not client.connected
            await asyncio.sleep(0.5)
            assert server.stats()["auth_failures"] in (1, 2)


def test_reconnecting_client_with_the_old_password_stops_sync() -> None:
    with sync.Server(password=PASSWORD, kdf=KDF) as server:
        client = sync.Client(*server.address, password=PASSWORD, reconnect=FAST_RECONNECT)
        with client:
            server.accept(timeout=5)
            ended: list[BaseException] = []

            def read() -> None:
                try:
                    client.recv(timeout=5)
                except BaseException as exc:
                    ended.append(exc)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            time.sleep(0.05)
            server.set_password(NEW_PASSWORD)
            reader.join(5)
            assert len(ended) == 1 and isinstance(ended[0], AuthenticationError), ended
            with pytest.raises(AuthenticationError):
                client.send(b"x", timeout=1)
            with pytest.raises(AuthenticationError):
                client.wait_connected(timeout=1)
            time.sleep(0.5)
            assert server.stats()["auth_failures"] in (1, 2)


async def test_reconnecting_client_follows_a_password_change() -> None:
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        client = argonlink.Client(*server.address, password=PASSWORD, reconnect=FAST_RECONNECT)
        async with client:
            old_conn = await server.accept(timeout=5)
            pending = asyncio.create_task(client.recv(timeout=5))  # a recv spanning it all
            client.set_password(NEW_PASSWORD)  # for the next handshake; this one is unaffected
            await client.send(b"still the old session")
            assert await old_conn.recv(timeout=5) == b"still the old session"
            await server.set_password(NEW_PASSWORD)
            conn = await server.accept(timeout=5)  # the reconnect, under the new password
            assert conn.key_epoch == 2
            await conn.send(b"welcome back")
            assert await pending == b"welcome back"
            assert client.reconnects == 1 and client.connected
            assert client.connection.key_epoch == 2
            await client.send(b"thanks", timeout=5)
            assert await conn.recv(timeout=5) == b"thanks"
            assert old_conn.close_code == 4002
            assert server.stats()["auth_failures"] == 0


async def test_reconnecting_client_follows_a_password_change_with_grace() -> None:
    """With a grace window the client may learn the new password after the server did: it stays
    on its old session until the window ends, then reconnects under the new key."""
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        client = argonlink.Client(*server.address, password=PASSWORD, reconnect=FAST_RECONNECT)
        async with client:
            old_conn = await server.accept(timeout=5)
            pending = asyncio.create_task(client.recv(timeout=5))
            await server.set_password(NEW_PASSWORD, grace=0.3)
            changed = time.monotonic()
            client.set_password(NEW_PASSWORD)
            await asyncio.sleep(0.1)
            assert client.reconnects == 0 and not old_conn.closed
            conn = await server.accept(timeout=5)
            assert time.monotonic() - changed >= 0.25
            assert conn.key_epoch == 2 and old_conn.close_code == 4002
            await conn.send(b"welcome back")
            assert await pending == b"welcome back"
            assert client.reconnects == 1 and client.connection.key_epoch == 2
            await client.send(b"thanks", timeout=5)
            assert await conn.recv(timeout=5) == b"thanks"


# --------------------------------------------------------------------------------------------
# 9. Rekeying: traffic continues, byte-identical, across many key changes


async def test_rekey_while_streaming_100_mb() -> None:
    policy = RekeyPolicy(bytes=1 << 20, frames=1000, interval=3600)
    block = os.urandom(MIB)
    async with argonlink.Server(password=PASSWORD, kdf=KDF, rekey=policy) as server:
        async with argonlink.Client(*server.address, password=PASSWORD, rekey=policy) as client:
            conn = await server.accept(timeout=5)
            sending = client.connection  # kept: its stats outlive the link's current connection

            async def produce() -> str:
                digest = hashlib.sha256()
                for i in range(100):
                    cut = (i * 7919) % MIB
                    msg = i.to_bytes(4, "big") + block[cut:] + block[:cut]
                    digest.update(msg)
                    await client.send(msg)
                await client.close(reason="sent")
                return digest.hexdigest()

            async def consume() -> tuple[str, int, int]:
                digest, count, size = hashlib.sha256(), 0, 0
                async for msg in conn:
                    assert msg[:4] == count.to_bytes(4, "big")
                    digest.update(msg)
                    count, size = count + 1, size + len(msg)
                return digest.hexdigest(), count, size

            sent, (received, count, size) = await asyncio.gather(produce(), consume())
            assert (count, size) == (100, 100 * (MIB + 4))
            assert received == sent
            assert conn.close_reason == "sent"
            # The tasks record their rekey counts as they end, i.e. by now.
            rekeys_sent = sending.stats()["rekeys_sent"]
            assert rekeys_sent > 50, sending.stats()
            assert conn.stats()["rekeys_received"] == rekeys_sent


def test_rekey_every_three_frames_keeps_order_both_ways() -> None:
    policy = RekeyPolicy(frames=3)
    with sync.Server(password=PASSWORD, kdf=KDF, rekey=policy) as server:
        with sync.Client(*server.address, password=PASSWORD, rekey=policy) as client:
            conn = server.accept(timeout=5)
            sending = client.connection
            for i in range(1000):
                client.send(b"c%d" % i)
                conn.send(b"s%d" % i)
            assert [conn.recv(timeout=5) for _ in range(1000)] == [b"c%d" % i for i in range(1000)]
            assert [client.recv(timeout=5) for _ in range(1000)] == [
                b"s%d" % i for i in range(1000)
            ]
            client.close()
            with pytest.raises(ConnectionClosedOK):
                conn.recv(timeout=5)
            client_stats, server_stats = sending.stats(), conn.stats()
            assert client_stats["rekeys_sent"] >= 300 and server_stats["rekeys_sent"] >= 300
            assert server_stats["rekeys_received"] == client_stats["rekeys_sent"]
            assert client_stats["rekeys_received"] == server_stats["rekeys_sent"]


# --------------------------------------------------------------------------------------------
# 10. max_connections: the client beyond the limit is told "busy" (1013) at connect


async def test_max_connections_async() -> None:
    async with argonlink.Server(password=PASSWORD, kdf=KDF, max_connections=2) as server:
        first = argonlink.Client(*server.address, password=PASSWORD)
        second = argonlink.Client(*server.address, password=PASSWORD)
        await first.connect()
        await second.connect()
        conns = [await server.accept(timeout=5) for _ in range(2)]
        try:
            with pytest.raises(ConnectionClosedError) as exc:
                await argonlink.Client(*server.address, password=PASSWORD).connect()
            assert exc.value.code == 1013
            # The two admitted connections are unaffected.
            for client in (first, second):
                await client.send(b"still served")
            for conn in conns:
                assert await conn.recv(timeout=5) == b"still served"
                await conn.send(b"yes")
            for client in (first, second):
                assert await client.recv(timeout=5) == b"yes"
            # A slot frees up when a connection ends.
            await first.close()
            assert await wait_until_async(lambda: server.stats()["live_connections"] == 1)
            async with argonlink.Client(*server.address, password=PASSWORD) as third:
                conn = await server.accept(timeout=5)
                await third.send(b"my turn")
                assert await conn.recv(timeout=5) == b"my turn"
            stats = server.stats()
            assert stats["rejected_busy"] >= 1
            assert stats["auth_failures"] == 0 and stats["handshakes_ok"] == 3
        finally:
            await first.close()
            await second.close()


def test_max_connections_sync() -> None:
    with sync.Server(password=PASSWORD, kdf=KDF, max_connections=1) as server:
        with sync.Client(*server.address, password=PASSWORD) as client:
            conn = server.accept(timeout=5)
            with pytest.raises(ConnectionClosedError) as exc:
                sync.Client(*server.address, password=PASSWORD).connect()
            assert exc.value.code == 1013
            client.send(b"fine")
            assert conn.recv(timeout=5) == b"fine"
        # The refused client may hear message 2 before the server's task has counted it.
        deadline = time.monotonic() + 5
        while server.stats()["rejected_busy"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.stats()["rejected_busy"] == 1


# --------------------------------------------------------------------------------------------
# 11. Logging


async def test_failed_handshakes_and_password_changes_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="argonlink")
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        with pytest.raises(AuthenticationError):
            await argonlink.Client(*server.address, password=WRONG_PASSWORD).connect()

        def failures() -> list[logging.LogRecord]:
            return [
                r
                for r in caplog.records
                if r.name == "argonlink.net.server" and "handshake from" in r.getMessage()
            ]

        assert await wait_until_async(lambda: len(failures()) == 1, 2), caplog.text
        record = failures()[0]
        assert record.levelno == logging.INFO
        match = re.search(r"handshake from 127\.0\.0\.1:(\d+) failed", record.getMessage())
        assert match, record.getMessage()
        assert int(match.group(1)) != server.address[1]  # the peer's port, not ours

        await server.set_password(NEW_PASSWORD)
        changes = [r for r in caplog.records if "password changed" in r.getMessage()]
        assert len(changes) == 1 and changes[0].name == "argonlink.net.server"
        assert "epoch 2" in changes[0].getMessage()
    ours = [r for r in caplog.records if r.name.startswith("argonlink")]
    assert any(r.name == "argonlink.net.link" for r in ours)  # the client's side, too
    for record in ours:
        text = record.getMessage()
        for secret in (PASSWORD, WRONG_PASSWORD, NEW_PASSWORD):
            assert secret not in text, text


LATE_LOGGING_SCRIPT = """
import asyncio, logging
import argonlink

messages = []

class Keep(logging.Handler):
    def emit(self, record):
        messages.append(record.getMessage())

logging.getLogger().addHandler(Keep())

async def failed_handshake():
    async with argonlink.Server(password="pw", kdf=argonlink.KdfParams.OWASP) as server:
        try:
            await argonlink.Client(*server.address, password="wrong").connect()
        except argonlink.AuthenticationError:
            pass
        while not server.stats()["auth_failures"]:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)

asyncio.run(failed_handshake())  # logging not configured yet: the INFO record is dropped
logging.getLogger("argonlink").setLevel(logging.INFO)  # the application now asks for INFO
messages.clear()
asyncio.run(failed_handshake())
print(sum("handshake from" in m for m in messages))
"""


def test_raising_the_log_level_later_takes_effect() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LATE_LOGGING_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "1"


# --------------------------------------------------------------------------------------------
# 12. Counters: one key derivation per key, however many connections and reconnects


async def test_many_connections_one_server_key_derivation() -> None:
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        shared = argonlink.Credentials(PASSWORD)
        clients = [argonlink.Client(*server.address, password=shared) for _ in range(10)]
        await asyncio.gather(*(c.connect() for c in clients))
        for client in clients:
            await client.close()
        stats = server.stats()
        assert stats["handshakes_ok"] == 10
        assert stats["key_derivations"] == 1
        assert shared.key_derivations == 1


async def test_separate_clients_with_one_password_share_one_key_derivation() -> None:
    """Each client has its own credentials (password given as a string): the process-wide key
    cache still runs Argon2 once for the 20 of them."""
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        clients = [argonlink.Client(*server.address, password=PASSWORD) for _ in range(20)]
        await asyncio.gather(*(c.connect() for c in clients))
        assert sum(c.key_derivations for c in clients) == 1
        await asyncio.gather(*(c.close() for c in clients))


async def test_reconnects_reuse_the_client_key() -> None:
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        client = argonlink.Client(*server.address, password=PASSWORD, reconnect=FAST_RECONNECT)
        async with client:
            conn = await server.accept(timeout=5)
            for n in range(1, 3):
                pending = asyncio.create_task(client.recv(timeout=5))
                conn.abort()  # the server drops it without a word
                conn = await server.accept(timeout=5)
                await conn.send(b"round %d" % n)
                assert await pending == b"round %d" % n
                assert client.reconnects == n
            assert client.key_derivations == 1  # same server, same salt: derived once
            stats = server.stats()
            assert stats["key_derivations"] == 1 and stats["handshakes_ok"] == 3


async def test_password_changes_are_counted() -> None:
    async with argonlink.Server(password=PASSWORD, kdf=KDF) as server:
        assert await server.set_password(NEW_PASSWORD) == 2
        phc = argonlink.hash_password("third password", KDF)
        assert await server.set_password(password_hash=phc) == 3
        stats = server.stats()
        assert stats["password_changes"] == 2 and stats["key_epoch"] == 3
        assert stats["key_derivations"] == 2  # a PHC string needs no derivation
        async with argonlink.Client(*server.address, password="third password") as client:
            assert client.connection.key_epoch == 3
            assert client.key_derivations == 1


# --------------------------------------------------------------------------------------------
# reconnect=False is obeyed even by an exactly-once client (one dial, then the dial's error)


class _CountingCloser:
    """A listener that counts the connections it accepts and hangs up on each at once."""

    def __init__(self) -> None:
        import socket

        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def test_exactly_once_without_reconnect_dials_once_sync() -> None:
    dead = free_port()
    client = sync.Client("127.0.0.1", dead, password=PASSWORD, exactly_once=True, reconnect=False)
    raised: list[BaseException] = []

    def enter() -> None:
        try:
            client.__enter__()
        except BaseException as e:  # checked below
            raised.append(e)

    thread = threading.Thread(target=enter, daemon=True)
    thread.start()
    thread.join(30)  # only guards against hanging: a client that redials never returns
    assert not thread.is_alive(), "reconnect=False kept redialing"
    assert len(raised) == 1 and isinstance(raised[0], (OSError, argonlink.Error)), raised
    assert not client.connected
    closer = _CountingCloser()
    try:
        client = sync.Client(
            "127.0.0.1", closer.port, password=PASSWORD, exactly_once=True, reconnect=False
        )
        with pytest.raises((OSError, argonlink.Error)):
            client.connect()
        time.sleep(0.5)  # a redial would show up here
        assert closer.accepted == 1
    finally:
        closer.close()


async def _fails_without_hanging(aw: Any) -> None:
    task = asyncio.ensure_future(aw)
    # Only guards against hanging: a client that redials never returns.
    done, _ = await asyncio.wait({task}, timeout=30)
    if not done:
        task.cancel()
        pytest.fail("reconnect=False kept redialing")
    assert isinstance(task.exception(), (OSError, argonlink.Error)), task.exception()


async def test_exactly_once_without_reconnect_dials_once_async() -> None:
    dead = free_port()
    client = argonlink.Client(
        "127.0.0.1", dead, password=PASSWORD, exactly_once=True, reconnect=False
    )
    await _fails_without_hanging(client.__aenter__())
    closer = _CountingCloser()
    try:
        client = argonlink.Client(
            "127.0.0.1", closer.port, password=PASSWORD, exactly_once=True, reconnect=False
        )
        await _fails_without_hanging(client.connect())
        await asyncio.sleep(0.5)
        assert closer.accepted == 1
    finally:
        closer.close()


# --------------------------------------------------------------------------------------------
# Interpreter exit while a blocking open is still retrying is quiet


def test_exit_during_a_retrying_blocking_open_is_quiet() -> None:
    dead = free_port()
    code = f"""
import threading, time
from argonlink import ReconnectPolicy, sync

def run():
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.05)
    sync.Client("127.0.0.1", {dead}, password="pw", reconnect=policy).connect()

threading.Thread(target=run, daemon=True).start()
time.sleep(0.5)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "panicked" not in done.stderr and "Tokio" not in done.stderr, done.stderr
