"""The OneReward RL recipe's configuration (section `rl` of configs/<profile>.yaml) and the fields a resumed
run must share with the run it resumes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from steps.config import Profiled, field
from steps.fields import Batched, CheckpointCadence, Guided, Optimiser, Scale, Seeded, TaskMix, Threaded
from steps.paths import TINY, ArtifactPaths

RESUME_MUST_MATCH = ("reference", "seed", "batch_size", "lr", "warmup", "denoise_steps", "t1", "t2", "lam",
                     "ema_tau", "paste_back", "guidance", "grad_accum", "lora_rank", "lora_alpha",
                     "fill_prob", "extend_prob", "removal_prob", "reward", "oracle_sharpness", "anchor_beta",
                     "update", "group_size", "group_noise", "sde_a", "sde_window", "sde_window_start", "adv_clip",
                     "clip_range", "kl_beta", "inner_epochs")


@dataclass(frozen=True)
class RLConfig(Profiled, Optimiser, Batched, Scale, TaskMix, Guided, CheckpointCadence, Seeded, Threaded):
    """OneReward RL. A batch is that many conditions per rank per micro-batch (``grad_accum`` of them a step);
    AdamW, constant after the warmup; every random choice comes from (seed, step, rank). ``log_every``: the
    step's task rewards are logged every N steps. The task mix (steps.fields.TaskMix) is the draw of each
    step's task. Scale (steps.fields.Scale): LoRA on the attention projections, autocast through accelerate.
    Checkpoints go to out_dir/<reference>_checkpoints/ every ``checkpoint_every`` steps (0: only at the end)."""

    SECTION = "rl"  # of configs/<profile>.yaml

    profile: str = field("tiny", "smoke | tiny (models built from config) | flux (FLUX.1-Fill, Qwen2.5-VL)")
    base_dir: str = field(str(TINY.base_model), "base pipeline directory ('': $ONEREWARD_FLUX_PATH)")
    judge_dir: str = field(str(TINY.judge), "trained judge directory (Judge.save layout)")
    train_dir: str = field(str(TINY.train), "training conditions (manifest.jsonl)")
    eval_dir: str = field(str(TINY.validation), "validation conditions for the reward-hacking guard and the "
                                                  "best-step record (never the benchmark)")
    out_dir: str = field(str(TINY.policy_root), "released model goes to out_dir/<reference>/")
    reference: str = field("static", "static: frozen base (Algorithm 1) | dynamic: EMA policy (Algorithm 2)")
    # task mix and batches
    grad_accum: int = field(1, "micro-batches per optimizer step")
    grad_clip: float = field(1.0, "max global gradient norm")
    # the method's open defaults (docs/DESIGN.md §4)
    denoise_steps: int = field(8, "T: Euler steps of the sampling schedule")
    t1: int = field(-1, "first step index the policy may stop at (-1: T // 2, the second half)")
    t2: int = field(-1, "last step index the policy may stop at (-1: T - 1)")
    lam: float = field(0.8, "lambda of J_e = max(0, lambda - P(Yes)): no gradient once P(Yes) > lambda")
    ema_tau: float = field(0.99, "EMA decay: shadow <- tau * shadow + (1 - tau) * policy")
    anchor_beta: float = field(0.0, "velocity-space anchor to the base: + beta * mean((v_policy - v_base)^2) on "
                                    "the same x_t at the grad step (Flow-GRPO's KL for flows; 0 = off, the paper)")
    paste_back: bool = field(True, "judge what users get: the kept source region pasted back before the reward "
                                   "(off: the raw output, drift outside the mask included, is judged)")
    judge_sees_source: bool = field(False, "show the source as a third image (must match judge training)")
    reward: str = field("judge", "judge (the method) | oracle (smoke/tiny: the world's differentiable truth in "
                                 "place of the judge, steps.rl.oracle -- does the recipe work with a perfect reward?)")
    judge_ensemble: tuple[str, ...] = field((), "more judge directories beside judge_dir: the training reward is the "
                                               "members' mean minus ensemble_k x their spread (a departure from the "
                                               "single judge; validation, guard and benchmark ask judge_dir alone)")
    ensemble_k: float = field(1.0, "judge_ensemble: weight of the members' spread (standard deviation)")
    oracle_sharpness: float = field(20.0, "oracle: P(Yes) = sigmoid(sharpness * (truth(policy) - truth(reference)))")
    # the update: the paper's one-step reward gradient, or a policy gradient (steps/rl/grpo.py)
    update: str = field("one_step", "one_step: the paper's (grad through one x0 step, the VAE and the judge) | grpo: "
                                     "Flow-GRPO's policy gradient on an SDE window, the judge a black-box reward")
    group_size: int = field(8, "grpo: samples per condition (G); a batch is batch_size conditions x G samples")
    group_noise: str = field("independent", "grpo: initial noise per sample (independent: keeps the spread) or per "
                                            "condition (shared: the spread comes from the window's steps only)")
    sde_a: float = field(0.7, "grpo: noise level a of the SDE window, sigma_t = a sqrt(sigma / (1 - sigma))")
    sde_window: int = field(2, "grpo: K, the stochastic (trained) steps")
    sde_window_start: int = field(0, "grpo: index of the window's first step in the T-step schedule")
    adv_clip: float = field(5.0, "grpo: group-normalised advantages clipped to [-adv_clip, adv_clip]")
    clip_range: float = field(1e-4, "grpo: PPO ratio clip (Flow-GRPO's 1e-4: log-probs are means over dimensions)")
    kl_beta: float = field(0.0, "grpo: KL to the base, beta * ||mu_theta - mu_base||^2 / (2 std^2) per window step")
    inner_epochs: int = field(1, "grpo: optimizer steps per rollout batch (1: REINFORCE with a group baseline, "
                                 "the ratio is 1 at the gradient; > 1: the clipped ratio acts)")
    # cadence
    sample_every: int = field(50, "sample grid every N steps (0 = never)")
    keep_checkpoints: int = field(2, "checkpoints kept (older ones are deleted)")
    release: str = field("best_validation", "which EMA weights are released: best_validation (the guard's best "
                                            "evaluation on the validation split, never the benchmark; the base's own "
                                            "weights when no step beat it; the last step when the guard is off) | last")
    resume: bool = field(True, "continue from the newest checkpoint in out_dir/<reference>_checkpoints")
    # reward-hacking guard
    guard_every: int = field(50, "held-out evaluation every N steps (0 = guard off)")
    guard_per_task: int = field(8, "held-out conditions per task")
    guard_signal: str = field("world", "world (simulated annotators) | kept_region (SSIM of the kept region)")
    guard_margin: float = field(0.1, "held-out drop (vs the base) that counts as a fall")
    guard_min_rise: float = field(0.02, "judge reward rise (vs the base) that counts as a rise")
    guard_patience: int = field(2, "flagged evaluations in a row before stopping")
    # systems
    cpu: bool = field(False, "force CPU (always on CPU when no GPU is present)")
    dtype: str = field("float32", "dtype of the frozen modules (VAE, text encoders, judge, LoRA base)")
    lora_alpha: float = field(0.0, "LoRA alpha (0 = rank)")
    cache_conditions: bool = field(True, "encode the train split's conditions once (off: per batch)")
    judge_share_images: bool = field(True, "judge each image once for all its queries, tokenised queries "
                                           "cached (rl_reward.PairJudge; off: every row encoded on its own)")

    def __post_init__(self):
        checks = {
            "profile": self.profile in ("smoke", "tiny", "flux"),
            "reference": self.reference in ("static", "dynamic"),
            "guard_signal": self.guard_signal in ("world", "kept_region"),
            "mixed_precision": self.mixed_precision in ("no", "bf16", "fp16"),
            "dtype": self.dtype in ("float32", "bfloat16", "float16"),
            "lam": 0 < self.lam <= 1, "ema_tau": 0 <= self.ema_tau < 1, "lora_rank": self.lora_rank >= 0,
            "guard_margin": self.guard_margin >= 0, "guard_patience": self.guard_patience >= 1,
            "seed": self.seed >= 0, "ensemble_k": self.ensemble_k >= 0,
            "judge_ensemble": not (self.judge_ensemble and self.reward != "judge"),
            "release": self.release in ("best_validation", "last"),
            "reward": self.reward in ("judge", "oracle") and not (self.reward == "oracle" and self.profile == "flux"),
            "oracle_sharpness": self.oracle_sharpness > 0, "anchor_beta": self.anchor_beta >= 0,
            "update": self.update in ("one_step", "grpo"),
            "group_noise": self.group_noise in ("independent", "shared"),
            "group_size": self.group_size >= 2, "sde_a": self.sde_a > 0, "adv_clip": self.adv_clip > 0,
            "clip_range": self.clip_range > 0, "kl_beta": self.kl_beta >= 0, "inner_epochs": self.inner_epochs >= 1,
            f"sde window [{self.sde_window_start}, {self.sde_window_start + self.sde_window}) inside T="
            f"{self.denoise_steps}": 0 <= self.sde_window_start and self.sde_window >= 1
            and self.sde_window_start + self.sde_window <= self.denoise_steps,
        }
        for name in ("batch_size", "grad_accum", "steps", "denoise_steps", "keep_checkpoints",
                     "guard_per_task", "log_every"):
            checks[name] = getattr(self, name) >= 1
        for name in ("sample_every", "checkpoint_every", "guard_every", "warmup"):
            checks[name] = getattr(self, name) >= 0
        probs = (self.fill_prob, self.extend_prob, self.removal_prob)
        checks["task probabilities (>= 0, sum 1)"] = min(probs) >= 0 and abs(sum(probs) - 1) < 1e-6
        (t1, t2), t = self.t_range, self.denoise_steps
        checks[f"t1/t2 (0 <= t1={t1} <= t2={t2} < T={t})"] = 0 <= t1 <= t2 < t
        bad = [f"{name}={getattr(self, name)!r}" if hasattr(self, name) else name
               for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"RLConfig: invalid {'; '.join(bad)}")

    @property
    def t_range(self) -> tuple[int, int]:
        """[t1, t2] as step indices; the default is the second half of the T-step schedule."""
        t = self.denoise_steps
        return (t // 2 if self.t1 < 0 else self.t1, t - 1 if self.t2 < 0 else self.t2)

    @property
    def task_probs(self) -> dict[str, float]:
        return {"fill": self.fill_prob, "extend": self.extend_prob, "removal": self.removal_prob}

    def params(self) -> dict[str, Any]:
        """The config with [t1, t2] resolved: what MLflow records."""
        t1, t2 = self.t_range
        return {**asdict(self), "t1": t1, "t2": t2}

    @classmethod
    def path_defaults(cls, paths: ArtifactPaths, **context: Any) -> dict[str, Any]:
        return dict(base_dir=str(paths.base_model), judge_dir=str(paths.judge), train_dir=str(paths.train),
                    eval_dir=str(paths.validation), out_dir=str(paths.policy_root))
