"""A byte-level TCP proxy (and friends) for tests that need to see or tamper with the wire.

Everything runs on a private asyncio event loop in a background thread, so the same objects
serve blocking tests (``argonlink.sync``) and asyncio tests alike: nothing here ever runs on,
or blocks, the test's own event loop.

The proxy understands argonlink's framing (it needs no keys for that). Each direction is a
sequence of *records*::

    client -> server   0: hello (29 + n bytes)  1: msg1 (u16 len + 104)  2: CONFIRM  3..: frames
    server -> client   0: params (104 bytes)    1: msg2 (u16 len + 57)   2..: frames

where the hello's length is in its byte 28 (the identity length n), every record after the
first is a big-endian u16 length followed by that many bytes, and a record is kept *with* its
length prefix. A :class:`Tamper` sees each record of one direction
with its index and decides what goes on: the record, something else, nothing, or a cut of the
connection. ``raw=True`` forwards bytes as they arrive, without parsing.

Typical use::

    with Proxy(server.address, c2s=FlipBit(C2S_FIRST_DATA)) as proxy:
        client = Client(*proxy.address, password=...)
        ...
        conn = proxy.wait_for_connections(1)[0]
        conn.wait_closed(5)
        conn.records(Direction.C2S)   # what the client sent, parsed
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import enum
import errno
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = [
    "C2S_CONFIRM",
    "C2S_FIRST_DATA",
    "C2S_HELLO",
    "C2S_MSG1",
    "HELLO_FIXED_LEN",
    "PARAMS_LEN",
    "S2C_FIRST_DATA",
    "S2C_MSG2",
    "S2C_PARAMS",
    "BackgroundLoop",
    "CloseAfter",
    "CutMidRecord",
    "Direction",
    "Drop",
    "Duplicate",
    "FlipBit",
    "Inject",
    "Out",
    "Preamble",
    "Proxy",
    "ProxyConnection",
    "RecordParser",
    "Replace",
    "Swap",
    "Tamper",
    "TcpService",
    "hello_length",
    "read_hello",
    "read_record",
    "recv_exact",
    "recv_hello",
    "recv_until_closed",
    "split_records",
]

T = TypeVar("T")

#: The hello up to and including its identity length byte (PROTOCOL.md §3.1).
HELLO_FIXED_LEN = 29
#: The server parameters with the server's nonce and CPace share (§3.2).
PARAMS_LEN = 104


def hello_length(prefix: bytes) -> int | None:
    """The length of a hello that starts with ``prefix`` (29 + n), None until byte 28 came."""
    if len(prefix) < HELLO_FIXED_LEN:
        return None
    return HELLO_FIXED_LEN + prefix[HELLO_FIXED_LEN - 1]


#: How long a direction's first, unprefixed record is: a fixed size, or a function of the
#: bytes received so far (None while that is not known yet).
Preamble = int | Callable[[bytes], int | None]

# Record indices in each direction of an argonlink connection.
C2S_HELLO, C2S_MSG1, C2S_CONFIRM, C2S_FIRST_DATA = 0, 1, 2, 3
S2C_PARAMS, S2C_MSG2, S2C_FIRST_DATA = 0, 1, 2


class Direction(enum.Enum):
    C2S = "client->server"
    S2C = "server->client"

    @property
    def preamble(self) -> Preamble:
        """Length of this direction's first, unprefixed record."""
        return hello_length if self is Direction.C2S else PARAMS_LEN


# --------------------------------------------------------------------------------------------
# Parsing


class RecordParser:
    """Incremental parser: a first record of the preamble's length, then u16-length-prefixed
    records."""

    def __init__(self, preamble: Preamble) -> None:
        self._preamble = preamble
        self._buf = bytearray()
        self._first = True

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the records they complete (each with its length prefix)."""
        self._buf += data
        out: list[bytes] = []
        while True:
            if self._first:
                first = self._preamble
                need = first if isinstance(first, int) else first(bytes(self._buf))
                if need is None:
                    return out
            elif len(self._buf) >= 2:
                need = 2 + struct.unpack_from(">H", self._buf)[0]
            else:
                return out
            if len(self._buf) < need:
                return out
            out.append(bytes(self._buf[:need]))
            del self._buf[:need]
            self._first = False

    @property
    def pending(self) -> bytes:
        """Bytes of a record not yet complete."""
        return bytes(self._buf)


def split_records(stream: bytes, preamble: Preamble) -> tuple[list[bytes], bytes]:
    """Parse a whole recorded stream: (complete records, trailing incomplete bytes)."""
    parser = RecordParser(preamble)
    records = parser.feed(stream)
    return records, parser.pending


# --------------------------------------------------------------------------------------------
# Tampering


@dataclass
class Out:
    """What a tamper lets through for one record: ``data`` in order, then a cut if ``close``.

    ``reset`` makes the cut an RST (SO_LINGER 0) instead of a FIN.
    """

    data: list[bytes] = field(default_factory=list)
    close: bool = False
    reset: bool = False


class Tamper:
    """Forwards every record unchanged. Subclasses override :meth:`on_record`.

    One instance serves one direction of one connection (the proxy copies the instance it was
    given for every connection), so subclasses may keep state.
    """

    def on_record(self, index: int, record: bytes) -> Out:
        return Out([record])

    def on_end(self) -> list[bytes]:
        """The sender closed its side: anything still held back goes out now."""
        return []


@dataclass
class FlipBit(Tamper):
    """XOR ``mask`` into byte ``offset`` of record ``index`` (negative: from the end; the
    default flips the last bit of an AEAD tag)."""

    index: int
    offset: int = -1
    mask: int = 0x01

    def on_record(self, index: int, record: bytes) -> Out:
        if index != self.index:
            return Out([record])
        edited = bytearray(record)
        edited[self.offset] ^= self.mask
        return Out([bytes(edited)])


@dataclass
class Drop(Tamper):
    """Swallow record ``index``."""

    index: int

    def on_record(self, index: int, record: bytes) -> Out:
        return Out([] if index == self.index else [record])


@dataclass
class Duplicate(Tamper):
    """Send record ``index`` twice."""

    index: int

    def on_record(self, index: int, record: bytes) -> Out:
        return Out([record, record] if index == self.index else [record])


@dataclass
class Swap(Tamper):
    """Deliver record ``index + 1`` before record ``index``."""

    index: int
    _held: bytes | None = None

    def on_record(self, index: int, record: bytes) -> Out:
        if index == self.index:
            self._held = record
            return Out([])
        if index == self.index + 1 and self._held is not None:
            held, self._held = self._held, None
            return Out([record, held])
        return Out([record])

    def on_end(self) -> list[bytes]:
        held, self._held = self._held, None
        return [] if held is None else [held]


@dataclass
class Replace(Tamper):
    """Send ``data`` instead of record ``index``."""

    index: int
    data: bytes

    def on_record(self, index: int, record: bytes) -> Out:
        return Out([self.data] if index == self.index else [record])


@dataclass
class Inject(Tamper):
    """Send ``data`` (e.g. bytes recorded earlier: a replay) just before record ``index``."""

    index: int
    data: bytes

    def on_record(self, index: int, record: bytes) -> Out:
        return Out([self.data, record] if index == self.index else [record])


@dataclass
class CloseAfter(Tamper):
    """Forward records ``0 .. count-1``, then cut the connection (both sides) at once."""

    count: int
    reset: bool = False

    def on_record(self, index: int, record: bytes) -> Out:
        if index == self.count - 1:
            return Out([record], close=True, reset=self.reset)
        if index >= self.count:  # count == 0
            return Out([], close=True, reset=self.reset)
        return Out([record])


@dataclass
class CutMidRecord(Tamper):
    """Forward the records before ``index`` and the first ``keep`` bytes of record ``index``,
    then cut the connection (both sides)."""

    index: int
    keep: int
    reset: bool = False

    def on_record(self, index: int, record: bytes) -> Out:
        if index == self.index:
            return Out([record[: self.keep]], close=True, reset=self.reset)
        return Out([record])


#: What ``Proxy(c2s=..., s2c=...)`` accepts: a tamper (copied for each connection), or a
#: factory called with the connection's number (0, 1, ...) that may return None (no tampering).
TamperSpec = Tamper | Callable[[int], Tamper | None] | None


# --------------------------------------------------------------------------------------------
# The background loop and a generic TCP service on it


class BackgroundLoop:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self, name: str = "test-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # Whatever is still pending gets cancelled, so nothing leaks into the next test.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the loop and wait (blocking) for its result."""
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class TcpService:
    """Listens on 127.0.0.1 (port 0 by default) and runs ``handler(reader, writer)`` for each
    connection on a background loop. The writer is closed when the handler returns. Useful for
    fake servers (replaying recorded bytes) and custom relays."""

    def __init__(self, handler: Handler | None = None, *, name: str = "tcp-service") -> None:
        self._handler = handler
        self._name = name
        self._bg: BackgroundLoop | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.errors: list[BaseException] = []

    # Subclasses override this instead of passing ``handler``.
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._handler is None:
            raise NotImplementedError
        await self._handler(reader, writer)

    @property
    def background(self) -> BackgroundLoop:
        if self._bg is None:
            raise RuntimeError("not started")
        return self._bg

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    def start(self) -> Self:
        if self._bg is None:
            self._bg = BackgroundLoop(self._name)
            self._server = self._bg.run(self._listen())
        return self

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._on_connection, "127.0.0.1", 0)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handle(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass  # the peer went away: normal in these tests
        except asyncio.CancelledError:
            # Shutting down. Ending normally keeps Python 3.11's start_server callback from
            # logging the cancellation as an error (it calls task.exception()).
            pass
        except Exception as exc:  # surfaced to the test through ``errors``
            self.errors.append(exc)
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def close(self) -> None:
        if self._bg is not None:
            with contextlib.suppress(Exception):
                self._bg.run(self._shutdown(), timeout=5)
            self._bg.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# The proxy


class ProxyConnection:
    """One client connection through the proxy: what each side sent and what was forwarded."""

    def __init__(self, number: int) -> None:
        self.number = number
        self._lock = threading.Lock()
        self._received = {d: bytearray() for d in Direction}
        self._forwarded = {d: bytearray() for d in Direction}
        #: Set once both directions are finished and both sockets are closed.
        self.done = threading.Event()
        #: True when a tamper cut the connection.
        self.cut = False

    def _add(self, which: dict[Direction, bytearray], direction: Direction, data: bytes) -> None:
        with self._lock:
            which[direction] += data

    def received(self, direction: Direction) -> bytes:
        """Every byte the sending side of ``direction`` sent (before tampering)."""
        with self._lock:
            return bytes(self._received[direction])

    def forwarded(self, direction: Direction) -> bytes:
        """Every byte the proxy passed on in ``direction`` (after tampering)."""
        with self._lock:
            return bytes(self._forwarded[direction])

    def records(self, direction: Direction, *, forwarded: bool = False) -> list[bytes]:
        """The complete records of ``direction`` (as sent, or as forwarded)."""
        data = self.forwarded(direction) if forwarded else self.received(direction)
        return split_records(data, direction.preamble)[0]

    def wait_closed(self, timeout: float) -> bool:
        return self.done.wait(timeout)

    async def wait_closed_async(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.done.is_set():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True


def _set_reset_on_close(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class Proxy(TcpService):
    """A recording, optionally tampering TCP proxy to ``target``. See the module docstring."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        c2s: TamperSpec = None,
        s2c: TamperSpec = None,
        raw: bool = False,
    ) -> None:
        super().__init__(name="test-proxy")
        if raw and (c2s is not None or s2c is not None):
            raise ValueError("raw mode forwards bytes as they come: no tampering")
        self.target = target
        self._specs = {Direction.C2S: c2s, Direction.S2C: s2c}
        self._raw = raw
        self._connections: list[ProxyConnection] = []
        self._conn_lock = threading.Lock()

    @property
    def connections(self) -> list[ProxyConnection]:
        with self._conn_lock:
            return list(self._connections)

    def wait_for_connections(self, n: int, timeout: float = 5.0) -> list[ProxyConnection]:
        """Block until at least ``n`` connections came through; return them all."""
        deadline = time.monotonic() + timeout
        while len(self.connections) < n:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(self.connections)} of {n} connections came through")
            time.sleep(0.005)
        return self.connections

    async def wait_for_connections_async(
        self, n: int, timeout: float = 5.0
    ) -> list[ProxyConnection]:
        deadline = time.monotonic() + timeout
        while len(self.connections) < n:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(self.connections)} of {n} connections came through")
            await asyncio.sleep(0.005)
        return self.connections

    def _tamper(self, direction: Direction, number: int) -> Tamper:
        spec = self._specs[direction]
        if spec is None:
            return Tamper()
        if isinstance(spec, Tamper):
            return copy.deepcopy(spec)
        return spec(number) or Tamper()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._conn_lock:
            conn = ProxyConnection(len(self._connections))
            self._connections.append(conn)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            conn.done.set()
            raise
        writers = (writer, up_writer)
        cut = asyncio.Event()

        async def pump(
            direction: Direction, src: asyncio.StreamReader, dst: asyncio.StreamWriter
        ) -> None:
            tamper = self._tamper(direction, conn.number)
            parser = RecordParser(direction.preamble)
            index = 0

            def send(pieces: list[bytes]) -> None:
                if cut.is_set():
                    return  # nothing passes once the connection was cut
                for piece in pieces:
                    dst.write(piece)
                    conn._add(conn._forwarded, direction, piece)

            try:
                while True:
                    chunk = await src.read(65536)
                    if not chunk:
                        break
                    conn._add(conn._received, direction, chunk)
                    if self._raw:
                        send([chunk])
                        await dst.drain()
                        continue
                    for record in parser.feed(chunk):
                        out = tamper.on_record(index, record)
                        index += 1
                        send(out.data)
                        if out.close:
                            await dst.drain()
                            conn.cut = True
                            for w in writers:
                                if out.reset:
                                    _set_reset_on_close(w)
                                w.close()
                            cut.set()
                            return
                    await dst.drain()
                # The sender closed its side: flush, pass on any partial record, half-close.
                send(tamper.on_end())
                if parser.pending:
                    send([parser.pending])
                await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()
            except (ConnectionError, OSError):
                # One side reset: tear down both, as a real network failure would.
                for w in writers:
                    w.close()

        tasks = [
            asyncio.create_task(pump(Direction.C2S, reader, up_writer)),
            asyncio.create_task(pump(Direction.S2C, up_reader, writer)),
        ]
        waiter = asyncio.create_task(cut.wait())
        try:
            # A cut ends both directions at once; otherwise wait for both to finish.
            running: set[asyncio.Task[Any]] = set(tasks)
            while running and not cut.is_set():
                done, _ = await asyncio.wait(
                    [*running, waiter], return_when=asyncio.FIRST_COMPLETED
                )
                running -= done
            for t in [*tasks, waiter]:
                t.cancel()
            await asyncio.gather(*tasks, waiter, return_exceptions=True)
        finally:
            for w in writers:
                w.close()
            for w in writers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(w.wait_closed(), 1)
            conn.done.set()


# --------------------------------------------------------------------------------------------
# Small helpers for raw clients and fake servers


async def read_hello(reader: asyncio.StreamReader) -> bytes:
    """Read a client hello: its 29 fixed bytes, then the identity they announce."""
    fixed = await reader.readexactly(HELLO_FIXED_LEN)
    return fixed + await reader.readexactly(fixed[-1])


async def read_record(reader: asyncio.StreamReader) -> bytes:
    """Read one u16-length-prefixed record (returned with its prefix)."""
    prefix = await reader.readexactly(2)
    body = await reader.readexactly(struct.unpack(">H", prefix)[0])
    return prefix + body


def recv_exact(sock: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    """Read exactly ``n`` bytes from a blocking socket or raise (EOFError on a short read)."""
    sock.settimeout(timeout)
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_hello(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read a client hello from a blocking socket: 29 bytes, then the identity they announce."""
    fixed = recv_exact(sock, HELLO_FIXED_LEN, timeout)
    return fixed + recv_exact(sock, fixed[-1], timeout)


def recv_until_closed(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, str, float]:
    """Read until the peer closes: ``(bytes received, how, seconds waited)``, ``how`` being
    ``"eof"`` (FIN), ``"reset"`` (RST) or ``"timeout"`` (still open after ``timeout``)."""
    start = time.monotonic()
    deadline = start + timeout
    buf = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(buf), "timeout", time.monotonic() - start
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return bytes(buf), "timeout", time.monotonic() - start
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                return bytes(buf), "reset", time.monotonic() - start
            raise
        if not chunk:
            return bytes(buf), "eof", time.monotonic() - start
        buf += chunk
