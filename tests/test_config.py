"""argonlink.config: loaders, layering, checks, password sources, and building real links."""

from __future__ import annotations

import inspect
import os
import re
import stat
import textwrap
from pathlib import Path

import argonlink
import argonlink.sync
import pytest
from argonlink import ConfigError, KdfParams, ReconnectPolicy, RekeyPolicy, config
from argonlink._common import ClientBase, ServerBase
from argonlink.config import ClientConfig, Config, ServerConfig, load

SECRET = "hunter2-Sekr1t-do-not-print"
WEAK = {"m_cost": 1024, "t_cost": 1, "p_cost": 1}

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def secret_file(path: Path, content: bytes = SECRET.encode() + b"\n", mode: int = 0o600) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


# --- coverage of the API --------------------------------------------------------------------


def settings_of(cls: type) -> set[str]:
    return {f for f in cls.__dataclass_fields__ if f != "sources"}


#: A server's settings for receiving files: recv_file's, not the Server's.
FILE_SETTINGS = {
    "max_file_size",
    "transfer_timeout",
    "file_mode",
    "allow_hidden_names",
    "max_partial_files",
    "max_partial_bytes",
    "min_free_space",
}


@pytest.mark.parametrize(
    ("base", "cfg", "extra"),
    [
        (
            ServerBase,
            ServerConfig,
            {"password_hash_env", "password_hash_file", "peers_file", *FILE_SETTINGS},
        ),
        (ClientBase, ClientConfig, set()),
    ],
)
def test_every_keyword_of_the_api_has_a_setting(base, cfg, extra) -> None:
    api = set(inspect.signature(base.__init__).parameters) - {"self", "handler"}
    api -= {"password", "password_hash", "peers"}  # replaced by sources (peers_file)
    sources = {"password_env", "password_file", "allow_weak_kdf"} | extra
    assert settings_of(cfg) == api | sources


def test_the_docstring_example_loads(tmp_path: Path) -> None:
    doc = config.__doc__ or ""
    block = doc.split("# node.toml\n", 1)[1].split("\nUse::", 1)[0]
    path = write(tmp_path / "node.toml", textwrap.dedent("    # node.toml\n" + block))
    cfg = load(path, env={})
    assert cfg.server.port == 7000 and cfg.server.kdf == KdfParams.RFC9106
    assert cfg.server.rekey == RekeyPolicy()
    assert cfg.client.host == "db-2.internal" and cfg.client.kdf_cap == KdfParams.CLIENT_CAP
    assert cfg.client.reconnect == ReconnectPolicy(max_attempts=10)
    assert cfg.client.rekey == RekeyPolicy(interval=600.0)
    assert cfg.server.ping_interval == 15.0 and cfg.client.open_timeout == 10.0


def test_defaults_pass_nothing_but_the_essentials(tmp_path: Path) -> None:
    assert load(env={}) == Config()
    pw = secret_file(tmp_path / "pw")
    kw = ServerConfig(password_file=pw).kwargs()
    assert kw == {"host": "127.0.0.1", "port": 0, "password": SECRET.encode()}
    kw = ClientConfig(host="h", port=1, password_env="PW").kwargs(env={"PW": SECRET})
    assert kw == {"host": "h", "port": 1, "password": SECRET}


# --- unknown keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("[server]\nprot = 1\n", "[server] prot: unknown setting; did you mean 'port'?"),
        ("[sever]\nport = 1\n", "unknown table or key 'sever'; did you mean 'server'?"),
        ("port = 1\n", "settings go in a [server] or [client] table"),
        ("[client]\nopen_timout = 1\n", "did you mean 'open_timeout'?"),
        ("[client]\nmax_connections = 1\n", "max_connections is a server setting"),
        ("[server]\nreconnect = true\n", "reconnect is a client setting"),
        ("[client]\npassword_hash_env = 'X'\n", "password_hash_env is a server setting"),
        ("[client]\nreconnect = { max_dleay = 1 }\n", "unknown reconnect field; did you mean"),
        ("[server]\nrekey = { intervall = 1 }\n", "did you mean 'interval'?"),
        ("[server]\nkdf = { m_cost = 1, t_cost = 1, p = 1 }\n", "unknown Argon2 cost"),
    ],
)
def test_unknown_file_keys_are_named_with_a_suggestion(tmp_path, toml, fragment) -> None:
    path = write(tmp_path / "c.toml", toml)
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_environment_variable_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigError,
        match=r"ARGONLINK_OPEN_TIMOUT: unknown setting; did you mean "
        r"'ARGONLINK_OPEN_TIMEOUT'\?",
    ):
        load(env={"ARGONLINK_OPEN_TIMOUT": "5"})
    with pytest.raises(ConfigError, match="did you mean 'ARGONLINK_CLIENT_OPEN_TIMEOUT'"):
        load(env={"ARGONLINK_CLIENT_OPEN_TIMEOT": "5"})
    # other variables are none of our business
    assert load(env={"PATH": "/bin", "ARGONLINKX": "1"}) == Config()


def test_an_argonlink_variable_named_as_password_source_is_not_unknown() -> None:
    env = {"ARGONLINK_PASSWORD_ENV": "ARGONLINK_DEMO_PASSWORD", "ARGONLINK_DEMO_PASSWORD": "x"}
    cfg = load(env=env)
    assert cfg.server.password_env == cfg.client.password_env == "ARGONLINK_DEMO_PASSWORD"
    with pytest.raises(ConfigError, match="ARGONLINK_DEMO_PASSWORD: unknown setting"):
        load(env={"ARGONLINK_DEMO_PASSWORD": "x"})


def test_unknown_keyword_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigError,
        match=r"keyword argument open_timout: unknown setting; "
        r"did you mean 'open_timeout'\?",
    ):
        load(env={}, open_timout=3)
    with pytest.raises(ConfigError, match=r"client\['max_connections'\]: unknown setting"):
        load(env={}, client={"max_connections": 3})
    with pytest.raises(ConfigError, match="did you mean 'max_delay'"):
        load(env={}, reconnect={"max_dealy": 3})
    with pytest.raises(ConfigError, match="unknown setting; did you mean 'port'"):
        ServerConfig().replace(prot=1)


# --- layering -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_file", "in_env", "in_kwargs", "expected", "source"),
    [
        (False, False, False, None, None),
        (True, False, False, 1001, "c.toml: [client] port"),
        (True, True, False, 1002, "environment variable ARGONLINK_PORT"),
        (False, True, False, 1002, "environment variable ARGONLINK_PORT"),
        (True, True, True, 1003, "keyword argument port"),
        (True, False, True, 1003, "keyword argument port"),
        (False, True, True, 1003, "keyword argument port"),
    ],
)
def test_precedence_defaults_file_env_kwargs(
    tmp_path, in_file, in_env, in_kwargs, expected, source
) -> None:
    path = write(tmp_path / "c.toml", "[client]\nport = 1001\n") if in_file else None
    env = {"ARGONLINK_PORT": "1002"} if in_env else {}
    kwargs = {"port": 1003} if in_kwargs else {}
    cfg = load(path, env=env, **kwargs)
    assert cfg.client.port == expected
    assert (cfg.client.sources.get("port") or "").endswith(source or "")
    assert ("port" in cfg.client.sources) == (source is not None)


def test_role_specific_names_beat_generic_ones_in_the_same_layer() -> None:
    env = {"ARGONLINK_PORT": "1", "ARGONLINK_SERVER_PORT": "2", "ARGONLINK_HOST": "h"}
    cfg = load(env=env, open_timeout=4, client={"open_timeout": 5})
    assert (cfg.server.port, cfg.client.port) == (2, 1)
    assert cfg.server.host == cfg.client.host == "h"
    assert cfg.client.open_timeout == 5
    # ... but a higher layer's generic name beats a lower layer's specific one
    assert load(env={"ARGONLINK_SERVER_PORT": "2"}, port=3).server.port == 3


def test_none_overrides_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[server]\nport = 5\n")
    assert load(path, env={}, port=None, server={"port": None}).server.port == 5


def test_tables_merge_field_by_field_across_layers(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        """\
        [server]
        rekey = { interval = 60 }
        [client]
        reconnect = { max_attempts = 3 }
        """,
    )
    env = {"ARGONLINK_REKEY_BYTES": "1000000", "ARGONLINK_RECONNECT_MAX_DELAY": "5"}
    cfg = load(path, env=env, client={"reconnect": {"jitter": 0.5}})
    assert cfg.server.rekey == RekeyPolicy(bytes=1000000, interval=60.0)
    assert cfg.client.rekey == RekeyPolicy(bytes=1000000)
    assert cfg.client.reconnect == ReconnectPolicy(max_delay=5.0, jitter=0.5, max_attempts=3)
    assert cfg.server.sources["rekey.interval"] == f"{path}: [server] rekey.interval"
    assert cfg.server.sources["rekey.bytes"] == "environment variable ARGONLINK_REKEY_BYTES"


def test_reconnect_switch(tmp_path: Path) -> None:
    assert load(env={}).client.reconnect is None
    assert load(env={}, reconnect=True).client.reconnect == ReconnectPolicy()
    assert load(env={"ARGONLINK_RECONNECT": "yes"}).client.reconnect == ReconnectPolicy()
    path = write(tmp_path / "c.toml", "[client]\nreconnect = { max_attempts = 3 }\n")
    assert load(path, env={"ARGONLINK_RECONNECT": "false"}).client.reconnect is None
    assert load(path, env={}, reconnect=False).client.reconnect is None
    assert load(env={"ARGONLINK_RECONNECT_MAX_ATTEMPTS": "none"}).client.reconnect == (
        ReconnectPolicy()
    )
    policy = ReconnectPolicy(max_delay=1.0)
    assert load(path, env={}, reconnect=policy).client.reconnect == policy  # replaces whole


def test_kdf_tables_are_replaced_whole(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml", "[server]\nkdf = { m_cost = 65536, t_cost = 3, p_cost = 4 }\n"
    )
    assert load(path, env={"ARGONLINK_KDF": "OWASP"}).server.kdf == KdfParams.OWASP
    env = {
        "ARGONLINK_KDF_M_COST": "32768",
        "ARGONLINK_KDF_T_COST": "2",
        "ARGONLINK_KDF_P_COST": "2",
    }
    assert load(path, env=env).server.kdf == KdfParams(32768, 2, 2)
    with pytest.raises(ConfigError, match=r"ARGONLINK_KDF_M_COST: .*needs all of"):
        load(path, env={"ARGONLINK_KDF_M_COST": "32768"})
    with pytest.raises(ConfigError, match="give a preset or the costs"):
        load(env={"ARGONLINK_KDF": "owasp", "ARGONLINK_KDF_M_COST": "32768"})


def test_relative_paths_in_a_file_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc" / "c.toml", "[server]\npassword_file = 'pw'\n")
    assert load(path, env={}).server.password_file == tmp_path / "etc" / "pw"


def test_replace_rechecks_and_keeps_sources(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[client]\nhost = 'h'\nport = 1\n")
    client = load(path, env={}).client.replace(port=2)
    assert client.port == 2 and client.sources["port"] == "ClientConfig.replace(port=...)"
    assert client.sources["host"] == f"{path}: [client] host"
    with pytest.raises(ConfigError, match=r"replace\(port=...\): must be between 0 and 65535"):
        client.replace(port=65536)


def test_from_each_source_alone(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[server]\nport = 9\n")
    assert Config.from_toml(path).server.port == 9
    assert Config.from_env({"ARGONLINK_SERVER_PORT": "9"}).server.port == 9
    assert Config.from_kwargs(server={"port": 9}).server.port == 9
    assert ServerConfig(port=9).port == 9


# --- types and ranges -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("port = '7000'", "port: expected an integer, got str '7000'"),
        ("port = true", "port: expected an integer, got bool True"),
        ("port = 1.5", "port: expected an integer, got float 1.5"),
        ("open_timeout = '5'", "open_timeout: expected a number of seconds, got str '5'"),
        ("open_timeout = false", "expected a number of seconds, got bool False"),
        ("allow_weak_kdf = 'yes'", "allow_weak_kdf: expected true or false, got str 'yes'"),
        ("allow_weak_kdf = 1", "expected true or false, got int 1"),
        ("host = 5", "host: expected a string, got int 5"),
        ("host = ''", "host: must not be empty"),
        ("node_id = 5", "node_id: expected a string"),
        ("password_file = 5", "password_file: expected a string"),
        ("kdf_floor = 5", "expected a preset name ('rfc9106' or 'owasp') or a table"),
        ("kdf_cap = 'fast'", "unknown KDF preset 'fast'"),
        ("kdf_cap = { m_cost = 19456, t_cost = '2', p_cost = 1 }", "t_cost: expected an integer"),
        ("rekey = 5", "rekey: expected a table of rekey fields"),
        ("rekey = { bytes = 1.5 }", "rekey.bytes: expected an integer"),
        ("reconnect = 'yes'", "reconnect: expected true, false or a table"),
        ("reconnect = { max_attempts = 'many' }", "reconnect.max_attempts: expected an integer"),
        ("max_message_size = '16M'", "max_message_size: expected an integer"),
        ("send_buffer = 10", "send_buffer must be between 1 KiB and 512 MiB"),
        ("ping_interval = 60\nping_timeout = 30", "ping_interval must be positive and below"),
    ],
)
def test_wrong_types_in_a_file(tmp_path, toml, fragment) -> None:
    path = write(tmp_path / "c.toml", f"[client]\n{toml}\n")
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    assert fragment in str(info.value)
    assert f"{path}: [client]" in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("ARGONLINK_PORT", "seven", "expected an integer, got 'seven'"),
        ("ARGONLINK_PORT", "70.0", "expected an integer, got '70.0'"),
        ("ARGONLINK_OPEN_TIMEOUT", "soon", "expected a number, got 'soon'"),
        ("ARGONLINK_OPEN_TIMEOUT", "nan", "must be finite"),
        ("ARGONLINK_ALLOW_WEAK_KDF", "maybe", "expected true/false/1/0/yes/no, got 'maybe'"),
        ("ARGONLINK_RECONNECT", "2", "expected true/false/1/0/yes/no"),
        ("ARGONLINK_KDF", "fast", "unknown KDF preset 'fast'"),
        ("ARGONLINK_MAX_CONNECTIONS", "0", "must be at least 1, got 0"),
        ("ARGONLINK_REKEY", "1", "unknown setting; did you mean 'ARGONLINK_REKEY_BYTES'"),
    ],
)
def test_wrong_environment_values_name_the_variable(name, value, fragment) -> None:
    with pytest.raises(ConfigError) as info:
        load(env={name: value})
    assert f"environment variable {name}" in str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("Yes", True),
     ("false", False), ("0", False), ("no", False), ("NO", False)],
)  # fmt: skip
def test_environment_booleans(raw, expected) -> None:
    assert load(env={"ARGONLINK_ALLOW_WEAK_KDF": raw}).server.allow_weak_kdf is expected


def test_environment_numbers_and_names() -> None:
    env = {
        "ARGONLINK_SERVER_PORT": "7000",
        "ARGONLINK_MAX_MESSAGE_SIZE": "1_048_576",
        "ARGONLINK_OPEN_TIMEOUT": "2.5",
        "ARGONLINK_CLOSE_TIMEOUT": "3",
        "ARGONLINK_KDF": "rfc9106",
        "ARGONLINK_KDF_FLOOR": "owasp",
        "ARGONLINK_CLIENT_KDF_CAP_M_COST": "65536",
        "ARGONLINK_CLIENT_KDF_CAP_T_COST": "3",
        "ARGONLINK_CLIENT_KDF_CAP_P_COST": "4",
        "ARGONLINK_NODE_ID": "db-1",
        "ARGONLINK_PASSWORD_FILE": "/run/secrets/pw",
        "ARGONLINK_RECONNECT_MAX_ATTEMPTS": "7",
    }
    cfg = load(env=env)
    assert cfg.server.port == 7000 and isinstance(cfg.server.port, int)
    assert cfg.server.max_message_size == cfg.client.max_message_size == 1 << 20
    assert cfg.client.open_timeout == 2.5 and cfg.server.close_timeout == 3.0
    assert isinstance(cfg.server.close_timeout, float)
    assert cfg.server.kdf == KdfParams.RFC9106 and cfg.client.kdf_floor == KdfParams.OWASP
    assert cfg.client.kdf_cap == KdfParams.RFC9106
    assert cfg.server.node_id == cfg.client.node_id == "db-1"
    assert cfg.client.password_file == Path("/run/secrets/pw")
    assert cfg.client.reconnect == ReconnectPolicy(max_attempts=7)


@pytest.mark.parametrize("port", [-1, 65536, 100000])
def test_server_port_outside_range(port) -> None:
    with pytest.raises(ConfigError, match=f"must be between 0 and 65535, got {port}"):
        load(env={}, server={"port": port})


def test_port_bounds() -> None:
    assert load(env={}, port=0).server.port == 0
    assert load(env={}, port=65535).client.port == 65535
    client = load(env={}, client={"port": 0, "host": "h", "password_env": "PW"}).client
    with pytest.raises(ConfigError, match=r"client\['port'\]: a client needs a port between 1"):
        client.kwargs(env={"PW": "x"})


@pytest.mark.parametrize(
    "key", ["open_timeout", "close_timeout", "ping_timeout", "idle_timeout", "handshake_timeout"]
)
@pytest.mark.parametrize("bad", [0, -1, -0.5, float("inf"), float("nan"), 1e30])
def test_timeouts_must_be_positive_and_finite(key, bad) -> None:
    section = "server" if key == "handshake_timeout" else "client"
    with pytest.raises(
        ConfigError, match=rf"{section}\['{key}'\]: must (be more than zero|be fin)"
    ):
        load(env={}, **{section: {key: bad}})


def test_zero_ping_interval_turns_keepalive_off_and_negative_is_refused() -> None:
    assert load(env={}, ping_interval=0).client.ping_interval == 0.0
    with pytest.raises(ConfigError, match="ping_interval: must be zero or more seconds"):
        load(env={}, ping_interval=-1)


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        ({"jitter": 1.5}, r"reconnect\['jitter'\]: must be between 0 and 1"),
        ({"multiplier": 0.5}, r"reconnect\['multiplier'\]: must be between 1 and 1e6"),
        ({"initial_delay": -1}, r"reconnect\['initial_delay'\]: must be zero or more"),
        ({"initial_delay": 9, "max_delay": 1}, "initial_delay must not exceed max_delay"),
        ({"max_attempts": 0}, r"reconnect\['max_attempts'\]: must be between 1 and"),
    ],
)
def test_reconnect_policy_is_checked_at_load_not_at_connect(policy, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load(env={}, reconnect=policy)
    with pytest.raises(ConfigError):
        ClientConfig(reconnect=ReconnectPolicy(**policy))


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"rekey": {"bytes": 0}}, r"rekey\['bytes'\]: must be at least 1"),
        ({"rekey": {"interval": 0}}, r"rekey\['interval'\]: must be more than zero"),
        ({"max_message_size": -1}, "max_message_size: must be at least 1"),
        ({"max_message_size": 2**33}, "max_message_size must be between 1 byte and 4 GiB"),
        ({"server": {"max_pending_handshakes": 0}}, "max_pending_handshakes'\\]: must be at least"),
        ({"server": {"accept_backlog": 2**64}}, "accept_backlog'\\]: must be at least 1"),
        ({"node_id": b"short"}, "must be 16 bytes or a name"),
        ({"password_env": "A=B"}, "not an environment variable name"),
    ],
)
def test_ranges(overrides, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load(env={}, **overrides)


def test_direct_construction_is_checked_and_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"ServerConfig\(port=...\): must be between"):
        ServerConfig(port=70000)
    with pytest.raises(ConfigError, match=r"RekeyPolicy.interval must be a positive number"):
        RekeyPolicy(interval=0)  # the policy checks itself, before any config sees it
    assert ClientConfig(reconnect=True).reconnect == ReconnectPolicy()  # type: ignore[arg-type]


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[server\nport = 1\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: not valid TOML"):
        load(path, env={})
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load(tmp_path / "missing.toml", env={})


# --- Argon2 costs ---------------------------------------------------------------------------


def test_weak_server_kdf_is_refused_unless_allowed(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[server]\nkdf = { m_cost = 1024, t_cost = 1, p_cost = 1 }\n")
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    assert f"{path}: [server] kdf: kdf (m_cost=1024, t_cost=1, p_cost=1) is below" in str(
        info.value
    )
    assert "allow_weak_kdf = true" in str(info.value)
    assert load(path, env={"ARGONLINK_ALLOW_WEAK_KDF": "true"}).server.kdf == KdfParams(1024, 1, 1)
    assert load(path, env={}, server={"allow_weak_kdf": True}).server.kdf == KdfParams(1024, 1, 1)


@pytest.mark.parametrize(
    "costs",
    [{"m_cost": 19455, "t_cost": 2, "p_cost": 1}, {"m_cost": 65536, "t_cost": 1, "p_cost": 4}],
)
def test_each_cost_is_held_to_the_floor(costs) -> None:
    with pytest.raises(ConfigError, match="below the OWASP minimum"):
        load(env={}, kdf=costs)
    assert load(env={}, kdf=costs, allow_weak_kdf=True).server.kdf == KdfParams(**costs)


def test_weak_client_floor_is_refused_unless_allowed() -> None:
    with pytest.raises(ConfigError, match=r"client\['kdf_floor'\]: kdf_floor .* below the OWASP"):
        load(env={}, client={"kdf_floor": WEAK})
    cfg = load(env={}, client={"kdf_floor": WEAK, "allow_weak_kdf": True})
    assert cfg.client.kdf_floor == KdfParams(**WEAK)


def test_floor_above_cap_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"kdf_floor .* is above kdf_cap"):
        load(env={}, client={"kdf_floor": "rfc9106", "kdf_cap": "owasp"})


def test_argon2_limits_are_checked_at_load() -> None:
    with pytest.raises(ConfigError, match=r"kdf'\]: invalid Argon2 parameters"):
        load(env={}, server={"kdf": {"m_cost": 2**31, "t_cost": 2, "p_cost": 2**24}})
    with pytest.raises(ConfigError, match=r"m_cost: must be between 1 and 4294967295"):
        load(env={}, server={"kdf": {"m_cost": 2**33, "t_cost": 2, "p_cost": 1}})


def test_weak_phc_string_is_refused_when_read_unless_allowed(tmp_path: Path) -> None:
    phc = argonlink.hash_password(SECRET, KdfParams(**WEAK))
    path = secret_file(tmp_path / "pw.phc", phc.encode() + b"\n")
    cfg = load(env={}, server={"password_hash_file": path})  # not read yet
    with pytest.raises(ConfigError, match=r"the PHC string has costs .* below the OWASP minimum"):
        cfg.server.kwargs()
    kw = cfg.server.replace(allow_weak_kdf=True).kwargs()
    assert kw["password_hash"] == phc and "password" not in kw


def test_kdf_with_a_phc_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kdf has no effect with password_hash_env"):
        load(env={}, server={"kdf": "owasp", "password_hash_env": "PHC"})


# --- password sources -----------------------------------------------------------------------


def test_two_password_sources_in_one_layer_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[client]\npassword_env = 'A'\npassword_file = 'pw'\n")
    with pytest.raises(ConfigError, match="give only one password source") as info:
        load(path, env={})
    assert f"{path}: [client] password_env and {path}: [client] password_file" in str(info.value)
    with pytest.raises(ConfigError, match="give only one password source"):
        load(env={"ARGONLINK_PASSWORD_ENV": "A", "ARGONLINK_PASSWORD_FILE": "/pw"})
    with pytest.raises(ConfigError, match="give only one password source"):
        load(env={}, server={"password_file": "/pw", "password_hash_file": "/pw.phc"})
    with pytest.raises(ConfigError, match="give only one password source"):
        ServerConfig(password_env="A", password_hash_env="B")


def test_a_higher_layer_replaces_the_password_source(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[server]\npassword_file = '/pw'\n")
    cfg = load(path, env={"ARGONLINK_PASSWORD_ENV": "PW"})
    assert cfg.server.password_env == "PW" and cfg.server.password_file is None
    cfg = load(path, env={"ARGONLINK_PASSWORD_ENV": "PW"}, server={"password_hash_env": "PHC"})
    assert cfg.server.password_hash_env == "PHC" and cfg.server.password_env is None


def test_no_password_source_is_refused_when_building() -> None:
    cfg = load(env={}, client={"host": "h", "port": 1})
    with pytest.raises(ConfigError, match="no password source for the client"):
        cfg.client.kwargs()
    with pytest.raises(ConfigError, match="no password source for the server"):
        cfg.server.build()
    with pytest.raises(ConfigError, match="the client needs a host"):
        ClientConfig(password_env="PW").kwargs(env={"PW": "x"})


def test_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ClientConfig(host="h", port=1, password_env="LINK_PW")
    with pytest.raises(ConfigError, match="the environment variable LINK_PW is not set"):
        cfg.kwargs(env={})
    with pytest.raises(ConfigError, match="password is empty"):
        cfg.kwargs(env={"LINK_PW": ""})
    monkeypatch.setenv("LINK_PW", SECRET)  # default: os.environ, read at that moment
    assert cfg.kwargs()["password"] == SECRET


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620, 0o602, 0o700 | 0o004])
def test_password_file_open_to_group_or_others_is_refused(tmp_path, mode) -> None:
    pw = secret_file(tmp_path / "pw", mode=mode)
    cfg = load(env={"ARGONLINK_PASSWORD_FILE": str(pw)})
    with pytest.raises(ConfigError) as info:
        cfg.server.kwargs()
    text = str(info.value)
    assert text.startswith("environment variable ARGONLINK_PASSWORD_FILE: ")
    assert f"permissions {stat.S_IMODE(mode):04o}" in text and "too open" in text
    assert f"chmod 600 {pw}" in text


@posix_only
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_password_file_private_to_its_owner_is_read(tmp_path, mode) -> None:
    pw = secret_file(tmp_path / "pw", mode=mode)
    assert ServerConfig(password_file=pw).kwargs()["password"] == SECRET.encode()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"pw\n", b"pw"),
        (b"pw\r\n", b"pw"),
        (b"pw\n\n", b"pw\n"),  # exactly one newline
        (b"pw", b"pw"),
        (b" pw \n", b" pw "),
    ],
)
def test_password_file_loses_one_trailing_newline(tmp_path, content, expected) -> None:
    pw = secret_file(tmp_path / "pw", content)
    assert ClientConfig(host="h", port=1, password_file=pw).kwargs()["password"] == expected


def test_password_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot open the password file .*missing"):
        ServerConfig(password_file=tmp_path / "missing").kwargs()
    with pytest.raises(ConfigError, match="the password is empty"):
        ServerConfig(password_file=secret_file(tmp_path / "pw", b"\n")).kwargs()
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="is not a regular file"):
        ServerConfig(password_file=tmp_path / "dir").kwargs()


def test_the_password_is_read_when_building_not_when_loading(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    cfg = load(env={}, password_file=str(pw))  # does not exist yet: fine
    secret_file(pw, b"first\n")
    assert cfg.server.kwargs()["password"] == b"first"
    secret_file(pw, b"second\n")
    assert cfg.client.replace(host="h", port=1).kwargs()["password"] == b"second"


def test_the_password_never_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINK_PW", SECRET)
    pw = secret_file(tmp_path / "pw")
    phc_file = secret_file(tmp_path / "phc", b"$argon2id$" + SECRET.encode() + b"\n")
    cfg = load(env={"ARGONLINK_PASSWORD_ENV": "LINK_PW"}, server={"password_file": str(pw)})
    texts = [repr(cfg), str(cfg), repr(cfg.server), str(cfg.client), repr(dict(cfg.server.sources))]
    attempts = [
        lambda: load(env={}, password=SECRET),
        lambda: load(env={}, server={"password": SECRET}),
        lambda: load(env={"ARGONLINK_PASSWORD": SECRET}),
        lambda: load(write(tmp_path / "c.toml", f"[server]\npassword = '{SECRET}'\n"), env={}),
        lambda: load(write(tmp_path / "d.toml", f"password = '{SECRET}'\n"), env={}),
        lambda: ServerConfig(password_hash_file=phc_file).kwargs(),
        lambda: ServerConfig(password_hash_env="LINK_PW").kwargs(),
        lambda: cfg.client.kwargs(),  # no host
    ]
    if os.name == "posix":
        pw.chmod(0o644)
        attempts.append(lambda: ServerConfig(password_file=pw).kwargs())
    for attempt in attempts:
        with pytest.raises(ConfigError) as info:
            attempt()
        texts += [str(info.value), repr(info.value)]
    for text in texts:
        assert SECRET not in text, text
    assert sum("a password never goes into a config" in text for text in texts) >= 8


# --- building real links ----------------------------------------------------------------------


async def test_async_server_and_client_from_one_file_exchange_a_message(tmp_path: Path) -> None:
    secret_file(tmp_path / "pw")
    path = write(
        tmp_path / "node.toml",
        """\
        [server]
        port = 0
        password_file = "pw"
        kdf = "owasp"
        node_id = "srv"
        max_message_size = 65536

        [client]
        host = "127.0.0.1"
        password_env = "LINK_PW"
        open_timeout = 5
        node_id = "cli"
        reconnect = { max_attempts = 2 }
        """,
    )
    cfg = load(path, env={})
    async with cfg.server.build() as server:
        assert isinstance(server, argonlink.Server)
        client_cfg = cfg.client.replace(port=server.address[1])
        async with client_cfg.build(env={"LINK_PW": SECRET}) as client:
            assert isinstance(client, argonlink.Client)
            conn = await server.accept(timeout=5)
            await client.send(b"hello from config")
            assert await conn.recv(timeout=5) == b"hello from config"
            await conn.send(b"ack")
            assert await client.recv(timeout=5) == b"ack"
            assert client.connection.peer_max_message_size == 65536
            assert (
                conn.peer_node_id
                == argonlink.sync.Client("h", 1, password="x", node_id="cli").node_id.hex()
            )


def test_sync_server_with_handler_and_client_from_kwargs_and_env(tmp_path: Path) -> None:
    phc = argonlink.hash_password(SECRET, KdfParams.OWASP)
    phc_file = secret_file(tmp_path / "pw.phc", phc.encode() + b"\n")

    def echo(conn: argonlink.sync.Connection) -> None:
        for msg in conn:
            conn.send(b"echo " + msg)

    env = {"ARGONLINK_CLIENT_PASSWORD_ENV": "LINK_PW", "LINK_PW": SECRET}
    cfg = load(env=env, server={"password_hash_file": phc_file}, client={"host": "127.0.0.1"})
    with cfg.server.build(echo, sync=True) as server:
        assert isinstance(server, argonlink.sync.Server)
        client_cfg = cfg.client.replace(port=server.address[1])
        with client_cfg.build(sync=True, env=env) as client:
            assert isinstance(client, argonlink.sync.Client)
            client.send(b"ping")
            assert client.recv(timeout=5) == b"echo ping"


async def test_a_wrong_password_from_the_config_is_an_authentication_error(tmp_path) -> None:
    cfg = load(env={"A": "one", "B": "two"}, server={"password_env": "A", "kdf": "owasp"},
               client={"password_env": "B", "host": "127.0.0.1", "open_timeout": 5})  # fmt: skip
    async with cfg.server.build(env={"A": "one"}) as server:
        client = cfg.client.replace(port=server.address[1]).build(env={"B": "two"})
        with pytest.raises(argonlink.AuthenticationError):
            await client.connect()


def test_kwargs_work_with_the_classes_directly(tmp_path: Path) -> None:
    cfg = ServerConfig(password_env="PW", kdf=KdfParams.OWASP, max_connections=3)
    with argonlink.sync.Server(**cfg.kwargs(env={"PW": SECRET})) as server:
        kw = ClientConfig(host="127.0.0.1", port=server.address[1], password_env="PW").kwargs(
            env={"PW": SECRET}
        )
        with argonlink.sync.Client(**kw) as client:
            client.send(b"x")
            assert server.accept(timeout=5).recv(timeout=5) == b"x"


# --- receiving files (argonlink serve --dir) ------------------------------------------------


def test_file_settings_become_recv_file_keywords_not_server_ones(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        """\
        [server]
        max_file_size = 1000
        transfer_timeout = 30
        file_mode = 0o640
        allow_hidden_names = true
        max_partial_files = 4
        max_partial_bytes = 0
        min_free_space = 1048576
        """,
    )
    cfg = load(path, env={}).server
    assert cfg.recv_file_kwargs() == {
        "max_size": 1000,
        "total_timeout": 30.0,
        "mode": 0o640,
        "allow_hidden": True,
        "max_partials": 4,
        "max_partial_bytes": 0,
        "min_free_space": 1 << 20,
    }
    kwargs = cfg.replace(password_file=secret_file(tmp_path / "pw")).kwargs()
    assert not FILE_SETTINGS & set(kwargs)  # the Server takes none of them
    argonlink.sync.Server(**kwargs).close()
    assert ServerConfig().recv_file_kwargs() == {"allow_hidden": False}  # library defaults


def test_file_settings_from_the_environment() -> None:
    env = {
        "ARGONLINK_FILE_MODE": "0640",
        "ARGONLINK_SERVER_TRANSFER_TIMEOUT": "2.5",
        "ARGONLINK_ALLOW_HIDDEN_NAMES": "yes",
        "ARGONLINK_MAX_FILE_SIZE": "10",
    }
    cfg = load(env=env).server
    assert (cfg.file_mode, cfg.transfer_timeout, cfg.allow_hidden_names) == (0o640, 2.5, True)
    assert cfg.max_file_size == 10
    assert load(env={"ARGONLINK_FILE_MODE": "0o600"}).server.file_mode == 0o600


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("file_mode = 0o4755", "between 0o000 and 0o777"),
        ("file_mode = 'rw-r--r--'", "octal"),
        ("file_mode = 0o444", "owner read and write"),
        ("file_mode = true", "permission mode"),
        ("max_file_size = -1", "at least 0"),
        ("transfer_timeout = 0", "more than zero"),
        ("max_partial_files = 0", "at least 1"),
        ("min_free_space = 1.5", "expected an integer"),
    ],
)
def test_bad_file_settings_are_named(tmp_path: Path, toml: str, fragment: str) -> None:
    path = write(tmp_path / "c.toml", f"[server]\n{toml}\n")
    with pytest.raises(ConfigError, match=re.escape(fragment)) as info:
        load(path, env={})
    assert f"[server] {toml.split(' ')[0]}" in str(info.value)


def test_file_settings_are_server_settings(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[client]\nfile_mode = 0o600\n")
    with pytest.raises(ConfigError, match="file_mode is a server setting"):
        load(path, env={})


# --- identities and per-peer passwords --------------------------------------------------------


def test_client_identity_and_server_peers_file(tmp_path: Path) -> None:
    phc = argonlink.hash_password("pw of db-1", KdfParams.OWASP)
    peers = secret_file(tmp_path / "peers.toml", f'[peers]\n"db-1" = "{phc}"\n'.encode())
    path = write(
        tmp_path / "node.toml",
        f"""
        [server]
        peers_file = "{peers}"
        [client]
        host = "db-2"
        port = 7000
        identity = "db-1"
        password_env = "PW"
        """,
    )
    cfg = load(path, env={})
    kw = cfg.server.kwargs()
    assert set(kw) == {"host", "port", "peers"}, "peers alone need no shared password"
    assert [(k, v.phc) for k, v in kw["peers"].items()] == [("db-1", phc)]
    assert cfg.client.kwargs(env={"PW": "x"})["identity"] == "db-1"
    assert load(env={"ARGONLINK_CLIENT_IDENTITY": "edge-2"}).client.identity == "edge-2"
    with pytest.raises(ConfigError, match=r"ARGONLINK_IDENTITY: .*printable ASCII"):
        load(env={"ARGONLINK_IDENTITY": "two words"})
    weak = argonlink.hash_password("pw", KdfParams(8192, 1, 1))
    secret_file(peers, f'[peers]\n"db-1" = "{weak}"\n'.encode())
    with pytest.raises(ConfigError, match=r"\[peers\] 'db-1'.*below"):
        cfg.server.kwargs()
