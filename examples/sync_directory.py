"""Sync a directory to another server with send_file: every file arrives verified.

    python examples/sync_directory.py [SOURCE_DIR]

Without SOURCE_DIR the example makes one with a few generated files. A receiving server (a
thread here; in real life the other host, or ``argonlink serve --dir DIR``) stores what it gets
in a fresh directory. The sender sends each regular file at the top of the source directory;
then both directories are compared by SHA-256. A second pass, after one more file appeared,
sends only that file: the receiver refuses to overwrite what it already has, and the sender
counts those as kept.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import tempfile
from pathlib import Path

import argonlink
import argonlink.sync


def receive_into(dest: Path) -> argonlink.sync.Handler:
    def handler(conn: argonlink.sync.Connection) -> None:
        while True:
            try:
                conn.recv_file(dest)  # verified, fsynced, then moved into place
            except argonlink.TransferError:
                continue  # refused (e.g. the file exists); the sender was told why
            except argonlink.ConnectionClosedOK:
                return  # the sender is done

    return handler


def sync_dir(client: argonlink.sync.Client, source: Path) -> tuple[int, int]:
    sent = kept = 0
    for path in sorted(source.iterdir()):
        if not path.is_file():
            print(f"  skipped {path.name} (not a regular file)")
            continue
        try:
            receipt = client.send_file(path, timeout=30)
        except argonlink.DestinationExists:
            kept += 1
            print(f"  kept    {path.name} (already there)")
            continue
        except argonlink.UnsafeName as e:
            # The receiver refuses names it cannot store safely; hidden names (".env") too,
            # unless it was started with allow_hidden=True.
            print(f"  skipped {path.name} ({e})")
            continue
        sent += 1
        print(f"  sent    {receipt.name} ({receipt.size} bytes, sha256 {receipt.sha256[:16]}...)")
    return sent, kept


def digests(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in directory.iterdir()
        if p.is_file()
    }


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="argonlink-sync-"))
    if len(sys.argv) > 1:
        source = Path(sys.argv[1])
    else:
        source = work / "source"
        source.mkdir()
        for i, size in enumerate([0, 1, 4096, 3 * 1024 * 1024 + 5]):
            (source / f"file-{i}.bin").write_bytes(os.urandom(size))
        (source / "notes.txt").write_text("argonlink sync example\n")
    dest = work / "replica"
    dest.mkdir()

    password = secrets.token_urlsafe(24)
    with argonlink.sync.Server(password=password, handler=receive_into(dest)) as server:
        print(f"syncing {source} -> {dest}")
        with argonlink.sync.Client(*server.address, password=password) as client:
            sent, kept = sync_dir(client, source)
        print(f"first pass: {sent} sent, {kept} kept")

        if len(sys.argv) == 1:
            (source / "late-arrival.txt").write_text("written after the first pass\n")
        with argonlink.sync.Client(*server.address, password=password) as client:
            sent, kept = sync_dir(client, source)
        print(f"second pass: {sent} sent, {kept} kept")

    want, got = digests(source), digests(dest)
    if want != got:
        print(f"MISMATCH: {sorted(set(want.items()) ^ set(got.items()))}")
        return 1
    print(f"verified: {len(got)} files identical (SHA-256)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
