"""One side of ``test_one_gib_cut_and_resumed_in_bounded_memory``, in its own process so that
its peak RSS (VmHWM) is its own.

    files_worker.py receive DEST CUT_AT   prints the port, then a JSON report
    files_worker.py send PORT FILE        prints a JSON report

The receiver aborts the first connection once ``CUT_AT`` bytes have arrived; the sender's
first ``send_file`` fails, and its second, on a new connection, resumes. The password comes
from the environment (FILES_WORKER_PASSWORD).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import argonlink
import argonlink.sync

KDF = argonlink.KdfParams.OWASP


def hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def receive(dest: Path, cut_at: int, password: str) -> dict[str, object]:
    report: dict[str, object] = {}
    with argonlink.sync.Server("127.0.0.1", 0, password=password, kdf=KDF) as server:
        print(server.address[1], flush=True)
        report["hwm_kib_start"] = hwm_kib()
        conn = server.accept(timeout=60)

        def cut(done: int, total: int) -> None:
            if done >= cut_at:
                conn.abort()

        try:
            conn.recv_file(dest, progress=cut, timeout=60)
            report["first"] = "completed"
        except argonlink.ConnectionClosed:
            report["first"] = "cut"
        report["final_existed_after_cut"] = any(not p.name.startswith(".") for p in dest.iterdir())
        conn = server.accept(timeout=60)
        receipt = conn.recv_file(dest, timeout=60)
        conn.close()
    report.update(resumed_from=receipt.resumed_from, sha256=receipt.sha256, hwm_kib_end=hwm_kib())
    return report


def send(port: int, path: Path, password: str) -> dict[str, object]:
    report: dict[str, object] = {"hwm_kib_start": hwm_kib()}
    with argonlink.sync.Client("127.0.0.1", port, password=password) as client:
        try:
            client.send_file(path, timeout=60)
            report["first"] = "completed"
        except argonlink.ConnectionClosed:
            report["first"] = "cut"
    with argonlink.sync.Client("127.0.0.1", port, password=password) as client:
        receipt = client.send_file(path, timeout=60)
    report.update(resumed_from=receipt.resumed_from, sha256=receipt.sha256, hwm_kib_end=hwm_kib())
    return report


def main() -> None:
    password = os.environ.pop("FILES_WORKER_PASSWORD")
    role, *args = sys.argv[1:]
    if role == "receive":
        report = receive(Path(args[0]), int(args[1]), password)
    else:
        report = send(int(args[0]), Path(args[1]), password)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
