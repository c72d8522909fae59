"""What the RL recipe releases: the best validation step, the base when no step beats it, after a guard stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from steps.rl.guard import RewardHackingError
from steps.rl.train import OneRewardRecipe
from tests.steps.rl.helpers import config, transformer_weights


def test_the_best_heldout_step_keeps_its_weights(smoke, tmp_path):
    """The held-out truth peaks at step 4 of 8 (then the judge rises as it falls): the stop message points at
    step 4's folder, which holds exactly the policy weights the recipe had at step 4."""
    from safetensors.torch import load_file

    recipe = OneRewardRecipe(config(smoke, tmp_path, steps=8, guard_every=2, guard_patience=1, guard_margin=0.1,
                                    sample_every=0, checkpoint_every=4, keep_checkpoints=5, lr=1e-3, release="last"))
    real_scores = OneRewardRecipe.heldout_scores
    truth = [0.60, 0.65, 0.70, 0.65, 0.45]  # steps 0, 2, 4, 6, 8

    def peaking(self, outputs):
        judge, heldout = real_scores(self, outputs)
        k = len(self.guard.history)
        return {key: 0.5 + 0.1 * k for key in judge}, {key: truth[k] for key in heldout}

    recipe.heldout_scores = peaking.__get__(recipe)
    recipe.setup()
    with pytest.raises(RewardHackingError, match="best held-out evaluation was step 4"):
        recipe.train()
    summary = json.loads((tmp_path / "static_report/summary.json").read_text())
    assert summary["best_heldout"]["step"] == 4 and summary["best_heldout"]["score"] == pytest.approx(0.70)
    best = Path(summary["best_heldout"]["dir"])
    assert best == tmp_path / "static_best" / "step_0000004" and [p.name for p in best.parent.iterdir()] == [best.name]
    kept = load_file(str(best / "policy.safetensors"))
    at_step_4 = load_file(str(tmp_path / "static_checkpoints" / "step_0000004" / "policy.safetensors"))
    assert kept.keys() == at_step_4.keys() and all(torch.equal(kept[k], at_step_4[k]) for k in kept)
    final = load_file(str(tmp_path / "static_checkpoints" / "step_0000008" / "policy.safetensors")) \
        if (tmp_path / "static_checkpoints" / "step_0000008").exists() else None
    assert final is None or any(not torch.equal(kept[k], final[k]) for k in kept)


@pytest.mark.parametrize("release", ["best_validation", "last"])
def test_release_is_chosen_on_the_validation_split(smoke, tmp_path, release):
    """The validation truth peaks at step 4 of 8 (guard margin wide: it never stops): best_validation releases
    exactly step 4's EMA weights and says so; last releases the final EMA."""
    from safetensors.torch import load_file

    recipe = OneRewardRecipe(config(smoke, tmp_path, steps=8, guard_every=2, guard_margin=1.0, sample_every=0,
                                    checkpoint_every=4, keep_checkpoints=5, lr=1e-3, release=release))
    real_scores = OneRewardRecipe.heldout_scores
    truth = [0.60, 0.65, 0.70, 0.65, 0.45]  # steps 0, 2, 4, 6, 8

    def peaking(self, outputs):
        judge, heldout = real_scores(self, outputs)
        return judge, {key: truth[len(self.guard.history)] for key in heldout}

    recipe.heldout_scores = peaking.__get__(recipe)
    summary = recipe.setup().train()
    released = transformer_weights(tmp_path / "static")
    ema = {4: load_file(str(tmp_path / "static_checkpoints/step_0000004/ema.safetensors")),
           8: load_file(str(tmp_path / "static_checkpoints/step_0000008/ema.safetensors"))}
    step = 4 if release == "best_validation" else 8
    assert summary["release"]["step"] == step and summary["release"]["rule"] == release
    assert all(torch.equal(released[k], v) for k, v in ema[step].items())
    assert any(not torch.equal(released[k], v) for k, v in ema[12 - step].items())


def test_when_no_step_beats_the_base_the_base_is_released(smoke, tmp_path):
    """The validation truth only falls (the guard margin is wide: it never stops the run): best_validation
    releases the base's own weights -- not the last, worse step's -- and says RL did not improve on it."""
    recipe = OneRewardRecipe(config(smoke, tmp_path, steps=6, guard_every=2, guard_margin=1.0, sample_every=0,
                                    checkpoint_every=0, lr=1e-3))
    real_scores = OneRewardRecipe.heldout_scores
    truth = [0.70, 0.60, 0.55, 0.50]  # steps 0, 2, 4, 6

    def falling(self, outputs):
        judge, heldout = real_scores(self, outputs)
        return judge, {key: truth[len(self.guard.history)] for key in heldout}

    recipe.heldout_scores = falling.__get__(recipe)
    base = {n: p.detach().clone() for n, p in recipe.setup().params.items()}
    summary = recipe.train()
    assert summary["status"] == "finished" and summary["release"]["step"] == 0
    assert "no RL step beat the base" in summary["release"]["note"]
    released = transformer_weights(tmp_path / "static")
    from safetensors.torch import load_file

    moved = load_file(str(tmp_path / "static_checkpoints/step_0000006/policy.safetensors"))
    assert all(torch.equal(released[n], base[n].to(released[n].dtype)) for n in base)
    assert any(not torch.equal(moved[n], base[n]) for n in base)  # RL did change the weights it trained


def test_guard_stop_releases_the_best_validation_weights(smoke, tmp_path):
    """release=best_validation turns the guard's stop into early stopping: the run ends without an error,
    releases step 4's EMA weights and says it was stopped and why."""
    from safetensors.torch import load_file

    recipe = OneRewardRecipe(config(smoke, tmp_path, steps=8, guard_every=2, guard_patience=1, guard_margin=0.1,
                                    sample_every=0, checkpoint_every=2, keep_checkpoints=5, lr=1e-3))
    real_scores = OneRewardRecipe.heldout_scores
    truth = [0.60, 0.65, 0.70, 0.45, 0.40]  # steps 0, 2, 4, 6 (stop), 8

    def peaking(self, outputs):
        judge, heldout = real_scores(self, outputs)
        k = len(self.guard.history)
        return {key: 0.5 + 0.1 * k for key in judge}, {key: truth[k] for key in heldout}

    recipe.heldout_scores = peaking.__get__(recipe)
    summary = recipe.setup().train()
    assert summary["status"] == "stopped_by_guard" and "step 6" in summary["error"]
    assert summary["release"]["step"] == 4
    released = transformer_weights(tmp_path / "static")
    ema4 = load_file(str(tmp_path / "static_checkpoints/step_0000004/ema.safetensors"))
    assert all(torch.equal(released[k], v) for k, v in ema4.items())


def test_guard_stops_training_with_a_clear_error(smoke, tmp_path):
    recipe = OneRewardRecipe(
        config(smoke, tmp_path, steps=6, guard_every=2, guard_patience=1, sample_every=0, checkpoint_every=0)
    )
    real_scores = OneRewardRecipe.heldout_scores
    evaluations = []

    def diverging(self, outputs):  # the judge keeps rising while the held-out truth keeps falling
        judge, heldout = real_scores(self, outputs)
        k = len(evaluations)
        evaluations.append(k)
        return {key: 0.5 + 0.1 * k for key in judge}, {key: 0.9 - 0.2 * k for key in heldout}

    recipe.heldout_scores = diverging.__get__(recipe)
    recipe.setup()
    with pytest.raises(RewardHackingError, match="reward hacking suspected at step 2"):
        recipe.train()
    summary = json.loads((tmp_path / "static_report/summary.json").read_text())
    assert summary["status"] == "stopped_by_guard" and "step 2" in summary["error"]
    assert "The base (step 0) had the best held-out signal" in summary["error"]
    assert summary["best_heldout"]["step"] == 0  # kept beside it: the base's weights, step 0
    assert [p.name for p in (tmp_path / "static_best").iterdir()] == ["step_0000000"]
    assert not (tmp_path / "static").exists()  # nothing released
