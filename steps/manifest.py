"""The one manifest reader every ingestion uses (docs/DESIGN.md §6).

``manifest.jsonl`` holds one condition per line: ``id``, ``task`` (fill|extend|removal), ``image`` and
``mask`` (paths relative to the manifest), ``prompt`` (may be empty for extend/removal), optional
``target`` (ground truth when known) and optional ``meta`` (an object). A mask is a single-channel PNG of
the image's size, 255 = region to generate, 0 = keep.

``inspect_manifest`` turns every line into a row of facts (sizes, readability, mask statistics ...) and a
list of problems; ``read_manifest`` raises :class:`ManifestError` naming file, line and field for every
problem; the Great Expectations suites (steps/data/validation.py) run over the same facts, so the strict
reader and the asset checks never disagree about what is valid.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from steps.vocabulary import EXTEND_DEFAULT_PROMPT, REMOVAL_PROMPT, TASKS

REQUIRED_FIELDS = ("id", "task", "image", "mask", "prompt")
OPTIONAL_FIELDS = ("target", "meta")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based; 0 = the file as a whole
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: field {self.field!r}: {self.message}" if self.field else f"{where}: {self.message}"


class ManifestError(ValueError):
    """Bad input: carries every problem found, each naming file, line and field."""

    def __init__(self, problems: list[Problem], limit: int = 20):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        super().__init__(f"{len(problems)} problem(s) in input:\n{shown}{more}")


@dataclass(frozen=True)
class Condition:
    id: str
    task: str
    image: Path  # absolute
    mask: Path
    prompt: str  # normalised: extend without a user prompt -> EXTEND_DEFAULT_PROMPT, removal -> REMOVAL_PROMPT
    target: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    line: int = 0

    @property
    def user_prompt(self) -> bool:
        """True when the prompt came from the user (extend: text_alignment is judged only then)."""
        return self.task != "removal" and self.prompt not in ("", EXTEND_DEFAULT_PROMPT)


def iter_jsonl(path: Path, problems: list[Problem]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; malformed lines become problems."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(Problem(str(path), 0, "", "file not found"))
        return
    except UnicodeDecodeError as e:
        problems.append(Problem(str(path), 0, "", f"not UTF-8 text: {e}"))
        return
    seen_any = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        seen_any = True
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            problems.append(Problem(str(path), lineno, "", f"malformed JSON: {e.msg} at column {e.colno}"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(str(path), lineno, "", f"expected a JSON object, got {type(obj).__name__}"))
            continue
        yield lineno, obj
    if not seen_any:
        problems.append(Problem(str(path), 0, "", "empty manifest: no records"))


def resolve_inside(root: Path, rel: Any, file: str, lineno: int, name: str, problems: list[Problem]) -> Path | None:
    """Resolve a manifest path; reject non-strings, absolute paths and paths escaping ``root``."""
    if not isinstance(rel, str) or not rel:
        problems.append(Problem(file, lineno, name, f"expected a non-empty relative path, got {rel!r}"))
        return None
    if os.path.isabs(rel) or rel.startswith(("/", "\\")):
        problems.append(Problem(file, lineno, name, f"absolute path {rel!r} not allowed: paths are relative to the manifest"))
        return None
    resolved = (root / rel).resolve()
    if not resolved.is_relative_to(root.resolve()):
        problems.append(Problem(file, lineno, name, f"path {rel!r} escapes the dataset root {root}"))
        return None
    if not resolved.is_file():
        problems.append(Problem(file, lineno, name, f"file not found: {rel!r}"))
        return None
    return resolved


def _image_facts(path: Path, file: str, lineno: int, name: str, problems: list[Problem]) -> tuple[np.ndarray | None, str]:
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im), im.mode
    except Exception as e:  # PIL raises many types for corrupt files
        problems.append(Problem(file, lineno, name, f"unreadable image {path.name}: {type(e).__name__}: {e}"))
        return None, ""


def _inspect_row(root: Path, file: str, lineno: int, obj: dict[str, Any], problems: list[Problem]) -> dict[str, Any]:
    facts: dict[str, Any] = {"line": lineno, "id": obj.get("id"), "task": obj.get("task"), "prompt": obj.get("prompt")}
    for name in REQUIRED_FIELDS:
        if name not in obj:
            problems.append(Problem(file, lineno, name, "required field missing"))
    unknown = sorted(set(obj) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        problems.append(Problem(file, lineno, unknown[0], f"unknown field(s) {unknown}; known: {list(REQUIRED_FIELDS + OPTIONAL_FIELDS)}"))
    if "id" in obj and (not isinstance(obj["id"], str) or not obj["id"].strip()):
        problems.append(Problem(file, lineno, "id", f"expected a non-empty string, got {obj['id']!r}"))
    task = obj.get("task")
    if "task" in obj and task not in TASKS:
        problems.append(Problem(file, lineno, "task", f"unknown task {task!r}; expected one of {list(TASKS)}"))
    prompt = obj.get("prompt")
    if "prompt" in obj and not isinstance(prompt, str):
        problems.append(Problem(file, lineno, "prompt", f"expected a string, got {type(prompt).__name__}"))
    elif task == "fill" and isinstance(prompt, str) and not prompt.strip():
        problems.append(Problem(file, lineno, "prompt", "fill needs a prompt naming what to generate"))
    if "meta" in obj and not isinstance(obj["meta"], dict):
        problems.append(Problem(file, lineno, "meta", f"expected an object, got {type(obj['meta']).__name__}"))

    image_path = resolve_inside(root, obj.get("image"), file, lineno, "image", problems) if "image" in obj else None
    mask_path = resolve_inside(root, obj.get("mask"), file, lineno, "mask", problems) if "mask" in obj else None
    target_path = resolve_inside(root, obj["target"], file, lineno, "target", problems) if obj.get("target") else None
    facts.update(image_path=image_path, mask_path=mask_path, target_path=target_path,
                 image_ok=False, mask_ok=False, image_width=None, image_height=None,
                 mask_width=None, mask_height=None, mask_binary=None, mask_fraction=None)
    image = mask = None
    mask_name = obj.get("mask")  # as the manifest spells it (relative to the manifest), in every mask error
    if image_path is not None:
        image, _ = _image_facts(image_path, file, lineno, "image", problems)
        if image is not None:
            facts.update(image_ok=True, image_height=image.shape[0], image_width=image.shape[1])
    if mask_path is not None:
        mask, mode = _image_facts(mask_path, file, lineno, "mask", problems)
        if mask is not None:
            facts.update(mask_ok=True, mask_height=mask.shape[0], mask_width=mask.shape[1])
            if mask.ndim != 2:
                problems.append(Problem(file, lineno, "mask", f"mask {mask_name} must be single-channel (mode L), "
                                                              f"got mode {mode}"))
            else:
                m = mask.astype(np.uint8) * (255 if mode == "1" else 1)
                binary = bool(np.isin(m, (0, 255)).all())
                frac = float((m == 255).mean())
                facts.update(mask_binary=binary, mask_fraction=frac)
                if not binary:
                    bad = sorted(set(np.unique(m).tolist()) - {0, 255})[:5]
                    problems.append(Problem(file, lineno, "mask", f"mask {mask_name} is not binary: values {bad} "
                                                                  "besides 0/255"))
                elif frac == 0.0:
                    problems.append(Problem(file, lineno, "mask", f"mask {mask_name} is empty: no pixel is 255 "
                                                                  "(nothing to generate)"))
    if image is not None and mask is not None and image.shape[:2] != mask.shape[:2]:
        problems.append(Problem(file, lineno, "mask", f"mask {mask_name} size {mask.shape[1]}x{mask.shape[0]} differs "
                                                      f"from image {obj['image']} size {image.shape[1]}x{image.shape[0]}"))
    if target_path is not None and image is not None:
        target, _ = _image_facts(target_path, file, lineno, "target", problems)
        if target is not None and target.shape[:2] != image.shape[:2]:
            problems.append(Problem(file, lineno, "target", f"target {obj['target']} size {target.shape[1]}x"
                                                            f"{target.shape[0]} differs from image {obj['image']} size "
                                                            f"{image.shape[1]}x{image.shape[0]}"))
    return facts


def inspect_manifest(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[Problem]]:
    """One row of facts per record and every problem found (never raises on bad content)."""
    path = Path(path)
    root = path.parent
    file = str(path)
    problems: list[Problem] = []
    rows: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path, problems):
        rows.append(_inspect_row(root, file, lineno, obj, problems))
        rid = obj.get("id")
        if isinstance(rid, str):
            if rid in first_line:
                problems.append(Problem(file, lineno, "id", f"duplicate id {rid!r} (first on line {first_line[rid]})"))
            else:
                first_line[rid] = lineno
    problems.sort(key=lambda p: (p.line, p.field))
    return rows, problems


def normalise_prompt(task: str, prompt: str) -> str:
    prompt = prompt.strip()
    if task == "removal":
        return REMOVAL_PROMPT
    if task == "extend" and not prompt:
        return EXTEND_DEFAULT_PROMPT
    return prompt


def read_manifest(path: str | os.PathLike) -> list[Condition]:
    """Read and fully validate a manifest; raise :class:`ManifestError` listing every problem."""
    path = Path(path)
    rows, problems = inspect_manifest(path)
    if problems:
        raise ManifestError(problems)
    text = {lineno: obj for lineno, obj in iter_jsonl(path, [])}
    return [
        Condition(id=r["id"], task=r["task"], image=r["image_path"], mask=r["mask_path"],
                  prompt=normalise_prompt(r["task"], r["prompt"]), target=r["target_path"],
                  meta=text[r["line"]].get("meta", {}), line=r["line"])
        for r in rows
    ]


def write_manifest(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Write records as JSON lines (sorted keys, stable bytes) atomically."""
    from steps.io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
