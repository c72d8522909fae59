"""One RL step before the reward (steps/rl/rollout.py): pure per-step draws, the gradient path."""

from __future__ import annotations

import numpy as np

from steps.rl.rollout import draw_step, rollout
from steps.rl.train import OneRewardRecipe
from tests.steps.rl.helpers import QUIET, config


def test_step_draws_are_pure_and_split_batches_across_ranks():
    args = dict(
        seed=3,
        step=11,
        task_probs={"fill": 0.5, "extend": 0.25, "removal": 0.25},
        task_sizes={"fill": 40, "extend": 20, "removal": 20},
        batch_size=4,
        t_range=(2, 3),
    )
    a, again, other = draw_step(rank=0, **args), draw_step(rank=0, **args), draw_step(rank=1, **args)
    assert (a.task, a.t_index, a.noise_seeds) == (again.task, again.t_index, again.noise_seeds)
    assert np.array_equal(a.indices[0], again.indices[0])
    assert (a.task, a.t_index) == (other.task, other.t_index)  # same work on every rank
    assert not np.array_equal(a.indices[0], other.indices[0]) and a.noise_seeds != other.noise_seeds
    draws = [draw_step(rank=0, **{**args, "step": s}) for s in range(400)]
    assert abs([d.task for d in draws].count("fill") / 400 - 0.5) < 0.08
    assert {d.t_index for d in draws} == {2, 3}


def test_gradients_flow_only_through_the_last_step(smoke, tmp_path):
    recipe = OneRewardRecipe(config(smoke, tmp_path, **QUIET)).setup()
    cond, samples = recipe.bank.batch("fill", [0, 1])
    calls = []
    hook = recipe.transformer.register_forward_hook(lambda m, i, out: calls.append(out[0].requires_grad))
    policy_images, reference_images = rollout(
        recipe.pipe,
        cond,
        recipe.policy_forward,
        recipe.reference,
        num_steps=4,
        t_index=3,
        guidance=30.0,
        noise_seeds=(1, 2),
    )
    hook.remove()
    # reference: 4 steps without grad (frozen base copy, not hooked); policy: 3 without grad, the 4th with.
    assert calls == [False, False, False, True]
    assert policy_images.requires_grad and not reference_images.requires_grad
    from steps.rl.reward import onereward_loss

    loss, _ = onereward_loss(
        recipe.judge, policy_images, reference_images, "fill", [s.prompt for s in samples], lam=0.8
    )
    loss.backward()
    grads = [p.grad for p in recipe.transformer.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    frozen = [
        recipe.pipe.vae,
        recipe.pipe.text_encoder,
        recipe.pipe.text_encoder_2,
        recipe.judge.model,
        recipe.base_reference,
    ]
    assert all(p.grad is None and not p.requires_grad for m in frozen for p in m.parameters())
