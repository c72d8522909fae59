"""bench/judge/judge_ablations.py runs its variants on a small preference set."""

from __future__ import annotations

import json

from tests.bench.loader import load_bench


def test_judge_ablation_script_runs_its_variants(prefs, tmp_path):
    import argparse
    from pathlib import Path

    root, _ = prefs
    mod = load_bench(Path("bench/judge/judge_ablations.py"), "judge_ablations")
    args = argparse.Namespace(candidates=str(root / "cands"), train_dir=str(root / "data/train"), pretrained="",
                              profile="smoke", steps=2, threads=1, variants=["baseline", "noise_20"],
                              work=str(tmp_path / "work"))
    results = mod.run(args)
    assert set(results) == {"baseline", "noise_20"} and results["noise_20"]["noise"] == 0.2
    pairs = [json.loads(x) for x in (tmp_path / "work/pairs_noise10/pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["source"] == "simulated" for p in pairs)
    for r in results.values():
        assert 0 <= r["mean_accuracy"] <= 1 and r["table"]
    assert "| baseline |" in mod.markdown(results)
