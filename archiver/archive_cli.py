"""The archive's own commands (docs/operations.md: the gallery index, serve, verify): `index`, `verify`, `serve`."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

from archiver.browse.index import IndexLoop, rebuild
from archiver.archive_format.keys import thumb_key
from archiver.browse import DEFAULT_LISTEN
from archiver.config import Config
from archiver.errors import ArchiverError, ConfigError
from archiver.scrub import json_text, printable
from archiver.state import open_state, state_exists, state_path
from archiver.storage import open_storage
from archiver.thumbs.worker import Thumbnailer, backfill


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=summary, description=summary + ".")

    index = command("index", "write the browse index (index.html and _index/ in the archive root) now")
    index.add_argument("--rebuild", action="store_true", help="rewrite every day file from the state DB")
    index.add_argument("--from-store", action="store_true",
                       help="rebuild from the sidecars and _failed/ records in the store (no state DB needed)")
    index.add_argument("--thumbnails", action="store_true",
                       help="make every missing thumbnail and poster frame under _thumbs/ from the store")
    verify = command("verify", "check the store against the sidecars and the state DB")
    verify.add_argument("--since", metavar="DATE", help="only days from DATE (YYYY-MM-DD, UTC) on")
    verify.add_argument("--deep", action="store_true", help="read every byte, even where the store keeps a checksum")
    verify.add_argument("--fix", action="store_true", help="put damaged assets of known tasks back to work")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    serve_ = command("serve", "serve the archive read-only over HTTP, for a private bucket")
    serve_.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                        help=f"address to listen on (default {DEFAULT_LISTEN}, loopback only)")


def progress(label: str) -> Callable[..., None] | None:
    """A progress line on stderr, redrawn at most 10 times a second, only on a terminal."""
    if not sys.stderr.isatty():
        return None
    last = 0.0

    def show(*args: Any) -> None:
        nonlocal last
        *words, n, total = (label, *args)
        if time.monotonic() - last > 0.1 or n == total:
            last = time.monotonic()
            print(f"\r{' '.join(words)} {n:,}/{total:,}\033[K", end="", file=sys.stderr, flush=True)

    return show


def _done_progress() -> None:
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr, flush=True)


def cmd_index(config: Config, args: argparse.Namespace) -> int:
    if args.thumbnails:
        return _thumbnails(config)
    if not args.from_store and not state_exists(config):
        raise ArchiverError(f"no state at {state_path(config)}: run `archiver index --from-store` to build the index"
                            " from the store")
    storage = open_storage(config.storage)
    started = time.monotonic()

    async def go() -> dict[str, int] | int:
        try:
            if args.rebuild or args.from_store:
                return await rebuild(config, storage, from_store=args.from_store, progress=progress("index:"))
            loop = IndexLoop(config, storage)
            try:
                return await loop.round()
            finally:
                if loop.source:
                    loop.source.close()
        finally:
            await storage.close()

    result = asyncio.run(go())
    _done_progress()
    took = time.monotonic() - started
    if isinstance(result, int):
        print(f"index: {result} file(s) written, the rest was current ({took:.1f}s)")
        return 0
    origin = "the store's sidecars" if args.from_store else "the state DB"
    print(f"index: {_n(result['days'], 'day')}, {_n(result['assets'], 'asset')}, "
          f"{_n(result['failed'], 'failed task')} written from {origin} in {took:.1f}s"
          + (f"; {_n(result['unreadable'], 'unreadable sidecar')} left out" if result["unreadable"] else ""))
    return 0


def _thumbnails(config: Config) -> int:
    """`index --thumbnails`: the backfill, from the store (streamed), recorded in the state DB where there is one."""
    storage = open_storage(config.storage)
    started = time.monotonic()

    async def go() -> tuple[int, int, int, bool]:
        state = await open_state(config) if state_exists(config) else None

        async def made(key: str, thumb: Any) -> None:
            if state is not None:
                await state.set_media(key, width=thumb.width, height=thumb.height, thumb=thumb_key(key),
                                      placeholder=thumb.placeholder)

        thumbs = Thumbnailer(storage, config.thumbnails.size, made)
        try:
            with tempfile.TemporaryDirectory(prefix="archiver-thumbs-") as scratch:
                made, failed, had = await backfill(thumbs, Path(scratch), progress("index: thumbnails"))
            if made and config.index.enabled:  # the day files name each thumbnail: written again, whole
                await rebuild(config, storage, from_store=state is None)
            return made, failed, had, bool(made and config.index.enabled)
        finally:
            await thumbs.close()
            await storage.close()
            if state is not None:
                await state.close()

    made, failed, had, rewritten = asyncio.run(go())
    _done_progress()
    print(f"index: {_n(made, 'thumbnail')} made, {had:,} already there"
          + (f", {failed:,} could not be made (see the log)" if failed else "")
          + ("; day files written again" if rewritten else "") + f" in {time.monotonic() - started:.1f}s")
    return 0


def _n(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


SHOWN = 10  # no_thumbnail lines printed; an archive made before thumbnails lacks one for every image


def cmd_verify(config: Config, args: argparse.Namespace) -> int:
    # Imported here, as serve is: `archiver run` needs neither.
    from archiver.verify import Verifier, fix, fix_thumbnails

    if args.since is not None:
        try:
            args.since = dt.date.fromisoformat(args.since).isoformat()
        except ValueError:
            raise ConfigError(f"verify: --since {args.since!r}: expected a date like 2026-11-22") from None
    path = state_path(config)
    storage = open_storage(config.storage)

    async def go() -> Any:
        state = await open_state(config) if state_exists(config) else None
        try:
            report = await Verifier(storage, config.storage.layout, since=args.since, deep=args.deep,
                                    state=state, progress=progress("verify: sidecars"),
                                    thumbnails=config.thumbnails.enabled).run()
            if args.fix and report.thumbnails:
                with tempfile.TemporaryDirectory(prefix="archiver-thumbs-") as scratch:
                    await fix_thumbnails(report.thumbnails, config, storage, Path(scratch))
            if args.fix and report.problems:
                if state is None:
                    for p in report.problems:
                        p.fix = f"not fixed: no state DB at {path}"
                else:
                    await fix(report.problems, state, config, storage)
            return report
        finally:
            await storage.close()
            if state:
                await state.close()

    report = asyncio.run(go())
    _done_progress()
    if args.json:
        print(json_text(report.as_json()))
    else:
        shown = report.thumbnails[:SHOWN] if not args.fix else report.thumbnails
        for p in [*report.problems, *shown]:  # keys and details may quote what a store or a sidecar holds
            task = f" ({p.provider} {p.task_id})" if p.task_id else ""
            print(printable(f"{p.kind:<13} {p.key}{task}: {p.detail}")
                  + (f"\n{'':<13} fix: {printable(p.fix)}" if p.fix else ""))
        if report.thumbnails:
            more = len(report.thumbnails) - len(shown)
            print((f"… and {more:,} more; " if more else "") + f"{_n(len(report.thumbnails), 'asset')} without a"
                  " thumbnail: not damage; `archiver index --thumbnails` (or verify --fix) makes them")
        print(report.summary())
    return 1 if report.problems else 0  # a missing thumbnail alone is no damage


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    from archiver.browse.serve import serve  # aiohttp's server costs `archiver run` 2 MiB it never uses

    try:
        asyncio.run(serve(open_storage(config.storage), args.listen))
    except OSError as e:
        raise ArchiverError(f"serve: cannot listen on {args.listen}: {e.strerror or e}") from None
    return 0


COMMANDS = {"index": cmd_index, "verify": cmd_verify, "serve": cmd_serve}
