"""archiver: poll AI generation tasks and archive every result before its URL expires."""

__version__ = "0.1.0"
