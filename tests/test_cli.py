"""The `archiver` command beside a running daemon: the lock, status and show as text, add, help."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from archiver.cli import parser
from archiver.state import SqliteState
from archiver.testing import FakeApis, FakeTask, media_bytes
from tests.support.daemon import DaemonProcess, base_config, cli, write_config
from tests.support.servers import serve

API_KEY = "kie-SECRET-c11c11"
LONG_BAD_LINE = "nope " + "x" * 200


async def shell(command: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_shell(command, stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def into_closed_pipe(config: Path, command: list[str], env: dict[str, str]) -> str:
    """Run a command whose stdout is a pipe nobody reads any more; return its stderr."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "archiver", "-c", str(config), *command,
            stdout=write, stderr=asyncio.subprocess.PIPE, env=env)
    finally:
        os.close(write)
    _, err = await proc.communicate()
    return err.decode()


async def test_the_cli_beside_a_running_daemon(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    fake.add(FakeTask("kie", "done-1", ["success"], [media_bytes("png", 2048, "d")]))
    fake.add(FakeTask("kie", "slow-1", ["running"]))
    env = dict(os.environ, KIE_API_KEY=API_KEY)
    async with serve(fake.app()) as base:
        fake.base = base
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {
            "kie": {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": base, "poll_intervals": ["0.2s"]},
            "wrongkey": {"type": "kie", "api_key": "not-the-key", "base_url": base},
        }))
        (tmp_path / "inbox.txt").write_text(f"kie done-1\nkie slow-1 project=poster\nwrongkey w-1\n{LONG_BAD_LINE}\n")
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
        await daemon.start()
        try:
            await daemon.wait_for(lambda s: s["counts"]["archived"] == 1 and "wrongkey" in s["health"])
            assert daemon.proc is not None
            pid = daemon.proc.pid

            # A second daemon on the same state DB refuses at once, naming the first.
            began = time.monotonic()
            code, _, err = await cli(config, "run", env=env)
            assert code == 1 and time.monotonic() - began < 10
            assert f"another archiver (pid {pid}) is running on {tmp_path / 'state' / 'archiver.db'}" in err

            code, out, err = await cli(config, "status", env=env)
            assert code == 0, err
            lines = out.splitlines()
            assert re.fullmatch(rf"daemon: running \(pid {pid}, up \d+s\)", lines[0]), lines[0]
            assert lines[1] == "tasks: queued 0  polling 2  downloading 0  archived 1  failed 0"
            assert any(line.startswith("wrongkey: unauthorised (wrongkey: HTTP 401") and "stale" not in line
                       for line in lines)
            assert "in flight (newest first):" in lines
            assert "rejected inbox lines (newest first):" in lines
            rejected = lines[-1]
            assert re.match(r"  \d{4}-\d\d-\d\dT[\d:.]+Z line 4: unknown provider 'nope'", rejected), rejected
            assert rejected.endswith(": " + LONG_BAD_LINE[:79] + "…")

            code, out, _ = await cli(config, "add", "kie", "done-1", env=env)
            assert (code, out) == (0, "already known: kie done-1 (archived)\n")
            code, out, _ = await cli(config, "add", "kie", "new-1", "--label", "a=b", env=env)
            assert (code, out) == (0, "queued kie new-1\n")
            assert (tmp_path / "inbox.txt").read_text().endswith("kie new-1 a=b\n")

            code, out, err = await cli(config, "show", "kie", "slow-1", env=env)
            assert code == 0, err
            head = out.splitlines()
            assert head[0] == "kie slow-1: polling"
            assert head[1] == "labels: project=poster"
            assert re.fullmatch(r"polls: \d+", head[2]) and int(head[2].split()[1]) >= 1
            code, out, _ = await cli(config, "show", "wrongkey", "w-1", env=env)
            assert "last error: wrongkey: HTTP 401: the API key was refused" in out

            code, _, err = await cli(config, "retry", "kie", "done-1", env=env)
            assert code == 0, err

            # A reader that went away (`| head -1`) is no error of ours.
            for command in (["status"], ["status", "--json"], ["show", "kie", "slow-1"], ["check-config"]):
                assert await into_closed_pipe(config, command, env) == ""
            code, out, err = await shell(f"{sys.executable} -m archiver -c {config} status | head -1", env)
            assert err == "" and out.startswith("daemon: running")
        finally:
            assert await daemon.stop() == 0

    log = (tmp_path / "daemon.log").read_text()
    assert re.search(r"SIGTERM: taking no new work; finishing \d+ downloads? in flight\n", log), log[-500:]
    assert re.search(r"stopped: \d+ downloads finished, \d+ resume on next start\n$", log), log[-500:]
    code, out, _ = await cli(config, "status", env=env)
    assert out.splitlines()[0] == "daemon: not running"
    assert "wrongkey: unauthorised" in out and "stale: from before the daemon's start" in out
    code, out, _ = await cli(config, "status", "--json", env=env)
    report = json.loads(out)
    assert set(report) == STATUS_KEYS
    assert report["daemon"] == {"running": False}
    assert await daemon.status() == report, "the tests' in-process status differs from the command's"
    assert report["health"]["wrongkey"]["stale"] is True
    assert report["inbox"]["unread"] == []  # the daemon read every line


@pytest.mark.parametrize("args,message", [
    (("show", "kei", "abc"), "show: provider 'kei' is not configured (configured: kie)"),
    (("show", "kie", "bad id"), "show: 'bad id' is not a valid task ID"),
    (("add", "kei", "abc"), "add: provider 'kei' is not configured"),
])
async def test_show_and_add_name_the_real_problem(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {"kie": {"type": "kie", "api_key": "x"}}))
    code, _, err = await cli(config, *args)
    assert code == 2 and err.startswith(message) and "archiver add" not in err, err


async def test_show_suggests_add_only_for_a_task_it_could_add(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {"kie": {"type": "kie", "api_key": "x"}}))
    await SqliteState(tmp_path / "state" / "archiver.db").close()
    code, _, err = await cli(config, "show", "kie", "abc")
    assert code == 1 and "add it with: archiver add kie abc" in err


async def test_version_and_help_for_every_command_and_option(tmp_path: Path) -> None:
    code, out, _ = await cli(tmp_path / "none.yaml", "--version")
    assert code == 0 and re.fullmatch(r"archiver \d+\.\d+\.\d+\n", out)
    top = parser()
    commands = next(a for a in top._actions if a.dest == "command")
    for name, sub in commands.choices.items():
        assert sub.description, f"{name} has no description"
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    for action in top._actions:
        assert action.help, action.dest


STATUS_KEYS = {"backend", "daemon", "daemons", "counts", "in_flight", "recent_failures", "rejected_lines", "health",
               "inbox"}


async def test_status_and_show_before_the_first_run(tmp_path: Path) -> None:
    """After `add`, before any daemon: an empty state, the inbox lines not read yet, no state DB made."""
    config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {"kie": {"type": "kie", "api_key": "x"}}))
    for args in (["kie", "first-1", "--label", "project=poster"], ["kie", "second-2"]):
        code, out, err = await cli(config, "add", *args)
        assert code == 0 and out.startswith("queued"), err
    with (tmp_path / "inbox.txt").open("a") as f:
        f.write("# a comment\nnope bad-1\nkie half-writ")  # the last line is not finished yet

    code, out, err = await cli(config, "status")
    assert code == 0, err
    assert out.splitlines()[:3] == [
        f"state: none yet at {tmp_path / 'state' / 'archiver.db'} (the daemon has not run with this config)",
        "daemon: not running", "tasks: queued 0  polling 0  downloading 0  archived 0  failed 0"]
    assert out.splitlines()[3:] == [
        "inbox lines not read yet (oldest first):", "  line 1: kie first-1 project=poster", "  line 2: kie second-2",
        "  line 4: nope bad-1  (to be rejected: unknown provider 'nope' (configured: kie))"]

    code, out, err = await cli(config, "status", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert set(report) == STATUS_KEYS
    assert report["daemon"] == {"running": False} and report["in_flight"] == [] and report["health"] == {}
    assert report["inbox"]["unread"][0] == {"line": 1, "text": "kie first-1 project=poster", "provider": "kie",
                                            "task_id": "first-1", "labels": {"project": "poster"}, "error": None}
    assert report["inbox"]["unread_bytes"] == (tmp_path / "inbox.txt").stat().st_size

    code, out, err = await cli(config, "show", "kie", "first-1")
    assert (code, out) == (0, "kie first-1: in the inbox (line 1), not read by the daemon yet\n"
                              "labels: project=poster\n"), err
    code, out, err = await cli(config, "show", "kie", "second-2", "--json")
    assert code == 0 and json.loads(out)["state"] == "inbox" and json.loads(out)["inbox_line"] == 2, err
    code, _, err = await cli(config, "show", "kie", "half-writ")
    assert code == 1 and "no task kie half-writ (add it with: archiver add kie half-writ)" in err
    assert not (tmp_path / "state").exists(), "status or show made a state DB"


async def test_show_counts_every_poll_and_retry_says_when_in_utc(tmp_path: Path) -> None:
    """A task asked twice (running, then failed) shows polls: 2; retry names the moment in UTC."""
    fake = FakeApis(API_KEY)
    task = fake.add(FakeTask("kie", "fails-1", ["running", "fail"], fail_code="500", fail_msg="boom"))
    env = dict(os.environ, KIE_API_KEY=API_KEY)
    async with serve(fake.app()) as base:
        fake.base = base
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {
            "kie": {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": base, "poll_intervals": ["0.2s"]}}))
        (tmp_path / "inbox.txt").write_text("kie fails-1\n")
        code, _, err = await cli(config, "run", "--burst", env=env)
        assert code == 0, err
    assert task.polls == 2
    code, out, err = await cli(config, "show", "kie", "fails-1", env=env)
    assert code == 0, err
    assert out.splitlines()[2] == "polls: 2", out
    code, out, err = await cli(config, "retry", "kie", "fails-1", env=env)
    assert code == 0, err
    assert re.fullmatch(r"1 task\(s\) queued again at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\n", out), out


async def test_retry_without_a_task_id_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {"kie": {"type": "kie", "api_key": "x"}}))
    code, out, err = await cli(config, "retry", "kie")
    assert (code, out) == (2, ""), err
    assert err == "retry: give PROVIDER TASK_ID, or --failed\n"
