"""The judge's losses and the attack it is trained to resist, shared by judge pretraining and judge training."""

from __future__ import annotations

import numpy as np


def soft_yes_no_loss(judge, first, second, queries: list[str], p_first, source=None):
    """Both orders: CE of the answer token against the soft label (Yes with p, No with 1 - p) over the full
    vocabulary, for (first, second, p) and (second, first, 1 - p); returns (loss, margins of the first order).
    ``source``: the masked source as a third image of every row (None: two images)."""
    import torch

    groups = [torch.cat([first, second]), torch.cat([second, first])]
    if source is not None:
        groups.append(torch.cat([source, source]))
    logits = judge.image_logits(groups, queries + queries)
    logp = torch.log_softmax(logits, -1)
    p = torch.cat([p_first, 1 - p_first])
    loss = -(p * logp[:, judge.yes_id] + (1 - p) * logp[:, judge.no_id]).mean()
    margin = (logits[:, judge.yes_id] - logits[:, judge.no_id]).detach()
    return loss, margin[: len(queries)]


def to_float(images: np.ndarray):
    import torch

    return torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255.0


def rms_project(delta, budget: float):
    """Scale each image's perturbation down to RMS <= budget."""
    import torch

    rms = delta.pow(2).flatten(1).mean(1).sqrt().clamp_min(1e-12)
    return delta * torch.clamp(budget / rms, max=1.0)[:, None, None, None]


def adversarial_images(judge, first, second, queries: list[str], p_first, budget: float, steps: int,
                       source=None):
    """PGD-style attack on both images of each pair within an RMS budget: normalised gradient steps that raise
    the judge's loss against the current labels. Returns perturbed (first, second) in [0, 1], detached."""
    import torch

    deltas = [torch.zeros_like(first), torch.zeros_like(second)]
    step_size = budget / max(1, steps) * 1.5
    was_training = judge.model.training
    judge.eval()
    for _ in range(steps):
        for d in deltas:
            d.requires_grad_(True)
        loss, _ = soft_yes_no_loss(judge, (first + deltas[0]).clamp(0, 1), (second + deltas[1]).clamp(0, 1),
                                   queries, p_first, source)
        grads = torch.autograd.grad(loss, deltas)
        with torch.no_grad():
            for k, g in enumerate(grads):
                g_rms = g.pow(2).flatten(1).mean(1).sqrt().clamp_min(1e-12)[:, None, None, None]
                deltas[k] = rms_project(deltas[k] + step_size * g / g_rms, budget).detach()
    judge.train(was_training)
    return (first + deltas[0]).clamp(0, 1).detach(), (second + deltas[1]).clamp(0, 1).detach()


def yes_no_loss(judge, groups: list, queries: list[str], labels):
    """Mean CE of the Yes/No answer token (labels: bool tensor, True = Yes) and the Yes-No margins."""
    import torch

    logits = judge.image_logits(groups, queries)
    target = torch.where(labels, torch.tensor(judge.yes_id), torch.tensor(judge.no_id))
    loss = torch.nn.functional.cross_entropy(logits, target)
    return loss, (logits[:, judge.yes_id] - logits[:, judge.no_id]).detach()


def attacked(judge, groups: list, queries: list[str], n_pairs: int, budget: float, steps: int) -> list:
    """The first ``n_pairs`` pairs of a both-orders batch (rows 2k: winner first, 2k+1: loser first) replaced
    by an attack that pushes the judge towards the wrong answer within ``budget`` (labels kept)."""
    import torch

    from steps.judge.losses import adversarial_images, to_float

    first, second = to_float(groups[0]), to_float(groups[1])
    winners, losers = first[0:2 * n_pairs:2], second[0:2 * n_pairs:2]
    w, lo = adversarial_images(judge, winners, losers, queries[0:2 * n_pairs:2], torch.ones(n_pairs), budget, steps)
    first[0:2 * n_pairs:2], second[0:2 * n_pairs:2] = w, lo
    first[1:2 * n_pairs:2], second[1:2 * n_pairs:2] = lo, w
    return [first, second]
