"""The recipe shape (steps/training/recipe.py) and its checkpointer (steps/training/checkpoints.py), without models."""

from __future__ import annotations

import inspect

import pytest
import torch

from steps.training.checkpoints import Checkpointer, latest_checkpoint
from steps.training.recipe import Recipe, due, progress


def test_the_four_training_loops_are_recipes():
    from steps.foundations.base_pretrain import BaseRecipe
    from steps.foundations.judge_pretrain import JudgePretrainRecipe
    from steps.judge.train import JudgeRecipe
    from steps.rl.train import OneRewardRecipe

    for cls in (BaseRecipe, JudgePretrainRecipe, JudgeRecipe, OneRewardRecipe):
        assert issubclass(cls, Recipe) and not inspect.isabstract(cls), cls


def _model_and_optimizer():
    from steps.training.optim import adamw

    model = torch.nn.Linear(3, 2)
    return model, *adamw(model.parameters(), 1e-2, 0.01, 2, 10)


def test_checkpointer_writes_atomically_rotates_and_restores(tmp_path):
    model, opt, sched = _model_and_optimizer()
    ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
    assert ckpt.latest() is None
    for step in (1, 2, 3):
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        sched.step()
        ckpt.save_training(step, {"model": model}, opt, sched, {"config": {"lr": 1e-2}, "curve": [0.5] * step})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step_0000002", "step_0000003"]
    (tmp_path / "ckpt" / "step_0000009").mkdir()  # a folder without state.json is not a checkpoint
    assert ckpt.latest() == latest_checkpoint(tmp_path / "ckpt") == tmp_path / "ckpt" / "step_0000003"

    other, opt2, sched2 = _model_and_optimizer()
    state, _ = ckpt.restore(ckpt.latest(), {"model": other}, opt2, sched2, config={"lr": 1e-2}, must_match=("lr",))
    assert state["step"] == 3 and state["curve"] == [0.5] * 3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert sched2.last_epoch == sched.last_epoch and opt2.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
    with pytest.raises(ValueError, match="cannot resume.*lr"):
        ckpt.restore(ckpt.latest(), {"model": other}, config={"lr": 1.0}, must_match=("lr",))


def test_checkpointer_restores_the_global_random_state(tmp_path):
    ckpt = Checkpointer(tmp_path)
    torch.manual_seed(0)
    ckpt.save(1, {}, {}, {})
    after = torch.rand(3)
    torch.rand(5)
    ckpt.load(ckpt.latest(), [], [])
    assert torch.equal(torch.rand(3), after)


def test_cadence_and_progress():
    assert [s for s in range(1, 11) if due(s, 4, 10)] == [4, 8, 10]
    assert not due(3, 0) and due(3, 0, 3)
    bar = progress(range(3, 10), "x", disable=True)
    assert bar.n == 3 and bar.total == 10 and list(bar) == list(range(3, 10))


def test_check_resume_compares_values_as_json_stores_them(tmp_path):
    """A tuple field saved as a JSON list is the same value; another value is refused with both shown; a field the
    checkpoint's code did not have yet is not compared."""
    import pytest

    from steps.training.checkpoints import check_resume

    saved = {"tasks": ["removal"], "grid": 2, "lr": 1e-3}
    check_resume(tmp_path, saved, {"tasks": ("removal",), "grid": 2, "lr": 1e-3, "new": 5}, ("tasks", "grid", "new"))
    with pytest.raises(ValueError, match=r"'grid': \(2, 1\)"):
        check_resume(tmp_path, saved, {"tasks": ("removal",), "grid": 1}, ("tasks", "grid"))
    with pytest.raises(ValueError, match="tasks"):
        check_resume(tmp_path, saved, {"tasks": (), "grid": 2}, ("tasks", "grid"))
