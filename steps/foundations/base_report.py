"""What base pretraining (steps/foundations/base_pretrain.py) shows: samples, the quality table, sample grids
and loss curves."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from steps.foundations.base_pretrain import BaseConfig


def sample_outputs(pipe, samples, cfg: BaseConfig, transformer=None, batch: int = 64, with_latents: bool = False):
    """Fill every sample with the pipeline (noise from ``cfg.seed``): N x H x W x 3 uint8.

    ``with_latents``: also return the sampler's final packed latents (N, tokens, channels), exactly what was
    decoded (re-encoding the uint8 images does not give them back: the VAE round trip blurs and drifts)."""
    import torch

    from steps.models.denoise import decode, denoise, encode_conditions

    outs, latents = [], []
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    with torch.no_grad():
        for i in range(0, len(samples), batch):
            chunk = samples[i:i + batch]
            cond = encode_conditions(pipe, np.stack([s.image for s in chunk]), np.stack([s.mask for s in chunk]),
                                     [s.prompt for s in chunk])
            lat = denoise(pipe, cond, cfg.sample_steps, cfg.guidance, generator=gen, transformer=transformer)
            img = decode(pipe, lat, cond.height, cond.width)
            outs.append((img.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
            latents.append(lat)
    images = np.concatenate(outs)
    return (images, torch.cat(latents)) if with_latents else images


def quality_table(samples, outputs) -> dict[str, float]:
    """Mean world score per task x dimension: {"<task>/<dimension>": mean}."""
    from steps.world import score

    acc: dict[str, list[float]] = {}
    for s, out in zip(samples, outputs):
        for dim, v in score(out, s).items():
            acc.setdefault(f"{s.task}/{dim}", []).append(v)
    return {k: float(np.mean(v)) for k, v in sorted(acc.items())}


def sample_grids(samples, systems: dict[str, np.ndarray], out_dir: Path, per_task: int = 4) -> list[Path]:
    """One PNG per task; rows: conditions; columns: source | mask | <systems...> | target."""
    from steps.viz import image_grid, save_image

    paths = []
    for task in ("fill", "extend", "removal"):
        idx = [i for i, s in enumerate(samples) if s.task == task][:per_task]
        rows = [[samples[i].image, samples[i].mask, *(out[i] for out in systems.values()), samples[i].target]
                for i in idx]
        grid = image_grid(rows, ["source", "mask", *systems, "target"], [f"{samples[i].prompt}" for i in idx],
                          title=f"base model samples: {task}")
        paths.append(save_image(grid, out_dir / f"samples_{task}.png"))
    return paths


def loss_plot(curves: dict[str, list[float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.2))
    for ax, (name, curve) in zip(np.atleast_1d(axes), curves.items()):
        k = max(1, len(curve) // 50)
        smooth = np.convolve(curve, np.ones(k) / k, mode="valid")
        ax.plot(smooth)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_yscale("log")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
