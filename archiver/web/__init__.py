"""The daemon's HTTP face (docs/http-api.md): health, metrics, status, task intake, callbacks."""
