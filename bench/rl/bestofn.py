"""Best-of-n distillation: does fine-tuning the fill model on its own best samples raise the truth of full samples?

    python bench/rl/bestofn.py --runs oracle:latents --out /tmp/bon_oracle.json
    python bench/rl/bestofn.py --conditions 300 --steps 150 --runs oracle:images random:images random:latents \
        oracle:latents oracle:pasted target:images                       # the diagnosis (docs/ABLATIONS.md)
    python bench/rl/bestofn.py --runs judge:latents --judge outputs/tiny/judge

An experiment beside the paper's recipe (which backpropagates the judge's reward into the fill model,
steps/rl/train.py). Here the judge is never differentiated: for each of ``--conditions`` training conditions the
base samples ``--k`` candidates with its own sampler (8 Euler steps, a different noise per candidate); a selector
picks one per condition -- the world's truth of the pasted-back output (``oracle``: the mean over the task's
dimensions), the judge (``judge``: the highest mean both-orders preference against the others), ``random``, or
``target`` (the world's ground truth instead of a candidate: what the fine-tuning alone does); the base's
transformer is then fine-tuned with its own rectified-flow loss on the picks (train_transformer; rejection-sampling
fine-tuning, as in RAFT / ReST). Each of ``--runs`` (SELECTOR:TARGETS) starts from the same base and candidates.
TARGETS is what the flow-matching loss is fitted to: ``latents``, the sampler's own final latents (the default: the
picks exactly as the model made them); ``images``, the decoded uint8 picks re-encoded by the VAE (the first
version, which made the base worse: the round trip is not the identity, see docs/ABLATIONS.md); ``pasted``, the
decoded picks with the source's kept pixels pasted back, re-encoded; ``latents_pasted``, the sampler's latents
where a latent token touches the mask and the source's encoded latents elsewhere (paste-back in latent space).
Reported: the truth of the picks against the mean candidate, and per task the truth of full validation samples
(the same noise for base and fine-tuned model) with the noise-free simulated annotators' net win of the tuned
model against the base (the benchmark's tie margin, steps.evaluation.netwin.annotator_outcome; 95% bootstrap
interval over conditions), for the pasted-back output (primary) and the raw one.
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

SELECTORS = ("oracle", "random", "judge", "target")
TARGETS = ("latents", "latents_pasted", "images", "pasted")


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


def pasted(samples, images: np.ndarray) -> np.ndarray:
    """The kept pixels restored from the source: what ``infer`` delivers."""
    from steps.evaluation.fill import paste_kept

    return np.stack([paste_kept(s.image, s.mask, o) for s, o in zip(samples, images)])


def scored(samples, images: np.ndarray) -> dict[str, list[dict[str, float]]]:
    """World scores of every output, pasted back (primary) and raw."""
    return {"pasted": [truth(s, o) for s, o in zip(samples, pasted(samples, images))],
            "raw": [truth(s, o) for s, o in zip(samples, images)]}


def compare(samples, base: list[dict[str, float]], tuned: list[dict[str, float]], tie: float) -> dict:
    """Per task: mean truth of base and tuned samples (same noise) and the annotators' net win of tuned vs base
    (good - bad over condition x dimension, noise-free, tie margin ``tie``) with a 95% bootstrap interval."""
    from bench.rl.headroom import SIGN, bootstrap
    from steps.evaluation.netwin import annotator_outcome

    out = {}
    for t, task in enumerate(("fill", "extend", "removal")):
        idx = [i for i, s in enumerate(samples) if s.task == task]
        nets = [np.array([SIGN[annotator_outcome(tuned[i][d] - base[i][d], tie)] for d in base[i]]) for i in idx]
        out[task] = {"base": float(np.mean([np.mean(list(base[i].values())) for i in idx])),
                     "tuned": float(np.mean([np.mean(list(tuned[i].values())) for i in idx])),
                     "net_win": float(sum(v.sum() for v in nets) / sum(v.size for v in nets)),
                     "net_win_ci": bootstrap(nets, 2000, t), "n": len(idx),
                     "dimensions": {d: {"base": float(np.mean([base[i][d] for i in idx if d in base[i]])),
                                        "tuned": float(np.mean([tuned[i][d] for i in idx if d in tuned[i]])),
                                        "net_win": float(np.mean([SIGN[annotator_outcome(tuned[i][d] - base[i][d], tie)]
                                                                  for i in idx if d in base[i]]))}
                                    for d in dict.fromkeys(d for i in idx for d in base[i])}}
    return out


def main(argv: list[str] | None = None) -> dict:
    import torch

    from bench.benchlib import machine, machine_line
    from steps.data.datasets import load_samples
    from steps.evaluation.benchmark import BenchmarkConfig
    from steps.foundations.base_pretrain import (
        BaseConfig,
        encode_dataset,
        latent_mask_weights,
        train_transformer,
    )
    from steps.foundations.base_report import sample_outputs
    from steps.models.policy import load_fill_pipeline
    from steps.runtime import setup
    from steps.tracking import git_commit

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=str(TINY.foundations / "base"))
    ap.add_argument("--train", default=str(TINY.train))
    ap.add_argument("--validation", default=str(TINY.validation))
    ap.add_argument("--runs", nargs="+", default=["oracle:latents"], metavar="SELECTOR:TARGETS",
                    help="fine-tunings from the same base and candidates; SELECTOR: " + "|".join(SELECTORS)
                         + "; TARGETS: " + "|".join(TARGETS))
    ap.add_argument("--judge", default=str(TINY.judge))
    ap.add_argument("--conditions", type=int, default=600)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--mask-weight", type=float, default=None,
                    help="loss weight of latent tokens touching the mask (default: the base's, BaseConfig.mask_weight)")
    ap.add_argument("--eval-per-task", type=int, default=50)
    ap.add_argument("--tie-margin", type=float, default=None, help="default: the benchmark's")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    runs = [tuple(r.split(":", 1)) for r in args.runs]
    for r in runs:
        if len(r) != 2 or r[0] not in SELECTORS or r[1] not in TARGETS:
            ap.error(f"--runs {':'.join(r)}: expected SELECTOR:TARGETS with SELECTOR in {SELECTORS}, "
                     f"TARGETS in {TARGETS}")
    tie = args.tie_margin if args.tie_margin is not None else BenchmarkConfig.tie_margin
    setup(threads=args.threads)
    t0, commit = time.perf_counter(), git_commit()
    pipe = load_fill_pipeline(args.base)
    state0 = {k: v.detach().clone() for k, v in pipe.transformer.state_dict().items()}
    cfg = BaseConfig.for_profile("tiny", steps=args.steps, lr=args.lr, warmup=10, log_every=50,
                                 **({} if args.mask_weight is None else {"mask_weight": args.mask_weight}))
    train = load_samples(args.train)[: args.conditions]
    val = load_samples(args.validation, limit_per_task=args.eval_per_task)
    base_val = scored(val, sample_outputs(pipe, val, cfg))
    drawn = [sample_outputs(pipe, train, dataclasses.replace(cfg, seed=100 + k), with_latents=True)
             for k in range(args.k)]
    cands, cand_latents = np.stack([d[0] for d in drawn]), torch.stack([d[1] for d in drawn])
    truths = np.array([[np.mean(list(truth(s, pasted([s], cands[k][n:n + 1])[0]).values())) for k in range(args.k)]
                       for n, s in enumerate(train)])
    world_latents, cond = encode_dataset(pipe, train)
    source_latents, _ = encode_dataset(pipe, [dataclasses.replace(s, target=s.image) for s in train])
    weights = latent_mask_weights(pipe, train, cfg.mask_weight)
    checks = {"identical_candidate_pairs": int(sum((cands[i] == cands[j]).all(axis=(1, 2, 3)).sum()
                                                   for i in range(args.k) for j in range(i + 1, args.k))),
              "candidate_pixel_std": float(cands.astype(np.float32).std(0).mean()),
              "latent_std_sampled_vs_world_targets": [float(cand_latents.std()), float(world_latents.std())]}
    results = []
    for selector, targets in runs:
        pick = select(selector, train, cands, truths, args.judge)
        rows = np.arange(len(train))
        selection = {"picked_truth": float(truths[rows, pick].mean()), "mean_candidate_truth": float(truths.mean()),
                     "best_truth": float(truths.max(1).mean())}
        if selector == "target":
            target_latents = world_latents
        elif targets.startswith("latents"):
            target_latents = cand_latents[torch.as_tensor(pick), torch.as_tensor(rows)]
            if targets == "latents_pasted":  # tokens clear of the mask take the source's latents (what the base learnt)
                touches = latent_mask_weights(pipe, train, 2.0) - 1  # 1 where a token touches the mask, else 0
                target_latents = touches * target_latents + (1 - touches) * source_latents
        else:
            images = cands[pick, rows]
            images = pasted(train, images) if targets == "pasted" else images
            target_latents, _ = encode_dataset(pipe, [dataclasses.replace(s, target=im) for s, im in zip(train, images)])
        exact = cand_latents[torch.as_tensor(pick), torch.as_tensor(rows)]
        selection["target_latent_rms_vs_sampled"] = float((target_latents - exact).pow(2).mean().sqrt())
        selection["target_pixel_mae_vs_sampled"] = round_trip_mae(pipe, target_latents, exact)
        pipe.transformer.load_state_dict(state0)
        torch.manual_seed(0)
        curve = train_transformer(pipe, target_latents, cond, weights, cfg, lambda m, s: None)
        tuned = scored(val, sample_outputs(pipe, val, cfg))
        run = {"selector": selector, "targets": targets, "selection": selection,
               "loss_first_last": [float(np.mean(curve[:10])), float(np.mean(curve[-10:]))],
               **{view: compare(val, base_val[view], tuned[view], tie) for view in ("pasted", "raw")}}
        print(f"{selector}:{targets}", json.dumps(selection), flush=True)
        print(markdown([run]).splitlines()[-1], flush=True)
        results.append(run)
    pipe.transformer.load_state_dict(state0)
    result = {"args": vars(args), "tie_margin": tie, "checks": checks, "runs": results, "commit": commit,
              "machine": machine(), "seconds": time.perf_counter() - t0}
    print(f"{machine_line(result['machine'])}; commit {commit[:12]}; {result['seconds']:.0f} s; checks {checks}")
    print(markdown(results))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def round_trip_mae(pipe, targets, sampled, batch: int = 100) -> float:
    """Mean |decoded targets - decoded sampled latents| in 0-255 units: how far from the picks the model is taught."""
    import torch

    from steps.evaluation.fill import model_resolution
    from steps.models.denoise import decode

    total = 0.0
    with torch.no_grad():
        for i in range(0, len(targets), batch):
            total += float((decode(pipe, targets[i:i + batch]) - decode(pipe, sampled[i:i + batch])).abs().sum())
    side = model_resolution(pipe)
    return 255 * total / (len(targets) * 3 * side * side)


def select(selector: str, train, cands: np.ndarray, truths: np.ndarray, judge_dir: str) -> np.ndarray:
    """One candidate index per condition."""
    if selector in ("oracle", "target"):
        return truths.argmax(1)
    if selector == "random":
        return np.random.default_rng(0).integers(0, cands.shape[0], len(train))
    from steps.models.judge import Judge

    return judge_pick(Judge.load(judge_dir).eval(), train, cands)


def markdown(results: list[dict]) -> str:
    head = "| picks : targets | picked / mean candidate | " + " | ".join(
        f"{task} truth, net win (pasted; raw)" for task in ("fill", "extend", "removal")) + " |"
    lines = [head, "|" + "---|" * 5]
    for r in results:
        cells = []
        for task in ("fill", "extend", "removal"):
            p, w = r["pasted"][task], r["raw"][task]
            cells.append(f"{p['base']:.3f} -> {p['tuned']:.3f}, {p['net_win']:+.2f} [{p['net_win_ci'][0]:+.2f}, "
                         f"{p['net_win_ci'][1]:+.2f}]; raw {w['tuned']:.3f}, {w['net_win']:+.2f}")
        sel = r["selection"]
        lines.append(f"| {r['selector']} : {r['targets']} | {sel['picked_truth']:.3f} / "
                     f"{sel['mean_candidate_truth']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
