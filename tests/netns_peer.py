"""One host of ``test_netns.py``, run inside a network namespace with ``ip netns exec``.

    netns_peer.py serve-files    HOST PORT DEST [--keepalive I,T]
    netns_peer.py serve-echo     HOST PORT      [--keepalive I,T]
    netns_peer.py serve-one      HOST PORT      [--keepalive I,T]
    netns_peer.py send-file      HOST PORT FILE [--keepalive I,T] [--exactly-once]
                                 [--pace MBPS] [--attempts N]
    netns_peer.py send-messages  HOST PORT N    [--keepalive I,T] [--rate PER_S]
    netns_peer.py hold           HOST PORT      [--keepalive I,T]

Every role prints one JSON object per line on stdout: ``{"event": ..., "at": <monotonic>, ...}``
(CLOCK_MONOTONIC is the same clock in every process of the machine, whatever its namespace,
so the test can compare times). The password comes from the environment (NETNS_PEER_PASSWORD).

* ``serve-files``: receives files into DEST, one connection after another (``file`` or
  ``transfer-failed`` per connection; an exactly-once session is one connection).
* ``serve-echo``: one exactly-once session; echoes every message and checks that they arrive
  as 0, 1, 2, ...; prints ``messages`` with every number received when the client closes.
* ``serve-one`` / ``hold``: one plain connection that exchanges a message, then waits until
  it ends and prints ``closed`` with the code, the reason and when (the keepalive test).
* ``send-file``: sends FILE, paced to MBPS MB/s if given, printing ``progress`` about every
  MiB; a plain client that loses its connection sends again on a new one (up to N attempts),
  and the receiver resumes from its partial file. Prints ``sent`` with the receipt.
* ``send-messages``: an exactly-once client sends N numbered messages at PER_S per second,
  checks every echo, then flushes and closes; prints ``done`` with every echo's number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import argonlink
import argonlink.sync

KDF = argonlink.KdfParams.OWASP
RECONNECT = argonlink.ReconnectPolicy(initial_delay=0.1, max_delay=0.5)
WAIT = 60.0  # bound on any single wait for the peer


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "at": time.monotonic(), **fields}), flush=True)


def keepalive(spec: str | None) -> dict[str, float]:
    if not spec:
        return {}
    interval, timeout = map(float, spec.split(","))
    return {"ping_interval": interval, "ping_timeout": timeout}


def ended(exc: BaseException) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "code": getattr(exc, "code", None),
        "reason": getattr(exc, "reason", str(exc)),
    }


# --------------------------------------------------------------------------------------------
# Servers


def serve_files(args: argparse.Namespace, password: str) -> None:
    dest = Path(args.dest)
    opts = keepalive(args.keepalive)
    with argonlink.sync.Server(args.host, args.port, password=password, kdf=KDF, **opts) as srv:
        emit("ready")
        while True:
            conn = srv.accept()
            emit("connection", exactly_once=conn.exactly_once)
            try:
                receipt = conn.recv_file(dest, timeout=WAIT)
            except (argonlink.ConnectionClosed, argonlink.Timeout) as exc:
                emit("transfer-failed", **ended(exc))
                conn.abort()
                continue
            emit(
                "file",
                name=receipt.name,
                size=receipt.size,
                sha256=receipt.sha256,
                resumed_from=receipt.resumed_from,
                elapsed=receipt.elapsed,
            )
            conn.close()


async def serve_echo(args: argparse.Namespace, password: str) -> None:
    opts = keepalive(args.keepalive)
    async with argonlink.Server(args.host, args.port, password=password, kdf=KDF, **opts) as srv:
        emit("ready")
        conn = await srv.accept()
        emit("connection", exactly_once=conn.exactly_once)
        numbers: list[int] = []
        try:
            async for msg in conn:
                numbers.append(int.from_bytes(msg[:4], "big"))
                await conn.send(msg, timeout=WAIT)
            emit("messages", numbers=numbers, clean=True)
        except argonlink.ConnectionClosed as exc:
            emit("messages", numbers=numbers, clean=False, **ended(exc))


async def hold_connection(conn: argonlink.Connection | argonlink.Client) -> None:
    """Exchange one message, then wait for the end of the connection and report it."""
    await conn.send(b"hello")
    assert await conn.recv(timeout=WAIT) == b"hello"
    emit("exchanged")
    try:
        msg = await conn.recv()
        emit("closed", type="message", code=None, reason=repr(msg[:20]))
    except argonlink.ConnectionClosed as exc:
        emit("closed", **ended(exc))


async def serve_one(args: argparse.Namespace, password: str) -> None:
    opts = keepalive(args.keepalive)
    async with argonlink.Server(args.host, args.port, password=password, kdf=KDF, **opts) as srv:
        emit("ready")
        async with await srv.accept() as conn:
            await hold_connection(conn)


# --------------------------------------------------------------------------------------------
# Clients


def send_file(args: argparse.Namespace, password: str) -> None:
    path = Path(args.file)
    pace = args.pace * 1e6 if args.pace else 0.0
    start = time.monotonic()
    next_report = 0

    def progress(done: int, total: int) -> None:
        nonlocal next_report
        if done >= next_report or done == total:
            emit("progress", done=done, total=total)
            next_report = done + (1 << 20)
        if pace:  # no faster than `pace` bytes per second since the start
            ahead = done / pace - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)

    opts: dict[str, Any] = dict(keepalive(args.keepalive), open_timeout=10)
    if args.exactly_once:
        opts.update(exactly_once=True, reconnect=RECONNECT)
    credentials = argonlink.Credentials(password)  # one Argon2 run for every attempt
    for attempt in range(1, args.attempts + 1):
        try:
            client = argonlink.sync.Client(args.host, args.port, password=credentials, **opts)
            with client:
                receipt = client.send_file(path, progress=progress, timeout=WAIT)
                emit(
                    "sent",
                    sha256=receipt.sha256,
                    size=receipt.size,
                    resumed_from=receipt.resumed_from,
                    attempt=attempt,
                    reconnects=client.reconnects,
                    elapsed=time.monotonic() - start,
                )
                return
        except (argonlink.ConnectionClosed, argonlink.Timeout, OSError) as exc:
            emit("attempt-failed", attempt=attempt, **ended(exc))
            if args.exactly_once or attempt == args.attempts:
                raise
            time.sleep(0.5)


async def send_messages(args: argparse.Namespace, password: str) -> None:
    opts = keepalive(args.keepalive)
    client = argonlink.Client(
        args.host,
        args.port,
        password=password,
        exactly_once=True,
        reconnect=RECONNECT,
        open_timeout=10,
        **opts,
    )
    count, filler = args.count, b"\xa5" * 60
    echoes: list[int] = []
    async with client:
        emit("connected")

        async def receive() -> None:
            while len(echoes) < count:
                msg = await client.recv(timeout=WAIT)
                echoes.append(int.from_bytes(msg[:4], "big"))

        receiver = asyncio.create_task(receive())
        start = time.monotonic()
        for i in range(count):
            await client.send(i.to_bytes(4, "big") + filler, timeout=WAIT)
            if i % 100 == 0:
                emit("progress", sent=i + 1, connected=client.connected)
            ahead = (i + 1) / args.rate - (time.monotonic() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)
        await client.flush(timeout=WAIT)
        await asyncio.wait_for(receiver, WAIT)
        emit("done", echoes=echoes, reconnects=client.reconnects)


async def hold(args: argparse.Namespace, password: str) -> None:
    opts = keepalive(args.keepalive)
    async with argonlink.Client(args.host, args.port, password=password, **opts) as client:
        await hold_connection(client)


def main() -> None:
    password = os.environ.pop("NETNS_PEER_PASSWORD")
    parser = argparse.ArgumentParser()
    parser.add_argument("role")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("arg", nargs="?")
    parser.add_argument("--keepalive", metavar="INTERVAL,TIMEOUT")
    parser.add_argument("--exactly-once", action="store_true")
    parser.add_argument("--pace", type=float, help="MB/s")
    parser.add_argument("--attempts", type=int, default=1)
    parser.add_argument("--rate", type=float, default=500.0, help="messages per second")
    args = parser.parse_args()
    if args.role == "serve-files":
        args.dest = args.arg
        serve_files(args, password)
    elif args.role == "serve-echo":
        asyncio.run(serve_echo(args, password))
    elif args.role == "serve-one":
        asyncio.run(serve_one(args, password))
    elif args.role == "send-file":
        args.file = args.arg
        send_file(args, password)
    elif args.role == "send-messages":
        args.count = int(args.arg)
        asyncio.run(send_messages(args, password))
    elif args.role == "hold":
        asyncio.run(hold(args, password))
    else:
        sys.exit(f"unknown role {args.role!r}")


if __name__ == "__main__":
    main()
