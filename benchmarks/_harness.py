"""What the benchmark scripts share: two-process runs, the Rust ceiling, the machine, medians.

Each measurement runs a *server* and a *client* in two fresh interpreters (``spawn``). The
server reports its address through a pipe; the client reports its timing; both report errors
with a traceback. The parent kills anything still running after the run's timeout.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import platform
import shutil
import ssl
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection as Pipe
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
PASSWORD = "argonlink benchmark"
ROOT = Path(__file__).resolve().parent.parent

MP = multiprocessing.get_context("spawn")


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Two processes


def _server_main(target: Callable[..., Any], args: tuple[Any, ...], report: Pipe) -> None:
    try:
        report.send(("done", target(*args, report)))
    except BaseException:
        report.send(("error", traceback.format_exc()))


def _client_main(
    target: Callable[..., Any], args: tuple[Any, ...], address: Any, report: Pipe
) -> None:
    try:
        report.send(("done", target(*args, address)))
    except BaseException:
        report.send(("error", traceback.format_exc()))


def await_report(pipe: Pipe, deadline: float, who: str) -> Any:
    if not pipe.poll(max(0.0, deadline - time.monotonic())):
        raise TimeoutError(f"the {who} did not report in time")
    try:
        kind, payload = pipe.recv()
    except EOFError:
        raise RuntimeError(f"the {who} process died without reporting") from None
    if kind == "error":
        raise RuntimeError(f"the {who} failed:\n{payload}")
    return payload


def stop(process: BaseProcess | subprocess.Popen[Any] | None, wait: float = 10) -> None:
    if process is None:
        return
    if isinstance(process, subprocess.Popen):
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return
    process.join(wait)
    if process.is_alive():
        process.kill()
        process.join()


def run_pair(
    server: Callable[..., Any],
    server_args: tuple[Any, ...],
    client: Callable[..., Any],
    client_args: tuple[Any, ...],
    timeout: float,
    relay: Callable[[Any], contextlib.AbstractContextManager[Any]] | None = None,
    server_result: bool = True,
) -> tuple[Any, Any]:
    """Run ``server(*server_args, report)`` (which must ``report.send(("address", addr))``
    once listening, then return its result) and ``client(*client_args, address)`` in two
    processes; return both results. ``relay(address)`` may put something in between (it
    yields the address the client should use). With ``server_result=False`` the server serves
    until it is terminated once the client is done."""
    deadline = time.monotonic() + timeout
    srv_pipe, srv_child = MP.Pipe(duplex=False)
    cli_pipe, cli_child = MP.Pipe(duplex=False)
    procs: list[BaseProcess] = []
    try:
        p = MP.Process(target=_server_main, args=(server, server_args, srv_child), daemon=True)
        p.start()
        procs.append(p)
        srv_child.close()
        kind, address = _first_message(srv_pipe, deadline)
        if kind != "address":
            raise RuntimeError(f"server said {kind!r} before its address")
        with relay(address) if relay else contextlib.nullcontext(address) as target_address:
            c = MP.Process(
                target=_client_main,
                args=(client, client_args, target_address, cli_child),
                daemon=True,
            )
            c.start()
            procs.append(c)
            cli_child.close()
            client_result = await_report(cli_pipe, deadline, "client")
            if not server_result:
                procs[0].terminate()
                return None, client_result
            result = await_report(srv_pipe, deadline, "server")
        return result, client_result
    finally:
        for proc in reversed(procs):
            stop(proc)
        srv_pipe.close()
        cli_pipe.close()


def _first_message(pipe: Pipe, deadline: float) -> tuple[str, Any]:
    if not pipe.poll(max(0.0, deadline - time.monotonic())):
        raise TimeoutError("the server did not start in time")
    try:
        kind, payload = pipe.recv()
    except EOFError:
        raise RuntimeError("the server process died before it listened") from None
    if kind == "error":
        raise RuntimeError(f"the server failed:\n{payload}")
    return kind, payload


# --------------------------------------------------------------------------------------------
# The Rust ceiling (benches/tcp_ceiling.rs)


def build_ceiling(name: str = "tcp_ceiling") -> Path | None:
    """Build a Rust ceiling program (``benches/<name>.rs``); its path, or None (with a note) if
    cargo fails."""
    cargo = shutil.which("cargo")
    if cargo is None:
        progress(f"cargo not found: the {name} rows are skipped")
        return None
    command = [cargo, "build", "--release", "--bench", name, "--message-format=json"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        progress(f"building {name} failed: its rows are skipped\n{done.stderr}")
        return None
    for line in done.stdout.splitlines():
        with contextlib.suppress(ValueError):
            msg = json.loads(line)
            if (
                msg.get("reason") == "compiler-artifact"
                and msg.get("executable")
                and msg["target"]["name"] == name
            ):
                return Path(msg["executable"])
    progress(f"{name} was built but not found: its rows are skipped")
    return None


def run_cipher_ceiling(program: Path, mib: int, message_kib: int) -> dict[str, Any]:
    """Seal, open and copy throughput on one core (``benches/cipher_ceiling.rs``), GB/s."""
    done = subprocess.run(
        [program, str(mib), str(message_kib)], capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run_ceiling(
    program: Path, mode: str, count: int, size: int, timeout: float
) -> tuple[float, float]:
    """Seconds the Rust client took for ``count`` messages of ``size`` bytes in ``mode``, and
    the CPU seconds both processes used."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = subprocess.Popen([program, "server"], stdout=subprocess.PIPE, text=True)
    client = None
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        client = subprocess.run(
            [program, "client", str(port), mode, str(count), str(size)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        elapsed = float(json.loads(client.stdout)["elapsed"])
    finally:
        stop(server, 5)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


# --------------------------------------------------------------------------------------------
# spiped (a Debian package): two tunnel ends between a plain TCP client and server


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def spiped_tunnel(
    address: tuple[str, int], keyfile: Path, cpu: list[float] | None = None
) -> Iterator[tuple[str, int]]:
    """``client -> [encrypting spiped] -> [decrypting spiped] -> address``; yields the
    encrypting end's address. Appends the CPU seconds the two ends used to ``cpu``."""
    spiped = shutil.which("spiped")
    if spiped is None:
        raise RuntimeError("spiped is not installed")
    host, port = address
    inner, outer = free_port(), free_port()
    ends = [
        subprocess.Popen(
            [spiped, "-F", "-d", "-s", f"[{HOST}]:{inner}", "-t", f"[{host}]:{port}", "-k", keyfile]
        ),
        subprocess.Popen(
            [
                spiped,
                "-F",
                "-e",
                "-s",
                f"[{HOST}]:{outer}",
                "-t",
                f"[{HOST}]:{inner}",
                "-k",
                keyfile,
            ]
        ),
    ]
    try:
        wait_listening([inner, outer], 10)
        yield (HOST, outer)
    finally:
        if cpu is not None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                cpu.append(sum(process_cpu(end.pid) for end in ends))
        for end in ends:
            end.terminate()
            stop(end, 5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_listening(ports: Sequence[int], timeout: float) -> None:
    """Wait until every port has a listener (read from /proc, so no connection is made)."""
    wanted = {f"{p:04X}" for p in ports}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listening = set()
        with contextlib.suppress(OSError):
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    listening.add(fields[1].rsplit(":", 1)[1])
        if wanted <= listening:
            return
        time.sleep(0.02)
    raise TimeoutError("spiped did not start listening")


def spiped_key(directory: Path) -> Path:
    key = directory / "spiped.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    return key


# --------------------------------------------------------------------------------------------
# Reporting helpers


def machine_description() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    rustc = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rustc = subprocess.run(
            ["rustc", "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    import argonlink

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "rustc": rustc,
        "openssl": ssl.OPENSSL_VERSION,
        "argonlink": argonlink.__version__,
        "spiped": spiped_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": os.getloadavg(),
    }


def spiped_version() -> str | None:
    spiped = shutil.which("spiped")
    if spiped is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([spiped, "-v"], capture_output=True, text=True, timeout=5)
        return (out.stdout or out.stderr).strip() or "installed"
    return "installed"


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def scaled(value: float | None, factor: float) -> float | None:
    """``value * factor``, or None for no value (e.g. the median of nothing)."""
    return None if value is None else value * factor


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
