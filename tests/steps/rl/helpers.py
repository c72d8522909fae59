"""Helpers of the RL recipe's tests: a smoke config over the `smoke` fixture (conftest.py), weights."""

from __future__ import annotations

from pathlib import Path

import torch

from steps.rl.config import RLConfig

REPO = Path(__file__).resolve().parents[3]
FILL_ONLY = dict(fill_prob=1.0, extend_prob=0.0, removal_prob=0.0)
QUIET = dict(guard_every=0, sample_every=0, checkpoint_every=0)


def config(smoke: Path, out: Path, **overrides) -> RLConfig:
    paths = dict(
        base_dir=str(smoke / "base"),
        judge_dir=str(smoke / "judge"),
        train_dir=str(smoke / "data/train"),
        eval_dir=str(smoke / "data/validation"),
        out_dir=str(out),
    )
    return RLConfig.for_profile("smoke", **{**paths, **overrides})


def transformer_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights = {}
    for f in sorted((model_dir / "transformer").glob("*.safetensors")):
        weights.update(load_file(str(f)))
    return weights
