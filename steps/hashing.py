"""Content hashes of model folders (the data version of model assets)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def dir_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 over every file's relative path and bytes, in sorted order (stable across machines)."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode())
        with p.open("rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()
