"""Effects: what the protocol asks its driver to do (send, receive, poll, run a blocking file
operation, sleep, set a deadline).

The protocol (:mod:`.steps`) is written as generators that yield these and do no I/O of their
own; the drivers (:mod:`.runner`) carry them out, one blocking and one with ``await``. This
module is the vocabulary the two sides share, and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from .._options import BytesLike
from .receipt import FileReceipt


@dataclass(frozen=True, slots=True)
class _Send:
    data: BytesLike


class _Recv:
    __slots__ = ()


class _Poll:
    """A message if one is already waiting, else None (the sender's check for an early REFUSE)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class _Run:
    """A blocking file operation (run in a worker thread by the asyncio driver)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class _Sleep:
    """Pause (without holding a thread in the asyncio driver), e.g. between tries of a lock."""

    seconds: float


@dataclass(frozen=True, slots=True)
class _Deadline:
    """From now on every wait ends by ``seconds`` from now: a whole transfer's time limit."""

    seconds: float


_RECV: Final = _Recv()
_POLL: Final = _Poll()
_Effect: TypeAlias = _Send | _Recv | _Poll | _Run | _Sleep | _Deadline
_Steps: TypeAlias = Generator[_Effect, Any, FileReceipt]
