"""botocore's model files as S3Storage loads them: plain dicts, their documentation emptied.

botocore parses each model file into OrderedDicts and keeps the API reference text that
only `help()` reads. For S3 (service model, endpoint rules, the endpoints table) that is
about 4 MiB of a daemon's resident memory, for as long as the client lives.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

from botocore.loaders import JSONFileLoader, Loader, create_loader


def lean_loader(data_path: str | None) -> Loader:
    """botocore's own loader (so AWS_DATA_PATH still counts) reading files our way."""
    loader = create_loader(data_path)
    loader.file_loader = _LeanFiles()
    return loader


class _LeanFiles(JSONFileLoader):
    def load_file(self, file_path: str) -> Any:
        # The order botocore tries them in: a plain file overrides a compressed one.
        for path, opener in ((file_path + ".json", open), (file_path + ".json.gz", gzip.open)):
            if os.path.isfile(path):
                with opener(path, "rb") as f:
                    return _drop_docs(json.loads(f.read()))
        return None


def _drop_docs(node: Any) -> Any:
    """Empty every "documentation" text (a member of that name is a dict, and stays).

    Emptied, not removed: botocore indexes some of them (client context parameters)."""
    if isinstance(node, dict):
        if isinstance(node.get("documentation"), str):
            node["documentation"] = ""
        for value in node.values():
            _drop_docs(value)
    elif isinstance(node, list):
        for value in node:
            _drop_docs(value)
    return node
