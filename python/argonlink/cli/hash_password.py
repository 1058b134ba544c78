"""``argonlink hash-password``: print a PHC string for a server's ``password_hash``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import config
from .._options import KdfParams, hash_password
from ..exceptions import ConfigError
from .arguments import Subcommands
from .output import EXIT_CODES_HELP, EXIT_OK, EXIT_USAGE, CliError, Output
from .settings import prompt

NAME = "hash-password"


def add_parser(commands: Subcommands) -> None:
    hashing = commands.add_parser(
        NAME,
        help="print a PHC string for a server's password_hash",
        description="Derive a PHC string ($argon2id$...) from a password, for a server's "
        "password_hash (password_hash_file in the settings, or serve --password-hash-file). "
        "The string is password-equivalent for argonlink: store it like the password. "
        "Without --password-file/--password-env the password is asked twice.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    hashing.add_argument(
        "--identity",
        metavar="NAME",
        help='print a line for a peers file (serve --peers): "NAME" = "$argon2id$..."',
    )
    hashing.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")


def run(args: argparse.Namespace, out: Output) -> int:
    if args.identity is not None:
        try:
            config.ClientConfig(identity=args.identity)
        except ConfigError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
    if args.password_file is not None or args.password_env is not None:
        source = config.ServerConfig(
            password_file=args.password_file, password_env=args.password_env
        )
        password = source.kwargs()["password"]  # the same checks as a server's (chmod 600, ...)
    else:
        password = prompt("New password: ")
        if not password:
            raise CliError("the password is empty", EXIT_USAGE)
        if prompt("Repeat it: ") != password:
            raise CliError("the passwords do not match", EXIT_USAGE)
    phc = hash_password(password, KdfParams.preset(args.kdf))
    # An identity is printable ASCII; JSON's quoting of it is a valid TOML basic string.
    line = phc if args.identity is None else f"{json.dumps(args.identity)} = {json.dumps(phc)}"
    print(line, flush=True)
    return EXIT_OK
