"""Preference data: the judge query, candidate sets, pairs.jsonl, and the simulated annotators.

**The query** (docs/DESIGN.md §4) is one versioned constant: changing its text means retraining the judge, so the
version is recorded with every judge. It names the task and the dimension, includes the user prompt only for
text_alignment, and asks whether the FIRST image is better than the SECOND, expecting "Yes" or "No".

**pairs.jsonl** (docs/DESIGN.md §6), one object per line: ``id``, ``condition_id``, ``task``, ``dimension``,
``winner``, ``loser`` (image paths relative to the file), ``prompt``, ``annotator``, ``source``
(human | simulated), optional ``meta``. Candidate sets sit beside it in ``candidates.jsonl``:
``condition_id``, ``task``, ``prompt``, ``candidates`` (paths), optional ``sampling`` (per candidate).

**Simulated annotators** (smoke / tiny only) stand in for people: from the world's per-dimension scores they
pick the best and the worst of each candidate set, drop near-ties, and flip the choice with probability
``noise``. These labels are SIMULATED; every report that uses them says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steps.manifest import Condition, ManifestError, Problem, iter_jsonl, resolve_inside
from steps.vocabulary import (  # noqa: E402, F401 - the query lives in the method's vocabulary (re-exported)
    DIMENSION_TEXT,
    QUERY_TEMPLATE,
    QUERY_TEMPLATE_VERSION,
    TASK_TEXT,
    judge_query,
)

PAIR_FIELDS = ("id", "condition_id", "task", "dimension", "winner", "loser", "prompt", "annotator", "source")


@dataclass(frozen=True)
class PreferencePair:
    id: str
    condition_id: str
    task: str
    dimension: str
    winner: Path
    loser: Path
    prompt: str
    annotator: str
    source: str
    meta: dict[str, Any]
    line: int = 0


def read_pairs(path: str | os.PathLike, conditions: dict[str, Condition] | None = None) -> list[PreferencePair]:
    """Read and validate pairs.jsonl; raise :class:`ManifestError` naming file, line and field per problem.

    With ``conditions`` (id -> Condition) the pairs are also checked against them: the condition must exist,
    the task must agree, and winner/loser must have the condition image's size.
    """
    from PIL import Image

    from steps.vocabulary import DIMENSIONS

    path = Path(path)
    file, root = str(path), path.parent
    problems: list[Problem] = []
    pairs: list[PreferencePair] = []
    first: dict[str, int] = {}
    sizes: dict[Path, tuple[int, int] | None] = {}

    def size_of(p: Path, lineno: int, name: str):
        if p not in sizes:
            try:
                with Image.open(p) as im:
                    im.load()
                    sizes[p] = im.size
            except Exception as e:
                problems.append(Problem(file, lineno, name, f"unreadable image {p.name}: {type(e).__name__}: {e}"))
                sizes[p] = None
        return sizes[p]

    for lineno, obj in iter_jsonl(path, problems):
        bad = len(problems)
        for name in PAIR_FIELDS:
            if name not in obj:
                problems.append(Problem(file, lineno, name, "required field missing"))
        unknown = sorted(set(obj) - set(PAIR_FIELDS) - {"meta"})
        if unknown:
            problems.append(Problem(file, lineno, unknown[0], f"unknown field(s) {unknown}"))
        task, dim, prompt = obj.get("task"), obj.get("dimension"), obj.get("prompt", "")
        if task not in DIMENSIONS:
            problems.append(Problem(file, lineno, "task", f"unknown task {task!r}; expected one of {list(DIMENSIONS)}"))
        elif dim not in DIMENSIONS[task]:
            problems.append(Problem(file, lineno, "dimension",
                                    f"dimension {dim!r} does not belong to task {task!r}; expected one of {list(DIMENSIONS[task])}"))
        if not isinstance(prompt, str):
            problems.append(Problem(file, lineno, "prompt", "expected a string"))
        elif dim == "text_alignment" and not prompt.strip():
            problems.append(Problem(file, lineno, "prompt", "text_alignment needs the user prompt it is judged against"))
        if obj.get("source") not in ("human", "simulated"):
            problems.append(Problem(file, lineno, "source", f"expected 'human' or 'simulated', got {obj.get('source')!r}"))
        rid = obj.get("id")
        if isinstance(rid, str) and rid in first:
            problems.append(Problem(file, lineno, "id", f"duplicate id {rid!r} (first on line {first[rid]})"))
        elif isinstance(rid, str):
            first[rid] = lineno
        winner = resolve_inside(root, obj.get("winner"), file, lineno, "winner", problems) if "winner" in obj else None
        loser = resolve_inside(root, obj.get("loser"), file, lineno, "loser", problems) if "loser" in obj else None
        if winner is not None and winner == loser:
            problems.append(Problem(file, lineno, "loser", "winner and loser are the same image"))
        cond = None
        if conditions is not None and "condition_id" in obj:
            cond = conditions.get(obj["condition_id"])
            if cond is None:
                problems.append(Problem(file, lineno, "condition_id", f"no condition with id {obj['condition_id']!r}"))
            elif cond.task != task:
                problems.append(Problem(file, lineno, "task", f"task {task!r} disagrees with condition "
                                                              f"{cond.id!r} (task {cond.task!r})"))
        for name, p in (("winner", winner), ("loser", loser)):
            if p is not None:
                sz = size_of(p, lineno, name)
                if cond is not None and sz is not None:
                    want = size_of(cond.image, lineno, "condition_id")
                    if want is not None and sz != want:
                        problems.append(Problem(file, lineno, name, f"size {sz[0]}x{sz[1]} differs from condition "
                                                                    f"image size {want[0]}x{want[1]}"))
        if len(problems) == bad:
            pairs.append(PreferencePair(rid, obj["condition_id"], task, dim, winner, loser, prompt,
                                        str(obj["annotator"]), obj["source"], obj.get("meta", {}), lineno))
    if problems:
        raise ManifestError(sorted(problems, key=lambda p: (p.line, p.field)))
    return pairs


@dataclass(frozen=True)
class AnnotatorConfig:
    """Simulated annotators (smoke / tiny). Real users replace them with human labels in the same format."""

    noise: float = 0.10
    n_annotators: int = 3
    tie_margin: float = 0.03
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.noise < 0.5:
            raise ValueError(f"noise must be in [0, 0.5), got {self.noise}")
        if self.n_annotators < 1:
            raise ValueError("n_annotators must be >= 1")


def simulate_choice(scores: list[float], rng: np.random.Generator, cfg: AnnotatorConfig):
    """(winner index, loser index, flipped, clean winner index) or None for a near-tie."""
    order = np.argsort(scores, kind="stable")
    worst, best = int(order[0]), int(order[-1])
    if scores[best] - scores[worst] < cfg.tie_margin:
        return None
    flipped = bool(rng.random() < cfg.noise)
    return (worst, best, True, best) if flipped else (best, worst, False, best)
