"""``argonlink send``: send files, or standard input, to a server; resume after a lost
connection."""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

from .. import config, sync
from .._files import DirReceipt, FileReceipt
from .._options import ReconnectPolicy
from ..exceptions import ConnectionClosed, Error, IncompleteDirectory, TransferError
from .arguments import (
    PASSWORD_HELP,
    Subcommands,
    common_options,
    host_port,
    positive_number,
    whole_number,
)
from .output import (
    EXIT_CODES_HELP,
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_TRANSFER,
    EXIT_USAGE,
    CliError,
    Output,
    ProgressBar,
    describe,
    exit_status,
    show_size,
    show_target,
)
from .settings import load_settings, side_kwargs

NAME = "send"
R = TypeVar("R")

SEND_HELP = f"""\
Each FILE is sent with a progress bar (tqdm if installed) and verified by the receiver; a line
"SHA256  NAME" on stdout confirms it is stored. A DIRECTORY is sent whole, its files several
at a time, and arrives as DIR/DIRECTORY/... at the server; a line "SHA256  DIRECTORY/PATH"
confirms each file (symlinks and other non-files are skipped, empty folders not made). A lost
connection is retried (--retries) and the transfer resumes where the receiver's copy stops. A
file the receiver refuses is reported and the next one is sent. "-" (or no FILE) sends
standard input: each line as one message (for serve --print) over an exactly-once session (a
lost connection loses or repeats no line; exit 0 means the server received them all), or with
--stdin-name NAME as one file called NAME (not resumable).

examples:
  argonlink send --password-file link.key 10.0.0.2:7000 *.tar.gz
  argonlink send --password-file link.key 10.0.0.2:7000 photos/
  tar c data/ | argonlink send 10.0.0.2:7000 --stdin-name data.tar
  echo "deploy done" | ARGONLINK_PASSWORD=... argonlink send [::1]:7000

{PASSWORD_HELP}
{EXIT_CODES_HELP}"""


def add_parser(commands: Subcommands) -> None:
    send = commands.add_parser(
        NAME,
        parents=[common_options(server=False)],
        help="send files (or stdin) to a server",
        description="Send files, or standard input, to an argonlink server.",
        epilog=SEND_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    send.add_argument("target", type=host_port, metavar="HOST:PORT", help="the server")
    send.add_argument(
        "files", nargs="*", metavar="FILE", help='files or directories to send ("-": stdin)'
    )
    send.add_argument(
        "--stdin-name", metavar="NAME", help='send stdin ("-") as one file called NAME'
    )
    send.add_argument(
        "--retries",
        type=whole_number,
        default=3,
        metavar="N",
        help="reconnect and resume up to N times after a lost connection (default 3)",
    )
    send.add_argument(
        "--timeout",
        type=positive_number,
        default=60.0,
        metavar="SECONDS",
        help="longest wait for the server at any one step (default 60)",
    )


class _Sender:
    """Sends over one connection at a time; a lost connection is replaced and the transfer
    resumed, up to ``retries`` times per file."""

    def __init__(self, cfg: config.ClientConfig, args: argparse.Namespace, out: Output) -> None:
        self._kwargs = side_kwargs(cfg)
        self._args = args
        self._out = out
        self._client: sync.Client | None = None
        self._connected = False  # retries only after a connection was up: fail fast at first

    def client(self) -> sync.Client:
        if self._client is None:
            client = sync.Client(**self._kwargs)
            client.connect()
            self._client = client
            self._connected = True
        return self._client

    def drop(self) -> None:
        """Give up the current connection (after it failed) without waiting on it."""
        if self._client is not None:
            with suppress(RuntimeError):
                self._client.connection.abort()
            with suppress(Error):
                self._client.close()
            self._client = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _retrying(self, what: str, attempt: Callable[[sync.Client], R]) -> R:
        retries = self._args.retries
        for number in range(retries + 1):
            try:
                return attempt(self.client())
            except (ConnectionClosed, TimeoutError, ConnectionError) as exc:
                if number == retries or not self._connected:
                    raise
                self.drop()
                delay = min(2.0**number, 10.0)
                self._out.note(
                    f"{what}: {describe(exc)}; reconnecting in {delay:.0f} s "
                    f"(retry {number + 1} of {retries})"
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def send_file(self, path: Path) -> FileReceipt:
        bar = ProgressBar(path.name, self._out)
        try:
            return self._retrying(
                path.name,
                lambda c: c.send_file(path, progress=bar, timeout=self._args.timeout),
            )
        finally:
            bar.close()

    def send_dir(self, path: Path) -> DirReceipt:
        """A directory, its files in parallel lanes; after a lost connection it is sent again,
        which delivers what is missing (files already there are kept, partial ones resume)."""
        return self._retrying(path.name, lambda c: c.send_dir(path, timeout=self._args.timeout))

    def send_stdin_file(self, name: str) -> FileReceipt:
        bar = ProgressBar(name, self._out)
        try:  # no retries: what stdin already gave cannot be read again
            return self.client().send_stream(
                sys.stdin.buffer, name, progress=bar, timeout=self._args.timeout
            )
        finally:
            bar.close()

    def send_lines(self) -> int:
        """Each line a message, over an exactly-once session: a lost connection is redialled
        (``retries`` dials in a row at most) and no line is lost or repeated; returns once the
        server has received every line."""
        policy = ReconnectPolicy(max_attempts=self._args.retries + 1)
        kwargs = {**self._kwargs, "exactly_once": True, "reconnect": policy}
        count = 0
        with sync.Client(**kwargs) as client:
            for line in sys.stdin.buffer:
                client.send(line.removesuffix(b"\n"), timeout=self._args.timeout)
                count += 1
            client.flush(timeout=self._args.timeout)
        return count


def _report_dir(receipt: DirReceipt, out: Output, verbose: bool) -> None:
    """One "SHA256  DIR/PATH" line per delivered file (as the server prints them), one error
    line per file that was not delivered, a note per file skipped."""
    for rel, file in receipt.files.items():
        out.result(f"{file.sha256}  {receipt.name}/{rel}")
    for rel, exc in receipt.failed.items():
        out.error(f"{receipt.name}/{rel}: {describe(exc)}")
    for rel in receipt.skipped:
        out.note(f"{receipt.name}/{rel}: skipped (not a regular file)")
    if verbose:
        rate = show_size(int(receipt.size / max(receipt.elapsed, 1e-6)))
        out.note(
            f"sent {receipt.name}/: {len(receipt.files)} files, {show_size(receipt.size)}, {rate}/s"
        )


def _check_readable(paths: Sequence[str]) -> list[Path]:
    checked = []
    for text in paths:
        path = Path(text)
        if text == "-":
            checked.append(path)
            continue
        try:
            st = path.stat()
            if stat.S_ISDIR(st.st_mode):
                os.scandir(path).close()  # readable
                checked.append(path)
                continue
            if not stat.S_ISREG(st.st_mode):
                raise CliError(f"{path}: not a regular file or directory")
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise CliError(describe(exc)) from None
        checked.append(path)
    return checked


def run(args: argparse.Namespace, out: Output) -> int:
    host, port = args.target
    items = _check_readable(args.files or ["-"])
    if args.stdin_name is not None and Path("-") not in items:
        raise CliError('--stdin-name needs "-" (stdin) among the files', EXIT_USAGE)
    settings = {"host": host, "port": port, "reconnect": False, "identity": args.identity}
    cfg = load_settings(args, "client", settings).client
    sender = _Sender(cfg, args, out)
    status = EXIT_OK
    try:
        for item in items:
            try:
                if str(item) == "-" and args.stdin_name is None:
                    count = sender.send_lines()
                    if args.verbose:
                        out.note(f"sent {count} lines as messages")
                    continue
                if item.is_dir():
                    _report_dir(sender.send_dir(item), out, args.verbose)
                    continue
                if str(item) == "-":
                    receipt = sender.send_stdin_file(args.stdin_name)
                else:
                    receipt = sender.send_file(item)
            except IncompleteDirectory as exc:
                _report_dir(exc.receipt, out, args.verbose)
                status = EXIT_TRANSFER
                continue
            except TransferError as exc:
                out.error(f"{item}: {describe(exc)}")
                status = EXIT_TRANSFER
                continue
            out.result(f"{receipt.sha256}  {receipt.name}")
            if args.verbose:
                note = f", resumed from {receipt.resumed_from}" if receipt.resumed_from else ""
                rate = show_size(int(receipt.size / max(receipt.elapsed, 1e-6)))
                out.note(f"sent {receipt.name}: {show_size(receipt.size)}{note}, {rate}/s")
    except OSError as exc:
        if isinstance(exc, Error) or exit_status(exc) != EXIT_NETWORK:
            raise
        raise CliError(f"{show_target(host, port)}: {describe(exc)}", EXIT_NETWORK) from exc
    finally:
        sender.close()
    return status
