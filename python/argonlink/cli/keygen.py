"""``argonlink keygen``: print a new random password from the system's CSPRNG."""

from __future__ import annotations

import argparse
import secrets

from .arguments import Subcommands
from .output import EXIT_CODES_HELP, EXIT_OK, EXIT_USAGE, CliError, Output

NAME = "keygen"


def add_parser(commands: Subcommands) -> None:
    keygen = commands.add_parser(
        NAME,
        help="print a new random password",
        description="Print a random password (URL-safe base64) from the system's CSPRNG.",
        epilog="example:\n  argonlink keygen > link.key && chmod 600 link.key\n\n"
        + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    keygen.add_argument(
        "--bytes",
        type=int,
        default=32,
        metavar="N",
        help="random bytes, at least 16 (default 32: 256 bits)",
    )


def run(args: argparse.Namespace, out: Output) -> int:
    if args.bytes < 16:
        raise CliError("--bytes must be at least 16 (128 bits)", EXIT_USAGE)
    print(secrets.token_urlsafe(args.bytes), flush=True)
    return EXIT_OK
