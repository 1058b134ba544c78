"""Many clients against one server process, and idle sockets that try to starve it.

What it measures
----------------
**Load** (the default): one echo server in a child process (``argonlink.Server``, asyncio,
``kdf=KdfParams.OWASP``) and ``--clients`` asyncio clients in this process, all connected at
the same time. Every client sends ``--messages`` request/response messages of ``--size`` bytes
(each waits for its echo before sending the next), all clients at once. The clients share one
``argonlink.Credentials``, so Argon2 runs once on each side, not once per client. The
server gets room for the burst of simultaneous connects (``max_pending_handshakes`` and
``accept_backlog`` at twice the clients); ``--default-limits`` keeps the library's defaults
(256 and 128) and shows what a larger burst does to them.

Checks: the server verifies that each client's messages arrive exactly once and in order, every
client verifies each echo byte for byte, and no client or server call may fail. Figures:

* round-trip latency (``send`` to the echo's ``recv``, seen by the client's event loop, so it
  includes the time 1000 coroutines wait for their turn): p50, p99, max;
* the server process's memory from ``/proc/PID/status``: ``VmRSS`` when it listens (before),
  with every client connected and idle, and its peak during the run (``VmHWM``, reset just
  before the clients connect, and ``VmRSS`` sampled every 20 ms); per-connection memory is the
  growth from *before* divided by the number of connected clients;
* the time to connect every client and the time of the exchange, with messages per second.

**Slowloris** (``--slowloris N``): the server (default limits: 256 pending handshakes,
``--handshake-timeout``) receives N TCP connections that send nothing (``--mode silent``) or
the first bytes of a hello and then nothing (``--mode partial-hello``); then a real client
connects and exchanges a message. Figures: the time from the start of its ``connect`` to the
echo, how many idle sockets the server evicted at the cap, and how long until the rest were cut
by the handshake deadline.

The script only reports; it exits 1 when a check failed. ``tests/test_load.py`` runs the same
code with the default sizes and asserts the checks (never the timings).

Running
-------
::

    . .venv/bin/activate
    python benchmarks/load.py                                # 1000 clients x 100 x 64 B
    python benchmarks/load.py --clients 2000 --messages 500 --size 1024
    python benchmarks/load.py --default-limits                # the same burst, default limits
    python benchmarks/load.py --slowloris 1000 --mode partial-hello
    python benchmarks/load.py --json load.json

Each connection needs a file descriptor in this process and one in the server's: the script
raises the soft ``RLIMIT_NOFILE`` to the hard limit and refuses to run when that is too low.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import argonlink

KDF = argonlink.KdfParams.OWASP
PASSWORD_ENV = "ARGONLINK_LOAD_PASSWORD"
#: The first 6 of the 12 hello bytes (docs/PROTOCOL.md §3.1): magic and protocol version.
PARTIAL_HELLO = b"ALNK\x00\x01"
#: Descriptors besides the connections' (interpreter, pipes, the runtime, the test runner).
SPARE_FDS = 100


# --------------------------------------------------------------------------------------------
# File descriptors and memory


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (children inherit it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fds_needed(connections: int) -> int:
    return connections + SPARE_FDS


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


class RssSampler:
    """Samples a process's VmRSS in a thread; ``peak_kib`` is the largest value seen."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._pid, self._interval = pid, interval
        self._stop = threading.Event()
        self.peak_kib = 0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, KeyError):
                self.peak_kib = max(self.peak_kib, proc_status(self._pid)["VmRSS"])
            self._stop.wait(self._interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5)


# --------------------------------------------------------------------------------------------
# The server process: an echo server that checks what it receives and answers commands on stdin


def message(client: int, seq: int, size: int) -> bytes:
    """Message ``seq`` of ``client``: both numbers, then filler that depends on them."""
    head = client.to_bytes(4, "big") + seq.to_bytes(4, "big")
    fill = bytes([(client * 31 + seq) % 251])
    return head + fill * max(0, size - len(head))


class EchoServer:
    """Echoes every message and checks that each client's numbers arrive as 0, 1, 2, ..."""

    def __init__(self) -> None:
        self.next_seq: dict[int, int] = {}
        self.received = 0
        self.errors: list[str] = []
        self.handler_errors = 0

    async def handle(self, conn: argonlink.Connection) -> None:
        try:
            async for msg in conn:
                client, seq = int.from_bytes(msg[:4], "big"), int.from_bytes(msg[4:8], "big")
                expected = self.next_seq.get(client, 0)
                if seq != expected and len(self.errors) < 20:
                    self.errors.append(f"client {client}: got message {seq}, expected {expected}")
                self.next_seq[client] = seq + 1
                self.received += 1
                await conn.send(msg)
        except argonlink.ConnectionClosed as exc:
            self.handler_errors += 1
            if len(self.errors) < 20:
                self.errors.append(f"connection ended abnormally: {exc!r}")

    def report(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "clients_seen": len(self.next_seq),
            "per_client": sorted(set(self.next_seq.values())),
            "errors": self.errors,
            "handler_errors": self.handler_errors,
        }


async def serve(options: dict[str, Any]) -> None:
    password = os.environ.pop(PASSWORD_ENV)
    echo = EchoServer()
    server = argonlink.Server(
        "127.0.0.1", 0, password=password, kdf=KDF, handler=echo.handle, **options
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with server:
        print(json.dumps({"port": server.address[1]}), flush=True)
        while line := (await reader.readline()).decode().strip():
            reply: dict[str, Any] = {}
            if line == "stats":
                reply = {"server": server.stats(), "echo": echo.report()}
            elif line == "reset-peak":
                # Linux >= 4.0: "5" resets VmHWM to the current RSS.
                try:
                    Path("/proc/self/clear_refs").write_text("5")
                    reply = {"ok": True}
                except OSError as exc:
                    reply = {"ok": False, "error": str(exc)}
            else:
                reply = {"error": f"unknown command {line!r}"}
            print(json.dumps(reply), flush=True)


class ServerProcess:
    """``serve`` in a child process; ``command()`` talks to it over its stdin and stdout."""

    def __init__(self, password: str, **options: Any) -> None:
        self._password = password
        self._options = options
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self._lines: queue.Queue[str] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, name="server-out", daemon=True)
        # A file, not a pipe: a chatty server must never block on a full pipe. Closed by stop().
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115

    def start(self, timeout: float = 60.0) -> Self:
        env = dict(os.environ, **{PASSWORD_ENV: self._password})
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "serve", json.dumps(self._options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self._pump_thread.start()
        self.port = int(self._read(timeout)["port"])
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")  # end of output: the process is gone

    def _read(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            line = ""
        if not line:
            raise RuntimeError(f"the server process did not answer: {self.stderr()}")
        value: dict[str, Any] = json.loads(line)
        return value

    def command(self, cmd: str, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    async def command_async(self, cmd: str, timeout: float = 30.0) -> dict[str, Any]:
        return await asyncio.to_thread(self.command, cmd, timeout)

    def memory(self) -> dict[str, int]:
        return proc_status(self.pid)

    def stderr(self) -> str:
        """The end of what the server wrote to stderr."""
        with contextlib.suppress(ValueError, OSError):
            self._stderr.seek(0)
            return self._stderr.read()[-3000:]
        return ""

    def stop(self) -> None:
        """Close the server's stdin (it closes and exits), killing it if it does not."""
        if self.proc is not None:
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            if self._pump_thread.is_alive():
                self._pump_thread.join(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# Load


@dataclass
class LoadReport:
    clients: int
    messages: int
    size: int
    server_options: dict[str, Any] = field(default_factory=dict)
    connected: int = 0
    delivered: int = 0
    errors: list[str] = field(default_factory=list)
    error_counts: dict[str, int] = field(default_factory=dict)
    server_received: int = 0
    server_errors: list[str] = field(default_factory=list)
    server_stats: dict[str, Any] = field(default_factory=dict)
    key_derivations: int = 0
    connect_seconds: float = 0.0
    exchange_seconds: float = 0.0
    rtt_p50_ms: float = 0.0
    rtt_p99_ms: float = 0.0
    rtt_max_ms: float = 0.0
    rss_before_kib: int = 0
    rss_connected_kib: int = 0
    rss_peak_kib: int = 0
    hwm_kib: int = 0
    rss_after_kib: int = 0

    def note_errors(self, stage: str, outcomes: list[Any]) -> None:
        """Count the exceptions among ``outcomes`` by type; keep a few as examples."""
        failures = [r for r in outcomes if isinstance(r, BaseException)]
        kinds = Counter(type(r).__name__ for r in failures)
        for kind, n in kinds.items():
            self.error_counts[f"{stage}: {kind}"] = n
        self.errors += [f"{stage}: {r!r}" for r in failures[:5]]

    @property
    def expected(self) -> int:
        return self.clients * self.messages

    @property
    def per_connection_kib(self) -> float:
        return (self.rss_connected_kib - self.rss_before_kib) / max(1, self.connected)

    @property
    def peak_per_connection_kib(self) -> float:
        return (self.rss_peak_kib - self.rss_before_kib) / max(1, self.connected)

    @property
    def ok(self) -> bool:
        return (
            not self.errors
            and not self.server_errors
            and self.connected == self.clients
            and self.delivered == self.server_received == self.expected
        )

    def summary(self) -> str:
        mps = self.delivered / self.exchange_seconds if self.exchange_seconds else 0.0
        lines = [
            f"load: {self.clients} clients x {self.messages} messages of {self.size} B "
            f"(request/response), server in its own process, "
            f"{self.server_options or 'default limits'}",
            f"  delivered      {self.delivered} of {self.expected} echoes, "
            f"{self.server_received} received by the server, "
            f"errors: {self.error_counts or 'none'}",
            f"  connect        {self.connect_seconds:.2f} s for {self.connected} clients "
            f"(Argon2 runs: client {self.key_derivations}, "
            f"server {self.server_stats.get('key_derivations')})",
            f"  exchange       {self.exchange_seconds:.2f} s, {mps:,.0f} round trips/s",
            f"  round trip     p50 {self.rtt_p50_ms:.2f} ms, p99 {self.rtt_p99_ms:.2f} ms, "
            f"max {self.rtt_max_ms:.2f} ms",
            f"  server RSS     before {self.rss_before_kib / 1024:.1f} MiB, "
            f"{self.connected} connected {self.rss_connected_kib / 1024:.1f} MiB, "
            f"peak {self.rss_peak_kib / 1024:.1f} MiB (VmHWM {self.hwm_kib / 1024:.1f} MiB), "
            f"after close {self.rss_after_kib / 1024:.1f} MiB",
            f"  per connection {self.per_connection_kib:.1f} KiB idle, "
            f"{self.peak_per_connection_kib:.1f} KiB at the peak",
        ]
        lines += [f"  e.g. {e}" for e in (self.errors + self.server_errors)[:10]]
        return "\n".join(lines)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def run_load(
    clients: int = 1000,
    messages: int = 100,
    size: int = 64,
    *,
    timeout: float = 60.0,
    default_limits: bool = False,
) -> LoadReport:
    """Run the load; the report's ``ok`` tells whether every check passed.

    Every client connects at the same moment. The server gets room for that burst
    (``max_pending_handshakes`` and ``accept_backlog`` above the number of clients) unless
    ``default_limits``: with the defaults (256 pending handshakes, 128 connections waiting for
    ``accept()``) a burst of 1000 loses some clients: handshakes evicted at the cap, and
    connections closed with 1013 (server busy) while the server's event loop falls behind."""
    if size < 8:
        raise ValueError("messages carry two 4-byte numbers: size must be at least 8")
    limit = raise_nofile_limit()
    if limit < fds_needed(clients):
        raise RuntimeError(f"RLIMIT_NOFILE is {limit}; {fds_needed(clients)} are needed")
    report = LoadReport(clients, messages, size)
    password = secrets.token_urlsafe(22)
    options: dict[str, Any] = {}
    if not default_limits:
        options = {"max_pending_handshakes": 2 * clients, "accept_backlog": 2 * clients}
    report.server_options = options
    with ServerProcess(password, **options) as server:
        await asyncio.sleep(0.2)
        report.rss_before_kib = server.memory()["VmRSS"]
        await server.command_async("reset-peak")
        credentials = argonlink.Credentials(password)
        conns = [
            argonlink.Client(*server.address, password=credentials, open_timeout=timeout)
            for _ in range(clients)
        ]
        rtts: list[float] = []
        with RssSampler(server.pid) as sampler:
            start = time.perf_counter()
            results = await asyncio.gather(*(c.connect() for c in conns), return_exceptions=True)
            report.connect_seconds = time.perf_counter() - start
            failed = [r for r in results if isinstance(r, BaseException)]
            report.connected = clients - len(failed)
            report.note_errors("connect", failed)
            report.key_derivations = credentials.key_derivations
            await asyncio.sleep(0.5)  # let the server settle: every connection admitted
            report.rss_connected_kib = server.memory()["VmRSS"]

            async def exchange(number: int, client: argonlink.Client) -> int:
                done = 0
                for seq in range(messages):
                    msg = message(number, seq, size)
                    t0 = time.perf_counter()
                    await client.send(msg, timeout=timeout)
                    echo = await client.recv(timeout=timeout)
                    rtts.append(time.perf_counter() - t0)
                    if echo != msg:
                        raise AssertionError(f"client {number}: echo {seq} differs")
                    done += 1
                return done

            # The clients that connected (all of them, unless the server dropped some).
            pairs = enumerate(zip(conns, results, strict=True))
            connected = [(i, c) for i, (c, r) in pairs if not isinstance(r, BaseException)]
            start = time.perf_counter()
            outcomes = await asyncio.gather(
                *(exchange(i, c) for i, c in connected), return_exceptions=True
            )
            report.exchange_seconds = time.perf_counter() - start
            report.note_errors("exchange", outcomes)
            report.delivered = sum(n for n in outcomes if isinstance(n, int))
            closing = await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
            report.note_errors("close", closing)
            report.hwm_kib = server.memory()["VmHWM"]
        report.rss_peak_kib = max(sampler.peak_kib, report.rss_connected_kib)
        await asyncio.sleep(0.5)
        stats = await server.command_async("stats")
        report.rss_after_kib = server.memory()["VmRSS"]
    report.server_stats = stats["server"]
    echo = stats["echo"]
    report.server_received = echo["received"]
    report.server_errors = list(echo["errors"])
    if echo["clients_seen"] != clients or echo["per_client"] != [messages]:
        report.server_errors.append(
            f"server saw {echo['clients_seen']} clients with {echo['per_client']} messages each"
        )
    rtts.sort()
    report.rtt_p50_ms = percentile(rtts, 0.50) * 1000
    report.rtt_p99_ms = percentile(rtts, 0.99) * 1000
    report.rtt_max_ms = (rtts[-1] if rtts else 0.0) * 1000
    return report


# --------------------------------------------------------------------------------------------
# Slowloris


@dataclass
class SlowlorisReport:
    connections: int
    mode: str
    max_pending_handshakes: int
    handshake_timeout: float
    opened: int = 0
    evicted_before_client: int = 0
    failed_before_client: int = 0  # evicted, or cut at the deadline already
    pending_before_client: int = 0
    client_ok: bool = False
    client_error: str = ""
    connect_seconds: float = 0.0
    serve_seconds: float = 0.0
    closed_by_server: int = 0
    still_open_after_deadline: int = 0
    all_cut_after: float = 0.0
    server_stats: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return "\n".join(
            [
                f"slowloris: {self.opened} idle connections ({self.mode}), "
                f"max_pending_handshakes {self.max_pending_handshakes}, "
                f"handshake_timeout {self.handshake_timeout} s",
                f"  before the real client: {self.evicted_before_client} evicted, "
                f"{self.pending_before_client} pending",
                f"  real client: {'ok' if self.client_ok else 'FAILED ' + self.client_error}, "
                f"connected in {self.connect_seconds:.3f} s, "
                f"echo after {self.serve_seconds:.3f} s",
                f"  idle sockets: {self.closed_by_server} closed by the server, "
                f"{self.still_open_after_deadline} still open after the deadline; all cut "
                f"{self.all_cut_after:.2f} s after the client was served",
            ]
        )


def _open_idle(address: tuple[str, int], count: int, first_bytes: bytes) -> list[socket.socket]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(address, timeout=10)
            if first_bytes:
                sock.sendall(first_bytes)
            sock.setblocking(False)
            socks.append(sock)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the server closed (or reset) this idle socket; it never sends data."""
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def run_slowloris(
    connections: int = 1000,
    mode: str = "silent",
    *,
    handshake_timeout: float = 5.0,
    max_pending_handshakes: int = 256,
    timeout: float = 10.0,
) -> SlowlorisReport:
    """Idle sockets first, then one real client; its ``connect`` and echo are timed."""
    if mode not in ("silent", "partial-hello"):
        raise ValueError(f"unknown mode {mode!r}")
    limit = raise_nofile_limit()
    if limit < fds_needed(connections):
        raise RuntimeError(f"RLIMIT_NOFILE is {limit}; {fds_needed(connections)} are needed")
    report = SlowlorisReport(connections, mode, max_pending_handshakes, handshake_timeout)
    password = secrets.token_urlsafe(22)
    first = PARTIAL_HELLO if mode == "partial-hello" else b""
    options = {
        "handshake_timeout": handshake_timeout,
        "max_pending_handshakes": max_pending_handshakes,
    }
    with ServerProcess(password, **options) as server:
        idle = await asyncio.to_thread(_open_idle, server.address, connections, first)
        try:
            report.opened = len(idle)
            # Wait until the server has taken every one of them: pending, or ended (evicted,
            # or, on a slow machine, already past the handshake deadline).
            deadline = time.monotonic() + timeout
            while True:
                stats = (await server.command_async("stats"))["server"]
                taken = stats["handshakes_failed"] + stats["pending_handshakes"]
                if taken >= connections or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            report.evicted_before_client = stats["handshakes_evicted"]
            report.failed_before_client = stats["handshakes_failed"]
            report.pending_before_client = stats["pending_handshakes"]

            start = time.perf_counter()
            served_at = 0.0
            try:
                client = argonlink.Client(*server.address, password=password, open_timeout=timeout)
                async with client:
                    report.connect_seconds = time.perf_counter() - start
                    await client.send(message(0, 0, 64), timeout=timeout)
                    echo = await client.recv(timeout=timeout)
                    report.serve_seconds = time.perf_counter() - start
                    served_at = time.monotonic()
                    report.client_ok = echo == message(0, 0, 64)
                    if not report.client_ok:
                        report.client_error = "wrong echo"
            except (argonlink.Error, OSError) as exc:
                report.client_error = repr(exc)
                served_at = time.monotonic()

            # The rest are cut at their handshake deadline.
            deadline = time.monotonic() + handshake_timeout + timeout
            open_socks = list(idle)
            while open_socks and time.monotonic() < deadline:
                open_socks = [s for s in open_socks if not _closed_by_peer(s)]
                if open_socks:
                    await asyncio.sleep(0.05)
            report.all_cut_after = time.monotonic() - served_at
            report.still_open_after_deadline = len(open_socks)
            report.closed_by_server = len(idle) - len(open_socks)
            report.server_stats = (await server.command_async("stats"))["server"]
        finally:
            for sock in idle:
                sock.close()
    return report


# --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=64, help="message size in bytes (>= 8)")
    parser.add_argument("--slowloris", type=int, metavar="N", help="N idle connections instead")
    parser.add_argument("--mode", choices=["silent", "partial-hello"], default="silent")
    parser.add_argument("--handshake-timeout", type=float, default=5.0)
    parser.add_argument("--max-pending", type=int, default=256)
    parser.add_argument(
        "--default-limits",
        action="store_true",
        help="load: keep the server's default max_pending_handshakes and accept_backlog",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    report: LoadReport | SlowlorisReport
    if args.slowloris:
        report = asyncio.run(
            run_slowloris(
                args.slowloris,
                args.mode,
                handshake_timeout=args.handshake_timeout,
                max_pending_handshakes=args.max_pending,
            )
        )
        ok = report.client_ok
    else:
        report = asyncio.run(
            run_load(args.clients, args.messages, args.size, default_limits=args.default_limits)
        )
        ok = report.ok
    print(report.summary())
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        asyncio.run(serve(json.loads(sys.argv[2])))
    else:
        sys.exit(main())
