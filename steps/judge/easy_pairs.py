"""Easy pairs of the judge's curriculum (steps/judge/train.py): the world's ground truth against a copy made
clearly worse on one dimension (wrong colour, object left, noise, blur, drift outside the mask), or against a
real candidate that the world's truth scores clearly worse."""

from __future__ import annotations

import numpy as np


def easy_loser(sample, dimension: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of the target made clearly worse on ``dimension`` (used as the loser of an easy pair)."""
    from steps.world import COLOURS, SHAPES, render_object, render_word

    t = sample.target.astype(np.float32)
    m = sample.mask > 127
    meta = sample.meta
    if dimension == "removal_quality":
        return sample.image  # the object left in place
    if dimension == "text_alignment":
        other = str(rng.choice([c for c in COLOURS if c != meta["colour"]]))
        if meta.get("word"):
            from steps.world import WORDS

            word = meta["word"] if rng.random() < 0.5 else str(rng.choice([w for w in WORDS if w != meta["word"]]))
            colour = other if word == meta["word"] else meta["colour"]
            return render_word(nothing_generated(sample), word, colour, meta["text_xy"], meta["font_px"])
        if rng.random() < 0.3:
            return nothing_generated(sample)  # nothing generated
        shape = meta["shape"] if rng.random() < 0.7 else str(rng.choice([s for s in SHAPES if s != meta["shape"]]))
        return render_object(nothing_generated(sample), shape, other, meta["bbox"])
    if dimension == "consistency":
        out = t.copy()
        out[~m] = np.clip(t[~m] + rng.normal(0, 1, 3) * 40 + rng.normal(0, 12, t[~m].shape), 0, 255)
        return out.astype(np.uint8)
    if dimension == "structure":
        # Two failure modes of a weak fill model: a smeared, disordered region, or blotchy colour artefacts
        # (measured on base-model candidates: the structure winner is the smoother one 71-92% of the time).
        out = t.copy()
        bad = _smear(t) if rng.random() < 0.5 else _blotches(t, rng)
        out[m] = bad[m]
        return out.astype(np.uint8)
    if dimension == "aesthetics":
        # Missing detail where there should be some (blur over an object or word in the region), or added
        # artefacts (noise) -- the score penalises both; a base model's candidates mostly show the first.
        if _has_content(sample) and rng.random() < 0.7:
            out = t.copy()
            blurred = blur(t, sample.target.shape[0] / 12)
            from steps.world import dilate

            region = dilate(m, 2)
            out[region] = blurred[region]
            return out.astype(np.uint8)
        return np.clip(t + rng.normal(0, 25, t.shape), 0, 255).astype(np.uint8)
    raise ValueError(f"no easy corruption for {dimension!r}")


CANDIDATE_EASY_DIMENSIONS = ("consistency", "removal_quality", "text_alignment")


def candidate_easy_pair(sample, candidate: np.ndarray, dimension: str, rng: np.random.Generator):
    """(better, worse) built from a real base-model candidate, better BY CONSTRUCTION (no scorer involved).

    consistency: the candidate with its kept region pulled toward the source (every pixel outside the mask
    moves closer to it); removal_quality / text_alignment: the candidate with the region to generate pulled
    toward the ground truth. Unlike target-vs-corruption pairs these look like the images the judge must
    rank (blurry, drifting candidates), so they teach the comparison on the real distribution.
    """
    c = candidate.astype(np.float32)
    m = sample.mask > 127
    a = float(rng.uniform(0.3, 1.0))
    out = c.copy()
    if dimension == "consistency":
        out[~m] = c[~m] + a * (sample.image.astype(np.float32)[~m] - c[~m])
    elif dimension in ("removal_quality", "text_alignment"):
        out[m] = c[m] + a * (sample.target.astype(np.float32)[m] - c[m])
    else:
        raise ValueError(f"no candidate-based easy pair for {dimension!r}")
    return np.clip(np.round(out), 0, 255).astype(np.uint8), candidate


def blur(image: np.ndarray, radius: float) -> np.ndarray:
    from PIL import Image, ImageFilter

    return np.asarray(Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius)),
                      np.float32)


def _smear(t: np.ndarray) -> np.ndarray:
    """Smeared sideways, blurred and mirrored: colours kept, structure lost."""
    side = t.shape[0]
    smear = np.mean([np.roll(t, k, axis=1) for k in range(-side // 10, side // 10 + 1, 2)], axis=0)
    return blur(smear, side / 24)[::-1, ::-1]


def _blotches(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency colour blobs over the image (a weak generator's artefacts)."""
    side = t.shape[0]
    coarse = rng.normal(0, 1, (4, 4, 3)).astype(np.float32)
    from PIL import Image

    up = np.stack([np.asarray(Image.fromarray(coarse[..., c]).resize((side, side), Image.BICUBIC)) for c in range(3)], -1)
    return np.clip(t + 70 * up, 0, 255)


def _has_content(sample) -> bool:
    """Whether the region to generate should hold the requested object or word (fill, prompted extend)."""
    return sample.task == "fill" or (sample.task == "extend" and bool(sample.meta.get("user_prompt")))


def nothing_generated(sample) -> np.ndarray:
    """The target with the masked region reset to clean background (nothing generated there)."""
    out = sample.target.copy()
    m = sample.mask > 127
    out[m] = sample.background[m]
    return out


def easy_item(samples, rng: np.random.Generator):
    """(sample, dimension, winner, loser): a random sample's target vs an `easy_loser` of one of its dimensions."""
    from steps.world import dimensions_for

    s = samples[int(rng.integers(len(samples)))]
    dims = dimensions_for(s.task, s.prompt)
    dim = dims[int(rng.integers(len(dims)))]
    return s, dim, s.target, easy_loser(s, dim, rng)


def easy_pair_batch(samples, rng: np.random.Generator, n: int):
    """``n`` ground-truth comparisons, each in both orders: the target vs an `easy_loser` of one of the task's
    dimensions, asked with the judge's own query. Returns ([firsts, seconds], queries, labels (True = Yes))."""
    import torch

    from steps.preferences import judge_query

    firsts, seconds, queries = [], [], []
    for _ in range(n):
        s, dim, w, lo = easy_item(samples, rng)
        q = judge_query(s.task, dim, s.prompt)
        firsts += [w, lo]
        seconds += [lo, w]
        queries += [q, q]
    return [np.stack(firsts), np.stack(seconds)], queries, torch.tensor([True, False] * n)
