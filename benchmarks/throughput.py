"""Bulk throughput: argonlink against plain TCP and Python's own TLS, Python to Python.

What it measures
----------------
One run moves ``--size-mib`` MiB (default 1 GiB) over loopback, in ``--message-kib`` KiB
messages (default 1 MiB), from a *sender* process to a *receiver* process. Both are fresh
interpreters started with the ``spawn`` method. The variants:

(a) plain TCP, blocking sockets (no socket timeout): ``sendall`` / ``recv_into`` a
    preallocated buffer, reading exactly one message's length at a time (so exactly the total);
(b) Python ``ssl``, blocking sockets, TLS 1.3 with TLS_AES_256_GCM_SHA384;
(c) asyncio streams over the same TLS (``readexactly`` / ``write`` + ``drain``, default limits);
(d) argonlink blocking API (``argonlink.sync``): receiver ``Server``, sender ``Client``;
(e) argonlink asyncio API: receiver ``Server``, sender ``Client``;
(f) ``multiprocessing.connection`` (``send_bytes`` / ``recv_bytes_into``, HMAC-authenticated
    handshake, no encryption);
(g) spiped, the Debian package (a pre-shared-key tunnel: AES-256-CTR + HMAC-SHA256): the plain
    TCP sender and receiver of (a) talk through an encrypting and a decrypting spiped process
    (four processes in all); skipped with a note when ``spiped`` is not installed;
(h) the loopback ceiling: ``benches/tcp_ceiling.rs``, a tokio program on both ends, no crypto,
    no Python (built with cargo; ``--ceiling`` names a prebuilt one).

Python cannot choose TLS 1.3 cipher suites (there is no ``SSLContext.set_ciphersuites``, and
``set_ciphers`` only governs TLS 1.2 and below), so the TLS processes are started with
``OPENSSL_CONF`` pointing at a throwaway OpenSSL configuration that allows TLS 1.3 only and the
single suite TLS_AES_256_GCM_SHA384. Both ends then check ``SSLSocket.cipher()`` and a run that
negotiated anything else fails. The certificate is a throwaway self-signed ECDSA P-256 one made
in a temporary directory with the ``cryptography`` package (a benchmark-only dependency:
``pip install cryptography``) or, when that is missing, with the ``openssl`` command. The client
verifies it (CA = the certificate itself, host name ``localhost``). argonlink needs no
certificate: the receiver's ``Server`` uses ``kdf=KdfParams.OWASP`` and a shared password.

Every message is the same random block (derived from a seed both processes know) with its first
8 bytes replaced by the message index (little endian). Senders build all messages as ``bytes``
before connecting, so the timed loop only sends. The receiver checks each message's length and
index, compares every 64th message (and the last) in full, and after the acknowledgement checks
that nothing follows but a clean end of stream.

Timing (the same for every variant): on the sender's clock, from just before the first send --
with the connection, TLS handshake or argonlink handshake and key derivation already done -- to
the arrival of a 1-byte acknowledgement the receiver sends once it has received and checked the
last message. Throughput is size / time in MB/s, MB = 10**6 bytes. The variants run interleaved
(a, b, c, d, e, a, b, ...) ``--repeat`` times; the report gives each variant's median and the
ratios the project aims for:

* argonlink blocking / (b) TLS blocking  >= 1.3
* argonlink blocking / (a) plain TCP     >= 0.85
* argonlink asyncio / (c) asyncio TLS    >= 3.0

The script only reports: it exits 0 whether or not the targets are met, and 1 only when a run
failed (an error, a verification failure or a timeout).

Running
-------
::

    . .venv/bin/activate
    pip install cryptography        # optional; the openssl command is the fallback
    python benchmarks/throughput.py                   # 1 GiB, 1 MiB messages, 3 rounds
    python benchmarks/throughput.py --size-mib 64 --repeat 1 --only a,d
    python benchmarks/throughput.py --json results.json

The sender holds the whole transfer in memory (``--size-mib`` MiB), and each run spawns two
interpreters; on a small machine run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import multiprocessing
import os
import random
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Client as MpClient
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import Listener as MpListener
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import _harness
import argonlink
import argonlink.sync

HOST = "127.0.0.1"
TLS_HOSTNAME = "localhost"
TLS_SUITE = "TLS_AES_256_GCM_SHA384"
PASSWORD = "argonlink throughput benchmark"
ACK = b"\x06"
SAMPLE_EVERY = 64
INDEX_BYTES = 8
SEED = 20240611

VARIANTS: dict[str, str] = {
    "a": "(a) plain TCP, blocking sockets",
    "b": "(b) ssl TLS 1.3 AES-256-GCM, blocking",
    "c": "(c) asyncio streams + ssl",
    "d": "(d) argonlink blocking (sync)",
    "e": "(e) argonlink asyncio",
    "f": "(f) multiprocessing.connection",
    "g": "(g) spiped (AES-256-CTR + HMAC-SHA256)",
    "h": "(h) plain TCP, tokio (Rust) both ends",
}
TLS_VARIANTS = frozenset("bc")

# (name, numerator, denominator, target)
RATIOS: list[tuple[str, str, str, float]] = [
    ("argonlink blocking / (b) ssl blocking", "d", "b", 1.3),
    ("argonlink blocking / (a) plain TCP", "d", "a", 0.85),
    ("argonlink asyncio / (c) asyncio + ssl", "e", "c", 3.0),
]

OPENSSL_CONF = f"""\
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1.3
MaxProtocol = TLSv1.3
Ciphersuites = {TLS_SUITE}
"""


class VerificationError(Exception):
    """The receiver got something other than what was sent."""


@dataclass(frozen=True)
class Spec:
    """What one run transfers and how; pickled to both child processes."""

    variant: str
    total: int
    message_size: int
    timeout: float
    tls_dir: str
    ceiling: str | None = None

    @property
    def count(self) -> int:
        return self.total // self.message_size

    @property
    def max_message_size(self) -> int:
        return max(argonlink.DEFAULT_MAX_MESSAGE_SIZE, self.message_size)


# --------------------------------------------------------------------------------------------
# Payload and verification


def base_block(size: int) -> bytes:
    """The random block every message is made of; both sides derive it from SEED."""
    return random.Random(SEED).randbytes(size)


def index_bytes(i: int) -> bytes:
    return i.to_bytes(INDEX_BYTES, "little")


def build_messages(spec: Spec) -> list[bytes]:
    tail = base_block(spec.message_size)[INDEX_BYTES:]
    return [index_bytes(i) + tail for i in range(spec.count)]


class Checker:
    """Checks messages in arrival order: length and index always, full content sampled."""

    def __init__(self, spec: Spec) -> None:
        self.count = spec.count
        self.size = spec.message_size
        self.expected = bytearray(base_block(spec.message_size))
        self.received = 0
        self.compared = 0

    def check(self, msg: bytes | bytearray) -> None:
        i = self.received
        if len(msg) != self.size:
            raise VerificationError(f"message {i}: {len(msg)} bytes, expected {self.size}")
        got = int.from_bytes(msg[:INDEX_BYTES], "little")
        if got != i:
            raise VerificationError(f"message {i}: carries index {got}")
        if i % SAMPLE_EVERY == 0 or i == self.count - 1:
            self.expected[:INDEX_BYTES] = index_bytes(i)
            if msg != self.expected:  # bytearray comparison: one memcmp
                raise VerificationError(f"message {i}: content differs")
            self.compared += 1
        self.received += 1

    def report(self) -> dict[str, Any]:
        if self.received != self.count:
            raise VerificationError(f"received {self.received} of {self.count} messages")
        return {"messages": self.received, "compared_in_full": self.compared}


def expect_eof(extra: bytes | bytearray) -> None:
    if extra:
        raise VerificationError(f"{len(extra)} unexpected bytes after the last message")


# --------------------------------------------------------------------------------------------
# TLS setup


def make_certificate(directory: Path) -> str:
    """Write cert.pem/key.pem (self-signed, ECDSA P-256, CN/SAN localhost); say how."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        pass
    else:
        private = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_HOSTNAME)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_HOSTNAME)]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(private, hashes.SHA256())
        )
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return "cryptography"
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SystemExit("TLS variants need the 'cryptography' package or the openssl command")
    command = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    command += ["-nodes", "-days", "1", "-subj", f"/CN={TLS_HOSTNAME}"]
    command += ["-addext", f"subjectAltName=DNS:{TLS_HOSTNAME}"]
    command += ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
    )
    return "openssl command"


def tls_context(spec: Spec, *, server: bool) -> ssl.SSLContext:
    directory = Path(spec.tls_dir)
    if server:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(directory / "cert.pem")
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    # Governs TLS <= 1.2 only (ruled out above); the TLS 1.3 suite comes from OPENSSL_CONF.
    ctx.set_ciphers("ECDHE+AESGCM+AES256")
    return ctx


def check_cipher(cipher: tuple[str, str, int] | None) -> str:
    if cipher is None or cipher[0] != TLS_SUITE or cipher[1] != "TLSv1.3":
        raise VerificationError(f"negotiated {cipher}, expected {TLS_SUITE} over TLSv1.3")
    return f"{cipher[0]} ({cipher[1]})"


@contextlib.contextmanager
def tls_environment(directory: str) -> Iterator[None]:
    """OPENSSL_CONF for processes started inside the block (spawn copies os.environ)."""
    old = os.environ.get("OPENSSL_CONF")
    os.environ["OPENSSL_CONF"] = str(Path(directory) / "openssl.cnf")
    try:
        yield
    finally:
        if old is None:
            del os.environ["OPENSSL_CONF"]
        else:
            os.environ["OPENSSL_CONF"] = old


# --------------------------------------------------------------------------------------------
# Blocking sockets: (a) plain TCP and (b) TLS


def recv_exactly(sock: socket.socket, view: memoryview) -> None:
    done, size = 0, len(view)
    while done < size:
        n = sock.recv_into(view[done:], size - done)
        if n == 0:
            raise VerificationError(f"end of stream after {done} of {size} bytes")
        done += n


def socket_receiver(spec: Spec, report: Pipe) -> dict[str, Any]:
    info: dict[str, Any] = {}
    with socket.create_server((HOST, 0)) as listener:
        report.send(("address", listener.getsockname()[:2]))
        listener.settimeout(spec.timeout)
        sock, _ = listener.accept()
    sock.settimeout(None)  # truly blocking; the parent kills a run that hangs
    if spec.variant == "b":
        tls = tls_context(spec, server=True).wrap_socket(sock, server_side=True)
        info["cipher"] = check_cipher(tls.cipher())
        sock = tls
    with sock:
        checker = Checker(spec)
        buf = bytearray(spec.message_size)
        view = memoryview(buf)
        for _ in range(spec.count):
            recv_exactly(sock, view)
            checker.check(buf)
        sock.sendall(ACK)
        expect_eof(sock.recv(1))
    return info | checker.report()


def socket_sender(spec: Spec, address: tuple[str, int], messages: list[bytes]) -> dict[str, Any]:
    info: dict[str, Any] = {}
    sock = socket.create_connection(address, timeout=spec.timeout)
    sock.settimeout(None)  # truly blocking; the parent kills a run that hangs
    if spec.variant == "b":
        tls = tls_context(spec, server=False).wrap_socket(sock, server_hostname=TLS_HOSTNAME)
        info["cipher"] = check_cipher(tls.cipher())
        sock = tls
    with sock:
        ack = bytearray(1)
        start = time.perf_counter()
        for msg in messages:
            sock.sendall(msg)
        recv_exactly(sock, memoryview(ack))
        elapsed = time.perf_counter() - start
    if ack != ACK:
        raise VerificationError(f"bad acknowledgement {bytes(ack)!r}")
    return info | {"elapsed": elapsed}


# --------------------------------------------------------------------------------------------
# (c) asyncio streams + TLS


async def streams_receiver(spec: Spec, report: Pipe) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[dict[str, Any]] = loop.create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            cipher = check_cipher(writer.get_extra_info("ssl_object").cipher())
            checker = Checker(spec)
            for _ in range(spec.count):
                checker.check(await reader.readexactly(spec.message_size))
            writer.write(ACK)
            await writer.drain()
            expect_eof(await reader.read(1))
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
            outcome.set_result({"cipher": cipher} | checker.report())
        except Exception as exc:
            outcome.set_exception(exc)

    server = await asyncio.start_server(serve, HOST, 0, ssl=tls_context(spec, server=True))
    async with server:
        report.send(("address", server.sockets[0].getsockname()[:2]))
        return await asyncio.wait_for(outcome, spec.timeout)


async def streams_sender(
    spec: Spec, address: tuple[str, int], messages: list[bytes]
) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(
        *address, ssl=tls_context(spec, server=False), server_hostname=TLS_HOSTNAME
    )
    cipher = check_cipher(writer.get_extra_info("ssl_object").cipher())
    start = time.perf_counter()
    for msg in messages:
        writer.write(msg)
        await writer.drain()
    ack = await reader.readexactly(1)
    elapsed = time.perf_counter() - start
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 10)
    if ack != ACK:
        raise VerificationError(f"bad acknowledgement {ack!r}")
    return {"cipher": cipher, "elapsed": elapsed}


# --------------------------------------------------------------------------------------------
# (d) argonlink blocking, (e) argonlink asyncio


def argonlink_sync_receiver(spec: Spec, report: Pipe) -> dict[str, Any]:
    with argonlink.sync.Server(
        HOST,
        0,
        password=PASSWORD,
        kdf=argonlink.KdfParams.OWASP,
        max_message_size=spec.max_message_size,
    ) as server:
        report.send(("address", server.address))
        with server.accept(timeout=spec.timeout) as conn:
            checker = Checker(spec)
            for _ in range(spec.count):
                checker.check(conn.recv(timeout=spec.timeout))
            conn.send(ACK)
            for _ in conn:  # ends when the sender closes cleanly
                raise VerificationError("a message after the last one")
    return checker.report()


def argonlink_sync_sender(
    spec: Spec, address: tuple[str, int], messages: list[bytes]
) -> dict[str, Any]:
    host, port = address
    with argonlink.sync.Client(
        host, port, password=PASSWORD, max_message_size=spec.max_message_size
    ) as client:
        start = time.perf_counter()
        for msg in messages:
            client.send(msg)
        ack = client.recv(timeout=spec.timeout)
        elapsed = time.perf_counter() - start
    if ack != ACK:
        raise VerificationError(f"bad acknowledgement {ack!r}")
    return {"elapsed": elapsed}


async def argonlink_async_receiver(spec: Spec, report: Pipe) -> dict[str, Any]:
    async with argonlink.Server(
        HOST,
        0,
        password=PASSWORD,
        kdf=argonlink.KdfParams.OWASP,
        max_message_size=spec.max_message_size,
    ) as server:
        report.send(("address", server.address))
        async with await server.accept(timeout=spec.timeout) as conn:
            checker = Checker(spec)
            for _ in range(spec.count):
                checker.check(await conn.recv(timeout=spec.timeout))
            await conn.send(ACK)
            async for _ in conn:  # ends when the sender closes cleanly
                raise VerificationError("a message after the last one")
    return checker.report()


async def argonlink_async_sender(
    spec: Spec, address: tuple[str, int], messages: list[bytes]
) -> dict[str, Any]:
    host, port = address
    async with argonlink.Client(
        host, port, password=PASSWORD, max_message_size=spec.max_message_size
    ) as client:
        start = time.perf_counter()
        for msg in messages:
            await client.send(msg)
        ack = await client.recv(timeout=spec.timeout)
        elapsed = time.perf_counter() - start
    if ack != ACK:
        raise VerificationError(f"bad acknowledgement {ack!r}")
    return {"elapsed": elapsed}


# --------------------------------------------------------------------------------------------
# (f) multiprocessing.connection

MPC_AUTHKEY = b"argonlink throughput benchmark"


def mpc_receiver(spec: Spec, report: Pipe) -> dict[str, Any]:
    with MpListener((HOST, 0), authkey=MPC_AUTHKEY) as listener:
        report.send(("address", listener.address))
        with listener.accept() as conn:
            checker = Checker(spec)
            buf = bytearray(spec.message_size)
            for _ in range(spec.count):
                n = conn.recv_bytes_into(buf)
                checker.check(buf if n == len(buf) else buf[:n])
            conn.send_bytes(ACK)
            try:
                conn.recv_bytes()
            except EOFError:
                pass
            else:
                raise VerificationError("a message after the last one")
    return checker.report()


def mpc_sender(spec: Spec, address: tuple[str, int], messages: list[bytes]) -> dict[str, Any]:
    with MpClient((address[0], int(address[1])), authkey=MPC_AUTHKEY) as conn:
        start = time.perf_counter()
        for msg in messages:
            conn.send_bytes(msg)
        ack = conn.recv_bytes()
        elapsed = time.perf_counter() - start
    if ack != ACK:
        raise VerificationError(f"bad acknowledgement {ack!r}")
    return {"elapsed": elapsed}


# --------------------------------------------------------------------------------------------
# Child process entry points


def cpu_seconds() -> float:
    """CPU time (user + system) of this whole process, all threads, so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def receiver_main(spec: Spec, report: Pipe) -> None:
    try:
        cpu = cpu_seconds()
        if spec.variant in "abg":
            result = socket_receiver(spec, report)
        elif spec.variant == "f":
            result = mpc_receiver(spec, report)
        elif spec.variant == "c":
            result = asyncio.run(streams_receiver(spec, report))
        elif spec.variant == "d":
            result = argonlink_sync_receiver(spec, report)
        else:
            result = asyncio.run(argonlink_async_receiver(spec, report))
        report.send(("done", result | {"cpu": cpu_seconds() - cpu}))
    except BaseException:
        report.send(("error", traceback.format_exc()))


def sender_main(spec: Spec, address: tuple[str, int], report: Pipe) -> None:
    try:
        messages = build_messages(spec)  # before connecting: not timed, no idle connection
        cpu = cpu_seconds()
        if spec.variant in "abg":
            result = socket_sender(spec, address, messages)
        elif spec.variant == "f":
            result = mpc_sender(spec, address, messages)
        elif spec.variant == "c":
            result = asyncio.run(streams_sender(spec, address, messages))
        elif spec.variant == "d":
            result = argonlink_sync_sender(spec, address, messages)
        else:
            result = asyncio.run(argonlink_async_sender(spec, address, messages))
        report.send(("done", result | {"cpu": cpu_seconds() - cpu}))
    except BaseException:
        report.send(("error", traceback.format_exc()))


# --------------------------------------------------------------------------------------------
# Orchestration


@dataclass
class RunResult:
    variant: str
    elapsed: float | None = None
    mb_per_s: float | None = None
    cipher: str | None = None
    error: str | None = None
    #: CPU seconds (user + system, all threads) of the sender and the receiver for the run
    cpu_sender: float | None = None
    cpu_receiver: float | None = None


def await_report(pipe: Pipe, deadline: float, who: str) -> tuple[str, Any]:
    if not pipe.poll(max(0.0, deadline - time.monotonic())):
        raise TimeoutError(f"the {who} did not report in time")
    try:
        kind, payload = pipe.recv()
    except EOFError:
        raise RuntimeError(f"the {who} process died without reporting") from None
    if kind == "error":
        raise RuntimeError(f"the {who} failed:\n{payload}")
    return kind, payload


def stop(process: BaseProcess | None) -> None:
    if process is None:
        return
    process.join(10)
    if process.is_alive():
        process.kill()
        process.join()


def run_once(mp: multiprocessing.context.SpawnContext, spec: Spec) -> RunResult:
    result = RunResult(spec.variant)
    if spec.variant == "h":
        try:
            if spec.ceiling is None:
                raise RuntimeError("the tokio ceiling program was not built")
            elapsed, cpu = _harness.run_ceiling(
                Path(spec.ceiling), "bulk", spec.count, spec.message_size, spec.timeout
            )
            result.elapsed, result.mb_per_s = elapsed, spec.total / elapsed / 1e6
            result.cpu_sender, result.cpu_receiver = cpu, 0.0  # both processes together
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        return result
    deadline = time.monotonic() + spec.timeout
    recv_pipe, recv_child = mp.Pipe(duplex=False)
    send_pipe, send_child = mp.Pipe(duplex=False)
    tls = spec.variant in TLS_VARIANTS
    env = tls_environment(spec.tls_dir) if tls else contextlib.nullcontext()
    receiver: BaseProcess | None = None
    sender: BaseProcess | None = None
    relays = contextlib.ExitStack()
    relay_cpu: list[float] = []
    try:
        with env:
            receiver = mp.Process(target=receiver_main, args=(spec, recv_child), daemon=True)
            receiver.start()
            recv_child.close()
            _, address = await_report(recv_pipe, deadline, "receiver")
            if spec.variant == "g":  # the sender talks to the encrypting end of the tunnel
                key = Path(spec.tls_dir) / "spiped.key"
                address = relays.enter_context(
                    _harness.spiped_tunnel(tuple(address), key, relay_cpu)
                )
            sender = mp.Process(
                target=sender_main, args=(spec, tuple(address), send_child), daemon=True
            )
            sender.start()
            send_child.close()
        _, sent = await_report(send_pipe, deadline, "sender")
        _, received = await_report(recv_pipe, deadline, "receiver")
        if received["messages"] != spec.count:
            raise VerificationError(f"receiver reports {received['messages']} messages")
        result.elapsed = sent["elapsed"]
        result.mb_per_s = spec.total / sent["elapsed"] / 1e6
        result.cipher = sent.get("cipher")
        relays.close()  # the tunnel's CPU counts with the sender's
        result.cpu_sender = sent["cpu"] + sum(relay_cpu)
        result.cpu_receiver = received["cpu"]
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        stop(sender)
        stop(receiver)
        relays.close()
        recv_pipe.close()
        send_pipe.close()
    return result


def median_of(results: list[RunResult]) -> float | None:
    rates = [r.mb_per_s for r in results if r.mb_per_s is not None]
    return statistics.median(rates) if rates else None


def markdown_report(
    args: argparse.Namespace,
    machine: dict[str, Any],
    cert_tool: str | None,
    results: dict[str, list[RunResult]],
    medians: dict[str, float | None],
    ratios: list[dict[str, Any]],
    wall: float,
) -> str:
    total_mib, msg_kib = args.size_mib, args.message_kib
    ciphers = sorted({r.cipher for rs in results.values() for r in rs if r.cipher})
    lines = [
        "## argonlink bulk throughput",
        "",
        f"- CPU: {machine['cpu']}; {machine['cores']} cores"
        + (f" ({machine['usable_cores']} usable)" if machine["usable_cores"] else ""),
        f"- {machine['python']}, {machine['openssl']}, argonlink {machine['argonlink']}, "
        f"{machine['kernel']}",
        f"- Transfer: {total_mib} MiB per run in {msg_kib} KiB messages "
        f"({total_mib * 1024 // msg_kib} messages), loopback, sender and receiver in separate "
        f"processes; {args.repeat} run(s) per variant, interleaved; median shown",
        "- Timing: sender's clock, from just before the first send (connection and handshake "
        "already done) to the arrival of the receiver's 1-byte acknowledgement of the last "
        "message. MB = 10^6 bytes.",
    ]
    if ciphers:
        lines.append(f"- TLS: negotiated {', '.join(ciphers)}; certificate made with {cert_tool}")
    lines += [
        f"- Wall time of the whole benchmark: {wall:.0f} s",
        "",
        "| Variant | Median MB/s | Runs (MB/s) |",
        "|---|---:|---|",
    ]
    for key, runs in results.items():
        median = medians[key]
        shown = "-" if median is None else f"{median:.0f}"
        cells = ", ".join("FAILED" if r.mb_per_s is None else f"{r.mb_per_s:.0f}" for r in runs)
        lines.append(f"| {VARIANTS[key]} | {shown} | {cells} |")
    lines += ["", "| Ratio (medians) | Value | Target | Met |", "|---|---:|---:|:---:|"]
    for ratio in ratios:
        value = ratio["value"]
        shown = f"{value:.2f}" if value is not None else "n/a"
        met = "n/a" if value is None else ("yes" if ratio["met"] else "**no**")
        lines.append(f"| {ratio['name']} | {shown} | >= {ratio['target']} | {met} |")
    failures = [  # the last line; the full error is on stderr and in the JSON
        f"- {VARIANTS[key]}, run {i + 1}: {r.error.strip().splitlines()[-1]}"
        for key, runs in results.items()
        for i, r in enumerate(runs)
        if r.error
    ]
    if failures:
        lines += ["", "Failed runs:", *failures]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Bulk throughput of argonlink vs plain TCP and Python TLS (see docstring)."
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="MiB per run (1024)")
    parser.add_argument("--message-kib", type=int, default=1024, help="message size (1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (3)")
    parser.add_argument("--only", default=",".join(VARIANTS), help="variants, e.g. a,d (all)")
    parser.add_argument("--ceiling", type=Path, help="the tcp_ceiling program (else: built)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.only.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        parser.error(f"--only takes letters from {','.join(VARIANTS)}; got {args.only!r}")
    if args.size_mib < 1 or args.message_kib < 1 or args.repeat < 1:
        parser.error("--size-mib, --message-kib and --repeat must be positive")
    if (args.size_mib * 1024) % args.message_kib:
        parser.error("--size-mib must be a whole number of messages")
    if args.message_kib * 1024 <= INDEX_BYTES:
        parser.error("messages must be longer than their 8-byte index")
    return args


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mp = multiprocessing.get_context("spawn")
    machine = _harness.machine_description()
    total = args.size_mib << 20
    timeout = 60 + total / 5e6  # generous: a run slower than 5 MB/s counts as hung
    variants = [v for v in VARIANTS if v in args.variants]
    skipped: dict[str, str] = {}
    if "g" in variants and shutil.which("spiped") is None:
        skipped["g"] = "spiped is not installed (Debian package `spiped`)"
    ceiling = args.ceiling
    if "h" in variants and ceiling is None:
        ceiling = _harness.build_ceiling()
        if ceiling is None:
            skipped["h"] = "the tokio program could not be built"
    for v, why in skipped.items():
        progress(f"skipping {VARIANTS[v]}: {why}")
    variants = [v for v in variants if v not in skipped]
    results: dict[str, list[RunResult]] = {v: [] for v in variants}
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="argonlink-bench-") as tls_dir:
        cert_tool = None
        if TLS_VARIANTS.intersection(variants):
            cert_tool = make_certificate(Path(tls_dir))
            (Path(tls_dir) / "openssl.cnf").write_text(OPENSSL_CONF)
        if "g" in variants:
            _harness.spiped_key(Path(tls_dir))
        for round_ in range(1, args.repeat + 1):
            for v in variants:
                spec = Spec(
                    v,
                    total,
                    args.message_kib * 1024,
                    timeout,
                    tls_dir,
                    None if ceiling is None else str(ceiling),
                )
                result = run_once(mp, spec)
                results[v].append(result)
                shown = f"{result.mb_per_s:8.0f} MB/s" if result.mb_per_s else "  FAILED"
                progress(f"round {round_}/{args.repeat}  {VARIANTS[v]:<40} {shown}")
                if result.error:
                    progress(f"    {result.error}")

    medians = {v: median_of(runs) for v, runs in results.items()}
    ratios = []
    for name, num, den, target in RATIOS:
        a, b = medians.get(num), medians.get(den)
        value = a / b if a is not None and b else None
        met = value is not None and value >= target
        ratios.append({"name": name, "value": value, "target": target, "met": met})
    wall = time.monotonic() - started
    print(markdown_report(args, machine, cert_tool, results, medians, ratios, wall))

    if args.json:
        document = {
            "machine": machine,
            "config": {
                "size_mib": args.size_mib,
                "message_kib": args.message_kib,
                "repeat": args.repeat,
                "timing": "sender first send -> receiver acknowledgement of the last message",
                "mb": "10**6 bytes",
            },
            "variants": {
                v: {
                    "name": VARIANTS[v],
                    "median_mb_per_s": medians[v],
                    "runs": [r.__dict__ for r in runs],
                }
                for v, runs in results.items()
            },
            "ratios": ratios,
            "skipped": {v: {"name": VARIANTS[v], "why": why} for v, why in skipped.items()},
            "wall_seconds": wall,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    failed = any(r.error for runs in results.values() for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
