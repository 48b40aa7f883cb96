"""The archive's on-disk format (docs/archive-format.md): what is written where, and in which shape.

    keys.py       every key: assets from the layout, sidecars, _failed records, the index; check_key
    media.py      the one media-type table: extension, Content-Type and media kind
    redaction.py  what of a provider's answer may be published: no secrets, signed links or data: payloads
    sidecar.py    the asset sidecar (archiver.asset/1) and the _failed record (archiver.failed/1), and their readers
    days.py       day files (archiver.day/2) and days.json (archiver.index/1)
    search.py     the search index: tokens, shards and their names (archiver.search/2, archiver.search-shard/1)

It does no I/O and imports nothing above config, model and errors: every layer may use it.
"""
