"""The reward-hacking guard's rule, on synthetic numbers (the recipe's stop is tested in test_release.py)."""

from __future__ import annotations

import json

from steps.rl.guard import RewardHackingGuard


def test_guard_rule_on_synthetic_numbers():
    guard = RewardHackingGuard(margin=0.1, min_rise=0.02, patience=2)
    judge = {"fill/consistency": 0.5, "fill/structure": 0.5, "removal/removal_quality": 0.5}
    heldout = {"fill/consistency": 0.8, "fill/structure": 0.6, "removal/removal_quality": 0.7}
    assert guard.update(0, judge, heldout) is None  # baseline
    # judge up, held-out up: fine
    assert guard.update(10, {k: 0.7 for k in judge}, {k: v + 0.05 for k, v in heldout.items()}) is None
    # held-out falls but the judge did not rise: a bad step, not reward hacking
    assert guard.update(20, judge, {k: v - 0.3 for k, v in heldout.items()}) is None
    # judge rises while fill/consistency falls by 0.2 > margin: flagged once (patience 2) ...
    hacked = {**heldout, "fill/consistency": 0.6}
    assert guard.update(30, {k: 0.7 for k in judge}, hacked) is None and guard.strikes == 1
    # ... a recovered evaluation resets the count ...
    assert guard.update(40, {k: 0.7 for k in judge}, heldout) is None and guard.strikes == 0
    assert guard.update(50, {k: 0.7 for k in judge}, hacked) is None
    # ... and a second flagged evaluation in a row stops, naming the task and the signal.
    message = guard.update(60, {**judge, "fill/consistency": 0.9, "fill/structure": 0.9}, hacked)
    assert message and "fill/consistency" in message and "removal" not in message
    state = guard.state_dict()
    again = RewardHackingGuard(margin=0.1, min_rise=0.02, patience=2)
    again.load_state_dict(json.loads(json.dumps(state)))
    assert again.history == guard.history and again.strikes == 2


def test_guard_sees_a_rising_training_reward_when_the_heldout_judge_reward_stays_flat():
    """Measured on tiny: the policy learned to please the judge on its one-step x0 predictions (training rewards
    ended at 0.67-0.75) while its full samples got worse and the held-out judge reward stayed flat."""
    guard = RewardHackingGuard(margin=0.1, min_rise=0.02, patience=1)
    judge = {"extend/consistency": 0.38, "extend/structure": 0.34}
    base = {"extend/consistency": 0.52, "extend/structure": 0.70}
    assert guard.update(0, judge, base) is None
    fallen = {"extend/consistency": 0.28, "extend/structure": 0.66}
    assert guard.update(50, judge, fallen, {"extend": (0.35, 0.36)}) is None  # nothing rose: not hacking
    message = guard.update(100, judge, fallen, {"extend": (0.35, 0.70)})
    assert message and "extend: training reward 0.350 -> 0.700" in message and "extend/consistency" in message
    assert guard.history[-1]["train_reward"] == {"extend": [0.35, 0.70]}


def test_guard_tracks_the_best_heldout_evaluation_and_restores_it():
    guard = RewardHackingGuard(margin=0.1)
    assert guard.track_best(0, {"fill/consistency": 0.6, "removal/removal_quality": 0.8})  # the base
    assert not guard.track_best(10, {"fill/consistency": 0.5, "removal/removal_quality": 0.8})
    assert guard.track_best(20, {"fill/consistency": 0.7, "removal/removal_quality": 0.8})
    assert not guard.track_best(30, {"fill/consistency": 0.7, "removal/removal_quality": 0.8})  # a tie is not better
    assert not guard.track_best(40, {})
    assert guard.best == {"step": 20, "score": 0.75}
    again = RewardHackingGuard(margin=0.1)
    again.load_state_dict(json.loads(json.dumps(guard.state_dict())))
    assert again.best == guard.best
    again.load_state_dict({"history": [], "strikes": 0})  # a checkpoint written before best was tracked
    assert again.best == {}


def _pairs(smoke):
    """Validation conditions of the smoke world, their targets and the targets with a noisy edited region."""
    import numpy as np
    import torch

    from steps.data.datasets import load_samples
    from steps.rl.rollout import pixels

    samples = [s for s in load_samples(smoke / "data/validation") if s.task == "fill"]
    good = pixels(samples, "target", "cpu")
    noise = torch.from_numpy(np.random.default_rng(0).random(good.shape).astype(np.float32))
    mask = pixels(samples, "mask", "cpu")
    return samples, good, mask * noise + (1 - mask) * good


def test_onpolicy_agreement_is_high_for_a_truthful_judge_and_low_for_a_contrary_one(smoke):
    from steps.rl.guard import onpolicy_agreement
    from steps.rl.oracle import OracleReward

    samples, good, bad = _pairs(smoke)
    oracle = OracleReward()
    agree, n = onpolicy_agreement(oracle, good, bad, "fill", samples, 0.02)
    assert n >= len(samples) and agree > 0.9
    contrary, n2 = onpolicy_agreement(oracle, bad, good, "fill", samples, 0.02)
    assert n2 == n and contrary > 0.9  # the order of the pair does not matter to a truthful judge

    class Contrary(OracleReward):
        def p_yes(self, first, second, rows, dims, samples):
            return 1 - super().p_yes(first, second, rows, dims, samples)

    wrong, _ = onpolicy_agreement(Contrary(), good, bad, "fill", samples, 0.02)
    assert wrong < 0.1


def test_pasted_outputs_keep_the_source_outside_the_mask(smoke):
    import torch

    from steps.rl.guard import pasted
    from steps.rl.rollout import pixels

    samples, good, bad = _pairs(smoke)
    out = pasted({"fill": torch.rand_like(bad)}, {"fill": samples})["fill"]
    source, mask = pixels(samples, "image", "cpu"), pixels(samples, "mask", "cpu")
    assert torch.equal(out * (1 - mask), source * (1 - mask))
