"""Recipe: OneReward with a policy-gradient update (``update: grpo``), beside the paper's one-step update.

    python -m steps.rl.train --profile tiny --set update=grpo                       # the judge as the reward
    python -m steps.rl.train --profile tiny --set update=grpo --set reward=oracle   # the world's truth (tiny/smoke)

Why (docs/ABLATIONS.md): on `tiny` the judge's pixel gradient points at noise, so the paper's update, which
follows it, makes samples worse; a sampled-reward update never differentiates the judge. What stays OneReward's:
ONE judge, the task x dimension query, both orders, the static or EMA reference. One step (per rank):

1. task k ~ p_k and ``batch_size`` of its conditions, as the one-step recipe draws them (`draw_step`);
2. the reference image of each condition: the frozen base (static) or the EMA policy (dynamic), full ODE
   samples from noise e1;
3. G = ``group_size`` samples per condition from the CURRENT policy with no grad: Euler steps, except an SDE
   window of K = ``sde_window`` steps from ``sde_window_start`` at noise level ``sde_a`` (steps/rl/sde.py), whose
   transitions and log-probs are kept; initial noise per sample (``group_noise=independent``: keeps the
   base's spread) or per condition (``shared``: the spread comes from the window alone);
4. reward of a sample: the judge's both-orders preference against its condition's reference, averaged over
   the task's dimensions (`steps.rl.reward.preference_rewards`), on the pasted-back output (``paste_back``:
   what users get); advantage = (r - group mean) / (group std + 1e-4), clipped to +-``adv_clip``;
5. ``inner_epochs`` optimizer steps: for each window step, the log-prob of the stored transition under the
   policy (with grad), ratio = exp(new - old), PPO's clipped surrogate at ``clip_range``; optional KL to the
   base, ``kl_beta`` * ||mu_theta - mu_base||^2 / (2 std^2); AdamW, gradient clip, EMA update.

With one inner epoch the ratio is exactly 1 at the gradient (REINFORCE with a group baseline). Everything else
-- checkpoints, exact resume (every draw from (seed, step, rank)), the validation split, the guard, the
release -- is the one-step recipe's (steps/rl/train.py), which this recipe extends by its `train_step` alone.
"""

from __future__ import annotations

import contextlib
import time

import torch

from steps.rl.train import OneRewardRecipe


def group_advantages(rewards: torch.Tensor, clip: float) -> torch.Tensor:
    """(r - mean) / (std + 1e-4) within each group (row of ``rewards``, shape (conditions, G)), clipped."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return ((rewards - mean) / (std + 1e-4)).clamp(-clip, clip)


def clipped_surrogate(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                      clip_range: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's loss max(-A r, -A clip(r, 1 - eps, 1 + eps)) averaged; returns (loss, ratio, clipped share)."""
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    return loss, ratio.detach(), ((ratio - 1).abs() > clip_range).float().mean().detach()


class GrpoRecipe(OneRewardRecipe):
    """The one-step recipe with its update replaced by the policy gradient (see the module docstring)."""

    def rollout_group(self, draw, micro: int) -> dict:
        """Step 2-4 for one micro-batch: the group's window trajectories, rewards and advantages (no grad)."""
        from steps.models.denoise import decode, denoise, sample_noise
        from steps.rl.reward import preference_rewards
        from steps.rl.rollout import judge_source, paste_back, pixels
        from steps.rl.sde import sample_window

        cfg, acc = self.cfg, self.accelerator
        indices, (seed_ref, seed_policy) = draw.indices[micro], draw.noise_seeds[micro]
        cond, samples = self.bank.batch(draw.task, indices)
        g = cfg.group_size
        repeat = torch.arange(len(samples)).repeat_interleave(g)
        group_cond = cond.select(repeat.to(cond.prompt_embeds.device))
        group_samples = [samples[int(i)] for i in repeat]
        with torch.no_grad(), acc.autocast():
            with self.reference() as ref:
                e1 = sample_noise(self.pipe, cond, torch.Generator().manual_seed(seed_ref))
                reference = decode(self.pipe, denoise(self.pipe, cond, cfg.denoise_steps, cfg.guidance, noise=e1,
                                                      transformer=ref), cond.height, cond.width)
            policy_gen = torch.Generator().manual_seed(seed_policy)
            if cfg.group_noise == "shared":
                noise = sample_noise(self.pipe, cond, policy_gen)[repeat.to(cond.prompt_embeds.device)]
            else:
                noise = sample_noise(self.pipe, group_cond, policy_gen)
            roll = sample_window(self.pipe, group_cond, self.policy_forward, cfg.denoise_steps, cfg.guidance, noise,
                                 cfg.sde_window_start, cfg.sde_window, cfg.sde_a, policy_gen)
            images = decode(self.pipe, roll.latents, cond.height, cond.width).float()
            source = pixels(group_samples, "image", acc.device)
            references = reference.float()[repeat.to(reference.device)]
            if cfg.paste_back:
                mask = pixels(group_samples, "mask", acc.device)
                images, references = paste_back(images, source, mask), paste_back(references, source, mask)
            shown = judge_source(group_samples, acc.device) if cfg.judge_sees_source else None
            rewards, stats = preference_rewards(self.scorer, images, references, draw.task,
                                                [s.prompt for s in group_samples], shown, group_samples)
        advantages = group_advantages(rewards.view(len(samples), g), cfg.adv_clip).reshape(-1)
        return {"cond": group_cond, "roll": roll, "advantages": advantages, "rewards": rewards, "stats": stats,
                "samples": group_samples, "images": images, "references": references}

    def policy_loss(self, group: dict, k: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The clipped surrogate (+ KL) of window step k of one micro-batch, with grad into the policy."""
        from steps.rl.sde import window_log_prob

        cfg = self.cfg
        roll, adv = group["roll"], group["advantages"].to(self.accelerator.device)
        step = window_log_prob(self.pipe, group["cond"], self.policy_forward, roll, k, cfg.guidance, cfg.sde_a)
        loss, ratio, clipped = clipped_surrogate(step.log_prob, roll.log_probs[k].to(step.log_prob.device), adv,
                                                 cfg.clip_range)
        parts = {"ratio": ratio.mean(), "ratio_dev": (ratio - 1).abs().max(), "clip_frac": clipped}
        if cfg.kl_beta > 0:
            with torch.no_grad(), self.base_model() as base:
                ref_step = window_log_prob(self.pipe, group["cond"], base, roll, k, cfg.guidance, cfg.sde_a)
            kl = ((step.mean - ref_step.mean) ** 2).mean(dim=tuple(range(1, step.mean.ndim))) / (2 * step.std**2)
            loss = loss + cfg.kl_beta * kl.mean()
            parts["kl"] = kl.mean().detach()
        return loss, parts

    def train_step(self, step: int) -> dict[str, float]:
        from steps.rl.reward import stats_to_metrics
        from steps.rl.rollout import draw_step

        cfg, acc = self.cfg, self.accelerator
        t0 = time.perf_counter()
        draw = draw_step(cfg.seed, step, self.rank, cfg.task_probs, self.bank.sizes, cfg.batch_size,
                         (0, 0), cfg.grad_accum)
        groups = [self.rollout_group(draw, micro) for micro in range(cfg.grad_accum)]
        sampled = time.perf_counter()
        window = cfg.sde_window
        parts_sum: dict[str, float] = {}
        loss_sum, grad_norm = 0.0, torch.zeros(())
        for _ in range(cfg.inner_epochs):
            for micro, group in enumerate(groups):
                for k in range(window):
                    last = micro == len(groups) - 1 and k == window - 1
                    sync = contextlib.nullcontext() if last else acc.no_sync(self.policy)
                    with sync, acc.autocast():
                        loss, parts = self.policy_loss(group, k)
                        acc.backward(loss / (window * len(groups)))
                    loss_sum += float(loss.detach()) / (window * len(groups) * cfg.inner_epochs)
                    for name, value in parts.items():
                        parts_sum[name] = max(parts_sum.get(name, 0.0), float(value)) if name == "ratio_dev" \
                            else parts_sum.get(name, 0.0) + float(value) / (window * len(groups) * cfg.inner_epochs)
            grad_norm = acc.clip_grad_norm_(list(self.params.values()), cfg.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.ema.update(self.params)
        last = groups[-1]
        self.last_batch = (last["samples"], last["references"].cpu(), last["images"].cpu())
        stats = sum(g["stats"] for g in groups)
        metrics = stats_to_metrics(draw.task, acc.reduce(stats, reduction="sum").cpu())
        rewards = torch.cat([g["rewards"].view(-1, cfg.group_size) for g in groups])
        metrics.update({f"grpo/{name}": value for name, value in parts_sum.items()})
        metrics["grpo/reward_mean"] = float(rewards.mean())
        metrics["grpo/reward_group_std"] = float(rewards.std(dim=1, unbiased=False).mean())
        metrics["grpo/sample_seconds"] = sampled - t0
        return {**metrics, "loss": float(acc.reduce(torch.tensor(loss_sum), reduction="mean")),
                "lr": self.scheduler.get_last_lr()[0], "grad_norm": float(grad_norm), "t_index": -1,
                "step_seconds": time.perf_counter() - t0}
