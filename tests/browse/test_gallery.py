"""The gallery at scale, in a real headless Chromium: search through the index, the date jump, placeholders, icons."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from archiver.archive_format.search import MANIFEST_KEY, asset_tokens, read_manifest
from archiver.browse.index import IndexLoop
from archiver.browse.search_index import SearchWriter
from archiver.browse.serve import app
from tests.browse.conftest import World, found_by, index_world, make_thumbnails, make_world, search_postings
from tests.browse.test_index import archive_one
from tests.support.browser import chromium, record_webm, recorder, settled, to_the_end, visible_keys
from tests.support.media import scene_png
from tests.support.servers import serve

START = dt.date(2026, 9, 1)
DAYS = 40


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as b:
        yield b


@pytest.fixture
async def many_days(tmp_path: Path) -> AsyncIterator[World]:
    """120 tasks over 40 days, indexed, without thumbnails (the search and the dates are what is tested)."""
    world = await make_world(tmp_path, "local", tasks=120, days=DAYS, start=START)
    await index_world(world)
    yield world
    await world.storage.close()


def own_word(world: World, days_in: int) -> dict[str, Any]:
    """An asset of START + `days_in` whose prompt ends in its task's number, "#42": with two digits, a word of
    its own."""
    day = str(START + dt.timedelta(days=days_in))
    return next(a for a in world.made.assets if a["day"] == day and a["task_id"] >= "t000010")


async def opened(browser: Any, base: str) -> tuple[Any, list[str]]:
    """A page on the gallery at 1280×900, its first screen drawn, and the paths it has asked for."""
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    asked = recorder(page, base)
    await page.goto(base + "/")
    await settled(page)
    return page, asked


def day_files(asked: list[str]) -> set[str]:
    return {p.removeprefix("/_index/days/").removesuffix(".json") for p in asked if p.startswith("/_index/days/")}


async def test_a_search_finds_an_asset_many_days_back_and_reads_no_other_day(
        tmp_path: Path, browser: Any, many_days: World) -> None:
    made = many_days.made
    target = own_word(many_days, 2)  # 37 days back
    async with serve(app(many_days.storage)) as base:
        page, asked = await opened(browser, base)
        before = day_files(asked)
        assert before and target["day"] not in before  # the first screen holds only the newest days

        await page.fill("#q", target["prompt"])
        await settled(page)
        expected = [a["key"] for a in made.assets if found_by(target["prompt"], a)]
        assert sorted(await visible_keys(page)) == sorted(expected) and target["key"] in expected
        assert {a["day"] for a in made.assets if a["key"] in expected} == {target["day"]}
        assert day_files(asked) - before == {target["day"]}  # only the day that holds the match was read
        shards = [p for p in asked if p.startswith("/_index/search/") and not p.endswith("manifest.json")]
        assert 0 < len(shards) <= len(target["prompt"].split())
        matches = f"{len(expected)} match{'es' if len(expected) > 1 else ''} on 1 day · {len(expected)} shown"
        assert (await page.text_content("#stats") or "").startswith(matches)
        await page.screenshot(path=str(tmp_path / "search.png"))

        # A common word: newest first, the first screen reads only the days it shows; scrolling reads on.
        await page.fill("#q", "lighthouse")
        await settled(page)
        shown = await page.eval_on_selector_all("#assets h2", "hs => hs.map(h => h.textContent)")
        assert shown == sorted(shown, reverse=True)
        holding = {a["day"] for a in made.assets if found_by("lighthouse", a)}
        first_screen = day_files(asked) - before - {target["day"]}
        print(f"lighthouse: {len(holding)} days hold a match, the first screen read {len(first_screen)} more")
        assert first_screen < holding  # only days that hold one, and not all of them
        await to_the_end(page)
        assert holding <= day_files(asked) and not day_files(asked) - before - holding - {target["day"]}
        assert sorted(await visible_keys(page)) == sorted(a["key"] for a in made.assets if found_by("lighthouse", a))
        assert asked.count("/_index/search/manifest.json") == 1  # read once, kept for the next search

        # The selects narrow what the index found.
        await page.select_option("#f-label", "project=ad")
        await to_the_end(page)
        assert sorted(await visible_keys(page)) == sorted(
            a["key"] for a in made.assets if found_by("lighthouse", a) and a["labels"]["project"] == "ad")


async def test_a_search_finds_a_word_only_in_today_and_one_many_days_back(
        tmp_path: Path, browser: Any, many_days: World) -> None:
    """Today's words are in no shard (the loop folds a day in once it is closed): the page matches today's
    day file itself, puts its matches first, then the shards' from 30 and more days back."""
    today_key = await archive_one(many_days.config, "today-task")  # prompt "fresh", model seedream-4.5
    loop = IndexLoop(many_days.config, many_days.storage)  # the daemon's round: today's day file, no shard
    await loop.round()
    loop.close()
    yesterday = str(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1))
    assert read_manifest(await many_days.storage.get(MANIFEST_KEY)).through == yesterday
    assert "fresh" not in await search_postings(many_days.storage)
    # As a fold cut off before its manifest: the shards hold today's entries, `through` is still yesterday.
    # The page must not show today's asset twice (from the day file and from the shards).
    today = str(dt.datetime.now(dt.UTC).date())
    [fresh] = json.loads(await many_days.storage.get(f"_index/days/{today}.json"))["assets"]
    writer = SearchWriter(many_days.storage)
    assert await writer.load()
    await writer.apply({t: {today: [0]} for t in asset_tokens(fresh)})
    assert (await search_postings(many_days.storage))["fresh"] == {today: [0]} and writer.through == yesterday
    made, old = many_days.made, own_word(many_days, 3)  # 36 days back
    async with serve(app(many_days.storage)) as base:
        page, asked = await opened(browser, base)
        await page.fill("#q", "fresh")  # only in today's asset
        await settled(page)
        assert await visible_keys(page) == [today_key]
        assert asked.count(f"/_index/days/{today}.json") == 1  # loaded for the first screen, then reused

        await page.fill("#q", old["prompt"])  # 30 and more days back: through its shards
        await settled(page)
        expected = [a["key"] for a in made.assets if found_by(old["prompt"], a)]
        assert sorted(await visible_keys(page)) == sorted(expected) and old["key"] in expected

        await page.fill("#q", "fresh " + old["prompt"])  # every word must match: nothing does
        await settled(page)
        assert await visible_keys(page) == []

        await page.fill("#q", "seedream")  # in both: today's match first, then the shards', newest first
        await to_the_end(page)
        keys = await visible_keys(page)
        older = [a for a in made.assets if found_by("seedream", a)]
        assert keys[0] == today_key and sorted(keys[1:]) == sorted(a["key"] for a in older) and len(older) > 10
        shown = await page.eval_on_selector_all("#assets h2", "hs => hs.map(h => h.textContent)")
        assert shown == sorted(shown, reverse=True) and shown[0] > yesterday
        await page.screenshot(path=str(tmp_path / "today.png"))


async def test_the_date_jump_shows_that_day_then_older_ones_and_leads_back(
        tmp_path: Path, browser: Any, many_days: World) -> None:
    made, date = many_days.made, str(START + dt.timedelta(days=9))
    day = json.loads(await many_days.storage.get(f"_index/days/{date}.json"))
    async with serve(app(many_days.storage)) as base:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(base + "/")
        await settled(page)
        dates = await page.eval_on_selector_all("#jump option", "os => os.map(o => o.value)")
        assert dates == ["", *sorted({a["day"] for a in made.assets} | {f["day"] for f in made.failed}, reverse=True)]
        assert await page.is_hidden("#newest")

        await page.select_option("#jump", date)
        await settled(page)
        headings = await page.eval_on_selector_all("#assets h2", "hs => hs.map(h => h.textContent)")
        assert headings[0] == date and all(h <= date for h in headings)
        keys = await visible_keys(page)
        assert keys[:len(day["assets"])] == [a["key"] for a in day["assets"]]  # that day's assets, newest first
        assert await page.evaluate("scrollY") == 0
        await page.screenshot(path=str(tmp_path / "jump.png"))
        await to_the_end(page)
        assert sorted(await visible_keys(page)) == sorted(a["key"] for a in made.assets if a["day"] <= date)

        await page.click("#newest")
        await settled(page)
        newest = await page.eval_on_selector("#assets h2", "h => h.textContent")
        assert newest == str(START + dt.timedelta(days=DAYS - 1)) and await page.is_hidden("#newest")


async def test_the_placeholder_shows_before_the_thumbnail(tmp_path: Path, browser: Any) -> None:
    """`_thumbs/` answers are held back: the tile shows its placeholder colour, then the thumbnail.

    Its last screenshot is README's docs/gallery.png."""
    pictures = [scene_png(640, 480, n) if n % 3 else scene_png(480, 640, n) for n in range(24)]
    world = await make_world(tmp_path, "local", tasks=30, days=2, pictures=pictures, video=await record_webm(browser),
                             audio=True)
    try:
        assert await make_thumbnails(world, tmp_path / "scratch")
        await index_world(world)
        newest = json.loads(await world.storage.get("_index/days/2026-09-02.json"))["assets"][0]
        assert newest["placeholder"].startswith("#") and newest["thumb"]
        held = asyncio.Event()

        async def hold(route: Any) -> None:
            await held.wait()
            await route.continue_()

        async with serve(app(world.storage)) as base:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.route("**/_thumbs/**", hold)
            await page.goto(base + "/")
            await settled(page)
            tile = f'[data-key="{newest["key"]}"] .tile'
            before = await page.eval_on_selector(tile, """t => [t.dataset.state, getComputedStyle(t).backgroundColor,
                t.querySelector('img').complete, getComputedStyle(t.querySelector('img')).opacity]""")
            r, g, b = (int(newest["placeholder"][i:i + 2], 16) for i in (1, 3, 5))
            assert before == ["loading", f"rgb({r}, {g}, {b})", False, "0"]
            await page.screenshot(path=str(tmp_path / "placeholders.png"))

            held.set()
            await page.wait_for_function("""() => [...document.querySelectorAll('.tile')]
                .filter(t => t.querySelector('img') && t.getBoundingClientRect().top < innerHeight)  // lazy: on screen
                .every(t => t.dataset.state === 'loaded'
                            && getComputedStyle(t.querySelector('img')).opacity === '1')""")
            size = await page.eval_on_selector(tile + " img", "i => [i.naturalWidth, i.naturalHeight]")
            assert max(size) == 400
            await page.screenshot(path=str(tmp_path / "thumbnails.png"))
            print(f"screenshots: {tmp_path}/placeholders.png, thumbnails.png")
    finally:
        await world.storage.close()


async def test_an_archive_without_thumbnails_or_search_index(tmp_path: Path, browser: Any) -> None:
    """Made before both: icons on placeholders, never an original; search reads day after day and says why."""
    world = await make_world(tmp_path, "local", tasks=60, days=12, start=START, audio=True, video=b"\x1aE\xdf\xa3")
    try:
        await index_world(world)
        shutil.rmtree(world.config.storage.local.root / "_index" / "search")
        async with serve(app(world.storage)) as base:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            asked = recorder(page, base)
            await page.goto(base + "/")
            await to_the_end(page)
            tiles = await page.eval_on_selector_all("#assets [data-key]", """cs => cs.map(c => [c.dataset.media,
                c.querySelector('.tile').dataset.state, !!c.querySelector('.tile img'),
                !!c.querySelector('.tile svg')])""")
            assert {media for media, *_ in tiles} == {"image", "video", "audio"}
            assert all(rest == ["none", False, True] for _, *rest in tiles)
            assert all(p == "/" or p.startswith("/_index/") for p in asked), asked
            await page.screenshot(path=str(tmp_path / "icons.png"))

            target = world.made.assets[5]
            await page.fill("#q", target["prompt"])
            await to_the_end(page)
            assert sorted(await visible_keys(page)) == sorted(
                a["key"] for a in world.made.assets if found_by(target["prompt"], a))
            assert await page.is_visible("#hint")
            assert "archiver index --rebuild" in (await page.text_content("#hint") or "")
            await page.screenshot(path=str(tmp_path / "hint.png"))
            await page.fill("#q", "")
            await settled(page)
            assert await page.is_hidden("#hint")
    finally:
        await world.storage.close()
