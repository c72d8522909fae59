"""Recipe: the judge's foundation -- it learns to compare images the way the world's scores do, robustly
(profiles smoke / tiny; flux starts from Qwen2.5-VL instead).

    python -m steps.foundations --profile tiny --set part=judge          # the foundation job runs this
    python -m steps.foundations.judge_pretrain --set profile=smoke --set out_dir=/tmp/j  # alone

In production the judge starts from Qwen2.5-VL, pretrained by others on vast data. The tiny judge has no such
start, so this recipe plays the model maker's part: it asks the judge's own question ("is the first image
better than the second on <dimension>?", `steps.preferences.judge_query`) about pairs of images of one world
condition whose answer the world's scores give, on a broad distribution of images:

- variants of the condition: the target, the source, nothing generated, corruptions of one dimension
  (`steps.judge.train.easy_loser`), blends of those inside the region, added noise, blur, colour drift outside the
  region, and base-model candidates when a candidate pool is given;
- hard negatives: stripe, grid, checker and noise textures of period 2-16 px at every phase and orientation
  inside the edited region, at any opacity (the textures RL painted to fool the earlier judge);
- adversarial perturbations (PGD-style, normalised gradient steps within an RMS budget): for a share of each
  batch, both images move to raise the judge's loss, are re-scored by the world and trained on with the
  true answer -- the judge must not be moved by changes that do not change the truth (robust models have
  gradients that point at perceptible change: Kawar, Ganz & Elad 2023; Bukharin et al. 2025, Adv-RM).

Labels are soft, P(first better) = sigmoid((score_first - score_second) / label_temperature), so near-ties
teach indifference rather than noise. Both orders of every pair are trained (paper Eq. 3 on soft labels).
Every step draws its data from steps.training.optim.step_rng(seed, 3, step): checkpoints resume exactly.
Held-out accuracy per task x dimension (pairs of held-out pool conditions, world gap >= 0.03) is logged
every ``eval_every`` steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steps.config import Profiled, field
from steps.paths import TINY, ArtifactPaths
from steps.training.recipe import Recipe, due, progress, run_cli

JUDGE_RESUME_MUST_MATCH = ("profile", "init_dir", "seed", "world_pool", "pool_size", "train_dir", "steps", "batch_size", "lr",
                           "warmup", "label_temperature", "anchor_fraction", "anchor_prob_early", "anchor_prob_late",
                           "texture_share", "candidate_share", "candidates", "adv_share", "adv_rms", "adv_steps",
                           "show_source", "flatten_share")
EVAL_MIN_GAP = 0.03  # held-out pairs closer than this are near-ties (the simulated annotators' tie margin)
VARIANTS = ("target", "source", "nothing", "corrupt", "blend", "noise", "blur", "drift", "texture", "candidate",
            "flatten")


@dataclass(frozen=True)
class JudgePretrainConfig(Profiled):
    SECTION = "judge_pretrain"  # of configs/<profile>.yaml

    profile: str = field("tiny", "judge size: smoke | tiny")
    train_dir: str = field(str(TINY.train), "world split the pairs are drawn from (when world_pool is off)")
    world_pool: bool = field(False, "draw conditions from the foundation pool (steps.training.optim.world_pool) "
                                    "instead of train_dir")
    pool_size: int = field(12000, "foundation pool conditions (world_pool on); the next eval_conditions are held out")
    out_dir: str = field(str(TINY.judge_pretrained), "where the pretrained judge is saved")
    init_dir: str = field("", "start from this saved judge (a later stage of the foundation); empty = fresh")
    steps: int = field(1500, "optimizer steps")
    batch_size: int = field(16, "pairs per step (each in both orders: 2x rows)")
    lr: float = field(5e-4, "learning rate (AdamW, warmup then cosine); 2e-3 collapsed to the answer priors")
    warmup: int = field(100, "linear warmup steps")
    label_temperature: float = field(0.05, "soft label sigmoid((s1 - s2) / T) of the world-score gap")
    anchor_fraction: float = field(0.2, "share of training (from the start) in which most pairs are the target "
                                        "vs a copy corrupted on the asked dimension (a clear winner: the judge "
                                        "first learns what is right); no adversarial attacks during it")
    anchor_prob_early: float = field(0.8, "probability a pair holds the target during the anchor phase")
    anchor_prob_late: float = field(0.2, "probability a pair holds the target afterwards")
    texture_share: float = field(0.2, "share of variants that are hard-negative textures in the edited region")
    candidate_share: float = field(0.3, "share of variants drawn from the candidate pool (when one is given)")
    candidates: str = field("", "npz of base-model candidates of pool conditions (steps.foundations); empty = none")
    adv_share: float = field(0.25, "share of each batch's pairs trained on adversarially perturbed images")
    adv_rms: float = field(0.03, "RMS budget of the perturbation per image (pixels in [0, 1]; 0.03 ~ 8/255)")
    adv_steps: int = field(2, "normalised gradient steps of the attack")
    show_source: bool = field(False, "show the masked source (steps.vocabulary.masked_source) as a third image: "
                                     "the judge sees where the edit is and what must be kept")
    flatten_share: float = field(0.0, "share of variants flattened over the WHOLE image (desaturated, lower "
                                      "contrast, smoothed: how RL hacked the first foundation judge)")
    eval_conditions: int = field(300, "held-out conditions for the accuracy curve")
    eval_every: int = field(250, "held-out accuracy every N steps (and at the end); 0 = end only")
    checkpoint_dir: str = field("", "resumable checkpoints here every checkpoint_every steps; empty = none")
    checkpoint_every: int = field(500, "steps between checkpoints")
    log_every: int = field(25, "log every N steps")
    seed: int = field(0, "seed")
    threads: int = field(1, "torch CPU threads")

    def __post_init__(self):
        if self.profile not in ("smoke", "tiny"):
            raise ValueError(f"judge pretraining is for smoke/tiny (flux starts from Qwen2.5-VL), got {self.profile!r}")
        for name in ("texture_share", "candidate_share", "adv_share", "flatten_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if self.label_temperature <= 0 or self.adv_rms < 0 or self.adv_steps < 0:
            raise ValueError("label_temperature must be > 0, adv_rms and adv_steps >= 0")

    @classmethod
    def path_defaults(cls, paths: ArtifactPaths, **context: Any) -> dict[str, Any]:
        return dict(train_dir=str(paths.train), out_dir=str(paths.judge_pretrained))


# ---------------------------------------------------------------- images of one condition


def hard_negative_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """HxWx3 float in [0, 255]: stripes, grid, checker or noise of period 2-16 px at a random phase/angle."""
    from steps.world import COLOURS

    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = float(rng.uniform(2, 16))
    theta = float(rng.choice([0, np.pi / 2, np.pi / 4, -np.pi / 4, rng.uniform(0, np.pi)]))
    phase = float(rng.uniform(0, 2 * np.pi))
    u = (xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period + phase
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) * 2 * np.pi / period + phase
    kind = rng.integers(4)
    if kind == 0:
        pattern = np.sin(u) if rng.random() < 0.5 else np.sign(np.sin(u))
    elif kind == 1:
        pattern = np.maximum(np.sign(np.sin(u)), np.sign(np.sin(v)))
    elif kind == 2:
        pattern = np.sign(np.sin(u) * np.sin(v))
    else:
        block = int(rng.integers(1, 5))
        coarse = rng.uniform(-1, 1, (h // block + 1, w // block + 1))
        pattern = np.kron(coarse, np.ones((block, block)))[:h, :w]
    palette = list(COLOURS.values())
    c0 = np.array(palette[int(rng.integers(len(palette)))] if rng.random() < 0.5 else rng.uniform(0, 255, 3),
                  np.float32)
    c1 = np.array(palette[int(rng.integers(len(palette)))] if rng.random() < 0.5 else rng.uniform(0, 255, 3),
                  np.float32)
    t = ((pattern + 1) / 2)[..., None].astype(np.float32)
    return c0 * (1 - t) + c1 * t


def variant(sample, rng: np.random.Generator, kind: str, candidates: list[np.ndarray] | None = None) -> np.ndarray:
    """One image of the condition: HxWx3 uint8, drawn as ``kind`` (one of VARIANTS)."""
    from steps.judge.train import blur, easy_loser, nothing_generated
    from steps.world import dilate, dimensions_for

    t = sample.target.astype(np.float32)
    m = sample.mask > 127
    if kind == "target":
        out = t
    elif kind == "source":
        out = sample.image.astype(np.float32)
    elif kind == "nothing":
        out = nothing_generated(sample).astype(np.float32)
    elif kind == "corrupt":
        dims = dimensions_for(sample.task, sample.prompt)
        out = easy_loser(sample, dims[int(rng.integers(len(dims)))], rng).astype(np.float32)
    elif kind == "candidate" and candidates:
        out = candidates[int(rng.integers(len(candidates)))].astype(np.float32)
    elif kind == "texture":
        base = variant(sample, rng, str(rng.choice(["target", "nothing", "source", "blur"])), candidates)
        region = dilate(m, int(rng.integers(0, 3))) if rng.random() < 0.8 else np.ones_like(m)
        alpha = float(rng.uniform(0.15, 1.0))
        out = base.astype(np.float32)
        tex = hard_negative_texture(m.shape, rng)
        out[region] = (1 - alpha) * out[region] + alpha * tex[region]
    elif kind == "flatten":  # the whole image drawn toward its mean grey: less colour, less contrast, softer
        out = variant(sample, rng, str(rng.choice(["target", "source", "corrupt", "nothing"]
                                                    + (["candidate"] if candidates else []))), candidates)
        out = out.astype(np.float32)
        if rng.random() < 0.5:
            out = blur(out, float(rng.uniform(0.5, 2.5)))
        grey = out.mean(-1, keepdims=True)
        out = grey + (out - grey) * float(rng.uniform(0.0, 0.8))        # desaturate
        mean = out.mean((0, 1), keepdims=True)
        out = mean + (out - mean) * float(rng.uniform(0.3, 0.95))       # lower contrast
    else:  # blend / noise / blur / drift act on another variant
        inner = str(rng.choice(["target", "nothing", "source", "corrupt"]
                               + (["candidate"] if candidates else [])))
        out = variant(sample, rng, inner, candidates).astype(np.float32)
        if kind == "blend":
            other = variant(sample, rng, str(rng.choice(["target", "nothing", "corrupt", "source"])), candidates)
            a = float(rng.uniform(0.1, 0.9))
            out[m] = (1 - a) * out[m] + a * other.astype(np.float32)[m]
        elif kind == "noise":
            region = dilate(m, 2) if rng.random() < 0.7 else np.ones_like(m)
            out[region] += rng.normal(0, rng.uniform(2, 30), (int(region.sum()), 3))
        elif kind == "blur":
            blurred = blur(out, float(rng.uniform(0.5, 4)))
            region = dilate(m, 2) if rng.random() < 0.7 else np.ones_like(m)
            out[region] = blurred[region]
        elif kind == "drift":
            out[~m] += rng.normal(0, 1, 3) * rng.uniform(3, 40) + rng.normal(0, rng.uniform(0, 10), out[~m].shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def draw_kind(rng: np.random.Generator, cfg: JudgePretrainConfig, has_candidates: bool) -> str:
    if rng.random() < cfg.texture_share:
        return "texture"
    if cfg.flatten_share and rng.random() < cfg.flatten_share:
        return "flatten"
    if has_candidates and rng.random() < cfg.candidate_share:
        return "candidate"
    return str(rng.choice([k for k in VARIANTS if k not in ("texture", "candidate", "flatten")]))


def soft_label(s1: float, s2: float, temperature: float) -> float:
    return float(1.0 / (1.0 + np.exp(-(s1 - s2) / temperature)))


def pair_batch(samples, rng: np.random.Generator, n: int, cfg: JudgePretrainConfig, candidates=None,
               anchor_prob: float = 0.0):
    """``n`` world-labelled pairs: (firsts, seconds) uint8 arrays, queries, soft labels, samples, dimensions.
    With probability ``anchor_prob`` a pair is the target vs a copy corrupted on the asked dimension
    (`steps.judge.train.easy_loser`), in a random order."""
    from steps.judge.train import easy_loser
    from steps.preferences import judge_query
    from steps.world import dimensions_for, score

    firsts, seconds, queries, labels, picked, dims = [], [], [], [], [], []
    for _ in range(n):
        i = int(rng.integers(len(samples)))
        s = samples[i]
        cands = candidates.get(s.id) if candidates else None
        ds = dimensions_for(s.task, s.prompt)
        dim = ds[int(rng.integers(len(ds)))]
        if rng.random() < anchor_prob:
            a, b = s.target, easy_loser(s, dim, rng)
            if rng.random() < 0.5:
                a, b = b, a
        else:
            a = variant(s, rng, draw_kind(rng, cfg, bool(cands)), cands)
            b = variant(s, rng, draw_kind(rng, cfg, bool(cands)), cands)
        sa, sb = score(a, s, (dim,))[dim], score(b, s, (dim,))[dim]
        firsts.append(a)
        seconds.append(b)
        queries.append(judge_query(s.task, dim, s.prompt))
        labels.append(soft_label(sa, sb, cfg.label_temperature))
        picked.append(s)
        dims.append(dim)
    return np.stack(firsts), np.stack(seconds), queries, np.array(labels, np.float32), picked, dims


def soft_yes_no_loss(judge, first, second, queries: list[str], p_first, source=None):
    """Both orders: CE of the answer token against the soft label (Yes with p, No with 1 - p) over the full
    vocabulary, for (first, second, p) and (second, first, 1 - p); returns (loss, margins of the first order).
    ``source``: the masked source as a third image of every row (None: two images)."""
    import torch

    groups = [torch.cat([first, second]), torch.cat([second, first])]
    if source is not None:
        groups.append(torch.cat([source, source]))
    logits = judge.image_logits(groups, queries + queries)
    logp = torch.log_softmax(logits, -1)
    p = torch.cat([p_first, 1 - p_first])
    loss = -(p * logp[:, judge.yes_id] + (1 - p) * logp[:, judge.no_id]).mean()
    margin = (logits[:, judge.yes_id] - logits[:, judge.no_id]).detach()
    return loss, margin[: len(queries)]


def to_float(images: np.ndarray):
    import torch

    return torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255.0


def rms_project(delta, budget: float):
    """Scale each image's perturbation down to RMS <= budget."""
    import torch

    rms = delta.pow(2).flatten(1).mean(1).sqrt().clamp_min(1e-12)
    return delta * torch.clamp(budget / rms, max=1.0)[:, None, None, None]


def adversarial_images(judge, first, second, queries: list[str], p_first, budget: float, steps: int,
                       source=None):
    """PGD-style attack on both images of each pair within an RMS budget: normalised gradient steps that raise
    the judge's loss against the current labels. Returns perturbed (first, second) in [0, 1], detached."""
    import torch

    deltas = [torch.zeros_like(first), torch.zeros_like(second)]
    step_size = budget / max(1, steps) * 1.5
    was_training = judge.model.training
    judge.eval()
    for _ in range(steps):
        for d in deltas:
            d.requires_grad_(True)
        loss, _ = soft_yes_no_loss(judge, (first + deltas[0]).clamp(0, 1), (second + deltas[1]).clamp(0, 1),
                                   queries, p_first, source)
        grads = torch.autograd.grad(loss, deltas)
        with torch.no_grad():
            for k, g in enumerate(grads):
                g_rms = g.pow(2).flatten(1).mean(1).sqrt().clamp_min(1e-12)[:, None, None, None]
                deltas[k] = rms_project(deltas[k] + step_size * g / g_rms, budget).detach()
    judge.train(was_training)
    return (first + deltas[0]).clamp(0, 1).detach(), (second + deltas[1]).clamp(0, 1).detach()


def rescore(first, second, samples, dims, temperature: float):
    """Soft labels of (perturbed) float image pairs by the world's scores."""
    import torch

    from steps.world import score

    a = first.permute(0, 2, 3, 1).numpy()
    b = second.permute(0, 2, 3, 1).numpy()
    return torch.tensor([soft_label(score(a[i], s, (d,))[d], score(b[i], s, (d,))[d], temperature)
                         for i, (s, d) in enumerate(zip(samples, dims))], dtype=torch.float32)


# ---------------------------------------------------------------- evaluation


def heldout_pairs(samples, cfg: JudgePretrainConfig, candidates=None, per_condition: int = 3):
    """A fixed held-out set: ``per_condition`` world-labelled pairs per condition, near-ties dropped."""
    rng = np.random.default_rng([cfg.seed, 99])
    firsts, seconds, queries, labels, picked, dims = pair_batch(samples * per_condition, rng,
                                                                len(samples) * per_condition, cfg, candidates)
    keep = np.abs(labels - 0.5) >= (soft_label(EVAL_MIN_GAP, 0, cfg.label_temperature) - 0.5)
    idx = np.nonzero(keep)[0]
    return (firsts[idx], seconds[idx], [queries[i] for i in idx], labels[idx] > 0.5,
            [f"{picked[i].task}/{dims[i]}" for i in idx], sources_of([picked[i] for i in idx]))


def sources_of(samples) -> np.ndarray:
    """The masked source of each sample (the judge's optional third image), Bx HxWx3 uint8."""
    from steps.vocabulary import masked_source

    return np.stack([masked_source(s.image, s.mask) for s in samples])


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
    from steps.training.optim import FOUNDATION_INDEX_OFFSET, world_pool

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

        from steps.models.judge import Judge, spec_for
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
        self.judge.train()
        self.optimizer, self.scheduler = adamw(self.judge.parameters(), cfg.lr, 0.01,
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

        from steps.training.optim import step_rng
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
