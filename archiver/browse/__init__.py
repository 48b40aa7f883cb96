"""The browsable archive (docs/archive-format.md, the index): day files, the page, and a read-only server."""

DEFAULT_LISTEN = "127.0.0.1:8780"  # `archiver serve`'s address; here so the CLI need not import the server
