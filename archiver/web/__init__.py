"""The daemon's HTTP face (design.md §12): health, metrics, status, task intake, callbacks."""
