"""Where a judge's agreement cell loses its pairs: clean-label accuracy by quartile of the world-score gap.

    python bench/judge/cell_by_gap.py --judge outputs/tiny/judge --task removal

For the pairs of ``--task`` in the agreement test set (data/<profile>/agreement_test), the run's training pairs
and its held-out selection slice (data/<profile>/preferences, split as steps.judge.train splits them): the
judge's accuracy against the annotated (noisy) and the noise-free labels, and the noise-free accuracy in four
quartiles of the pair's score gap (``meta.score_gap``: best minus worst candidate on the asked dimension). A judge
that fits its training pairs but not the test pairs is data-limited; one that misses small gaps on both
cannot tell them apart. Prints a table; the labels are SIMULATED.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from steps.paths import TINY  # noqa: E402


def by_gap(name: str, pairs, pref: np.ndarray) -> list[str]:
    gap = np.array([p.meta["score_gap"] for p in pairs])
    clean = np.array([(pref[i] > 0.5) == (Path(p.winner).name == Path(p.meta["clean_winner"]).name)
                      for i, p in enumerate(pairs)])
    qs = np.quantile(gap, [0, .25, .5, .75, 1])
    cells = [f"{clean[(gap >= lo) & (gap <= hi)].mean():.3f} ({lo:.3f}-{hi:.3f})" for lo, hi in zip(qs[:-1], qs[1:])]
    return [f"| {name} | {len(pairs)} | {(pref > 0.5).mean():.3f} | {clean.mean():.3f} | " + " | ".join(cells) + " |"]


def main(argv: list[str] | None = None) -> None:
    import torch

    from steps.judge.agreement import load_agreement_test, load_preference_data, pair_correctness
    from steps.judge.train import JudgeConfig
    from steps.models.judge import Judge

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", default=str(TINY.judge))
    ap.add_argument("--task", default="removal")
    ap.add_argument("--test", default=str(TINY.agreement_test))
    ap.add_argument("--pairs", default=str(TINY.preferences))
    ap.add_argument("--train", default=str(TINY.train))
    ap.add_argument("--heldout-fraction", type=float, default=JudgeConfig.for_profile("tiny", ".").heldout_fraction)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    judge = Judge.load(args.judge)
    judge.eval()
    rows = ["| pairs | n | accuracy (noisy labels) | clean-label accuracy | by gap quartile: clean accuracy (gap range) | | | |",
            "|---|---|---|---|---|---|---|---|"]
    test = load_agreement_test(args.test)
    run = load_preference_data(args.pairs, args.train, args.heldout_fraction)
    for name, data, pairs in (("agreement test", test, test["heldout"]), ("run: training", run, run["train"]),
                              ("run: selection", run, run["heldout"])):
        pairs = [p for p in pairs if p.task == args.task]
        with torch.no_grad():
            pref = pair_correctness(judge, pairs, data["images"], data["samples"], judge.shows_source)
        rows += by_gap(name, pairs, pref)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
