"""The optimizer every training loop shares and its learning-rate schedules (the recipe shape:
steps/training/recipe.py; checkpoints: steps/training/checkpoints.py; random draws: steps/training/draws.py)."""

from __future__ import annotations

import math
from collections.abc import Callable


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warmup to 1, then cosine decay to 0 at ``total`` (a `LambdaLR` factor)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return f


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
