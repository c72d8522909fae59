"""Judge training step with 1 vs N torch threads, interleaved in one process (issue 7: the serial phase).

    python bench/judge/threads.py [--threads 2] [--reps 6] [--steps 10]

Why: in the tiny graph, preference_candidates, judge, judge_agreement, competitor_outputs and
benchmark_report run alone (nothing beside them), so one torch thread leaves the other cores idle; the
orchestration gives those steps `ProjectResource.solo_threads`. This measures what that buys on a judge
training step (tiny judge, 16 ground-truth pairs in both orders, forward + backward + AdamW).
Prints a markdown line with the machine, the command and the medians.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.benchlib import REPO, machine, machine_line  # noqa: E402
from steps.paths import ArtifactPaths  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--train-dir", default=str(ArtifactPaths(REPO, "tiny").train))
    ap.add_argument("--profile", default="tiny")
    args = ap.parse_args(argv)

    import torch

    from steps.data.datasets import load_samples
    from steps.judge.easy_pairs import easy_pair_batch
    from steps.judge.losses import yes_no_loss
    from steps.models.judge import Judge
    from steps.models.judge_spec import spec_for
    from steps.runtime import setup

    setup(threads=1)
    samples = load_samples(args.train_dir, limit=200)
    judge = Judge.build(spec_for(args.profile), seed=0)
    judge.train()
    opt = torch.optim.AdamW(judge.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    batches = [easy_pair_batch(samples, rng, 16) for _ in range(8)]

    def run(n: int) -> None:
        for i in range(n):
            loss, _ = yes_no_loss(judge, *batches[i % len(batches)])
            opt.zero_grad()
            loss.backward()
            opt.step()

    run(3)  # warm-up
    times: dict[int, list[float]] = {1: [], args.threads: []}
    for _ in range(args.reps):
        for t in times:
            torch.set_num_threads(t)
            t0 = time.perf_counter()
            run(args.steps)
            times[t].append((time.perf_counter() - t0) / args.steps)
    one, many = float(np.median(times[1])), float(np.median(times[args.threads]))
    torch.set_num_threads(1)
    print(f"{machine_line(machine())}; `python {' '.join(['bench/judge/threads.py'] + sys.argv[1:])}`: judge training "
          f"step {one:.3f} s with 1 thread vs {many:.3f} s with {args.threads} (median of {args.reps} x "
          f"{args.steps} steps each, interleaved): **{one / many:.2f}x**")


if __name__ == "__main__":
    main()
