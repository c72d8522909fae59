"""The two RL updates bench/rl/rl_gpu.py times, composed from the recipes' own functions (the recipes themselves
load saved models, which a random-weight production-size run does not have).

- `one_step`: steps/rl/train.py's update (steps.rl.rollout.rollout + steps.rl.reward.onereward_loss): the
  reference (the base: adapters disabled) denoises all T steps without grad, the policy to t without grad then
  one x0 step with grad, VAE decode, the judge scores policy vs reference through `PairJudge`, backward, AdamW.
- `grpo`: steps/rl/grpo.py's update (GrpoRecipe.train_step with one inner epoch): the reference image, then G
  samples per condition with no grad through `steps.rl.sde.sample_window` (Euler steps except an SDE window of
  K steps), the judge's both-orders reward without grad (`preference_rewards`), group-normalised advantages,
  then K log-prob recomputations with grad (`window_log_prob`) and PPO's clipped surrogate, backward, AdamW.

Both return ``step(i) -> loss`` over a `StepParts` (what `rl_gpu.run` builds once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GUIDANCE = 30.0
PROMPT = "a red circle"


@dataclass
class StepParts:
    """What either update needs: the pipeline (LoRA on its transformer), the judge, the trainable parameters
    and their optimizer, the batch's conditions, the autocast context and the run's arguments."""

    pipe: Any
    judge: Any
    params: dict
    optimizer: Any
    cond: Any
    autocast: Callable
    args: Any

    @contextlib.contextmanager
    def reference(self):
        """The reference transformer: the base, i.e. the policy with its adapters disabled (static reference)."""
        from steps.rl.policy import adapters_disabled

        with adapters_disabled(self.pipe.transformer):
            yield self.pipe.transformer

    def optimizer_step(self) -> None:
        import torch

        torch.nn.utils.clip_grad_norm_(list(self.params.values()), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def one_step(parts: StepParts, t_index: int) -> Callable[[int], float]:
    from steps.rl.reward import onereward_loss
    from steps.rl.rollout import rollout

    args, pipe = parts.args, parts.pipe

    def step(i: int) -> float:
        policy_images, reference_images = rollout(pipe, parts.cond, pipe.transformer, parts.reference, args.T,
                                                  t_index, GUIDANCE, (2 * i, 2 * i + 1), parts.autocast)
        with parts.autocast():
            loss, _ = onereward_loss(parts.judge, policy_images, reference_images, "fill", [PROMPT] * args.batch,
                                     0.8)
        loss.backward()
        parts.optimizer_step()
        return float(loss.detach())

    return step


def grpo(parts: StepParts, group_size: int, sde_window_start: int, sde_window: int, sde_a: float,
         adv_clip: float, clip_range: float) -> Callable[[int], float]:
    """Settings as RLConfig names them (steps/rl/config.py)."""
    import torch

    from steps.models.denoise import decode, denoise, sample_noise
    from steps.rl.grpo import clipped_surrogate, group_advantages
    from steps.rl.reward import preference_rewards
    from steps.rl.sde import sample_window, window_log_prob

    args, pipe, cond = parts.args, parts.pipe, parts.cond
    window, a = sde_window, sde_a
    device = cond.prompt_embeds.device
    repeat = torch.arange(args.batch).repeat_interleave(group_size).to(device)
    group_cond = cond.select(repeat)
    prompts = [PROMPT] * len(repeat)

    def step(i: int) -> float:
        with torch.no_grad(), parts.autocast():
            with parts.reference() as ref:
                e1 = sample_noise(pipe, cond, torch.Generator().manual_seed(2 * i))
                latents = denoise(pipe, cond, args.T, GUIDANCE, noise=e1, transformer=ref)
                references = decode(pipe, latents, cond.height, cond.width).float()[repeat]
            generator = torch.Generator().manual_seed(2 * i + 1)
            noise = sample_noise(pipe, group_cond, generator)
            roll = sample_window(pipe, group_cond, pipe.transformer, args.T, GUIDANCE, noise, sde_window_start,
                                 window, a, generator)
            images = decode(pipe, roll.latents, cond.height, cond.width).float()
            rewards, _ = preference_rewards(parts.judge, images, references, "fill", prompts)
        advantages = group_advantages(rewards.view(args.batch, group_size), adv_clip).reshape(-1).to(device)
        total = 0.0
        for k in range(window):
            with parts.autocast():
                new = window_log_prob(pipe, group_cond, pipe.transformer, roll, k, GUIDANCE, a)
                loss, _, _ = clipped_surrogate(new.log_prob, roll.log_probs[k].to(device), advantages, clip_range)
            (loss / window).backward()
            total += float(loss.detach()) / window
        parts.optimizer_step()
        return total

    return step
