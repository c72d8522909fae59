"""How the visible aesthetics score (steps/world/truth.py, 2026-11-30) differs from the one it replaced.

    python bench/data/aesthetics_change.py --candidates data/tiny/candidates --train data/tiny/train

The old score compared the candidate's mean |Laplacian| over the edited region with the hidden TARGET's,
so a candidate smoother than the target's faint background texture lost points no annotator could see.
The new one compares the region's texture level with the kept surroundings' and counts missing detail only
where the region should hold drawn edges (module docstring of steps/world/truth.py). On the candidate sets of the
preference data, per task: how often the simulated annotators' best and worst picks (noise-free, near-ties
dropped as in steps.judge.annotate) stay the same, and the rank correlation of the two scores.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from steps.paths import TINY  # noqa: E402


def old_aesthetics(cand: np.ndarray, sample) -> float:
    """The formula before 2026-11-30: exp(-(max(0, ln r) + 0.5 max(0, -ln r))), r = (E(c) + eps) / (E(t) + eps)."""
    from steps.world.truth import abs_laplacian, dilate, to_gray, to_unit

    region = dilate(sample.mask > 127, 2)
    e_c = float(abs_laplacian(to_gray(to_unit(cand)))[region].mean())
    e_t = float(abs_laplacian(to_gray(to_unit(sample.target)))[region].mean())
    log_r = math.log((e_c + 0.01) / (e_t + 0.01))
    return math.exp(-max(log_r, 0.0) - 0.5 * max(-log_r, 0.0))


def main(argv=None) -> dict:
    from scipy.stats import spearmanr

    from bench.benchlib import machine, machine_line
    from steps.data.datasets import load_samples
    from steps.io import read_rgb
    from steps.judge.candidates import read_candidate_sets
    from steps.world import score

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", default=str(TINY.candidates))
    ap.add_argument("--train", default=str(TINY.train))
    ap.add_argument("--tie-margin", type=float, default=0.03)
    args = ap.parse_args(argv)
    samples = {s.id: s for s in load_samples(args.train)}
    stats: dict[str, dict[str, list]] = {}
    for cs in read_candidate_sets(Path(args.candidates) / "candidates.jsonl"):
        s = samples[cs["condition_id"]]
        if s.task == "removal":
            continue
        images = [read_rgb(p) for p in cs["candidates"]]
        old = np.array([old_aesthetics(c, s) for c in images])
        new = np.array([score(c, s, ("aesthetics",))["aesthetics"] for c in images])
        st = stats.setdefault(s.task, {"same_pick": [], "rho": [], "old_decided": [], "new_decided": []})
        old_ok, new_ok = np.ptp(old) >= args.tie_margin, np.ptp(new) >= args.tie_margin
        st["old_decided"].append(old_ok)
        st["new_decided"].append(new_ok)
        if old_ok and new_ok:
            st["same_pick"].append(old.argmax() == new.argmax() and old.argmin() == new.argmin())
        if np.ptp(old) > 0 and np.ptp(new) > 0:
            st["rho"].append(spearmanr(old, new).statistic)
    print(machine_line(machine()))
    print("| task | sets | decided (old / new) | same best and worst | mean Spearman rho |")
    print("|---|---|---|---|---|")
    out = {}
    for task, st in sorted(stats.items()):
        out[task] = {"sets": len(st["old_decided"]), "old_decided": float(np.mean(st["old_decided"])),
                     "new_decided": float(np.mean(st["new_decided"])), "same_pick": float(np.mean(st["same_pick"])),
                     "rho": float(np.nanmean(st["rho"]))}
        r = out[task]
        print(f"| {task} | {r['sets']} | {r['old_decided']:.2f} / {r['new_decided']:.2f} | {r['same_pick']:.2f} | "
              f"{r['rho']:+.2f} |")
    return out


if __name__ == "__main__":
    main()
