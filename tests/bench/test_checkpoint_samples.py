"""bench/rl/checkpoint_samples.py: base vs an RL checkpoint on the same noise, scored by the world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.loader import load_bench

BENCH = Path(__file__).resolve().parents[2] / "bench" / "rl" / "checkpoint_samples.py"


@pytest.fixture(scope="module")
def setup_dirs(tmp_path_factory):
    import torch
    from safetensors.torch import save_file

    from steps.data.datasets import DatasetConfig, build_world
    from steps.models.policy import build_tiny_fill_pipeline, save_pipeline, spec_for

    root = tmp_path_factory.mktemp("ckpt")
    build_world(DatasetConfig(size=32, n_train=4, n_benchmark_per_task=3), root / "data")
    spec = spec_for("smoke")
    pipe = build_tiny_fill_pipeline(spec)
    save_pipeline(pipe, root / "base", spec)
    same, moved = root / "same", root / "moved"
    for folder in (same, moved):
        folder.mkdir()
    state = {k: v.detach().clone().contiguous() for k, v in pipe.transformer.state_dict().items()}
    save_file(state, str(same / "policy.safetensors"))
    gen = torch.Generator().manual_seed(0)
    save_file({k: (v + 0.2 * torch.randn(v.shape, generator=gen)).contiguous() for k, v in state.items()},
              str(moved / "policy.safetensors"))
    return root


def run(root: Path, checkpoint: str | Path, out: Path) -> dict:
    module = load_bench(BENCH, "checkpoint_samples")
    return module.main(["--checkpoint", str(root / checkpoint), "--base-dir", str(root / "base"),
                        "--benchmark", str(root / "data" / "benchmark"), "--tasks", "fill", "removal",
                        "--num-steps", "2", "--rows", "2", "--out", str(out)])


def test_same_weights_score_the_same_and_moved_weights_do_not(setup_dirs, tmp_path):
    same = run(setup_dirs, "same", tmp_path / "same.png")
    for task in ("fill", "removal"):
        for row in same["tasks"][task]["dimensions"].values():
            assert row["base"] == pytest.approx(row["checkpoint"]) and row["net_win"] == 0 and row["n"] == 3
        assert (tmp_path / f"same_{task}.png").stat().st_size > 0
    assert json.loads((tmp_path / "same.json").read_text())["tasks"].keys() == {"fill", "removal"}

    moved = run(setup_dirs, "moved", tmp_path / "moved.png")
    diffs = [abs(r["base"] - r["checkpoint"]) for t in moved["tasks"].values() for r in t["dimensions"].values()]
    assert max(diffs) > 1e-3
    for t in moved["tasks"].values():
        for r in t["dimensions"].values():
            assert r["good"] + r["same"] + r["bad"] == pytest.approx(1.0)


def test_missing_checkpoint_names_the_folder(setup_dirs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no policy"):
        run(setup_dirs, tmp_path / "empty", tmp_path / "x.png")
    assert not (tmp_path / "x.json").exists()
