"""bench/rl/rl_step.py at smoke size on CPU: the one-step variants and the grpo step on the same steps, one
table row per update in the JSON and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.loader import load_bench

BENCH = Path(__file__).resolve().parents[2] / "bench" / "rl" / "rl_step.py"


def test_smoke_run_times_one_step_and_grpo(smoke, tmp_path, capsys):
    bench = load_bench(BENCH, "rl_step_bench")
    out = tmp_path / "rl_step.json"
    bench.main(["--base-dir", str(smoke / "base"), "--judge-dir", str(smoke / "judge"),
                "--train-dir", str(smoke / "data/train"), "--eval-dir", str(smoke / "data/validation"),
                "--batch", "2", "--steps", "1", "--warmup", "0", "--periodic-reps", "1", "--threads", "1",
                "--no-doc", "--out", str(out)])  # fmt: skip
    saved = json.loads(out.read_text())
    rows = {r["update"]: r for r in saved["updates"]}
    group = saved["grpo"]["config"]["group_size"]
    assert rows["one_step"]["samples"] == 2 and rows["grpo"]["samples"] == 2 * group
    assert rows["grpo"]["conditions"] == rows["one_step"]["conditions"] == 2
    for row in rows.values():
        assert row["s_per_step"] > 0 and row["s_per_sample"] * row["samples"] == pytest.approx(row["s_per_step"])
    (grpo,) = saved["grpo"]["records"]
    assert 0 < grpo["sample_seconds"] < grpo["train_step_seconds"] <= grpo["whole"]
    assert {r["variant"] for r in saved["records"]} == {"after", "before", "no_cache"}
    report = capsys.readouterr().out
    assert "| grpo | 2 | " in report and "| one_step | 2 | 2 | 1 |" in report
