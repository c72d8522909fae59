"""The policy-gradient update (steps/rl/grpo.py) at smoke size: the checks that catch the usual bugs.

The ratio is exactly 1 before the update; a constant reward changes no weight; a simple reward (the samples'
brightness) rises, and falls with its sign flipped; kill-and-resume gives the uninterrupted weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import steps.rl.reward as reward_module
from steps.rl.grpo import clipped_surrogate, group_advantages
from steps.rl.train import train
from steps.training.checkpoints import latest_checkpoint
from tests.steps.rl.helpers import FILL_ONLY, QUIET, config, transformer_weights

GRPO = dict(update="grpo", group_size=4, batch_size=2, sde_window=2, sde_window_start=0, denoise_steps=4,
            weight_decay=0.0, warmup=0, ema_tau=0.0, **FILL_ONLY)


def brightness_reward(sign: float):
    """A reward the policy can move: the mean brightness of each sample (sign -1: darkness)."""

    def rewards(judge, images, references, task, prompts, source=None, samples=None):
        from steps.vocabulary import DIMENSIONS

        value = sign * images.float().mean(dim=(1, 2, 3))
        stats = torch.zeros(len(DIMENSIONS[task]), 3)
        stats[:, 0], stats[:, 2] = float(value.sum()), float(len(value))
        return value, stats

    return rewards


def test_advantages_and_surrogate():
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
    adv = group_advantages(r, clip=1.2)
    assert torch.allclose(adv[0].mean(), torch.tensor(0.0)) and float(adv[0].max()) == pytest.approx(1.2)
    assert torch.equal(adv[1], torch.zeros(4))  # a constant group carries no signal
    lp = torch.zeros(4, requires_grad=True)
    loss, ratio, clipped = clipped_surrogate(lp, torch.zeros(4), torch.tensor([1.0, -1.0, 2.0, 0.0]), 0.1)
    loss.backward()
    assert torch.equal(ratio, torch.ones(4)) and float(clipped) == 0.0
    assert torch.allclose(lp.grad, -torch.tensor([1.0, -1.0, 2.0, 0.0]) / 4)  # REINFORCE at ratio 1
    loss, _, clipped = clipped_surrogate(torch.tensor([0.5, -0.5]), torch.zeros(2), torch.tensor([1.0, 1.0]), 0.1)
    assert float(clipped) == 1.0 and float(loss) == pytest.approx(-(1.1 + np.exp(-0.5)) / 2, rel=1e-6)


def test_ratio_is_one_before_the_update_and_the_judge_reward_is_logged(smoke, tmp_path):
    logged = []
    train(config(smoke, tmp_path, steps=2, lr=1e-3, **GRPO, **QUIET), log=lambda m, s: logged.append(m))
    assert len(logged) == 2
    for m in logged:
        assert m["grpo/ratio_dev"] < 1e-5 and m["grpo/clip_frac"] == 0.0
        assert {"reward/fill/consistency", "grpo/reward_mean", "grpo/reward_group_std", "loss"} <= set(m)
        assert 0.0 < m["grpo/reward_mean"] < 1.0 and m["grpo/reward_group_std"] > 0


def test_a_constant_reward_changes_no_weight(smoke, tmp_path, monkeypatch):
    def constant(judge, images, references, task, prompts, source=None, samples=None):
        from steps.vocabulary import DIMENSIONS

        return torch.full((images.shape[0],), 0.5), torch.zeros(len(DIMENSIONS[task]), 3)

    monkeypatch.setattr(reward_module, "preference_rewards", constant)
    train(config(smoke, tmp_path, steps=3, lr=1e-2, release="last", **GRPO, **QUIET))
    before, after = transformer_weights(smoke / "base"), transformer_weights(tmp_path / "static")
    assert max(float((before[k] - after[k]).abs().max()) for k in before) == 0.0


def test_a_brightness_reward_rises_and_falls_with_its_sign(smoke, tmp_path, monkeypatch):
    # The same draws (seed) for both signs: any difference between the two runs is the update's doing.
    brightness = {}
    for sign in (1.0, -1.0):
        monkeypatch.setattr(reward_module, "preference_rewards", brightness_reward(sign))
        logged = []
        train(config(smoke, tmp_path / str(sign), steps=24, lr=1e-2, sde_a=1.0, paste_back=False, **GRPO, **QUIET),
              log=lambda m, s: logged.append(sign * m["grpo/reward_mean"]))  # noqa: B023
        brightness[sign] = np.array(logged)
    gap = brightness[1.0] - brightness[-1.0]
    assert gap[0] == 0.0  # step 1 samples the base in both runs
    assert gap[-6:].mean() > 0.02 and gap[-6:].mean() > gap[:6].mean() + 0.015  # brighter vs darker


def test_kill_and_resume_gives_the_uninterrupted_weights(smoke, tmp_path):
    cfg = dict(steps=4, checkpoint_every=2, guard_every=2, sample_every=0, lr=1e-3, **GRPO)
    full = train(config(smoke, tmp_path / "full", **cfg))

    class Killed(Exception):
        pass

    def die_at_3(metrics, step):
        if step == 3 and "loss" in metrics:
            raise Killed

    with pytest.raises(Killed):
        train(config(smoke, tmp_path / "killed", **cfg), log=die_at_3)
    assert latest_checkpoint(tmp_path / "killed/static_checkpoints").name == "step_0000002"
    resumed = train(config(smoke, tmp_path / "killed", **cfg))
    a, b = transformer_weights(tmp_path / "full/static"), transformer_weights(tmp_path / "killed/static")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0
    assert full["guard"]["history"] == resumed["guard"]["history"]
