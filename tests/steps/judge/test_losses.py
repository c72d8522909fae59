"""The judge's losses and the attack it is trained against (steps/judge/losses.py)."""

from __future__ import annotations

import numpy as np


def test_adversarial_images_stay_within_budget_and_raise_the_loss():
    import torch

    from steps.judge.losses import adversarial_images, soft_yes_no_loss, to_float
    from steps.models.judge import Judge
    from steps.models.judge_spec import spec_for
    from steps.world import WorldConfig, make_sample

    judge = Judge.build(spec_for("smoke"))
    samples = [make_sample(WorldConfig(size=32), i, "removal") for i in range(4)]
    first, second = to_float(np.stack([s.target for s in samples])), to_float(np.stack([s.image for s in samples]))
    q = ["Is the first image better than the second?"] * 4
    p = torch.ones(4)
    a, b = adversarial_images(judge, first, second, q, p, budget=0.03, steps=3)
    for x, x0 in ((a, first), (b, second)):
        rms = (x - x0).pow(2).flatten(1).mean(1).sqrt()
        assert (rms <= 0.03 + 1e-5).all() and (rms > 0.005).any()
    with torch.no_grad():
        before, _ = soft_yes_no_loss(judge, first, second, q, p)
        after, _ = soft_yes_no_loss(judge, a, b, q, p)
    assert after > before


def test_attacked_pairs_stay_mirrored_and_within_budget():
    import torch

    from steps.judge.losses import attacked
    from steps.models.judge import Judge
    from steps.models.judge_spec import spec_for
    from steps.world import WorldConfig, make_sample

    judge = Judge.build(spec_for("smoke"))
    samples = [make_sample(WorldConfig(size=32), i, "removal") for i in range(3)]
    firsts, seconds = [], []
    for s in samples:
        firsts += [s.target, s.image]
        seconds += [s.image, s.target]
    queries = ["Is the first image better than the second?"] * 6
    first, second = attacked(judge, [np.stack(firsts), np.stack(seconds)], queries, 2, 0.01, 2)
    assert torch.equal(first[0], second[1]) and torch.equal(second[0], first[1])  # pair 0 mirrored
    target = torch.as_tensor(samples[0].target).permute(2, 0, 1).float() / 255
    rms = (first[0] - target).pow(2).mean().sqrt()
    assert 0 < rms <= 0.01 + 1e-5
    untouched = torch.as_tensor(samples[2].target).permute(2, 0, 1).float() / 255
    assert torch.equal(first[4], untouched)  # the third pair is not attacked
