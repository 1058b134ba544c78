"""Shared fixtures: real servers on free loopback ports, with OWASP-floor Argon2 costs so that
the one derivation per server and per client stays fast."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import argonlink
import argonlink.sync
import pytest
from support import KDF, PASSWORD


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture
async def server() -> AsyncIterator[argonlink.Server]:
    async with argonlink.Server("127.0.0.1", 0, password=PASSWORD, kdf=KDF) as srv:
        yield srv


@pytest.fixture
def sync_server() -> Iterator[argonlink.sync.Server]:
    with argonlink.sync.Server("127.0.0.1", 0, password=PASSWORD, kdf=KDF) as srv:
        yield srv
