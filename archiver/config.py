"""YAML config → frozen dataclasses (docs/configuration.md). Every error names its key."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from archiver.errors import ConfigError

PROVIDER_TYPES = ("acedata", "apipod", "fal", "kie", "maxapi", "replicate")
DEFAULT_RPS = {"kie": 10.0, "acedata": 1.0, "maxapi": 5.0, "apipod": 5.0, "fal": 10.0, "replicate": 40.0}
DEFAULT_BASE_URL = {
    "acedata": "https://api.acedata.cloud",
    "apipod": "https://api.apipod.ai",
    "fal": "https://queue.fal.run",
    "kie": "https://api.kie.ai",
    "maxapi": "https://api.maxapi.io",
    "replicate": "https://api.replicate.com",
}
KIE_APIS = ("market", "veo", "4o-image", "flux-kontext", "mj", "suno", "runway", "luma")
FAL_JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"
# (every, until): poll every `every` seconds while the task is younger than `until`.
DEFAULT_POLL_INTERVALS = ((3.0, 30.0), (10.0, 120.0), (30.0, 900.0), (60.0, float("inf")))
# Replicate deletes API outputs about an hour after they finish, and fal keeps a large
# result only 6 minutes: their polls never drift far apart (see docs/providers.md).
TYPE_POLL_INTERVALS = {
    "replicate": ((1.0, 30.0), (2.0, 120.0), (5.0, 900.0), (10.0, float("inf"))),
    "fal": ((1.0, 30.0), (3.0, 120.0), (10.0, 900.0), (30.0, float("inf"))),
}
DEFAULT_LAYOUT = "{provider}/{date:%Y/%m/%d}/{task_id}/{index:02d}.{ext}"


@dataclass(frozen=True)
class Secret:
    """An API key; its repr and str never show the value."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')" if self.value else "Secret('')"

    __str__ = __repr__

    def reveal(self) -> str:
        return self.value


@dataclass(frozen=True)
class CallbackConfig:
    """A provider entry's webhook (docs/http-api.md): its secret, and whether unknown tasks are adopted."""

    secret: Secret
    adopt: bool = False


@dataclass(frozen=True)
class HttpConfig:
    """The daemon's HTTP server (docs/http-api.md); absent from Config when http.listen is unset."""

    host: str
    port: int
    token: Secret
    storage_grace: float = 300.0  # /healthz says 503 once the store has failed this long


@dataclass(frozen=True)
class ProviderEntry:
    name: str
    type: str
    api_key: Secret
    base_url: str
    requests_per_second: float
    give_up_after: float
    poll_intervals: tuple[tuple[float, float], ...]
    service: str | None = None
    family: str = "auto"
    callbacks: CallbackConfig | None = None  # None: no /callbacks/{entry} (404)
    api: str = "market"
    app: str | None = None
    jwks_url: str = FAL_JWKS_URL
    empty_success_wait: float | None = None  # None: the poller's default (poller.EMPTY_SUCCESS_WAIT)
    max_answer: int = 8 * 1024**2  # a poll answer past this many bytes is refused (a failed poll)
    key_variable: str | None = None  # the ${VAR} api_key named, when it was not set

    def no_key(self) -> str | None:
        """Why this entry cannot be polled (its key is empty), or None."""
        if self.api_key.value:
            return None
        return f"{self.key_variable} is not set" if self.key_variable else "api_key is empty"


@dataclass(frozen=True)
class InboxConfig:
    path: Path
    default_provider: str | None = None


@dataclass(frozen=True)
class DownloadConfig:
    concurrency: int = 16
    per_host: int = 8
    max_bytes: int = 4 * 1024**3
    allow_addresses: tuple[str, ...] = ()
    retry_after: float = 30.0  # a download or store write that ran out of retries waits this long
    disk_full_pause: float = 30.0  # after ENOSPC every download waits this long, then tries again


@dataclass(frozen=True)
class LocalConfig:
    root: Path


@dataclass(frozen=True)
class S3Config:
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    checksum: bool = True


@dataclass(frozen=True)
class StorageConfig:
    backend: str
    layout: str
    local: LocalConfig
    s3: S3Config


@dataclass(frozen=True)
class IndexConfig:
    """The browse index (docs/archive-format.md, the index): on or off, and how often touched days are rewritten."""

    enabled: bool = True
    every: float = 60.0


@dataclass(frozen=True)
class StateConfig:
    """Where task state lives (docs/operations.md): the SQLite file in state_dir, or PostgreSQL."""

    backend: str = "sqlite"
    dsn: Secret = Secret("")  # postgres only; may hold a password, so it is a Secret
    lease: float = 60.0  # a dead daemon's tasks go to the others after this long


@dataclass(frozen=True)
class Config:
    path: Path
    state_dir: Path
    inbox: InboxConfig
    providers: dict[str, ProviderEntry]
    download: DownloadConfig
    storage: StorageConfig
    shutdown_grace: float = 20.0
    http: HttpConfig | None = None
    warnings: tuple[str, ...] = ()  # said by check-config; nothing that stops a start
    index: IndexConfig = IndexConfig()
    state: StateConfig = StateConfig()


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_UNIT_BYTES = {
    None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def parse_duration(value: Any, key: str) -> float:
    """`30s`, `15m`, `2h`, `1d`, `500ms` or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = _DURATION.fullmatch(str(value).strip())
    if not match:
        raise ConfigError(f"config: {key}: {value!r} is not a duration (use 30s, 15m, 2h or seconds)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_size(value: Any, key: str) -> int:
    """`512MiB`, `4GiB`, `10MB` or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(str(value).strip())
    if not match:
        raise ConfigError(f"config: {key}: {value!r} is not a size (use 512MiB, 4GiB or bytes)")
    return int(float(match.group(1)) * _UNIT_BYTES[match.group(2)])


def parse_poll_intervals(value: Any, key: str) -> tuple[tuple[float, float], ...]:
    """A list like ["3s until 30s", "10s until 2m", "60s"]; the last step has no end."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"config: {key}: expected a list like [\"3s until 30s\", \"60s\"]")
    steps = []
    for i, item in enumerate(value):
        every, _, until = str(item).partition(" until ")
        end = parse_duration(until, f"{key}[{i}]") if until else float("inf")
        steps.append((parse_duration(every, f"{key}[{i}]"), end))
    if any(every <= 0 for every, _ in steps):
        raise ConfigError(f"config: {key}: every interval must be above zero")
    ends = [until for _, until in steps]
    if ends != sorted(ends) or len(set(ends)) != len(ends) or float("inf") in ends[:-1]:
        raise ConfigError(f"config: {key}: steps out of order: each 'until' must be later than the one "
                          "before, and only the last step may have none")
    for i in range(1, len(steps)):
        # A task polled more often as it ages is a typo: polls back off, they never speed up.
        if steps[i][0] < steps[i - 1][0]:
            raise ConfigError(f"config: {key}[{i}]: {value[i]!r} polls more often than the step before "
                              f"({value[i - 1]!r}): each step's interval must be at least the one before")
    if steps[-1][1] != float("inf"):
        steps.append((steps[-1][0], float("inf")))
    return tuple(steps)


def load_config(path: Path, *, require_secrets: bool = True) -> Config:
    """Read, expand and check the config; raise ConfigError with one line naming the key.

    Commands that never call a provider (add, status, show) pass require_secrets=False,
    so a user without the keys in the environment can still use them.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config: {path}: no such file (pass -c PATH or set ARCHIVER_CONFIG)") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"config: {where}: {e.problem or e.context or 'not valid YAML'}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"config: {path}: cannot be read: {first}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {path}: expected a mapping at the top level")
    unset: dict[str, str] = {}
    raw = _expand(raw, "", require_secrets, unset)
    return _build(raw, path.resolve().parent, path, unset)


def _expand(node: Any, key: str, require: bool, unset: dict[str, str]) -> Any:
    """${VAR} and ${VAR:-default} from the environment; `unset` learns key → VAR that fell back."""
    if isinstance(node, dict):
        return {k: _expand(v, f"{key}.{k}" if key else str(k), require, unset) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, f"{key}[{i}]", require, unset) for i, v in enumerate(node)]
    if isinstance(node, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(1) in os.environ:
                return os.environ[m.group(1)]
            unset[key] = m.group(1)
            if m.group(2) is not None:  # ${VAR:-default}, as in the shell
                return m.group(2)[2:]
            if require:
                raise ConfigError(f"config: {key}: environment variable {m.group(1)} is not set")
            return ""
        if "${" in _VAR.sub("", node):
            raise ConfigError(f"config: {key}: unclosed or malformed ${{…}}: write ${{VAR}} or ${{VAR:-default}}")
        return _VAR.sub(sub, node)
    return node


def _section(raw: dict[str, Any], name: str, key: str, allowed: set[str]) -> dict[str, Any]:
    value = raw.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"config: {key}: expected a mapping")
    for k in value:
        if k not in allowed:
            raise ConfigError(f"config: {key}.{k}: unknown key (allowed: {', '.join(sorted(allowed))})")
    return value


def _names(cls: type) -> set[str]:
    assert is_dataclass(cls)
    return {f.name for f in fields(cls)}


def _build(raw: dict[str, Any], base: Path, path: Path, unset: dict[str, str]) -> Config:
    top = {"state_dir", "inbox", "providers", "download", "storage", "shutdown_grace", "http", "index", "state"}
    for k in raw:
        if k not in top:
            raise ConfigError(f"config: {k}: unknown key (allowed: {', '.join(sorted(top))})")
    providers = {name: replace(entry, key_variable=unset.get(f"providers.{name}.api_key"))
                 for name, entry in _providers(raw).items()}
    warnings = tuple(
        f"providers.{name}.api_key is empty"
        + (f" ({entry.key_variable} not set)" if entry.key_variable else "")
        for name, entry in providers.items() if not entry.api_key.value)
    inbox = _section(raw, "inbox", "inbox", {"path", "default_provider"})
    default_provider = inbox.get("default_provider")
    if default_provider is not None and default_provider not in providers:
        raise ConfigError(f"config: inbox.default_provider: {default_provider!r} is not a provider entry")
    return Config(
        path=path,
        state_dir=_path(base, raw.get("state_dir", "./state"), "state_dir"),
        inbox=InboxConfig(_path(base, inbox.get("path", "./inbox.txt"), "inbox.path"), default_provider),
        providers=providers,
        download=_download(raw),
        storage=_storage(raw, base),
        shutdown_grace=parse_duration(raw.get("shutdown_grace", 20), "shutdown_grace"),
        http=_http(raw),
        warnings=warnings,
        index=_index(raw),
        state=_state(raw),
    )


def _state(raw: dict[str, Any]) -> StateConfig:
    s = _section(raw, "state", "state", _names(StateConfig))
    backend = s.get("backend", "sqlite")
    if backend not in ("sqlite", "postgres"):
        raise ConfigError(f"config: state.backend: {backend!r} is not one of sqlite, postgres")
    dsn = str(s.get("dsn") or "")
    if backend == "postgres" and not dsn:
        raise ConfigError("config: state.dsn: required with state.backend postgres"
                          " (e.g. postgresql://archiver@db.example/archiver)")
    if backend == "sqlite" and dsn:
        raise ConfigError("config: state.dsn: only used with state.backend postgres; remove it or set the backend")
    lease = parse_duration(s.get("lease", "60s"), "state.lease")
    if lease < 5:
        raise ConfigError("config: state.lease: must be at least 5s (daemons renew it every lease/4)")
    return StateConfig(backend, Secret(dsn), lease)


def _index(raw: dict[str, Any]) -> IndexConfig:
    i = _section(raw, "index", "index", _names(IndexConfig))
    enabled = i.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("config: index.enabled: expected true or false")
    every = parse_duration(i.get("every", "60s"), "index.every")
    if every <= 0:
        raise ConfigError("config: index.every: must be above zero")
    return IndexConfig(enabled=enabled, every=every)


def _path(base: Path, value: Any, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config: {key}: expected a path")
    return (base / Path(value).expanduser()).resolve()


def _providers(raw: dict[str, Any]) -> dict[str, ProviderEntry]:
    section = raw.get("providers")
    if not section:
        raise ConfigError("config: providers: no provider entries: add at least one (see config.example.yaml)")
    if not isinstance(section, dict):
        raise ConfigError("config: providers: expected a mapping of named entries")
    allowed = {"type", "api_key", "base_url", "requests_per_second", "give_up_after",
               "poll_intervals", "service", "family", "api", "app", "jwks_url", "callbacks", "max_answer",
               "empty_success_wait"}
    entries = {}
    for name, item in section.items():
        key = f"providers.{name}"
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", str(name)):
            raise ConfigError(f"config: {key}: entry names use letters, digits, _ and -")
        item = _section(section, name, key, allowed)
        kind = item.get("type")
        if kind not in PROVIDER_TYPES:
            raise ConfigError(f"config: {key}.type: unknown provider type {kind!r} "
                              f"(one of {', '.join(PROVIDER_TYPES)})")
        if kind == "acedata" and not item.get("service"):
            raise ConfigError(f"config: {key}.service: acedata entries name their service, e.g. seedream")
        family = item.get("family", "auto")
        if family not in ("images", "videos", "auto"):
            raise ConfigError(f"config: {key}.family: expected images, videos or auto")
        if "api_key" not in item:
            raise ConfigError(f"config: {key}.api_key: missing: write api_key: ${{YOUR_KEY_VARIABLE}}")
        base_url = str(item.get("base_url") or DEFAULT_BASE_URL[kind]).rstrip("/")
        if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).netloc:
            raise ConfigError(f"config: {key}.base_url: {base_url!r} is not an http(s) URL")
        _check_product(item, kind, key)
        rps = item.get("requests_per_second", DEFAULT_RPS[kind])
        if not isinstance(rps, (int, float)) or isinstance(rps, bool) or rps <= 0:
            raise ConfigError(f"config: {key}.requests_per_second: expected a number above zero")
        intervals = item.get("poll_intervals")
        entries[name] = ProviderEntry(
            name=name,
            type=kind,
            api_key=Secret(str(item.get("api_key") or "")),
            base_url=base_url,
            requests_per_second=float(rps),
            give_up_after=parse_duration(item.get("give_up_after", "6h"), f"{key}.give_up_after"),
            poll_intervals=(parse_poll_intervals(intervals, f"{key}.poll_intervals")
                            if intervals is not None else TYPE_POLL_INTERVALS.get(kind, DEFAULT_POLL_INTERVALS)),
            service=item.get("service"),
            family=family,
            callbacks=_callbacks(item, key),
            api=item.get("api", "market"),
            app=item.get("app"),
            jwks_url=str(item.get("jwks_url") or FAL_JWKS_URL),
            max_answer=_max_answer(item.get("max_answer", "8MiB"), f"{key}.max_answer"),
            empty_success_wait=(parse_duration(item["empty_success_wait"], f"{key}.empty_success_wait")
                                if item.get("empty_success_wait") is not None else None),
        )
    return entries


def _max_answer(value: Any, key: str) -> int:
    size = parse_size(value, key)
    if size < 1024:
        raise ConfigError(f"config: {key}: must be at least 1KiB (no provider answers in less)")
    return size


def _callbacks(item: dict[str, Any], key: str) -> CallbackConfig | None:
    c = _section(item, "callbacks", f"{key}.callbacks", {"secret", "adopt"})
    if not c.get("secret"):
        return None
    if not isinstance(c.get("adopt", False), bool):
        raise ConfigError(f"config: {key}.callbacks.adopt: expected true or false")
    return CallbackConfig(Secret(str(c["secret"])), c.get("adopt", False))


def parse_listen(value: Any, key: str) -> tuple[str, int]:
    """`127.0.0.1:8790`, `[::1]:8790` or `:8790` (every address) → (host, port)."""
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"config: {key}: {value!r} is not HOST:PORT (e.g. 127.0.0.1:8790)")
    return host.strip("[]") or "0.0.0.0", int(port)


def _http(raw: dict[str, Any]) -> HttpConfig | None:
    h = _section(raw, "http", "http", {"listen", "token", "storage_grace"})
    if not h.get("listen"):
        return None
    host, port = parse_listen(h["listen"], "http.listen")
    return HttpConfig(host, port, Secret(str(h.get("token") or "")),
                      parse_duration(h.get("storage_grace", "5m"), "http.storage_grace"))


def _check_product(item: dict[str, Any], kind: str, key: str) -> None:
    """`api` belongs to kie entries, `app` and `jwks_url` to fal entries."""
    if "api" in item and (kind != "kie" or item["api"] not in KIE_APIS):
        raise ConfigError(f"config: {key}.api: kie entries only, one of {', '.join(KIE_APIS)}")
    for name in ("app", "jwks_url"):
        if name in item and kind != "fal":
            raise ConfigError(f"config: {key}.{name}: only fal entries take {name}")
    app = item.get("app")
    if kind == "fal" and (not isinstance(app, str) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)*", app)):
        raise ConfigError(f"config: {key}.app: fal entries name their model, e.g. fal-ai/flux/dev")


def _positive_int(value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"config: {key}: expected a whole number of at least 1")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"config: {key}: expected true or false, not {value!r}")
    return value


def _download(raw: dict[str, Any]) -> DownloadConfig:
    d = _section(raw, "download", "download", _names(DownloadConfig))
    allow = d.get("allow_addresses") or []
    if not isinstance(allow, list):
        raise ConfigError("config: download.allow_addresses: expected a list of CIDRs")
    for i, cidr in enumerate(allow):
        try:
            ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            raise ConfigError(f"config: download.allow_addresses[{i}]: {cidr!r} is not a CIDR") from None
    retry_after = parse_duration(d.get("retry_after", "30s"), "download.retry_after")
    if retry_after <= 0:
        raise ConfigError("config: download.retry_after: must be above zero")
    return DownloadConfig(
        concurrency=_positive_int(d.get("concurrency", 16), "download.concurrency"),
        per_host=_positive_int(d.get("per_host", 8), "download.per_host"),
        max_bytes=parse_size(d.get("max_bytes", "4GiB"), "download.max_bytes"),
        allow_addresses=tuple(str(c) for c in allow),
        retry_after=retry_after,
        disk_full_pause=parse_duration(d.get("disk_full_pause", "30s"), "download.disk_full_pause"),
    )


def _storage(raw: dict[str, Any], base: Path) -> StorageConfig:
    s = _section(raw, "storage", "storage", {"backend", "layout", "local", "s3"})
    backend = s.get("backend", "local")
    if backend not in ("local", "s3"):
        raise ConfigError(f"config: storage.backend: {backend!r} is not local or s3")
    layout = s.get("layout", DEFAULT_LAYOUT)
    from archiver.archive_format.keys import check_layout  # the format imports nothing of config's

    check_layout(layout, "storage.layout")
    local = _section(s, "local", "storage.local", {"root"})
    s3 = _section(s, "s3", "storage.s3", _names(S3Config))
    if backend == "s3" and not s3.get("bucket"):
        raise ConfigError("config: storage.s3.bucket: required when storage.backend is s3")
    return StorageConfig(
        backend=backend,
        layout=layout,
        local=LocalConfig(_path(base, local.get("root", "./archive"), "storage.local.root")),
        s3=S3Config(
            bucket=s3.get("bucket"),
            prefix=str(s3.get("prefix") or ""),
            endpoint_url=s3.get("endpoint_url"),
            region=s3.get("region"),
            checksum=_bool(s3.get("checksum", True), "storage.s3.checksum"),
        ),
    )


@dataclass(frozen=True)
class _Masked:
    """A secret as check-config shows it: `***`, or empty with the variable that was not set."""

    shown: str
    note: str = ""


_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0))
_BINARY = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
_TOP = ("state_dir", "inbox", "providers", "download", "storage", "http", "shutdown_grace", "index", "state")


def describe(config: Config, raw: Any) -> str:
    """The resolved config as YAML in the file's shape, secrets masked. `raw` is the file as written:
    a value it does not set is a default, and its line says so."""
    doc = _view(config, raw if isinstance(raw, dict) else {})
    lines: list[str] = []
    _emit({k: doc[k] for k in _TOP if k in doc}, raw if isinstance(raw, dict) else None, "", lines)
    return "\n".join(lines)


def _view(config: Config, raw: dict[str, Any]) -> dict[str, Any]:
    def given(*path: str) -> Any:
        node: Any = raw
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    storage = config.storage
    shown_storage: dict[str, Any] = {"backend": storage.backend, "layout": storage.layout}
    if storage.backend == "local" or given("storage", "local") is not None:
        shown_storage["local"] = {"root": str(storage.local.root)}
    if storage.backend == "s3" or given("storage", "s3") is not None:
        shown_storage["s3"] = {f.name: getattr(storage.s3, f.name) for f in fields(S3Config)}
    http: dict[str, Any] = {"listen": None}
    if config.http is not None:
        host = f"[{config.http.host}]" if ":" in config.http.host else config.http.host
        http = {"listen": f"{host}:{config.http.port}", "token": _mask(config.http.token, given("http", "token")),
                "storage_grace": _duration(config.http.storage_grace)}
    state: dict[str, Any] = {"backend": config.state.backend}
    if config.state.backend == "postgres":
        state["dsn"] = _mask(config.state.dsn, given("state", "dsn"))
    state["lease"] = _duration(config.state.lease)
    d = config.download
    return {
        "state_dir": str(config.state_dir),
        "inbox": {"path": str(config.inbox.path), "default_provider": config.inbox.default_provider},
        "providers": {name: _entry_view(e, given("providers", name) or {}) for name, e in config.providers.items()},
        "download": {"concurrency": d.concurrency, "per_host": d.per_host, "max_bytes": _bytes(d.max_bytes),
                     "allow_addresses": list(d.allow_addresses)},
        "storage": shown_storage,
        "http": http,
        "shutdown_grace": _duration(config.shutdown_grace),
        "index": {"enabled": config.index.enabled, "every": _duration(config.index.every)},
        "state": state,
    }


def _entry_view(entry: ProviderEntry, raw: dict[str, Any]) -> dict[str, Any]:
    """One provider entry; keys of another type (service, api, app…) are left out."""
    view: dict[str, Any] = {"type": entry.type}
    view |= {"service": entry.service} if entry.type == "acedata" else {}
    view |= {"family": entry.family} if entry.type == "apipod" else {}
    view |= {"api": entry.api} if entry.type == "kie" else {}
    view |= {"app": entry.app, "jwks_url": entry.jwks_url} if entry.type == "fal" else {}
    view |= {
        "api_key": _mask(entry.api_key, raw.get("api_key")),
        "base_url": entry.base_url,
        "requests_per_second": int(rps) if (rps := entry.requests_per_second).is_integer() else rps,
        "give_up_after": _duration(entry.give_up_after),
        "poll_intervals": [_duration(every) + ("" if until == float("inf") else f" until {_duration(until)}")
                           for every, until in entry.poll_intervals],
    }
    given = raw.get("callbacks") if isinstance(raw.get("callbacks"), dict) else {}
    if entry.callbacks is not None or given:
        on = entry.callbacks
        view["callbacks"] = {"secret": _mask(on.secret if on else Secret(""), given.get("secret")),
                             "adopt": on.adopt if on else bool(given.get("adopt", False))}
    return view


def _mask(secret: Secret, written: Any) -> _Masked:
    if secret.value:
        return _Masked("'***'")
    unset = [m.group(1) for m in _VAR.finditer(str(written or "")) if m.group(1) not in os.environ]
    return _Masked("''", f"{', '.join(unset)} not set" if unset else "empty")


def _emit(node: dict[str, Any], raw: dict[str, Any] | None, pad: str, lines: list[str]) -> None:
    for key, value in node.items():
        written = raw.get(key) if raw is not None and key in raw else None
        is_set = raw is not None and key in raw
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            _emit(value, written if isinstance(written, dict) else None, pad + "  ", lines)
            continue
        notes = [] if is_set else ["default"]
        if isinstance(value, _Masked):
            shown = value.shown
            notes += [value.note] if value.note else []
        else:
            shown = yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()
        lines.append(f"{pad}{key}: {shown}" + (f"  # {'; '.join(notes)}" if notes else ""))


def _duration(seconds: float) -> str:
    """Seconds as the config writes them: 20s, 6h, 250ms."""
    if seconds == 0:
        return "0s"
    for unit, size in _UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def _bytes(n: int) -> str:
    for unit, size in _BINARY:
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"
