"""Headroom: what preference RL can win near the base -- the spread of the base's own samples (issue 22, item 1).

    python bench/rl/headroom.py                                         # default ODE sampler, independent noise
    python bench/rl/headroom.py --sampler sde --window-start 0 --window 2 --a 0.7 --noise shared
    python bench/rl/headroom.py --validation data/tiny/validation --per-task 50 --n-samples 8 --out <json>

For every validation condition (never the benchmark) the base draws ``--n-samples`` outputs with the chosen
sampler: ``ode`` is the pipeline's default (``--steps`` Euler steps, the pipeline's guidance); ``sde`` is the RL
update's sampler (steps/rl/sde.py: ``--window`` stochastic flow-matching SDE steps from step ``--window-start`` at
noise level ``--a``, the rest Euler). ``--noise independent`` draws each sample's initial noise apart, ``shared``
gives the samples of a condition one initial noise (only the SDE window then separates them). Every output is
scored by the world's truth twice: as PASTED back (the kept pixels restored from the source, what ``infer``
delivers: the primary view) and RAW (the decoded output). Per task x dimension:

- ``mean``: mean truth of the samples; ``std``: the mean over conditions of the samples' std (ddof 1);
- ``bo<n>``: best-of-n minus mean, the expected truth of the best of a uniformly random n-subset of the samples
  (best = highest mean truth over the task's dimensions, the one image a selector would keep), computed exactly
  from the ranks, minus the mean; ``apart``: the share of sample pairs whose truth differs by more than the tie
  margin;
- ``net<n>``: the simulated annotators' net win (good - bad) / N over condition x dimension of that best-of-n
  against a base sample: the default ODE sampler with independent noise, ``--ref-samples`` fresh draws per
  condition, averaged exactly over them (noise-free annotators, the benchmark's tie margin,
  steps.evaluation.netwin.annotator_outcome). Its 95% interval is a percentile bootstrap over conditions.
  ``--reference within`` compares with one of the same samples instead (uniformly, possibly one in the subset,
  which the best never loses to on its own key: biased up at n close to --n-samples).

Writes JSON (``--out``, default bench/results/headroom_<sampler...>.json) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from math import comb
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from steps.paths import TINY  # noqa: E402

TASKS = ("fill", "extend", "removal")
VIEWS = ("pasted", "raw")
SIGN = {"good": 1, "same": 0, "bad": -1}


# ---------------------------------------------------------------- sampling


def ode_sampler(steps: int, guidance: float):
    """The pipeline's default sampler: ``steps`` Euler steps from the given initial noise."""
    from steps.models.denoise import denoise

    def run(pipe, cond, noise, generator):
        return denoise(pipe, cond, steps, guidance, noise=noise)

    return run


def sde_sampler(steps: int, guidance: float, window_start: int, window: int, a: float):
    """The RL update's sampler (steps.rl.sde.sample_window): ``window`` SDE steps from ``window_start``, the rest
    Euler; the window's step noise comes from ``generator``."""
    from steps.rl.sde import sample_window, window_indices

    window_indices(steps, window_start, window)  # a window outside the schedule fails before any sampling

    def run(pipe, cond, noise, generator):
        return sample_window(pipe, cond, pipe.transformer, steps, guidance, noise, window_start, window, a,
                             generator).latents

    return run


def seeded(*key: int):
    import torch

    return torch.Generator().manual_seed(int(np.random.default_rng(list(key)).integers(0, 2**62)))


def draw(pipe, samples, n: int, sampler, seed: int, shared: bool, batch: int = 64) -> np.ndarray:
    """``n`` raw outputs of every sample: (n, N, H, W, 3) uint8. Noise is keyed by (seed, sample k, chunk start)."""
    import torch

    from steps.models.denoise import decode, encode_conditions, sample_noise

    out = np.zeros((n, len(samples), *samples[0].target.shape), np.uint8)
    with torch.no_grad():
        for start in range(0, len(samples), batch):
            chunk = samples[start:start + batch]
            cond = encode_conditions(pipe, np.stack([s.image for s in chunk]), np.stack([s.mask for s in chunk]),
                                     [s.prompt for s in chunk])
            for k in range(n):
                noise = sample_noise(pipe, cond, seeded(seed, 0 if shared else k + 1, start))
                lat = sampler(pipe, cond, noise, seeded(seed, 10_000 + k, start))
                img = decode(pipe, lat, cond.height, cond.width)
                out[k, start:start + len(chunk)] = (img.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return out


def views(samples, outputs: np.ndarray) -> dict[str, np.ndarray]:
    """{"pasted": kept pixels restored from the source (what ``infer`` delivers), "raw": as decoded}."""
    from steps.evaluation.fill import paste_kept

    pasted = np.stack([[paste_kept(s.image, s.mask, o) for s, o in zip(samples, per_k)] for per_k in outputs])
    return {"pasted": pasted, "raw": outputs}


def truths(samples, outputs: np.ndarray) -> list[np.ndarray]:
    """Per condition an (n, dimensions) array of world scores, in `dimensions_for` order."""
    from steps.world import score

    return [np.array([list(score(outputs[k, c], s).values()) for k in range(outputs.shape[0])])
            for c, s in enumerate(samples)]


# ---------------------------------------------------------------- statistics


def best_of_weights(key: np.ndarray, n: int) -> np.ndarray:
    """P(sample i is the best of a uniformly random n-subset), best = highest ``key``: C(rank_i, n-1) / C(m, n)."""
    m = len(key)
    ranks = np.empty(m, int)
    ranks[np.argsort(key, kind="stable")] = np.arange(m)
    return np.array([comb(int(r), n - 1) for r in ranks], float) / comb(m, n)


def condition_stats(scores: np.ndarray, ref: np.ndarray, ns: tuple[int, ...], tie_margin: float) -> dict:
    """One condition: scores (m, D) of the samples, ref (r, D) of the reference base samples."""
    from steps.evaluation.netwin import annotator_outcome

    m, dims = scores.shape
    key = scores.mean(1)
    # outcome[i, j, d]: sample i against reference j on dimension d, in {+1, 0, -1}
    outcome = np.array([[[SIGN[annotator_outcome(scores[i, d] - ref[j, d], tie_margin)] for d in range(dims)]
                         for j in range(len(ref))] for i in range(m)]).mean(1)
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    apart = np.array([np.abs(scores[i] - scores[j]) > tie_margin for i, j in pairs]).mean(0) if pairs else np.zeros(dims)
    out = {"mean": scores.mean(0), "std": scores.std(0, ddof=1) if m > 1 else np.zeros(dims), "apart": apart,
           "task_mean": key.mean(), "task_std": key.std(ddof=1) if m > 1 else 0.0}
    for n in ns:
        w = best_of_weights(key, n)
        out[f"bo{n}"] = w @ scores - scores.mean(0)
        out[f"task_bo{n}"] = w @ key - key.mean()
        out[f"net{n}"] = w @ outcome  # (D,) expected good - bad of the best-of-n against a reference sample
    return out


def bootstrap(per_condition: list[np.ndarray], reps: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of sum(values) / count over conditions resampled with replacement."""
    rng = np.random.default_rng(seed)
    sums = np.array([v.sum() for v in per_condition])
    counts = np.array([v.size for v in per_condition], float)
    idx = rng.integers(0, len(sums), (reps, len(sums)))
    stats = sums[idx].sum(1) / counts[idx].sum(1)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def summarise(samples, scores: list[np.ndarray], refs: list[np.ndarray], ns: tuple[int, ...], tie_margin: float,
              reps: int = 2000, seed: int = 0) -> dict:
    """{task: {"task": row, "dimensions": {dim: row}}}; rows hold mean, std, apart, bo<n>, net<n> (+ _ci)."""
    from steps.vocabulary import dimensions_for

    result = {}
    for t, task in enumerate(TASKS):
        idx = [c for c, s in enumerate(samples) if s.task == task]
        if not idx:
            continue
        stats = {c: condition_stats(scores[c], refs[c], ns, tie_margin) for c in idx}
        dims = {c: dimensions_for(samples[c].task, samples[c].prompt) for c in idx}
        task_row = {"n_conditions": len(idx), "mean": float(np.mean([stats[c]["task_mean"] for c in idx])),
                    "std": float(np.mean([stats[c]["task_std"] for c in idx]))}
        for n in ns:
            task_row[f"bo{n}"] = float(np.mean([stats[c][f"task_bo{n}"] for c in idx]))
            nets = [stats[c][f"net{n}"] for c in idx]
            task_row[f"net{n}"] = float(sum(v.sum() for v in nets) / sum(v.size for v in nets))
            task_row[f"net{n}_ci"] = bootstrap(nets, reps, seed + t)
        cells = {}
        for dim in dict.fromkeys(d for c in idx for d in dims[c]):
            where = [(c, dims[c].index(dim)) for c in idx if dim in dims[c]]
            row = {"n_conditions": len(where)}
            for name in ("mean", "std", "apart", *(f"bo{n}" for n in ns), *(f"net{n}" for n in ns)):
                row[name] = float(np.mean([stats[c][name][d] for c, d in where]))
            for n in ns:
                row[f"net{n}_ci"] = bootstrap([stats[c][f"net{n}"][d:d + 1] for c, d in where], reps, seed + t)
            cells[dim] = row
        result[task] = {"task": task_row, "dimensions": cells}
    return result


def markdown(summary: dict, ns: tuple[int, ...]) -> str:
    head = ["task / dimension", "mean", "std", *(f"bo{n} - mean" for n in ns), *(f"net win bo{n}" for n in ns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, block in summary.items():
        rows = [(f"**{task}** (mean of dims, n={block['task']['n_conditions']})", block["task"])]
        rows += [(f"{task}/{dim}", row) for dim, row in block["dimensions"].items()]
        for name, row in rows:
            nets = [f"{row[f'net{n}']:+.2f} [{row[f'net{n}_ci'][0]:+.2f}, {row[f'net{n}_ci'][1]:+.2f}]" for n in ns]
            lines.append("| " + " | ".join([name, f"{row['mean']:.3f}", f"{row['std']:.3f}",
                                             *(f"{row[f'bo{n}']:+.3f}" for n in ns), *nets]) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- entry point


def default_out(args) -> Path:
    name = "headroom_ode" if args.sampler == "ode" else \
        f"headroom_sde_s{args.window_start}_k{args.window}_a{args.a:g}"
    suffix = "" if args.reference == "fresh" else "_within"
    return Path(__file__).resolve().parents[1] / "results" / f"{name}_{args.noise}{suffix}.json"


def main(argv: list[str] | None = None) -> dict:
    from bench.benchlib import machine, machine_line
    from steps.data.datasets import load_samples
    from steps.evaluation.benchmark import BenchmarkConfig
    from steps.fields import Guided
    from steps.models.policy import load_fill_pipeline
    from steps.runtime import setup
    from steps.tracking import git_commit

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=str(TINY.foundations / "base"))
    ap.add_argument("--validation", default=str(TINY.validation), help="a split with ground truth (not the benchmark)")
    ap.add_argument("--per-task", type=int, default=50, help="conditions per task")
    ap.add_argument("--n-samples", type=int, default=8)
    ap.add_argument("--best-of", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--ref-samples", type=int, default=8, help="default-sampler base samples per condition to beat")
    ap.add_argument("--reference", choices=["fresh", "within"], default="fresh",
                    help="the base sample the best-of-n is compared with: fresh default-sampler draws, or one of the "
                         "same n-samples drawn uniformly (it may be in the subset: biased up at large n)")
    ap.add_argument("--sampler", choices=["ode", "sde"], default="ode")
    ap.add_argument("--steps", type=int, default=8, help="denoising steps (the pipeline's default: 8)")
    ap.add_argument("--guidance", type=float, default=Guided.guidance)
    ap.add_argument("--window-start", type=int, default=0, help="sde: index of the first stochastic step")
    ap.add_argument("--window", type=int, default=2, help="sde: stochastic steps K")
    ap.add_argument("--a", type=float, default=0.7, help="sde: noise level")
    ap.add_argument("--noise", choices=["independent", "shared"], default="independent",
                    help="initial noise of a condition's samples")
    ap.add_argument("--tie-margin", type=float, default=None, help="default: the benchmark's (BenchmarkConfig)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    ns = tuple(sorted(set(args.best_of)))
    if max(ns) > args.n_samples or min(ns) < 1:
        ap.error(f"--best-of must lie in 1..--n-samples ({args.n_samples})")
    if args.sampler == "ode" and args.noise == "shared":
        ap.error("the ODE sampler is deterministic: shared noise gives identical samples")
    tie = args.tie_margin if args.tie_margin is not None else BenchmarkConfig.tie_margin
    setup(threads=args.threads)
    t0, commit = time.perf_counter(), git_commit()
    pipe = load_fill_pipeline(args.base)
    samples = load_samples(args.validation, limit_per_task=args.per_task)
    sampler = ode_sampler(args.steps, args.guidance) if args.sampler == "ode" else \
        sde_sampler(args.steps, args.guidance, args.window_start, args.window, args.a)
    outputs = draw(pipe, samples, args.n_samples, sampler, args.seed, args.noise == "shared")
    reference = outputs if args.reference == "within" else \
        draw(pipe, samples, args.ref_samples, ode_sampler(args.steps, args.guidance), args.seed + 7919, False)
    t_sample = time.perf_counter() - t0
    summary, ref_views = {}, views(samples, reference)
    for view, images in views(samples, outputs).items():
        summary[view] = summarise(samples, truths(samples, images), truths(samples, ref_views[view]), ns, tie,
                                  seed=args.seed)
    result = {"args": vars(args), "tie_margin": tie, "commit": commit, "machine": machine(),
              "sampling_seconds": t_sample, "seconds": time.perf_counter() - t0,
              "interval": "95% percentile bootstrap over conditions (2000 resamples)", **summary}
    print(f"{machine_line(result['machine'])}; commit {result['commit'][:12]}; sampling {t_sample:.0f} s, "
          f"{result['seconds']:.0f} s in all")
    for view in VIEWS:
        print(f"\n{view} output:\n{markdown(summary[view], ns)}")
    out = Path(args.out) if args.out else default_out(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
