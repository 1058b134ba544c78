"""Helpers for ``test_lifecycle.py``: a relay that can silently stop forwarding, a server in a
child process that can be killed with SIGKILL, free ports and polling."""

from __future__ import annotations

import asyncio
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from proxy import Direction, TcpService, split_records


class BlackholeRelay(TcpService):
    """A raw TCP relay to ``target`` with a switch: once ``blackhole`` is set, every byte in
    either direction is read and dropped, and nothing is closed, not even when an end closes its
    side. To each end, the peer's host seems to have vanished: no data, no FIN, no RST."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(name="blackhole-relay")
        self.target = target
        self.blackhole = threading.Event()
        self._lock = threading.Lock()
        self._forwarded = {d: bytearray() for d in Direction}

    def records(self, direction: Direction) -> list[bytes]:
        """The complete records forwarded in ``direction`` so far (all connections)."""
        with self._lock:
            data = bytes(self._forwarded[direction])
        return split_records(data, direction.preamble)[0]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        try:
            await asyncio.gather(
                self._pump(Direction.C2S, reader, up_writer),
                self._pump(Direction.S2C, up_reader, writer),
            )
        finally:
            up_writer.close()

    async def _pump(
        self, direction: Direction, src: asyncio.StreamReader, dst: asyncio.StreamWriter
    ) -> None:
        while True:
            chunk = await src.read(65536)
            if self.blackhole.is_set():
                if not chunk:
                    await asyncio.Event().wait()  # hold everything open until shutdown
                continue
            if not chunk:
                if dst.can_write_eof():
                    dst.write_eof()
                return
            dst.write(chunk)
            await dst.drain()
            with self._lock:
                self._forwarded[direction] += chunk


def free_port() -> int:
    """A loopback port nothing listens on right now (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(step)
    return True


async def wait_until_async(
    predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.005
) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return predicate()
        await asyncio.sleep(step)
    return True


# A receiving server: greets every connection with "greeting from <tag>", prints each message it
# receives as "MSG <text>" (one line, flushed), and prints "READY" once it listens.
SERVER_SCRIPT = r"""
import asyncio, sys
import argonlink

port, password, tag = int(sys.argv[1]), sys.argv[2], sys.argv[3]
kdf = argonlink.KdfParams(*map(int, sys.argv[4].split(",")))

async def handle(conn):
    print("CONN", flush=True)
    await conn.send(b"greeting from " + tag.encode())
    async for msg in conn:
        print("MSG", msg.decode(), flush=True)

async def main():
    server = argonlink.Server("127.0.0.1", port, password=password, kdf=kdf, handler=handle)
    async with server:
        print("READY", flush=True)
        await server.serve_forever()

asyncio.run(main())
"""


class ServerProcess:
    """``SERVER_SCRIPT`` in a child process on a fixed port; its output lines are collected."""

    def __init__(self, port: int, password: str, tag: str, kdf: tuple[int, int, int]) -> None:
        self.port, self.tag = port, tag
        self._args = [str(port), password, tag, ",".join(map(str, kdf))]
        self._lines: queue.Queue[str] = queue.Queue()
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._pump_thread: threading.Thread | None = None
        self._collecting = threading.Lock()

    def start(self, timeout: float = 20.0) -> Self:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT, *self._args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        self.wait_for(lambda: "READY" in self.lines, timeout, "READY")
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))

    def _collect(self) -> None:
        with self._collecting:
            while True:
                try:
                    self.lines.append(self._lines.get_nowait())
                except queue.Empty:
                    return

    def messages(self) -> list[str]:
        """The messages received so far, in order."""
        self._collect()
        return [line[4:] for line in self.lines if line.startswith("MSG ")]

    def connections(self) -> int:
        self._collect()
        return self.lines.count("CONN")

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        def check() -> bool:
            self._collect()
            return predicate()

        if not wait_until(check, timeout, step=0.01):
            stderr = ""
            if self.proc is not None and self.proc.poll() is not None and self.proc.stderr:
                stderr = self.proc.stderr.read()
            raise TimeoutError(f"server {self.tag}: no {what} in {timeout} s; {stderr[-2000:]}")

    async def wait_for_async(
        self, predicate: Callable[[], bool], timeout: float, what: str
    ) -> None:
        """``wait_for`` without blocking the event loop."""
        await asyncio.to_thread(self.wait_for, predicate, timeout, what)

    def kill(self) -> None:
        """SIGKILL: no CLOSE frame, nothing flushed; the kernel just drops the sockets."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self) -> None:
        """Kill the process (if it was started) and release its pipes."""
        self.kill()
        if self._pump_thread is not None:
            self._pump_thread.join(5)
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
