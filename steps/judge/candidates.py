"""Preference candidates (paper §4.2): N candidates per training condition from the base model.

    python -m steps.judge.candidates --set base_dir=outputs/tiny/base_model --set train_dir=data/tiny/train \\
        --set out_dir=data/tiny/candidates

Sampling is randomised per (batch, candidate slot): number of denoising steps, distilled-guidance value,
initial-noise strength (1.0 = pure noise; < 1 starts from the source image noised to that level) and the
seed. FLUX.1-Fill is guidance-distilled and has no negative-prompt input; the paper's negative-prompt
randomisation would need true classifier-free guidance (two passes per step) and is not done here.

Output folder: ``candidates.jsonl`` (one candidate set per line: ``condition_id``, ``task``, ``prompt``,
``candidates`` (paths relative to the file), ``sampling`` (per candidate)) and ``images/*.png``; written to
a temporary folder and renamed into place.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steps.config import Profiled, field, parse_cli
from steps.fields import Batched, Seeded, Threaded
from steps.paths import TINY


@dataclass(frozen=True)
class CandidatesConfig(Profiled, Batched, Seeded, Threaded):
    SECTION = "candidates"  # of configs/<profile>.yaml

    base_dir: str = field(str(TINY.base_model), "the base fill pipeline (diffusers layout)")
    train_dir: str = field(str(TINY.train), "training conditions (manifest.jsonl)")
    out_dir: str = field(str(TINY.candidates), "output folder (candidates.jsonl + images/)")
    n_conditions: int = field(2000, "training conditions that get a candidate set (first n in manifest order; "
                                    "tiny: all of them, so every held-out cell has >= 50 pairs)")
    n_candidates: int = field(4, "candidates per condition (paper: 4)")
    steps_range: tuple[int, int] = field((4, 12), "denoising steps drawn uniformly in this range")
    guidance_range: tuple[float, float] = field((5.0, 60.0), "distilled-guidance value drawn in this range")
    strengths: tuple[float, ...] = field((1.0, 1.0, 0.9, 0.75), "initial-noise strengths to draw from")

    def __post_init__(self):
        if self.n_candidates < 2:
            raise ValueError("n_candidates must be >= 2 (best and worst are picked from them)")
        if self.n_conditions < 1 or self.batch_size < 1:
            raise ValueError("n_conditions and batch_size must be >= 1")
        if not all(0 < s <= 1 for s in self.strengths):
            raise ValueError(f"strengths must be in (0, 1], got {self.strengths}")

    @classmethod
    def path_defaults(cls, paths, **context: Any) -> dict[str, Any]:
        return dict(base_dir=str(paths.base_model), train_dir=str(paths.train), out_dir=str(paths.candidates))


def draw_sampling(rng: np.random.Generator, cfg: CandidatesConfig) -> dict[str, Any]:
    return {"num_steps": int(rng.integers(cfg.steps_range[0], cfg.steps_range[1] + 1)),
            "guidance": round(float(rng.uniform(*cfg.guidance_range)), 2),
            "strength": float(rng.choice(cfg.strengths)),
            "seed": int(rng.integers(0, 2**31 - 1))}


def generate_candidates(cfg: CandidatesConfig) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from steps.data.datasets import load_samples
    from steps.io import atomic_dir, write_png
    from steps.manifest import write_manifest
    from steps.models.denoise import decode, denoise, encode_conditions
    from steps.models.policy import load_fill_pipeline
    from steps.runtime import setup

    setup(threads=cfg.threads)
    pipe = load_fill_pipeline(cfg.base_dir)
    samples = load_samples(cfg.train_dir, limit=cfg.n_conditions)
    rng = np.random.default_rng(cfg.seed)
    sets: dict[str, dict[str, Any]] = {s.id: {"condition_id": s.id, "task": s.task, "prompt": s.prompt,
                                              "candidates": [], "sampling": []} for s in samples}
    out = Path(cfg.out_dir)
    with atomic_dir(out) as tmp:
        batches = [samples[i:i + cfg.batch_size] for i in range(0, len(samples), cfg.batch_size)]
        bar = tqdm(total=len(samples) * cfg.n_candidates, desc="candidates", unit="img", mininterval=5)
        for chunk in batches:
            with torch.no_grad():
                cond = encode_conditions(pipe, np.stack([s.image for s in chunk]), np.stack([s.mask for s in chunk]),
                                         [s.prompt for s in chunk], with_image_latents=True)
                for slot in range(cfg.n_candidates):
                    sampling = draw_sampling(rng, cfg)
                    gen = torch.Generator().manual_seed(sampling["seed"])
                    lat = denoise(pipe, cond, sampling["num_steps"], sampling["guidance"], generator=gen,
                                  strength=sampling["strength"])
                    imgs = (decode(pipe, lat, cond.height, cond.width).permute(0, 2, 3, 1).numpy() * 255)
                    for s, img in zip(chunk, imgs.round().astype(np.uint8)):
                        rel = f"images/{s.id}-c{slot}.png"
                        write_png(tmp / rel, img)
                        sets[s.id]["candidates"].append(rel)
                        sets[s.id]["sampling"].append(sampling)
                    bar.update(len(chunk))
        bar.close()
        write_manifest(tmp / "candidates.jsonl", list(sets.values()))
        (tmp / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return {"out_dir": str(out), "n_sets": len(sets), "n_images": len(sets) * cfg.n_candidates}


def read_candidate_sets(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read candidates.jsonl; every candidate path resolved (absolute) and checked to exist."""
    from steps.manifest import ManifestError, Problem, iter_jsonl, resolve_inside

    path = Path(path)
    problems: list[Problem] = []
    sets = []
    for lineno, obj in iter_jsonl(path, problems):
        for name in ("condition_id", "task", "candidates"):
            if name not in obj:
                problems.append(Problem(str(path), lineno, name, "required field missing"))
        cands = obj.get("candidates", [])
        if not isinstance(cands, list) or len(cands) < 2:
            problems.append(Problem(str(path), lineno, "candidates", "expected a list of at least 2 image paths"))
            continue
        resolved = [resolve_inside(path.parent, c, str(path), lineno, "candidates", problems) for c in cands]
        sets.append(dict(obj, candidates=resolved, line=lineno))
    if problems:
        raise ManifestError(problems)
    return sets


def main(argv: list[str] | None = None) -> None:
    cfg, _ = parse_cli(CandidatesConfig, __doc__, argv)
    print(json.dumps(generate_candidates(cfg), indent=2))


if __name__ == "__main__":
    main()
