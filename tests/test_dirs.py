"""Directories (docs/PROTOCOL.md, "Directories"): a tree arrives whole and byte for byte, its
files in parallel lanes; sent again after a cut it delivers what is missing (10,000 small
files, and large files that resume); names and folders from the peer are checked, a symlink in
the receiver's tree is never followed, and a file that is not delivered is reported on both
sides, never silently dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import argonlink
import argonlink.sync
import pytest
from argonlink import ChannelError, DirReceipt, IncompleteDirectory, TransferCode, _files
from proxy import CloseAfter, Proxy
from support import PASSWORD

MIB = 1 << 20


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        yield executor


def blob(size: int, seed: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest() * 32
        counter += 1
    return bytes(out[:size])


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def stored(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by its path (no partial files anywhere)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def partials(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.name.endswith(".argonlink-part"))


FILES = {
    "top.txt": b"top",
    "empty": b"",
    "a/one.bin": blob(3000, 1),
    "a/b/c/deep.bin": blob(MIB + 17, 2),
    "a/b/two.bin": blob(70_000, 3),
    "z/.hidden-ok-in-folder": b"kept: the receiver allows hidden names here",
}


@pytest.fixture
def link(
    sync_server: argonlink.sync.Server,
) -> Iterator[tuple[argonlink.sync.Client, argonlink.sync.Connection]]:
    with argonlink.sync.Client(*sync_server.address, password=PASSWORD) as client:
        conn = sync_server.accept(timeout=5)
        yield client, conn
        conn.close()


def test_a_tree_arrives_whole_blocking(link: Any, tmp_path: Path, pool: Any) -> None:
    client, conn = link
    src = tree(tmp_path / "src", FILES)
    os.symlink("/etc/passwd", src / "a" / "link")  # never sent
    dest = tmp_path / "dest"
    dest.mkdir()
    got = pool.submit(conn.recv_dir, dest, allow_hidden=True, timeout=10)
    sent = client.send_dir(src, lanes=3, timeout=10)
    received = got.result(10)
    assert stored(dest / "src") == FILES
    assert sent.skipped == ("a/link",) and not sent.failed and not received.failed
    assert sorted(sent.files) == sorted(received.files) == sorted(FILES)
    for rel, data in FILES.items():
        assert (
            sent.files[rel].sha256 == received.files[rel].sha256 == hashlib.sha256(data).hexdigest()
        )
    assert received.path == dest / "src" and received.size == sum(map(len, FILES.values()))
    # Private like single files: 0600 files, 0700 folders.
    assert stat.S_IMODE((dest / "src" / "a" / "one.bin").stat().st_mode) == 0o600
    assert stat.S_IMODE((dest / "src" / "a" / "b").stat().st_mode) == 0o700
    assert partials(dest) == []


async def test_a_tree_arrives_whole_asyncio_beside_messages(
    server: argonlink.Server, tmp_path: Path
) -> None:
    files = {f"d{i % 7}/f{i}.txt": b"%d" % i * (i % 50) for i in range(300)}
    src = tree(tmp_path / "photos", files)
    dest = tmp_path / "dest"
    dest.mkdir()
    async with argonlink.Client(*server.address, password=PASSWORD) as client:
        conn = await server.accept(timeout=5)
        await client.send(b"before")
        sent, got, msg = await asyncio.gather(
            client.send_dir(src, name="renamed", timeout=10),
            conn.recv_dir(dest, mode=0o640, timeout=10),
            conn.recv(timeout=10),
        )
    assert msg == b"before"
    assert isinstance(sent, DirReceipt) and sent.name == got.name == "renamed"
    assert stored(dest / "renamed") == files
    assert stat.S_IMODE((dest / "renamed" / "d1").stat().st_mode) == 0o750


def test_sent_again_it_keeps_what_is_there_and_sends_only_the_rest(
    link: Any, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    src = tree(tmp_path / "src", FILES)
    dest = tmp_path / "dest"
    dest.mkdir()
    pool.submit(conn.recv_dir, dest, allow_hidden=True, timeout=10)
    client.send_dir(src, timeout=10)
    (dest / "src" / "a" / "one.bin").unlink()  # one missing, the rest there
    before = conn.stats()["bytes_received"]
    got = pool.submit(conn.recv_dir, dest, allow_hidden=True, timeout=10)
    again = client.send_dir(src, timeout=10)
    assert got.result(10).files.keys() == again.files.keys() == FILES.keys()
    kept = {rel for rel, r in again.files.items() if r.resumed_from == r.size}
    assert kept == set(FILES) - {"a/one.bin", "empty"} | {"empty"}
    assert again.files["a/one.bin"].resumed_from == 0
    # Only the missing file's bytes crossed again (plus the protocol's messages).
    assert conn.stats()["bytes_received"] - before < 3000 + 64 * 1024
    assert stored(dest / "src") == FILES


def test_a_file_there_with_other_content_is_kept_and_reported(
    link: Any, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    src = tree(tmp_path / "src", {"a.txt": b"new", "b.txt": b"bbb"})
    dest = tmp_path / "dest"
    tree(dest / "src", {"a.txt": b"old"})  # same size, other content
    got = pool.submit(conn.recv_dir, dest, timeout=10)
    with pytest.raises(IncompleteDirectory) as sent:
        client.send_dir(src, timeout=10)
    with pytest.raises(IncompleteDirectory) as received:
        got.result(10)
    for err in (sent.value, received.value):
        assert err.code == TransferCode.EXISTS
        assert list(err.receipt.failed) == ["a.txt"] and list(err.receipt.files) == ["b.txt"]
    assert stored(dest / "src") == {"a.txt": b"old", "b.txt": b"bbb"}


def first_connection_cut_after(records: int) -> Callable[[int], CloseAfter | None]:
    return lambda number: CloseAfter(records) if number == 0 else None


def send_across_a_cut(
    server: argonlink.sync.Server, src: Path, dest: Path, cut_after: int, pool: Any
) -> tuple[DirReceipt, DirReceipt]:
    """Send ``src`` over a connection cut after ``cut_after`` records, then again over a new
    one; the second attempt's receipts."""
    with Proxy(server.address, c2s=first_connection_cut_after(cut_after)) as proxy:
        with argonlink.sync.Client(*proxy.address, password=PASSWORD) as client:
            conn = server.accept(timeout=5)
            got = pool.submit(conn.recv_dir, dest, timeout=30)
            with pytest.raises(argonlink.Error):
                client.send_dir(src, timeout=30)
            with pytest.raises(argonlink.Error):
                got.result(30)
        with argonlink.sync.Client(*proxy.address, password=PASSWORD) as client:
            conn = server.accept(timeout=5)
            got = pool.submit(conn.recv_dir, dest, timeout=30)
            sent = client.send_dir(src, timeout=30)
            return sent, got.result(30)


def test_ten_thousand_small_files_resumed_after_a_cut(
    sync_server: argonlink.sync.Server, tmp_path: Path, pool: Any
) -> None:
    files = {f"{i % 100:02d}/{i}.txt": b"file %d\n" % i for i in range(10_000)}
    src = tree(tmp_path / "many", files)
    dest = tmp_path / "dest"
    dest.mkdir()
    # Each small file is a few records (OFFER, DATA, END): the cut comes about a third in.
    sent, got = send_across_a_cut(sync_server, src, dest, 3 + 10_000, pool)
    assert stored(dest / "many") == files
    assert not sent.failed and len(sent.files) == len(got.files) == 10_000
    kept = sum(1 for r in sent.files.values() if r.resumed_from == r.size)
    assert 0 < kept < 10_000, kept  # the first attempt delivered some, not all
    assert partials(dest) == []


def test_large_files_resume_after_a_cut(
    sync_server: argonlink.sync.Server, tmp_path: Path, pool: Any
) -> None:
    files = {f"big{i}.bin": blob(8 * MIB + i, 10 + i) for i in range(3)}
    src = tree(tmp_path / "large", files)
    dest = tmp_path / "dest"
    dest.mkdir()
    # Each 1 MiB message is 17 records: cut after about 12 MiB of the 24.
    sent, _ = send_across_a_cut(sync_server, src, dest, 3 + 17 * 12, pool)
    assert stored(dest / "large") == files
    assert any(0 < r.resumed_from < r.size for r in sent.files.values()), sent.files
    assert partials(dest) == []


# --------------------------------------------------------------------------------------------
# A hostile sender


def raw_lane(client: argonlink.sync.Client, name: str) -> argonlink.sync.Channel:
    return argonlink.sync.Channel(client.connection._conn.open_channel_blocking(name))


def offer(body: dict[str, Any], kind: int = 1) -> bytes:
    return b"ALNKFILE\x02" + bytes([kind]) + json.dumps(body).encode()


@pytest.mark.parametrize("folders", [[".."], ["a/b"], ["", "x"], ["CON"], ["ok", "\u202e"]])
def test_folders_from_the_peer_are_checked(
    folders: list[str], link: Any, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    dest = tmp_path / "dest"
    dest.mkdir()
    before = sorted(tmp_path.rglob("*"))
    got = pool.submit(conn.recv_dir, dest, timeout=10)
    announce = raw_lane(client, "argonlink.dir")
    announce.send(offer({"name": "d", "files": 1, "size": 1}, kind=8))
    assert announce.recv(timeout=10)[:10] == b"ALNKFILE\x02\x02"  # ACCEPT
    lane = raw_lane(client, f"argonlink.dir/{announce.id}")
    lane.send(offer({"name": "f", "size": 1, "resume": False, "folders": folders}))
    reply = lane.recv(timeout=10)
    assert reply[:10] == b"ALNKFILE\x02\x03", reply  # REFUSE
    assert int.from_bytes(reply[10:12], "big") == TransferCode.UNSAFE_NAME
    lane.finish()
    announce.send(b"ALNKFILE\x02\x05" + (0).to_bytes(8, "big") + hashlib.sha256().digest())
    with pytest.raises(IncompleteDirectory) as err:
        got.result(10)
    assert err.value.code == TransferCode.UNSAFE_NAME
    assert sorted(tmp_path.rglob("*")) == [*before, dest / "d"]  # only the directory itself


def test_a_symlink_in_the_receivers_tree_is_not_followed(
    link: Any, tmp_path: Path, pool: Any
) -> None:
    client, conn = link
    victim = tmp_path / "victim"
    victim.mkdir()
    dest = tmp_path / "dest"
    (dest / "src").mkdir(parents=True)
    (dest / "src" / "evil").symlink_to(victim)  # planted where a folder will be
    src = tree(tmp_path / "src", {"evil/x.txt": b"payload", "fine.txt": b"ok"})
    got = pool.submit(conn.recv_dir, dest, timeout=10)
    with pytest.raises(IncompleteDirectory) as err:
        client.send_dir(src, timeout=10)
    assert list(err.value.receipt.failed) == ["evil/x.txt"]
    with pytest.raises(IncompleteDirectory):
        got.result(10)
    assert list(victim.iterdir()) == []
    assert (dest / "src" / "fine.txt").read_bytes() == b"ok"


def test_a_directory_lane_nobody_announced_is_reset(link: Any) -> None:
    client, _ = link
    stray = raw_lane(client, "argonlink.dir/999")
    with pytest.raises(argonlink.ChannelReset):
        stray.recv(timeout=10)


def test_sessions_do_not_carry_directories_yet(
    sync_server: argonlink.sync.Server, tmp_path: Path
) -> None:
    src = tree(tmp_path / "src", {"a": b"a"})
    with argonlink.sync.Client(
        *sync_server.address, password=PASSWORD, exactly_once=True
    ) as client:
        with pytest.raises(ChannelError, match="directories"):
            client.send_dir(src, timeout=5)


def test_both_apis_have_the_directory_methods() -> None:
    for cls in (argonlink.Connection, argonlink.sync.Connection, argonlink.Client):
        assert callable(cls.send_dir) and callable(cls.recv_dir)
    assert _files.DirReceipt is DirReceipt
