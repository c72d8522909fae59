"""The fill model's sampler with a stochastic window and log-probabilities: what a policy-gradient update needs.

Flow-GRPO's SDE step for rectified flows (x_t = (1 - sigma) x0 + sigma eps, v = eps - x0), as in flow_grpo's
``sde_step_with_logprob``; docs/DESIGN.md §4 ("Policy-gradient update"):

    sigma_t = a * sqrt(sigma / (1 - sigma))                 (sigma = 1 replaced by the schedule's second sigma)
    mean    = x + [v * (1 + sigma_t^2 (1 - sigma) / (2 sigma)) + x * sigma_t^2 / (2 sigma)] * dt    (dt < 0)
    x_next  = mean + sigma_t * sqrt(-dt) * z,   z ~ N(0, I)
    log p(x_next | x) = mean over dimensions of log N(x_next; mean, (sigma_t sqrt(-dt))^2)

``a = 0`` is the Euler ODE step, bit for bit (tested against `steps.models.denoise.denoise`). Only a WINDOW of
K steps is stochastic (and trained); the others are Euler steps (Flow-GRPO-Fast, MixGRPO): the spread between
samples of one condition is made in the early steps, and low-noise late steps give unstable log-probs.

- `sde_step`: one step (sampling, or the log-prob of a given ``x_next`` with grad through ``v``);
- `sample_window`: a whole trajectory, no grad, returning the window's states, next states and log-probs;
- `window_log_prob`: the log-prob of one stored window transition under a (trainable) transformer, with grad.
The policy-gradient update that uses them is steps/rl/grpo.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class SdeStep:
    """One SDE step: the next latents, their log-prob (B,), the step's mean and its std (a scalar tensor)."""

    x_next: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def step_std(sigma: torch.Tensor, sigma_cap: float, a: float) -> torch.Tensor:
    """sigma_t = a sqrt(sigma / (1 - sigma)); at sigma = 1 (pure noise) the schedule's second sigma stands in."""
    sigma = sigma.float()
    safe = torch.where(sigma >= 1.0, torch.full_like(sigma, sigma_cap), sigma)
    return a * torch.sqrt(sigma / (1 - safe))


def sde_step(v: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, a: float,
             sigma_cap: float, x_next: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> SdeStep:
    """One step from ``x`` at ``sigma`` to ``sigma_next`` (< sigma) with the predicted velocity ``v``.

    ``x_next=None``: draw it (noise from ``generator``, on CPU, so the draw does not depend on the device);
    else its log-prob under this step (grad flows through ``v``; ``x_next`` is treated as data). ``a = 0``
    gives the Euler step and a log-prob of zeros (a deterministic step has no density to learn from).
    """
    v32, x32 = v.float(), x.float()
    sigma, sigma_next = sigma.float(), sigma_next.float()
    dt = sigma_next - sigma
    if a == 0:
        mean = x32 + dt * v32  # FlowMatchEulerDiscreteScheduler.step, exactly
        out = mean if x_next is None else x_next.float()
        zeros = torch.zeros(x.shape[0], device=x.device)
        return SdeStep(out.to(v.dtype) if x_next is None else out, zeros, mean, torch.zeros((), device=x.device))
    std_t = step_std(sigma, sigma_cap, a).to(x.device)
    mean = (x32 * (1 + std_t**2 / (2 * sigma) * dt)
            + v32 * (1 + std_t**2 * (1 - sigma) / (2 * sigma)) * dt)
    scale = std_t * torch.sqrt(-dt)
    if x_next is None:
        z = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)
        x_next = mean + scale * z
    x_next = x_next.detach().float()
    log_prob = (-((x_next - mean) ** 2) / (2 * scale**2) - torch.log(scale)
                - 0.5 * math.log(2 * math.pi))
    log_prob = log_prob.mean(dim=tuple(range(1, log_prob.ndim)))
    return SdeStep(x_next, log_prob, mean, scale)


@dataclass
class WindowRollout:
    """A trajectory of the window sampler: final latents and the K stochastic transitions (no grad)."""

    latents: torch.Tensor  # (B, N, C) packed final latents (decode with steps.models.denoise.decode)
    states: torch.Tensor  # (K, B, N, C): x before each window step
    next_states: torch.Tensor  # (K, B, N, C): x after it
    log_probs: torch.Tensor  # (K, B): log-prob of each transition under the sampling transformer
    step_indices: list[int]  # the K indices into the schedule
    timesteps: torch.Tensor  # (K,) the schedule's timesteps (0..1000) at those steps
    sigmas: torch.Tensor  # (K,) sigma at each window step
    next_sigmas: torch.Tensor  # (K,) sigma after it
    sigma_cap: float


def window_indices(num_steps: int, start: int, size: int) -> list[int]:
    """The K schedule indices of the stochastic window [start, start + size), checked against T."""
    if not (0 <= start and size >= 1 and start + size <= num_steps):
        raise ValueError(f"SDE window [{start}, {start + size}) must lie inside the {num_steps} steps")
    return list(range(start, start + size))


@torch.no_grad()
def sample_window(pipe, cond, transformer, num_steps: int, guidance: float, noise: torch.Tensor,
                  window_start: int, window: int, a: float, generator: torch.Generator) -> WindowRollout:
    """Sample the fill model: Euler steps, except SDE steps at [window_start, window_start + window).

    ``noise``: packed initial noise (B, N, C) (`steps.models.denoise.sample_noise`); ``generator``: the
    window's step noise (CPU). With ``a = 0`` the final latents equal `denoise(...)` from the same noise."""
    from steps.models.denoise import make_scheduler, velocity

    scheduler, timesteps = make_scheduler(pipe, cond, num_steps)
    sigmas = scheduler.sigmas.to(noise.device)
    sigma_cap = float(sigmas[1]) if len(sigmas) > 1 else 0.5
    chosen = set(window_indices(len(timesteps), window_start, window))
    x = noise.to(device=cond.prompt_embeds.device, dtype=cond.prompt_embeds.dtype)
    states, nexts, log_probs, picked = [], [], [], []
    for i, t in enumerate(timesteps):
        v = velocity(pipe, transformer, x, t, cond, guidance)
        step = sde_step(v, x, sigmas[i], sigmas[i + 1], a if i in chosen else 0.0, sigma_cap,
                        generator=generator)
        if i in chosen:
            states.append(x.float())
            nexts.append(step.x_next.float())
            log_probs.append(step.log_prob)
            picked.append(i)
        x = step.x_next.to(x.dtype)
    index = torch.tensor(picked, dtype=torch.long)
    return WindowRollout(latents=x, states=torch.stack(states), next_states=torch.stack(nexts),
                         log_probs=torch.stack(log_probs), step_indices=picked,
                         timesteps=timesteps.detach().cpu()[index], sigmas=sigmas.cpu()[index],
                         next_sigmas=sigmas.cpu()[index + 1], sigma_cap=sigma_cap)


def window_log_prob(pipe, cond, transformer, rollout: WindowRollout, k: int, guidance: float, a: float,
                    rows: torch.Tensor | None = None) -> SdeStep:
    """Log-prob (with grad through ``transformer``) of the k-th stored window transition of ``rows``."""
    from steps.models.denoise import velocity

    x, x_next = rollout.states[k], rollout.next_states[k]
    if rows is not None:
        x, x_next = x[rows], x_next[rows]
    device = cond.prompt_embeds.device
    t = rollout.timesteps[k].to(device)
    v = velocity(pipe, transformer, x.to(device, cond.prompt_embeds.dtype), t, cond, guidance)
    return sde_step(v, x.to(device), rollout.sigmas[k].to(device), rollout.next_sigmas[k].to(device), a,
                    rollout.sigma_cap, x_next=x_next.to(device))
