"""The pairs judge pretraining (steps/foundations/judge_pretrain.py) learns from: the world's target against
variants of it (hard negatives, corruptions, blends, candidates), labelled softly by the world's scores."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from steps.foundations.judge_pretrain import JudgePretrainConfig

EVAL_MIN_GAP = 0.03  # held-out pairs closer than this are near-ties (the simulated annotators' tie margin)
VARIANTS = ("target", "source", "nothing", "corrupt", "blend", "noise", "blur", "drift", "texture", "candidate",
            "flatten")


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
    from steps.judge.easy_pairs import blur, easy_loser, nothing_generated
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
    (`steps.judge.easy_pairs.easy_loser`), in a random order."""
    from steps.judge.easy_pairs import easy_loser
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


def rescore(first, second, samples, dims, temperature: float):
    """Soft labels of (perturbed) float image pairs by the world's scores."""
    import torch

    from steps.world import score

    a = first.permute(0, 2, 3, 1).numpy()
    b = second.permute(0, 2, 3, 1).numpy()
    return torch.tensor([soft_label(score(a[i], s, (d,))[d], score(b[i], s, (d,))[d], temperature)
                         for i, (s, d) in enumerate(zip(samples, dims))], dtype=torch.float32)


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
