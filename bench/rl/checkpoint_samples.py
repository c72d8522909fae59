"""What an RL checkpoint does to full samples: base vs checkpoint on held-out conditions, same noise, scored.

    python bench/rl/checkpoint_samples.py --checkpoint outputs/tiny/policy/static_checkpoints/step_0000100 \\
        --tasks removal --out outputs/tiny/checkpoint_removal.png

The recipe trains on one-step x0 predictions; what users get is the full sampler. This script loads the
base pipeline, generates every benchmark condition of the chosen tasks with the base and with the
checkpoint's weights (``policy`` or ``ema``) from the SAME initial noise, scores both with the synthetic
world (steps.world.score: the simulated annotators' truth, which RL never sees) and writes:
- a grid per task (rows: conditions; columns: source | mask | base | checkpoint | target, each output
  labelled with its scores);
- per task x dimension: mean score of both, and good / same / bad of the checkpoint against the base
  (tie margin as the benchmark's), with the net win (good - bad) / n; printed and saved as JSON.
Only synthetic conditions (with a target) can be scored. LoRA checkpoints are loaded after adding
adapters of the rank found in the file (``--lora-alpha`` as in the run's config).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from steps.paths import TINY  # noqa: E402


def checkpoint_files(checkpoint: Path, which: str) -> list[Path]:
    """``<which>*.safetensors`` of a checkpoint folder (sharded: several), or the file itself."""
    files = [checkpoint] if checkpoint.is_file() else sorted(checkpoint.glob(f"{which}*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{checkpoint}: no {which}*.safetensors (a checkpoint folder of steps.rl.train?)")
    return files


def load_weights(transformer, files: list[Path], lora_alpha: float) -> int:
    """Load the checkpoint's tensors into the transformer (adding LoRA adapters first if it has them);
    returns the LoRA rank (0: full weights)."""
    from safetensors.torch import load_file

    from steps.rl.policy import add_lora

    state = {}
    for f in files:
        state.update(load_file(str(f)))
    rank = next((int(v.shape[0]) for k, v in state.items() if "lora_A" in k), 0)
    if rank:
        add_lora(transformer, rank, lora_alpha)
    result = transformer.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{files[0]}: {len(result.unexpected_keys)} tensors the transformer does not have, "
                         f"e.g. {result.unexpected_keys[0]!r}")
    return rank


def sample(pipe, samples: list, seed: int, num_steps: int, guidance: float = 30.0, chunk: int = 32) -> np.ndarray:
    """Full samples (uint8 NxHxWx3) of ``pipe`` on ``samples``, ``chunk`` at a time; chunk i is seeded seed + i."""
    import torch

    from steps.models.denoise import generate

    out = []
    for i in range(0, len(samples), chunk):
        part = samples[i:i + chunk]
        images = generate(pipe, np.stack([s.image for s in part]), np.stack([s.mask for s in part]),
                          [s.prompt for s in part], num_steps=num_steps, guidance=guidance,
                          generator=torch.Generator().manual_seed(seed + i))
        out.append(images.permute(0, 2, 3, 1).mul(255).round().clamp(0, 255).byte().numpy())
    return np.concatenate(out)


def compare(base_out: np.ndarray, ckpt_out: np.ndarray, samples: list, tie_margin: float) -> dict:
    from steps.world import score

    per_dim: dict[str, dict[str, list]] = {}
    per_sample = []
    for b, c, s in zip(base_out, ckpt_out, samples):
        sb, sc = score(b, s), score(c, s)
        per_sample.append({"id": s.id, "base": sb, "checkpoint": sc})
        for dim in sb:
            d = per_dim.setdefault(dim, {"base": [], "checkpoint": []})
            d["base"].append(sb[dim])
            d["checkpoint"].append(sc[dim])
    table = {}
    for dim, d in per_dim.items():
        diff = np.array(d["checkpoint"]) - np.array(d["base"])
        good, bad = float((diff > tie_margin).mean()), float((diff < -tie_margin).mean())
        table[dim] = {"base": float(np.mean(d["base"])), "checkpoint": float(np.mean(d["checkpoint"])),
                      "good": good, "same": 1.0 - good - bad, "bad": bad, "net_win": good - bad, "n": len(diff)}
    return {"dimensions": table, "samples": per_sample}


def grid(samples: list, base_out: np.ndarray, ckpt_out: np.ndarray, result: dict, title: str, path: Path,
         rows: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(rows, len(samples))
    fig, axes = plt.subplots(rows, 5, figsize=(8.5, 1.9 * rows + 0.4), squeeze=False)
    heads = ("source", "mask", "base", "checkpoint", "target")
    for r in range(rows):
        s, rec = samples[r], result["samples"][r]
        cells = (s.image, s.mask, base_out[r], ckpt_out[r], s.target)
        for c, (ax, img) in enumerate(zip(axes[r], cells)):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(heads[c], fontsize=9)
            if c in (2, 3):
                scores = rec["base" if c == 2 else "checkpoint"]
                ax.set_xlabel("\n".join(f"{k} {v:.2f}" for k, v in scores.items()), fontsize=6)
        axes[r][0].set_ylabel(f"{s.task}\n{s.prompt[:22]}", fontsize=7)
    fig.suptitle(title + "  (scores: steps.world.score, the simulated annotators' truth)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a steps.rl.train checkpoint folder (or a .safetensors file)")
    parser.add_argument("--weights", choices=("policy", "ema"), default="policy")
    parser.add_argument("--base-dir", default=str(TINY.base_model))
    parser.add_argument("--benchmark", default=str(TINY.benchmark))
    parser.add_argument("--tasks", nargs="+", default=["fill", "extend", "removal"])
    parser.add_argument("--n", type=int, default=32, help="conditions per task (the first n)")
    parser.add_argument("--rows", type=int, default=6, help="conditions shown per grid")
    parser.add_argument("--num-steps", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--tie-margin", type=float, default=0.02)
    parser.add_argument("--lora-alpha", type=float, default=0.0)
    parser.add_argument("--out", default=str(TINY.bench("checkpoint_samples.png")),
                        help="grid path; one file per task (<stem>_<task>.png) and <stem>.json")
    args = parser.parse_args(argv)


    from steps.data.datasets import load_samples
    from steps.models.policy import load_fill_pipeline
    from steps.runtime import setup

    setup(threads=1)
    files = checkpoint_files(Path(args.checkpoint), args.weights)
    samples = [s for s in load_samples(args.benchmark) if s.task in args.tasks and s.meta.get("source", "synthetic")
               == "synthetic"]
    pipe = load_fill_pipeline(args.base_dir)
    by_task = {t: [s for s in samples if s.task == t][: args.n] for t in args.tasks}

    def run(task_samples):  # one batch per task: every output from the same seed's noise
        return sample(pipe, task_samples, args.seed, args.num_steps, args.guidance, chunk=len(task_samples))

    base = {t: run(s) for t, s in by_task.items() if s}
    rank = load_weights(pipe.transformer, files, args.lora_alpha)
    ckpt = {t: run(by_task[t]) for t in base}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(args.checkpoint), "weights": args.weights, "lora_rank": rank, "tasks": {}}
    print(f"{args.checkpoint} ({args.weights} weights) against the base, same noise; simulated annotators' scores")
    print("| task/dimension | base | checkpoint | good | same | bad | net win | n |")
    print("|---|---|---|---|---|---|---|---|")
    for task in base:
        result = compare(base[task], ckpt[task], by_task[task], args.tie_margin)
        report["tasks"][task] = result
        for dim, row in result["dimensions"].items():
            print(f"| {task}/{dim} | {row['base']:.3f} | {row['checkpoint']:.3f} | {row['good']:.2f} | "
                  f"{row['same']:.2f} | {row['bad']:.2f} | {row['net_win']:+.2f} | {row['n']} |")
        grid(by_task[task], base[task], ckpt[task], result, f"{task}: base vs {Path(args.checkpoint).name}",
             out.with_name(f"{out.stem}_{task}.png"), args.rows)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(f"written: {out.with_name(out.stem + '_<task>.png')}, {out.with_suffix('.json')}")
    return report


if __name__ == "__main__":
    main()
