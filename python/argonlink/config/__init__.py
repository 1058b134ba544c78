"""Typed settings for argonlink servers and clients, from code, a TOML file or the environment.

Design
------
Two frozen dataclasses, :class:`ServerConfig` and :class:`ClientConfig`, each holding exactly
the settings its class accepts, and :class:`Config`, which holds one of each (the ``[server]``
and ``[client]`` tables of a file).

* **Two section types, not one flat one.** The sides share a dozen settings but differ in the
  rest (``kdf``, ``max_connections`` and the handshake limits against ``reconnect``,
  ``open_timeout``, ``kdf_floor`` and ``kdf_cap``) and in how they may hold a password (only a
  server can use a PHC string). With one type, a client setting in a server section would be
  silently ignored; with two it is an "unknown setting" at load and a type error under mypy.
* **One** :class:`Config` **around them.** A node in a server-to-server mesh usually listens
  *and* dials, so one file and one environment describe both sides, and :func:`load` has a
  single return type. ``cfg.server`` and ``cfg.client`` always exist (with defaults); what a side
  *needs* (a password source, the client's host and port) is checked when it is built.
* **Sources, not secrets.** A config names where the password is (an environment variable, a
  file, or for servers a PHC string in either); it is read by :meth:`ServerConfig.kwargs` /
  :meth:`~ServerConfig.build` at that moment, never at load time, so a config can be printed,
  logged and compared. ``repr`` shows the source, never the password.
* **Every value knows where it came from.** ``cfg.server.sources["port"]`` is, say,
  ``"environment variable ARGONLINK_PORT"``; every error starts with that label.

Layers
------
:func:`load` stacks, lowest first: the library defaults < the TOML file < environment variables
< keyword overrides. Inside the environment, ``ARGONLINK_SERVER_*`` / ``ARGONLINK_CLIENT_*``
beat the plain ``ARGONLINK_*`` name, which applies to every side that has the setting (``host``
and ``port`` too: give the sides different values with the prefixed names). Keyword overrides
work the same way: ``port=7000`` for both sides, ``client={"port": 7001}`` for one; an override
that is ``None`` is ignored, so a CLI can pass its parsed options straight through.

* ``rekey`` and ``reconnect`` tables merge field by field across layers; ``reconnect = false``
  turns reconnecting off, ``true`` or any table of fields turns it on (defaults for the rest).
* ``kdf``, ``kdf_floor`` and ``kdf_cap`` are replaced whole: a preset name or all three costs.
* The password source is one setting with four spellings: a layer that names one replaces any
  source from a lower layer; two spellings in the same layer are an error.
* Relative paths in a file are relative to that file's directory; from the environment or a
  keyword, to the working directory at the time the password is read.

Environment variables: ``ARGONLINK_<SETTING>`` in capitals (``ARGONLINK_PORT``,
``ARGONLINK_OPEN_TIMEOUT``, ``ARGONLINK_PASSWORD_FILE``, ``ARGONLINK_KDF=owasp``), table fields
as ``ARGONLINK_<TABLE>_<FIELD>`` (``ARGONLINK_REKEY_INTERVAL``, ``ARGONLINK_RECONNECT_MAX_DELAY``,
``ARGONLINK_KDF_M_COST`` with ``_T_COST`` and ``_P_COST``). Booleans are ``true/false/1/0/yes/no``;
``ARGONLINK_RECONNECT_MAX_ATTEMPTS=none`` means no limit. An unknown ``ARGONLINK_*`` variable is an
error (a typo must not silently fall back to a default), except one that a ``password_env`` /
``password_hash_env`` setting names.

Rules
-----
* ``port`` is 0..65535 (a server's 0: any free port; a client refuses 0 when it is built).
* Timeouts are positive seconds (at most 1e9); ``ping_interval = 0`` turns keepalive off.
* Argon2 costs below the OWASP minimum (``m_cost=19456, t_cost=2, p_cost=1``, compared cost by
  cost, as clients do) are refused unless ``allow_weak_kdf = true``: a server's ``kdf``, the
  costs inside its PHC string (checked when it is read), and a client's ``kdf_floor``.
* ``kdf`` cannot be combined with a PHC string source: the string carries its own costs.
* ``file_mode`` is an integer (``0o640`` in TOML) or a string of octal digits (``"640"``, as
  in ``ARGONLINK_FILE_MODE=640``); 0o600 at least (the owner reads and writes), 0o777 at most.
* A password file must be a regular file that neither group nor others can access (like ssh's
  private keys: ``chmod 600``); one trailing newline is stripped; an empty password is refused.

Example (every setting; all are optional except a password source, and a client's host/port)::

    # node.toml
    [server]
    host = "0.0.0.0"
    port = 7000
    password_file = "/etc/argonlink/password"   # or password_env = "LINK_PASSWORD", or
                                                # password_hash_file / password_hash_env (PHC)
    kdf = "rfc9106"                  # "owasp", or { m_cost = 65536, t_cost = 3, p_cost = 4 }
    allow_weak_kdf = false
    node_id = "db-1"
    max_message_size = 16777216
    send_buffer = 4194304
    recv_buffer = 4194304
    close_timeout = 5.0
    handshake_timeout = 10.0
    max_pending_handshakes = 256
    max_pending_per_source = 128     # per IPv4 address / IPv6 /64; leave out: half the above
    max_sessions = 1024              # exactly-once sessions alive at once
    accept_backlog = 128
    max_connections = 1000
    ping_interval = 15.0             # 0: no keepalive
    ping_timeout = 45.0
    idle_timeout = 600.0
    rekey = { bytes = 68719476736, frames = 16777216, interval = 3600.0 }
    # Receiving files (argonlink serve --dir, recv_file_kwargs()); not passed to the Server.
    max_file_size = 1099511627776    # bytes; leave out: no limit (serve --max-size)
    transfer_timeout = 3600.0        # seconds for one whole transfer (serve --timeout)
    file_mode = 0o600                # received files' permissions (serve --mode)
    allow_hidden_names = false       # names starting with "." (serve --allow-hidden)
    max_partial_files = 32           # partial files of unfinished transfers in the directory
    max_partial_bytes = 68719476736  # ... and the bytes they may hold (64 GiB)
    min_free_space = 268435456       # refuse rather than leave less free (256 MiB)

    [client]
    host = "db-2.internal"
    port = 7000
    password_env = "LINK_PASSWORD"   # or password_file = "password" (next to node.toml)
    allow_weak_kdf = false
    node_id = "db-1"
    open_timeout = 10.0
    close_timeout = 5.0
    max_message_size = 16777216
    send_buffer = 4194304
    recv_buffer = 4194304
    ping_interval = 15.0
    ping_timeout = 45.0
    idle_timeout = 600.0
    kdf_floor = "owasp"
    kdf_cap = { m_cost = 262144, t_cost = 10, p_cost = 16 }
    rekey = { interval = 600.0 }     # the other fields keep their defaults

    [client.reconnect]               # or reconnect = true (all defaults); false: off (default)
    initial_delay = 0.1
    max_delay = 30.0
    multiplier = 2.0
    jitter = 0.2
    max_attempts = 10                # leave out: no limit

Use::

    cfg = argonlink.config.load("node.toml")            # + ARGONLINK_* + overrides
    async with cfg.server.build(handler=serve) as server: ...
    async with cfg.client.build() as client: ...
    with cfg.client.build(sync=True) as client: ...      # argonlink.sync.Client
    argonlink.Server(**cfg.server.kwargs())              # the same, by hand
    conn.recv_file("incoming/", **cfg.server.recv_file_kwargs())  # the file settings

Modules
-------
Each builds only on those above it:

* ``checks``: checking one value (``_k_*`` and the helpers they share, ``_Bad``), and the rule
  for a strong enough Argon2 cost
* ``specs``: ``ENV_PREFIX``, the groups of settings, and every setting of each side with how it
  is checked and read from the environment (``_Spec``, ``_SPECS``, ``_TABLES``)
* ``labels``: where a section's value came from, as its error message begins
* ``secrets``: the password sources, read when a side is built: the environment, secret files,
  PHC strings
* ``sections``: :class:`ServerConfig` and :class:`ClientConfig`, their checks on construction
  and across settings (``_finish``), ``replace`` and what they pass on
* ``layers``: a layer (each setting's raw value and its label), a table's entries, merging
* ``toml``, ``env``, ``overrides``: the file, the environment and the keyword layers
* ``loader``: :class:`Config` and :func:`load`, which stack the layers and make the sections
"""

from __future__ import annotations

from .loader import Config, load
from .sections import ClientConfig, ServerConfig
from .specs import ENV_PREFIX
from .toml import PathLike as PathLike

__all__ = ["ENV_PREFIX", "ClientConfig", "Config", "ServerConfig", "load"]
