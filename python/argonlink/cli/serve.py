"""``argonlink serve``: listen for clients; receive files into a directory, or print messages."""

from __future__ import annotations

import argparse
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import sync
from .._common import FILES_CHANNEL, file_carrier
from .._files import FileReceipt, encode_refuse, is_file_message, kind_name
from .._files.directory import DIR_CHANNEL
from ..exceptions import (
    ChannelError,
    ConnectionClosed,
    ConnectionClosedOK,
    IncompleteDirectory,
    Timeout,
    TransferCode,
    TransferError,
    UnexpectedMessage,
)
from .arguments import (
    PASSWORD_HELP,
    Parser,
    Subcommands,
    common_options,
    octal_mode,
    port_number,
    positive_number,
    whole_number,
)
from .output import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Output,
    describe,
    exit_status,
    show_target,
)
from .settings import load_settings, side_kwargs
from .signals import Stop, stop_on_sigterm
from .terminal import print_message

NAME = "serve"
DEFAULT_PORT = 7000

SERVE_HELP = f"""\
Every file lands under its own name in DIR, only after its SHA-256 was verified, never over an
existing file unless --overwrite, readable by its owner only unless --mode. Names starting
with "." are refused unless --allow-hidden. One line per file on stdout: "SHA256  NAME" (as
sha256sum prints). A plain message that arrives instead of a file is written to stdout as it
is. With --print, every message is written to stdout followed by a newline, and file offers
are refused. On a terminal, control characters in messages are shown escaped (\\x1b); into a
pipe or file they are written unchanged.

limits (also [server] settings in --config): --max-size refuses larger files; --timeout ends
a transfer that takes longer (the connection carries on); a new transfer needs fewer than
--max-partials unfinished partial files in DIR holding at most --max-partial-bytes (the
oldest unused ones are removed to make room); a transfer is refused rather than leave less
than --min-free-space bytes free.

examples:
  argonlink serve --password-file link.key --dir incoming/
  argonlink serve --port 7001 --print --once > messages.txt
  ARGONLINK_PASSWORD_HASH_FILE=link.phc argonlink serve --dir incoming/

{PASSWORD_HELP}
{EXIT_CODES_HELP}"""


def add_parser(commands: Subcommands) -> None:
    serve = commands.add_parser(
        NAME,
        parents=[common_options(server=True)],
        help="receive files into a directory, or print messages",
        description="Listen for argonlink clients; receive files into DIR or print messages.",
        epilog=SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=port_number, help=f"port (default {DEFAULT_PORT}; 0: any)")
    mode = serve.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dir", type=Path, metavar="DIR", help="store received files in DIR")
    mode.add_argument(
        "--print", action="store_true", help="write received messages to stdout, one per line"
    )
    serve.add_argument(
        "--overwrite", action="store_true", help="replace files that already exist in DIR"
    )
    serve.add_argument(
        "--once", action="store_true", help="serve one connection, then exit with its status"
    )
    _add_file_arguments(serve)


def _add_file_arguments(serve: Parser) -> None:
    files = serve.add_argument_group("receiving files (with --dir)")
    files.add_argument(
        "--max-size", type=whole_number, metavar="BYTES", help="refuse files larger than BYTES"
    )
    files.add_argument(
        "--timeout",
        type=positive_number,
        metavar="SECONDS",
        help="give up a transfer that takes longer, from its offer to its end",
    )
    files.add_argument(
        "--mode",
        type=octal_mode,
        metavar="OCTAL",
        help="permissions of received files (default 600)",
    )
    files.add_argument(
        "--allow-hidden",
        action="store_true",
        default=None,
        help='accept names starting with "." (refused by default)',
    )
    files.add_argument(
        "--max-partials",
        type=whole_number,
        metavar="N",
        help="unfinished partial files allowed in DIR (default 32)",
    )
    files.add_argument(
        "--max-partial-bytes",
        type=whole_number,
        metavar="BYTES",
        help="bytes those partial files may hold (default 64 GiB)",
    )
    files.add_argument(
        "--min-free-space",
        type=whole_number,
        metavar="BYTES",
        help="free space to keep on DIR's file system (default 256 MiB)",
    )


@dataclass
class _Tally:
    files: int = 0
    failures: int = 0
    status: int = EXIT_OK
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, exc: BaseException) -> None:
        with self.lock:
            self.failures += 1
            self.status = exit_status(exc)


#: Transfers one connection may run at once (each on its own channel).
_TRANSFERS_PER_CONNECTION = 4


def _serve_connection(
    conn: sync.Connection,
    args: argparse.Namespace,
    out: Output,
    tally: _Tally,
    receiving: dict[str, Any],
) -> None:
    peer = show_target(*conn.remote_address)
    if args.verbose:
        out.note(f"{peer}: connected")
    if file_carrier(conn._native, incoming=True) is None:
        _serve_default_channel(conn, peer, args, out, tally, receiving)
    else:
        # Files come on channels of their own, messages on the connection: both at once.
        workers = [
            threading.Thread(
                target=_serve_files,
                args=(conn, peer, args, out, tally, receiving),
                name=f"argonlink-serve-files-{i}",
                daemon=True,
            )
            for i in range(_TRANSFERS_PER_CONNECTION)
        ]
        workers.append(
            threading.Thread(
                target=_serve_dirs,
                args=(conn, peer, args, out, tally, receiving),
                name="argonlink-serve-dirs",
                daemon=True,
            )
        )
        for worker in workers:
            worker.start()
        _print_messages(conn, peer, out, tally)
        for worker in workers:
            worker.join()
    if args.verbose:
        out.note(f"{peer}: disconnected")


def _ended(exc: BaseException, peer: str, out: Output, tally: _Tally) -> None:
    if not isinstance(exc, ConnectionClosedOK):
        out.error(f"{peer}: {describe(exc)}")
        tally.failed(exc)


def _print_messages(conn: sync.Connection, peer: str, out: Output, tally: _Tally) -> None:
    while True:
        try:
            msg = conn.recv()
            if is_file_message(msg):  # files come on channels here: a peer out of step
                out.error(f"{peer}: ignored {kind_name(msg)} outside a transfer")
                continue
            print_message(msg, out)
        except ConnectionClosed as exc:
            _ended(exc, peer, out, tally)
            return


def _received(receipt: FileReceipt, peer: str, args: argparse.Namespace, out: Output) -> None:
    out.result(f"{receipt.sha256}  {receipt.name}")
    if args.verbose:
        note = f", resumed from {receipt.resumed_from}" if receipt.resumed_from else ""
        out.note(f"{peer}: received {receipt.name} ({receipt.size} bytes{note})")


def _serve_files(
    conn: sync.Connection,
    peer: str,
    args: argparse.Namespace,
    out: Output,
    tally: _Tally,
    receiving: dict[str, Any],
) -> None:
    """One of a connection's transfer workers: each file on its own channel, so a failed or
    refused transfer ends its channel only, never the connection."""
    while True:
        try:
            if args.dir is None:
                _refuse_file(conn)
                out.error(f"{peer}: refused a file: this server prints messages only")
                continue
            receipt = conn.recv_file(args.dir, overwrite=args.overwrite, **receiving)
            with tally.lock:
                tally.files += 1
            _received(receipt, peer, args, out)
        except ConnectionClosed:
            return  # the message loop tells how the connection ended
        except UnexpectedMessage as exc:
            out.error(f"{peer}: a file channel carried {kind_name(exc.message)}")
        except (TransferError, OSError, Timeout, ChannelError) as exc:
            out.error(f"{peer}: {describe(exc)}")
            tally.failed(exc)


def _serve_dirs(
    conn: sync.Connection,
    peer: str,
    args: argparse.Namespace,
    out: Output,
    tally: _Tally,
    receiving: dict[str, Any],
) -> None:
    """A connection's directories, one at a time (each moves its files in lanes of its own)."""
    while True:
        try:
            if args.dir is None:
                _refuse_file(conn, DIR_CHANNEL)
                out.error(f"{peer}: refused a directory: this server prints messages only")
                continue
            try:
                receipt = conn.recv_dir(args.dir, overwrite=args.overwrite, **receiving)
            except IncompleteDirectory as exc:
                receipt = exc.receipt
                for rel, error in receipt.failed.items():
                    out.error(f"{peer}: {receipt.name}/{rel}: {describe(error)}")
                tally.failed(exc)
            with tally.lock:
                tally.files += len(receipt.files)
            for rel, file in receipt.files.items():
                out.result(f"{file.sha256}  {receipt.name}/{rel}")
            if args.verbose:
                out.note(f"{peer}: received {receipt.name}/ ({len(receipt.files)} files)")
        except ConnectionClosed:
            return
        except (TransferError, OSError, Timeout, ChannelError) as exc:
            out.error(f"{peer}: {describe(exc)}")
            tally.failed(exc)


def _refuse_file(conn: sync.Connection, queue: str = FILES_CHANNEL) -> None:
    """Take the next file (or directory) channel and answer its offer with REFUSE
    (NOT_ACCEPTED)."""
    native = conn._conn.accept_channel_blocking(None, queue)
    channel = sync.Channel(native)
    try:
        channel.recv()  # the offer
        reason = "this server prints messages; it takes no files"
        channel.send(encode_refuse(TransferCode.NOT_ACCEPTED, reason))
        channel.finish()
    except ChannelError:
        pass  # the sender gave up first


# Over 40 lines: one loop over everything the default channel can carry (files, messages,
# leftovers of a transfer), each with what it owes the peer; read top to bottom.
def _serve_default_channel(
    conn: sync.Connection,
    peer: str,
    args: argparse.Namespace,
    out: Output,
    tally: _Tally,
    receiving: dict[str, Any],
) -> None:
    """A connection whose files travel on its default channel (an exactly-once session): one
    thing at a time, files and messages in the order they come."""
    while True:
        try:
            if args.dir is not None:
                receipt = conn.recv_file(args.dir, overwrite=args.overwrite, **receiving)
                with tally.lock:
                    tally.files += 1
                _received(receipt, peer, args, out)
                continue
            msg = conn.recv()
            if not is_file_message(msg):
                print_message(msg, out)
                continue
            if kind_name(msg) == "OFFER":  # say no rather than leave the sender waiting
                conn.send(
                    encode_refuse(
                        TransferCode.NOT_ACCEPTED, "this server prints messages; it takes no files"
                    )
                )
            out.error(f"{peer}: refused {kind_name(msg)}: this server prints messages only")
        except UnexpectedMessage as exc:
            if is_file_message(exc.message):
                out.error(f"{peer}: ignored {kind_name(exc.message)} outside a transfer")
            else:
                print_message(exc.message, out)
        except ConnectionClosed as exc:
            _ended(exc, peer, out, tally)
            break
        except Timeout as exc:  # after a Timeout it is out of step
            out.error(f"{peer}: {describe(exc)}")
            tally.failed(exc)
            break
        except (TransferError, OSError) as exc:
            out.error(f"{peer}: {describe(exc)}")
            tally.failed(exc)
            if isinstance(exc, TransferError) and exc.code == TransferCode.PROTOCOL:
                break  # out of step with the peer: this connection is done


#: serve's options for receiving files -> their [server] settings.
_FILE_OPTIONS = {
    "max_size": "max_file_size",
    "timeout": "transfer_timeout",
    "mode": "file_mode",
    "allow_hidden": "allow_hidden_names",
    "max_partials": "max_partial_files",
    "max_partial_bytes": "max_partial_bytes",
    "min_free_space": "min_free_space",
}


def run(args: argparse.Namespace, out: Output) -> int:
    if args.dir is None:
        given = [o for o in ("overwrite", *_FILE_OPTIONS) if getattr(args, o) not in (None, False)]
        if given:
            option = "--" + given[0].replace("_", "-")
            raise CliError(f"{option} only applies with --dir", EXIT_USAGE)
    if args.dir is not None and not args.dir.is_dir():
        raise CliError(f"{args.dir}: not a directory")
    settings = {"host": args.host, "port": args.port, "peers_file": args.peers}
    settings.update({key: getattr(args, option) for option, key in _FILE_OPTIONS.items()})
    cfg = load_settings(args, "server", settings).server
    if "port" not in cfg.sources:
        cfg = cfg.replace(port=DEFAULT_PORT)
    tally = _Tally()
    receiving = cfg.recv_file_kwargs()
    kwargs = side_kwargs(cfg)

    def handle(conn: sync.Connection) -> None:
        _serve_connection(conn, args, out, tally, receiving)

    server = sync.Server(handler=None if args.once else handle, **kwargs)
    del kwargs
    stop_on_sigterm()
    try:
        with server:
            host, port = server.address
            out.note(f"listening on {host}:{port}")
            if args.once:
                conn = server.accept()
                try:
                    handle(conn)
                finally:
                    conn.close()
            else:
                server.serve_forever()
    except Stop:
        pass
    # --once: the status of that connection. A long-running server reports each failed
    # connection on stderr; stopping it (SIGTERM) is a success.
    return tally.status if args.once else EXIT_OK
