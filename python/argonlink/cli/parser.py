"""The whole command line: ``argonlink``'s own options, then each command's subparser as its
module adds it; the table of what each command runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Protocol

from .. import __version__
from . import hash_password, keygen, send, serve
from .arguments import Parser, Subcommands
from .output import EXIT_CODES_HELP, Output

MAIN_HELP = f"""\
examples:
  argonlink keygen > link.key && chmod 600 link.key
  argonlink serve --password-file link.key --dir incoming/
  argonlink send --password-file link.key db-2.internal:7000 backup.tar.gz report.pdf
  journalctl -f | argonlink send db-2.internal:7000     (lines as messages; serve --print)
  argonlink hash-password --password-file link.key      (a PHC string for a server)

Run 'argonlink COMMAND --help' for each command's options.

{EXIT_CODES_HELP}"""


class Command(Protocol):
    """A command's module: its name on the command line, its subparser, what it runs."""

    NAME: str

    def add_parser(self, commands: Subcommands) -> None: ...

    def run(self, args: argparse.Namespace, out: Output) -> int: ...


#: The commands, in the order ``argonlink --help`` lists them.
_MODULES: tuple[Command, ...] = (serve, send, hash_password, keygen)

COMMANDS: dict[str, Callable[[argparse.Namespace, Output], int]] = {
    command.NAME: command.run for command in _MODULES
}


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (``allow_abbrev=False`` everywhere: ``--password`` must not
    quietly mean ``--password-file``)."""
    parser = Parser(
        prog="argonlink",
        description="Secure server-to-server links: send files and messages between two "
        "hosts that share a password.",
        epilog=MAIN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"argonlink {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _MODULES:
        command.add_parser(commands)
    return parser
