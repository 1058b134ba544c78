"""pytest fixtures: test code that uses argonlink against real servers on loopback.

The plugin is registered under the ``pytest11`` entry point ``argonlink``, so installing
argonlink is enough; from a source tree without the entry point, load it with
``-p argonlink.pytest_plugin`` (or ``pytest_plugins = ["argonlink.pytest_plugin"]`` in a
top-level ``conftest.py``). The asyncio fixtures need pytest-asyncio (strict or auto mode).

Example, a complete test module::

    import argonlink
    import argonlink.sync
    import pytest


    def echo(conn: argonlink.sync.Connection) -> None:
        for msg in conn:  # ends when the client closes
            conn.send(msg)


    async def echo_async(conn: argonlink.Connection) -> None:
        async for msg in conn:
            await conn.send(msg)


    @pytest.mark.argonlink(handler=echo)  # keyword arguments for the fixture server
    def test_echo(argonlink_client: argonlink.sync.Client) -> None:
        argonlink_client.send(b"ping")
        assert argonlink_client.recv(timeout=5) == b"ping"


    def test_accept_by_hand(argonlink_server, argonlink_password) -> None:
        host, port = argonlink_server.address  # 127.0.0.1 and a free port
        with argonlink.sync.Client(host, port, password=argonlink_password) as client:
            conn = argonlink_server.accept(timeout=5)
            client.send(b"hello")
            assert conn.recv(timeout=5) == b"hello"


    def test_two_nodes(argonlink_server_factory, argonlink_password) -> None:
        primary = argonlink_server_factory(handler=echo, node_id="primary")
        replica = argonlink_server_factory(node_id="replica")
        assert primary.address != replica.address


    @pytest.mark.asyncio
    @pytest.mark.argonlink(handler=echo_async)
    async def test_async_echo(argonlink_async_client: argonlink.Client) -> None:
        await argonlink_async_client.send(b"ping")
        assert await argonlink_async_client.recv(timeout=5) == b"ping"


    @pytest.mark.argonlink(responder=lambda data: data.upper())  # answers requests
    def test_request(argonlink_client: argonlink.sync.Client) -> None:
        assert argonlink_client.request(b"get", timeout=5) == b"GET"

Fixtures (all function-scoped):

``argonlink_password``
    A fresh random password (``str``, 132 bits) per test.
``argonlink_kdf``
    The servers' Argon2id costs: the ``argonlink_kdf`` ini option, ``KdfParams.OWASP`` unless
    set. Override the fixture to choose per module or per test.
``argonlink_server``
    A started :class:`argonlink.sync.Server` on ``127.0.0.1`` and a free port. Without a
    handler, take connections with ``accept()``; with ``@pytest.mark.argonlink(handler=f)``,
    each connection is served by ``f(conn)`` in its own thread and closed when ``f`` returns,
    as with ``sync.Server(handler=...)``. Usable from async tests too, but ``accept()`` blocks
    the event loop there: give it a handler, or use ``argonlink_async_server``.
``argonlink_client``
    A connected :class:`argonlink.sync.Client` of ``argonlink_server``.
``argonlink_server_factory``
    ``factory(handler=None, **kwargs) -> argonlink.sync.Server``: starts another server per
    call (``kwargs`` as for ``sync.Server``; the host, port, password and costs default to
    ``127.0.0.1``, a free port, ``argonlink_password`` and ``argonlink_kdf``).
``argonlink_async_server`` / ``argonlink_async_client``
    The asyncio versions (:class:`argonlink.Server` with an ``async`` handler, and a connected
    :class:`argonlink.Client`), started in the event loop pytest-asyncio gives async fixtures:
    keep that the test's loop (the defaults do) so the handler tasks run during the test.

Marker ``@pytest.mark.argonlink(**kwargs)``: keyword arguments for ``argonlink_server`` and
``argonlink_async_server`` (``handler=``, ``node_id=``, ``max_connections=``, ``kdf=``, ...).
On a test, class or module (``pytestmark``); the closest wins per keyword. The client fixtures
follow the server's password and costs. A marker's values are fixed at import, so for
``password_hash=`` override ``argonlink_password`` with the password you hashed.

Configuration (``[tool.pytest.ini_options]`` or ``-o name=value``):

``argonlink_kdf``
    ``owasp`` (the default), ``rfc9106`` or ``m_cost,t_cost,p_cost`` (KiB, passes, lanes).
    Costs below OWASP's make tests faster; the fixture clients accept them, but clients that
    your own code creates then need ``kdf_floor=argonlink_kdf``.
``argonlink_teardown_timeout``
    Seconds teardown waits for handlers to finish once their server closed (default 10).

Teardown closes every client, then every server (``close()`` is bounded by ``close_timeout``,
5 s by default), which closes every live connection, so handlers blocked in ``recv`` end with
``ConnectionClosed``. It waits until the ports are released, then for the handlers: a test
whose handler raised, or is still running after ``argonlink_teardown_timeout`` seconds, gets
an error at teardown (asyncio handler tasks still running are cancelled; a blocking handler
thread cannot be, so it is reported and left as a daemon thread). This happens whether the test
passed or failed, so no test leaves threads, tasks or listening ports behind for the next one.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, Protocol

import pytest

if TYPE_CHECKING:
    import argonlink
    import argonlink.sync

__all__ = ["ServerFactory"]

_HOST = "127.0.0.1"
_DEFAULT_KDF = "owasp"
_DEFAULT_TEARDOWN_TIMEOUT = "10"
#: At most this long, teardown waits for a closed server's port to be released.
_RELEASE_WAIT = 1.0
_KDF_KEY = pytest.StashKey["argonlink.KdfParams"]()
_TIMEOUT_KEY = pytest.StashKey[float]()


class ServerFactory(Protocol):
    """The type of the ``argonlink_server_factory`` fixture."""

    def __call__(
        self, handler: argonlink.sync.Handler | None = None, **kwargs: Any
    ) -> argonlink.sync.Server: ...


# --------------------------------------------------------------------------------------------
# Configuration


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "argonlink_kdf",
        "Argon2id costs of the argonlink fixture servers: owasp (default), rfc9106 or "
        "m_cost,t_cost,p_cost",
        default=_DEFAULT_KDF,
    )
    parser.addini(
        "argonlink_teardown_timeout",
        "seconds argonlink fixtures wait for handlers after closing a server (default 10)",
        default=_DEFAULT_TEARDOWN_TIMEOUT,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "argonlink(**kwargs): keyword arguments for the argonlink_server and "
        "argonlink_async_server fixtures (handler=, node_id=, max_connections=, ...)",
    )
    raw_timeout = str(config.getini("argonlink_teardown_timeout"))
    try:
        timeout = float(raw_timeout)
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise pytest.UsageError(
            f"argonlink_teardown_timeout must be a positive number of seconds, got {raw_timeout!r}"
        )
    config.stash[_TIMEOUT_KEY] = timeout
    # Validate a configured KDF early; the default needs no check (and no argonlink import).
    if str(config.getini("argonlink_kdf")).strip().lower() != _DEFAULT_KDF:
        _configured_kdf(config)


def _configured_kdf(config: pytest.Config) -> argonlink.KdfParams:
    if _KDF_KEY not in config.stash:
        config.stash[_KDF_KEY] = _parse_kdf(str(config.getini("argonlink_kdf")))
    return config.stash[_KDF_KEY]


def _parse_kdf(value: str) -> argonlink.KdfParams:
    from argonlink import ConfigError, KdfParams

    text = value.strip().lower()
    try:
        if "," not in text:
            return KdfParams.preset(text)
        m_cost, t_cost, p_cost = (int(part) for part in text.split(","))
        return KdfParams(m_cost, t_cost, p_cost)
    except (ConfigError, ValueError) as exc:
        raise pytest.UsageError(
            f"argonlink_kdf must be owasp, rfc9106 or m_cost,t_cost,p_cost; got {value!r} ({exc})"
        ) from None


def _marker_kwargs(request: pytest.FixtureRequest, *, asynchronous: bool = False) -> dict[str, Any]:
    """The merged ``@pytest.mark.argonlink`` keywords: module, then class, then test. A
    ``responder=f`` becomes the handler that answers each connection's requests with ``f``."""
    kwargs: dict[str, Any] = {}
    for mark in reversed(list(request.node.iter_markers("argonlink"))):
        if mark.args:
            raise TypeError("@pytest.mark.argonlink takes keyword arguments only")
        kwargs.update(mark.kwargs)
    responder = kwargs.pop("responder", None)
    if responder is not None:
        if kwargs.get("handler") is not None:
            raise TypeError("@pytest.mark.argonlink takes handler= or responder=, not both")
        kwargs["handler"] = _answering(responder, asynchronous)
    return kwargs


def _answering(responder: Callable[[bytes], Any], asynchronous: bool) -> Callable[[Any], Any]:
    """A connection handler that serves the peer's requests with ``responder`` until the
    connection ends."""
    if asynchronous:

        async def serve(conn: argonlink.Connection) -> None:
            await conn.serve_requests(responder)

        return serve

    def serve_blocking(conn: argonlink.sync.Connection) -> None:
        conn.serve_requests(responder)

    return serve_blocking


def _server_kwargs(
    password: str, kdf: argonlink.KdfParams, overrides: dict[str, Any]
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"host": _HOST, "port": 0}
    if "password_hash" not in overrides:  # a PHC string carries its own costs
        kwargs.update(password=password, kdf=kdf)
    kwargs.update(overrides)
    return kwargs


_PHC_COSTS = re.compile(r"\$m=(\d+),t=(\d+),p=(\d+)\$")


def _client_kwargs(
    request: pytest.FixtureRequest, password: str, kdf: argonlink.KdfParams
) -> dict[str, Any]:
    """Password and cost bounds that let a client join the fixture server: the server's costs
    may lie below a client's default floor (OWASP) or above its default cap."""
    from argonlink import KdfParams

    overrides = _marker_kwargs(request)
    kdf = overrides.get("kdf", kdf)
    phc_costs = _PHC_COSTS.search(str(overrides.get("password_hash", "")))
    if phc_costs:
        kdf = KdfParams(*(int(cost) for cost in phc_costs.groups()))
    password = overrides.get("password", password)
    floor, cap = KdfParams.OWASP, KdfParams.CLIENT_CAP
    kwargs: dict[str, Any] = {"password": password}
    low = KdfParams(
        min(kdf.m_cost, floor.m_cost), min(kdf.t_cost, floor.t_cost), min(kdf.p_cost, floor.p_cost)
    )
    high = KdfParams(
        max(kdf.m_cost, cap.m_cost), max(kdf.t_cost, cap.t_cost), max(kdf.p_cost, cap.p_cost)
    )
    if low != floor:
        kwargs["kdf_floor"] = low
    if high != cap:
        kwargs["kdf_cap"] = high
    return kwargs


def _fmt(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


def _port_free(address: tuple[str, int]) -> bool:
    """True when nothing listens on ``address`` (a bind succeeds)."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if os.name != "nt":  # let TIME_WAIT connections be; only a listener makes bind fail
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


# ``close()`` returns before the native runtime has dropped the listening socket (a few ms
# later), so teardown waits for that: the next test must not find the port still listening.
# Best effort and bounded: another process may have bound the port since.


def _wait_released(address: tuple[str, int]) -> None:
    deadline = time.monotonic() + _RELEASE_WAIT
    while not _port_free(address) and time.monotonic() < deadline:
        time.sleep(0.002)


async def _wait_released_async(address: tuple[str, int]) -> None:
    deadline = time.monotonic() + _RELEASE_WAIT
    while not _port_free(address) and time.monotonic() < deadline:
        await asyncio.sleep(0.002)


def _report(what: str, errors: list[BaseException], problems: list[str]) -> None:
    """Fail teardown: raise what the handlers raised (``problems`` as notes), or fail with the
    ``problems`` alone."""
    __tracebackhide__ = True
    if not errors:
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)
        return
    error = errors[0] if len(errors) == 1 else BaseExceptionGroup(f"{what} at teardown", errors)
    for problem in problems:
        error.add_note(problem)
    raise error


# --------------------------------------------------------------------------------------------
# Blocking servers


def _recording_blocking(
    handler: argonlink.sync.Handler,
    errors: list[BaseException],
    running: set[threading.Thread],
) -> argonlink.sync.Handler:
    """``handler``, with the exceptions it raises (other than the connection ending) kept, and
    its thread in ``running`` until it returns: what is still there once the server's close
    stopped waiting is a handler left running."""
    from argonlink import ConnectionClosed

    def run(conn: argonlink.sync.Connection) -> None:
        thread = threading.current_thread()
        # The server's thread for this connection: the name says it runs a fixture's handler.
        thread.name = f"argonlink-pytest-handler:{conn.local_address[1]}"
        running.add(thread)
        try:
            handler(conn)
        except ConnectionClosed:
            raise
        except Exception as exc:
            errors.append(exc)
            raise  # the server logs it and closes the connection, as without the plugin
        finally:
            running.discard(thread)

    return run


class _Serving(NamedTuple):
    """One started server of a fixture, and what its handlers left to report."""

    server: argonlink.sync.Server
    address: tuple[str, int]
    errors: list[BaseException]
    running: set[threading.Thread]


class _SyncServers:
    """The servers of one fixture, closed together at teardown."""

    def __init__(
        self, fixture: str, password: str, kdf: argonlink.KdfParams, timeout: float
    ) -> None:
        self._fixture = fixture
        self._password = password
        self._kdf = kdf
        self._timeout = timeout
        self._serving: list[_Serving] = []

    def start(
        self, handler: argonlink.sync.Handler | None = None, **kwargs: Any
    ) -> argonlink.sync.Server:
        __tracebackhide__ = True
        import argonlink.sync

        if handler is not None and (inspect.iscoroutinefunction(handler) or not callable(handler)):
            raise TypeError(
                f"{self._fixture} runs blocking handlers, f(conn: argonlink.sync.Connection);"
                f" got {handler!r} (use argonlink_async_server for an async handler)"
            )
        errors: list[BaseException] = []
        running: set[threading.Thread] = set()
        server = argonlink.sync.Server(
            handler=None if handler is None else _recording_blocking(handler, errors, running),
            **_server_kwargs(self._password, self._kdf, kwargs),
        )
        server.start()
        self._serving.append(_Serving(server, server.address, errors, running))
        return server

    def close(self) -> None:
        __tracebackhide__ = True
        deadline = time.monotonic() + self._timeout
        errors: list[BaseException] = []
        problems: list[str] = []
        closed: list[_Serving] = []
        # Every server, and so every connection, closes before any handler is waited for: a
        # server's close() is idempotent, so the second call below only waits for its handler
        # threads, all servers' against one deadline.
        for serving in reversed(self._serving):
            try:
                serving.server.close(handler_timeout=0)
            except Exception as exc:
                errors.append(exc)
            else:
                closed.append(serving)
        for serving in self._serving:
            _wait_released(serving.address)
        for serving in closed:
            try:
                serving.server.close(handler_timeout=max(0.0, deadline - time.monotonic()))
            except Exception as exc:
                errors.append(exc)
        for serving in self._serving:
            note = f"raised by the argonlink handler of the server on {_fmt(serving.address)}"
            for error in serving.errors:
                error.add_note(note)
            errors += serving.errors
            if stuck := len(serving.running):
                problems.append(
                    f"{self._fixture}: {stuck} handler thread(s) of the server on "
                    f"{_fmt(serving.address)} still running {self._timeout:g} s after it "
                    "closed (does a handler wait for something other than its connection?)"
                )
        self._serving.clear()
        _report(self._fixture, errors, problems)


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def argonlink_password() -> str:
    """A random password for this test's servers and clients (22 url-safe characters)."""
    import secrets

    return secrets.token_urlsafe(22)


@pytest.fixture
def argonlink_kdf(pytestconfig: pytest.Config) -> argonlink.KdfParams:
    """The fixture servers' Argon2id costs: the ``argonlink_kdf`` ini option (OWASP)."""
    return _configured_kdf(pytestconfig)


@pytest.fixture
def argonlink_server(
    request: pytest.FixtureRequest, argonlink_password: str, argonlink_kdf: argonlink.KdfParams
) -> Iterator[argonlink.sync.Server]:
    """A started blocking server on 127.0.0.1; ``@pytest.mark.argonlink(...)`` configures it."""
    __tracebackhide__ = True
    servers = _SyncServers(
        "argonlink_server", argonlink_password, argonlink_kdf, request.config.stash[_TIMEOUT_KEY]
    )
    server = servers.start(**_marker_kwargs(request))
    yield server
    servers.close()


@pytest.fixture
def argonlink_client(
    request: pytest.FixtureRequest,
    argonlink_server: argonlink.sync.Server,
    argonlink_password: str,
    argonlink_kdf: argonlink.KdfParams,
) -> Iterator[argonlink.sync.Client]:
    """A blocking client connected to ``argonlink_server``."""
    import argonlink.sync

    host, port = argonlink_server.address
    client = argonlink.sync.Client(
        host, port, **_client_kwargs(request, argonlink_password, argonlink_kdf)
    )
    client.connect()
    yield client
    client.close()


@pytest.fixture
def argonlink_server_factory(
    request: pytest.FixtureRequest, argonlink_password: str, argonlink_kdf: argonlink.KdfParams
) -> Iterator[ServerFactory]:
    """``factory(handler=None, **kwargs)``: another started blocking server per call."""
    __tracebackhide__ = True
    servers = _SyncServers(
        "argonlink_server_factory",
        argonlink_password,
        argonlink_kdf,
        request.config.stash[_TIMEOUT_KEY],
    )
    yield servers.start
    servers.close()


def _asyncio_fixture(func: Callable[..., AsyncIterator[Any]]) -> Any:
    """``pytest_asyncio.fixture``, or without pytest-asyncio a fixture that says so."""
    try:
        import pytest_asyncio
    except ImportError:
        name = func.__name__

        def missing() -> NoReturn:
            pytest.fail(f"the {name} fixture needs pytest-asyncio", pytrace=False)

        return pytest.fixture(name=name)(missing)
    return pytest_asyncio.fixture(func)


def _recording(
    handler: Callable[[argonlink.Connection], Awaitable[None]],
    errors: list[BaseException],
    cancelled: list[object] | None = None,
) -> Callable[[argonlink.Connection], Awaitable[None]]:
    """``handler``, with the exceptions it raises (other than the connection ending) kept, and
    a note in ``cancelled`` for each run the server's close had to cancel."""
    from argonlink import ConnectionClosed

    async def run(conn: argonlink.Connection) -> None:
        try:
            result = handler(conn)
            if not inspect.isawaitable(result):
                raise TypeError(
                    f"argonlink_async_server runs async handlers, async f(conn); {handler!r} "
                    "returned a non-awaitable (use argonlink_server for a blocking handler)"
                )
            await result
        except ConnectionClosed:
            raise
        except asyncio.CancelledError:
            if cancelled is not None:
                cancelled.append(conn)
            raise
        except Exception as exc:
            errors.append(exc)
            raise

    return run


@_asyncio_fixture
async def argonlink_async_server(
    request: pytest.FixtureRequest, argonlink_password: str, argonlink_kdf: argonlink.KdfParams
) -> AsyncIterator[argonlink.Server]:
    """A started asyncio server on 127.0.0.1; ``@pytest.mark.argonlink(...)`` configures it."""
    __tracebackhide__ = True
    import argonlink

    overrides = _marker_kwargs(request, asynchronous=True)
    handler = overrides.pop("handler", None)
    if inspect.isfunction(handler) and not inspect.iscoroutinefunction(handler):
        raise TypeError(
            f"argonlink_async_server runs async handlers, async f(conn: argonlink.Connection);"
            f" got {handler!r} (use argonlink_server for a blocking handler)"
        )
    errors: list[BaseException] = []
    cancelled: list[object] = []
    server = argonlink.Server(
        handler=None if handler is None else _recording(handler, errors, cancelled),
        **_server_kwargs(argonlink_password, argonlink_kdf, overrides),
    )
    await server.start()
    address = server.address
    yield server
    timeout = request.config.stash[_TIMEOUT_KEY]
    # close() waits for the handler tasks at most `timeout` seconds, then cancels the rest.
    await server.close(handler_timeout=timeout)
    stuck = bool(cancelled)
    await _wait_released_async(address)
    for exc in errors:
        exc.add_note(f"raised by the argonlink handler of the server on {_fmt(address)}")
    problems = []
    if stuck:
        problems.append(
            f"argonlink_async_server: handler task(s) of the server on {_fmt(address)} still "
            f"running {timeout:g} s after it closed (cancelled)"
        )
    _report("argonlink_async_server", errors, problems)


@_asyncio_fixture
async def argonlink_async_client(
    request: pytest.FixtureRequest,
    argonlink_async_server: argonlink.Server,
    argonlink_password: str,
    argonlink_kdf: argonlink.KdfParams,
) -> AsyncIterator[argonlink.Client]:
    """An asyncio client connected to ``argonlink_async_server``."""
    import argonlink

    host, port = argonlink_async_server.address
    client = argonlink.Client(
        host, port, **_client_kwargs(request, argonlink_password, argonlink_kdf)
    )
    await client.connect()
    yield client
    await client.close()
