"""The ``argonlink`` command: receive and send files or messages, hash passwords, make keys.

Settings come from :mod:`argonlink.config` (``--config FILE``, ``ARGONLINK_*`` variables), with
the command-line options on top. A password is never an argument: it comes from a file, an
environment variable or a prompt.

Modules, one per command and one per shared concern (``main`` is here):

- ``serve``, ``send``, ``hash_password``, ``keygen``: a command each, with its name
  (``NAME``), its arguments (``add_parser``) and what it does (``run``)
- ``parser``: ``build_parser`` and ``COMMANDS``, the one list of commands
- ``arguments``: the parser class, the argument types, the options shared by the commands that
  connect, no ``--password``
- ``output``: results, notes and errors (``Output``), exit statuses (``describe``,
  ``exit_status``, ``CliError``), the progress bar
- ``settings``: settings from :mod:`argonlink.config` under the options, the password source
  or a prompt
- ``terminal``: a peer's messages on stdout (``terminal_safe``)
- ``signals``: SIGTERM stops a server
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from .arguments import PASSWORD_HELP, refuse_password_argument
from .hash_password import run as cmd_hash_password
from .keygen import run as cmd_keygen
from .output import (
    EXIT_AUTH,
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_TRANSFER,
    EXIT_USAGE,
    CliError,
    Output,
    ProgressBar,
    describe,
    exit_status,
)
from .parser import COMMANDS, MAIN_HELP, build_parser
from .send import SEND_HELP
from .send import run as cmd_send
from .serve import DEFAULT_PORT, SERVE_HELP
from .serve import run as cmd_serve
from .settings import PASSWORD_VAR
from .terminal import terminal_safe

__all__ = [
    "COMMANDS",
    "DEFAULT_PORT",
    "EXIT_AUTH",
    "EXIT_CODES_HELP",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NETWORK",
    "EXIT_OK",
    "EXIT_TRANSFER",
    "EXIT_USAGE",
    "MAIN_HELP",
    "PASSWORD_HELP",
    "PASSWORD_VAR",
    "SEND_HELP",
    "SERVE_HELP",
    "CliError",
    "Output",
    "ProgressBar",
    "build_parser",
    "cmd_hash_password",
    "cmd_keygen",
    "cmd_send",
    "cmd_serve",
    "describe",
    "exit_status",
    "main",
    "terminal_safe",
]


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (``__main__`` passes it to sys.exit)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    refuse_password_argument(argv)
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
