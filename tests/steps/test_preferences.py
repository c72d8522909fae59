"""Judge queries, pairs.jsonl validation (every rejection names file/line/field), simulated choices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from steps.manifest import Condition, ManifestError
from steps.preferences import AnnotatorConfig, judge_query, read_pairs, simulate_choice


def test_query_names_task_dimension_and_prompt_only_for_text_alignment():
    q = judge_query("fill", "text_alignment", "a red circle")
    assert "image fill" in q and "text alignment" in q and '"a red circle"' in q and q.endswith("Yes or No.")
    assert "red circle" not in judge_query("fill", "consistency", "a red circle")
    assert judge_query("extend", "structure") != judge_query("fill", "structure")
    with pytest.raises(ValueError, match="does not belong"):
        judge_query("removal", "aesthetics")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name, size in (("a", 32), ("b", 32), ("c", 32), ("small", 16)):
        Image.fromarray(np.full((size, size, 3), 7 * len(name), np.uint8)).save(tmp_path / f"{name}.png")
    return tmp_path


CONDS = {"c1": Condition("c1", "fill", Path("/dev/null"), Path("/dev/null"), "a red circle")}


def pair(**kw):
    rec = {"id": "p1", "condition_id": "c1", "task": "fill", "dimension": "consistency", "winner": "a.png",
           "loser": "b.png", "prompt": "a red circle", "annotator": "ann-1", "source": "human"}
    rec.update(kw)
    return rec


def run(folder: Path, records, conditions=None):
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return read_pairs(path, conditions)


def test_good_pairs(folder):
    (p,) = run(folder, [pair()])
    assert p.winner == folder / "a.png" and p.source == "human"


@pytest.mark.parametrize("record, field, needle", [
    (pair(dimension="removal_quality"), "dimension", "does not belong to task 'fill'"),
    (pair(loser="a.png"), "loser", "same image"),
    (pair(dimension="text_alignment", prompt=""), "prompt", "needs the user prompt"),
    (pair(condition_id="nope"), "condition_id", "no condition with id 'nope'"),
    (pair(task="extend"), "task", "disagrees with condition 'c1'"),
    (pair(task="paint"), "task", "unknown task"),
    (pair(winner="../a.png"), "winner", "escapes"),
    (pair(winner="missing.png"), "winner", "file not found"),
    (pair(source="crowd"), "source", "'human' or 'simulated'"),
    (pair(loser="small.png"), "loser", "differs from condition image size"),
])
def test_pair_rejections(folder, record, field, needle):
    conds = {"c1": Condition("c1", "fill", folder / "c.png", folder / "c.png", "a red circle")}
    with pytest.raises(ManifestError) as info:
        run(folder, [record], conds)
    hits = [p for p in info.value.problems if p.line == 1 and p.field == field and needle in p.message]
    assert hits, [str(p) for p in info.value.problems]


def test_duplicate_pair_id(folder):
    with pytest.raises(ManifestError, match="duplicate id 'p1'"):
        run(folder, [pair(), pair()])


def test_simulated_choice_noise_and_ties():
    rng = np.random.default_rng(0)
    cfg = AnnotatorConfig(noise=0.2)
    picks = [simulate_choice([0.1, 0.9, 0.5, 0.3], rng, cfg) for _ in range(2000)]
    flips = np.mean([p[2] for p in picks])
    assert 0.17 < flips < 0.23
    assert all((p[0], p[1]) == ((1, 0) if not p[2] else (0, 1)) and p[3] == 1 for p in picks)
    assert simulate_choice([0.5, 0.51, 0.505, 0.5], rng, cfg) is None
    assert simulate_choice([0.1, 0.9], rng, AnnotatorConfig(noise=0.0))[:2] == (1, 0)
