"""Output, errors and exit statuses: results on stdout, notes and one-line errors on stderr, the
exit status for each kind of failure, the progress bar."""

from __future__ import annotations

import errno
import importlib
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import AuthenticationError, ConfigError, Error, ProtocolError, TransferError

EXIT_OK = 0
EXIT_ERROR = 1  # anything not listed below (a local file that cannot be read, ...)
EXIT_USAGE = 2  # bad arguments or settings
EXIT_AUTH = 3  # the password was wrong (on either side)
EXIT_NETWORK = 4  # cannot connect, connection lost, timed out, not an argonlink peer
EXIT_TRANSFER = 5  # a transfer was refused or failed verification
EXIT_INTERRUPTED = 130

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


class CliError(Exception):
    """An error with the exit status to end with; the message is one line."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


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
            line = f"{self._name}  {pct}{show_size(done)}  {show_size(int(rate))}/s"
            sys.stderr.write("\r" + line[:200] + "\x1b[K")
            sys.stderr.flush()
        self._last = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._plain and self._first is not None:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def show_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def show_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
