"""Message echo with the asyncio API: a server whose handler echoes, and a client.

python examples/echo_async.py
"""

from __future__ import annotations

import asyncio
import secrets

import argonlink


async def echo(conn: argonlink.Connection) -> None:
    async for msg in conn:  # ends when the client closes
        await conn.send(msg)


async def main() -> None:
    password = secrets.token_urlsafe(24)  # both servers would read this from their config
    async with argonlink.Server("127.0.0.1", 0, password=password, handler=echo) as server:
        host, port = server.address
        async with argonlink.Client(host, port, password=password) as client:
            for text in ("hello", "from", "argonlink"):
                await client.send(text.encode())
                print("echoed:", (await client.recv(timeout=5)).decode())


if __name__ == "__main__":
    asyncio.run(main())
