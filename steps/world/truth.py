"""The synthetic world's truth: every candidate scored on every dimension of its task (docs/DESIGN.md §5).

Scores: c = candidate, s = source, t = target, b = clean background, pixels in [0, 1], M = inside the
mask, ~M = outside. A pixel "shows colour k" when k is the nearest of {all named colours, b at that pixel}
and closer than COLOUR_MAX_DIST (Euclidean RGB). All scores lie in [0, 1], higher = better.
- consistency     = exp(-mean_{~M} |c - s| / CONSISTENCY_TAU)                       (tau = 0.1)
- text_alignment  = objects: 0.5 * recall + 0.5 * IoU of R and C; words: IoU of R and C, where R / C are
                    the M pixels where t / c show the requested colour (recall = |R & C| / |R|)
- structure       = clip(mean_M SSIM map(gray c, gray t; 7x7 window, data range 1), 0, 1)
- aesthetics      = exp(-(A + 0.5 * B)), scored on what an annotator sees: L = |4-neighbour Laplacian of gray|,
                    R = M dilated by 2 px (seams count), K = the kept ring of 4 px around R (visible context).
                    A (artefacts) = max(0, ln((Q25_R L(c) + eps) / (max(Q25_K L(s), Q25_R L(t)) + eps))), Q25 =
                    25th percentile: the region's texture level against its surroundings' (a low percentile
                    ignores the sparse edges of drawn content; noise and blotches raise it everywhere; the
                    target's own level only counts where correctly drawn content is denser, e.g. a word); B (blur) = max(0, ln((P98_R L(t) + eps) /
                    (P98_R L(c) + eps))) only where the region should hold visible edges (P98_R L(t) >
                    AESTHETICS_EDGE: a drawn object or word), else 0: a blurred shape is visible, the
                    low-amplitude background texture of the hidden target is not; eps = 0.01
- removal_quality = exp(-mean_M |c - t| / REMOVAL_TAU) * (1 - |O & C| / |O|), O = M pixels where s shows
                    the removed object's colour, C = where c shows it                  (tau = 0.1)
"""

from __future__ import annotations

import math

import numpy as np

from steps.vocabulary import dimensions_for
from steps.world.scenes import COLOURS, Sample

CONSISTENCY_TAU = 0.1


REMOVAL_TAU = 0.1


COLOUR_MAX_DIST = 0.4


AESTHETICS_EPS = 0.01


AESTHETICS_BLUR_WEIGHT = 0.5  # missing detail counts less than added artefacts


AESTHETICS_RING = 4  # px of kept context around the edited region that sets the expected texture level


AESTHETICS_TEXTURE_Q = 25  # percentile of |Laplacian| that measures texture level (edges of drawn content are sparse)


AESTHETICS_EDGE = 0.03  # P98 |Laplacian| above which a region shows drawn edges (background texture: < 0.01)


AESTHETICS_EDGE_Q = 98  # percentile of |Laplacian| that measures the strongest edges (an object's outline)


SSIM_WIN = 7


_PALETTE = np.array(list(COLOURS.values()), np.float32) / 255.0


def to_unit(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def to_gray(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114], np.float32)


def shows_colour(image: np.ndarray, background: np.ndarray, colour: str) -> np.ndarray:
    """HxW bool: pixels nearer `colour` than any other named colour and the clean background there."""
    image, background = to_unit(image), to_unit(background)
    d_pal = np.linalg.norm(image[..., None, :] - _PALETTE, axis=-1)
    d = d_pal[..., list(COLOURS).index(colour)]
    return (d <= d_pal.min(-1)) & (d < np.linalg.norm(image - background, axis=-1)) & (d < COLOUR_MAX_DIST)


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """``mask`` (bool HxW) grown by ``r`` pixels in every direction (a (2r+1)-square dilation)."""
    padded = np.pad(mask, r)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def abs_laplacian(gray: np.ndarray) -> np.ndarray:
    p = np.pad(gray, 1, mode="edge")
    return np.abs(p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * gray)


def aesthetics_score(cand: np.ndarray, src: np.ndarray, tgt: np.ndarray, inside: np.ndarray) -> float:
    """The aesthetics formula of the module docstring; images float in [0, 1], ``inside``: HxW bool."""
    region = dilate(inside, 2)
    ring = dilate(inside, 2 + AESTHETICS_RING) & ~region
    if not ring.any():
        ring = ~region if (~region).any() else region
    lap_c, lap_s, lap_t = (abs_laplacian(to_gray(x)) for x in (cand, src, tgt))
    eps = AESTHETICS_EPS
    # the expected texture level: the kept surroundings', or the requested content's own where it is denser
    # (a correctly drawn word fills a small region with edges); never the hidden background texture alone
    expected = max(float(np.percentile(lap_s[ring], AESTHETICS_TEXTURE_Q)),
                   float(np.percentile(lap_t[region], AESTHETICS_TEXTURE_Q)))
    artefacts = max(0.0, math.log((float(np.percentile(lap_c[region], AESTHETICS_TEXTURE_Q)) + eps) / (expected + eps)))
    edges_t = float(np.percentile(lap_t[region], AESTHETICS_EDGE_Q))
    blur = 0.0
    if edges_t > AESTHETICS_EDGE:
        blur = max(0.0, math.log((edges_t + eps) / (float(np.percentile(lap_c[region], AESTHETICS_EDGE_Q)) + eps)))
    return math.exp(-artefacts - AESTHETICS_BLUR_WEIGHT * blur)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def score(candidate: np.ndarray, sample: Sample, dims: tuple[str, ...] | None = None) -> dict[str, float]:
    """Ground-truth score in [0, 1] (higher = better) on every dimension of the sample's task (or ``dims``).

    `candidate`: HxWx3 uint8, or float in [0, 1]; formulas in the module docstring."""
    if np.shape(candidate) != sample.target.shape:
        raise ValueError(f"candidate for {sample.id} has shape {np.shape(candidate)}, "
                         f"expected {sample.target.shape}")
    cand, src, tgt = to_unit(candidate), to_unit(sample.image), to_unit(sample.target)
    inside = sample.mask > 127
    colour = sample.meta["colour"]
    scores = {}
    for dim in dims or dimensions_for(sample.task, sample.prompt):
        if dim == "consistency":
            outside = ~inside
            mae = float(np.abs(cand - src)[outside].mean()) if outside.any() else 0.0
            value = math.exp(-mae / CONSISTENCY_TAU)
        elif dim == "text_alignment":
            ref = shows_colour(tgt, sample.background, colour) & inside
            got = shows_colour(cand, sample.background, colour) & inside
            iou = _iou(ref, got)
            recall = float((ref & got).sum() / ref.sum()) if ref.any() else 1.0
            value = iou if sample.meta.get("word") else 0.5 * (recall + iou)
        elif dim == "structure":
            from skimage.metrics import structural_similarity

            _, ssim_map = structural_similarity(to_gray(cand), to_gray(tgt), win_size=SSIM_WIN, data_range=1.0,
                                                full=True)
            value = float(ssim_map[inside].mean())
        elif dim == "aesthetics":
            value = aesthetics_score(cand, src, tgt, inside)
        else:  # removal_quality
            obj = shows_colour(src, sample.background, colour) & inside
            left = shows_colour(cand, sample.background, colour) & obj
            absent = 1.0 - float(left.sum() / obj.sum()) if obj.any() else 1.0
            value = math.exp(-float(np.abs(cand - tgt)[inside].mean()) / REMOVAL_TAU) * absent
        scores[dim] = float(np.clip(value, 0.0, 1.0))
    return scores
