"""The `http` section and each entry's `callbacks` (docs/http-api.md), from YAML to dataclasses."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiver.config import load_config
from archiver.errors import ConfigError
from tests.support.daemon import cli

BASE = "providers:\n  kie: {type: kie, api_key: k%s}\n"


def load(tmp_path: Path, text: str, entry: str = "") -> object:
    path = tmp_path / "config.yaml"
    path.write_text(BASE % entry + text)
    return load_config(path)


def test_http_is_off_unless_listen_is_set(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config.http is None and config.providers["kie"].callbacks is None  # type: ignore[attr-defined]
    assert load(tmp_path, "http: {token: t}\n").http is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(("listen", "host", "port"), [
    ("127.0.0.1:8790", "127.0.0.1", 8790), ("[::1]:9000", "::1", 9000), (":8790", "0.0.0.0", 8790),
])
def test_listen(tmp_path: Path, listen: str, host: str, port: int) -> None:
    http = load(tmp_path, f"http: {{listen: '{listen}', token: s3cret}}\n").http  # type: ignore[attr-defined]
    assert (http.host, http.port, http.storage_grace) == (host, port, 300.0)
    assert http.token.reveal() == "s3cret" and "s3cret" not in repr(http)


def test_callbacks(tmp_path: Path) -> None:
    entry = load(tmp_path, "", ", callbacks: {secret: hmac-key, adopt: true}").providers["kie"]  # type: ignore
    assert entry.callbacks.secret.reveal() == "hmac-key" and entry.callbacks.adopt is True
    assert "hmac-key" not in repr(entry)


@pytest.mark.parametrize(("text", "entry", "key"), [
    ("http: {listen: 8790}\n", "", "http.listen"),
    ("http: {listen: 'localhost:99999'}\n", "", "http.listen"),
    ("http: {listen: 'localhost:80', storage_grace: soon}\n", "", "http.storage_grace"),
    ("http: {listen: 'localhost:80', tokn: x}\n", "", "http.tokn"),
    ("", ", callbacks: {secret: s, adopt: yes-please}", "providers.kie.callbacks.adopt"),
    ("", ", callbacks: {secret: s, sign: hmac}", "providers.kie.callbacks.sign"),
])
def test_bad_values_name_their_key(tmp_path: Path, text: str, entry: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^config: {key}: "):
        load(tmp_path, text, entry)


async def test_check_config_masks_the_token_and_the_secret(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BASE % ", callbacks: {secret: hmac-KEY-1}" + "http: {listen: ':8790', token: tok-SECRET-2}\n")
    code, out, err = await cli(path, "check-config")
    assert code == 0, err
    assert "hmac-KEY-1" not in out and "tok-SECRET-2" not in out
    assert "  listen: 0.0.0.0:8790" in out.splitlines()
