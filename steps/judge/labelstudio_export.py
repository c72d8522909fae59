"""A Label Studio export (JSON: tasks with their annotations) -> pairs.jsonl of human preferences.

Per annotation and per dimension of the condition's task, the annotator chose a best and a worst
candidate (choices ``best_<dimension>`` / ``worst_<dimension>``, steps.judge.labelstudio.labeling_config).
That gives pairs: best beats every other candidate, every other beats worst (N = 4: 5 pairs). Every
annotation keeps its annotator (``labelstudio:<user id or e-mail>``) and its Label Studio ids in ``meta``.

Rejected, each problem naming the export, the task id, the annotation id and the field: a task whose data
lacks a field or points at a candidate outside the candidates folder, a choice naming an unknown
candidate, best == worst, a missing dimension of the task, a dimension that does not belong to it, and a
control that is not a best/worst choice. Skipped annotations (Label Studio's "Skip": ``was_cancelled``)
and tasks nobody annotated give no pairs and are reported by task id. Nothing is written on error.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from steps.manifest import ManifestError, Problem

TASK_FIELDS = ("condition_id", "task", "prompt", "candidates")


def annotator_id(annotation: dict[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return f"labelstudio:{who}"


def _choices(annotation: dict[str, Any], where: str, problems: list[Problem]) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for item in annotation.get("result") or []:
        name = item.get("from_name", "?")
        values = (item.get("value") or {}).get("choices") or []
        if len(values) != 1:
            problems.append(Problem(where, 0, name, f"expected exactly one choice, got {values}"))
            continue
        chosen[name] = values[0]
    return chosen


def pairs_from_export(export: list[dict[str, Any]], source: str, candidates_dir: str | os.PathLike,
                      ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(pairs.jsonl records with candidate paths relative to ``candidates_dir``, report).

    ``source`` names the export in errors (the file, or the server and project). Raises `ManifestError`.
    """
    from steps.judge.labelstudio import LABELS
    from steps.world import DIMENSIONS, dimensions_for

    cdir = Path(candidates_dir).resolve()
    problems: list[Problem] = []
    pairs: list[dict[str, Any]] = []
    report: dict[str, Any] = {"tasks": len(export), "annotations": 0, "skipped": [], "unannotated": []}
    if not isinstance(export, list):
        raise ManifestError([Problem(source, 0, "", "expected Label Studio's JSON export: a list of tasks")])
    for task in export:
        tid = task.get("id", "?")
        where = f"{source}: task {tid}"
        data = task.get("data") or {}
        missing = [f for f in TASK_FIELDS if f not in data]
        if missing:
            problems.append(Problem(where, 0, f"data.{missing[0]}", f"task data lacks {missing}"))
            continue
        if data["task"] not in DIMENSIONS:
            problems.append(Problem(where, 0, "data.task", f"unknown task {data['task']!r}"))
            continue
        prompt = "" if data["prompt"] == "(no prompt)" else data["prompt"]
        cands = {}
        for label, rel in zip(LABELS, data["candidates"]):
            path = (cdir / rel).resolve()
            if not path.is_relative_to(cdir) or not path.is_file():
                problems.append(Problem(where, 0, "data.candidates", f"candidate {label} ({rel}) is not a file "
                                                                      f"inside {cdir}"))
            cands[label] = rel
        dims = dimensions_for(data["task"], prompt)
        annotations = task.get("annotations") or []
        if not annotations:
            report["unannotated"].append(tid)
        for ann in annotations:
            aid = ann.get("id", "?")
            here = f"{where}, annotation {aid}"
            if ann.get("was_cancelled"):
                report["skipped"].append(f"task {tid} (annotation {aid} by {annotator_id(ann)})")
                continue
            report["annotations"] += 1
            bad = len(problems)
            chosen = _choices(ann, here, problems)
            for name in sorted(chosen):
                side, _, dim = name.partition("_")
                if side not in ("best", "worst") or not dim:
                    problems.append(Problem(here, 0, name, "not a best_<dimension> / worst_<dimension> choice"))
                elif dim not in dims:
                    problems.append(Problem(here, 0, name, f"dimension {dim!r} does not belong to this "
                                                           f"{data['task']} task; expected {list(dims)}"))
                elif chosen[name] not in cands:
                    problems.append(Problem(here, 0, name, f"unknown candidate {chosen[name]!r}; this task has "
                                                           f"{sorted(cands)}"))
            for dim in dims:
                best, worst = chosen.get(f"best_{dim}"), chosen.get(f"worst_{dim}")
                for side, value in (("best", best), ("worst", worst)):
                    if value is None:
                        problems.append(Problem(here, 0, f"{side}_{dim}", f"missing: every dimension of the task "
                                                                          f"needs a best and a worst ({list(dims)})"))
                if best is not None and best == worst:
                    problems.append(Problem(here, 0, f"worst_{dim}", f"best and worst are the same candidate {best!r}"))
            if len(problems) > bad:
                continue
            who = annotator_id(ann)
            for dim in dims:
                best, worst = chosen[f"best_{dim}"], chosen[f"worst_{dim}"]
                wins = [(best, c) for c in cands if c != best] + [(c, worst) for c in cands if c not in (best, worst)]
                for winner, loser in wins:
                    pairs.append({"id": f"ls-{tid}-{aid}/{dim}/{winner}>{loser}", "condition_id": data["condition_id"],
                                  "task": data["task"], "dimension": dim, "winner": cands[winner],
                                  "loser": cands[loser], "prompt": prompt, "annotator": who, "source": "human",
                                  "meta": {"label_studio_task": tid, "label_studio_annotation": aid,
                                           "best": best, "worst": worst}})
    if problems:
        raise ManifestError(problems, limit=50)
    if not pairs:
        raise ManifestError([Problem(source, 0, "annotations", f"no usable annotation: {len(report['skipped'])} "
                                                               f"skipped, {len(report['unannotated'])} tasks not annotated")])
    report["pairs"] = len(pairs)
    return pairs, report


def write_pairs_folder(pairs: list[dict[str, Any]], candidates_dir: str | os.PathLike, out: str | os.PathLike,
                       export: list[dict[str, Any]]) -> Path:
    """pairs.jsonl + the candidate images it names + candidates.jsonl + the raw export, atomically."""
    import json

    from steps.io import atomic_dir
    from steps.judge.annotate import link_image
    from steps.manifest import write_manifest

    cdir = Path(candidates_dir)
    with atomic_dir(out) as tmp:
        for rel in sorted({p[k] for p in pairs for k in ("winner", "loser")}):
            link_image(cdir / rel, tmp / rel)
        write_manifest(tmp / "pairs.jsonl", pairs)
        if (cdir / "candidates.jsonl").exists():
            shutil.copy2(cdir / "candidates.jsonl", tmp / "candidates.jsonl")
        (tmp / "labelstudio_export.json").write_text(json.dumps(export, indent=1, sort_keys=True) + "\n")
    return Path(out)
