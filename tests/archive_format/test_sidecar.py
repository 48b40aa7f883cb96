"""Secrets never reach the archive: one redaction rule for every provider's JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from archiver.archive_format.redaction import REDACTED, is_secret_field, redact_secrets
from archiver.testing import FakeApis, FakeTask, media_bytes
from tests.support.daemon import DaemonProcess, base_config, write_config
from tests.support.servers import serve

API_KEY = "key-SECRET-5ec5ec"


@pytest.mark.parametrize("name", [
    "callBackUrl", "callback_url", "webhook", "webhook_url", "api_key", "apiKey", "X-Api-Key", "access_token",
    "sessionToken", "client_secret", "Authorization", "password", "keys"])
def test_secret_field_names(name: str) -> None:
    assert is_secret_field(name)


@pytest.mark.parametrize("name", ["prompt", "model", "keyframes", "monkey", "image_url", "tokenizer_version"])
def test_ordinary_field_names(name: str) -> None:
    assert not is_secret_field(name)


def test_redaction_reaches_into_nested_json_and_json_strings() -> None:
    param = json.dumps({"model": "m", "callBackUrl": "https://h/cb?token=S1", "input": {"prompt": "p"}})
    response = {"data": {"param": param, "items": [{"request": {"callback_url": "https://h/S2"}}],
                         "auth": {"token": "S3"}, "resultJson": "{\"resultUrls\": [\"https://cdn/x\"]}"}}
    cleaned = redact_secrets(response)
    assert not any(s in json.dumps(cleaned) for s in ("S1", "S2", "S3"))
    assert json.loads(cleaned["data"]["param"]) == {"model": "m", "callBackUrl": REDACTED, "input": {"prompt": "p"}}
    assert cleaned["data"]["resultJson"] == response["data"]["resultJson"], "untouched strings stay as returned"
    assert redact_secrets({"callback_url": None}) == {"callback_url": None}


async def test_no_stored_json_holds_a_planted_secret(tmp_path: Path) -> None:
    """Every provider echoes a callback URL with a secret in it; no sidecar or _failed record keeps it."""
    secret = "PLANTED-" + os.urandom(6).hex()
    callback = f"https://hooks.example.com/{secret}/done?token={secret}"
    fake = FakeApis(API_KEY)
    png = media_bytes("png", 1500, "r")
    tasks = [FakeTask("kie", "k-ok", ["success"], [png], callback=callback),
             FakeTask("kie", "k-bad", ["fail"], fail_code="500", fail_msg="boom", callback=callback),
             FakeTask("maxapi", "m-ok", ["success"], [png], callback=callback),
             FakeTask("maxapi", "m-bad", ["fail"], fail_msg="CONTENT_MODERATION", callback=callback),
             FakeTask("acedata", "a-ok", ["success"], [png], where="seedream", callback=callback),
             FakeTask("acedata", "a-bad", ["fail"], fail_code="forbidden", fail_msg="no", where="seedream",
                      callback=callback)]
    for task in tasks:
        fake.add(task)
    env = dict(os.environ, TEST_API_KEY=API_KEY)
    async with serve(fake.app()) as base:
        fake.base = base
        fast = {"base_url": base, "api_key": "${TEST_API_KEY}", "poll_intervals": ["0.2s"]}
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {
            "kie": {"type": "kie", **fast}, "maxapi": {"type": "maxapi", **fast},
            "seedream": {"type": "acedata", "service": "seedream", **fast}}))
        entry = {"kie": "kie", "maxapi": "maxapi", "acedata": "seedream"}
        (tmp_path / "inbox.txt").write_text("".join(f"{entry[t.provider_type]} {t.task_id}\n" for t in tasks))
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
        await daemon.start()
        try:
            await daemon.wait_for(lambda s: s["counts"]["archived"] == 3 and s["counts"]["failed"] == 3)
        finally:
            assert await daemon.stop() == 0
    stored = sorted(p for p in (tmp_path / "archive").rglob("*.json") if "_index" not in p.parts)  # not the index
    assert len(stored) == 6
    for path in stored:
        text = path.read_text()
        assert secret not in text, path
        assert REDACTED in text, f"{path}: the callback field should be there, redacted"
    assert secret not in (tmp_path / "daemon.log").read_text()


def test_urls_in_a_provider_answer_lose_their_query_and_data_uris_their_payload() -> None:
    signed = "https://cdn.example/out/0.png?X-Amz-Signature=abc123&X-Amz-Expires=3600"
    inline = "data:image/png;base64," + "QUFB" * 1000
    answer = {"resultJson": json.dumps({"resultUrls": [signed, inline]}), "url": "https://u:pw@cdn.example/a#frag"}
    clean = redact_secrets(answer)
    assert json.loads(clean["resultJson"])["resultUrls"] == [
        "https://cdn.example/out/0.png", "data:image/png;base64,… (3.9 KiB, elided)"]
    assert clean["url"] == "https://cdn.example/a"
