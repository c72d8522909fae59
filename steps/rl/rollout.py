"""One step of the OneReward RL recipe (steps/rl/train.py) before the reward: what it draws and how it rolls out.

- `draw_step`: every random choice of one training step derived from (seed, step, rank), so a resumed
  run repeats an uninterrupted one exactly and DDP ranks draw different batches of the same task;
- `ConditionBank`: a split's conditions grouped by task, encoded once (`encode_conditions`) and cached;
  `pixels` and `judge_source`: the images of a batch as tensors;
- `rollout`: docs/DESIGN.md §4 steps 2-3 (reference image, one-step policy x0 with grad), `paste_back`.
The reward and loss of step 4 are in steps/rl/reward.py; the trainable policy (LoRA, EMA) in
steps/rl/policy.py; the guard in steps/rl/guard.py; checkpoints in steps/training/checkpoints.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# ---------------------------------------------------------------- per-step randomness


@dataclass(frozen=True)
class StepDraw:
    """The random choices of one optimizer step on one rank (``indices``/``noise_seeds`` per micro-batch)."""

    task: str
    t_index: int
    indices: list[np.ndarray]
    noise_seeds: list[tuple[int, int]]


def draw_step(seed: int, step: int, rank: int, task_probs: dict[str, float], task_sizes: dict[str, int],
              batch_size: int, t_range: tuple[int, int], micro_batches: int = 1) -> StepDraw:
    """Task and t are shared by all ranks (same work per rank); conditions and noises e1, e2 are per rank.

    Pure in its arguments: no global RNG is read, which is what makes resume exact.
    """
    shared = np.random.default_rng([seed, step, 0])
    tasks = [t for t, p in task_probs.items() if p > 0]
    probs = np.array([task_probs[t] for t in tasks], dtype=np.float64)
    task = tasks[int(shared.choice(len(tasks), p=probs / probs.sum()))]
    t_index = int(shared.integers(t_range[0], t_range[1] + 1))
    indices, seeds = [], []
    for micro in range(micro_batches):
        local = np.random.default_rng([seed, step, 1, rank, micro])
        n = task_sizes[task]
        indices.append(local.choice(n, size=batch_size, replace=n < batch_size))
        e1, e2 = (int(s) for s in local.integers(0, 2**62, size=2))
        seeds.append((e1, e2))
    return StepDraw(task, t_index, indices, seeds)


# ---------------------------------------------------------------- conditions


class ConditionBank:
    """The conditions of a split grouped by task, for batches by index (encoded once when ``cache``)."""

    def __init__(self, pipe, samples: list, cache: bool = True, chunk: int = 64):
        self.pipe = pipe
        self.samples: dict[str, list] = {}
        for s in samples:
            self.samples.setdefault(s.task, []).append(s)
        self.cache: dict[str, Any] = {}
        if cache:
            for task, group in self.samples.items():
                parts = [self._encode(group[i:i + chunk]) for i in range(0, len(group), chunk)]
                self.cache[task] = _concat_conditions(parts)

    def _encode(self, samples: list):
        from steps.models.denoise import encode_conditions

        return encode_conditions(self.pipe, np.stack([s.image for s in samples]),
                                 np.stack([s.mask for s in samples]), [s.prompt for s in samples])

    @property
    def sizes(self) -> dict[str, int]:
        return {task: len(group) for task, group in self.samples.items()}

    def batch(self, task: str, indices) -> tuple[Any, list]:
        """(FillConditions, samples) of ``indices`` into the task's list."""
        picked = [self.samples[task][int(i)] for i in indices]
        if task in self.cache:
            return self.cache[task].select(torch.as_tensor(np.asarray(indices), dtype=torch.long)), picked
        return self._encode(picked), picked


def _concat_conditions(parts: list):
    from steps.models.denoise import FillConditions

    first = parts[0]
    return FillConditions(
        prompt_embeds=torch.cat([p.prompt_embeds for p in parts]),
        pooled_prompt_embeds=torch.cat([p.pooled_prompt_embeds for p in parts]),
        text_ids=first.text_ids,
        masked_image_latents=torch.cat([p.masked_image_latents for p in parts]),
        latent_image_ids=first.latent_image_ids, height=first.height, width=first.width)


def pixels(samples: list, attr: str, device) -> torch.Tensor:
    """Bx3xHxW float [0, 1] (images) or Bx1xHxW {0, 1} (``attr="mask"``) from samples."""
    from steps.models.denoise import to_image_tensor, to_mask_tensor

    stack = np.stack([getattr(s, attr) for s in samples])
    return (to_mask_tensor(stack) if attr == "mask" else to_image_tensor(stack)).to(device)


def judge_source(samples: list, device) -> torch.Tensor:
    """The judge's optional third image: the source with the region to generate blanked to grey, exactly as
    in judge training (steps.vocabulary.masked_source), Bx3xHxW float [0, 1]."""
    from steps.models.denoise import to_image_tensor
    from steps.vocabulary import masked_source

    return to_image_tensor(np.stack([masked_source(s.image, s.mask) for s in samples])).to(device)


# ---------------------------------------------------------------- rollout


def rollout(pipe, cond, policy, reference, num_steps: int, t_index: int, guidance: float,
            noise_seeds: tuple[int, int], autocast: Callable = contextlib.nullcontext, anchor=None):
    """(policy images with grad, reference images without[, anchor]) for one batch of conditions.

    ``anchor``: a context manager yielding the BASE transformer; then a third value is returned, the
    velocity-space anchor mean((v_policy - v_base)^2) on the same x_t at the grad step (Flow-GRPO's KL term
    for rectified flows: it holds the policy near the base where the reward does not ask it to move).

    ``reference``: a context manager yielding the transformer that makes the reference image (frozen
    base, adapter-disabled policy or EMA policy); ``policy``: the trainable transformer (or its DDP
    wrapper). Noises e1 (reference) and e2 (policy) are independent, drawn on CPU from their seeds.
    """
    from steps.models.denoise import decode, denoise, sample_noise

    e1 = sample_noise(pipe, cond, torch.Generator().manual_seed(noise_seeds[0]))
    e2 = sample_noise(pipe, cond, torch.Generator().manual_seed(noise_seeds[1]))
    with torch.no_grad(), autocast(), reference() as ref:
        ref_images = decode(pipe, denoise(pipe, cond, num_steps, guidance, noise=e1, transformer=ref),
                            cond.height, cond.width)
    with autocast():
        x0, x_t, t, v = denoise(pipe, cond, num_steps, guidance, noise=e2, stop_at=t_index, grad_last=True,
                                transformer=policy, with_state=True)
        policy_images = decode(pipe, x0, cond.height, cond.width)
    if anchor is None:
        return policy_images, ref_images.detach()
    from steps.models.denoise import velocity

    with torch.no_grad(), autocast(), anchor() as base:
        v_base = velocity(pipe, base, x_t.detach(), t, cond, guidance)
    return policy_images, ref_images.detach(), (v.float() - v_base.float()).pow(2).mean()


def paste_back(images: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep generated pixels inside the mask only (1 = generate)."""
    return mask * images + (1 - mask) * source.to(images.dtype)
