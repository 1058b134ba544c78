"""Signal handling: SIGTERM stops a server, which then exits 0."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class Stop(Exception):
    """SIGTERM: stop serving, exit 0."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stop


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises :class:`Stop`, when called in the main thread (the only one
    that may set a signal handler); elsewhere SIGTERM keeps its handler."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
