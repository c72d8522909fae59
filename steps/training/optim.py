"""Pieces every training loop shares: the optimizer and its learning-rate schedules, per-step random draws
and the world pool that foundation training draws from (the recipe shape: steps/training/recipe.py; checkpoints:
steps/training/checkpoints.py).

Resume is exact on CPU because nothing random is carried from one step to the next: every step draws its
batch and noise from ``step_rng(seed, phase, step)``, so a checkpoint needs only the weights, the optimizer,
the scheduler and the step number.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

FOUNDATION_INDEX_OFFSET = 2_000_000  # world indices of the foundation pool: no train or benchmark sample has them


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warmup to 1, then cosine decay to 0 at ``total`` (a `LambdaLR` factor)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return f


def step_rng(seed: int, phase: int, step: int) -> np.random.Generator:
    """The random draws of one training step, independent of every other step (exact resume)."""
    return np.random.default_rng([seed, phase, step])


def torch_generator(rng: np.random.Generator):
    import torch

    return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))


def world_pool(size: int, n: int, seed: int = 0, offset: int = FOUNDATION_INDEX_OFFSET,
               text_fraction: float = 0.2) -> list:
    """``n`` world conditions (all three tasks, the default task mix) at indices ``offset`` onwards."""
    from steps.world import WorldConfig, generate

    return generate(WorldConfig(size=size, seed=seed, text_fraction=text_fraction), n, start=offset)


def warmup_constant(warmup: int) -> Callable[[int], float]:
    """Linear warmup over ``warmup + 1`` steps, then 1 (the RL schedule, a `LambdaLR` factor)."""

    def f(step: int) -> float:
        return min(1.0, (step + 1) / (warmup + 1))

    return f


def adamw(params, lr: float, weight_decay: float, warmup: int, total: int = 0, schedule: str = "cosine",
          fused: bool = False):
    """AdamW with one of the shared schedules: (optimizer, scheduler). ``schedule``: cosine (`lr_lambda`:
    warmup, then cosine decay to 0 at ``total``) | constant (`warmup_constant`). ``fused``: one kernel for all
    tensors (CPU, CUDA)."""
    import torch

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **({"fused": True} if fused else {}))
    factor = lr_lambda(warmup, total) if schedule == "cosine" else warmup_constant(warmup)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
