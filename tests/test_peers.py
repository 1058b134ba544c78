"""Per-peer passwords (PROTOCOL.md §3.8): a client names an identity, the server picks that
identity's password, the handshake binds the two; rotation and revocation per identity."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import argonlink
import argonlink.sync
import pytest
from argonlink import AuthenticationError, ConfigError, ConnectionClosedError, PasswordHash
from support import KDF

PEERS = {"db-1": "password of db-1", "db-2": "password of db-2"}


async def test_each_identity_authenticates_with_its_own_password() -> None:
    async with argonlink.Server(peers=PEERS, kdf=KDF) as srv:
        async with argonlink.Client(*srv.address, password=PEERS["db-1"], identity="db-1") as c:
            conn = await srv.accept(timeout=5)
            assert conn.peer_identity == "db-1"
            assert c.identity == "db-1" and c.connection.peer_identity is None
            await c.send(b"hi")
            assert await conn.recv(timeout=5) == b"hi"
        # db-1's password does not authenticate as db-2, nor as an unknown or no identity.
        for identity in ("db-2", "db-3", None):
            with pytest.raises(AuthenticationError):
                await argonlink.Client(
                    *srv.address, password=PEERS["db-1"], identity=identity, open_timeout=5
                ).connect()
        stats = srv.stats()
        assert stats["unknown_identities"] == 2  # db-3 and the anonymous one
        assert stats["auth_failures"] == 3
        assert srv.key_epoch == 0, "no shared password"
        assert (srv.key_epoch_of("db-1"), srv.key_epoch_of("db-3")) == (1, 0)


async def test_shared_password_and_peers_together() -> None:
    peers = {"db-1": PasswordHash(argonlink.hash_password("own", KDF))}
    async with argonlink.Server(password="shared", peers=peers, kdf=KDF) as srv:
        for identity in ("edge-9", None):
            async with argonlink.Client(*srv.address, password="shared", identity=identity):
                assert (await srv.accept(timeout=5)).peer_identity == identity
        with pytest.raises(AuthenticationError):
            await argonlink.Client(*srv.address, password="shared", identity="db-1").connect()
        async with argonlink.Client(*srv.address, password="own", identity="db-1"):
            assert (await srv.accept(timeout=5)).peer_identity == "db-1"
        assert srv.stats()["key_derivations"] == 1, "the hash needs none"


async def test_rotating_one_peer_leaves_the_others_alone() -> None:
    async with argonlink.Server(peers=PEERS, kdf=KDF) as srv:
        one = await argonlink.Client(
            *srv.address, password=PEERS["db-1"], identity="db-1"
        ).connect()
        two = await argonlink.Client(
            *srv.address, password=PEERS["db-2"], identity="db-2"
        ).connect()
        await srv.accept(timeout=5)
        await srv.accept(timeout=5)
        assert await srv.set_password("new of db-1", identity="db-1") == 2
        with pytest.raises(ConnectionClosedError) as exc:
            await one.recv(timeout=5)
        assert exc.value.code == 4002
        await two.send(b"still here")
        with pytest.raises(AuthenticationError):
            await argonlink.Client(*srv.address, password=PEERS["db-1"], identity="db-1").connect()
        async with argonlink.Client(*srv.address, password="new of db-1", identity="db-1"):
            pass
        await two.close()


async def test_revoke_ends_the_identity_now_and_a_reconnecting_client_stops() -> None:
    async with argonlink.Server(password="shared", peers=PEERS, kdf=KDF) as srv:
        client = argonlink.Client(
            *srv.address, password=PEERS["db-1"], identity="db-1", reconnect=True
        )
        session = argonlink.Client(
            *srv.address, password=PEERS["db-1"], identity="db-1", exactly_once=True
        )
        other = argonlink.Client(*srv.address, password=PEERS["db-2"], identity="db-2")
        for c in (client, session, other):
            await c.connect()
        for _ in range(3):
            await srv.accept(timeout=5)
        assert srv.revoke("db-1") == 3  # two connections and the session
        for c in (client, session):
            with pytest.raises(ConnectionClosedError) as exc:
                await c.recv(timeout=5)
            assert exc.value.code == 4004
        await asyncio.sleep(0.3)
        assert not client.connected and client.reconnects == 0, "it does not come back"
        assert srv.stats()["sessions"] == 0
        await other.send(b"untouched")
        # Refused from now on, with its own password and the shared one.
        for pw in (PEERS["db-1"], "shared"):
            with pytest.raises(AuthenticationError):
                await argonlink.Client(*srv.address, password=pw, identity="db-1").connect()
        assert srv.stats()["revocations"] == 1
        # A new password admits it again.
        await srv.set_password("again", identity="db-1")
        async with argonlink.Client(*srv.address, password="again", identity="db-1"):
            pass
        for c in (client, session, other):
            await c.close()


def test_blocking_server_peers_and_revoke() -> None:
    with argonlink.sync.Server(peers=PEERS, kdf=KDF) as srv:
        with argonlink.sync.Client(*srv.address, password=PEERS["db-2"], identity="db-2") as c:
            conn = srv.accept(timeout=5)
            assert conn.peer_identity == "db-2"
            assert srv.revoke("db-2") == 1
            with pytest.raises(ConnectionClosedError):
                c.recv(timeout=5)
        assert srv.set_password("x", identity="db-2", grace=0) == 2, "epochs go on after revoke"


@pytest.mark.parametrize("identity", ["", "with space", "tab\t", "é", "x" * 256])
def test_invalid_identities_are_refused(identity: str) -> None:
    with pytest.raises(ConfigError):
        argonlink.Client("127.0.0.1", 1, password="pw", identity=identity or "\x00")
    with pytest.raises(ConfigError):
        argonlink.sync.Server(peers={identity: "pw"}, kdf=KDF).start()


def test_secrets_stay_hidden() -> None:
    phc = argonlink.hash_password("pw", KDF)
    assert phc not in repr(PasswordHash(phc))
    creds = argonlink.Credentials("secret", identity="db-1")
    assert "secret" not in repr(creds) and "db-1" in repr(creds)
    with pytest.raises(ConfigError):
        PasswordHash("not a hash")
    with pytest.raises(ConfigError):
        argonlink.Client("127.0.0.1", 1, password=creds, identity="db-2")
    with pytest.raises(ConfigError):
        argonlink.Server()


def test_a_session_knows_its_connection_as_soon_as_it_is_accepted() -> None:
    # The server's end of a session is handed out at once, to an accept() already waiting;
    # its first connection (address, identity) must be there then, not only once the
    # session has taken it over.
    with argonlink.sync.Server(peers=PEERS, kdf=KDF) as srv:
        for _ in range(20):
            seen: list[object] = []

            def accept(seen: list[object] = seen) -> None:
                conn = srv.accept(timeout=5)
                try:
                    seen.append((conn.peer_identity, conn.remote_address[0]))
                except RuntimeError as exc:
                    seen.append(exc)

            waiting = threading.Thread(target=accept)
            waiting.start()
            time.sleep(0.01)
            with argonlink.sync.Client(
                *srv.address, password=PEERS["db-1"], identity="db-1", exactly_once=True
            ):
                waiting.join(5)
            assert seen == [("db-1", "127.0.0.1")]


def test_a_lookup_function_is_asked_once_per_identity_and_its_answer_kept() -> None:
    asked: list[str] = []
    phc = argonlink.hash_password("pw of db-7", KDF)

    def lookup(identity: str) -> str | PasswordHash | None:
        asked.append(identity)
        return {"db-1": PEERS["db-1"], "db-7": PasswordHash(phc)}.get(identity)

    with argonlink.sync.Server(peers=lookup, kdf=KDF) as srv:
        for _ in range(3):
            with argonlink.sync.Client(*srv.address, password=PEERS["db-1"], identity="db-1"):
                assert srv.accept(timeout=5).peer_identity == "db-1"
        with argonlink.sync.Client(*srv.address, password="pw of db-7", identity="db-7"):
            pass
        # Unknown to the lookup: refused like a wrong password, and not asked again at once.
        for _ in range(3):
            with pytest.raises(AuthenticationError):
                argonlink.sync.Client(*srv.address, password="x", identity="nobody").connect()
        with pytest.raises(AuthenticationError):
            argonlink.sync.Client(*srv.address, password="x").connect()  # anonymous: never asked
        assert asked == ["db-1", "db-7", "nobody"]
        stats = srv.stats()
        assert stats["key_derivations"] == 1, "one for db-1's password; db-7's hash needs none"
        assert stats["unknown_identities"] == 4
        # A revoked identity is not looked up again; a new password admits it.
        srv.revoke("db-1")
        with pytest.raises(AuthenticationError):
            argonlink.sync.Client(*srv.address, password=PEERS["db-1"], identity="db-1").connect()
        assert asked == ["db-1", "db-7", "nobody"]


def test_a_lookup_that_raises_refuses_that_handshake_and_says_only_what_it_raised(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="argonlink.net.server")

    def lookup(identity: str) -> str:
        raise KeyError("secret detail " + identity)

    with argonlink.sync.Server(peers=lookup, kdf=KDF) as srv:
        with pytest.raises(AuthenticationError):
            argonlink.sync.Client(*srv.address, password="x", identity="db-9").connect()
    messages = [r.getMessage() for r in caplog.records if "lookup" in r.getMessage()]
    assert messages == [
        'looking up the password of identity "db-9" failed: the peers lookup raised KeyError'
    ]
    with pytest.raises(ConfigError):
        argonlink.sync.Server(peers=lambda_async, kdf=KDF)  # type: ignore[arg-type]


async def lambda_async(identity: str) -> str:  # not allowed: lookups run on a worker thread
    return identity
