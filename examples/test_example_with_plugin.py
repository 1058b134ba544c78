"""Testing replication code against real argonlink servers with the pytest plugin.

The first half is the code under test, as it would live in your package: a node's key-value
store served over argonlink, and ``replicate()``, which pushes one record to every peer and
reports which peers applied it. The second half tests it with the plugin's fixtures.

With argonlink installed, the plugin is active on its own (``pytest11`` entry point)::

    python -m pytest examples/test_example_with_plugin.py

From a source tree whose installed metadata predates the entry point, load it by hand::

    python -m pytest -p argonlink.pytest_plugin examples/test_example_with_plugin.py
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import argonlink
import argonlink.sync
import pytest

Peer = tuple[str, int]

# --------------------------------------------------------------------------------------------
# The code under test


@dataclass(frozen=True)
class Record:
    key: str
    value: bytes
    version: int


def encode(record: Record) -> bytes:
    body = {"key": record.key, "value": record.value.hex(), "version": record.version}
    return json.dumps(body).encode()


def decode(data: bytes) -> Record:
    body = json.loads(data)
    return Record(body["key"], bytes.fromhex(body["value"]), body["version"])


def ack(record: Record, applied: bool) -> bytes:
    return json.dumps({"key": record.key, "version": record.version, "applied": applied}).encode()


class Store:
    """One node's records; the newest version of a key wins."""

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}
        self._lock = threading.Lock()

    def put(self, record: Record) -> bool:
        with self._lock:
            current = self._records.get(record.key)
            if current is not None and current.version >= record.version:
                return False
            self._records[record.key] = record
            return True

    def get(self, key: str) -> Record | None:
        with self._lock:
            return self._records.get(key)

    def handle(self, conn: argonlink.sync.Connection) -> None:
        """The server's connection handler: apply each record, acknowledge it."""
        for msg in conn:  # ends when the peer closes
            record = decode(msg)
            conn.send(ack(record, self.put(record)))


def read_only_handler(conn: argonlink.sync.Connection) -> None:
    """A replica in maintenance mode: acknowledges every record without applying it."""
    for msg in conn:
        conn.send(ack(decode(msg), applied=False))


def replicate(
    record: Record, peers: list[Peer], password: str, *, timeout: float = 5.0
) -> dict[Peer, bool]:
    """Push ``record`` to every peer, one after the other; which peers applied it."""
    applied: dict[Peer, bool] = {}
    for host, port in peers:
        with argonlink.sync.Client(host, port, password=password, open_timeout=timeout) as client:
            client.send(encode(record))
            reply = json.loads(client.recv(timeout=timeout))
            applied[(host, port)] = bool(reply["applied"])
    return applied


async def replicate_async(
    record: Record, peers: list[Peer], password: str, *, timeout: float = 5.0
) -> dict[Peer, bool]:
    """``replicate``, with every peer at once."""

    async def push(host: str, port: int) -> bool:
        async with argonlink.Client(host, port, password=password, open_timeout=timeout) as client:
            await client.send(encode(record))
            reply = json.loads(await client.recv(timeout=timeout))
            return bool(reply["applied"])

    results = await asyncio.gather(*(push(host, port) for host, port in peers))
    return dict(zip(peers, results, strict=True))


# --------------------------------------------------------------------------------------------
# The tests

RECORD = Record("user:42", b"alice@example.com", version=1)


def test_replicates_to_every_peer(argonlink_server_factory, argonlink_password) -> None:
    stores = [Store(), Store()]
    servers = [argonlink_server_factory(handler=store.handle) for store in stores]
    peers = [server.address for server in servers]

    assert replicate(RECORD, peers, argonlink_password) == dict.fromkeys(peers, True)
    assert all(store.get(RECORD.key) == RECORD for store in stores)


def test_an_older_version_does_not_overwrite(argonlink_server_factory, argonlink_password) -> None:
    store = Store()
    peer = argonlink_server_factory(handler=store.handle).address
    newer = Record(RECORD.key, b"alice@example.org", version=2)

    assert replicate(newer, [peer], argonlink_password) == {peer: True}
    assert replicate(RECORD, [peer], argonlink_password) == {peer: False}
    assert store.get(RECORD.key) == newer


def test_a_wrong_password_is_refused(argonlink_server_factory) -> None:
    store = Store()
    peer = argonlink_server_factory(handler=store.handle).address

    with pytest.raises(argonlink.AuthenticationError):
        replicate(RECORD, [peer], "not the cluster password")
    assert store.get(RECORD.key) is None


def test_a_stopped_peer_is_an_error(argonlink_server_factory, argonlink_password) -> None:
    server = argonlink_server_factory(handler=Store().handle)
    server.close()  # teardown copes with servers a test closed itself

    with pytest.raises(ConnectionRefusedError):
        replicate(RECORD, [server.address], argonlink_password)


@pytest.mark.argonlink(handler=read_only_handler)
def test_a_read_only_peer_acknowledges_without_applying(argonlink_client) -> None:
    argonlink_client.send(encode(RECORD))
    reply = json.loads(argonlink_client.recv(timeout=5))
    assert reply == {"key": RECORD.key, "version": RECORD.version, "applied": False}


def test_the_wire_format_seen_by_a_scripted_peer(argonlink_server, argonlink_password) -> None:
    # No handler: the test plays the peer, one message at a time.
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(replicate, RECORD, [argonlink_server.address], argonlink_password)
        conn = argonlink_server.accept(timeout=5)
        assert decode(conn.recv(timeout=5)) == RECORD
        conn.send(ack(RECORD, applied=True))
        assert result.result(timeout=5) == {argonlink_server.address: True}


@pytest.mark.asyncio
async def test_async_replication_reaches_peers_at_once(
    argonlink_server_factory, argonlink_password
) -> None:
    # Blocking servers serve their handlers in threads, so async code can talk to them.
    stores = [Store() for _ in range(3)]
    peers = [argonlink_server_factory(handler=store.handle).address for store in stores]

    assert await replicate_async(RECORD, peers, argonlink_password) == dict.fromkeys(peers, True)
    assert all(store.get(RECORD.key) == RECORD for store in stores)


@pytest.mark.asyncio
async def test_async_replication_against_a_scripted_peer(
    argonlink_async_server, argonlink_password
) -> None:
    peer = argonlink_async_server.address
    pushing = asyncio.create_task(replicate_async(RECORD, [peer], argonlink_password))
    conn = await argonlink_async_server.accept(timeout=5)
    assert decode(await conn.recv(timeout=5)) == RECORD
    await conn.send(ack(RECORD, applied=False))
    assert await pushing == {peer: False}
