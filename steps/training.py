"""Pieces every training loop shares: the learning-rate schedule, per-step random draws, resumable checkpoints
and the world pool that foundation training draws from.

Resume is exact on CPU because nothing random is carried from one step to the next: every step draws its
batch and noise from ``step_rng(seed, phase, step)``, so a checkpoint needs only the weights, the optimizer,
the scheduler and the step number.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


class Checkpoints:
    """Atomic, rotated checkpoints of one training run under ``root`` (safetensors + optimizer + step).

    ``save(step, tensors, objects, state)``: tensors are {group: {name: tensor}}, objects go through
    torch.save (optimizer/scheduler state dicts, loaded back with weights_only=True), state is JSON.
    """

    def __init__(self, root: str | os.PathLike, keep: int = 2):
        from steps.rl_utils import CheckpointWriter

        self.root = Path(root)
        self.writer = CheckpointWriter(self.root, rank=0, world_size=1, barrier=lambda: None, keep=keep)

    def latest(self) -> Path | None:
        from steps.rl_utils import latest_checkpoint

        return latest_checkpoint(self.root) if self.root.is_dir() else None

    def save(self, step: int, tensors: dict[str, dict[str, Any]], objects: dict[str, Any],
             state: dict[str, Any]) -> Path:
        return self.writer.save(step, tensors, objects, state)

    def load(self, folder: Path, tensor_names: list[str], object_names: list[str]):
        return self.writer.load(folder, tensor_names, object_names)


def check_resume(folder: Path, saved: dict[str, Any] | None, current: dict[str, Any], fields: tuple[str, ...]) -> None:
    """Refuse to resume a checkpoint written with other values of ``fields`` (the schedule, the data)."""
    if not saved:
        return
    changed = {k: (saved.get(k), current.get(k)) for k in fields if saved.get(k) != current.get(k)}
    if changed:
        raise ValueError(f"{folder}: cannot resume, config field(s) differ from the checkpoint's "
                         f"(checkpoint, now): {changed}; use another checkpoint_dir or delete {folder.parent}")


def module_tensors(module) -> dict[str, Any]:
    return {k: v.detach().contiguous() for k, v in module.state_dict().items()}


def load_module(module, tensors: dict[str, Any]) -> None:
    missing, unexpected = module.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def adamw(params, lr: float, weight_decay: float, warmup: int, total: int):
    """AdamW with the shared warmup + cosine schedule: (optimizer, scheduler)."""
    import torch

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total))
