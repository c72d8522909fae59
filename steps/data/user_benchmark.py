"""The user's own benchmark: a folder of photos, masks and competitor outputs becomes a benchmark split.

Layout (docs/DESIGN.md §6), configured by ``ONEREWARD_USER_BENCHMARK=/path/to/folder``::

    manifest.jsonl                     id, task, image, mask, prompt (+ optional target, meta)
    images/..., masks/...              any paths inside the folder; photos of any size
    competitors/<system>/<id>.png      any number of systems, any names; system.json may limit the tasks

Everything is validated before anything is written: the manifest through the one reader
(steps.manifest), every competitor folder against it (every missing or mis-sized output named by system
and id). The folder is then copied to ``data/<profile>/user`` (temporary folder + rename). Downstream, our
model's outputs are generated at its own resolution and resized back to each photo's size, and the
judge rates them in both orders; there is no ground truth, so there are no annotator ratings.

    python -m steps.data.user_benchmark --folder /path/to/folder --out data/tiny/user
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

USER_SPLIT = "user"
COMPETITORS = "competitors"


def competitor_folders(folder: str | Path) -> list[Path]:
    root = Path(folder) / COMPETITORS
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def validate_user_benchmark(folder: str | Path) -> dict[str, Any]:
    """Check the folder; raise `ManifestError` with every problem (file, line, field) of every part."""
    from steps.evaluation.competitors import validate_competitor_folder
    from steps.manifest import ManifestError, Problem, read_manifest

    folder = Path(folder)
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        raise ManifestError([Problem(str(manifest), 0, "", "not found: a user benchmark needs manifest.jsonl")])
    conditions = read_manifest(manifest)
    problems: list[Problem] = []
    systems = {}
    for system in competitor_folders(folder):
        try:
            systems[system.name] = len(validate_competitor_folder(system, conditions))
        except ManifestError as e:
            problems += e.problems
    if problems:
        raise ManifestError(problems, limit=50)
    by_task: dict[str, int] = {}
    for c in conditions:
        by_task[c.task] = by_task.get(c.task, 0) + 1
    return {"n_conditions": len(conditions), "n_by_task": by_task, "systems": systems}


def ingest_user_benchmark(folder: str | Path, out: str | Path) -> dict[str, Any]:
    """Validate, then copy the folder in as a benchmark split (atomically)."""
    from steps.io import atomic_dir

    summary = validate_user_benchmark(folder)
    with atomic_dir(out) as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
    return {**summary, "source": str(Path(folder).resolve()), "out_dir": str(out)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m steps.data.user_benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    from steps.manifest import ManifestError

    try:
        print(json.dumps(ingest_user_benchmark(args.folder, args.out), indent=2))
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
