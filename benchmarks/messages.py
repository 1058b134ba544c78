"""Small messages: request/response round trips and pipelined one-way messages, per second.

Two processes on loopback (see ``_harness.py``), ``--size`` bytes per message (default 64):

* **rtt**: the client sends a message and waits for the server's echo, ``--round-trips``
  times; reported as round trips per second (and the median single round trip in µs).
* **pipelined**: the client sends ``--messages`` messages as fast as it can; the server
  receives every one (checking its length) and answers a 1-byte acknowledgement after the
  last. Messages per second on the client's clock, first send to the acknowledgement.

Variants: argonlink blocking and asyncio; Python ``ssl`` (TLS 1.3, TLS_AES_256_GCM_SHA384)
blocking and asyncio streams; plain TCP with Python blocking sockets (``TCP_NODELAY`` for the
round trips); ``multiprocessing.connection`` (``send_bytes``/``recv_bytes``, HMAC-authenticated,
not encrypted); and the tokio program in ``benches/tcp_ceiling.rs`` (Rust on both ends, no
crypto) as the ceiling. Every variant runs ``--repeat`` times, interleaved; medians. Also
reported: the context switches of both processes (all threads) per round trip or message, the
count of thread hand-offs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Client as MpClient
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import Listener as MpListener
from pathlib import Path
from typing import Any

import _harness as h
import argonlink
import argonlink.sync
from throughput import OPENSSL_CONF, TLS_HOSTNAME, make_certificate, tls_environment

ACK = b"\x06"
AUTHKEY = b"argonlink benchmark"

VARIANTS: dict[str, str] = {
    "argonlink-sync": "argonlink blocking",
    "argonlink-async": "argonlink asyncio",
    "tls-sync": "Python ssl TLS 1.3, blocking",
    "tls-async": "asyncio streams + ssl",
    "tcp": "plain TCP, Python blocking",
    "mpc": "multiprocessing.connection",
    "tokio": "plain TCP, tokio (Rust) both ends",
}
MODES = {
    "rtt": ["argonlink-sync", "argonlink-async", "tls-sync", "tls-async", "tcp", "mpc", "tokio"],
    "pipelined": ["argonlink-sync", "argonlink-async", "tls-sync", "tcp", "mpc", "tokio"],
}


class Spec:
    def __init__(self, variant: str, mode: str, count: int, size: int, tls_dir: str) -> None:
        self.variant, self.mode, self.count, self.size = variant, mode, count, size
        self.tls_dir = tls_dir
        self.timeout = 120.0


def tls_ctx(spec: Spec, *, server: bool) -> ssl.SSLContext:
    from throughput import tls_context

    return tls_context(spec, server=server)  # type: ignore[arg-type]


def recv_exactly(sock: socket.socket, view: memoryview) -> None:
    done, size = 0, len(view)
    while done < size:
        n = sock.recv_into(view[done:], size - done)
        if n == 0:
            raise EOFError(f"end of stream after {done} of {size} bytes")
        done += n


def drain(sock: socket.socket, total: int) -> None:
    buf = bytearray(256 * 1024)
    view = memoryview(buf)
    while total > 0:
        n = sock.recv_into(view, min(len(buf), total))
        if n == 0:
            raise EOFError(f"end of stream with {total} bytes to go")
        total -= n


# --------------------------------------------------------------------------------------------
# Servers: report the address, serve one client, return a small dict


def context_switches() -> int:
    """Context switches (voluntary and not) of every thread of this process so far: each is a
    thread going to sleep or being put off the CPU, the cost of every hand-off."""
    total = 0
    for status in Path("/proc/self/task").glob("*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def server(spec: Spec, report: Pipe) -> dict[str, Any]:
    before = context_switches()
    result = serve(spec, report)
    return result | {"switches": context_switches() - before}


def client(spec: Spec, address: Any) -> dict[str, Any]:
    before = context_switches()
    result = run_client(spec, address)
    return result | {"switches": context_switches() - before}


def serve(spec: Spec, report: Pipe) -> dict[str, Any]:
    if spec.variant == "argonlink-async":
        return asyncio.run(argonlink_async_server(spec, report))
    if spec.variant == "tls-async":
        return asyncio.run(streams_server(spec, report))
    if spec.variant == "argonlink-sync":
        return argonlink_sync_server(spec, report)
    if spec.variant == "mpc":
        return mpc_server(spec, report)
    return socket_server(spec, report)


def run_client(spec: Spec, address: Any) -> dict[str, Any]:
    if spec.variant == "argonlink-async":
        return asyncio.run(argonlink_async_client(spec, address))
    if spec.variant == "tls-async":
        return asyncio.run(streams_client(spec, address))
    if spec.variant == "argonlink-sync":
        return argonlink_sync_client(spec, address)
    if spec.variant == "mpc":
        return mpc_client(spec, address)
    return socket_client(spec, address)


def argonlink_sync_server(spec: Spec, report: Pipe) -> dict[str, Any]:
    with argonlink.sync.Server(
        h.HOST, 0, password=h.PASSWORD, kdf=argonlink.KdfParams.OWASP
    ) as srv:
        report.send(("address", srv.address))
        with srv.accept(timeout=spec.timeout) as conn:
            if spec.mode == "rtt":
                for _ in range(spec.count):
                    conn.send(conn.recv())
            else:
                for _ in range(spec.count):
                    if len(conn.recv()) != spec.size:
                        raise ValueError("wrong length")
                conn.send(ACK)
            for _ in conn:
                raise ValueError("a message after the last one")
    return {}


def exchange(
    spec: Spec, send: Callable[[bytes], object], receive: Callable[[], object]
) -> dict[str, Any]:
    """The timed part of every blocking client: ``spec.count`` round trips, each timed, or as
    many sends and then the server's acknowledgement (``receive`` returns it)."""
    payload = bytes(spec.size)
    if spec.mode == "rtt":
        samples = []
        start = time.perf_counter()
        for _ in range(spec.count):
            t = time.perf_counter()
            send(payload)
            receive()
            samples.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
        return {"elapsed": elapsed, "median_rtt": h.median(samples)}
    start = time.perf_counter()
    for _ in range(spec.count):
        send(payload)
    if receive() != ACK:
        raise ValueError("bad acknowledgement")
    return {"elapsed": time.perf_counter() - start}


def argonlink_sync_client(spec: Spec, address: Any) -> dict[str, Any]:
    with argonlink.sync.Client(*address, password=h.PASSWORD) as cli:
        return exchange(spec, cli.send, cli.recv)


async def argonlink_async_server(spec: Spec, report: Pipe) -> dict[str, Any]:
    async with argonlink.Server(
        h.HOST, 0, password=h.PASSWORD, kdf=argonlink.KdfParams.OWASP
    ) as srv:
        report.send(("address", srv.address))
        async with await srv.accept(timeout=spec.timeout) as conn:
            if spec.mode == "rtt":
                for _ in range(spec.count):
                    await conn.send(await conn.recv())
            else:
                for _ in range(spec.count):
                    if len(await conn.recv()) != spec.size:
                        raise ValueError("wrong length")
                await conn.send(ACK)
            async for _ in conn:
                raise ValueError("a message after the last one")
    return {}


async def argonlink_async_client(spec: Spec, address: Any) -> dict[str, Any]:
    payload = bytes(spec.size)
    async with argonlink.Client(*address, password=h.PASSWORD) as cli:
        if spec.mode == "rtt":
            samples = []
            start = time.perf_counter()
            for _ in range(spec.count):
                t = time.perf_counter()
                await cli.send(payload)
                await cli.recv()
                samples.append(time.perf_counter() - t)
            elapsed = time.perf_counter() - start
            return {"elapsed": elapsed, "median_rtt": h.median(samples)}
        start = time.perf_counter()
        for _ in range(spec.count):
            await cli.send(payload)
        if await cli.recv() != ACK:
            raise ValueError("bad acknowledgement")
        return {"elapsed": time.perf_counter() - start}


def socket_server(spec: Spec, report: Pipe) -> dict[str, Any]:
    with socket.create_server((h.HOST, 0)) as listener:
        report.send(("address", listener.getsockname()[:2]))
        listener.settimeout(spec.timeout)
        sock, _ = listener.accept()
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if spec.variant == "tls-sync":
        sock = tls_ctx(spec, server=True).wrap_socket(sock, server_side=True)
    with sock:
        if spec.mode == "rtt":
            buf = bytearray(spec.size)
            view = memoryview(buf)
            for _ in range(spec.count):
                recv_exactly(sock, view)
                sock.sendall(buf)
        else:
            drain(sock, spec.count * spec.size)
            sock.sendall(ACK)
        sock.recv(1)
    return {}


def socket_client(spec: Spec, address: Any) -> dict[str, Any]:
    sock = socket.create_connection(tuple(address), timeout=spec.timeout)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if spec.variant == "tls-sync":
        sock = tls_ctx(spec, server=False).wrap_socket(sock, server_hostname=TLS_HOSTNAME)
    # The echo (or the one-byte acknowledgement) lands in a buffer allocated once.
    view = memoryview(bytearray(spec.size if spec.mode == "rtt" else len(ACK)))

    def receive() -> bytes:
        recv_exactly(sock, view)
        return ACK if spec.mode != "rtt" and view == ACK else b""

    with sock:
        return exchange(spec, sock.sendall, receive)


async def streams_server(spec: Spec, report: Pipe) -> dict[str, Any]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(spec.count):
                writer.write(await reader.readexactly(spec.size))
                await writer.drain()
            await reader.read(1)
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
            done.set_result(None)
        except Exception as exc:
            done.set_exception(exc)

    srv = await asyncio.start_server(serve, h.HOST, 0, ssl=tls_ctx(spec, server=True))
    async with srv:
        report.send(("address", srv.sockets[0].getsockname()[:2]))
        await asyncio.wait_for(done, spec.timeout)
    return {}


async def streams_client(spec: Spec, address: Any) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(
        *address, ssl=tls_ctx(spec, server=False), server_hostname=TLS_HOSTNAME
    )
    payload = bytes(spec.size)
    samples = []
    start = time.perf_counter()
    for _ in range(spec.count):
        t = time.perf_counter()
        writer.write(payload)
        await writer.drain()
        await reader.readexactly(spec.size)
        samples.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 10)
    return {"elapsed": elapsed, "median_rtt": h.median(samples)}


def mpc_server(spec: Spec, report: Pipe) -> dict[str, Any]:
    with MpListener((h.HOST, 0), authkey=AUTHKEY) as listener:
        report.send(("address", listener.address))
        with listener.accept() as conn:
            if spec.mode == "rtt":
                for _ in range(spec.count):
                    conn.send_bytes(conn.recv_bytes())
            else:
                for _ in range(spec.count):
                    if len(conn.recv_bytes()) != spec.size:
                        raise ValueError("wrong length")
                conn.send_bytes(ACK)
            with contextlib.suppress(EOFError):
                conn.recv_bytes()
    return {}


def mpc_client(spec: Spec, address: Any) -> dict[str, Any]:
    with MpClient(tuple(address), authkey=AUTHKEY) as conn:
        return exchange(spec, conn.send_bytes, conn.recv_bytes)


# --------------------------------------------------------------------------------------------


def run_once(spec: Spec, ceiling: Path | None) -> dict[str, Any]:
    if spec.variant == "tokio":
        if ceiling is None:
            raise RuntimeError("the tokio ceiling was not built")
        elapsed, _ = h.run_ceiling(ceiling, spec.mode, spec.count, spec.size, spec.timeout)
        return {"elapsed": elapsed}
    tls = spec.variant.startswith("tls")
    with tls_environment(spec.tls_dir) if tls else contextlib.nullcontext():
        served, result = h.run_pair(server, (spec,), client, (spec,), spec.timeout)
    # Both processes, per message (round trip or pipelined message); setup included.
    return dict(result) | {"switches": (served["switches"] + result["switches"]) / spec.count}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="bytes per message (64)")
    parser.add_argument("--round-trips", type=int, default=20_000, help="per run (20000)")
    parser.add_argument("--messages", type=int, default=1_000_000, help="per run (1000000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (3)")
    parser.add_argument("--modes", default="rtt,pipelined")
    parser.add_argument("--only", default=",".join(VARIANTS), help="variants (all)")
    parser.add_argument("--ceiling", type=Path, help="tcp_ceiling program (else: built)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    only = [v for v in args.only.split(",") if v]
    modes = [m for m in args.modes.split(",") if m]
    ceiling = args.ceiling
    if ceiling is None and "tokio" in only:
        ceiling = h.build_ceiling()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {m: {} for m in modes}
    with tempfile.TemporaryDirectory(prefix="argonlink-bench-") as tls_dir:
        make_certificate(Path(tls_dir))
        (Path(tls_dir) / "openssl.cnf").write_text(OPENSSL_CONF)
        for round_ in range(1, args.repeat + 1):
            for mode in modes:
                count = args.round_trips if mode == "rtt" else args.messages
                for v in (v for v in MODES[mode] if v in only):
                    spec = Spec(v, mode, count, args.size, tls_dir)
                    try:
                        r = run_once(spec, ceiling)
                        r["per_s"] = count / r["elapsed"]
                        shown = f"{r['per_s']:10.0f}/s"
                    except Exception as exc:
                        r = {"error": f"{type(exc).__name__}: {exc}"}
                        shown = "    FAILED"
                    results[mode].setdefault(v, []).append(r)
                    h.progress(f"round {round_}/{args.repeat} {mode:<9} {VARIANTS[v]:<34} {shown}")
                    if "error" in r:
                        h.progress(f"    {r['error']}")
    summary: dict[str, Any] = {"size": args.size, "modes": {}}
    for mode, by_variant in results.items():
        summary["modes"][mode] = {}
        for v, runs in by_variant.items():
            rates = [r["per_s"] for r in runs if "per_s" in r]
            rtts = [r["median_rtt"] for r in runs if r.get("median_rtt")]
            switches = [r["switches"] for r in runs if r.get("switches") is not None]
            summary["modes"][mode][v] = {
                "name": VARIANTS[v],
                "median_per_s": h.median(rates),
                "median_rtt_us": h.scaled(h.median(rtts), 1e6),
                "switches_per_message": h.median(switches),
                "runs": runs,
            }
            med = h.median(rates)
            rtt_us = h.scaled(h.median(rtts), 1e6)
            rtt = "" if rtt_us is None else f"  (median round trip {rtt_us:.0f} µs)"
            print(f"{mode:<9} {VARIANTS[v]:<34} {med or 0:>10.0f}/s{rtt}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    failed = any("error" in r for m in results.values() for rs in m.values() for r in rs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
