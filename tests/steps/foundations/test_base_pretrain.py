"""The base-model recipe on the smoke profile: trains, saves a loadable FluxFill pipeline, reports quality."""

from __future__ import annotations

import json

import numpy as np
import pytest

from steps.data.datasets import DatasetConfig, build_world
from steps.foundations.base_pretrain import BaseConfig, main, pretrain


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    build_world(DatasetConfig(size=32, n_train=48, n_benchmark_per_task=3), root)
    return root


def test_smoke_pretrain_learns_and_saves(world, tmp_path):
    cfg = BaseConfig.for_profile("smoke", ".", train_dir=str(world / "train"), eval_dir=str(world / "benchmark"),
                                 out_dir=str(tmp_path / "base_model"), vae_steps=30, steps=30)
    logged = []
    result = pretrain(cfg, log=lambda m, s: logged.append((s, m)))
    vae_losses = [m["base/vae_loss"] for _, m in logged if "base/vae_loss" in m]
    fm_losses = [m["base/loss"] for _, m in logged if "base/loss" in m]
    assert vae_losses[-1] < vae_losses[0] and fm_losses[-1] < fm_losses[0]

    from steps.world import DIMENSIONS

    expected = {f"{t}/{d}" for t, dims in DIMENSIONS.items() for d in dims}
    assert set(result["quality"]) == set(result["telea_quality"]) <= expected
    assert {k.split("/")[0] for k in result["quality"]} == set(DIMENSIONS)
    assert all(0.0 <= v <= 1.0 for v in result["quality"].values())
    assert len(result["grids"]) == 3 and all(p.endswith(".png") for p in result["grids"])
    assert json.loads(open(result["report"]).read())["model_dir"] == result["model_dir"]

    from steps.models.denoise import generate
    from steps.models.policy import load_fill_pipeline

    pipe = load_fill_pipeline(result["model_dir"])
    assert pipe.vae.config.scaling_factor == pytest.approx(result["latent_scale"])
    img = np.zeros((1, 32, 32, 3), np.uint8)
    mask = np.zeros((1, 32, 32), np.uint8)
    mask[:, 8:24, 8:24] = 255
    out = generate(pipe, img, mask, ["a red circle"], num_steps=2)
    assert out.shape == (1, 3, 32, 32)


def test_config_rejects_flux_and_cli_help(capsys):
    with pytest.raises(ValueError, match="flux"):
        BaseConfig(profile="flux")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "vae_steps" in capsys.readouterr().out


class Killed(Exception):
    pass


def test_kill_and_resume_in_either_phase_gives_the_uninterrupted_weights(world, tmp_path):
    """8 VAE + 8 transformer steps straight equal the same run killed in the VAE phase, resumed, killed in the
    transformer phase and resumed again (checkpoints every 4 steps): the saved pipelines are bit-identical."""
    from safetensors.numpy import load_file

    def cfg(name):
        return BaseConfig.for_profile("smoke", ".", train_dir=str(world / "train"), eval_dir=str(world / "benchmark"),
                                      out_dir=str(tmp_path / name / "model"), vae_steps=8, steps=8, log_every=1,
                                      eval_per_task=1, checkpoint_dir=str(tmp_path / name / "ckpt"),
                                      checkpoint_every=4)

    def kill_at(key, at):
        def log(metrics, step):
            if key in metrics and step == at:
                raise Killed
        return log

    full = pretrain(cfg("full"))
    with pytest.raises(Killed):
        pretrain(cfg("cut"), log=kill_at("base/vae_loss", 6))
    with pytest.raises(Killed):
        pretrain(cfg("cut"), log=kill_at("base/loss", 5))
    seen = []
    cut = pretrain(cfg("cut"), log=lambda m, s: seen.append((s, sorted(m))))
    assert seen[0] == (4, ["base/loss", "base/lr"])  # continued after the transformer's step-4 checkpoint
    weights = [{f"{p.parent.name}/{k}": v for p in sorted((tmp_path / n / "model").rglob("*.safetensors"))
                for k, v in load_file(p).items()} for n in ("full", "cut")]
    assert weights[0].keys() == weights[1].keys() and len(weights[0]) > 10
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert full["quality"] == cut["quality"] and full["final_loss"] == cut["final_loss"]
    assert sorted(p.name for p in (tmp_path / "cut" / "ckpt").iterdir()) == ["step_0000012", "step_0000016"]
