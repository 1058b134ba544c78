"""A server in its own process for the memory tests of ``test_hostile.py``: its RSS is then the
server's alone. Usage: ``python hostile_server.py PHC OPTIONS_JSON``; prints the port, accepts
every connection and holds it without reading a message, and exits when stdin closes."""

from __future__ import annotations

import json
import sys
import threading

from argonlink import sync


def main() -> None:
    phc, options = sys.argv[1], json.loads(sys.argv[2])
    held: list[sync.Connection] = []
    with sync.Server(password_hash=phc, **options) as srv:
        print(srv.address[1], flush=True)

        def accept() -> None:
            while True:
                try:
                    held.append(srv.accept())
                except Exception:
                    return

        threading.Thread(target=accept, daemon=True).start()
        sys.stdin.read()


if __name__ == "__main__":
    main()
