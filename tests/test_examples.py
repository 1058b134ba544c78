"""Every example runs as shipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("name", ["echo_async.py", "echo_sync.py"])
def test_echo_examples(name: str) -> None:
    out = run(str(EXAMPLES / name))
    assert out.splitlines() == ["echoed: hello", "echoed: from", "echoed: argonlink"]


def test_transfer_example_verifies_the_hash() -> None:
    out = run(str(EXAMPLES / "transfer.py"), "--size-mib", "16", "--message-kib", "256")
    assert "verified" in out and "MB/s" in out, out
