"""Judge training feeding the agreement gate (steps/judge/agreement.py): the table, the rules, the split."""

from __future__ import annotations

import pytest

from steps.foundations.judge_pretrain import JudgePretrainConfig, pretrain_judge
from steps.judge.agreement import AgreementConfig, gate, run_agreement, split_of, wilson
from steps.judge.train import JudgeConfig, train_judge
from steps.world import DIMENSIONS


def test_judge_training_and_agreement_gate(prefs, tmp_path):
    root, _ = prefs
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
    result = run_agreement(AgreementConfig(judge_dir=str(tmp_path / "judge"), pairs_dir=str(root / "prefs"),
                                           train_dir=str(root / "data/train"), out_dir=str(tmp_path / "agree"),
                                           heldout_fraction=0.3, min_pairs=1))
    for cell, row in result["table"].items():
        assert cell.split("/")[1] in DIMENSIONS[cell.split("/")[0]]
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"] and row["clean_accuracy"] == row["accuracy"]
    assert (tmp_path / "agree" / "agreement.png").exists() and "SIMULATED" in result["markdown"]
    assert result["passed"] == all(r["accuracy"] >= r["threshold"] for r in result["table"].values()) \
        and not result["warnings"]
    probe = result["probe"]
    assert set(probe["cells"]) == {"0.03", "0.12"} and "Gradient probe" in result["probe_markdown"]
    for key, cells in probe["cells"].items():
        assert set(cells) <= set(result["table"]) and all(0 < c["p_yes_end"] < 1 for c in cells.values())
        assert probe["metrics"][f"probe/{key}/mean_truth_change"] == probe["summary"][key]["mean_truth_change"]


def test_gate_rules():
    row = {"accuracy": 0.9, "threshold": 0.8, "passed": True, "n": 50}
    assert gate({"fill/consistency": row}, ["fill/consistency"])[0]
    failing = dict(row, accuracy=0.7, passed=False)
    ok, reasons, _ = gate({"fill/consistency": failing})
    assert not ok and "0.700 < threshold 0.8000" in reasons[0]
    ok, reasons, _ = gate({"fill/consistency": dict(row, n=5)}, min_pairs=20)
    assert not ok and "cannot be validated" in reasons[0]
    ok, reasons, warnings = gate({}, ["removal/removal_quality"], insufficient="warn")
    assert ok and not reasons and "0 held-out pairs" in warnings[0]


def test_split_and_interval():
    ids = [f"fill-{i:06d}" for i in range(2000)]
    held = [i for i in ids if split_of(i, 0.2) == "heldout"]
    assert 0.17 < len(held) / len(ids) < 0.23 and held == [i for i in ids if split_of(i, 0.2) == "heldout"]
    lo, hi = wilson(80, 100)
    assert lo == pytest.approx(0.711, abs=0.002) and hi == pytest.approx(0.867, abs=0.002)
