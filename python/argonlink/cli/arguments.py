"""What the commands' arguments share: the parser class (a usage error is one line, status 2),
the argument types, the options of the commands that connect, and the refusal of a password on
the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TypeAlias

from .output import EXIT_USAGE

PASSWORD_HELP = """\
password (never an argument), first found wins:
  --password-file PATH     a file (chmod 600), one trailing newline stripped
  --password-env NAME      the environment variable NAME
  ARGONLINK_PASSWORD       this environment variable
  --config FILE / ARGONLINK_PASSWORD_FILE ...   a source named in the settings
  a prompt on the terminal
"""


class Parser(argparse.ArgumentParser):
    """Usage errors: one line, status 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


#: What a command's module adds its subparser to.
Subcommands: TypeAlias = "argparse._SubParsersAction[Parser]"


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {value}")
    return value


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # [::1]:7000
    number = port_number(port)
    if number == 0:
        raise argparse.ArgumentTypeError("the port must be between 1 and 65535")
    return host, number


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def octal_mode(text: str) -> int:
    try:
        return int(text.lower().removeprefix("0o"), 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None


def whole_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def common_options(*, server: bool) -> Parser:
    parent = Parser(add_help=False, allow_abbrev=False)
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
        parent.add_argument(
            "--peers",
            metavar="FILE",
            type=Path,
            help="per-peer passwords: a TOML file (chmod 600) of identity = PHC string lines "
            "under [peers] (argonlink hash-password --identity NAME); with or without a "
            "shared password",
        )
    else:
        parent.add_argument(
            "--identity",
            metavar="NAME",
            help="the identity to authenticate as (a server with per-peer passwords picks "
            "this one's password; sent in the clear)",
        )
    parent.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parent.add_argument(
        "-v", "--verbose", action="store_true", help="log connections; tracebacks on errors"
    )
    return parent


def refuse_password_argument(argv: Sequence[str]) -> None:
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
