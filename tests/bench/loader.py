"""Load a bench script (bench/ is a folder of scripts, not a package) as a module, for its tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_bench(path: str | Path, name: str | None = None) -> ModuleType:
    """The script at ``path`` (absolute, or relative to the repository root) imported as module ``name``."""
    path = Path(path)
    path = path if path.is_absolute() else REPO / path
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
