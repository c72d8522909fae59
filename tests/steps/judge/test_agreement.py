"""Judge training feeding the agreement gate (steps/judge/agreement.py): the table, the rules, the split."""

from __future__ import annotations

import pytest

from steps.foundations.judge_pretrain import JudgePretrainConfig, pretrain_judge
from steps.judge.agreement import (
    AgreementConfig,
    gate,
    pairs_needed,
    run_agreement,
    split_of,
    wilson,
    wilson_half_width,
)
from steps.judge.train import JudgeConfig, train_judge
from steps.world import DIMENSIONS


def test_judge_training_and_agreement_gate(prefs, agreement_test, tmp_path):
    """The judge trains on the run's pairs; the gate reads the agreement test set, whose conditions it never saw."""
    root, _ = prefs
    test_dir, built = agreement_test
    pre = pretrain_judge(JudgePretrainConfig(profile="smoke", train_dir=str(root / "data/train"),
                                             out_dir=str(tmp_path / "pre"), steps=5, batch_size=8,
                                             eval_conditions=6))
    assert "pretrain/heldout_accuracy" in pre["metrics"] and pre["evals"][-1]["step"] == 5
    logged = []
    summary = train_judge(JudgeConfig(profile="smoke", init_dir=str(tmp_path / "pre"), pairs_dir=str(root / "prefs"),
                                      train_dir=str(root / "data/train"), out_dir=str(tmp_path / "judge"),
                                      steps=6, batch_size=4, log_every=2, heldout_fraction=0.3),
                          log=lambda m, s: logged.append(m))
    assert summary["n_train_pairs"] > 0 and summary["n_heldout_pairs"] > 0
    assert any(m["judge/easy_batch"] == 1.0 for m in logged)
    result = run_agreement(AgreementConfig(judge_dir=str(tmp_path / "judge"), test_dir=str(test_dir),
                                           out_dir=str(tmp_path / "agree"), min_pairs=1, max_half_width=1.0,
                                           insufficient="warn"))
    assert result["n_test"] == built["n_pairs"] and sum(r["n"] for r in result["table"].values()) == built["n_pairs"]
    for cell, row in result["table"].items():
        assert cell.split("/")[1] in DIMENSIONS[cell.split("/")[0]]
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"] and row["clean_accuracy"] == row["accuracy"]
        assert f"| {row['n']} |" in result["markdown"].split(cell)[1].split("\n")[0]  # each cell's n in the table
    assert (tmp_path / "agree" / "agreement.png").exists() and "SIMULATED" in result["markdown"]
    assert result["passed"] == all(r["accuracy"] >= r["threshold"] for r in result["table"].values())
    assert result["message"].startswith("agreement gate") and result["markdown"] in result["message"]
    with pytest.raises(ValueError, match="agreement test set also holds"):  # a test set the judge trained on
        run_agreement(AgreementConfig(judge_dir=str(tmp_path / "judge"), test_dir=str(_as_test_set(root, tmp_path)),
                                      out_dir=str(tmp_path / "agree2"), probe_per_cell=0))
    probe = result["probe"]
    assert set(probe["cells"]) == {"0.03", "0.12"} and "Gradient probe" in result["probe_markdown"]
    for key, cells in probe["cells"].items():
        assert set(cells) <= set(result["table"]) and all(0 < c["p_yes_end"] < 1 for c in cells.values())
        assert probe["metrics"][f"probe/{key}/mean_truth_change"] == probe["summary"][key]["mean_truth_change"]


def _as_test_set(root, tmp_path):
    """The run's own preference pairs laid out as a test set (what the gate must refuse)."""
    folder = tmp_path / "own_pairs_as_test"
    folder.mkdir()
    (folder / "conditions").symlink_to(root / "data/train")
    (folder / "pairs").symlink_to(root / "prefs")
    return folder


def test_gate_rules():
    row = {"accuracy": 0.9, "threshold": 0.8, "passed": True, "n": 50, "half_width": 0.02, "ci_low": 0.88,
           "ci_high": 0.92}
    assert gate({"fill/consistency": row}, ["fill/consistency"])[0]
    failing = dict(row, accuracy=0.7, passed=False)
    ok, reasons, _ = gate({"fill/consistency": failing})
    assert not ok and "0.700 < threshold 0.8000" in reasons[0]
    ok, reasons, _ = gate({"fill/consistency": dict(row, n=5)}, min_pairs=20)
    assert not ok and "cannot be validated" in reasons[0]
    ok, reasons, warnings = gate({}, ["removal/removal_quality"], insufficient="warn")
    assert ok and not reasons and "0 test pairs" in warnings[0]
    # accurate enough, but too few pairs to decide at +-0.03: the gate cannot pass on it
    ok, reasons, _ = gate({"fill/consistency": dict(row, half_width=0.05)}, max_half_width=0.03)
    assert not ok and "half-width 0.050 > 0.030" in reasons[0] and "n=50, 95% CI 0.880-0.920" in reasons[0]
    ok, reasons, warnings = gate({"fill/consistency": dict(row, half_width=0.05)}, max_half_width=0.03,
                                 insufficient="warn")
    assert ok and "too few pairs" in warnings[0]


def test_pairs_needed_is_the_smallest_n_of_the_wilson_width():
    """About 700 pairs at 0.8 for +-0.03; the n chosen for every tiny cell reaches its width."""
    for p in (0.711, 0.8, 0.8493):
        n = pairs_needed(p, 0.03)
        assert wilson_half_width(p, n) <= 0.03 < wilson_half_width(p, n - 1)
        lo, hi = wilson(round(p * n), n)
        assert (hi - lo) / 2 == pytest.approx(wilson_half_width(round(p * n) / n, n))
    assert pairs_needed(0.8, 0.03) == 682 and pairs_needed(0.711, 0.03) == 875


def test_split_and_interval():
    ids = [f"fill-{i:06d}" for i in range(2000)]
    held = [i for i in ids if split_of(i, 0.2) == "heldout"]
    assert 0.17 < len(held) / len(ids) < 0.23 and held == [i for i in ids if split_of(i, 0.2) == "heldout"]
    lo, hi = wilson(80, 100)
    assert lo == pytest.approx(0.711, abs=0.002) and hi == pytest.approx(0.867, abs=0.002)
