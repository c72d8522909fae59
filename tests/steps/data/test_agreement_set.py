"""The agreement test set (steps/data/agreement_set.py) and the three held-out sets: disjoint by construction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps.data.agreement_set import (
    AGREEMENT_INDEX_OFFSET,
    AGREEMENT_TASK_STRIDE,
    AgreementSetConfig,
    build_agreement_set,
    read_summary,
    summary_markdown,
)
from steps.data.datasets import (
    BENCHMARK_INDEX_OFFSET,
    BENCHMARK_TASK_STRIDE,
    VALIDATION_INDEX_OFFSET,
    DatasetConfig,
)
from steps.judge.agreement import PAPER_THRESHOLDS, load_agreement_test, load_preference_data
from steps.manifest import read_manifest
from steps.training.draws import FOUNDATION_INDEX_OFFSET

REPO = Path(__file__).resolve().parents[3]


def _ids(split_dir) -> set[str]:
    return {c.id for c in read_manifest(split_dir / "manifest.jsonl")}


def test_selection_agreement_test_and_benchmark_share_no_condition(prefs, agreement_test):
    """Selection (RL: the validation split; the judge: the held-out slice of the run's pairs, train conditions), the
    agreement test set and the benchmark: no condition in two of them."""
    root, _ = prefs
    test_dir, _ = agreement_test
    train, validation, benchmark = (_ids(root / "data" / s) for s in ("train", "validation", "benchmark"))
    judge_selection = {p.condition_id for p in load_preference_data(root / "prefs", root / "data/train", 0.3)["heldout"]}
    test = set(load_agreement_test(test_dir)["samples"])
    assert judge_selection and judge_selection <= train and test and validation and benchmark
    sets = {"judge selection": judge_selection, "train": train, "validation (RL selection)": validation,
            "agreement test": test, "benchmark": benchmark}
    for a, ids_a in sets.items():
        for b, ids_b in sets.items():
            if a < b and not (a == "judge selection" and b == "train"):
                assert not ids_a & ids_b, f"{a} and {b} share {sorted(ids_a & ids_b)[:3]}"


@pytest.mark.parametrize("profile", ["smoke", "tiny"])
def test_world_index_ranges_cannot_overlap(profile):
    """The world's indices: train [0, n_train), benchmark, foundation pool, validation, agreement test set each in
    their own band of one million, for the profile's sizes (the ids are task-index, so ids cannot collide either)."""
    data = DatasetConfig.for_profile(profile, REPO)
    test = AgreementSetConfig.for_profile(profile, REPO)
    bands = [(0, data.n_train), (BENCHMARK_INDEX_OFFSET, BENCHMARK_INDEX_OFFSET + 3 * BENCHMARK_TASK_STRIDE),
             (FOUNDATION_INDEX_OFFSET, FOUNDATION_INDEX_OFFSET + 1_000_000),
             (VALIDATION_INDEX_OFFSET, VALIDATION_INDEX_OFFSET + 3 * data.n_validation_per_task),
             (AGREEMENT_INDEX_OFFSET, AGREEMENT_INDEX_OFFSET + 3 * AGREEMENT_TASK_STRIDE)]
    assert all(hi <= 1_000_000 + lo for lo, hi in bands) and max(test.per_task.values()) <= AGREEMENT_TASK_STRIDE
    assert max(data.benchmark_per_task().values()) <= BENCHMARK_TASK_STRIDE
    for (lo_a, hi_a), (lo_b, _) in zip(sorted(bands), sorted(bands)[1:]):
        assert hi_a <= lo_b
    # the world the test set is drawn from is the profile's
    assert (test.size, test.world_seed, test.text_fraction, test.extend_prompt_fraction) == (
        data.size, data.seed, data.text_fraction, data.extend_prompt_fraction)


def test_tiny_sizes_come_from_the_width():
    """tiny: every cell needs the pairs of a +-0.03 Wilson interval at the lower of its Table 1 threshold and its
    measured accuracy; the gate never lowers a threshold."""
    cfg = AgreementSetConfig.for_profile("tiny", REPO)
    needed = cfg.pairs_needed()
    assert set(needed) == set(PAPER_THRESHOLDS) and cfg.require_width and cfg.half_width == 0.03
    assert needed["extend/aesthetics"] == 875 and needed["extend/structure"] == 854 and needed["removal/removal_quality"] == 627
    assert all(cfg.design_accuracy.get(c, t) <= t for c, t in PAPER_THRESHOLDS.items())


def test_a_built_set_is_complete_deterministic_and_states_its_n(agreement_test, tmp_path):
    test_dir, built = agreement_test
    summary = read_summary(test_dir)
    assert summary["n_pairs"] == built["n_pairs"] == sum(r["n"] for r in summary["cells"].values())
    assert summary["conditions"] == {"fill": 6, "extend": 6, "removal": 4} and "SIMULATED" in summary["labels"]
    assert all(int(c.rsplit("-", 1)[1]) >= AGREEMENT_INDEX_OFFSET for c in load_agreement_test(test_dir)["samples"])
    assert "| removal/removal_quality |" in summary_markdown(summary)
    again = build_agreement_set(AgreementSetConfig(**built["config"]), tmp_path / "again", "smoke")
    for rel in ("conditions/manifest.jsonl", "pairs/pairs.jsonl", "pairs/candidates.jsonl"):
        assert (test_dir / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel
    assert json.loads((tmp_path / "again" / "summary.json").read_text()) == summary


def test_too_small_a_set_fails_before_anything_is_written(tmp_path):
    cfg = AgreementSetConfig(size=32, n_fill=2, n_extend=2, n_removal=2, batch_size=8)
    with pytest.raises(ValueError, match="too small for a 95% half-width of 0.03"):
        build_agreement_set(cfg, tmp_path / "set", "smoke")
    assert not (tmp_path / "set").exists()
