"""The ``argonlink`` command, end to end in subprocesses: serve + send, exit statuses, one-line
errors, resume after a cut, hash-password (also on a terminal), keygen, no password in argv."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import argonlink
import argonlink.sync
import pytest
from argonlink import cli
from lifecycle_support import free_port, wait_until
from proxy import CloseAfter, Proxy
from support import KDF

PASSWORD = "cli test password, long enough"
OTHER_PASSWORD = "a different password entirely"
MIB = 1 << 20


def base_env(**extra: str) -> dict[str, str]:
    """The environment without the developer's ARGONLINK_* settings, with fast Argon2 costs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGONLINK_")}
    env["ARGONLINK_KDF"] = "owasp"
    env.update(extra)
    return env


def argonlink_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "argonlink", *args]


def run(
    *args: str, env: dict[str, str] | None = None, input: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argonlink_cmd(*args),
        input=input,
        capture_output=True,
        env=base_env() if env is None else env,
        timeout=timeout,
        check=False,
        start_new_session=True,  # no controlling terminal: nothing can prompt
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return secret_file(tmp_path / "link.key", PASSWORD)


@pytest.fixture
def wrong_key(tmp_path: Path) -> Path:
    return secret_file(tmp_path / "wrong.key", OTHER_PASSWORD)


class Serve:
    """``argonlink serve`` in a child process, on a free port."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        quiet = "-q" in args
        port = free_port() if quiet else 0  # a quiet server does not say where it listens
        self.proc = subprocess.Popen(
            argonlink_cmd("serve", "--port", str(port), *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=base_env() if env is None else env,
            start_new_session=True,
        )
        assert self.proc.stderr is not None
        if quiet:
            assert wait_until(lambda: self._listening(port), timeout=20), "not listening"
            self.port = port
        else:
            ready, _, _ = select.select([self.proc.stderr], [], [], 20)
            assert ready, "the server did not start"
            line = self.proc.stderr.readline().decode()  # "argonlink: listening on HOST:PORT"
            assert "listening on" in line, line + self.proc.stderr.read().decode()
            self.port = int(line.rsplit(":", 1)[1])
        self.address = f"127.0.0.1:{self.port}"
        self.stdout = self.stderr = ""
        self.returncode: int | None = None

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    def finish(self, timeout: float = 30, *, terminate: bool = False) -> Serve:
        if terminate:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=timeout)
        self.stdout, self.stderr = out.decode(), err.decode()
        self.returncode = self.proc.returncode
        return self

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@contextlib.contextmanager
def serving(*args: str, env: dict[str, str] | None = None) -> Iterator[Serve]:
    server = Serve(*args, env=env)
    try:
        yield server
    finally:
        server.kill()


def sum_line(data: bytes, name: str) -> str:
    return f"{hashlib.sha256(data).hexdigest()}  {name}"


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("argonlink: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# --------------------------------------------------------------------------------------------
# serve + send


def test_serve_dir_and_send_files_arrive_byte_identical(tmp_path: Path, key: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    files = {
        "empty": b"",
        "one byte": b"x",
        "data.bin": os.urandom(2 * MIB + 3),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with serving("--password-file", str(key), "--dir", str(incoming), "--once") as server:
        sent = run(
            "send", "--password-file", str(key), server.address, *(str(tmp_path / n) for n in files)
        )
        server.finish()
    assert sent.returncode == 0, sent.stderr
    expected = [sum_line(data, name) for name, data in files.items()]
    assert sent.stdout.splitlines() == expected  # sha256sum format, one line per stored file
    assert server.returncode == 0, server.stderr
    assert server.stdout.splitlines() == expected
    for name, data in files.items():
        assert (incoming / name).read_bytes() == data
        assert (incoming / name).stat().st_mode & 0o777 == 0o600  # private, by default
    assert sorted(os.listdir(incoming)) == sorted(files)


def test_quiet_prints_nothing_on_success(tmp_path: Path, key: Path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    (tmp_path / "f").write_bytes(b"quiet")
    with serving("--password-file", str(key), "--dir", str(incoming), "--once", "-q") as server:
        sent = run("send", "-q", "--password-file", str(key), server.address, str(tmp_path / "f"))
        server.finish()
    assert (sent.returncode, sent.stdout, sent.stderr) == (0, "", "")
    assert (server.returncode, server.stdout) == (0, "")
    assert (incoming / "f").read_bytes() == b"quiet"


def test_wrong_password_exits_3_with_one_line(tmp_path: Path, key: Path, wrong_key: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    with serving("--password-file", str(key), "--print") as server:
        sent = run("send", "--password-file", str(wrong_key), server.address, str(tmp_path / "f"))
    assert sent.returncode == cli.EXIT_AUTH == 3
    line = one_error_line(sent.stderr)
    assert "authentication failed" in line
    for text in (sent.stdout, sent.stderr):
        assert PASSWORD not in text and OTHER_PASSWORD not in text


def test_nothing_listening_exits_4(tmp_path: Path, key: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    sent = run("send", "--password-file", str(key), f"127.0.0.1:{free_port()}", str(tmp_path / "f"))
    assert sent.returncode == cli.EXIT_NETWORK == 4
    assert "refused" in one_error_line(sent.stderr).lower()


def test_a_refused_file_exits_5_and_the_others_are_still_sent(tmp_path: Path, key: Path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    (incoming / "exists.txt").write_bytes(b"keep me")
    (tmp_path / "exists.txt").write_bytes(b"replace me?")
    (tmp_path / "new.txt").write_bytes(b"new")
    with serving("--password-file", str(key), "--dir", str(incoming), "--once") as server:
        sent = run(
            "send",
            "--password-file",
            str(key),
            server.address,
            str(tmp_path / "exists.txt"),
            str(tmp_path / "new.txt"),
        )
        server.finish()
    assert sent.returncode == cli.EXIT_TRANSFER == 5
    assert "already exists" in one_error_line(sent.stderr)
    assert sent.stdout.splitlines() == [sum_line(b"new", "new.txt")]
    assert (incoming / "exists.txt").read_bytes() == b"keep me"
    assert (incoming / "new.txt").read_bytes() == b"new"
    assert server.returncode == cli.EXIT_TRANSFER  # --once: the connection's status


def test_a_cut_connection_is_resumed_by_send(tmp_path: Path, key: Path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    data = os.urandom(4 * MIB + 1)
    (tmp_path / "big.bin").write_bytes(data)
    with serving("--password-file", str(key), "--dir", str(incoming)) as server:
        # The first connection is cut after the handshake, the offer and two 1 MiB chunks.
        cut = lambda n: CloseAfter(3 + 1 + 17 * 2) if n == 0 else None  # noqa: E731
        with Proxy(("127.0.0.1", server.port), c2s=cut) as proxy:
            host, port = proxy.address
            sent = run(
                "send",
                "-v",
                "--retries",
                "2",
                "--password-file",
                str(key),
                f"{host}:{port}",
                str(tmp_path / "big.bin"),
            )
        server.finish(terminate=True)
    assert sent.returncode == 0, sent.stderr
    assert "reconnecting" in sent.stderr and "resumed from" in sent.stderr, sent.stderr
    assert sent.stdout.splitlines() == [sum_line(data, "big.bin")]
    assert (incoming / "big.bin").read_bytes() == data
    assert os.listdir(incoming) == ["big.bin"]
    assert server.returncode == 0  # SIGTERM stops a server cleanly


def test_serve_print_and_send_stdin_lines(key: Path) -> None:
    env = base_env(ARGONLINK_PASSWORD=PASSWORD)
    with serving("--print", "--once", env=env) as server:
        sent = run("send", server.address, input=b"first line\nsecond\n\nlast", env=env)
        server.finish()
    assert sent.returncode == 0, sent.stderr
    assert server.returncode == 0, server.stderr
    assert server.stdout.split("\n") == ["first line", "second", "", "last", ""]


def test_stdin_lines_survive_cut_connections_exactly_once(key: Path) -> None:
    env = base_env(ARGONLINK_PASSWORD=PASSWORD)
    lines = [b"line %d" % i for i in range(3000)]
    with serving("--print", "--once", env=env) as server:
        # Three connections cut after a few dozen frames each.
        cut = lambda n: CloseAfter(3 + 20 * (n + 1)) if n < 3 else None  # noqa: E731
        with Proxy(("127.0.0.1", server.port), c2s=cut) as proxy:
            host, port = proxy.address
            sent = run("send", f"{host}:{port}", input=b"\n".join(lines), env=env)
            assert len(proxy.connections) >= 4
        server.finish()
    assert sent.returncode == 0, sent.stderr
    assert server.returncode == 0, server.stderr
    assert server.stdout.encode().split(b"\n")[:-1] == lines


def test_send_stdin_as_a_file(tmp_path: Path, key: Path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    data = os.urandom(MIB + 17)
    with serving("--password-file", str(key), "--dir", str(incoming), "--once") as server:
        sent = run(
            "send",
            "--password-env",
            "MY_LINK_SECRET",
            server.address,
            "-",
            "--stdin-name",
            "piped.bin",
            input=data,
            env=base_env(MY_LINK_SECRET=PASSWORD),
        )
        server.finish()
    assert sent.returncode == 0, sent.stderr
    assert (incoming / "piped.bin").read_bytes() == data
    assert sent.stdout.splitlines() == [sum_line(data, "piped.bin")]


def test_a_print_server_refuses_files(tmp_path: Path, key: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    with serving("--password-file", str(key), "--print", "--once") as server:
        sent = run("send", "--password-file", str(key), server.address, str(tmp_path / "f"))
        server.finish()
    assert sent.returncode == cli.EXIT_TRANSFER
    assert "takes no files" in one_error_line(sent.stderr)


def test_serve_file_limits_mode_and_hidden_names(tmp_path: Path, key: Path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    (tmp_path / ".env").write_bytes(b"A=1\n")
    (tmp_path / "eleven.bin").write_bytes(b"x" * 11)
    args = ("--max-size", "10", "--mode", "640", "--allow-hidden", "--min-free-space", "0")
    with serving("--password-file", str(key), "--dir", str(incoming), "--once", *args) as server:
        sent = run(
            "send",
            "--password-file",
            str(key),
            server.address,
            str(tmp_path / ".env"),
            str(tmp_path / "eleven.bin"),
        )
        server.finish()
    assert sent.returncode == cli.EXIT_TRANSFER, sent.stderr
    assert "at most 10" in one_error_line(sent.stderr)
    assert (incoming / ".env").read_bytes() == b"A=1\n"
    assert (incoming / ".env").stat().st_mode & 0o777 == 0o640
    assert os.listdir(incoming) == [".env"]


def test_serve_refuses_hidden_names_by_default(tmp_path: Path, key: Path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    (tmp_path / ".bashrc").write_bytes(b"alias ls='rm -rf'\n")
    with serving("--password-file", str(key), "--dir", str(incoming), "--once") as server:
        sent = run("send", "--password-file", str(key), server.address, str(tmp_path / ".bashrc"))
        server.finish()
    assert sent.returncode == cli.EXIT_TRANSFER
    assert "starts with '.'" in one_error_line(sent.stderr)
    assert os.listdir(incoming) == []


def test_serve_file_settings_from_the_config_file(tmp_path: Path, key: Path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    settings = tmp_path / "node.toml"
    settings.write_text("[server]\nmax_file_size = 3\nfile_mode = 0o660\n")
    (tmp_path / "ok").write_bytes(b"abc")
    (tmp_path / "big").write_bytes(b"abcd")
    with serving(
        "--password-file", str(key), "-c", str(settings), "--dir", str(incoming), "--once"
    ) as server:
        sent = run(
            "send",
            "--password-file",
            str(key),
            server.address,
            *(str(tmp_path / n) for n in ["ok", "big"]),
        )
        server.finish()
    assert sent.returncode == cli.EXIT_TRANSFER
    assert "at most 3" in one_error_line(sent.stderr)
    assert (incoming / "ok").stat().st_mode & 0o777 == 0o660
    assert os.listdir(incoming) == ["ok"]


def test_serve_timeout_ends_a_stalled_transfer(tmp_path: Path, key: Path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    data = b"never sent"
    body = {"name": "stalled.bin", "size": len(data), "resume": True}
    raw_offer = b"ALNKFILE\x02\x01" + json.dumps(body).encode()
    with serving(
        "--password-file", str(key), "--dir", str(incoming), "--once", "--timeout", "1"
    ) as server:
        with argonlink.sync.Client("127.0.0.1", server.port, password=PASSWORD) as client:
            native = client.connection._conn.open_channel_blocking("argonlink.file")
            channel = argonlink.sync.Channel(native)
            channel.send(raw_offer)
            assert channel.recv(timeout=30)[:10] == b"ALNKFILE\x02\x02"  # ACCEPT
            # ... and no data: the server gives up on the transfer (its channel), and the
            # connection carries on.
            with pytest.raises(argonlink.ChannelReset):
                channel.recv(timeout=30)
            client.send(b"still here")
        server.finish()
    assert "still here" in server.stdout
    assert server.returncode == cli.EXIT_NETWORK, server.stderr
    assert "total_timeout" in server.stderr
    assert not (incoming / "stalled.bin").exists()


def test_file_options_need_dir(key: Path) -> None:
    done = run("serve", "--password-file", str(key), "--print", "--mode", "600")
    assert done.returncode == cli.EXIT_USAGE
    assert "--mode only applies with --dir" in one_error_line(done.stderr)


HOSTILE_MESSAGES = [
    b"\x1b]0;owned\x07title",
    b"\x1b[2J\x1b[31mred",
    "bidi \u202eexe.txt".encode(),
    b"8-bit csi \x9b2J and \xc2\x9b",
    b"cr\rover",
    "tab\tand caf\u00e9 stay\nas they are".encode(),
]


def serve_print_once(stdout: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        argonlink_cmd("serve", "--port", "0", "--print", "--once"),
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=base_env(ARGONLINK_PASSWORD=PASSWORD),
        start_new_session=True,
    )
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], 20)
    assert ready, "the server did not start"
    line = proc.stderr.readline().decode()
    assert "listening on" in line, line
    port = int(line.rsplit(":", 1)[1])
    with argonlink.sync.Client("127.0.0.1", port, password=PASSWORD) as client:
        for msg in HOSTILE_MESSAGES:
            client.send(msg)
        client.flush(timeout=10)
    return proc


def test_serve_print_escapes_what_could_drive_a_terminal() -> None:
    master, slave = os.openpty()
    try:
        proc = serve_print_once(slave)
        os.close(slave)
        slave = -1
        screen = b""
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            assert ready, screen
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the server exited and closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    screen = screen.replace(b"\r\n", b"\n")  # the terminal's own line ends
    assert b"\x1b" not in screen and b"\x07" not in screen and b"\x9b" not in screen
    assert b"\r" not in screen and "\u202e".encode() not in screen
    assert b"\\x1b]0;owned\\x07title\n" in screen
    assert b"\\x1b[2J\\x1b[31mred\n" in screen
    assert b"bidi \\u202eexe.txt\n" in screen
    assert b"8-bit csi \\x9b2J and \\x9b\n" in screen
    assert b"cr\\x0dover\n" in screen
    assert "tab\tand caf\u00e9 stay\nas they are\n".encode() in screen


def test_serve_print_into_a_pipe_writes_the_bytes_unchanged() -> None:
    proc = serve_print_once(subprocess.PIPE)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out == b"".join(msg + b"\n" for msg in HOSTILE_MESSAGES)


def test_serve_with_a_phc_string(tmp_path: Path, key: Path) -> None:
    phc = argonlink.hash_password(PASSWORD, KDF)
    phc_file = secret_file(tmp_path / "link.phc", phc)
    incoming = tmp_path / "in"
    incoming.mkdir()
    (tmp_path / "f").write_bytes(b"via phc")
    env = base_env()
    del env["ARGONLINK_KDF"]  # the PHC string carries its own costs (both would be refused)
    with serving(
        "--password-hash-file", str(phc_file), "--dir", str(incoming), "--once", env=env
    ) as s:
        sent = run("send", "--password-file", str(key), s.address, str(tmp_path / "f"))
        s.finish()
    assert sent.returncode == 0, sent.stderr
    assert (incoming / "f").read_bytes() == b"via phc"


def test_no_password_source_and_no_terminal_exits_2(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    sent = run("send", "127.0.0.1:7000", str(tmp_path / "f"))
    assert sent.returncode == cli.EXIT_USAGE
    assert "--password-file" in one_error_line(sent.stderr)


def test_an_open_password_file_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose.key"
    loose.write_text(PASSWORD)
    loose.chmod(0o644)
    done = run("serve", "--password-file", str(loose), "--print")
    assert done.returncode == cli.EXIT_USAGE
    assert "chmod 600" in one_error_line(done.stderr)
    assert PASSWORD not in done.stderr


# --------------------------------------------------------------------------------------------
# hash-password, keygen


def assert_phc_works(phc: str, password: str) -> None:
    assert phc.startswith("$argon2id$v=19$")
    with argonlink.sync.Server(password_hash=phc) as server:
        with argonlink.sync.Client(*server.address, password=password) as client:
            conn = server.accept(timeout=5)
            client.send(b"ok")
            assert conn.recv(timeout=5) == b"ok"
        with pytest.raises(argonlink.AuthenticationError):
            argonlink.sync.Client(*server.address, password="not it").connect()


def test_hash_password_from_env_and_file(tmp_path: Path, key: Path) -> None:
    by_env = run(
        "hash-password", "--kdf", "owasp", "--password-env", "PW", env=base_env(PW=PASSWORD)
    )
    assert by_env.returncode == 0, by_env.stderr
    by_file = run("hash-password", "--kdf", "owasp", "--password-file", str(key))
    assert by_file.returncode == 0, by_file.stderr
    phcs = [by_env.stdout.strip(), by_file.stdout.strip()]
    assert phcs[0] != phcs[1]  # a fresh salt each time
    for phc in phcs:
        assert "m=19456,t=2,p=1" in phc
        assert_phc_works(phc, PASSWORD)
    assert PASSWORD not in by_env.stdout + by_env.stderr + by_file.stdout + by_file.stderr


class Terminal:
    """A child process on a pseudo-terminal (its stdin and stderr), stdout on a pipe."""

    def __init__(self, *args: str) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            argonlink_cmd(*args),
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=slave,
            env=base_env(),
            start_new_session=True,
        )
        os.close(slave)
        self.screen = b""

    def expect(self, text: bytes, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never appeared; screen: {self.screen!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                with contextlib.suppress(OSError):  # the child closed the terminal
                    self.screen += os.read(self.master, 1024)

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=30)
        with contextlib.suppress(OSError):
            while select.select([self.master], [], [], 0.1)[0]:
                chunk = os.read(self.master, 1024)
                if not chunk:
                    break
                self.screen += chunk
        os.close(self.master)
        return self.proc.returncode, out.decode()


def test_hash_password_prompts_twice_without_echo() -> None:
    term = Terminal("hash-password", "--kdf", "owasp")
    term.expect(b"New password:")
    term.type(PASSWORD)
    term.expect(b"Repeat it:")
    term.type(PASSWORD)
    status, out = term.finish()
    assert status == 0, term.screen
    assert PASSWORD.encode() not in term.screen  # the terminal never showed it
    assert_phc_works(out.strip(), PASSWORD)


def test_hash_password_refuses_a_mismatch() -> None:
    term = Terminal("hash-password", "--kdf", "owasp")
    term.expect(b"New password:")
    term.type(PASSWORD)
    term.expect(b"Repeat it:")
    term.type(OTHER_PASSWORD)
    status, out = term.finish()
    assert status == cli.EXIT_USAGE and out == ""
    assert b"do not match" in term.screen


def test_keygen_prints_a_strong_random_password() -> None:
    keys = [run("keygen").stdout.strip() for _ in range(3)]
    assert len(set(keys)) == 3
    for k in keys:
        raw = base64.urlsafe_b64decode(k + "=" * (-len(k) % 4))
        assert len(raw) >= 32  # 256 bits by default
        assert all(c.isalnum() or c in "-_" for c in k)
    short = run("keygen", "--bytes", "16").stdout.strip()
    assert len(base64.urlsafe_b64decode(short + "==")) == 16
    weak = run("keygen", "--bytes", "15")
    assert weak.returncode == cli.EXIT_USAGE and weak.stdout == ""


# --------------------------------------------------------------------------------------------
# The command line itself


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"argonlink {argonlink.__version__}"


def test_help_teaches_examples_and_exit_statuses() -> None:
    done = run("--help")
    assert done.returncode == 0
    for text in ("examples:", "argonlink serve", "argonlink send", "exit status:", "5  transfer"):
        assert text in done.stdout
    for command in ("serve", "send", "hash-password", "keygen"):
        sub = run(command, "--help")
        assert sub.returncode == 0, command
        assert "exit status:" in sub.stdout


def test_no_option_takes_a_password_value() -> None:
    parser = cli.build_parser()
    parsers = [parser]
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            parsers.extend(choices.values())
    options = [
        opt
        for p in parsers
        for action in p._actions
        for opt in action.option_strings
        if "pass" in opt.lower() or "secret" in opt.lower() or "key" in opt.lower()
    ]
    assert options, "expected --password-file and friends"
    assert all(opt.endswith(("-file", "-env")) for opt in options), options
    assert all(not p.allow_abbrev for p in parsers)


@pytest.mark.parametrize(
    "args",
    [
        ["send", "--password", "hunter2-secret", "127.0.0.1:1", "f"],
        ["send", "--password=hunter2-secret", "127.0.0.1:1", "f"],
        ["serve", "--print", "--password", "hunter2-secret"],
        ["hash-password", "--password", "hunter2-secret"],
    ],
)
def test_a_password_in_argv_is_refused_without_echoing_it(args: list[str]) -> None:
    done = run(*args)
    assert done.returncode == cli.EXIT_USAGE
    assert "hunter2-secret" not in done.stdout + done.stderr
    assert "--password-file" in done.stderr


def test_the_console_script_is_declared() -> None:
    scripts = importlib.metadata.entry_points(group="console_scripts")
    [entry] = [e for e in scripts if e.name == "argonlink"]
    assert entry.value == "argonlink.cli:main"


# --------------------------------------------------------------------------------------------
# per-peer passwords


def test_serve_with_a_peers_file_and_send_with_an_identity(tmp_path: Path, key: Path) -> None:
    made = run("hash-password", "--password-file", str(key), "--kdf", "owasp", "--identity", "db-1")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith('"db-1" = "$argon2id$v=19$m=19456,t=2,p=1$')
    peers = secret_file(tmp_path / "peers.toml", "[peers]\n" + made.stdout.strip())
    with serving("--peers", str(peers), "--print", "--once") as server:
        # No shared password: a client without the identity is refused (exit 3), then db-1
        # gets in with its own.
        anonymous = run("send", server.address, "--password-file", str(key), input=b"x")
        assert anonymous.returncode == 3, anonymous.stderr
        sent = run(
            "send", server.address, "--password-file", str(key), "--identity", "db-1",
            input=b"from db-1\n",
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        server.finish()
    assert server.stdout == "from db-1\n"
    assert "failed (identity" not in server.stderr


def test_peers_file_mistakes_are_usage_errors(tmp_path: Path, key: Path) -> None:
    cases = {
        "plaintext": '[peers]\n"db-1" = "a plaintext password"\n',
        "bad identity": '[peers]\n"db 1" = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA"\n',
        "no table": '"db-1" = "x"\n',
    }
    for name, text in cases.items():
        peers = secret_file(tmp_path / f"{name}.toml", text)
        done = run("serve", "--peers", str(peers), "--print", "--once")
        assert done.returncode == 2, (name, done.stderr)
        assert "peers" in one_error_line(done.stderr), name
    loose = secret_file(tmp_path / "loose.toml", cases["plaintext"])
    loose.chmod(0o644)
    done = run("serve", "--peers", str(loose), "--print", "--once")
    assert done.returncode == 2 and "too open" in done.stderr
    assert run("hash-password", "--identity", "with space").returncode == 2
