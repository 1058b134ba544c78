"""Message echo with the blocking API.

python examples/echo_sync.py
"""

from __future__ import annotations

import secrets

import argonlink.sync


def echo(conn: argonlink.sync.Connection) -> None:
    for msg in conn:
        conn.send(msg)


def main() -> None:
    password = secrets.token_urlsafe(24)
    with argonlink.sync.Server("127.0.0.1", 0, password=password, handler=echo) as server:
        with argonlink.sync.Client(*server.address, password=password) as client:
            for text in ("hello", "from", "argonlink"):
                client.send(text.encode())
                print("echoed:", client.recv(timeout=5).decode())


if __name__ == "__main__":
    main()
