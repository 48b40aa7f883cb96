"""Storage backends behind one Protocol; `open_storage` picks one from the config."""

from __future__ import annotations

from archiver.config import StorageConfig
from archiver.errors import ConfigError
from archiver.storage.base import ObjectInfo, Storage
from archiver.storage.local import LocalStorage

__all__ = ["LocalStorage", "ObjectInfo", "Storage", "open_storage"]


def open_storage(config: StorageConfig) -> Storage:
    """The backend `config.backend` names; construction does no I/O (call `start()`)."""
    if config.backend == "local":
        return LocalStorage(config.local.root)
    if config.backend == "s3":
        # Imported here: a local archive never needs the S3 modules.
        from archiver.storage.s3 import S3Storage

        return S3Storage(config.s3)
    raise ConfigError(f"config: storage.backend: {config.backend!r} is not local or s3")
