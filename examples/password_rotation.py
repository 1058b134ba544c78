"""Change a server's password without losing a client: a grace window and a reconnecting client.

    python examples/password_rotation.py

1. A server with the old password, and a client with ``reconnect=True``, exchange messages.
2. The server switches to the new password with ``grace=``: during the window both passwords
   are accepted and the client's connection stays up.
3. The client is given the new password (``client.set_password``): it is used for the next
   handshake; the current connection is unaffected.
4. When the window ends, the server closes the connections made with the old password (close
   code 4002, re-authenticate); the client reconnects with the new one and carries on.
5. A client that still has the old password is refused.

Give clients the new password before the window ends: a reconnecting client that still holds
the old one stops with AuthenticationError (it never retries a wrong password).
"""

from __future__ import annotations

import logging
import secrets
import sys
import time

import argonlink
import argonlink.sync

GRACE = 1.0  # seconds; in production, longer than it takes to roll the password out
KDF = argonlink.KdfParams.OWASP  # quick for the demo; leave kdf= out for the stronger default


def echo(conn: argonlink.sync.Connection) -> None:
    for msg in conn:
        conn.send(msg)


def round_trip(client: argonlink.sync.Client, text: str) -> None:
    client.send(text.encode(), timeout=5)
    reply = client.recv(timeout=5).decode()
    epoch = client.connection.key_epoch
    print(f"client: echoed {reply!r} (connection under key epoch {epoch})")


def main() -> None:
    # argonlink logs refused handshakes (a warning); show them in line with the story.
    logging.basicConfig(stream=sys.stdout, format="log:    %(message)s")
    old, new = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    policy = argonlink.ReconnectPolicy(initial_delay=0.05, max_delay=0.5)
    with argonlink.sync.Server(password=old, kdf=KDF, handler=echo) as server:
        print(f"server: listening, key epoch {server.key_epoch}")
        with argonlink.sync.Client(*server.address, password=old, reconnect=policy) as client:
            round_trip(client, "before the change")
            first = client.connection

            epoch = server.set_password(new, kdf=KDF, grace=GRACE)
            print(f"server: new password, key epoch {epoch}; the old one works {GRACE} s more")
            round_trip(client, "during the grace window")

            client.set_password(new)
            print("client: has the new password for its next handshake")

            deadline = time.monotonic() + 10 * GRACE + 5
            while client.reconnects == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            client.wait_connected(timeout=5)
            print(
                f"server: closed the old connection (code {first.close_code}, "
                f"{first.close_reason!r}) when the window ended"
            )
            print(f"client: reconnected {client.reconnects} time(s) with the new password")
            round_trip(client, "after the change")

        try:
            argonlink.sync.Client(*server.address, password=old).connect()
        except argonlink.AuthenticationError:
            print("server: a client with the old password is refused")
        else:
            raise SystemExit("the old password still works: this should not happen")


if __name__ == "__main__":
    main()
