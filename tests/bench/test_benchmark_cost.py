"""bench/evaluation/benchmark_cost.py: every part of the benchmark timed on a smoke split and projected linearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.loader import load_bench

BENCH = Path(__file__).resolve().parents[2] / "bench" / "evaluation" / "benchmark_cost.py"


def test_parts_are_timed_and_projected_per_condition(tmp_path):
    from steps.data.datasets import DatasetConfig, build_world
    from steps.models.judge import Judge
    from steps.models.judge_spec import spec_for as judge_spec
    from steps.models.policy import build_tiny_fill_pipeline, save_pipeline, spec_for
    from steps.preferences import QUERY_TEMPLATE

    build_world(DatasetConfig(size=32, n_train=4, n_benchmark_per_task=2), tmp_path / "data")
    save_pipeline(build_tiny_fill_pipeline(spec_for("smoke")), tmp_path / "base", spec_for("smoke"))
    Judge.build(judge_spec("smoke"), seed=0, corpus=[QUERY_TEMPLATE]).save(tmp_path / "judge")

    out = tmp_path / "cost.json"
    result = load_bench(BENCH, "benchmark_cost").main([
        "--benchmark", str(tmp_path / "data" / "benchmark"), "--base-dir", str(tmp_path / "base"),
        "--judge-dir", str(tmp_path / "judge"), "--per-task", "2", "--systems", "4", "--models", "2",
        "--target", "10", "20", "--out", str(out)])

    assert result["n_conditions"] == 6 and json.loads(out.read_text())["n_conditions"] == 6
    seconds = result["seconds"]
    assert {"one model system: sampling", "one system: simulated annotators", "one system: judge, both orders",
            "classical telea", "classical biharmonic"} <= set(seconds)
    assert all(v > 0 for v in seconds.values())
    per = result["per_condition_s"]
    assert per["model systems' sampling (x2)"] == pytest.approx(2 * seconds["one model system: sampling"] / 6)
    assert per["judge ratings (x4 systems)"] == pytest.approx(4 * seconds["one system: judge, both orders"] / 6)
    # linear in conditions: 3 tasks x target conditions x the per-condition cost, twice the target twice the cost
    assert result["projected_s"]["10"] == pytest.approx(30 * sum(per.values()))
    assert result["projected_s"]["20"] == pytest.approx(2 * result["projected_s"]["10"])
    assert result["now_s"] == pytest.approx(6 * sum(per.values()))
    assert "| **total, the benchmark split** |" in result["markdown"]


def test_judge_per_task_projects_the_gates_opponents_on_all_and_the_rest_on_the_first(tmp_path):
    from steps.data.datasets import DatasetConfig, build_world
    from steps.models.judge import Judge
    from steps.models.judge_spec import spec_for as judge_spec
    from steps.models.policy import build_tiny_fill_pipeline, save_pipeline, spec_for
    from steps.preferences import QUERY_TEMPLATE

    build_world(DatasetConfig(size=32, n_train=4, n_benchmark_per_task=2), tmp_path / "data")
    save_pipeline(build_tiny_fill_pipeline(spec_for("smoke")), tmp_path / "base", spec_for("smoke"))
    Judge.build(judge_spec("smoke"), seed=0, corpus=[QUERY_TEMPLATE]).save(tmp_path / "judge")
    result = load_bench(BENCH, "benchmark_cost").main([
        "--benchmark", str(tmp_path / "data" / "benchmark"), "--base-dir", str(tmp_path / "base"),
        "--judge-dir", str(tmp_path / "judge"), "--per-task", "2", "--systems", "4", "--models", "2",
        "--target", "10", "--judge-per-task", "2", "--judge-all", "1"])
    one = result["seconds"]["one system: judge, both orders"] / 6  # one system, one condition
    per = result["per_condition_s"]
    others = sum(v for k, v in per.items() if not k.startswith("judge"))
    # the judge: 1 system on 3 x 10 conditions, 3 systems on 3 x 2
    assert result["projected_s"]["10"] == pytest.approx(30 * others + one * (30 + 3 * 6))
