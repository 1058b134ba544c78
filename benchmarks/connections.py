"""Server memory per idle authenticated connection, and the most connections held at once.

A server process (``argonlink.sync.Server``; a thread accepts every connection and keeps it)
and a client process (asyncio ``argonlink.Client``s sharing one ``Credentials``, opened
``--concurrency`` at a time and kept open, idle). Both raise ``RLIMIT_NOFILE`` to the hard
limit first.

* **Memory**: after ``--warmup`` connections (which absorb one-time costs: runtime threads,
  allocator arenas), the server's resident set (``VmRSS``) is read; then ``--connections`` more
  are opened and accepted, and the resident set read again. Reported: the difference divided
  by the number of connections, in KiB. Idle means authenticated (the server's application
  holds each ``Connection``) with keepalive at its defaults, and no message in flight.
* **Most connections**: the client keeps opening connections until one fails, or
  ``--max-connections`` are open, or ``--max-seconds`` pass; reported with what stopped it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import threading
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import _harness as h
import argonlink
import argonlink.sync


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def server_main(ctl: Pipe) -> None:
    try:
        limit = raise_nofile()
        with argonlink.sync.Server(
            h.HOST, 0, password=h.PASSWORD, kdf=argonlink.KdfParams.OWASP, accept_backlog=4096
        ) as srv:
            held: list[argonlink.sync.Connection] = []

            def accept_all() -> None:
                while True:
                    try:
                        held.append(srv.accept())
                    except Exception:
                        return

            threading.Thread(target=accept_all, daemon=True).start()
            ctl.send(("address", srv.address, limit))
            while True:
                command = ctl.recv()
                if command == "stop":
                    break
                # "status": wait until the count settles at what the client says it opened
                want = command[1]
                deadline = time.monotonic() + 60
                while len(held) < want and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.5)  # let freshly accepted connections settle
                ctl.send(("status", len(held), rss_bytes()))
            for conn in held:
                conn.abort()
    except BaseException as exc:
        ctl.send(("error", f"{type(exc).__name__}: {exc}"))


def client_main(address: tuple[str, int], ctl: Pipe, args: dict[str, Any]) -> None:
    try:
        asyncio.run(client_async(address, ctl, args))
    except BaseException as exc:
        ctl.send(("error", f"{type(exc).__name__}: {exc}"))


async def client_async(address: tuple[str, int], ctl: Pipe, args: dict[str, Any]) -> None:
    limit = raise_nofile()
    creds = argonlink.Credentials(h.PASSWORD)
    held: list[argonlink.Client] = []
    sem = asyncio.Semaphore(args["concurrency"])

    async def open_one() -> argonlink.Client:
        async with sem:
            cli = argonlink.Client(*address, password=creds, open_timeout=30)
            await cli.connect()
            return cli

    async def open_many(n: int) -> BaseException | None:
        results = await asyncio.gather(*(open_one() for _ in range(n)), return_exceptions=True)
        failure = None
        for r in results:
            if isinstance(r, BaseException):
                failure = failure or r
            else:
                held.append(r)
        return failure

    ctl.send(("limit", limit))
    while True:
        command = ctl.recv()
        if command == "stop":
            break
        _, n = command
        failure = await open_many(n)
        why = None if failure is None else f"{type(failure).__name__}: {failure}"
        ctl.send(("opened", len(held), why))
    for cli in held:
        cli._link.abort() if cli._native is not None else None


def ask(pipe: Pipe, message: Any, timeout: float) -> Any:
    pipe.send(message)
    if not pipe.poll(timeout):
        raise TimeoutError(f"no answer to {message!r}")
    answer = pipe.recv()
    if answer[0] == "error":
        raise RuntimeError(answer[1])
    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--connections", type=int, default=2000, help="for the memory (2000)")
    parser.add_argument("--max-connections", type=int, default=20000, help="cap (20000)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="cap (120)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--step", type=int, default=2000, help="connections per step (2000)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    srv_pipe, srv_child = h.MP.Pipe()
    cli_pipe, cli_child = h.MP.Pipe()
    server = h.MP.Process(target=server_main, args=(srv_child,), daemon=True)
    server.start()
    client = None
    out: dict[str, Any] = {}
    try:
        if not srv_pipe.poll(60):
            raise TimeoutError("the server did not start")
        first = srv_pipe.recv()
        if first[0] == "error":
            raise RuntimeError(first[1])
        _, address, server_limit = first
        client = h.MP.Process(
            target=client_main,
            args=(tuple(address), cli_child, {"concurrency": args.concurrency}),
            daemon=True,
        )
        client.start()
        if not cli_pipe.poll(60):
            raise TimeoutError("the client did not start")
        _, client_limit = cli_pipe.recv()

        _, opened, why = ask(cli_pipe, ("open", args.warmup), 120)
        _, accepted, rss0 = ask(srv_pipe, ("status", opened), 120)
        _, opened, why = ask(cli_pipe, ("open", args.connections), 300)
        _, accepted2, rss1 = ask(srv_pipe, ("status", opened), 120)
        added = accepted2 - accepted
        per_conn = (rss1 - rss0) / added if added > 0 else None
        out["memory"] = {
            "baseline_connections": accepted,
            "baseline_rss_bytes": rss0,
            "connections": added,
            "rss_bytes": rss1,
            "per_connection_bytes": per_conn,
        }
        if per_conn is not None:
            print(
                f"server RSS {rss0 / 2**20:.1f} MiB with {accepted} connections, "
                f"{rss1 / 2**20:.1f} MiB with {accepted2}: {per_conn / 1024:.1f} KiB each",
                flush=True,
            )

        started = time.monotonic()
        stopped_by = None
        while why is None:
            if opened >= args.max_connections:
                stopped_by = f"the benchmark's cap of {args.max_connections}"
                break
            if time.monotonic() - started > args.max_seconds:
                stopped_by = f"the benchmark's time cap of {args.max_seconds:.0f} s"
                break
            n = min(args.step, args.max_connections - opened)
            _, opened, why = ask(cli_pipe, ("open", n), args.max_seconds + 120)
            h.progress(f"  {opened} connections open")
        if why is not None:
            stopped_by = f"a failed connect: {why}"
        _, accepted3, rss2 = ask(srv_pipe, ("status", opened), 120)
        out["most"] = {
            "client_open": opened,
            "server_accepted": accepted3,
            "server_rss_bytes": rss2,
            "stopped_by": stopped_by,
            "nofile_limit": {"server": server_limit, "client": client_limit},
        }
        print(
            f"most connections held: {accepted3} (client {opened}); stopped by {stopped_by}; "
            f"server RSS {rss2 / 2**20:.0f} MiB; RLIMIT_NOFILE {server_limit}",
            flush=True,
        )
    finally:
        for pipe in (cli_pipe, srv_pipe):
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for proc in (client, server):
            h.stop(proc, 20)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
