"""Two processes, one link: a receiving server and a sending server exchange a generated stream.

    python examples/transfer.py [--size-mib 256] [--message-kib 1024]

The parent makes a random password and hands it to both children through the environment
(never the command line), starts the receiver, then the sender. The sender streams
pseudo-random data in messages; the receiver hashes everything it gets. Both print SHA-256;
the parent checks they match and reports throughput.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time

import argonlink
import argonlink.sync

ENV_PASSWORD = "ARGONLINK_DEMO_PASSWORD"


def receive() -> None:
    password = os.environ.pop(ENV_PASSWORD)
    with argonlink.sync.Server("127.0.0.1", 0, password=password) as server:
        print(server.address[1], flush=True)
        conn = server.accept(timeout=60)
        digest, total, start = hashlib.sha256(), 0, 0.0
        for msg in conn:  # ends when the sender closes cleanly; raises on any other end
            if not total:
                start = time.perf_counter()
            digest.update(msg)
            total += len(msg)
        elapsed = time.perf_counter() - start
    print(json.dumps({"bytes": total, "seconds": elapsed, "sha256": digest.hexdigest()}))


def send(port: int, size: int, message: int) -> None:
    password = os.environ.pop(ENV_PASSWORD)
    block = secrets.token_bytes(message)
    digest = hashlib.sha256()
    with argonlink.sync.Client("127.0.0.1", port, password=password) as client:
        sent = 0
        while sent < size:
            # Vary every message so that reordering or replay would change the hash.
            msg = sent.to_bytes(8, "big") + block[8 : min(message, size - sent)]
            digest.update(msg)
            client.send(msg)
            sent += len(msg)
    print(json.dumps({"bytes": sent, "sha256": digest.hexdigest()}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--message-kib", type=int, default=1024)
    parser.add_argument("--role", choices=["receive", "send"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    size, message = args.size_mib * 1024 * 1024, args.message_kib * 1024
    if args.role == "receive":
        receive()
        return 0
    if args.role == "send":
        send(args.port, size, message)
        return 0

    env = dict(os.environ, **{ENV_PASSWORD: secrets.token_urlsafe(24)})
    me = [sys.executable, __file__, "--size-mib", str(args.size_mib)]
    receiver = subprocess.Popen([*me, "--role", "receive"], env=env, stdout=subprocess.PIPE)
    assert receiver.stdout is not None
    port = int(receiver.stdout.readline())  # first line: the port it listens on
    sender = subprocess.run(
        [*me, "--message-kib", str(args.message_kib), "--role", "send", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        check=True,
    )
    out, _ = receiver.communicate(timeout=600)  # then: its JSON report
    sent, got = json.loads(sender.stdout), json.loads(out)
    ok = sent["sha256"] == got["sha256"] and sent["bytes"] == got["bytes"]
    mb_s = got["bytes"] / got["seconds"] / 1e6
    print(
        f"argonlink {argonlink.__version__}: {got['bytes'] / 2**20:.0f} MiB in messages of "
        f"{args.message_kib} KiB, two processes over loopback"
    )
    print(f"throughput  {mb_s:,.0f} MB/s ({got['seconds']:.2f} s, SHA-256 of every byte included)")
    print(f"sent   sha256 {sent['sha256']}")
    print(f"received      {got['sha256']}  {'verified' if ok else 'MISMATCH'}")
    return 0 if ok and receiver.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
