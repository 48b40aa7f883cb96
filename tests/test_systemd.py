"""The sd_notify client against a real unix datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from archiver.systemd import Notifier


@pytest.fixture
def notify_dir() -> Iterator[str]:
    # tmp_path can pass the 108-byte limit of a unix socket path; /tmp stays short.
    path = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def systemd(notify_dir: str) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket playing systemd's notify socket: (path, socket)."""
    path = os.path.join(notify_dir, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        yield path, sock


def received(sock: socket.socket) -> list[str]:
    """Every datagram queued on `sock`, oldest first."""
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


async def test_notifications_arrive_in_order(
    systemd: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sock = systemd
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = Notifier.from_env()
    assert notifier.enabled
    assert notifier.watchdog_interval() == pytest.approx(0.1)

    notifier.ready()
    notifier.status("12 waiting,\n3 downloading")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(notifier.watchdog_loop(), 0.35)
    notifier.stopping()

    messages = received(sock)
    assert messages[:2] == ["READY=1", "STATUS=12 waiting, 3 downloading"]
    assert messages[-1] == "STOPPING=1"
    pings = messages[2:-1]
    assert set(pings) == {"WATCHDOG=1"}
    assert 2 <= len(pings) <= 4, messages  # nominally 4: at 0, 0.1, 0.2, 0.3 s


async def test_without_notify_socket_everything_is_a_no_op(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    notifier = Notifier.from_env()
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    notifier.ready()
    notifier.status("anything")
    notifier.watchdog()
    notifier.stopping()
    await asyncio.wait_for(notifier.watchdog_loop(), 0.05)


async def test_watchdog_meant_for_another_process_is_ignored(
    systemd: tuple[str, socket.socket],
) -> None:
    path, sock = systemd
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    notifier = Notifier.from_env(env)
    assert notifier.watchdog_interval() is None
    await asyncio.wait_for(notifier.watchdog_loop(), 0.05)
    assert received(sock) == []

    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier.from_env(env).watchdog_interval() == pytest.approx(0.1)
    env["WATCHDOG_USEC"] = "soon"
    assert Notifier.from_env(env).watchdog_interval() is None


def test_abstract_socket() -> None:
    name = f"archiver-test-{secrets.token_hex(6)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        Notifier("@" + name).ready()
        assert received(sock) == ["READY=1"]


def test_vanished_socket_warns_once_and_never_raises(
    notify_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = os.path.join(notify_dir, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
    notifier = Notifier(path, 200_000)
    with caplog.at_level(logging.DEBUG, logger="archiver.systemd"):
        notifier.ready()  # the file is there but nobody listens: ECONNREFUSED
        os.unlink(path)
        notifier.watchdog()  # the file is gone: ENOENT
        notifier.stopping()
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG]


ROOT = Path(__file__).parent.parent
# Upper-case words the README and docs use that are not environment variables (provider status
# words, a placeholder, a flag), and variables only the test suite reads.
NOT_FOR_THE_DAEMON = {"VAR", "TASK_ID", "TEXT_SUCCESS", "FIRST_SUCCESS", "CALLBACK_EXCEPTION", "SERVICE_RESULT",
                      "O_APPEND",
                      "ARCHIVER_CRASH_SEED", "ARCHIVER_PG_CRASH_SEED", "ARCHIVER_E2E_SEED", "ARCHIVER_RATE_SEED",
                      "DEFAULT_POLL_INTERVALS",  # a Python name in CONTRIBUTING.md's example
                      "STANDARD_IA", "INTELLIGENT_TIERING", "GLACIER_IR",  # S3 storage classes
                      "CONTENT_MODERATION",  # a provider's failure code (docs/testing.md)
                      "DOCUMENTED_FAILURES", "PROVIDER_TYPES"}  # names in archiver.testing


def test_the_env_example_names_every_variable_the_config_and_readme_do() -> None:
    example = (ROOT / "systemd" / "archiver.env.example").read_text()
    docs = ["README.md", "CONTRIBUTING.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
    texts = [(ROOT / name).read_text() for name in ("config.example.yaml", *docs)]
    referenced = {m for text in texts for m in re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text)} - NOT_FOR_THE_DAEMON
    prose = "\n".join(texts[1:])
    named = set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+_?(?![\w])", prose)) - NOT_FOR_THE_DAEMON
    assert {"KIE_API_KEY", "FAL_KEY", "ARCHIVER_DSN", "AWS_ACCESS_KEY_ID"} <= referenced | named  # the grep works
    # A ${VAR} of the config is one to fill in: a KEY= line of its own (perhaps commented out).
    lines = {re.sub(r"^#", "", line).partition("=")[0] for line in example.splitlines() if "=" in line}
    assert sorted(referenced - lines) == [], "add a VAR= line to systemd/archiver.env.example"
    mentioned = set(re.findall(r"\b[A-Z][A-Z0-9_]*\b", example))
    assert sorted(named - mentioned) == [], "name it in systemd/archiver.env.example (or in NOT_FOR_THE_DAEMON)"
    assert "goes through boto3" in example and "s3rest.py" not in example
