"""HTTP clients side by side (issue 21): the same downloads by aiohttp, httpx, pycurl and curl.

    python bench/clients.py [--tasks 300] [--files 2] [--size 2097152] [--parallel 16] [--rounds 3]

Each client, in a process of its own, downloads tasks × files bodies from the bench CDN
(`fakes.py cdn`, its own process) into a folder per task, `--parallel` tasks at a time: each
body streamed to its file with sha256 computed on the way, the file fsynced, then the task's
folder, as the daemon's staging and local store do. "The disk alone" writes the same bytes in
the same shape with no network and no hashing. Runs are interleaved, each after `sync`; the
table gives medians of wall and CPU seconds (user + sys of that process, all its threads,
from getrusage around the job; start-up and imports are left out) and the ratios to the disk
alone and to aiohttp as archiver uses it today. The CDN's CPU is printed apart. httpx and
pycurl are optional (`pip install httpx pycurl`): a client whose module is missing is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from fakes import result_url
from measure import Child, busy_seconds, free_port, wait_port

from archiver.files import fsync_dir

PY, HERE, MiB = sys.executable, Path(__file__).resolve().parent, 1 << 20
DAEMON_BATCH = 256 * 1024  # archiver/download.py CHUNK: bytes gathered before one thread hop
BIG = MiB  # the "bigger reads" variant: aiohttp's read_bufsize, iter_chunked and batch size

Job = tuple[Path, list[str]]  # a task's folder and its files' URLs


# --- writing what arrives: the same for every Python client -------------------------------------

def absorb(file: BinaryIO, hasher: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)
        file.write(chunk)


def close_synced(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()


async def store(body: AsyncIterator[bytes], path: Path, batch: int) -> str:
    """Receive `body` on the loop into `path`, hashed and written in a thread a batch at a time, then
    fsynced; its sha256. archiver/download.py's `_stream`, less the limits and resume."""
    hasher, pending, size = hashlib.sha256(), list[bytes](), 0
    file = await asyncio.to_thread(open, path, "wb")
    async for piece in body:
        pending.append(piece)
        size += len(piece)
        if size >= batch:
            await asyncio.to_thread(absorb, file, hasher, pending)
            pending, size = [], 0
    await asyncio.to_thread(absorb, file, hasher, pending)
    await asyncio.to_thread(close_synced, file)
    return hasher.hexdigest()


def prepare(job: Job) -> list[Path]:
    job[0].mkdir()
    return [job[0] / f"{i}.png" for i in range(len(job[1]))]


# --- the clients: each downloads every job and returns {path name: sha256} ---------------------

async def _aiohttp(jobs: list[Job], parallel: int, *, bufsize: int | None, chunk: int | None,
                   batch: int) -> dict[str, str]:
    """archiver/download.py's receive path: read on the loop, hash and write in a thread per batch."""
    import aiohttp

    # archiver/workers.py download_session, except limit_per_host (8 there): every client gets
    # `parallel` connections to the one host.
    connector = aiohttp.TCPConnector(limit=parallel, limit_per_host=parallel)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
    extra = {"read_bufsize": bufsize} if bufsize else {}
    digests: dict[str, str] = {}
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False, timeout=timeout,
                                     trust_env=False, **extra) as session:

        async def one(url: str, path: Path) -> None:
            async with session.get(url, headers={"Accept-Encoding": "identity"}, allow_redirects=False) as resp:
                resp.raise_for_status()
                body = resp.content.iter_chunked(chunk) if chunk else resp.content.iter_any()
                digests[str(path)] = await store(body, path, batch)

        await _each_job(jobs, parallel, one)
    return digests


async def _httpx(jobs: list[Job], parallel: int) -> dict[str, str]:
    """httpx.AsyncClient (httpcore, h11) with the same reads, batches and thread hops as aiohttp's."""
    import httpx

    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
    timeout = httpx.Timeout(60.0, connect=30.0)
    digests: dict[str, str] = {}
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:

        async def one(url: str, path: Path) -> None:
            async with client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as resp:
                resp.raise_for_status()
                digests[str(path)] = await store(resp.aiter_raw(), path, DAEMON_BATCH)

        await _each_job(jobs, parallel, one)
    return digests


async def _each_job(jobs: list[Job], parallel: int, one: Callable[[str, Path], Any]) -> None:
    """`parallel` workers, each taking a task: its files one after another, then its folder fsynced."""
    queue = list(reversed(jobs))

    async def worker() -> None:
        while queue:
            job = queue.pop()
            paths = await asyncio.to_thread(prepare, job)
            for url, path in zip(job[1], paths, strict=True):
                await one(url, path)
            await asyncio.to_thread(fsync_dir, job[0])

    await asyncio.gather(*(worker() for _ in range(parallel)))


def _pycurl_fetch(digests: dict[str, str]) -> Callable[[str, Path], None]:
    """A blocking fetch of one body by pycurl, with one easy handle (kept alive) per thread; its write
    callback hashes and writes in that thread. libcurl's buffer is raised to DAEMON_BATCH."""
    import threading

    import pycurl

    local = threading.local()

    def fetch(url: str, path: Path) -> None:
        if not hasattr(local, "curl"):
            local.curl = pycurl.Curl()
            local.curl.setopt(pycurl.BUFFERSIZE, DAEMON_BATCH)
            local.curl.setopt(pycurl.HTTPHEADER, ["Accept-Encoding: identity"])
            local.curl.setopt(pycurl.CONNECTTIMEOUT, 30)
        curl, hasher = local.curl, hashlib.sha256()
        with open(path, "wb") as file:
            def write(piece: bytes) -> None:
                hasher.update(piece)
                file.write(piece)

            curl.setopt(pycurl.URL, url)
            curl.setopt(pycurl.WRITEFUNCTION, write)
            curl.perform()
            if curl.getinfo(pycurl.RESPONSE_CODE) != 200:
                raise RuntimeError(f"{url}: HTTP {curl.getinfo(pycurl.RESPONSE_CODE)}")
            file.flush()
            os.fsync(file.fileno())
        digests[str(path)] = hasher.hexdigest()

    return fetch


def _pycurl(jobs: list[Job], parallel: int) -> dict[str, str]:
    """pycurl in a pool of `parallel` threads, each taking a task: no event loop at all."""
    digests: dict[str, str] = {}
    fetch = _pycurl_fetch(digests)

    def task(job: Job) -> None:
        for url, path in zip(job[1], prepare(job), strict=True):
            fetch(url, path)
        fsync_dir(job[0])

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(task, jobs))
    return digests


async def _pycurl_from_loop(jobs: list[Job], parallel: int) -> dict[str, str]:
    """pycurl as a daemon would use it: the same async workers as aiohttp's, each body one hop to a
    pool of `parallel` download threads, so the loop sees a download only start and end."""
    digests: dict[str, str] = {}
    fetch, loop = _pycurl_fetch(digests), asyncio.get_running_loop()
    with ThreadPoolExecutor(parallel) as pool:
        await _each_job(jobs, parallel, lambda url, path: loop.run_in_executor(pool, fetch, url, path))
    return digests


def _disk(jobs: list[Job], parallel: int, size: int) -> dict[str, str]:
    """The same bytes and folders, written and fsynced by `parallel` threads: no network, no hashing."""
    block = os.urandom(min(size, MiB))

    def task(job: Job) -> None:
        for path in prepare(job):
            with open(path, "wb", buffering=0) as file:
                for at in range(0, size, len(block)):
                    file.write(memoryview(block)[:size - at])
                os.fsync(file.fileno())
        fsync_dir(job[0])

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(task, jobs))
    return {}


def _curl_cli(jobs: list[Job], parallel: int) -> dict[str, str]:
    """curl --parallel to the same files: no hashing and no fsync (the yardstick, not a candidate)."""
    config = jobs[0][0].parent / "curl.cfg"
    config.write_text("".join(f'url = "{u}"\noutput = "{p}"\n' for job in jobs
                              for u, p in zip(job[1], prepare(job), strict=True)))
    subprocess.run(["curl", "--parallel", "--parallel-max", str(parallel), "-sS", "--fail", "--config",
                    str(config)], check=True)
    return {}


CLIENTS: dict[str, str] = {  # name → what it is, as the table says it
    "aiohttp-today": "aiohttp as archiver/download.py: iter_any, 64 KiB read_bufsize, 256 KiB batches",
    "aiohttp-1MiB": "aiohttp with read_bufsize 1 MiB, iter_chunked(1 MiB), 1 MiB batches",
    "aiohttp-uvloop": "aiohttp as today, on uvloop's event loop",
    "httpx": "httpx.AsyncClient (h11), aiter_raw, 256 KiB batches",
    "pycurl": "pycurl, one easy handle per thread in a pool of --parallel (no event loop)",
    "pycurl-asyncio": "pycurl in that pool, each body one hop from asyncio workers",
    "curl": "curl --parallel (no hashing, no fsync)",
    "disk": "the disk alone (same bytes and folders, fsynced; no network, no hashing)",
}
# The clients that run an event loop (in the child's main thread).
ASYNC = ("aiohttp-today", "aiohttp-1MiB", "aiohttp-uvloop", "httpx", "pycurl-asyncio")
IMPORTS = {"curl": "subprocess", "aiohttp-today": "aiohttp", "aiohttp-1MiB": "aiohttp", "aiohttp-uvloop": "uvloop",
           "pycurl-asyncio": "pycurl"}
NEEDS = {"httpx": "httpx", "pycurl": "pycurl", "pycurl-asyncio": "pycurl", "aiohttp-uvloop": "uvloop"}


def run_one(name: str, jobs: list[Job], parallel: int, size: int) -> dict[str, str]:
    if name == "aiohttp-today":
        return asyncio.run(_aiohttp(jobs, parallel, bufsize=None, chunk=None, batch=DAEMON_BATCH))
    if name == "aiohttp-uvloop":
        import uvloop

        return uvloop.run(_aiohttp(jobs, parallel, bufsize=None, chunk=None, batch=DAEMON_BATCH))
    if name == "aiohttp-1MiB":
        return asyncio.run(_aiohttp(jobs, parallel, bufsize=BIG, chunk=BIG, batch=BIG))
    if name == "httpx":
        return asyncio.run(_httpx(jobs, parallel))
    if name == "pycurl":
        return _pycurl(jobs, parallel)
    if name == "pycurl-asyncio":
        return asyncio.run(_pycurl_from_loop(jobs, parallel))
    if name == "curl":
        return _curl_cli(jobs, parallel)
    return _disk(jobs, parallel, size)


def child(a: argparse.Namespace) -> None:
    """One client's run, in this process: prints its wall, CPU and a digest of every file's sha256."""
    jobs = [(a.dir / f"t{t:05d}", [result_url(a.cdn, f"t{t:05d}", i, a.size, "png") for i in range(a.files)])
            for t in range(a.tasks)]
    name = a.client[0]
    if name != "disk":  # imported outside the timed span, as a daemon has its client loaded
        __import__(IMPORTS.get(name, name))
    before, start, loop0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), time.thread_time()
    digests = run_one(name, jobs, a.parallel, a.size)
    loop = time.thread_time() - loop0  # this thread runs the event loop of the asyncio clients
    wall, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if name == "curl":  # curl's own CPU: it is a child of this process
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu += kids.ru_utime + kids.ru_stime
    files = sorted(p for p in a.dir.rglob("*.png"))
    whole = sum(p.stat().st_size for p in files)
    every = hashlib.sha256("".join(f"{Path(k).relative_to(a.dir)}={v}\n" for k, v in sorted(digests.items()))
                           .encode()).hexdigest()[:12] if digests else ""
    print(json.dumps({"wall": wall, "cpu": cpu, "loop": loop, "bytes": whole, "files": len(files), "digest": every}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=300)
    p.add_argument("--files", type=int, default=2)
    p.add_argument("--size", type=int, default=2 * MiB)
    p.add_argument("--parallel", type=int, default=16, help="tasks at a time (archiver's download.concurrency)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", type=Path, default=Path("/tmp"), help="the run's folder goes here, and is removed")
    p.add_argument("--client", action="append", choices=sorted(CLIENTS), help="repeatable; default all")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cdn", help=argparse.SUPPRESS)
    a = p.parse_args()
    for name in [k for k in os.environ if k.lower().endswith("_proxy")]:
        del os.environ[name]  # everything is on 127.0.0.1
    if a.child:
        child(a)
        return 0
    names = [n for n in a.client or CLIENTS if _available(n)]
    work = Path(tempfile.mkdtemp(prefix="archiver-clients-", dir=a.dir))
    cdn_port = free_port()
    cdn = Child([PY, str(HERE / "fakes.py"), "cdn", str(cdn_port)], work / "cdn.log")
    try:
        wait_port(cdn_port)
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for r in range(a.rounds):
            for name in names if r % 2 == 0 else reversed(names):  # alternate the order too
                runs[name].append(_timed(a, name, work, f"http://127.0.0.1:{cdn_port}", cdn))
                got = runs[name][-1]
                print(f"round {r + 1} {name}: {got['wall']:.2f} s, {got['cpu']:.2f} CPU s (loop thread "
                      f"{got['loop']:.2f}), CDN {got['cdn']:.2f}, "
                      f"others {got['others']:.2f} CPU s; {got['files']} files, {got['digest'] or '-'}", flush=True)
    finally:
        cdn.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("\n" + table(a, runs))
    digests = {run["digest"] for got in runs.values() for run in got if run["digest"]}
    complete = all(run["files"] == a.tasks * a.files and run["bytes"] == a.tasks * a.files * a.size
                   for got in runs.values() for run in got)
    print(f"\nevery file complete: {complete}; sha256 of every file alike across clients: {len(digests) <= 1}")
    return 0 if complete and len(digests) <= 1 else 1


def _available(name: str) -> bool:
    if name in NEEDS and __import__("importlib.util").util.find_spec(NEEDS[name]) is None:
        print(f"{name}: skipped, `pip install {NEEDS[name]}` first", file=sys.stderr)
        return False
    if name == "curl" and not shutil.which("curl"):
        print("curl: skipped, not on PATH", file=sys.stderr)
        return False
    return True


def _timed(a: argparse.Namespace, name: str, work: Path, cdn_url: str, cdn: Child) -> dict[str, Any]:
    """One run of `name` in a child process, after `sync`; its figures plus the CDN's and others' CPU."""
    folder = work / "run"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    subprocess.run(["sync"], check=True)
    argv = [PY, str(Path(__file__).resolve()), "--child", "--client", name, "--cdn", cdn_url, "--dir", str(folder),
            "--tasks", str(a.tasks), "--files", str(a.files), "--size", str(a.size), "--parallel", str(a.parallel)]
    cdn0, busy0 = cdn.cpu(), busy_seconds()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
    got = dict(json.loads(done.stdout.splitlines()[-1]))
    got["cdn"] = cdn.cpu() - cdn0
    got["others"] = busy_seconds() - busy0 - got["cdn"] - got["cpu"]  # the child's imports count here too
    return got


def table(a: argparse.Namespace, runs: dict[str, list[dict[str, Any]]]) -> str:
    """Medians per client, and ratios: throughput against the disk alone, CPU against aiohttp today."""
    gib = a.tasks * a.files * a.size / (1 << 30)
    keys = ("wall", "cpu", "loop", "cdn")
    med = {n: {k: statistics.median(r[k] for r in got) for k in keys} for n, got in runs.items()}
    disk, today = med.get("disk", {}).get("wall"), med.get("aiohttp-today", {}).get("cpu")
    rows = [f"{a.tasks} tasks × {a.files} × {a.size / MiB:g} MiB = {gib:.2f} GiB, {a.parallel} at a time; "
            f"medians of {a.rounds}",
            "| client | wall s | CPU s | CPU s/GiB | loop thread CPU s | × the disk alone (throughput) "
            "| CPU ÷ aiohttp today | CDN CPU s |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for name, m in med.items():
        vs_disk = f"{disk / m['wall']:.2f}×" if disk else "-"
        vs_today = f"{m['cpu'] / today:.2f}" if today and name != "disk" else "-"
        loop = f"{m['loop']:.2f}" if name in ASYNC else "-"
        rows.append(f"| {CLIENTS[name]} | {m['wall']:.2f} | {m['cpu']:.2f} | {m['cpu'] / gib:.2f} | {loop} | {vs_disk} "
                    f"| {vs_today} | {m['cdn']:.2f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
