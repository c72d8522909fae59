"""Held-out validation of the OneReward RL recipe (steps/rl/train.py): the fixed validation batch, its scores by
the world's truth (or the kept region's SSIM) and by the judge, the reward-hacking guard's step, the best step's
record and weights, and which weights are released. A mixin of `OneRewardRecipe`: it reads the recipe's models,
config and state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from steps.rl.guard import RewardHackingError

if TYPE_CHECKING:
    import torch


class HeldOutValidation:
    """The recipe's validation methods (see the module docstring)."""

    # ------------------------------------------------------------------ guard and grids
    def generate_heldout(self) -> dict[str, torch.Tensor]:
        """The policy's full samples on the fixed held-out batch (fixed noise), per task, on CPU."""
        import torch

        from steps.models.denoise import decode, denoise, sample_noise

        out = {}
        with torch.no_grad(), self.accelerator.autocast():
            for k, (task, samples) in enumerate(sorted(self.heldout.samples.items())):
                cond, _ = self.heldout.batch(task, range(len(samples)))
                generator = torch.Generator().manual_seed(self.cfg.seed + 7919 * (k + 1))
                noise = sample_noise(self.pipe, cond, generator)
                lat = denoise(self.pipe, cond, self.cfg.denoise_steps, self.cfg.guidance, noise=noise,
                              transformer=self.policy_forward)
                out[task] = decode(self.pipe, lat, cond.height, cond.width).float().cpu()
        return out

    def heldout_scores(self, outputs: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict[str, float]]:
        """(judge reward vs the base per "<task>/<dimension>" with the on-policy agreement, held-out signals per
        "<task>/<name>"), both on what users get (``paste_back``: the kept pixels pasted back, as the reward)."""
        from steps.evaluation.benchmark import BenchmarkConfig
        from steps.rl.guard import heldout_scores, pasted
        from steps.rl.rollout import judge_source

        samples = self.heldout.samples
        base = self.guard_base
        if self.cfg.paste_back:
            outputs, base = pasted(outputs, samples), pasted(base, samples)
        shown = ({task: judge_source(group, "cpu") for task, group in samples.items()}
                 if self.cfg.judge_sees_source and self.judge is not None else None)
        # on-policy pairs are decided as the benchmark's annotators decide them (its tie margin)
        return heldout_scores(self.scorer, outputs, base, samples, self.cfg.guard_signal, self.cfg.lam,
                              self.accelerator.device, self.accelerator.autocast, shown,
                              agreement_margin=BenchmarkConfig.tie_margin if self.judge is not None else None)

    def raw_signals(self, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
        """The held-out signals of the RAW outputs (drift outside the mask included), reported beside."""
        from steps.rl.guard import kept_region_signals, world_signals

        scorer = world_signals if self.cfg.guard_signal == "world" else kept_region_signals
        out = {}
        for task, images in outputs.items():
            out.update(scorer(images.permute(0, 2, 3, 1).numpy(), self.heldout.samples[task]))
        return out

    def training_reward_rise(self) -> dict[str, tuple[float, float]]:
        """Per task: (mean training reward over its first N sampled steps, over its latest N), N = guard_every/5."""
        import numpy as np

        window = max(5, self.cfg.guard_every // 5)
        out = {}
        for task in ("fill", "extend", "removal"):
            means = [float(np.mean(v)) for h in self.history
                     if (v := [x for k, x in h.items() if k.startswith(f"reward/{task}/")])]
            if len(means) >= 2 * window:  # the first and the latest window do not overlap
                out[task] = (float(np.mean(means[:window])), float(np.mean(means[-window:])))
        return out

    def guard_step(self, step: int) -> None:
        """Evaluate the held-out batch, log guard/*, and stop (every rank alike) when the guard rule fires."""
        outputs = self.generate_heldout() if step else self.guard_base
        judge, heldout = self.heldout_scores(outputs)
        agreement = {k: judge.pop(k) for k in list(judge) if "/onpolicy_" in k}
        kind = "world" if self.cfg.guard_signal == "world" else "kept"
        if self.is_main:
            self.log({**{f"guard/judge/{k}": v for k, v in judge.items()},
                      **{f"guard/{kind}/{k}": v for k, v in heldout.items()},
                      **{f"guard/{kind}_raw/{k}": v for k, v in self.raw_signals(outputs).items()},
                      **{f"guard/{k}": v for k, v in agreement.items()}}, step)
        guarded = {k: v for k, v in heldout.items() if not k.endswith("_psnr")}  # signals in [0, 1] only
        if self.guard.track_best(step, guarded):  # step 0: the base's weights (released if nothing beats them)
            self.best_writer.save(step, {"policy": {n: p.detach() for n, p in self.params.items()},
                                         "ema": self.ema.shadow}, {}, {"step": step, "best": self.guard.best})
        if self.is_main:
            self.log({"guard/heldout_mean": float(sum(guarded.values()) / max(1, len(guarded))),
                      "guard/best_step": float(self.guard.best.get("step", 0))}, step)
        message = self.guard.update(step, judge, guarded, self.training_reward_rise())
        self.guard.history[-1]["onpolicy"] = agreement  # the judge's agreement on the policy's own samples
        if message:
            message += self.best_note()
            self.guard.history[-1]["stopped"] = message
            if self.is_main:
                self.log({"guard/tripped": 1.0}, step)
                self.write_summary(status="stopped_by_guard", error=message)
            raise RewardHackingError(message)

    def best_note(self) -> str:
        from steps.training.checkpoints import checkpoint_dir

        best = self.guard.best
        if not best or not best["step"]:
            return " The base (step 0) had the best held-out signal: no RL step improved on it."
        return (f" The best held-out evaluation was step {best['step']} (mean signal {best['score']:.3f}); its "
                f"weights are kept in {checkpoint_dir(self.best_root, best['step'])}.")

    def select_release(self) -> dict[str, Any]:
        """Put the EMA weights to release into ``self.ema`` and say which: the best validation evaluation's
        (``release=best_validation``, when a step after 0 was best) or the last step's."""
        import torch
        from safetensors.torch import load_file

        from steps.training.checkpoints import checkpoint_dir

        last = self.history[-1]["step"] if self.history else self.cfg.steps
        best = self.guard.best
        if self.cfg.release == "last" or not self.cfg.guard_every:
            return {"rule": self.cfg.release, "step": last, "note": "the last step's EMA weights"}
        folder = checkpoint_dir(self.best_root, best.get("step", 0))
        files = sorted(folder.glob(f"ema{self.checkpointer.suffix()}.safetensors"))
        if self.sharded or not best or not files:
            return {"rule": "best_validation", "step": last,
                    "note": f"best step {best.get('step')} not loadable here ({folder}): the last step's EMA weights"}
        shadow = load_file(str(files[0]))
        self.ema.shadow = {n: shadow[n].to(self.accelerator.device, torch.float32) for n in self.ema.shadow}
        if not best["step"]:
            return {"rule": "best_validation", "step": 0, "validation_signal": best["score"],
                    "note": "no RL step beat the base on the validation split: the base's weights are released "
                            "(RL did not improve it; the promotion gate compares it with the base)"}
        return {"rule": "best_validation", "step": int(best["step"]), "validation_signal": best["score"],
                "note": f"the EMA weights of step {best['step']}, the best mean truth on the validation split"}

    def best_heldout(self) -> dict[str, Any]:
        """The guard's best evaluation: step, mean held-out signal, and the folder with its weights (if any)."""
        from steps.training.checkpoints import checkpoint_dir

        best = dict(self.guard.best)
        if best.get("step"):
            best["dir"] = str(checkpoint_dir(self.best_root, best["step"]))
        return best
