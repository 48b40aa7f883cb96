"""The one exception tree of archiver.

    ArchiverError
    ├── ConfigError              bad config or usage; the CLI exits 2
    ├── AlreadyRunning           another daemon holds the state DB; `run` exits 1
    ├── LeaseLost                another daemon holds the task now; this one lets it go
    ├── KeyRejected              a provider refused the API key (401); its tasks wait
    ├── AlreadyStored            a write with if_absent found an object under its key
    ├── TransientError           try again later; nothing is marked failed
    │   ├── RateLimited          429 / Retry-After: pause that provider entry
    │   ├── ProviderUnavailable  5xx, network error or garbage JSON from a provider
    │   ├── DownloadInterrupted  reset, timeout, 5xx or short body while downloading
    │   ├── StorageUnavailable   the archive store failed; retry the write
    │   ├── StateUnavailable     the state database (PostgreSQL) cannot be reached
    │   └── DiskFull             ENOSPC on staging or on the local archive
    └── PermanentError           retrying cannot help; ends the task with `reason`
        ├── UrlExpired           403/404/410 from a result URL
        ├── TooLarge             more than download.max_bytes
        ├── UnsafeUrl            scheme, userinfo or address refused by the guard
        └── DownloadFailed       anything else that ends a download for good

aiohttp, botocore and OSError exceptions are translated into these where they are
caught and never travel further; retry policy is `isinstance(e, TransientError)`.
"""

from __future__ import annotations


class ArchiverError(Exception):
    """Base of every error archiver raises on purpose."""


class ConfigError(ArchiverError):
    """The config or the command line is wrong; the message names the key."""


class AlreadyRunning(ArchiverError):
    """Another daemon runs on the same SQLite state DB."""


class LeaseLost(ArchiverError):
    """The task's lease ran out and another daemon took it (state.backend postgres)."""


class KeyRejected(ArchiverError):
    """A provider answered 401: the entry's API key is missing, wrong or revoked."""


class AlreadyStored(ArchiverError):
    """A write with `if_absent` found an object under `key` and left it as it was.

    It may be another daemon's write or our own whose answer was lost: compare its checksum.
    """

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class TransientError(ArchiverError):
    """A failure that may pass: retried later, after `retry_after` seconds if the server said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(TransientError):
    """The provider asked us to slow down."""


class ProviderUnavailable(TransientError):
    """The provider answered 5xx, not at all, or with something we cannot parse."""


class DownloadInterrupted(TransientError):
    """A download broke off in a way a retry can mend."""


class StorageUnavailable(TransientError):
    """The archive store could not be written; the asset waits in staging."""


class StateUnavailable(TransientError):
    """The state database does not answer; polling pauses and work resumes when it is back."""


class DiskFull(TransientError):
    """No space left on staging or on the local archive; downloads pause."""


class PermanentError(ArchiverError):
    """Retrying cannot help; `reason` is the word a failed task records."""

    reason = "download_failed"


class UrlExpired(PermanentError):
    reason = "url_expired"


class TooLarge(PermanentError):
    reason = "too_large"


class UnsafeUrl(PermanentError):
    reason = "unsafe_url"


class DownloadFailed(PermanentError):
    reason = "download_failed"
