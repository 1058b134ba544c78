"""Load and slowloris: 1000 clients at once against a server in its own process, and 1000 idle
sockets that try to keep a real client out.

The work is done by ``benchmarks/load.py`` (which also prints the same figures from the command
line); these tests assert what must hold (every message delivered exactly once, no errors, the
real client served) and print the figures (``pytest -s`` or ``-rP`` shows them). They assert no
timings: the machine may be slow or busy.
"""

from __future__ import annotations

import asyncio
import importlib.util
import resource
import socket
import sys
from pathlib import Path
from types import ModuleType

import argonlink
import pytest
from lifecycle_support import wait_until_async
from proxy import PARAMS_LEN, Direction, Proxy
from support import KDF, PASSWORD

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "load.py"
CLIENTS = 1000
MESSAGES = 100
IDLE = 1000
#: Descriptors this process and the server process need, with room to spare.
NEEDED_FDS = 2100

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/PID/status (Linux only)"
)


def _load_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("argonlink_load_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


load = _load_benchmark()


@pytest.fixture
def many_fds() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the server process inherits it), or
    skip when even that is too low for a thousand connections."""
    limit = load.raise_nofile_limit()
    if limit < NEEDED_FDS:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        pytest.skip(
            f"RLIMIT_NOFILE: {limit} file descriptors (hard limit {hard}), "
            f"{NEEDED_FDS} needed for {CLIENTS} connections; raise it with 'ulimit -n'"
        )


# --------------------------------------------------------------------------------------------
# 1000 clients x 100 request/response messages


@pytest.mark.usefixtures("many_fds")
@pytest.mark.slow
async def test_1000_clients_100_messages_each_all_delivered_once() -> None:
    report = await load.run_load(CLIENTS, MESSAGES, 64, timeout=60)
    print()
    print(report.summary())
    assert report.errors == []
    assert report.server_errors == []
    assert report.connected == CLIENTS
    # Every echo arrived and matched (the client checks each one byte for byte), and the
    # server saw each client's messages exactly once, in order (0, 1, 2, ... 99).
    assert report.delivered == report.server_received == CLIENTS * MESSAGES
    assert report.ok
    stats = report.server_stats
    assert stats["handshakes_ok"] == CLIENTS
    assert stats["handshakes_failed"] == stats["handshakes_evicted"] == 0
    assert stats["rejected_busy"] == 0
    assert stats["live_connections"] == 0  # every client closed cleanly
    # One Argon2 run on each side, not one per client.
    assert report.key_derivations == 1
    assert stats["key_derivations"] == 1


# --------------------------------------------------------------------------------------------
# Slowloris: idle sockets do not keep a real client out


@pytest.mark.usefixtures("many_fds")
@pytest.mark.parametrize("mode", ["silent", "partial-hello"])
@pytest.mark.slow
async def test_1000_idle_connections_do_not_keep_a_real_client_out(mode: str) -> None:
    """1000 sockets that send nothing (or 6 of the 12 hello bytes) against the default cap of
    256 pending handshakes: the oldest are evicted as new ones arrive, the real client that
    comes next is served, and the handshake deadline cuts the rest."""
    report = await load.run_slowloris(IDLE, mode, handshake_timeout=5.0, timeout=20)
    print()
    print(report.summary())
    assert report.opened == IDLE
    assert report.client_ok, report.client_error
    # The server took every idle socket and kept at most 256 of them pending.
    assert report.failed_before_client + report.pending_before_client == IDLE
    assert report.pending_before_client <= report.max_pending_handshakes
    stats = report.server_stats
    assert stats["handshakes_ok"] == 1  # the real client, and only it
    assert stats["handshakes_evicted"] >= IDLE - report.max_pending_handshakes
    # Those still pending when the client came were cut at their deadline: none left.
    assert report.still_open_after_deadline == 0
    assert stats["pending_handshakes"] == 0


async def test_an_evicted_handshake_is_not_reported_as_a_wrong_password() -> None:
    """A client whose handshake the server evicts at the pending-handshake cap (a burst of
    connections, or a slowloris) while it derives its key must not end with
    AuthenticationError: that error is final, and a reconnecting client never retries it.

    The server drops an evicted handshake exactly as it drops a wrong password (it closes
    without a word, docs/PROTOCOL.md §6), and a client that has not yet completed a handshake
    with this server key takes that for a wrong password. Here the client's handshake is the
    only one (cap 1); an idle socket that arrives after the server sent its parameters evicts
    it. The same happens to some clients of a burst larger than the cap (see
    ``benchmarks/load.py --default-limits``)."""
    async with argonlink.Server(password=PASSWORD, kdf=KDF, max_pending_handshakes=1) as server:
        with Proxy(server.address, raw=True) as proxy:
            client = argonlink.Client(
                *proxy.address,
                password=PASSWORD,
                open_timeout=10,
                reconnect=argonlink.ReconnectPolicy(initial_delay=0.05, max_delay=0.2),
            )
            connecting = asyncio.create_task(client.connect())

            def params_sent() -> bool:
                conns = proxy.connections
                return bool(conns) and len(conns[0].forwarded(Direction.S2C)) >= PARAMS_LEN

            try:
                assert await wait_until_async(params_sent, 5)
                # The client is deriving its key now (Argon2: tens of milliseconds at least).
                with socket.create_connection(server.address):
                    assert await wait_until_async(
                        lambda: server.stats()["handshakes_evicted"] == 1, 5
                    )
                    await asyncio.wait_for(connecting, 15)
                # The client redialled: the eviction was taken for the network fault it is.
                assert client.connected
                assert await wait_until_async(lambda: server.stats()["handshakes_ok"] == 1, 5)
                assert server.stats()["auth_failures"] == 0
            finally:
                connecting.cancel()
                await client.close()
