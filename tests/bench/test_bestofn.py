"""bench/rl/bestofn.py (best-of-n distillation) and the sampling it relies on, on the smoke world."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tests.bench.loader import load_bench

BENCH = Path(__file__).resolve().parents[2] / "bench" / "rl" / "bestofn.py"


@pytest.fixture(scope="module")
def smoke_dirs(tmp_path_factory) -> Path:
    from steps.data.datasets import DatasetConfig, build_world
    from steps.models.policy import build_tiny_fill_pipeline, save_pipeline, spec_for

    root = tmp_path_factory.mktemp("bestofn")
    build_world(DatasetConfig(size=32, n_train=12, n_benchmark_per_task=1, n_validation_per_task=3), root / "data")
    save_pipeline(build_tiny_fill_pipeline(spec_for("smoke"), seed=0), root / "base", spec_for("smoke"))
    return root


def run(root: Path, *extra: str) -> dict:
    module = load_bench(BENCH, "bestofn")
    return module.main(["--base", str(root / "base"), "--train", str(root / "data" / "train"),
                        "--validation", str(root / "data" / "validation"), "--conditions", "12", "--k", "3",
                        "--eval-per-task", "3", *extra])


def test_sampled_latents_are_what_was_decoded_and_reencoding_does_not_give_them_back(smoke_dirs):
    """The distillation's targets must be the sampler's own latents: decode -> uint8 -> encode is not the identity
    (the VAE round trip the best-of-n targets went through), and each seed draws its own noise."""
    import torch

    from steps.data.datasets import load_samples
    from steps.foundations.base_pretrain import BaseConfig, encode_dataset
    from steps.foundations.base_report import sample_outputs
    from steps.models.denoise import decode
    from steps.models.policy import load_fill_pipeline

    pipe = load_fill_pipeline(str(smoke_dirs / "base"))
    samples = load_samples(smoke_dirs / "data" / "validation")
    cfg = BaseConfig.for_profile("smoke", sample_steps=2)
    images, latents = sample_outputs(pipe, samples, cfg, with_latents=True)
    assert np.array_equal(images, sample_outputs(pipe, samples, cfg))  # the same seed: the same noise
    other = sample_outputs(pipe, samples, dataclasses.replace(cfg, seed=cfg.seed + 1))
    assert not any(np.array_equal(a, b) for a, b in zip(images, other))  # another seed: other noise, per sample
    with torch.no_grad():
        again = decode(pipe, latents, samples[0].target.shape[0], samples[0].target.shape[1])
    assert np.array_equal((again.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8), images)
    reencoded, _ = encode_dataset(pipe, [dataclasses.replace(s, target=im) for s, im in zip(samples, images)])
    assert float((reencoded - latents).pow(2).mean().sqrt()) > 0.05 * float(latents.pow(2).mean().sqrt())


def test_zero_learning_rate_changes_nothing(smoke_dirs):
    """Base and fine-tuned models are compared on the same noise: an unchanged model wins and loses nothing."""
    result = run(smoke_dirs, "--runs", "random:latents", "oracle:pasted", "oracle:latents_pasted", "--steps", "3",
                 "--lr", "0")
    assert result["checks"]["identical_candidate_pairs"] == 0
    for r in result["runs"]:
        for view in ("pasted", "raw"):
            for task in ("fill", "extend", "removal"):
                row = r[view][task]
                assert row["tuned"] == pytest.approx(row["base"], abs=1e-12) and row["net_win"] == 0
    latents, images, latents_pasted = result["runs"]
    assert 0 < latents_pasted["selection"]["target_latent_rms_vs_sampled"]  # the kept tokens are the source's
    assert latents["selection"]["target_latent_rms_vs_sampled"] == 0  # exact latents
    assert latents["selection"]["target_pixel_mae_vs_sampled"] == 0
    assert images["selection"]["target_latent_rms_vs_sampled"] > 0  # pasted back and re-encoded


def test_default_trains_on_the_sampled_latents(smoke_dirs):
    result = run(smoke_dirs, "--steps", "2")
    (only,) = result["runs"]
    assert (only["selector"], only["targets"]) == ("oracle", "latents")
    assert only["selection"]["target_latent_rms_vs_sampled"] == 0
    assert only["selection"]["picked_truth"] >= only["selection"]["mean_candidate_truth"]
