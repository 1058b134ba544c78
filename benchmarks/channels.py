"""Channels and requests: aggregate throughput over many channels, head-of-line latency beside
a bulk transfer, and requests per second with many outstanding.

Two processes on loopback (see ``_harness.py``), argonlink asyncio on both ends:

* **throughput**: ``--size-mib`` MiB (default 512) in 1 MiB messages, over 1, 4 and 16 channels
  of one connection at once (each channel its share), and over the connection's own messages
  (the default channel) as the baseline; MB/s on the client's clock, first send to the last
  channel's acknowledgement.
* **latency**: 64-byte request/response round trips on one channel (``request()``), one at a
  time, ``--round-trips`` of them, with the link idle and while another channel of the same
  connection streams 1 MiB messages as fast as it can; p50 and p99 in µs.
* **requests**: ``--requests`` 64-byte requests over one connection with ``--outstanding`` in
  flight (argonlink ``request()`` / ``serve_requests``), against ``multiprocessing.connection``
  (the same requests pipelined over one authenticated connection, the same number in flight:
  it has no ids, so replies come back in order) and a gRPC unary call on ``grpc.aio`` with raw
  bytes (no protobuf), the same number in flight (skipped with a note when ``grpcio`` is not
  installed).

Every measurement runs ``--repeat`` times, interleaved; medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from multiprocessing.connection import Client as MpClient
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import Listener as MpListener
from pathlib import Path
from typing import Any

import _harness as h
import argonlink

PASSWORD = "channels benchmark"
AUTHKEY = b"argonlink benchmark"
MIB = 1 << 20
CHANNEL_COUNTS = (1, 4, 16)


# ---- argonlink server: drains channels, answers requests ----


def argonlink_server(report: Pipe) -> None:
    async def main() -> None:
        async with argonlink.Server(
            "127.0.0.1", 0, password=PASSWORD, kdf=argonlink.KdfParams.OWASP, throttle=False
        ) as server:
            report.send(("address", server.address))
            conn = await server.accept(timeout=60)

            async def drain(ch: argonlink.Channel) -> None:
                total = 0
                async for m in ch:
                    total += len(m)
                await ch.send(total.to_bytes(8, "big"))
                ch.finish()

            async def drain_default() -> None:
                total = 0
                async for m in conn:
                    if m == b"end":
                        await conn.send(total.to_bytes(8, "big"))
                        total = 0
                    else:
                        total += len(m)

            async def channels() -> None:
                tasks = set()
                while True:
                    try:
                        ch = await conn.accept_channel()
                    except argonlink.ConnectionClosed:
                        return
                    task = asyncio.create_task(drain(ch))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)

            def echo(data: bytes) -> bytes:
                return data

            await asyncio.gather(
                drain_default(),
                channels(),
                conn.serve_requests(echo, concurrency=1024),
                return_exceptions=True,
            )

    asyncio.run(main())


def argonlink_client(spec: dict[str, Any], address: tuple[str, int]) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        host, port = address
        out: dict[str, Any] = {}
        async with argonlink.Client(
            host, port, password=PASSWORD, kdf_floor=argonlink.KdfParams.OWASP
        ) as client:
            conn = client.connection
            block = b"x" * MIB
            total = spec["size_mib"] * MIB
            await conn.request(b"warm up", timeout=10)

            # Throughput over the default channel and over N channels.
            started = time.perf_counter()
            for _ in range(total // MIB):
                await conn.send(block)
            await conn.send(b"end")
            assert int.from_bytes(await conn.recv(timeout=120), "big") == total
            out["default"] = total / (time.perf_counter() - started) / 1e6
            for n in CHANNEL_COUNTS:
                chans = [await conn.open_channel(f"bulk{i}") for i in range(n)]

                async def push(ch: argonlink.Channel, count: int) -> None:
                    for _ in range(count):
                        await ch.send(block)
                    ch.finish()
                    got = int.from_bytes(await ch.recv(timeout=120), "big")
                    assert got == count * MIB, got

                started = time.perf_counter()
                await asyncio.gather(*(push(ch, total // MIB // n) for ch in chans))
                out[f"channels{n}"] = total / (time.perf_counter() - started) / 1e6

            # Head-of-line: one small request at a time, idle and beside a bulk channel.
            def rtts(samples: list[float]) -> dict[str, float | None]:
                return {
                    "p50_us": h.percentile(samples, 50),
                    "p99_us": h.percentile(samples, 99),
                }

            small = b"r" * 64
            samples = []
            for _ in range(spec["round_trips"]):
                t = time.perf_counter()
                await conn.request(small, timeout=10)
                samples.append((time.perf_counter() - t) * 1e6)
            out["idle"] = rtts(samples)
            bulk = await conn.open_channel("bulk beside")
            stop = asyncio.Event()

            async def stream() -> None:
                while not stop.is_set():
                    await bulk.send(block)
                bulk.finish()
                await bulk.recv(timeout=120)

            streaming = asyncio.create_task(stream())
            await asyncio.sleep(0.2)  # the bulk transfer is in full swing
            samples = []
            for _ in range(spec["round_trips"]):
                t = time.perf_counter()
                await conn.request(small, timeout=10)
                samples.append((time.perf_counter() - t) * 1e6)
            stop.set()
            await streaming
            out["busy"] = rtts(samples)

            # Requests per second, many outstanding.
            limit = asyncio.Semaphore(spec["outstanding"])

            async def one() -> None:
                async with limit:
                    await conn.request(small, timeout=30)

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(spec["requests"])))
            out["rps"] = spec["requests"] / (time.perf_counter() - started)
        return out

    return asyncio.run(main())


# ---- multiprocessing.connection: pipelined echo ----


def mpc_server(report: Pipe) -> None:
    with MpListener(("127.0.0.1", 0), authkey=AUTHKEY) as listener:
        report.send(("address", listener.address))
        with listener.accept() as conn:
            while True:
                try:
                    msg = conn.recv_bytes()
                except EOFError:
                    return
                conn.send_bytes(msg)


def mpc_client(spec: dict[str, Any], address: tuple[str, int]) -> dict[str, Any]:
    small = b"r" * 64
    n, window = spec["requests"], spec["outstanding"]
    with MpClient(address, authkey=AUTHKEY) as conn:
        sent = threading.Semaphore(window)

        def send_all() -> None:
            for _ in range(n):
                sent.acquire()
                conn.send_bytes(small)

        started = time.perf_counter()
        sender = threading.Thread(target=send_all)
        sender.start()
        for _ in range(n):
            conn.recv_bytes()
            sent.release()
        sender.join()
        return {"rps": n / (time.perf_counter() - started)}


# ---- gRPC unary, raw bytes ----

GRPC_METHOD = "/bench.Echo/Call"


def grpc_server(report: Pipe) -> None:
    import grpc

    async def main() -> None:
        async def call(request: bytes, context: Any) -> bytes:
            return request

        handler = grpc.method_handlers_generic_handler(
            "bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)}
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        report.send(("address", ("127.0.0.1", port)))
        await server.wait_for_termination()

    asyncio.run(main())


def grpc_client(spec: dict[str, Any], address: tuple[str, int]) -> dict[str, Any]:
    import grpc

    async def main() -> dict[str, Any]:
        async with grpc.aio.insecure_channel(f"{address[0]}:{address[1]}") as channel:
            call = channel.unary_unary(GRPC_METHOD)
            await call(b"warm up")
            limit = asyncio.Semaphore(spec["outstanding"])
            small = b"r" * 64

            async def one() -> None:
                async with limit:
                    await call(small)

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(spec["requests"])))
            return {"rps": spec["requests"] / (time.perf_counter() - started)}

    return asyncio.run(main())


def grpc_missing() -> str | None:
    try:
        import grpc  # noqa: F401
    except ImportError:
        return "grpcio is not installed (pip install grpcio)"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=512, help="MiB per throughput run")
    parser.add_argument("--round-trips", type=int, default=2000, help="per latency run")
    parser.add_argument("--requests", type=int, default=20_000, help="per requests run")
    parser.add_argument("--outstanding", type=int, default=256, help="requests in flight")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    spec = {
        "size_mib": args.size_mib,
        "round_trips": args.round_trips,
        "requests": args.requests,
        "outstanding": args.outstanding,
    }
    runs: dict[str, list[dict[str, Any]]] = {"argonlink": [], "mpc": [], "grpc": []}
    missing = grpc_missing()
    for i in range(args.repeat):
        h.progress(f"round {i + 1}/{args.repeat}")
        _, res = h.run_pair(
            argonlink_server, (), argonlink_client, (spec,), 600, server_result=False
        )
        runs["argonlink"].append(res)
        _, res = h.run_pair(mpc_server, (), mpc_client, (spec,), 300, server_result=False)
        runs["mpc"].append(res)
        if missing is None:
            _, res = h.run_pair(grpc_server, (), grpc_client, (spec,), 300, server_result=False)
            runs["grpc"].append(res)

    def med(kind: str, *path: str) -> float | None:
        values = []
        for r in runs[kind]:
            v: Any = r
            for p in path:
                v = v[p]
            if v is not None:
                values.append(float(v))
        return h.median(values)

    a = "argonlink"
    result: dict[str, Any] = {
        "spec": spec,
        "throughput_mb_s": {"default channel": med(a, "default")}
        | {f"{n} channels": med(a, f"channels{n}") for n in CHANNEL_COUNTS},
        "latency_us": {
            "idle": {"p50": med(a, "idle", "p50_us"), "p99": med(a, "idle", "p99_us")},
            "beside bulk": {"p50": med(a, "busy", "p50_us"), "p99": med(a, "busy", "p99_us")},
        },
        "requests_per_s": {
            "argonlink request()": med(a, "rps"),
            "multiprocessing.connection (pipelined)": med("mpc", "rps"),
            "gRPC unary (grpc.aio)": med("grpc", "rps") if missing is None else None,
        },
        "notes": [] if missing is None else [f"gRPC row skipped: {missing}"],
        "runs": runs,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
