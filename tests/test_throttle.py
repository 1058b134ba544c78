"""Online guessing, throttled (PROTOCOL.md §6): failed handshakes slow their source down, are
counted in ``stats()`` and logged with the peer address, and a wrong password and random bytes
count alike, so the throttle is no oracle either. Checked by counts and refusals, not by
timing."""

from __future__ import annotations

import logging
import os
import socket
import struct

import argonlink
import argonlink.sync
import pytest
from argonlink import AuthenticationError, ThrottlePolicy
from noise_model import MSG1_LEN, make_hello
from proxy import PARAMS_LEN, recv_exact, recv_until_closed
from support import KDF

PASSWORD = "the right password"

#: Two free failures, then a delay longer than the handshake deadline: every further
#: connection from the source is closed at once, which the test can count without a clock.
STRICT = ThrottlePolicy(
    free_failures=2, initial_delay=600.0, max_delay=600.0, global_failures_per_minute=0
)


def _server(throttle: ThrottlePolicy | bool) -> argonlink.sync.Server:
    return argonlink.sync.Server(password=PASSWORD, kdf=KDF, throttle=throttle)


def _wrong_password(address: tuple[str, int]) -> None:
    with pytest.raises(AuthenticationError):
        argonlink.sync.Client(*address, password="wrong", open_timeout=5).connect()


def _random_message1(address: tuple[str, int]) -> None:
    """A valid hello, the parameters read, then random bytes where message 1 goes: the server
    hangs up without a word, as it does for a wrong password."""
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(make_hello(b""))
        recv_exact(sock, PARAMS_LEN)
        sock.sendall(struct.pack(">H", MSG1_LEN) + os.urandom(MSG1_LEN))
        assert recv_until_closed(sock)[0] == b""


def _bytes_before_close(address: tuple[str, int]) -> bytes:
    """What a new connection gets before the server closes it: refused by the throttle, it is
    reset at once."""
    try:
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(make_hello(b""))
            return recv_until_closed(sock)[0]
    except ConnectionResetError:
        return b""


@pytest.mark.parametrize("failure", [_wrong_password, _random_message1])
def test_failures_past_the_allowance_shut_the_source_out(failure, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="argonlink.net.server")
    with _server(STRICT) as srv:
        for _ in range(3):
            failure(srv.address)
        # Slowed past the deadline: the next connection is closed before any byte, whatever
        # it brings; the right password too (the throttle knows sources, not people).
        assert _bytes_before_close(srv.address) == b""
        # A client sees a reset, a network fault to retry later (not a wrong password).
        with pytest.raises(ConnectionResetError):
            argonlink.sync.Client(*srv.address, password=PASSWORD, open_timeout=5).connect()
        stats = srv.stats()
        assert stats["auth_failures"] == 3
        assert stats["throttle_refusals"] == 2
    warnings = [
        r.getMessage() for r in caplog.records if "failed handshakes from" in r.getMessage()
    ]
    assert warnings == [
        "3 failed handshakes from 127.0.0.1: slowing it to one handshake per 600s, "
        "doubling with each further failure"
    ]


def test_within_the_allowance_nothing_is_slowed() -> None:
    with _server(STRICT) as srv:
        for _ in range(2):
            _wrong_password(srv.address)
        with argonlink.sync.Client(*srv.address, password=PASSWORD) as client:
            client.send(b"in")
            assert srv.accept(timeout=5).recv(timeout=5) == b"in"
        assert srv.stats()["throttle_refusals"] == 0


def test_a_short_delay_makes_connections_wait_instead_of_failing() -> None:
    # One free failure, then 0.2 s between handshakes: a client waits its turn and gets in.
    policy = ThrottlePolicy(free_failures=1, initial_delay=0.2, max_delay=0.2)
    with _server(policy) as srv:
        for _ in range(2):
            _wrong_password(srv.address)
        for _ in range(3):
            with argonlink.sync.Client(*srv.address, password=PASSWORD) as client:
                client.send(b"late")
                assert srv.accept(timeout=5).recv(timeout=5) == b"late"
        stats = srv.stats()
        assert stats["throttled"] >= 3 and stats["throttle_refusals"] == 0


def test_throttling_can_be_turned_off() -> None:
    with _server(False) as srv:
        for _ in range(6):
            _wrong_password(srv.address)
        with argonlink.sync.Client(*srv.address, password=PASSWORD):
            pass
        assert srv.stats()["throttled"] == srv.stats()["throttle_refusals"] == 0


def test_policies_are_checked() -> None:
    for bad in (
        {"initial_delay": 0.0},
        {"initial_delay": 5.0, "max_delay": 1.0},
        {"free_failures": -1},
        {"forget_after": 0.0},
    ):
        with pytest.raises(argonlink.ConfigError):
            ThrottlePolicy(**bad)  # type: ignore[arg-type]
    with pytest.raises(argonlink.ConfigError):
        argonlink.sync.Server(password=PASSWORD, throttle="on")  # type: ignore[arg-type]
