"""Config: YAML to frozen dataclasses, and `archiver check-config` on good and bad files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from archiver.config import load_config, parse_duration, parse_size
from archiver.errors import ConfigError
from tests.support.daemon import cli

GOOD = """
state_dir: ./state
providers:
  kie:
    type: kie
    api_key: ${KIE_TEST_KEY}
    give_up_after: 2h
    poll_intervals: ["1s until 10s", "5s"]
  seedream: {type: acedata, service: seedream, api_key: "${ACE_TEST_KEY:-}", empty_success_wait: 2m}
download: {max_bytes: 512MiB, retry_after: 5s}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_and_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIE_TEST_KEY", "kie-SECRET")
    monkeypatch.delenv("ACE_TEST_KEY", raising=False)
    config = load_config(write(tmp_path, GOOD))
    kie = config.providers["kie"]
    assert kie.api_key.reveal() == "kie-SECRET" and "kie-SECRET" not in repr(config)
    assert kie.requests_per_second == 10 and kie.give_up_after == 7200
    assert kie.poll_intervals == ((1.0, 10.0), (5.0, float("inf")))
    assert config.providers["seedream"].requests_per_second == 1
    assert config.providers["seedream"].api_key.reveal() == ""
    # None: the poller's own wait (poller.EMPTY_SUCCESS_WAIT) for a success without URLs.
    assert kie.empty_success_wait is None and config.providers["seedream"].empty_success_wait == 120
    assert config.download.retry_after == 5 and config.download.disk_full_pause == 30
    assert config.download.max_bytes == 512 * 2**20 and config.download.concurrency == 16
    assert config.state_dir == tmp_path / "state"  # relative to the config file
    assert config.inbox.path == tmp_path / "inbox.txt"
    assert config.storage.backend == "local" and config.storage.local.root == tmp_path / "archive"
    assert config.shutdown_grace == 20


@pytest.mark.parametrize("text,expected", [
    ("30s", 30), ("15m", 900), ("2h", 7200), ("1.5", 1.5), (45, 45), ("250ms", 0.25)])
def test_durations(text: object, expected: float) -> None:
    assert parse_duration(text, "k") == expected


@pytest.mark.parametrize("text,expected", [("512MiB", 512 * 2**20), ("4GiB", 4 * 2**30), (1000, 1000), ("10MB", 10**7)])
def test_sizes(text: object, expected: int) -> None:
    assert parse_size(text, "k") == expected


KIE = "providers:\n  kie: {type: kie, api_key: x}\n"
BAD = {
    "missing env var": (
        "providers:\n  kie: {type: kie, api_key: '${ARCHIVER_TEST_UNSET_VAR}'}\n",
        "config: providers.kie.api_key: environment variable ARCHIVER_TEST_UNSET_VAR is not set"),
    "unknown provider type": (
        "providers:\n  mine: {type: midjourney, api_key: x}\n",
        "config: providers.mine.type: unknown provider type 'midjourney'"),
    "bad duration": (
        "providers:\n  kie: {type: kie, api_key: x, give_up_after: soon}\n",
        "config: providers.kie.give_up_after: 'soon' is not a duration"),
    "unknown key": (KIE + "download: {concurrency: 4, parallel: 9}\n", "config: download.parallel: unknown key"),
    "unknown top-level key": ("stat_dir: ./s\n", "config: stat_dir: unknown key"),
    "acedata without service": (
        "providers:\n  a: {type: acedata, api_key: x}\n", "config: providers.a.service:"),
    "bad layout": (
        KIE + "storage: {layout: '{provider}/{nope}.{ext}'}\n", "config: storage.layout: unknown placeholder 'nope'"),
    "bad empty_success_wait": (
        "providers:\n  kie: {type: kie, api_key: x, empty_success_wait: later}\n",
        "config: providers.kie.empty_success_wait: 'later' is not a duration"),
    "bad disk_full_pause": (KIE + "download: {disk_full_pause: -3}\n", "config: download.disk_full_pause:"),
    "retry_after zero": (KIE + "download: {retry_after: 0s}\n", "config: download.retry_after: must be above zero"),
    "bad size": (KIE + "download: {max_bytes: lots}\n", "config: download.max_bytes: 'lots' is not a size"),
    "layout with ..": (
        KIE + "storage: {layout: '../{task_id}/{index}.{ext}'}\n", "config: storage.layout: keys are relative"),
    "layout from /": (
        KIE + "storage: {layout: '/{task_id}/{index}.{ext}'}\n", "config: storage.layout: keys are relative"),
    "no providers": ("state_dir: ./state\n", "config: providers: no provider entries"),
    "empty providers": ("providers: {}\n", "config: providers: no provider entries"),
    "no api_key": ("providers:\n  kie: {type: kie}\n", "config: providers.kie.api_key: missing"),
    "base_url not http": (
        "providers:\n  kie: {type: kie, api_key: x, base_url: 'ftp://api.kie.ai'}\n",
        "config: providers.kie.base_url: 'ftp://api.kie.ai' is not an http(s) URL"),
    "unclosed ${": (
        "providers:\n  kie: {type: kie, api_key: '${KIE_KEY'}\n", "config: providers.kie.api_key: unclosed"),
    "checksum as a string": (
        KIE + "storage: {s3: {checksum: 'false'}}\n", "config: storage.s3.checksum: expected true or false"),
    "addressing_style unknown": (
        KIE + "storage: {s3: {addressing_style: dns}}\n",
        "config: storage.s3.addressing_style: 'dns' is not one of auto, path, virtual"),
    "storage_class unknown": (
        KIE + "storage: {s3: {storage_class: COLD}}\n", "config: storage.s3.storage_class: 'COLD' is not one of"),
    "sse unknown": (KIE + "storage: {s3: {sse: kms}}\n", "config: storage.s3.sse: 'kms' is not one of AES256, aws:kms"),
    "kms key without aws:kms": (
        KIE + "storage: {s3: {sse: AES256, sse_kms_key_id: alias/archive}}\n",
        "config: storage.s3.sse_kms_key_id: only used with storage.s3.sse aws:kms"),
    "profile not a string": (KIE + "storage: {s3: {profile: [a]}}\n", "config: storage.s3.profile: expected a string"),
    "sdk_checksums unknown": (
        KIE + "storage: {s3: {sdk_checksums: never}}\n",
        "config: storage.s3.sdk_checksums: 'never' is not one of when_supported, when_required"),
    "poll_intervals out of order": (
        "providers:\n  kie: {type: kie, api_key: x, poll_intervals: ['10s until 2m', '3s until 30s', '60s']}\n",
        "config: providers.kie.poll_intervals: steps out of order"),
    "poll_intervals speeding up": (
        "providers:\n  kie: {type: kie, api_key: x, poll_intervals: ['10s until 5s', '3s']}\n",
        "config: providers.kie.poll_intervals[1]: '3s' polls more often than the step before ('10s until 5s')"),
    "yaml syntax error": ("providers:\n  kie: {type: kie\n  x: [\n", "config: "),
    "unknown kie api": (
        "providers:\n  k: {type: kie, api_key: x, api: sora}\n", "config: providers.k.api: kie entries only, one of"),
    "api on another type": (
        "providers:\n  r: {type: replicate, api_key: x, api: veo}\n", "config: providers.r.api: kie entries only"),
    "fal without app": ("providers:\n  f: {type: fal, api_key: x}\n", "config: providers.f.app: fal entries name"),
    "fal app with a space": (
        "providers:\n  f: {type: fal, api_key: x, app: 'fal-ai/flux dev'}\n", "config: providers.f.app:"),
    "app on another type": (
        "providers:\n  k: {type: kie, api_key: x, app: fal-ai/flux}\n", "config: providers.k.app: only fal entries"),
    "unknown state backend": (KIE + "state: {backend: mysql}\n", "config: state.backend: 'mysql' is not one of"),
    "postgres without dsn": (KIE + "state: {backend: postgres}\n", "config: state.dsn: required with"),
    "dsn with sqlite": (KIE + "state: {dsn: 'postgresql://db/a'}\n", "config: state.dsn: only used with"),
    "lease too short": (
        KIE + "state: {backend: postgres, dsn: 'postgresql://db/a', lease: 2s}\n", "config: state.lease: must be"),
}


@pytest.mark.parametrize("name", BAD)
async def test_check_config_refuses_with_one_line_naming_the_key(tmp_path: Path, name: str) -> None:
    text, message = BAD[name]
    env = {k: v for k, v in os.environ.items() if k != "ARCHIVER_TEST_UNSET_VAR"}
    code, out, err = await cli(write(tmp_path, text), "check-config", env=env)
    assert code == 2
    assert out == ""
    assert err.startswith(message), err
    assert err.count("\n") == 1


def resolved(out: str) -> str:
    """check-config's YAML: what comes before the warnings and the verdict."""
    return "\n".join(line for line in out.splitlines() if not line.startswith(("warning: ", "config ok")))


async def test_check_config_prints_resolved_config_with_secrets_masked(tmp_path: Path) -> None:
    env = dict(os.environ, KIE_TEST_KEY="kie-SECRET-123", ACE_TEST_KEY="ace-SECRET-456")
    code, out, err = await cli(write(tmp_path, GOOD), "check-config", env=env)
    assert code == 0, err
    assert "SECRET" not in out
    doc = yaml.safe_load(resolved(out))
    assert doc["providers"]["kie"]["api_key"] == doc["providers"]["seedream"]["api_key"] == "***"
    assert doc["state_dir"] == str(tmp_path / "state")


async def test_check_config_is_yaml_in_the_files_shape_with_defaults_marked(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ACE_TEST_KEY"} | {"KIE_TEST_KEY": "kie-SECRET-1"}
    code, out, err = await cli(write(tmp_path, GOOD), "check-config", env=env)
    assert code == 0, err
    lines = resolved(out).splitlines()
    assert len(lines) < 60, "the resolved config should read like the file, not a dump"
    # What the file sets stands plain; what it leaves out is the default, and says so.
    for line in ("    give_up_after: 2h", "    poll_intervals: [1s until 10s, 5s]", "  max_bytes: 512MiB",
                 "    api_key: '***'", "    service: seedream"):
        assert line in lines, (line, lines)
    for line in ("    requests_per_second: 10  # default", "  concurrency: 16  # default",
                 "shutdown_grace: 20s  # default", "  backend: local  # default",
                 "    api_key: ''  # ACE_TEST_KEY not set"):
        assert line in lines, (line, lines)
    assert not any("service" in line for line in lines[lines.index("  kie:"):lines.index("  seedream:")])
    # The same shape as the file: the printed YAML is a config that resolves to the same thing.
    (tmp_path / "again").mkdir()
    again = write(tmp_path / "again", resolved(out))
    code, out2, err = await cli(again, "check-config", env=env)
    assert code == 0, err

    def plain(text: str) -> list[str]:
        return [line.split("  #")[0] for line in resolved(text).splitlines()]

    assert plain(out2) == plain(out)


async def test_the_state_dsn_is_masked_like_a_key(tmp_path: Path) -> None:
    text = KIE + "state: {backend: postgres, dsn: 'postgresql://archiver:pw-SECRET@db.example/a', lease: 90s}\n"
    code, out, err = await cli(write(tmp_path, text), "check-config")
    assert code == 0, err
    assert "SECRET" not in out
    assert yaml.safe_load(resolved(out))["state"] == {"backend": "postgres", "dsn": "***", "lease": "90s"}


async def test_example_config_is_valid(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "config.example.yaml"
    code, out, err = await cli(example, "check-config")
    assert code == 0, err
    doc = yaml.safe_load(resolved(out))
    assert doc["storage"]["backend"] == "local"
    assert {"kie", "maxapi", "acedata", "apipod", "replicate", "fal"} == {e["type"] for e in doc["providers"].values()}


async def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    code, _, err = await cli(tmp_path / "nope.yaml", "status")
    assert code == 2 and "no such file" in err


async def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  kie:\n    type: kie\n   api_key: x\n")
    code, _, err = await cli(path, "check-config")
    assert code == 2
    assert err.startswith(f"config: {path}:4:4: "), err
    assert err.count("\n") == 1


async def test_check_config_ends_with_a_verdict(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ACE_TEST_KEY"} | {"KIE_TEST_KEY": "k"}
    code, out, err = await cli(write(tmp_path, GOOD), "check-config", env=env)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-2] == "warning: providers.seedream.api_key is empty (ACE_TEST_KEY not set)"
    assert lines[-1] == "config ok, with 1 warning(s)"
    code, out, _ = await cli(write(tmp_path, GOOD), "check-config", env=env | {"ACE_TEST_KEY": "a"})
    assert out.splitlines()[-1] == "config ok" and "warning" not in out


def test_max_answer_defaults_to_8_mib_and_takes_a_size(tmp_path: Path) -> None:
    from tests.support.daemon import base_config, write_config

    def load(**extra: object) -> int:
        entry = {"type": "kie", "api_key": "k", **extra}
        path = write_config(tmp_path / "c.yaml", base_config(tmp_path, {"kie": entry}))
        return load_config(path).providers["kie"].max_answer

    assert load() == 8 * 1024**2
    assert load(max_answer="32MiB") == 32 * 1024**2
    with pytest.raises(ConfigError, match=r"providers\.kie\.max_answer"):
        load(max_answer="lots")


def test_s3_options_are_read(tmp_path: Path) -> None:
    text = (KIE + "storage:\n  backend: s3\n  s3: {bucket: b, profile: archive, addressing_style: virtual, "
            "storage_class: GLACIER_IR, sse: 'aws:kms', sse_kms_key_id: alias/archive, "
            "sdk_checksums: when_supported}\n")
    s3 = load_config(write(tmp_path, text)).storage.s3
    assert (s3.profile, s3.addressing_style, s3.storage_class, s3.sse, s3.sse_kms_key_id, s3.sdk_checksums) == (
        "archive", "virtual", "GLACIER_IR", "aws:kms", "alias/archive", "when_supported")
    plain = load_config(write(tmp_path, KIE + "storage: {backend: s3, s3: {bucket: b}}\n")).storage.s3
    assert (plain.profile, plain.addressing_style, plain.storage_class, plain.sse, plain.sdk_checksums) == (None,) * 5
