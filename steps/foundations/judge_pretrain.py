"""Recipe: the judge's foundation -- it learns to compare images the way the world's scores do, robustly
(profiles smoke / tiny; flux starts from Qwen2.5-VL instead).

    python -m steps.foundations --profile tiny --set part=judge          # the foundation job runs this
    python -m steps.foundations.judge_pretrain --set profile=smoke --set out_dir=/tmp/j  # alone

In production the judge starts from Qwen2.5-VL, pretrained by others on vast data. The tiny judge has no such
start, so this recipe plays the model maker's part: it asks the judge's own question ("is the first image
better than the second on <dimension>?", `steps.vocabulary.judge_query`) about pairs of images of one world
condition whose answer the world's scores give, on a broad distribution of images:

- variants of the condition: the target, the source, nothing generated, corruptions of one dimension
  (`steps.judge.easy_pairs.easy_loser`), blends of those inside the region, added noise, blur, colour drift outside the
  region, and base-model candidates when a candidate pool is given;
- hard negatives: stripe, grid, checker and noise textures of period 2-16 px at every phase and orientation
  inside the edited region, at any opacity (the textures RL painted to fool the earlier judge);
- adversarial perturbations (PGD-style, normalised gradient steps within an RMS budget): for a share of each
  batch, both images move to raise the judge's loss, are re-scored by the world and trained on with the
  true answer -- the judge must not be moved by changes that do not change the truth (robust models have
  gradients that point at perceptible change: Kawar, Ganz & Elad 2023; Bukharin et al. 2025, Adv-RM).

Labels are soft, P(first better) = sigmoid((score_first - score_second) / label_temperature), so near-ties
teach indifference rather than noise. Both orders of every pair are trained (paper Eq. 3 on soft labels).
Every step draws its data from steps.training.draws.step_rng(seed, 3, step): checkpoints resume exactly.
Held-out accuracy per task x dimension (pairs of held-out pool conditions, world gap >= 0.03) is logged
every ``eval_every`` steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steps.config import Profiled, field
from steps.fields import Attack, Batched, Checkpoints, Optimiser, Seeded, ShowsSource, Threaded
from steps.foundations.judge_pairs import heldout_pairs, pair_batch, rescore, sources_of
from steps.judge.losses import adversarial_images, soft_yes_no_loss, to_float
from steps.paths import TINY, ArtifactPaths
from steps.training.recipe import Recipe, due, progress, run_cli

JUDGE_RESUME_MUST_MATCH = ("profile", "init_dir", "seed", "world_pool", "pool_size", "train_dir", "steps", "batch_size", "lr",
                           "warmup", "weight_decay", "label_temperature", "anchor_fraction", "anchor_prob_early", "anchor_prob_late",
                           "texture_share", "candidate_share", "candidates", "adv_share", "adv_rms", "adv_steps",
                           "show_source", "flatten_share", "grid", "tasks")


@dataclass(frozen=True)
class JudgePretrainConfig(Profiled, Optimiser, Batched, Checkpoints, Attack, ShowsSource, Seeded, Threaded):
    """Judge pretraining. A batch is that many pairs, each used in both orders (2x rows); AdamW with warmup then
    cosine (lr 2e-3 collapsed to the answer priors). The attack (steps.fields.Attack) perturbs a share of each
    batch's pairs against the judge before the step."""

    SECTION = "judge_pretrain"  # of configs/<profile>.yaml

    profile: str = field("tiny", "judge size: smoke | tiny")
    train_dir: str = field(str(TINY.train), "world split the pairs are drawn from (when world_pool is off)")
    world_pool: bool = field(False, "draw conditions from the foundation pool (steps.training.draws.world_pool) "
                                    "instead of train_dir")
    pool_size: int = field(12000, "foundation pool conditions (world_pool on); the next eval_conditions are held out")
    out_dir: str = field(str(TINY.judge_pretrained), "where the pretrained judge is saved")
    init_dir: str = field("", "start from this saved judge (a later stage of the foundation); empty = fresh")
    label_temperature: float = field(0.05, "soft label sigmoid((s1 - s2) / T) of the world-score gap")
    anchor_fraction: float = field(0.2, "share of training (from the start) in which most pairs are the target "
                                        "vs a copy corrupted on the asked dimension (a clear winner: the judge "
                                        "first learns what is right); no adversarial attacks during it")
    anchor_prob_early: float = field(0.8, "probability a pair holds the target during the anchor phase")
    anchor_prob_late: float = field(0.2, "probability a pair holds the target afterwards")
    texture_share: float = field(0.2, "share of variants that are hard-negative textures in the edited region")
    candidate_share: float = field(0.3, "share of variants drawn from the candidate pool (when one is given)")
    candidates: str = field("", "npz of base-model candidates of pool conditions (steps.foundations); empty = none")
    flatten_share: float = field(0.0, "share of variants flattened over the WHOLE image (desaturated, lower "
                                      "contrast, smoothed: how RL hacked the first foundation judge)")
    grid: int = field(1, "a fresh judge is shown its images this many times larger (a finer token grid: each "
                         "vision patch covers 1/grid^2 of the pixels; steps.foundations.grow.upsample_judge); "
                         "a judge from init_dir keeps its own")
    tasks: tuple[str, ...] = field((), "only these tasks' conditions, in training and the held-out curve (a diagnostic, "
                                       "e.g. [removal]; empty: all)")
    eval_conditions: int = field(300, "held-out conditions for the accuracy curve")
    eval_every: int = field(250, "held-out accuracy every N steps (and at the end); 0 = end only")

    def __post_init__(self):
        if self.profile not in ("smoke", "tiny"):
            raise ValueError(f"judge pretraining is for smoke/tiny (flux starts from Qwen2.5-VL), got {self.profile!r}")
        for name in ("texture_share", "candidate_share", "adv_share", "flatten_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        from steps.manifest import TASKS

        if set(self.tasks) - set(TASKS):
            raise ValueError(f"tasks: unknown {sorted(set(self.tasks) - set(TASKS))}; expected some of {TASKS}")
        if self.grid < 1:
            raise ValueError(f"grid must be >= 1, got {self.grid}")
        if self.label_temperature <= 0 or self.adv_rms < 0 or self.adv_steps < 0:
            raise ValueError("label_temperature must be > 0, adv_rms and adv_steps >= 0")

    @classmethod
    def path_defaults(cls, paths: ArtifactPaths, **context: Any) -> dict[str, Any]:
        return dict(train_dir=str(paths.train), out_dir=str(paths.judge_pretrained))


# ---------------------------------------------------------------- images of one condition


# ---------------------------------------------------------------- evaluation


def evaluate_pairs(judge, held, batch: int = 64, show_source: bool = False) -> dict[str, float]:
    """Accuracy per task x dimension on the held-out set (the first image's margin, both orders averaged)."""
    import torch

    firsts, seconds, queries, truth, cells, sources = held
    margins = []
    was_training = judge.model.training
    judge.eval()
    with torch.no_grad():
        for i in range(0, len(queries), batch):
            f, s = to_float(firsts[i:i + batch]), to_float(seconds[i:i + batch])
            q = queries[i:i + batch]
            groups = [torch.cat([f, s]), torch.cat([s, f])]
            if show_source:
                src = to_float(sources[i:i + batch])
                groups.append(torch.cat([src, src]))
            logits = judge.image_logits(groups, q + q)
            m = logits[:, judge.yes_id] - logits[:, judge.no_id]
            margins.append((m[: len(q)] - m[len(q):]).numpy())
    judge.train(was_training)
    correct = (np.concatenate(margins) > 0) == truth
    out = {f"pretrain/heldout_accuracy/{c}": float(correct[[i for i, x in enumerate(cells) if x == c]].mean())
           for c in sorted(set(cells))}
    out["pretrain/heldout_accuracy"] = float(np.mean([v for k, v in out.items()]))
    return out


# ---------------------------------------------------------------- the recipe


def _samples(cfg: JudgePretrainConfig, size: int):
    train, held = _all_samples(cfg, size)
    if cfg.tasks:
        train, held = ([s for s in part if s.task in cfg.tasks] for part in (train, held))
    return train, held


def _all_samples(cfg: JudgePretrainConfig, size: int):
    from steps.training.draws import FOUNDATION_INDEX_OFFSET, world_pool

    if cfg.world_pool:
        train = world_pool(size, cfg.pool_size)
        held = world_pool(size, cfg.eval_conditions, offset=FOUNDATION_INDEX_OFFSET + cfg.pool_size)
        return train, held
    from steps.data.datasets import load_samples

    samples = load_samples(cfg.train_dir)
    n_eval = min(cfg.eval_conditions, max(2, len(samples) // 10))
    return samples[n_eval:], samples[:n_eval]


def load_candidates(path: str) -> dict[str, list[np.ndarray]] | None:
    """{condition id: [HxWx3 uint8, ...]} from a candidate-pool npz (ids + images), or None."""
    if not path:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: candidate pool missing; build the base foundation first "
                                "(python -m steps.foundations --set part=base)")
    with np.load(path) as data:
        ids, images = list(data["ids"]), data["images"]
    out: dict[str, list[np.ndarray]] = {}
    for k, i in enumerate(ids):
        out.setdefault(str(i), []).append(images[k])
    return out


class JudgePretrainRecipe(Recipe):
    """The judge foundation: setup -> train (checkpoints every ``checkpoint_every`` steps, exact resume) ->
    the saved judge and its summary (steps/training/recipe.py)."""

    name = "judge foundation"

    def setup(self) -> JudgePretrainRecipe:
        import torch

        from steps.models.judge import Judge
        from steps.models.judge_spec import spec_for
        from steps.runtime import setup
        from steps.training.optim import adamw

        cfg = self.cfg
        setup(threads=cfg.threads)
        torch.manual_seed(cfg.seed)
        spec = spec_for(cfg.profile)
        self.samples, held_samples = _samples(cfg, spec.image_size)
        self.candidates = load_candidates(cfg.candidates)
        self.held = heldout_pairs(held_samples, cfg, self.candidates)
        self.judge = Judge.load(cfg.init_dir) if cfg.init_dir else Judge.build(spec, seed=cfg.seed)
        if cfg.grid > 1 and not cfg.init_dir:
            from steps.foundations.grow import upsample_judge

            self.judge = upsample_judge(self.judge, cfg.grid)
        self.judge.train()
        self.optimizer, self.scheduler = adamw(self.judge.parameters(), cfg.lr, cfg.weight_decay,
                                               min(cfg.warmup, cfg.steps // 10 + 1), cfg.steps)
        self.curve, self.evals, self.metrics = [], [], {}
        self.resume_from(cfg.checkpoint_dir)
        return self

    def load_checkpoint(self, folder: Path) -> dict[str, Any]:
        state, _ = self.checkpointer.restore(folder, {"judge": self.judge.model}, self.optimizer, self.scheduler,
                                             config=asdict(self.cfg), must_match=JUDGE_RESUME_MUST_MATCH)
        self.curve, self.evals = list(state["curve"]), list(state["evals"])
        return state

    def save_checkpoint(self, step: int) -> Path:
        return self.checkpointer.save_training(
            step, {"judge": self.judge.model}, self.optimizer, self.scheduler,
            {"config": asdict(self.cfg), "curve": self.curve, "evals": self.evals,
             "seconds": self.seconds_including_resumed()})

    def train_step(self, step: int) -> dict[str, float]:
        """One optimizer step on the pairs of ``step_rng(seed, 3, step)``; the step's loss and train accuracy."""
        import torch

        from steps.training.draws import step_rng
        from steps.training.recipe import optimizer_step

        cfg, judge = self.cfg, self.judge
        rng = step_rng(cfg.seed, 3, step)
        early = step < cfg.anchor_fraction * cfg.steps
        anchor = cfg.anchor_prob_early if early else cfg.anchor_prob_late
        firsts, seconds, queries, labels, picked, dims = pair_batch(self.samples, rng, cfg.batch_size, cfg,
                                                                    self.candidates, anchor)
        first, second, p = to_float(firsts), to_float(seconds), torch.as_tensor(labels)
        source = to_float(sources_of(picked)) if cfg.show_source else None
        n_adv = int(round(cfg.adv_share * cfg.batch_size)) if cfg.adv_steps and cfg.adv_rms > 0 else 0
        if n_adv and not early:  # the last n_adv pairs: attacked, re-scored by the world, trained with the true answer
            a, b = adversarial_images(judge, first[-n_adv:], second[-n_adv:], queries[-n_adv:], p[-n_adv:],
                                      cfg.adv_rms, cfg.adv_steps,
                                      None if source is None else source[-n_adv:])
            first, second = torch.cat([first[:-n_adv], a]), torch.cat([second[:-n_adv], b])
            p = torch.cat([p[:-n_adv], rescore(a, b, picked[-n_adv:], dims[-n_adv:], cfg.label_temperature)])
        loss, margin = soft_yes_no_loss(judge, first, second, queries, p, source)
        optimizer_step(loss, self.optimizer, self.scheduler, judge.parameters(), clip=1.0)
        decided = (p - 0.5).abs() > 0.1
        acc = float(((margin > 0) == (p > 0.5))[decided].float().mean()) if decided.any() else float("nan")
        return {"loss": loss.item(), "train_accuracy": acc}

    def train(self) -> dict[str, Any]:
        from steps.io import atomic_write_json

        cfg, judge = self.cfg, self.judge
        for step in progress(range(self.start_step, cfg.steps), self.name):
            out = self.train_step(step)
            self.curve.append(out["loss"])
            if due(step, cfg.log_every, cfg.steps - 1):
                self.log({"pretrain/loss": float(np.mean(self.curve[-cfg.log_every:])),
                          "pretrain/train_accuracy": out["train_accuracy"],
                          "pretrain/lr": self.scheduler.get_last_lr()[0]}, step)
            done = step + 1
            if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
                metrics = evaluate_pairs(judge, self.held, show_source=cfg.show_source)
                self.evals.append({"step": done, **metrics})
                self.log(metrics, done)
            if self.checkpointer and done % cfg.checkpoint_every == 0:
                self.save_checkpoint(done)
        judge.eval()
        self.metrics = evaluate_pairs(judge, self.held, show_source=cfg.show_source)
        self.metrics["pretrain/final_loss"] = float(np.mean(self.curve[-50:]))
        self.evals.append({"step": cfg.steps, **self.metrics})
        self.log(self.metrics, cfg.steps)
        # how the judge must be asked (steps.models.judge.training_record), inside the one atomic write;
        # fine-tuning keeps it
        judge.save(cfg.out_dir, record={"foundation": True, "config": {"show_source": True}} if cfg.show_source else None)
        summary = self.summary()
        report = Path(cfg.out_dir).parent / f"{Path(cfg.out_dir).name}_report"
        summary["artifacts"] = [str(curves_plot(self.curve, self.evals, report / "judge_foundation.png"))]
        atomic_write_json(report / "pretraining.json", summary)
        return summary

    def summary(self) -> dict[str, Any]:
        return {"out_dir": self.cfg.out_dir, "metrics": self.metrics, "evals": self.evals,
                "n_heldout_pairs": len(self.held[2]), "judge_params": self.judge.num_parameters(),
                "final_loss": self.metrics.get("pretrain/final_loss"), "seconds": self.seconds(),
                "seconds_including_resumed": self.seconds_including_resumed(), "config": asdict(self.cfg)}


def pretrain_judge(cfg: JudgePretrainConfig, log=None) -> dict[str, Any]:
    """Run `JudgePretrainRecipe` (resuming from ``cfg.checkpoint_dir``); returns its summary."""
    return JudgePretrainRecipe(cfg, log).run()


def curves_plot(curve: list[float], evals: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    k = max(1, len(curve) // 100)
    axes[0].plot(np.convolve(curve, np.ones(k) / k, mode="valid"))
    axes[0].set_title("soft Yes/No loss")
    axes[0].set_xlabel("step")
    steps = [e["step"] for e in evals]
    for key in sorted({k for e in evals for k in e if k.startswith("pretrain/heldout_accuracy/")}):
        axes[1].plot(steps, [e.get(key, np.nan) for e in evals], label=key.rsplit("/", 2)[-2] + "/" +
                     key.rsplit("/", 1)[-1], marker=".")
    axes[1].plot(steps, [e["pretrain/heldout_accuracy"] for e in evals], "k-", lw=2, label="mean")
    axes[1].set_title("held-out accuracy (world labels, gap >= 0.03)")
    axes[1].set_xlabel("step")
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    run_cli(JudgePretrainConfig, __doc__, pretrain_judge, argv, drop=("evals",))


if __name__ == "__main__":
    main()
