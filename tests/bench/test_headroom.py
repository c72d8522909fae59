"""bench/rl/headroom.py: the spread of the base's own samples, best-of-n and its net win, on the smoke world."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from tests.bench.loader import load_bench

BENCH = Path(__file__).resolve().parents[2] / "bench" / "rl" / "headroom.py"


def load():
    module = load_bench(BENCH, "headroom")
    return module


@pytest.fixture(scope="module")
def smoke_dirs(tmp_path_factory) -> Path:
    from steps.data.datasets import DatasetConfig, build_world
    from steps.models.policy import build_tiny_fill_pipeline, save_pipeline, spec_for

    root = tmp_path_factory.mktemp("headroom")
    build_world(DatasetConfig(size=32, n_train=4, n_benchmark_per_task=1, n_validation_per_task=4), root / "data")
    save_pipeline(build_tiny_fill_pipeline(spec_for("smoke"), seed=0), root / "base", spec_for("smoke"))
    return root


def run(root: Path, out: Path, *extra: str) -> dict:
    return load().main(["--base", str(root / "base"), "--validation", str(root / "data" / "validation"),
                        "--per-task", "4", "--n-samples", "4", "--best-of", "1", "2", "4", "--ref-samples", "3",
                        "--steps", "2", "--out", str(out), *extra])


def test_best_of_weights_match_enumerated_subsets():
    h = load()
    key = np.array([0.3, 0.9, 0.1, 0.5, 0.7])
    for n in range(1, 6):
        brute = np.zeros(5)
        subsets = list(itertools.combinations(range(5), n))
        for s in subsets:
            brute[max(s, key=lambda i: key[i])] += 1 / len(subsets)
        assert h.best_of_weights(key, n) == pytest.approx(brute)


def test_condition_stats_match_enumeration():
    """The exact expectation over subsets and reference samples equals brute-force enumeration."""
    h = load()
    rng = np.random.default_rng(0)
    scores, ref = rng.uniform(0.5, 1.0, (5, 3)), rng.uniform(0.5, 1.0, (4, 3))
    stats = h.condition_stats(scores, ref, (1, 2, 3, 5), tie_margin=0.02)
    for n in (1, 2, 3, 5):
        subsets = list(itertools.combinations(range(5), n))
        best = [max(s, key=lambda i: scores[i].mean()) for s in subsets]
        gain = np.mean([scores[b] for b in best], 0) - scores.mean(0)
        net = np.mean([np.sign(np.where(np.abs(scores[b] - r) > 0.02, scores[b] - r, 0)) for b in best for r in ref], 0)
        assert stats[f"bo{n}"] == pytest.approx(gain)
        assert stats[f"net{n}"] == pytest.approx(net)
    assert stats["bo5"].mean() == pytest.approx(scores.mean(1).max() - scores.mean())


def test_headroom_on_smoke(smoke_dirs, tmp_path):
    result = run(smoke_dirs, tmp_path / "h.json")
    assert (tmp_path / "h.json").is_file()
    for view in ("pasted", "raw"):
        assert set(result[view]) == {"fill", "extend", "removal"}
        for block in result[view].values():
            row = block["task"]
            assert row["n_conditions"] == 4
            assert row["bo1"] == pytest.approx(0.0, abs=1e-12)
            gains = [row["bo1"], row["bo2"], row["bo4"]]
            assert all(b >= a - 1e-12 for a, b in zip(gains, gains[1:]))  # best-of-n grows with n
            for n in (1, 2, 4):
                lo, hi = row[f"net{n}_ci"]
                assert -1 <= lo <= row[f"net{n}"] + 1e-9 and row[f"net{n}"] <= hi + 1e-9 <= 1 + 1e-9
            assert row["std"] > 0  # independent noise: the samples of a condition differ
            for cell in block["dimensions"].values():
                assert cell["n_conditions"] <= 4 and 0 <= cell["mean"] <= 1
        if view == "pasted":  # the kept pixels are the source's: nothing to lose or win on consistency
            assert result[view]["fill"]["dimensions"]["consistency"]["mean"] == pytest.approx(1.0)
            assert result[view]["fill"]["dimensions"]["consistency"]["bo4"] == pytest.approx(0.0, abs=1e-12)


def test_best_of_one_against_its_own_samples_wins_nothing(smoke_dirs, tmp_path):
    """Against a uniformly drawn sample of the same set, best-of-1 is a sample against a sample: net win 0."""
    result = run(smoke_dirs, tmp_path / "w.json", "--reference", "within")
    for view in ("pasted", "raw"):
        for block in result[view].values():
            assert block["task"]["net1"] == pytest.approx(0.0, abs=1e-12)
        # one dimension, the best of all 4 against one of them: it never loses
        assert result[view]["removal"]["task"]["net4"] >= 0


def test_ode_with_shared_noise_is_refused(smoke_dirs, tmp_path):
    with pytest.raises(SystemExit):
        run(smoke_dirs, tmp_path / "x.json", "--noise", "shared")


def test_sde_sampler_at_a0_is_the_default_sampler(smoke_dirs, tmp_path):
    """The window at a = 0 is Euler bit for bit, so the same noise gives the same table; shared noise then gives
    identical samples (no spread), and a > 0 in the window makes the spread."""
    ode = run(smoke_dirs, tmp_path / "ode.json")
    sde0 = run(smoke_dirs, tmp_path / "sde0.json", "--sampler", "sde", "--a", "0", "--window", "1")
    assert sde0["pasted"] == ode["pasted"] and sde0["raw"] == ode["raw"]
    shared0 = run(smoke_dirs, tmp_path / "s0.json", "--sampler", "sde", "--a", "0", "--window", "1",
                  "--noise", "shared")
    shared7 = run(smoke_dirs, tmp_path / "s7.json", "--sampler", "sde", "--a", "0.7", "--window", "1",
                  "--noise", "shared")
    for task in ("fill", "extend", "removal"):
        assert shared0["raw"][task]["task"]["std"] == 0 and shared0["raw"][task]["task"]["bo4"] == 0
        assert shared7["raw"][task]["task"]["std"] > 0
