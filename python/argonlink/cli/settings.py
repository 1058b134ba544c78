"""Passwords and settings: a command's settings from :mod:`argonlink.config` with its
command-line options on top, the password source they name, else a prompt on the terminal."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from .. import config
from .output import EXIT_USAGE, CliError

PASSWORD_VAR = "ARGONLINK_PASSWORD"
_PROMPTED = "ARGONLINK_CLI_PROMPTED"  # the name a prompted password goes by, internally only


def _can_prompt() -> bool:
    if sys.stdin is not None and sys.stdin.isatty():
        return True
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | getattr(os, "O_NOCTTY", 0)))
    except OSError:
        return False
    return True


def prompt(text: str) -> str:
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


def side_kwargs(side: config.ServerConfig | config.ClientConfig) -> dict[str, Any]:
    """Keyword arguments for the server or client, asking for the password if the settings
    name no source."""
    if any(getattr(side, key, None) is not None for key in _SOURCES):
        return side.kwargs()
    if getattr(side, "peers_file", None) is not None:
        return side.kwargs()  # per-peer passwords alone: no shared one to ask for
    password = prompt("argonlink password: ")
    prompted = side.replace(password_env=_PROMPTED)
    return prompted.kwargs(env={_PROMPTED: password})


def load_settings(
    args: argparse.Namespace, section: str, settings: dict[str, object]
) -> config.Config:
    overrides = {**settings, **_source_override(args)}
    return config.load(args.config, env=_settings_env(), **{section: overrides})
