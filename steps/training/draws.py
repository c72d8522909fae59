"""Per-step random draws of every training loop, and the world pool foundation training draws from.

Resume is exact on CPU because nothing random is carried from one step to the next: every step draws its
batch and noise from ``step_rng(seed, phase, step)``, so a checkpoint needs only the weights, the optimizer,
the scheduler and the step number.
"""

from __future__ import annotations

import numpy as np

FOUNDATION_INDEX_OFFSET = 2_000_000  # world indices of the foundation pool: no train or benchmark sample has them


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
