"""The oracle reward: a differentiable stand-in for the world's truth, used in place of the judge.

It separates the two ways RL can fail on this world: if the recipe cannot raise the truth of full samples
with a PERFECT reward, the recipe is the problem, not the judge. The oracle answers the judge's question
"is the first image better than the second on <dimension>?" as

    P(Yes) = sigmoid(sharpness * (truth(first) - truth(second)))

with truth a torch re-implementation of `steps.world.score` (same formulas and constants; soft where the
world uses hard colour masks: a pixel "shows colour k" with weight softmax over the palette and the clean
background of -distance / COLOUR_SOFTNESS, times sigmoid((COLOUR_MAX_DIST - distance) / COLOUR_SOFTNESS)).
Only the smoke / tiny profiles have it (the world knows every condition's ground truth).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COLOUR_SOFTNESS = 0.03


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    return (x * w[:, None, None]).sum(0)


def _abs_laplacian(g: torch.Tensor) -> torch.Tensor:
    p = F.pad(g[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    return (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * g).abs()


def soft_shows_colour(x: torch.Tensor, background: torch.Tensor, colour: str) -> torch.Tensor:
    """HxW in [0, 1]: soft version of `steps.world.shows_colour` (x, background: 3xHxW in [0, 1])."""
    from steps.world.truth import COLOUR_MAX_DIST, COLOURS

    palette = torch.tensor(list(COLOURS.values()), dtype=x.dtype, device=x.device) / 255.0  # K x 3
    d_pal = (x[None] - palette[:, :, None, None]).pow(2).sum(1).add(1e-8).sqrt()  # K x H x W
    d_bg = (x - background).pow(2).sum(0).add(1e-8).sqrt()[None]
    k = list(COLOURS).index(colour)
    nearest = torch.softmax(-torch.cat([d_pal, d_bg]) / COLOUR_SOFTNESS, 0)[k]
    return nearest * torch.sigmoid((COLOUR_MAX_DIST - d_pal[k]) / COLOUR_SOFTNESS)


def _ssim_map(a: torch.Tensor, b: torch.Tensor, win: int) -> torch.Tensor:
    """skimage's structural_similarity map (uniform window, sample covariance, data range 1), HxW."""
    pad = win // 2
    x = torch.stack([a, b, a * a, b * b, a * b])[None]
    means = F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), win, stride=1)[0]
    mu_a, mu_b, aa, bb, ab = means
    cov = win * win / (win * win - 1)
    va, vb, vab = cov * (aa - mu_a**2), cov * (bb - mu_b**2), cov * (ab - mu_a * mu_b)
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_a * mu_b + c1) * (2 * vab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))


def _dilate(mask: torch.Tensor, r: int) -> torch.Tensor:
    if r <= 0:
        return mask
    return F.max_pool2d(mask[None, None].float(), 2 * r + 1, stride=1, padding=r)[0, 0] > 0.5


class SampleTruth:
    """The world's truth of one condition as a differentiable function of a 3xHxW candidate in [0, 1]."""

    def __init__(self, sample, device=None):
        from steps.world import shows_colour

        def t(a):
            return torch.as_tensor(a, dtype=torch.float32, device=device).permute(2, 0, 1) / 255.0

        self.sample = sample
        self.source, self.target, self.background = t(sample.image), t(sample.target), t(sample.background)
        self.inside = torch.as_tensor(sample.mask > 127, device=device)
        colour = sample.meta["colour"]
        self.colour = colour
        self.ref_colour = torch.as_tensor(shows_colour(sample.target, sample.background, colour) & (sample.mask > 127),
                                          dtype=torch.float32, device=device)
        self.removed = torch.as_tensor(shows_colour(sample.image, sample.background, colour) & (sample.mask > 127),
                                       dtype=torch.float32, device=device)

    def __call__(self, x: torch.Tensor, dim: str) -> torch.Tensor:
        from steps.world.truth import (
            AESTHETICS_BLUR_WEIGHT,
            AESTHETICS_EDGE,
            AESTHETICS_EDGE_Q,
            AESTHETICS_EPS,
            AESTHETICS_RING,
            AESTHETICS_TEXTURE_Q,
            CONSISTENCY_TAU,
            REMOVAL_TAU,
            SSIM_WIN,
        )

        inside = self.inside
        if dim == "consistency":
            outside = ~inside
            if not outside.any():
                return x.sum() * 0 + 1
            mae = (x - self.source).abs().mean(0)[outside].mean()
            return torch.exp(-mae / CONSISTENCY_TAU)
        if dim == "text_alignment":
            got = soft_shows_colour(x, self.background, self.colour) * inside
            ref = self.ref_colour
            inter, union = (ref * got).sum(), (ref + got - ref * got).sum()
            iou = inter / union if float(union.detach()) > 0 else x.sum() * 0 + 1
            if self.sample.meta.get("word"):
                return iou
            recall = inter / ref.sum() if float(ref.sum()) > 0 else x.sum() * 0 + 1
            return 0.5 * (recall + iou)
        if dim == "structure":
            return _ssim_map(_gray(x), _gray(self.target), SSIM_WIN)[inside].mean().clamp(0, 1)
        if dim == "aesthetics":
            region = _dilate(inside, 2)
            ring = _dilate(inside, 2 + AESTHETICS_RING) & ~region
            if not ring.any():
                ring = ~region if (~region).any() else region
            lap_c = _abs_laplacian(_gray(x))
            lap_s, lap_t = _abs_laplacian(_gray(self.source)), _abs_laplacian(_gray(self.target))
            eps = AESTHETICS_EPS
            expected = max(float(torch.quantile(lap_s[ring], AESTHETICS_TEXTURE_Q / 100)),
                           float(torch.quantile(lap_t[region], AESTHETICS_TEXTURE_Q / 100)))
            artefacts = torch.relu(torch.log((torch.quantile(lap_c[region], AESTHETICS_TEXTURE_Q / 100) + eps)
                                             / (expected + eps)))
            edges_t = float(torch.quantile(lap_t[region], AESTHETICS_EDGE_Q / 100))
            blur = x.sum() * 0
            if edges_t > AESTHETICS_EDGE:
                blur = torch.relu(torch.log((edges_t + eps)
                                            / (torch.quantile(lap_c[region], AESTHETICS_EDGE_Q / 100) + eps)))
            return torch.exp(-artefacts - AESTHETICS_BLUR_WEIGHT * blur)
        if dim == "removal_quality":
            mae = (x - self.target).abs().mean(0)[inside].mean()
            obj = self.removed
            if float(obj.sum()) > 0:
                left = (soft_shows_colour(x, self.background, self.colour) * obj).sum() / obj.sum()
            else:
                left = x.sum() * 0
            return torch.exp(-mae / REMOVAL_TAU) * (1 - left)
        raise ValueError(f"unknown dimension {dim!r}")


class OracleReward:
    """P(Yes) of the judge's question answered by the world's differentiable truth (see the module docstring)."""

    def __init__(self, sharpness: float = 20.0):
        self.sharpness = sharpness
        self._truths: dict[str, SampleTruth] = {}

    def truth(self, sample) -> SampleTruth:
        if sample.id not in self._truths:
            self._truths[sample.id] = SampleTruth(sample)
        return self._truths[sample.id]

    def p_yes(self, first: torch.Tensor, second: torch.Tensor, rows: torch.Tensor, dims: list[str],
              samples: list) -> torch.Tensor:
        """Row r: sigmoid(k * (truth(first[rows[r]]) - truth(second[rows[r]]))) on dimension dims[r] of
        samples[rows[r]] (``samples`` indexed like the images)."""
        out = []
        for r, dim in zip(rows.tolist(), dims):
            truth = self.truth(samples[r])
            out.append(torch.sigmoid(self.sharpness * (truth(first[r].float(), dim)
                                                       - truth(second[r].float(), dim))))
        return torch.stack(out)
