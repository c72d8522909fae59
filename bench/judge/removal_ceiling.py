"""How well can ANY judge rank removal candidates from what it is shown? A ceiling for the removal agreement cell.

    python bench/judge/removal_ceiling.py                  # the agreement test set of tiny
    python bench/judge/removal_ceiling.py --test data/tiny/agreement_test --judge outputs/tiny/judge

removal_quality (steps/world/truth.py) compares the candidate inside the mask with the hidden clean background
there. A judge sees the masked source (the mask region hidden), the two candidates and the query; the best it can
do is to infer the hidden background from the kept pixels around the mask and prefer the candidate nearer that
inference. This script does exactly that with hand-written estimators that know the world's background model
(a smooth two-colour gradient, faint stripes, smooth noise: steps/world/scenes.py `_background`), and reports the
clean-label accuracy (against the noise-free winner) of each, overall and by quartile of the pair's score gap, next
to the annotators' ceiling (1 - label noise) and what the gate needs. Rows:

- ``true background``: the hidden background itself (the world's own ranking: a check of this script, ~1.0);
- ``poly d, band w``: a per-channel polynomial of degree d fitted (robustly: pixels showing an object are dropped
  by their residual) to the kept pixels within w px of the mask, extrapolated into it;
- ``judge``: the judge's own clean accuracy on the same pairs (with ``--judge``).

With 10% label noise the gate's 0.849 needs 0.936 clean accuracy. Labels are SIMULATED.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from steps.paths import TINY  # noqa: E402


def _basis(yy: np.ndarray, xx: np.ndarray, degree: int) -> np.ndarray:
    return np.stack([xx**i * yy**j for i in range(degree + 1) for j in range(degree + 1 - i)], -1)


def infer_background(source: np.ndarray, inside: np.ndarray, degree: int, band: int,
                     reject: float = 0.05, rounds: int = 3) -> np.ndarray:
    """HxWx3 in [0, 1]: the kept pixels, and inside the mask a robust per-channel polynomial fit of the kept pixels
    within ``band`` px of it (pixels whose residual exceeds ``reject`` are dropped: drawn objects)."""
    from steps.world.truth import dilate

    h, w = inside.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) / (max(h, w) - 1)
    design = _basis(yy, xx, degree)
    ring = dilate(inside, band) & ~inside
    use = ring.copy()
    src = source.astype(np.float64)
    for _ in range(rounds):
        coef, *_ = np.linalg.lstsq(design[use], src[use], rcond=None)
        fit = design @ coef
        resid = np.linalg.norm(src - fit, axis=-1)
        keep = ring & (resid < reject)
        if keep.sum() < design.shape[-1] * 4 or (keep == use).all():
            break
        use = keep
    out = src.copy()
    out[inside] = fit[inside]
    return np.clip(out, 0, 1)


def removal_proxy(cand: np.ndarray, background: np.ndarray, sample) -> float:
    """removal_quality with ``background`` standing in for the hidden one (the same formula as the world's)."""
    from steps.world.truth import REMOVAL_TAU, shows_colour, to_unit

    inside = sample.mask > 127
    cand, src = to_unit(cand), to_unit(sample.image)
    colour = sample.meta["colour"]
    obj = shows_colour(src, background, colour) & inside
    left = shows_colour(cand, background, colour) & obj
    absent = 1.0 - float(left.sum() / obj.sum()) if obj.any() else 1.0
    return math.exp(-float(np.abs(cand - background)[inside].mean()) / REMOVAL_TAU) * absent


def clean_correct(pairs, prefers_winner: np.ndarray) -> np.ndarray:
    """Per pair: did the pick (True = the annotated winner) match the noise-free winner?"""
    clean_is_winner = np.array([Path(p.winner).name == Path(p.meta["clean_winner"]).name for p in pairs])
    return prefers_winner == clean_is_winner


def row(name: str, pairs, prefers_winner: np.ndarray) -> str:
    """A table row: clean and annotated-label accuracy of a ranking, and the clean one by score-gap quartile."""
    correct = clean_correct(pairs, prefers_winner)
    gap = np.array([p.meta["score_gap"] for p in pairs])
    qs = np.quantile(gap, [0, .25, .5, .75, 1])
    quart = [correct[(gap >= lo) & (gap <= hi)].mean() for lo, hi in zip(qs[:-1], qs[1:])]
    noisy = prefers_winner.mean()
    return (f"| {name} | {len(pairs)} | {correct.mean():.3f} | {noisy:.3f} | "
            + " / ".join(f"{q:.3f}" for q in quart) + " |")


def main(argv: list[str] | None = None) -> list[str]:
    from steps.judge.agreement import load_agreement_test
    from steps.world.truth import to_unit

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test", default=str(TINY.agreement_test))
    ap.add_argument("--task", default="removal")
    ap.add_argument("--judge", default=None, help="also the clean accuracy of this judge on the same pairs")
    ap.add_argument("--degrees", default="1,2,3,4")
    ap.add_argument("--bands", default="4,8,16")
    args = ap.parse_args(argv)
    data = load_agreement_test(args.test)
    pairs = [p for p in data["heldout"] if p.task == args.task and p.dimension == "removal_quality"]
    if not pairs:
        raise SystemExit(f"{args.test}: no {args.task}/removal_quality pairs")
    samples, images = data["samples"], data["images"]
    rows = ["| ranking by | n | clean-label acc. | annotated-label acc. (the gate's) | clean by gap quartile (smallest first) |",
            "|---|---|---|---|---|"]

    def rank(background_of) -> np.ndarray:
        picks = []
        for p in pairs:
            s = samples[p.condition_id]
            bg = background_of(s)
            picks.append(removal_proxy(images[p.winner], bg, s) > removal_proxy(images[p.loser], bg, s))
        return np.array(picks)

    rows.append(row("true background (check)", pairs, rank(lambda s: to_unit(s.background))))
    for d in (int(x) for x in args.degrees.split(",")):
        for b in (int(x) for x in args.bands.split(",")):
            def guess(s, d=d, b=b):
                return infer_background(to_unit(s.image), s.mask > 127, d, b)
            rows.append(row(f"poly {d}, band {b}", pairs, rank(guess)))
    if args.judge:
        import torch

        from steps.judge.agreement import pair_correctness
        from steps.models.judge import Judge

        torch.set_num_threads(1)
        judge = Judge.load(args.judge)
        judge.eval()
        with torch.no_grad():
            pref = pair_correctness(judge, pairs, images, samples, judge.shows_source)
        rows.append(row(f"judge {args.judge}", pairs, np.asarray(pref) > 0.5))
    print("\n".join(rows))
    return rows


if __name__ == "__main__":
    main()
