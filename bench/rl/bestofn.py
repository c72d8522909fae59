"""Best-of-n distillation: does fine-tuning the fill model on the judge's picks raise the truth of full samples?

    python bench/rl/bestofn.py --selector oracle --out /tmp/bon_oracle.json
    python bench/rl/bestofn.py --selector judge --judge outputs/tiny/judge --out /tmp/bon_judge.json

An experiment beside the paper's recipe (which backpropagates the judge's reward into the fill model,
steps/rl/train.py). Here the judge is never differentiated: for each of ``--conditions`` training conditions the base
samples ``--k`` candidates with its own sampler (different noise); the selector picks one per condition -- the
world's truth (``oracle``: the mean over the task's dimensions) or the judge (``judge``: the candidate with the
highest mean both-orders preference against the others, over the task's dimensions); the base's transformer is
then fine-tuned with its own rectified-flow loss on the picks (steps.foundations.base_pretrain.train_transformer; rejection-sampling
fine-tuning, as in RAFT / ReST). Reported: the truth of the picks against the mean candidate (how well the
selector selects), and the truth of full validation samples (fixed noise) of the base and of the fine-tuned
model per task, with a net win (share of validation condition x dimension where the tuned sample beats the
base's by more than the annotators' tie margin 0.03, minus the share where it loses).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from steps.paths import TINY  # noqa: E402

TIE = 0.03


def truth(sample, image) -> dict[str, float]:
    from steps.world import score

    return score(image, sample)


def judge_pick(judge, samples, cands: np.ndarray) -> np.ndarray:
    """Index of the candidate with the highest mean both-orders preference against the others."""
    from steps.models.judge import preference
    from steps.vocabulary import dimensions_for

    k = cands.shape[0]
    rows = []  # (sample index, i, j, dimension)
    for n, s in enumerate(samples):
        for dim in dimensions_for(s.task, s.prompt):
            for i in range(k):
                for j in range(i + 1, k):
                    rows.append((n, i, j, dim))
    forward, backward = judge.compare(
        [cands[i][n] for n, i, _, _ in rows], [cands[j][n] for n, _, j, _ in rows],
        [samples[n].task for n, _, _, _ in rows], [d for *_, d in rows], [samples[n].prompt for n, _, _, _ in rows],
        [samples[n].image for n, _, _, _ in rows], [samples[n].mask for n, _, _, _ in rows])
    pref = preference(np.asarray(forward), np.asarray(backward))
    wins = np.zeros((len(samples), k))
    for (n, i, j, _), p in zip(rows, pref):
        wins[n, i] += p
        wins[n, j] += 1 - p
    return wins.argmax(1)


def main(argv: list[str] | None = None) -> dict:
    import torch

    from bench.benchlib import machine, machine_line
    from steps.data.datasets import load_samples
    from steps.foundations.base_pretrain import (
        BaseConfig,
        encode_dataset,
        latent_mask_weights,
        train_transformer,
    )
    from steps.foundations.base_report import sample_outputs
    from steps.models.policy import load_fill_pipeline
    from steps.runtime import setup

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=str(TINY.foundations / "base"))
    ap.add_argument("--train", default=str(TINY.train))
    ap.add_argument("--validation", default=str(TINY.validation))
    ap.add_argument("--selector", choices=["oracle", "judge", "random", "target"], default="oracle",
                    help="target: the world's ground truth instead of a candidate (the fine-tuning's control)")
    ap.add_argument("--judge", default=str(TINY.judge))
    ap.add_argument("--conditions", type=int, default=600)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--eval-per-task", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    setup(threads=args.threads)
    t0 = time.perf_counter()
    pipe = load_fill_pipeline(args.base)
    cfg = BaseConfig.for_profile("tiny", steps=args.steps, lr=args.lr, warmup=10, log_every=50)
    train = load_samples(args.train)[: args.conditions]
    val = load_samples(args.validation, limit_per_task=args.eval_per_task)
    base_val = sample_outputs(pipe, val, cfg)
    cands = np.stack([sample_outputs(pipe, train, dataclasses.replace(cfg, seed=100 + k)) for k in range(args.k)])
    truths = np.array([[np.mean(list(truth(s, cands[k][n]).values())) for k in range(args.k)]
                       for n, s in enumerate(train)])
    if args.selector in ("oracle", "target"):
        pick = truths.argmax(1)
    elif args.selector == "random":
        pick = np.random.default_rng(0).integers(0, args.k, len(train))
    else:
        from steps.models.judge import Judge

        pick = judge_pick(Judge.load(args.judge).eval(), train, cands)
    if args.selector == "target":  # continued training on the ground truth: what the fine-tuning alone does
        picked, pick = list(train), truths.argmax(1)
    else:
        picked = [dataclasses.replace(s, target=cands[pick[n]][n]) for n, s in enumerate(train)]
    selection = {"picked_truth": float(truths[np.arange(len(train)), pick].mean()),
                 "mean_candidate_truth": float(truths.mean()), "best_truth": float(truths.max(1).mean())}
    print("selection:", json.dumps(selection), flush=True)
    targets, cond = encode_dataset(pipe, picked)
    weights = latent_mask_weights(pipe, picked, cfg.mask_weight)
    torch.manual_seed(0)
    train_transformer(pipe, targets, cond, weights, cfg, lambda m, s: None)
    tuned_val = sample_outputs(pipe, val, cfg)
    per_task: dict[str, dict[str, float]] = {}
    for task in ("fill", "extend", "removal"):
        idx = [i for i, s in enumerate(val) if s.task == task]
        b = [truth(val[i], base_val[i]) for i in idx]
        t = [truth(val[i], tuned_val[i]) for i in idx]
        diffs = np.array([t[j][d] - b[j][d] for j in range(len(idx)) for d in b[j]])
        per_task[task] = {"base": float(np.mean([np.mean(list(x.values())) for x in b])),
                          "tuned": float(np.mean([np.mean(list(x.values())) for x in t])),
                          "net_win": float((diffs > TIE).mean() - (diffs < -TIE).mean()), "n": len(idx)}
    result = {"args": vars(args), "selection": selection, "validation": per_task, "machine": machine(),
              "seconds": time.perf_counter() - t0}
    print(f"{machine_line(result['machine'])}; {result['seconds']:.0f} s")
    print("| task | base truth | tuned truth | net win (tie 0.03) | n |\n|---|---|---|---|---|")
    for task, r in per_task.items():
        print(f"| {task} | {r['base']:.3f} | {r['tuned']:.3f} | {r['net_win']:+.2f} | {r['n']} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
