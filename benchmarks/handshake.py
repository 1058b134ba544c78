"""Handshake latency: how long a client takes to open an authenticated link.

A server process (``argonlink.sync.Server`` whose handler greets each connection with one
message and then waits for the client to close) and a client process that opens and closes
``--iterations`` connections one after the other, timing each:

* **connect**: ``Client.connect()`` until it returns (TCP connect, hello, parameters, Noise
  messages 1 and 2, CONFIRM queued);
* **first message**: from the same start to the arrival of the server's greeting (the server
  had decrypted CONFIRM and handed the connection to its handler);
* **cycle**: the whole ``connect`` + first message + clean close (CLOSE exchanged both ways).

Key cases: **cached** (one ``argonlink.Credentials`` for all connections, so Argon2 ran once,
before timing: what every connection after a process's first costs) and **cold** (a fresh
password object per connection, so every connection runs Argon2 on the client) with the
default RFC 9106 costs (64 MiB, 3 passes, 4 lanes) and with OWASP's (19 MiB, 2 passes, 1 lane).
For comparison: a Python ``ssl`` TLS 1.3 connection (full handshake with a P-256 certificate,
no resumption, until the first message) and a plain TCP connect to first byte.
Medians and 99th percentiles.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import _harness as h
import argonlink
import argonlink.sync
from throughput import OPENSSL_CONF, TLS_HOSTNAME, make_certificate, tls_environment

GREETING = b"hello"

CASES: dict[str, str] = {
    "cached": "argonlink, key cached",
    "cold-owasp": "argonlink, cold Argon2 (OWASP: 19 MiB, t=2, p=1)",
    "cold-rfc9106": "argonlink, cold Argon2 (RFC 9106: 64 MiB, t=3, p=4)",
    "tls": "Python ssl TLS 1.3, full handshake",
    "tcp": "plain TCP connect",
}


class Spec:
    def __init__(self, case: str, iterations: int, tls_dir: str) -> None:
        self.case, self.iterations, self.tls_dir = case, iterations, tls_dir
        self.timeout = 60 + iterations * (3.0 if case.startswith("cold") else 0.1)

    @property
    def kdf(self) -> argonlink.KdfParams:
        return (
            argonlink.KdfParams.RFC9106
            if self.case == "cold-rfc9106"
            else argonlink.KdfParams.OWASP
        )


def greet(conn: argonlink.sync.Connection) -> None:
    conn.send(GREETING)
    for _ in conn:  # until the client closes
        pass


def server(spec: Spec, report: Pipe) -> dict[str, Any]:
    if spec.case in ("tls", "tcp"):
        return socket_server(spec, report)
    with argonlink.sync.Server(
        h.HOST, 0, password=h.PASSWORD, kdf=spec.kdf, handler=greet, max_connections=4
    ) as srv:
        report.send(("address", srv.address))
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        while True:  # serves until the parent stops this process
            time.sleep(3600)


def socket_server(spec: Spec, report: Pipe) -> dict[str, Any]:
    from throughput import tls_context

    ctx = tls_context(spec, server=True) if spec.case == "tls" else None  # type: ignore[arg-type]
    with socket.create_server((h.HOST, 0), backlog=64) as listener:
        report.send(("address", listener.getsockname()[:2]))
        for _ in range(spec.iterations + 1):
            sock, _ = listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with sock:
                if ctx is not None:
                    try:
                        sock = ctx.wrap_socket(sock, server_side=True)
                    except OSError:
                        continue
                sock.sendall(GREETING)
                sock.recv(1)
    return {}


def client(spec: Spec, address: Any) -> dict[str, Any]:
    host, port = address
    connect, first, cycle = [], [], []
    if spec.case in ("tls", "tcp"):
        from throughput import tls_context

        ctx = tls_context(spec, server=False) if spec.case == "tls" else None  # type: ignore[arg-type]
        for i in range(spec.iterations + 1):
            t0 = time.perf_counter()
            sock = socket.create_connection((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ctx is not None:
                sock = ctx.wrap_socket(sock, server_hostname=TLS_HOSTNAME)
            t1 = time.perf_counter()
            data = sock.recv(len(GREETING))
            t2 = time.perf_counter()
            sock.close()
            t3 = time.perf_counter()
            if data != GREETING:
                raise ValueError(f"greeting {data!r}")
            if i:  # the first one warms up
                connect.append(t1 - t0)
                first.append(t2 - t0)
                cycle.append(t3 - t0)
    else:
        cached = argonlink.Credentials(h.PASSWORD)
        for i in range(spec.iterations + 1):
            password: Any = cached if spec.case == "cached" else h.PASSWORD
            t0 = time.perf_counter()
            cli = argonlink.sync.Client(host, port, password=password, open_timeout=60)
            cli.connect()
            t1 = time.perf_counter()
            data = cli.recv(timeout=30)
            t2 = time.perf_counter()
            cli.close()
            t3 = time.perf_counter()
            if data != GREETING:
                raise ValueError(f"greeting {data!r}")
            if i:
                connect.append(t1 - t0)
                first.append(t2 - t0)
                cycle.append(t3 - t0)
    return {"connect": connect, "first_message": first, "cycle": cycle}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000, help="cached/TLS/TCP (2000)")
    parser.add_argument("--cold-iterations", type=int, default=20, help="cold Argon2 (20)")
    parser.add_argument("--only", default=",".join(CASES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    out: dict[str, Any] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="argonlink-bench-") as tls_dir:
        make_certificate(Path(tls_dir))
        (Path(tls_dir) / "openssl.cnf").write_text(OPENSSL_CONF)
        for case in (c for c in CASES if c in args.only.split(",")):
            n = args.cold_iterations if case.startswith("cold") else args.iterations
            spec = Spec(case, n, tls_dir)
            try:
                with tls_environment(tls_dir):
                    _, samples = h.run_pair(
                        server, (spec,), client, (spec,), spec.timeout, server_result=False
                    )
            except Exception as exc:
                failed = True
                out[case] = {"name": CASES[case], "error": f"{type(exc).__name__}: {exc}"}
                h.progress(f"{CASES[case]}: FAILED {exc}")
                continue
            entry: dict[str, Any] = {"name": CASES[case], "iterations": n}
            for what, values in samples.items():
                entry[what] = {
                    "median_ms": h.scaled(h.median(values), 1e3),
                    "p99_ms": h.scaled(h.percentile(values, 99), 1e3),
                }
            out[case] = entry
            print(
                f"{CASES[case]:<52} connect {entry['connect']['median_ms']:8.3f} ms "
                f"(p99 {entry['connect']['p99_ms']:.3f})  first message "
                f"{entry['first_message']['median_ms']:8.3f} ms "
                f"(p99 {entry['first_message']['p99_ms']:.3f})  cycle "
                f"{entry['cycle']['median_ms']:.3f} ms",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
