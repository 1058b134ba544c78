"""Processes of their own for the memory and capacity tests of ``test_hostile.py``.

``python hostile_server.py serve PHC OPTIONS_JSON``: a server whose RSS is then its own. It
prints its port, accepts every connection and holds it without reading a message, and exits
when stdin closes.

``python hostile_server.py idle-flood HOST PORT SOURCE KEEP``: a flood of idle connections from
the address SOURCE (bound before connecting): every other connection sends only the hello, the
rest send nothing. It keeps at most KEEP open (closing the oldest) and dials without pause until
stdin closes; it prints "ready" once KEEP connections were made, and at the end the number it
made. In a process of its own, so that it dials as fast as the machine allows while the test
runs its client."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections import deque


def hello() -> bytes:
    """A client hello (PROTOCOL.md §3.1): version 2, suite 1, no epoch hint, a fresh nonce, no
    identity."""
    return b"ALNK\x00\x02\x00\x01\x00\x00\x00\x00" + os.urandom(16) + b"\x00"


def serve(phc: str, options: dict[str, object]) -> None:
    from argonlink import sync

    held: list[sync.Connection] = []
    with sync.Server(password_hash=phc, **options) as srv:  # type: ignore[arg-type]
        print(srv.address[1], flush=True)

        def accept() -> None:
            while True:
                try:
                    held.append(srv.accept())
                except Exception:
                    return

        threading.Thread(target=accept, daemon=True).start()
        sys.stdin.read()


def idle_flood(address: tuple[str, int], source: str, keep: int) -> None:
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    open_socks: deque[socket.socket] = deque()
    made = 0
    while not stop.is_set():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((source, 0))
            sock.connect(address)
            if made % 2:
                sock.sendall(hello())
        except OSError:
            sock.close()
            continue
        made += 1
        open_socks.append(sock)
        if len(open_socks) > keep:
            open_socks.popleft().close()
        if made == keep:
            print("ready", flush=True)
    for sock in open_socks:
        sock.close()
    print(made, flush=True)


def main() -> None:
    mode = sys.argv[1]
    if mode == "serve":
        serve(sys.argv[2], json.loads(sys.argv[3]))
    elif mode == "idle-flood":
        idle_flood((sys.argv[2], int(sys.argv[3])), sys.argv[4], int(sys.argv[5]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
