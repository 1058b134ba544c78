"""The ``argonlink`` command: receive and send files or messages, hash passwords, make keys.

Settings come from :mod:`argonlink.config` (``--config FILE``, ``ARGONLINK_*`` variables), with
the command-line options on top. A password is never an argument: it comes from a file, an
environment variable or a prompt.
"""

from __future__ import annotations

import argparse
import errno
import getpass
import importlib
import logging
import os
import re
import secrets
import signal
import socket
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO

from . import __version__, config, sync
from ._files import FileReceipt, encode_refuse, is_file_message, kind_name
from ._options import KdfParams, ReconnectPolicy, hash_password
from .exceptions import (
    AuthenticationError,
    ConfigError,
    ConnectionClosed,
    ConnectionClosedOK,
    Error,
    ProtocolError,
    Timeout,
    TransferCode,
    TransferError,
    UnexpectedMessage,
)

__all__ = [
    "EXIT_AUTH",
    "EXIT_ERROR",
    "EXIT_NETWORK",
    "EXIT_OK",
    "EXIT_TRANSFER",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

EXIT_OK = 0
EXIT_ERROR = 1  # anything not listed below (a local file that cannot be read, ...)
EXIT_USAGE = 2  # bad arguments or settings
EXIT_AUTH = 3  # the password was wrong (on either side)
EXIT_NETWORK = 4  # cannot connect, connection lost, timed out, not an argonlink peer
EXIT_TRANSFER = 5  # a transfer was refused or failed verification
EXIT_INTERRUPTED = 130

DEFAULT_PORT = 7000
PASSWORD_VAR = "ARGONLINK_PASSWORD"
_PROMPTED = "ARGONLINK_CLI_PROMPTED"  # the name a prompted password goes by, internally only
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ETIMEDOUT,
        errno.EADDRINUSE,
        errno.EADDRNOTAVAIL,
        errno.EPIPE,
    }
)

EXIT_CODES_HELP = """\
exit status:
  0  success
  1  error (e.g. a local file that cannot be read)
  2  usage: bad arguments or settings, no password source
  3  authentication failed: the passwords differ
  4  network: cannot connect, connection lost, timed out, not an argonlink peer
  5  transfer refused (unsafe name, file exists, too large) or failed verification
"""

PASSWORD_HELP = """\
password (never an argument), first found wins:
  --password-file PATH     a file (chmod 600), one trailing newline stripped
  --password-env NAME      the environment variable NAME
  ARGONLINK_PASSWORD       this environment variable
  --config FILE / ARGONLINK_PASSWORD_FILE ...   a source named in the settings
  a prompt on the terminal
"""

MAIN_HELP = f"""\
examples:
  argonlink keygen > link.key && chmod 600 link.key
  argonlink serve --password-file link.key --dir incoming/
  argonlink send --password-file link.key db-2.internal:7000 backup.tar.gz report.pdf
  journalctl -f | argonlink send db-2.internal:7000     (lines as messages; serve --print)
  argonlink hash-password --password-file link.key      (a PHC string for a server)

Run 'argonlink COMMAND --help' for each command's options.

{EXIT_CODES_HELP}"""

SERVE_HELP = f"""\
Every file lands under its own name in DIR, only after its SHA-256 was verified, never over an
existing file unless --overwrite, readable by its owner only unless --mode. Names starting
with "." are refused unless --allow-hidden. One line per file on stdout: "SHA256  NAME" (as
sha256sum prints). A plain message that arrives instead of a file is written to stdout as it
is. With --print, every message is written to stdout followed by a newline, and file offers
are refused. On a terminal, control characters in messages are shown escaped (\\x1b); into a
pipe or file they are written unchanged.

limits (also [server] settings in --config): --max-size refuses larger files; --timeout ends
a transfer (and its connection) that takes longer; a new transfer needs fewer than
--max-partials unfinished partial files in DIR holding at most --max-partial-bytes (the
oldest unused ones are removed to make room); a transfer is refused rather than leave less
than --min-free-space bytes free.

examples:
  argonlink serve --password-file link.key --dir incoming/
  argonlink serve --port 7001 --print --once > messages.txt
  ARGONLINK_PASSWORD_HASH_FILE=link.phc argonlink serve --dir incoming/

{PASSWORD_HELP}
{EXIT_CODES_HELP}"""

SEND_HELP = f"""\
Each FILE is sent with a progress bar (tqdm if installed) and verified by the receiver; a line
"SHA256  NAME" on stdout confirms it is stored. A lost connection is retried (--retries) and
the transfer resumes where the receiver's copy stops. A file the receiver refuses is reported
and the next one is sent. "-" (or no FILE) sends standard input: each line as one message (for
serve --print) over an exactly-once session (a lost connection loses or repeats no line; exit
0 means the server received them all), or with --stdin-name NAME as one file called NAME (not
resumable).

examples:
  argonlink send --password-file link.key 10.0.0.2:7000 *.tar.gz
  tar c data/ | argonlink send 10.0.0.2:7000 --stdin-name data.tar
  echo "deploy done" | ARGONLINK_PASSWORD=... argonlink send [::1]:7000

{PASSWORD_HELP}
{EXIT_CODES_HELP}"""


class CliError(Exception):
    """An error with the exit status to end with; the message is one line."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------
# Arguments


class _Parser(argparse.ArgumentParser):
    """Usage errors: one line, status 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {value}")
    return value


def _target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # [::1]:7000
    number = _port(port)
    if number == 0:
        raise argparse.ArgumentTypeError("the port must be between 1 and 65535")
    return host, number


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _octal(text: str) -> int:
    try:
        return int(text.lower().removeprefix("0o"), 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _common(*, server: bool) -> _Parser:
    parent = _Parser(add_help=False, allow_abbrev=False)
    parent.add_argument(
        "-c", "--config", metavar="FILE", type=Path, help="settings file (TOML, see README)"
    )
    source = parent.add_mutually_exclusive_group()
    source.add_argument(
        "--password-file", metavar="PATH", type=Path, help="read the password from PATH"
    )
    source.add_argument(
        "--password-env", metavar="NAME", help="read the password from environment variable NAME"
    )
    if server:
        source.add_argument(
            "--password-hash-file",
            metavar="PATH",
            type=Path,
            help="read a PHC string (argonlink hash-password) from PATH instead of a password",
        )
        source.add_argument(
            "--password-hash-env", metavar="NAME", help="read a PHC string from variable NAME"
        )
    parent.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parent.add_argument(
        "-v", "--verbose", action="store_true", help="log connections; tracebacks on errors"
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (``allow_abbrev=False`` everywhere: ``--password`` must not
    quietly mean ``--password-file``)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="argonlink",
        description="Secure server-to-server links: send files and messages between two "
        "hosts that share a password.",
        epilog=MAIN_HELP,
        formatter_class=fmt,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"argonlink {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        parents=[_common(server=True)],
        help="receive files into a directory, or print messages",
        description="Listen for argonlink clients; receive files into DIR or print messages.",
        epilog=SERVE_HELP,
        formatter_class=fmt,
        allow_abbrev=False,
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, help=f"port (default {DEFAULT_PORT}; 0: any)")
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
    files = serve.add_argument_group("receiving files (with --dir)")
    files.add_argument(
        "--max-size", type=_count, metavar="BYTES", help="refuse files larger than BYTES"
    )
    files.add_argument(
        "--timeout",
        type=_positive,
        metavar="SECONDS",
        help="give up a transfer that takes longer, from its offer to its end",
    )
    files.add_argument(
        "--mode", type=_octal, metavar="OCTAL", help="permissions of received files (default 600)"
    )
    files.add_argument(
        "--allow-hidden",
        action="store_true",
        default=None,
        help='accept names starting with "." (refused by default)',
    )
    files.add_argument(
        "--max-partials",
        type=_count,
        metavar="N",
        help="unfinished partial files allowed in DIR (default 32)",
    )
    files.add_argument(
        "--max-partial-bytes",
        type=_count,
        metavar="BYTES",
        help="bytes those partial files may hold (default 64 GiB)",
    )
    files.add_argument(
        "--min-free-space",
        type=_count,
        metavar="BYTES",
        help="free space to keep on DIR's file system (default 256 MiB)",
    )

    send = commands.add_parser(
        "send",
        parents=[_common(server=False)],
        help="send files (or stdin) to a server",
        description="Send files, or standard input, to an argonlink server.",
        epilog=SEND_HELP,
        formatter_class=fmt,
        allow_abbrev=False,
    )
    send.add_argument("target", type=_target, metavar="HOST:PORT", help="the server")
    send.add_argument("files", nargs="*", metavar="FILE", help='files to send ("-": stdin)')
    send.add_argument(
        "--stdin-name", metavar="NAME", help='send stdin ("-") as one file called NAME'
    )
    send.add_argument(
        "--retries",
        type=_count,
        default=3,
        metavar="N",
        help="reconnect and resume up to N times after a lost connection (default 3)",
    )
    send.add_argument(
        "--timeout",
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="longest wait for the server at any one step (default 60)",
    )

    hashing = commands.add_parser(
        "hash-password",
        help="print a PHC string for a server's password_hash",
        description="Derive a PHC string ($argon2id$...) from a password, for a server's "
        "password_hash (password_hash_file in the settings, or serve --password-hash-file). "
        "The string is password-equivalent for argonlink: store it like the password. "
        "Without --password-file/--password-env the password is asked twice.",
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
        allow_abbrev=False,
    )
    source = hashing.add_mutually_exclusive_group()
    source.add_argument("--password-file", metavar="PATH", type=Path, help="read it from PATH")
    source.add_argument("--password-env", metavar="NAME", help="read it from variable NAME")
    hashing.add_argument(
        "--kdf",
        choices=["rfc9106", "owasp"],
        default="rfc9106",
        help="Argon2id costs (default rfc9106: 64 MiB, 3 passes, 4 lanes)",
    )
    hashing.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")

    keygen = commands.add_parser(
        "keygen",
        help="print a new random password",
        description="Print a random password (URL-safe base64) from the system's CSPRNG.",
        epilog="example:\n  argonlink keygen > link.key && chmod 600 link.key\n\n"
        + EXIT_CODES_HELP,
        formatter_class=fmt,
        allow_abbrev=False,
    )
    keygen.add_argument(
        "--bytes",
        type=int,
        default=32,
        metavar="N",
        help="random bytes, at least 16 (default 32: 256 bits)",
    )
    return parser


# --------------------------------------------------------------------------------------------
# Output


@dataclass
class Output:
    """Results on stdout, notes on stderr, nothing but errors when quiet."""

    quiet: bool = False
    verbose: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def result(self, line: str) -> None:
        if not self.quiet:
            with self.lock:
                print(line, flush=True)

    def note(self, line: str) -> None:
        if not self.quiet:
            with self.lock:
                print(f"argonlink: {line}", file=sys.stderr, flush=True)

    def error(self, line: str) -> None:
        with self.lock:
            print(f"argonlink: error: {_one_line(line)}", file=sys.stderr, flush=True)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def describe(exc: BaseException) -> str:
    """One line for a person; never a secret (argonlink's messages contain none)."""
    if isinstance(exc, OSError) and not isinstance(exc, Error) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return _one_line(f"{where}{exc.strerror}")
    if isinstance(exc, AuthenticationError) and "authentication" not in str(exc):
        return _one_line(f"authentication failed: {exc}")
    return _one_line(str(exc) or type(exc).__name__)


def exit_status(exc: BaseException) -> int:
    if isinstance(exc, CliError):
        return exc.status
    if isinstance(exc, AuthenticationError):
        return EXIT_AUTH
    if isinstance(exc, TransferError):
        return EXIT_TRANSFER
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(
        exc, ConnectionError | TimeoutError | ProtocolError | socket.gaierror | socket.herror
    ):
        return EXIT_NETWORK
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return EXIT_NETWORK
    return EXIT_ERROR


class ProgressBar:
    """A progress bar on stderr: tqdm if it is installed, else a plain line; either only when
    stderr is a terminal, and never when quiet."""

    def __init__(self, name: str, out: Output) -> None:
        self._name = name
        self._bar: Any = None
        self._plain = False
        self._first: int | None = None  # where a resumed transfer started
        self._last = 0
        self._shown = 0.0
        self._start = time.monotonic()
        if out.quiet or not sys.stderr.isatty():
            return
        try:
            tqdm = importlib.import_module("tqdm")
        except ImportError:
            self._plain = True
            return
        self._bar = tqdm.tqdm(
            desc=name, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=False
        )

    def __call__(self, done: int, total: int) -> None:
        if self._first is None:
            self._first = done
        if self._bar is not None:
            if total >= 0 and self._bar.total != total:
                self._bar.total = total
            self._bar.update(done - self._last)
        elif self._plain and (time.monotonic() - self._shown >= 0.1 or done == total):
            self._shown = time.monotonic()
            rate = (done - self._first) / max(self._shown - self._start, 1e-6)
            pct = f"{100 * done // total:3d}%  " if total > 0 else ""
            line = f"{self._name}  {pct}{_size(done)}  {_size(int(rate))}/s"
            sys.stderr.write("\r" + line[:200] + "\x1b[K")
            sys.stderr.flush()
        self._last = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._plain and self._first is not None:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


# --------------------------------------------------------------------------------------------
# Passwords and settings


def _can_prompt() -> bool:
    if sys.stdin is not None and sys.stdin.isatty():
        return True
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | getattr(os, "O_NOCTTY", 0)))
    except OSError:
        return False
    return True


def _prompt(text: str) -> str:
    if not _can_prompt():
        raise CliError(
            "no password: use --password-file, --password-env or ARGONLINK_PASSWORD "
            "(there is no terminal to ask on)",
            EXIT_USAGE,
        )
    try:
        return getpass.getpass(text)
    except EOFError:
        raise CliError("no password entered", EXIT_USAGE) from None


def _source_override(args: argparse.Namespace) -> dict[str, object]:
    """The password source the command line names, else ARGONLINK_PASSWORD if it is set."""
    for key in ("password_file", "password_env", "password_hash_file", "password_hash_env"):
        value = getattr(args, key, None)
        if value is not None:
            return {key: value}
    if PASSWORD_VAR in os.environ:
        return {"password_env": PASSWORD_VAR}
    return {}


def _settings_env() -> dict[str, str]:
    # ARGONLINK_PASSWORD is a password source of the command line, not a setting of its own.
    return {k: v for k, v in os.environ.items() if k != PASSWORD_VAR}


_SOURCES = ("password_env", "password_file", "password_hash_env", "password_hash_file")


def _kwargs(side: config.ServerConfig | config.ClientConfig) -> dict[str, Any]:
    """Keyword arguments for the server or client, asking for the password if the settings
    name no source."""
    if any(getattr(side, key, None) is not None for key in _SOURCES):
        return side.kwargs()
    password = _prompt("argonlink password: ")
    prompted = side.replace(password_env=_PROMPTED)
    return prompted.kwargs(env={_PROMPTED: password})


def _load(args: argparse.Namespace, section: str, settings: dict[str, object]) -> config.Config:
    overrides = {**settings, **_source_override(args)}
    return config.load(args.config, env=_settings_env(), **{section: overrides})


# --------------------------------------------------------------------------------------------
# serve


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


def _serve_connection(
    conn: sync.Connection,
    args: argparse.Namespace,
    out: Output,
    tally: _Tally,
    receiving: dict[str, Any],
) -> None:
    peer = _show_target(*conn.remote_address)
    if args.verbose:
        out.note(f"{peer}: connected")
    while True:
        try:
            if args.dir is not None:
                receipt = conn.recv_file(args.dir, overwrite=args.overwrite, **receiving)
                with tally.lock:
                    tally.files += 1
                out.result(f"{receipt.sha256}  {receipt.name}")
                if args.verbose:
                    note = f", resumed from {receipt.resumed_from}" if receipt.resumed_from else ""
                    out.note(f"{peer}: received {receipt.name} ({receipt.size} bytes{note})")
                continue
            msg = conn.recv()
            if not is_file_message(msg):
                _print_message(msg, out)
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
                _print_message(exc.message, out)
        except ConnectionClosedOK:
            break
        except (ConnectionClosed, Timeout) as exc:  # after a Timeout it is out of step
            out.error(f"{peer}: {describe(exc)}")
            tally.failed(exc)
            break
        except (TransferError, OSError) as exc:
            out.error(f"{peer}: {describe(exc)}")
            tally.failed(exc)
            if isinstance(exc, TransferError) and exc.code == TransferCode.PROTOCOL:
                break  # out of step with the peer: this connection is done
    if args.verbose:
        out.note(f"{peer}: disconnected")


# What a peer's message must not send to a terminal: C0 controls but tab and newline (ESC
# starts sequences that move the cursor, retitle the window, even answer back), DEL, C1
# controls (U+0080-U+009F; 8-bit CSI), bidirectional marks, embeddings, overrides and
# isolates (they reorder what follows), and bytes that are not UTF-8 (as surrogate escapes).
_TERMINAL_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\udc80-\udcff]"
)


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # a byte that is not UTF-8
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def terminal_safe(msg: bytes) -> bytes:
    """``msg`` with everything that could drive a terminal written as an escape (``\\x1b``,
    ``\\u202e``); tabs, newlines and other text unchanged."""
    text = msg.decode("utf-8", "surrogateescape")
    return _TERMINAL_UNSAFE.sub(_escape_char, text).encode("utf-8")


def _print_message(msg: bytes, out: Output) -> None:
    if out.quiet:
        return
    with out.lock:
        # A person reads a terminal: escape. A pipe or file gets the peer's bytes unchanged.
        data = terminal_safe(msg) if sys.stdout.isatty() else msg
        sys.stdout.buffer.write(data + b"\n")
        sys.stdout.buffer.flush()


class _Stop(Exception):
    """SIGTERM: stop serving, exit 0."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop


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


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    if args.dir is None:
        given = [o for o in ("overwrite", *_FILE_OPTIONS) if getattr(args, o) not in (None, False)]
        if given:
            option = "--" + given[0].replace("_", "-")
            raise CliError(f"{option} only applies with --dir", EXIT_USAGE)
    if args.dir is not None and not args.dir.is_dir():
        raise CliError(f"{args.dir}: not a directory")
    settings = {"host": args.host, "port": args.port}
    settings.update({key: getattr(args, option) for option, key in _FILE_OPTIONS.items()})
    cfg = _load(args, "server", settings).server
    if "port" not in cfg.sources:
        cfg = cfg.replace(port=DEFAULT_PORT)
    tally = _Tally()
    receiving = cfg.recv_file_kwargs()
    kwargs = _kwargs(cfg)

    def handle(conn: sync.Connection) -> None:
        _serve_connection(conn, args, out, tally, receiving)

    server = sync.Server(handler=None if args.once else handle, **kwargs)
    del kwargs
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
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
    except _Stop:
        pass
    # --once: the status of that connection. A long-running server reports each failed
    # connection on stderr; stopping it (SIGTERM) is a success.
    return tally.status if args.once else EXIT_OK


# --------------------------------------------------------------------------------------------
# send


class _Sender:
    """Sends over one connection at a time; a lost connection is replaced and the transfer
    resumed, up to ``retries`` times per file."""

    def __init__(self, cfg: config.ClientConfig, args: argparse.Namespace, out: Output) -> None:
        self._kwargs = _kwargs(cfg)
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

    def _retrying(self, what: str, attempt: Callable[[sync.Client], FileReceipt]) -> FileReceipt:
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


def _check_readable(paths: Sequence[str]) -> list[Path]:
    checked = []
    for text in paths:
        path = Path(text)
        if text == "-":
            checked.append(path)
            continue
        try:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode):
                raise CliError(f"{path}: not a regular file")
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise CliError(describe(exc)) from None
        checked.append(path)
    return checked


def cmd_send(args: argparse.Namespace, out: Output) -> int:
    host, port = args.target
    items = _check_readable(args.files or ["-"])
    if args.stdin_name is not None and Path("-") not in items:
        raise CliError('--stdin-name needs "-" (stdin) among the files', EXIT_USAGE)
    cfg = _load(args, "client", {"host": host, "port": port, "reconnect": False}).client
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
                if str(item) == "-":
                    receipt = sender.send_stdin_file(args.stdin_name)
                else:
                    receipt = sender.send_file(item)
            except TransferError as exc:
                out.error(f"{item}: {describe(exc)}")
                status = EXIT_TRANSFER
                continue
            out.result(f"{receipt.sha256}  {receipt.name}")
            if args.verbose:
                note = f", resumed from {receipt.resumed_from}" if receipt.resumed_from else ""
                rate = receipt.size / max(receipt.elapsed, 1e-6)
                out.note(f"sent {receipt.name}: {_size(receipt.size)}{note}, {_size(int(rate))}/s")
    except OSError as exc:
        if isinstance(exc, Error) or exit_status(exc) != EXIT_NETWORK:
            raise
        raise CliError(f"{_show_target(host, port)}: {describe(exc)}", EXIT_NETWORK) from exc
    finally:
        sender.close()
    return status


def _show_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------------------------
# hash-password, keygen


def cmd_hash_password(args: argparse.Namespace, out: Output) -> int:
    if args.password_file is not None or args.password_env is not None:
        source = config.ServerConfig(
            password_file=args.password_file, password_env=args.password_env
        )
        password = source.kwargs()["password"]  # the same checks as a server's (chmod 600, ...)
    else:
        password = _prompt("New password: ")
        if not password:
            raise CliError("the password is empty", EXIT_USAGE)
        if _prompt("Repeat it: ") != password:
            raise CliError("the passwords do not match", EXIT_USAGE)
    print(hash_password(password, KdfParams.preset(args.kdf)), flush=True)
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace, out: Output) -> int:
    if args.bytes < 16:
        raise CliError("--bytes must be at least 16 (128 bits)", EXIT_USAGE)
    print(secrets.token_urlsafe(args.bytes), flush=True)
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Output], int]] = {
    "serve": cmd_serve,
    "send": cmd_send,
    "hash-password": cmd_hash_password,
    "keygen": cmd_keygen,
}


@contextmanager
def _logging(verbose: bool, stream: TextIO) -> Iterator[None]:
    """The library's log records on stderr with --verbose; otherwise none at all (errors are
    reported once, as the command's one-line error)."""
    logger = logging.getLogger("argonlink")
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("argonlink: %(levelname)s %(message)s"))
        logger.setLevel(logging.INFO)
    else:
        handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _refuse_password_argument(argv: Sequence[str]) -> None:
    """``--password VALUE`` is not an option; say so without repeating the value (argparse
    would echo it as a misplaced argument)."""
    for arg in argv:
        if arg == "--":
            return
        if arg == "--password" or arg.startswith("--password="):
            print(
                "argonlink: error: there is no --password option: a password on the command "
                "line is visible to every user of this machine; use --password-file, "
                "--password-env or ARGONLINK_PASSWORD, or let argonlink ask for it",
                file=sys.stderr,
            )
            raise SystemExit(EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (``__main__`` passes it to sys.exit)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _refuse_password_argument(argv)
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    out = Output(quiet=getattr(args, "quiet", False), verbose=verbose)
    try:
        with _logging(verbose, sys.stderr):
            return COMMANDS[args.command](args, out)
    except KeyboardInterrupt:
        out.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if verbose:
            traceback.print_exc(file=sys.stderr)
        out.error(describe(exc))
        return exit_status(exc)
