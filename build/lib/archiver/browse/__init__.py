"""The browsable archive (design.md §10): day files, the page, and a read-only server."""
