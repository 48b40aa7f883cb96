"""YAML config → frozen dataclasses (docs/configuration.md). Every error names its key."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from archiver.errors import ConfigError
from archiver.providers import PROVIDERS
from archiver.providers.entry import ProviderEntry, parse_entries
from archiver.values import DEFAULT_POLL_INTERVALS as DEFAULT_POLL_INTERVALS  # re-exported, as Secret is
from archiver.values import Secret, expand_env, parse_duration, parse_size
from archiver.values import section as _section

DEFAULT_LAYOUT = "{provider}/{date:%Y/%m/%d}/{task_id}/{index:02d}.{ext}"


@dataclass(frozen=True)
class HttpConfig:
    """The daemon's HTTP server (docs/http-api.md); absent from Config when http.listen is unset."""

    host: str
    port: int
    token: Secret
    storage_grace: float = 300.0  # /healthz says 503 once the store has failed this long


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


# S3's storage classes (its PutObject reference); EXPRESS_ONEZONE needs a directory bucket.
S3_STORAGE_CLASSES = ("STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
                      "GLACIER", "DEEP_ARCHIVE", "OUTPOSTS", "GLACIER_IR", "SNOW", "EXPRESS_ONEZONE", "FSX_OPENZFS")
_S3_CHOICES = {"addressing_style": ("auto", "path", "virtual"), "storage_class": S3_STORAGE_CLASSES,
               "sse": ("AES256", "aws:kms"), "sdk_checksums": ("when_supported", "when_required")}


@dataclass(frozen=True)
class S3Config:
    """`storage.s3` (docs/configuration.md). None means botocore's default, or ours where noted:
    `addressing_style` unset is path-style on a custom endpoint_url, botocore's auto on AWS;
    `sdk_checksums` unset is when_required on a custom endpoint_url (stores that are not AWS
    refuse botocore's default checksums), when_supported on AWS."""

    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    checksum: bool = True  # our SHA-256 goes out with every upload, for the store to check
    profile: str | None = None
    addressing_style: str | None = None
    storage_class: str | None = None  # assets only: sidecars and records stay STANDARD
    sse: str | None = None
    sse_kms_key_id: str | None = None
    sdk_checksums: str | None = None


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
class ThumbnailsConfig:
    """Thumbnails and poster frames under _thumbs/ (docs/archive-format.md): on or off, longest side in px."""

    enabled: bool = True
    size: int = 400


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
    thumbnails: ThumbnailsConfig = ThumbnailsConfig()




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
    raw = expand_env(raw, "", require_secrets, unset)
    return _build(raw, path.resolve().parent, path, unset)




def _names(cls: type) -> set[str]:
    assert is_dataclass(cls)
    return {f.name for f in fields(cls)}


def _build(raw: dict[str, Any], base: Path, path: Path, unset: dict[str, str]) -> Config:
    top = {"state_dir", "inbox", "providers", "download", "storage", "shutdown_grace", "http", "index", "state",
           "thumbnails"}
    for k in raw:
        if k not in top:
            raise ConfigError(f"config: {k}: unknown key (allowed: {', '.join(sorted(top))})")
    providers = {name: replace(entry, key_variable=unset.get(f"providers.{name}.api_key"))
                 for name, entry in parse_entries(raw, PROVIDERS).items()}
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
        thumbnails=_thumbnails(raw),
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
    enabled = _bool(i.get("enabled", True), "index.enabled")
    every = parse_duration(i.get("every", "60s"), "index.every")
    if every <= 0:
        raise ConfigError("config: index.every: must be above zero")
    return IndexConfig(enabled=enabled, every=every)


def _thumbnails(raw: dict[str, Any]) -> ThumbnailsConfig:
    t = _section(raw, "thumbnails", "thumbnails", _names(ThumbnailsConfig))
    enabled, size = _bool(t.get("enabled", True), "thumbnails.enabled"), t.get("size", 400)
    if not isinstance(size, int) or isinstance(size, bool) or not 32 <= size <= 2048:
        raise ConfigError("config: thumbnails.size: expected a whole number of pixels from 32 to 2048")
    return ThumbnailsConfig(enabled=enabled, size=size)


def _path(base: Path, value: Any, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config: {key}: expected a path")
    return (base / Path(value).expanduser()).resolve()


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
        s3=_s3(s3),
    )


def _s3(s3: dict[str, Any]) -> S3Config:
    for key in ("bucket", "prefix", "endpoint_url", "region", "profile", "sse_kms_key_id"):
        if s3.get(key) is not None and not isinstance(s3[key], str):
            raise ConfigError(f"config: storage.s3.{key}: expected a string, not {s3[key]!r}")
    for key, allowed in _S3_CHOICES.items():
        if s3.get(key) is not None and s3[key] not in allowed:
            raise ConfigError(f"config: storage.s3.{key}: {s3[key]!r} is not one of {', '.join(allowed)}")
    if s3.get("sse_kms_key_id") and s3.get("sse") != "aws:kms":
        raise ConfigError("config: storage.s3.sse_kms_key_id: only used with storage.s3.sse aws:kms")
    return S3Config(
        bucket=s3.get("bucket"),
        prefix=str(s3.get("prefix") or ""),
        endpoint_url=s3.get("endpoint_url"),
        region=s3.get("region"),
        checksum=_bool(s3.get("checksum", True), "storage.s3.checksum"),
        **{key: s3.get(key) or None for key in ("profile", "addressing_style", "storage_class", "sse",
                                                "sse_kms_key_id", "sdk_checksums")},
    )
