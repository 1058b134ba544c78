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


def test_sync_directory_example_verifies_every_file() -> None:
    out = run(str(EXAMPLES / "sync_directory.py"))
    assert "first pass: 5 sent, 0 kept" in out, out
    assert "second pass: 1 sent, 5 kept" in out, out  # existing files are never overwritten
    assert "verified: 6 files identical (SHA-256)" in out, out


def test_sync_directory_example_with_a_given_source(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    out = run(str(EXAMPLES / "sync_directory.py"), str(tmp_path))
    assert "skipped sub (not a regular file)" in out, out
    assert "verified: 1 files identical (SHA-256)" in out, out


def test_password_rotation_example_keeps_the_client_working() -> None:
    out = run(str(EXAMPLES / "password_rotation.py"))
    lines = out.splitlines()
    assert "client: echoed 'during the grace window' (connection under key epoch 1)" in lines
    assert any("code 4002" in line for line in lines), out
    assert "client: echoed 'after the change' (connection under key epoch 2)" in lines, out
    assert "server: a client with the old password is refused" in lines, out
