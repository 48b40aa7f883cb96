"""`archiver verify` finds each kind of damage a test plants, on local disk and on moto S3."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from archiver.state import open_state
from archiver.verify import Verifier, fix
from tests.browse.conftest import World, make_world
from tests.support.daemon import cli
from tests.support.postgres import StateBackend

Raw = tuple[Callable[[str, bytes], None], Callable[[str], None]]


@pytest.fixture(params=["local", "s3"])
async def damaged(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[World, dict[str, str]]]:
    """A world with one asset of each kind of damage, planted behind the archiver's back."""
    if request.param == "local":
        world = await make_world(tmp_path, "local", tasks=40)
        root = world.config.storage.local.root

        def put(key: str, body: bytes) -> None:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(body)
            os.utime(root / key, (time.time() - 7200, time.time() - 7200))  # two hours old

        def delete(key: str) -> None:
            (root / key).unlink()
    else:
        client, bucket = request.getfixturevalue("s3_client"), request.getfixturevalue("s3_bucket")
        world = await make_world(tmp_path, "s3", {"bucket": bucket, "prefix": "ai/", "region": "us-east-1",
                                                  "endpoint_url": request.getfixturevalue("moto_server")}, tasks=40)

        def put(key: str, body: bytes) -> None:
            client.put_object(Bucket=bucket, Key="ai/" + key, Body=body)

        def delete(key: str) -> None:
            client.delete_object(Bucket=bucket, Key="ai/" + key)

    keys = [a["key"] for a in world.made.assets]
    body = {k: world.made.objects[k][0] for k in keys}
    plan = {"missing_asset": keys[0], "changed": keys[1], "truncated": keys[2], "bad_sidecar": keys[3] + ".json",
            "sidecar_gone": keys[4], "no_sidecar": "stray/upload/00.png"}
    delete(keys[0])
    flipped = bytearray(body[keys[1]])
    flipped[len(flipped) // 2] ^= 0x01
    put(keys[1], bytes(flipped))
    put(keys[2], body[keys[2]][: len(body[keys[2]]) // 2])
    put(keys[3] + ".json", b'{"schema": "archiver.asset/1", "key": ')
    delete(keys[4] + ".json")
    put("stray/upload/00.png", b"\x89PNG\r\n\x1a\nstray")
    yield world, plan
    await world.storage.close()


async def verify(world: World, **kw: Any) -> Any:
    state = await open_state(world.config)
    try:
        age = kw.pop("orphan_age", 0.0 if world.config.storage.backend == "s3" else 3600.0)
        return await Verifier(world.storage, world.config.storage.layout, state=state, orphan_age=age, **kw).run()
    finally:
        await state.close()


async def test_finds_every_kind_of_damage(damaged: tuple[World, dict[str, str]]) -> None:
    world, plan = damaged
    for deep in (False, True):
        report = await verify(world, deep=deep)
        assert {(p.kind, p.key) for p in report.problems} == {(kind, key) for kind, key in plan.items()}, deep
        assert report.assets == len(world.made.assets) - 5  # the intact ones, each size and digest checked
    by_kind = {p.kind: p for p in report.problems}
    assert by_kind["truncated"].provider and by_kind["truncated"].task_id  # from the sidecar
    assert by_kind["sidecar_gone"].task_id == next(a["task_id"] for a in world.made.assets
                                                   if a["key"] == plan["sidecar_gone"])
    # Every asset counts, the damaged ones and the stray upload too, not only those that passed.
    assert report.checked == len(world.made.assets) + 1
    assert report.summary().startswith(f"checked {len(world.made.assets) + 1} assets (")
    assert report.summary().endswith(": 6 problems")
    if world.config.storage.backend == "s3":  # plain verify could trust the store's own SHA-256 here
        intact = world.made.assets[5]["key"]
        info = await world.storage.stat(intact)
        assert info.checksum == hashlib.sha256(world.made.objects[intact][0]).hexdigest()


async def test_clean_archive_and_since(damaged: tuple[World, dict[str, str]]) -> None:
    world, plan = damaged
    days = {a["key"]: a["day"] for a in world.made.assets}
    report = await verify(world, since="2026-09-02")
    found = {p.key for p in report.problems}
    assert found == {k for k in plan.values() if days.get(k.removesuffix(".json"), "9999") >= "2026-09-02"}
    assert "stray/upload/00.png" in found  # a key without a layout date counts by its upload time


async def test_fresh_asset_without_sidecar_is_not_a_problem(tmp_path: Path) -> None:
    """The daemon writes the sidecar right after the asset: a young orphan is work in progress."""
    world = await make_world(tmp_path, "local", tasks=5)
    (world.config.storage.local.root / "kie/2026/09/01/new/00.png").parent.mkdir(parents=True)
    (world.config.storage.local.root / "kie/2026/09/01/new/00.png").write_bytes(b"x")
    assert (await verify(world)).problems == []


async def test_fix(tmp_path: Path, state_backend: StateBackend) -> None:
    world = await make_world(tmp_path, "local", tasks=40, state=state_backend)
    root = world.config.storage.local.root
    keys = [a["key"] for a in world.made.assets]
    (root / keys[0]).write_bytes(b"damaged")
    (root / (keys[1] + ".json")).write_bytes(b"{broken")
    (root / "stray.png").write_bytes(b"x")
    os.utime(root / "stray.png", (0, 0))
    report = await verify(world)
    state = await open_state(world.config)
    try:
        await fix(report.problems, state, world.config, world.storage)
        notes = {p.key: p.fix for p in report.problems}
        assert notes[keys[0]].startswith("queued again")
        assert notes[keys[1] + ".json"] == "sidecar written again from the state DB"
        assert notes["stray.png"].startswith("not fixed")
        task = await state.find(world.made.assets[0]["provider"], world.made.assets[0]["task_id"])
        assert task is not None and task.state == "queued"
        assert [a.state for a in await state.assets(task.pk) if a.key == keys[0]] == ["pending"]
        assert (await state.history(task.pk))[-1]["note"] == "verify --fix: truncated"
    finally:
        await state.close()
    again = {(p.kind, p.key) for p in (await verify(world)).problems}
    assert ("bad_sidecar", keys[1] + ".json") not in again  # rewritten, and it checks out
    rewritten = json.loads((root / (keys[1] + ".json")).read_bytes())
    assert rewritten["key"] == keys[1] and rewritten["sha256"] == json.loads(
        world.made.objects[keys[1] + ".json"][0])["sha256"]


async def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    world = await make_world(tmp_path, "local", tasks=10)
    code, out, err = await cli(world.config_path, "verify")
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith(f"checked {len(world.made.assets)} assets (")
    assert out.strip().endswith("no problems")
    key = world.made.assets[0]["key"]
    (world.config.storage.local.root / key).write_bytes(b"\x89PNG changed")
    code, out, _ = await cli(world.config_path, "verify", "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False and [(p["kind"], p["key"]) for p in doc["problems"]] == [("truncated", key)]
    code, _, err = await cli(world.config_path, "verify", "--since", "last tuesday")
    assert code == 2 and "--since" in err


async def test_one_asset_one_problem_in_the_singular(tmp_path: Path) -> None:
    world = await make_world(tmp_path, "local", tasks=1, days=1)
    [asset] = world.made.assets
    (world.config.storage.local.root / asset["key"]).write_bytes(b"\x89PNG changed")
    code, out, _ = await cli(world.config_path, "verify")
    assert code == 1
    assert re.fullmatch(r"checked 1 asset \(\d+ B\): 1 problem", out.strip().splitlines()[-1]), out
