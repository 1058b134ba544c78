"""Files per second: ``send_dir`` of many small files vs the same files sent one
``send_file`` at a time, and MB/s for a few large files in parallel lanes vs one after the
other. Loopback, both ends in this process (blocking API), fsync on as always.

    python benchmarks/dirs.py [--files 10000] [--size 1000] [--large 4] [--large-mib 64]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import argonlink.sync

PASSWORD = "benchmark password, not a secret"


def make_files(root: Path, count: int, size: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = root / f"{i % 100:02d}" / f"f{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def timed_dir(client: Any, conn: Any, src: Path, dest: Path, lanes: int) -> float:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        got = pool.submit(conn.recv_dir, dest, timeout=120)
        start = time.perf_counter()
        client.send_dir(src, lanes=lanes, timeout=120)
        got.result(120)
        return time.perf_counter() - start


def timed_files(client: Any, conn: Any, paths: list[Path], dest: Path) -> float:
    """Today's other way: one send_file per file, one after the other (names made unique)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        start = time.perf_counter()
        for i, path in enumerate(paths):
            got = pool.submit(conn.recv_file, dest, timeout=60)
            client.send_file(path, name=f"{i}-{path.name}", timeout=60)
            got.result(60)
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--large-mib", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        argonlink.sync.Server("127.0.0.1", 0, password=PASSWORD) as server,
        argonlink.sync.Client(*server.address, password=PASSWORD) as client,
    ):
        conn = server.accept(timeout=10)
        root = Path(tmp)
        small = root / "small"
        paths = make_files(small, args.files, args.size)
        for lanes in (1, 8):
            dest = root / f"dest-dir-{lanes}"
            dest.mkdir()
            elapsed = timed_dir(client, conn, small, dest, lanes)
            results[f"send_dir files/s (lanes={lanes})"] = args.files / elapsed
            shutil.rmtree(dest)
        dest = root / "dest-files"
        dest.mkdir()
        results["send_file loop files/s"] = args.files / timed_files(client, conn, paths, dest)
        shutil.rmtree(dest)
        shutil.rmtree(small)

        large = root / "large"
        make_files(large, args.large, args.large_mib << 20)
        total = args.large * (args.large_mib << 20)
        for lanes in (1, args.large):
            dest = root / f"dest-large-{lanes}"
            dest.mkdir()
            elapsed = timed_dir(client, conn, large, dest, lanes)
            results[f"large files MB/s (lanes={lanes})"] = total / elapsed / 1e6
            shutil.rmtree(dest)
    for name, value in results.items():
        print(f"{name:36} {value:10.1f}")
    ratio = results["send_dir files/s (lanes=8)"] / results["send_file loop files/s"]
    print(f"{'send_dir (8 lanes) / send_file loop':36} {ratio:10.2f}x")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
