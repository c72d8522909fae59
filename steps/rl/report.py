"""What the OneReward RL recipe (steps/rl/train.py) reports: sample grids and the summary of its step history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def save_sample_grid(samples: list, reference: torch.Tensor, policy: torch.Tensor, path: Path,
                     title: str) -> Path:
    """Rows: source | mask | reference | policy x0 (what the judge compared) | target; at most 4 rows."""
    from steps.viz import image_grid, save_image

    def hwc(x: torch.Tensor) -> np.ndarray:
        return x.permute(1, 2, 0).float().numpy()

    rows = [[s.image, s.mask, hwc(reference[i]), hwc(policy[i]), s.target] for i, s in enumerate(samples[:4])]
    grid = image_grid(rows, ["source", "mask", "reference", "policy x0", "target"],
                      [f"{s.task}: {s.prompt}" for s in samples[:4]], title=title)
    return save_image(grid, path)


def summarise(history: list[dict[str, Any]], window_fraction: float = 0.2) -> dict[str, Any]:
    """Mean reward per key over the last ``window_fraction`` of the steps, and step timings."""
    window = history[-max(1, int(len(history) * window_fraction)):]
    final: dict[str, list[float]] = {}
    for record in window:
        for k, v in record.items():
            if k.startswith("reward/"):
                final.setdefault(k, []).append(v)
    seconds = [r["step_seconds"] for r in history] or [0.0]
    return {"steps_done": history[-1]["step"] if history else 0,
            "final_rewards": {k: float(np.mean(v)) for k, v in sorted(final.items())},
            "step_seconds_median": float(np.median(seconds)), "train_seconds": float(np.sum(seconds))}
