"""Derived images: thumbnails and poster frames (make.py), what a file says of itself (embedded.py), and the
bounded worker and backfill that write them under `_thumbs/` (worker.py). docs/archive-format.md has the shapes."""
