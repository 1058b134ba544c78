"""Two hosts over a real network stack: two network namespaces joined by a veth pair.

Each test gets its own pair of namespaces (unique names, deleted afterwards, pass or fail):
the receiving server runs in one (``ip netns exec``), the sender in the other, both as
``tests/netns_peer.py`` processes, over 10.201.0.0/24. Traffic never leaves the namespaces.
On that link:

* a file transfer under delay, loss and reordering (``tc qdisc ... netem``) is byte-identical;
  where the kernel has no netem, the same with HTB rate limits and nftables instead (random
  loss, a random tenth of the packets through a slower class), plus exactly-once messages;
* a link taken down and up mid-transfer: an exactly-once client carries the transfer across
  the reconnect without the application noticing; a plain client's ``send_file`` fails and,
  sent again on a new connection, resumes from the receiver's partial file;
* exactly-once messages arrive once and in order across a link down and up;
* a dead link is noticed by keepalive on both sides after ``ping_timeout``.

Needs root (namespaces), iproute2 (``ip``, ``tc``; ``make test`` installs it as root on
Debian), for the netem case the kernel's sch_netem, for the impaired-link cases nftables
(``nft``; installed the same way); each test skips, saying why, where
these are missing. The figures (transfer times, detection times) are printed: ``pytest -s``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

PEER = Path(__file__).resolve().parent / "netns_peer.py"
PASSWORD = secrets.token_urlsafe(22)
PORT = 7000
SERVER_IP, CLIENT_IP = "10.201.0.1", "10.201.0.2"
NAME = re.compile(r"^argonlink-(\d+)-[0-9a-f]{6}-(srv|cli)$")
MIB = 1 << 20
#: Keepalive for the link-down tests: a link down for OUTAGE seconds is noticed on both sides.
KEEPALIVE = "0.25,1.0"
OUTAGE = 2.5

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="network namespaces are Linux only"
    ),
]


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip() or done.returncode}")
    return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def netns_available() -> None:
    """Skip unless namespaces can be made here; remove namespaces that earlier runs of this
    module left behind when they were killed (their process is gone)."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 is not installed (no 'ip' command); 'make test' installs it")
    for line in run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = NAME.match(name)
        if match and not _pid_alive(int(match.group(1))):
            run("ip", "netns", "delete", name, check=False)
    probe = f"argonlink-{os.getpid()}-{secrets.token_hex(3)}-srv"
    made = run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    run("ip", "netns", "delete", probe, check=False)


# --------------------------------------------------------------------------------------------
# A peer process in a namespace


class Peer:
    """``netns_peer.py ROLE ...`` in namespace ``ns``; its JSON lines are collected."""

    def __init__(self, ns: str, role: str, *args: str) -> None:
        self.role = role
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by stop())
        env = dict(os.environ, NETNS_PEER_PASSWORD=PASSWORD)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(PEER), role, *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self._queue.put(json.loads(line))
        self._queue.put(None)

    def stderr(self) -> str:
        with contextlib.suppress(ValueError, OSError):
            self._stderr.seek(0)
            return self._stderr.read()[-3000:]
        return ""

    def _pull(self, timeout: float) -> bool:
        """Move one event from the reader to ``events``; False at the end of the output."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return True
        if item is None:
            self._queue.put(None)  # stays ended
            return False
        self.events.append(item)
        return True

    def wait(
        self, event: str, timeout: float, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """The first ``event`` (matching ``where``), waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for item in self.events:
                if item["event"] == event and (where is None or where(item)):
                    return item
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._pull(min(remaining, 0.1)):
                break  # out of time, or the process ended (every event is in)
        raise AssertionError(
            f"{self.role}: no {event!r} within {timeout} s; events {self.names()}; "
            f"exit {self.proc.poll()}; stderr: {self.stderr()}"
        )

    def collect(self) -> None:
        while not self._queue.empty():
            if not self._pull(0):
                break

    def of(self, event: str) -> list[dict[str, Any]]:
        self.collect()
        return [e for e in self.events if e["event"] == event]

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


# --------------------------------------------------------------------------------------------
# Two namespaces and a veth pair


class Link:
    """Namespaces ``srv`` (SERVER_IP) and ``cli`` (CLIENT_IP), joined by a veth pair."""

    def __init__(self) -> None:
        token = secrets.token_hex(3)
        self.ns = {side: f"argonlink-{os.getpid()}-{token}-{side}" for side in ("srv", "cli")}
        self.dev = {side: f"al{token}{side[0]}" for side in ("srv", "cli")}
        self.made: list[str] = []
        self.peers: list[Peer] = []

    def create(self) -> None:
        for side in ("srv", "cli"):
            run("ip", "netns", "add", self.ns[side])
            self.made.append(self.ns[side])
        run(
            "ip", "link", "add", self.dev["srv"], "netns", self.ns["srv"], "type", "veth",
            "peer", "name", self.dev["cli"], "netns", self.ns["cli"],
        )  # fmt: skip
        for side, ip in (("srv", SERVER_IP), ("cli", CLIENT_IP)):
            ns, dev = self.ns[side], self.dev[side]
            run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "link", "set", dev, "up")

    def destroy(self) -> None:
        for peer in self.peers:
            with contextlib.suppress(Exception):
                peer.stop()
        for ns in self.made:
            run("ip", "netns", "delete", ns, check=False)

    def spawn(self, side: str, role: str, *args: str) -> Peer:
        peer = Peer(self.ns[side], role, *args)
        self.peers.append(peer)
        return peer

    def set(self, side: str, state: str) -> None:
        """``ip link set dev X down`` / ``up`` on one end of the veth pair."""
        run("ip", "-n", self.ns[side], "link", "set", "dev", self.dev[side], state)

    def netem(self, *spec: str) -> None:
        """Apply ``tc qdisc ... netem SPEC`` to both ends (each direction), or skip."""
        if shutil.which("tc") is None:
            pytest.skip("no 'tc' command (iproute2) for netem")
        for side in ("srv", "cli"):
            done = run(
                "ip", "netns", "exec", self.ns[side], "tc", "qdisc", "replace", "dev",
                self.dev[side], "root", "netem", *spec, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                pytest.skip(
                    f"tc netem is not available ({done.stderr.strip()}): the kernel lacks "
                    "the sch_netem module"
                )

    def impair(self, loss_percent: int, reorder_percent: int) -> None:
        """Delay, loss and reordering without netem, on each end's egress and ingress:

        * an HTB qdisc with two rate-limited classes and short queues (queueing delay, drops
          when a queue overflows); nftables sends ``reorder_percent`` % of TCP packets, chosen
          at random, through the slow class (4 Mbit/s against 40), so the others overtake them;
        * nftables drops ``loss_percent`` % of incoming TCP packets at random.

        Skips when ``tc`` or ``nft`` (Debian package nftables) or the kernel's HTB or nftables
        are missing."""
        for tool in ("tc", "nft"):
            if shutil.which(tool) is None:
                pytest.skip(f"no '{tool}' command for the impaired link")
        for side in ("srv", "cli"):
            ns, dev = self.ns[side], self.dev[side]
            commands = [
                ["tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb",
                 "default", "10", "r2q", "50"],
                ["tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
                 "rate", "40mbit", "ceil", "40mbit"],
                ["tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:20", "htb",
                 "rate", "4mbit", "ceil", "4mbit"],
                ["tc", "qdisc", "add", "dev", dev, "parent", "1:10", "pfifo", "limit", "100"],
                ["tc", "qdisc", "add", "dev", dev, "parent", "1:20", "pfifo", "limit", "20"],
                ["nft", "add", "table", "inet", "impair"],
                ["nft", "add", "chain", "inet", "impair", "out",
                 "{ type filter hook output priority 0; }"],
                ["nft", "add", "rule", "inet", "impair", "out", "meta", "l4proto", "tcp",
                 "numgen", "random", "mod", "100", "<", str(reorder_percent),
                 "counter", "meta", "priority", "set", "1:20"],
                ["nft", "add", "chain", "inet", "impair", "in",
                 "{ type filter hook input priority 0; }"],
                ["nft", "add", "rule", "inet", "impair", "in", "meta", "l4proto", "tcp",
                 "numgen", "random", "mod", "100", "<", str(loss_percent), "counter", "drop"],
            ]  # fmt: skip
            for cmd in commands:
                done = run("ip", "netns", "exec", ns, *cmd, check=False)
                if done.returncode != 0:
                    pytest.skip(f"cannot impair the link: {' '.join(cmd)}: {done.stderr.strip()}")

    def tcp_counters(self, side: str) -> dict[str, int]:
        """The TCP statistics of one namespace (``nstat``), by name."""
        out = run("ip", "netns", "exec", self.ns[side], "nstat", "-az").stdout
        return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)", out, flags=re.MULTILINE)}

    def nft_counts(self) -> dict[str, int]:
        """Packets the impairment rules matched on both ends: 'delayed' (sent through the slow
        class) and 'dropped'."""
        counts = {"delayed": 0, "dropped": 0}
        for side in ("srv", "cli"):
            out = run("ip", "netns", "exec", self.ns[side], "nft", "list", "table", "inet",
                      "impair").stdout  # fmt: skip
            for line in out.splitlines():
                m = re.search(r"counter packets (\d+)", line)
                if m:
                    counts["dropped" if "drop" in line else "delayed"] += int(m[1])
        return counts

    def netem_drops(self) -> int:
        """Packets netem dropped on both ends so far."""
        total = 0
        for side in ("srv", "cli"):
            out = run(
                "ip", "netns", "exec", self.ns[side], "tc", "-s", "qdisc", "show", "dev",
                self.dev[side],
            ).stdout  # fmt: skip
            total += sum(int(n) for n in re.findall(r"dropped (\d+)", out))
        return total


@pytest.fixture
def link(netns_available: None) -> Iterator[Link]:
    net = Link()
    try:
        try:
            net.create()
        except RuntimeError as exc:
            pytest.skip(f"cannot set up two namespaces and a veth pair: {exc}")
        yield net
    finally:
        net.destroy()


# --------------------------------------------------------------------------------------------
# Helpers


def make_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, MIB))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def start_file_transfer(
    link: Link, tmp_path: Path, size: int, *sender_args: str, server_args: tuple[str, ...] = ()
) -> tuple[Peer, Peer, Path, Path, str]:
    src, dest = tmp_path / "payload.bin", tmp_path / "dest"
    dest.mkdir()
    digest = make_file(src, size)
    server = link.spawn("srv", "serve-files", SERVER_IP, str(PORT), str(dest), *server_args)
    server.wait("ready", 30)
    sender = link.spawn("cli", "send-file", SERVER_IP, str(PORT), str(src), *sender_args)
    return server, sender, src, dest, digest


def start_echoed_messages(link: Link, count: int) -> tuple[Peer, Peer]:
    """An echo server and an exactly-once client sending ``count`` numbered messages at 400/s."""
    server = link.spawn("srv", "serve-echo", SERVER_IP, str(PORT), "--keepalive", KEEPALIVE)
    server.wait("ready", 30)
    client = link.spawn(
        "cli", "send-messages", SERVER_IP, str(PORT), str(count),
        "--rate", "400", "--keepalive", KEEPALIVE,
    )  # fmt: skip
    return server, client


def outage_at(link: Link, sender: Peer, fraction_done: float, seconds: float) -> float:
    """Once the sender reports ``fraction_done`` of the file, take the client's end of the
    link down for ``seconds``; return when it went down (monotonic)."""
    sender.wait("progress", 60, lambda e: e["done"] >= fraction_done * e["total"])
    went_down = time.monotonic()
    link.set("cli", "down")
    time.sleep(seconds)
    link.set("cli", "up")
    return went_down


def assert_stored(dest: Path, digest: str) -> None:
    assert sorted(p.name for p in dest.iterdir()) == ["payload.bin"]  # no partial left
    assert sha256_of(dest / "payload.bin") == digest


# --------------------------------------------------------------------------------------------
# (a) Files


def test_file_transfer_under_delay_loss_and_reordering(link: Link, tmp_path: Path) -> None:
    """10 ms each way (20 ms round trip), 2 % loss each way, 10 % of packets reordered."""
    link.netem("delay", "10ms", "reorder", "10%", "50%", "loss", "2%")
    size = 20 * MIB  # TCP keeps a few MB/s through this: seconds, not minutes
    server, sender, _, dest, digest = start_file_transfer(link, tmp_path, size, "--attempts", "3")
    sent = sender.wait("sent", 80)
    stored = server.wait("file", 10)
    drops = link.netem_drops()
    print(
        f"\nnetem delay 10ms/way, loss 2%/way, reorder 10%: {size // MIB} MiB in "
        f"{sent['elapsed']:.1f} s ({size / sent['elapsed'] / 1e6:.2f} MB/s), "
        f"attempt {sent['attempt']}, {drops} packets dropped by netem"
    )
    assert sent["sha256"] == stored["sha256"] == digest
    assert_stored(dest, digest)
    assert drops > 0  # the loss was real


def test_file_transfer_over_an_impaired_link_without_netem(link: Link, tmp_path: Path) -> None:
    """Where the kernel has no netem: 2 % of TCP packets dropped at random each way, 10 %
    reordered each way (through a slower class), rate limits with short queues. The transfer
    is byte-identical, and the link really lost and reordered packets (TCP's own counters)."""
    link.impair(loss_percent=2, reorder_percent=10)
    size = 16 * MIB
    server, sender, _, dest, digest = start_file_transfer(link, tmp_path, size, "--attempts", "3")
    sent = sender.wait("sent", 120)
    stored = server.wait("file", 10)
    counts = link.nft_counts()
    tcp = link.tcp_counters("cli")  # the data sender sees the loss and reordering
    print(
        f"\nimpaired link (2 % loss, 10 % reordered, 40/4 Mbit/s): {size // MIB} MiB in "
        f"{sent['elapsed']:.1f} s ({size / sent['elapsed'] / 1e6:.2f} MB/s), attempt "
        f"{sent['attempt']}; {counts['dropped']} packets dropped, {counts['delayed']} sent "
        f"the slow way; sender's TCP: {tcp.get('TcpRetransSegs', 0)} segments retransmitted, "
        f"{tcp.get('TcpExtTCPSACKReorder', 0) + tcp.get('TcpExtTCPTSReorder', 0)} reorderings "
        "detected"
    )
    assert sent["sha256"] == stored["sha256"] == digest
    assert_stored(dest, digest)
    assert counts["dropped"] > 0 and counts["delayed"] > 0  # the impairment was real
    assert tcp.get("TcpRetransSegs", 0) > 0


def test_exactly_once_messages_over_an_impaired_link(link: Link) -> None:
    """2000 numbered messages at 400/s over the impaired link (no netem needed), echoed: each
    once and in order both ways."""
    link.impair(loss_percent=2, reorder_percent=10)
    count = 2000
    server, client = start_echoed_messages(link, count)
    done = client.wait("done", 90)
    got = server.wait("messages", 15)
    counts = link.nft_counts()
    print(
        f"\nexactly-once messages over the impaired link: {count} messages, "
        f"{done['reconnects']} reconnect(s), {counts['dropped']} packets dropped, "
        f"{counts['delayed']} sent the slow way"
    )
    assert got["numbers"] == list(range(count))
    assert done["echoes"] == list(range(count))
    assert got["clean"], got
    assert counts["dropped"] > 0 and counts["delayed"] > 0


def test_exactly_once_file_transfer_carries_on_across_link_down_and_up(
    link: Link, tmp_path: Path
) -> None:
    """One ``send_file`` over an exactly-once client: the link goes down for 2.5 s at a
    quarter of the file, keepalive (1 s) ends the connection on both sides, the client
    reconnects once the link is back and resumes the session, and the same ``send_file`` call
    completes: one server connection, nothing re-sent from the start."""
    size = 32 * MIB
    server, sender, _, dest, digest = start_file_transfer(
        link,
        tmp_path,
        size,
        "--exactly-once",
        "--pace", "8",
        "--keepalive", KEEPALIVE,
        server_args=("--keepalive", KEEPALIVE),
    )  # fmt: skip
    went_down = outage_at(link, sender, 0.25, OUTAGE)
    sent = sender.wait("sent", 60)
    stored = server.wait("file", 10)
    print(
        f"\nexactly-once, link down {OUTAGE} s at 25 %: {size // MIB} MiB in "
        f"{sent['elapsed']:.1f} s (paced to 8 MB/s), {sent['reconnects']} reconnect(s), "
        f"done {stored['at'] - went_down:.1f} s after the link went down"
    )
    assert sent["sha256"] == stored["sha256"] == digest
    assert_stored(dest, digest)
    assert sent["attempt"] == 1 and sender.of("attempt-failed") == []
    assert sent["reconnects"] >= 1  # the connection really dropped
    assert sent["resumed_from"] == stored["resumed_from"] == 0  # continued, not resumed
    assert [e["exactly_once"] for e in server.of("connection")] == [True]
    assert server.of("transfer-failed") == []


def test_plain_file_transfer_resumes_after_link_down_and_up(link: Link, tmp_path: Path) -> None:
    """A plain client: the link goes down for 2.5 s at a quarter of the file, keepalive ends
    the transfer on both sides (the receiver keeps its partial file), and ``send_file`` again,
    on a new connection once the link is back, sends only the rest."""
    size = 32 * MIB
    server, sender, _, dest, digest = start_file_transfer(
        link,
        tmp_path,
        size,
        "--attempts", "30",
        "--pace", "8",
        "--keepalive", KEEPALIVE,
        server_args=("--keepalive", KEEPALIVE),
    )  # fmt: skip
    went_down = outage_at(link, sender, 0.25, OUTAGE)
    sent = sender.wait("sent", 60)
    stored = server.wait("file", 10)
    failed = sender.of("attempt-failed")
    print(
        f"\nplain client, link down {OUTAGE} s at 25 %: {size // MIB} MiB in "
        f"{sent['elapsed']:.1f} s over {sent['attempt']} attempts, resumed from "
        f"{sent['resumed_from'] / MIB:.1f} MiB, done {stored['at'] - went_down:.1f} s after "
        f"the link went down; first failure: {failed[0] if failed else None}"
    )
    assert sent["sha256"] == stored["sha256"] == digest
    assert_stored(dest, digest)
    assert failed and sent["attempt"] >= 2
    assert server.of("transfer-failed")
    assert 0 < sent["resumed_from"] == stored["resumed_from"] < size


# --------------------------------------------------------------------------------------------
# (b) Exactly-once messages


def test_exactly_once_messages_across_link_down_and_up(link: Link) -> None:
    """2000 numbered messages at 400/s, echoed; the link goes down for 2.5 s after 400. Both
    sides see every number once, in order, and the server one connection (one session)."""
    count = 2000
    server, client = start_echoed_messages(link, count)
    client.wait("progress", 30, lambda e: e["sent"] >= 400)
    went_down = time.monotonic()
    link.set("cli", "down")
    time.sleep(OUTAGE)
    link.set("cli", "up")
    done = client.wait("done", 60)
    got = server.wait("messages", 15)
    print(
        f"\nexactly-once messages, link down {OUTAGE} s: {count} messages, "
        f"{done['reconnects']} reconnect(s), all echoed {done['at'] - went_down:.1f} s after "
        f"the link went down"
    )
    assert got["numbers"] == list(range(count))  # server: each once, in order
    assert done["echoes"] == list(range(count))  # and back
    assert got["clean"], got
    assert done["reconnects"] >= 1
    assert [e["exactly_once"] for e in server.of("connection")] == [True]


# --------------------------------------------------------------------------------------------
# (c) Keepalive


def test_keepalive_notices_a_dead_link_on_both_sides(link: Link) -> None:
    """ping_interval 0.2 s, ping_timeout 1 s; the link goes down and stays down. Both ends
    close the connection as unresponsive (1006) about ping_timeout later: keepalive noticed,
    long before TCP would have given up (minutes)."""
    interval, timeout = 0.2, 1.0
    spec = f"{interval},{timeout}"
    server = link.spawn("srv", "serve-one", SERVER_IP, str(PORT), "--keepalive", spec)
    server.wait("ready", 30)
    client = link.spawn("cli", "hold", SERVER_IP, str(PORT), "--keepalive", spec)
    client.wait("exchanged", 30)
    server.wait("exchanged", 30)
    time.sleep(3 * interval)  # pings flowing: the link is alive
    assert client.of("closed") == server.of("closed") == []
    went_down = time.monotonic()
    link.set("cli", "down")
    ends = {"server": server.wait("closed", 30), "client": client.wait("closed", 30)}
    detected = {side: end["at"] - went_down for side, end in ends.items()}
    print(
        f"\nkeepalive {interval}/{timeout} s, link down: server noticed after "
        f"{detected['server']:.2f} s, client after {detected['client']:.2f} s"
    )
    for side, end in ends.items():
        assert end["type"] == "ConnectionClosedError", (side, end)
        assert end["code"] == 1006 and "unresponsive" in end["reason"], (side, end)
        # Not before the peer had been silent for about ping_timeout; within a few seconds.
        assert timeout / 2 <= detected[side] < timeout + 5.0, (side, detected)
