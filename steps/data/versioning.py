"""DVC as the data versioning layer: reproduce a stage and read its output hashes from dvc.lock.

Dagster calls these (through a resource in a pool of 1, because concurrent DVC commands fail on DVC's
repository lock); the hash DVC computes for an output folder becomes the Dagster asset's data version.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml


@contextlib.contextmanager
def _stage_env() -> Iterator[None]:
    """Stage commands say ``python -m steps...``: make that the interpreter running us (the venv's)."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{old}"
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    try:
        yield
    finally:
        os.environ["PATH"] = old


def repro(root: str | os.PathLike, stage: str) -> bool:
    """``dvc repro <stage>`` in ``root``; True when something was (re)built, False when up to date."""
    from dvc.repo import Repo

    # DVC resolves some paths (dvc.lock's git-ignore check) against the working directory: run inside root.
    with _stage_env(), contextlib.chdir(root), Repo(str(root)) as repo:
        return bool(repo.reproduce(stage))


def stage_out_hashes(root: str | os.PathLike, stage: str) -> dict[str, str]:
    """{output path: md5} of a stage as recorded in dvc.lock (``name@item`` for foreach stages)."""
    lock_path = Path(root) / "dvc.lock"
    if not lock_path.exists():
        raise FileNotFoundError(f"{lock_path}: no dvc.lock; run `dvc repro {stage}` first")
    lock = yaml.safe_load(lock_path.read_text()) or {}
    entry = lock.get("stages", {}).get(stage)
    if entry is None:
        raise KeyError(f"{lock_path}: stage {stage!r} not recorded; known: {sorted(lock.get('stages', {}))}")
    return {out["path"]: out["md5"] for out in entry.get("outs", [])}


def stage_dep_hashes(root: str | os.PathLike, stage: str) -> dict[str, str]:
    lock = yaml.safe_load((Path(root) / "dvc.lock").read_text()) or {}
    entry = lock.get("stages", {}).get(stage, {})
    return {d["path"]: d.get("md5", "") for d in entry.get("deps", [])}


def add(root: str | os.PathLike, path: str | os.PathLike) -> str:
    """``dvc add <path>`` (a folder produced outside dvc.yaml, e.g. model samples); returns its md5."""
    from dvc.repo import Repo

    root = Path(root)
    rel = Path(path).resolve().relative_to(root.resolve())
    with _stage_env(), contextlib.chdir(root), Repo(str(root)) as repo:
        repo.add(str(rel))
    meta = yaml.safe_load((root / f"{rel}.dvc").read_text())
    return meta["outs"][0]["md5"]
