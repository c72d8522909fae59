"""bench/judge/judge_refresh.py: one round of iterated reward modelling on the smoke world (sizes only, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench.loader import load_bench

BENCH = Path(__file__).resolve().parents[2] / "bench" / "judge" / "judge_refresh.py"


def test_refresh_enlarges_the_chosen_sets_relabels_and_retrains(tmp_path):
    import torch
    from safetensors.torch import save_file

    from steps.data.datasets import DatasetConfig, build_world
    from steps.judge.candidates import CandidatesConfig, generate_candidates
    from steps.models.judge import Judge
    from steps.models.judge_spec import spec_for as judge_spec
    from steps.models.policy import build_tiny_fill_pipeline, save_pipeline, spec_for
    from steps.preferences import QUERY_TEMPLATE

    build_world(DatasetConfig(size=32, n_train=12, n_benchmark_per_task=2), tmp_path / "data")
    pipe = build_tiny_fill_pipeline(spec_for("smoke"))
    save_pipeline(pipe, tmp_path / "base", spec_for("smoke"))
    gen = torch.Generator().manual_seed(0)
    (tmp_path / "ckpt").mkdir()
    save_file({k: (v + 0.2 * torch.randn(v.shape, generator=gen)).contiguous()
               for k, v in pipe.transformer.state_dict().items()}, str(tmp_path / "ckpt" / "policy.safetensors"))
    generate_candidates(CandidatesConfig(base_dir=str(tmp_path / "base"), train_dir=str(tmp_path / "data/train"),
                                         out_dir=str(tmp_path / "cands"), n_conditions=12, batch_size=12))
    Judge.build(judge_spec("smoke"), seed=0, corpus=[QUERY_TEMPLATE]).save(tmp_path / "judge")

    module = load_bench(BENCH, "judge_refresh")
    work = tmp_path / "work"
    report = module.main(["--checkpoint", str(tmp_path / "ckpt"), "--base-dir", str(tmp_path / "base"),
                          "--judge-dir", str(tmp_path / "judge"), "--candidates", str(tmp_path / "cands"),
                          "--train-dir", str(tmp_path / "data/train"), "--benchmark", str(tmp_path / "data/benchmark"),
                          "--tasks", "removal", "--per-set", "1", "--num-steps", "2", "--steps", "3",
                          "--profile", "smoke", "--work", str(work)])

    old = [json.loads(x) for x in (tmp_path / "cands/candidates.jsonl").read_text().splitlines()]
    new = [json.loads(x) for x in (work / "candidates/candidates.jsonl").read_text().splitlines()]
    assert [r["condition_id"] for r in new] == [r["condition_id"] for r in old]
    for a, b in zip(old, new):
        added = 2 if a["task"] == "removal" else 0  # one base + one checkpoint sample per removal set
        assert b["candidates"][: len(a["candidates"])] == a["candidates"] and len(b["candidates"]) == len(a["candidates"]) + added
    assert all((work / "candidates" / p).is_file() for r in new for p in r["candidates"])
    assert (work / "pairs/pairs.jsonl").is_file() and (work / "judge/training.json").is_file()
    assert set(report["judges"]) == {"old", "refreshed"}
    prefs = report["judges"]["old"]["p_checkpoint_better"]
    assert set(prefs) == {"removal/removal_quality"} and 0.0 <= prefs["removal/removal_quality"] <= 1.0
    assert json.loads((work / "report.json").read_text())["truth_gain"].keys() == {"removal/removal_quality"}

    # a second round on the first round's sets (another checkpoint): new names, the earlier additions kept
    (tmp_path / "ckpt2").mkdir()
    (tmp_path / "ckpt2" / "policy.safetensors").write_bytes((tmp_path / "ckpt" / "policy.safetensors").read_bytes())
    module.main(["--checkpoint", str(tmp_path / "ckpt2"), "--base-dir", str(tmp_path / "base"),
                 "--judge-dir", str(work / "judge"), "--candidates", str(work / "candidates"),
                 "--train-dir", str(tmp_path / "data/train"), "--benchmark", str(tmp_path / "data/benchmark"),
                 "--tasks", "removal", "--per-set", "1", "--num-steps", "2", "--steps", "3",
                 "--profile", "smoke", "--work", str(tmp_path / "work2")])
    again = [json.loads(x) for x in (tmp_path / "work2/candidates/candidates.jsonl").read_text().splitlines()]
    for a, b in zip(new, again):
        added = 2 if a["task"] == "removal" else 0
        assert b["candidates"][: len(a["candidates"])] == a["candidates"] and len(b["candidates"]) == len(a["candidates"]) + added
        assert len(set(b["candidates"])) == len(b["candidates"])
