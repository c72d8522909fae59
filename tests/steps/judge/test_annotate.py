"""Candidates and preference pairs (steps/judge/candidates.py, annotate.py) on the smoke profile."""

from __future__ import annotations

import json
import shutil

import pytest

from steps.data.datasets import load_samples
from steps.judge.annotate import AnnotateConfig, annotate
from steps.judge.candidates import read_candidate_sets
from steps.manifest import ManifestError
from steps.preferences import read_pairs
from steps.world import score


def test_candidates_and_simulated_pairs(prefs):
    root, info = prefs
    sets = read_candidate_sets(root / "cands" / "candidates.jsonl")
    assert len(sets) == 24 and all(len(s["candidates"]) == 4 and len(s["sampling"]) == 4 for s in sets)
    assert len({json.dumps(s["sampling"][0]) for s in sets} | {json.dumps(s["sampling"][1]) for s in sets}) > 1
    from steps.manifest import read_manifest

    conds = {c.id: c for c in read_manifest(root / "data/train/manifest.jsonl")}
    pairs = read_pairs(root / "prefs" / "pairs.jsonl", conds)
    assert info["n_pairs"] == len(pairs) > 0 and all(p.source == "simulated" for p in pairs)
    samples = {s.id: s for s in load_samples(root / "data/train")}
    from steps.io import read_rgb

    for p in pairs[:20]:  # noise 0: the winner really scores higher on the pair's dimension
        s = samples[p.condition_id]
        assert score(read_rgb(p.winner), s)[p.dimension] >= score(read_rgb(p.loser), s)[p.dimension]
        assert p.meta["clean_winner"].endswith(p.winner.name)
    assert "SIMULATED" in (root / "prefs" / "README.txt").read_text()


def test_human_pairs_are_validated_before_anything_is_written(prefs, tmp_path):
    root, _ = prefs
    human = tmp_path / "export"
    shutil.copytree(root / "prefs", human)
    lines = (human / "pairs.jsonl").read_text().splitlines()
    bad = json.loads(lines[0]) | {"dimension": "removal_quality" if json.loads(lines[0])["task"] != "removal"
                                  else "aesthetics", "source": "human"}
    (human / "pairs.jsonl").write_text("\n".join([json.dumps(bad)] + lines[1:]) + "\n")
    out = tmp_path / "ingested"
    with pytest.raises(ManifestError, match=r"pairs.jsonl:1: field 'dimension'"):
        annotate(AnnotateConfig(human_dir=str(human), train_dir=str(root / "data/train"), out_dir=str(out)))
    assert not out.exists()
    (human / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    info = annotate(AnnotateConfig(human_dir=str(human), train_dir=str(root / "data/train"), out_dir=str(out)))
    assert info["n_pairs"] == len(lines) and (out / "pairs.jsonl").exists()
