"""The reward-hacking guard of the RL recipe: stop when the judge says "better" and held-out truth says "worse".

- `RewardHackingGuard`: the rule (baseline = the base model at step 0; a task is flagged when its judge or
  training reward rose while a held-out signal fell beyond a margin; `patience` flags in a row stop), and
  the best evaluation so far (highest mean held-out signal), whose weights the recipe keeps;
- `heldout_scores`: the judge reward of held-out samples against the base's, and their held-out signals:
  `world_signals` (smoke / tiny: the world's per-dimension truth) or `kept_region_signals` (flux: the
  kept region's fidelity to the source).
steps.rl.train raises `RewardHackingError` with the guard's message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from steps.rl.reward import onereward_loss, stats_to_metrics


class RewardHackingError(RuntimeError):
    """The judge reward rose while a held-out signal the policy never optimises fell beyond the margin."""


@dataclass
class RewardHackingGuard:
    """Stop when the judge says "better" while the held-out truth says "worse".

    Rule (documented in steps/rl/train.py): the first evaluation (the base model, before any update) is the
    baseline. At a later evaluation a task is flagged when its judge reward (mean P(Yes) of policy vs
    base over its dimensions) exceeds the baseline by more than ``min_rise`` AND some held-out signal of
    that task ("<task>/<name>", in [0, 1], higher = better) is below its baseline by more than
    ``margin``. ``patience`` consecutive flagged evaluations stop training.
    """

    margin: float
    min_rise: float = 0.0
    patience: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)
    strikes: int = 0
    best: dict[str, Any] = field(default_factory=dict)  # {"step", "score"} of the best held-out evaluation

    def track_best(self, step: int, heldout: dict[str, float]) -> bool:
        """Record the evaluation with the highest mean held-out signal; True when ``step`` is the new best.

        The base (step 0) takes part: if nothing beats it, the best step stays 0 -- RL did not help."""
        if not heldout:
            return False
        score = float(np.mean(list(heldout.values())))
        if self.best and score <= self.best["score"]:
            return False
        self.best = {"step": step, "score": score}
        return True

    @staticmethod
    def task_means(judge: dict[str, float]) -> dict[str, float]:
        by_task: dict[str, list[float]] = {}
        for key, value in judge.items():
            by_task.setdefault(key.split("/")[0], []).append(value)
        return {t: float(np.mean(v)) for t, v in by_task.items()}

    def update(self, step: int, judge: dict[str, float], heldout: dict[str, float],
               train_rise: dict[str, tuple[float, float]] | None = None) -> str | None:
        """Record one evaluation; returns the stop message when the rule fires, else None.

        ``train_rise``: per task, (first, latest) mean TRAINING reward over a window of steps -- the reward
        RL actually optimises (one-step x0 predictions). A rise there counts like a rise of the held-out
        judge reward: the policy can learn to please the judge on its x0 predictions while its full samples
        get worse, which the held-out judge reward alone does not show."""
        self.history.append({"step": step, "judge": dict(judge), "heldout": dict(heldout),
                             "train_reward": {t: list(v) for t, v in (train_rise or {}).items()}})
        if len(self.history) == 1:
            return None
        base = self.history[0]
        judge_now, judge_base = self.task_means(judge), self.task_means(base["judge"])
        found = []
        for key, value in heldout.items():
            task = key.split("/")[0]
            if key not in base["heldout"] or task not in judge_now or task not in judge_base:
                continue
            drop = base["heldout"][key] - value
            rises = [(judge_now[task] - judge_base[task], "held-out judge reward", judge_base[task], judge_now[task])]
            if train_rise and task in train_rise:
                first, latest = train_rise[task]
                rises.append((latest - first, "training reward", first, latest))
            rise, what, before, now = max(rises)
            if rise > self.min_rise and drop > self.margin:
                found.append(f"{task}: {what} {before:.3f} -> {now:.3f} while "
                             f"held-out {key} {base['heldout'][key]:.3f} -> {value:.3f}")
        self.strikes = self.strikes + 1 if found else 0
        self.history[-1]["flags"] = found
        if found and self.strikes >= self.patience:
            return (f"reward hacking suspected at step {step} ({self.strikes} evaluation(s) in a row): "
                    + "; ".join(found) + f" (margin {self.margin}, baseline = step {base['step']}). Training "
                    "stopped; lower lr, raise ema_tau or retrain the judge (guard_every=0 turns this off).")
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "strikes": self.strikes, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history, self.strikes = list(state["history"]), int(state["strikes"])
        self.best = dict(state.get("best", {}))


def pasted(outputs: dict[str, torch.Tensor], samples: dict[str, list]) -> dict[str, torch.Tensor]:
    """Each task's outputs (Bx3xHxW in [0, 1]) with the kept source pixels pasted back: what users get."""
    from steps.rl.rollout import paste_back, pixels

    return {task: paste_back(images, pixels(samples[task], "image", images.device),
                             pixels(samples[task], "mask", images.device))
            for task, images in outputs.items()}


def heldout_scores(judge, outputs: dict[str, torch.Tensor], base_outputs: dict[str, torch.Tensor],
                   samples: dict[str, list], signal: str, lam: float, device,
                   autocast: Callable = contextlib.nullcontext,
                   source_images: dict[str, torch.Tensor] | None = None,
                   agreement_margin: float | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """(judge reward of outputs vs the base's per "<task>/<dimension>", held-out signals per "<task>/<name>").

    ``signal``: "world" (`world_signals`) or "kept_region" (`kept_region_signals`). ``source_images``: the
    judge's third image per task, when it was trained with it. ``agreement_margin`` (world signal only): also
    the judge's ON-POLICY agreement with the noise-free annotators on (policy sample, base sample) pairs of the
    same condition, under "<task>/onpolicy_agreement" and "<task>/onpolicy_pairs" in the first dict
    (`onpolicy_agreement`).
    """
    scorer = world_signals if signal == "world" else kept_region_signals
    judge_scores, heldout = {}, {}
    for task, images in outputs.items():
        shown = source_images.get(task) if source_images else None
        with torch.no_grad(), autocast():
            _, stats = onereward_loss(judge, images.to(device), base_outputs[task].to(device), task,
                                      [s.prompt for s in samples[task]], lam,
                                      None if shown is None else shown.to(device), samples=samples[task])
        rewards = stats_to_metrics(task, stats.cpu())
        judge_scores.update({k[len("reward/"):]: v for k, v in rewards.items() if k.startswith("reward/")})
        heldout.update(scorer(images.permute(0, 2, 3, 1).numpy(), samples[task]))
        if agreement_margin is not None and signal == "world":
            with torch.no_grad(), autocast():
                agree, n = onpolicy_agreement(judge, images.to(device), base_outputs[task].to(device), task,
                                              samples[task], agreement_margin,
                                              None if shown is None else shown.to(device))
            judge_scores[f"{task}/onpolicy_pairs"] = float(n)
            if n:
                judge_scores[f"{task}/onpolicy_agreement"] = agree
    return judge_scores, heldout


def onpolicy_agreement(judge, images: torch.Tensor, base_images: torch.Tensor, task: str, samples: list,
                       margin: float, source_images: torch.Tensor | None = None) -> tuple[float, int]:
    """The judge's agreement with the noise-free simulated annotators on pairs of the POLICY's own samples.

    Pair = (policy sample, base sample) of one condition and one of its dimensions; the annotators prefer the
    one whose world score is higher by more than ``margin`` (closer pairs are ties and dropped, as in the
    preference data); the judge prefers the policy's when its both-orders preference exceeds 0.5. Returns
    (share of decided pairs where they agree, number of decided pairs). A judge that agrees on the preference
    data but not here is being led where it was never trained: that is where RL hacks it."""
    from steps.rl.reward import judge_rows
    from steps.vocabulary import DIMENSIONS
    from steps.world import score

    prompts = [s.prompt for s in samples]
    forward, rows, dims = judge_rows(judge, images, base_images, task, prompts, source_images, samples)
    backward, _, _ = judge_rows(judge, base_images, images, task, prompts, source_images, samples)
    preference = ((forward + 1 - backward) / 2).cpu().numpy()
    ours = [score(x, s) for x, s in zip(images.permute(0, 2, 3, 1).float().cpu().numpy(), samples)]
    base = [score(x, s) for x, s in zip(base_images.permute(0, 2, 3, 1).float().cpu().numpy(), samples)]
    agree = []
    for p, r, d in zip(preference, rows.tolist(), dims.tolist()):
        dim = DIMENSIONS[task][d]
        diff = ours[r][dim] - base[r][dim]
        if abs(diff) > margin:
            agree.append((p > 0.5) == (diff > 0))
    return (float(np.mean(agree)) if agree else float("nan")), len(agree)


def world_signals(outputs: np.ndarray, samples: list) -> dict[str, float]:
    """Mean simulated-annotator score per "<task>/<dimension>" (smoke / tiny: the world knows the truth)."""
    from steps.world import score

    acc: dict[str, list[float]] = {}
    for out, s in zip(outputs, samples):
        for dim, v in score(out, s).items():
            acc.setdefault(f"{s.task}/{dim}", []).append(v)
    return {k: float(np.mean(v)) for k, v in sorted(acc.items())}


def kept_region_signals(outputs: np.ndarray, samples: list) -> dict[str, float]:
    """Fidelity of the kept region (mask == 0) to the source: "<task>/kept_ssim" in [0, 1] and
    "<task>/kept_psnr" in dB (``flux``: no ground truth, but what must not change is known)."""
    from skimage.metrics import structural_similarity

    acc: dict[str, list[tuple[float, float]]] = {}
    for out, s in zip(outputs, samples):
        keep = s.mask <= 127
        if not keep.any():
            continue
        cand, src = np.asarray(out, np.float64), s.image.astype(np.float64) / 255.0
        mse = float(((cand - src) ** 2)[keep].mean())
        psnr = 10 * np.log10(1.0 / max(mse, 1e-10))
        _, ssim_map = structural_similarity(cand.mean(-1), src.mean(-1), data_range=1.0, full=True,
                                            win_size=min(7, (min(keep.shape) // 2) * 2 - 1))
        acc.setdefault(s.task, []).append((psnr, float(np.clip(ssim_map[keep].mean(), 0, 1))))
    out: dict[str, float] = {}
    for task, values in sorted(acc.items()):
        out[f"{task}/kept_ssim"] = float(np.mean([v[1] for v in values]))
        out[f"{task}/kept_psnr"] = float(np.mean([v[0] for v in values]))
    return out
