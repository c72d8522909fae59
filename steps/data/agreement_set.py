"""The agreement test set: the fixed, labelled pairs the judge's agreement gate reads, and nothing else reads.

    python -m steps.data.agreement_set --profile tiny --out data/tiny/agreement_test   # DVC: agreement_test@tiny

Built once, deterministically, and versioned by DVC like the other datasets (the paper's practice too: its
Table 1 is measured on a fixed, human-labelled test set, not on pairs re-drawn by every run):

1. conditions of the synthetic world at indices no train, validation, benchmark or foundation-pool condition has
   (`AGREEMENT_INDEX_OFFSET`), so the set is disjoint from every other split by construction;
2. ``n_candidates`` candidates per condition from the base model with the run's randomised sampling
   (steps.judge.candidates): tiny: the shipped foundation base (foundations/tiny/base, hashes checked), so the same
   candidates every time; smoke: a seeded, untrained smoke base built in code (smoke has no foundation);
3. labels by the simulated annotators (steps.judge.annotate: best / worst per dimension, near-ties dropped,
   label noise), with their own seed. THESE LABELS ARE SIMULATED.

Sizes come from the width the gate must reach (docs/DESIGN.md §7): every task x dimension cell holds enough pairs
that its 95% Wilson interval is at most +-``half_width`` (`steps.judge.agreement.pairs_needed`); the condition
counts per task are set in configs/<profile>.yaml from the measured pair yield per condition (extend's
text_alignment exists only for prompted extend conditions, and near-ties are dropped). ``summary.json`` records
the achieved n, the needed n and the half-width per cell; `build_agreement_set` fails when a cell falls short.

Layout: ``conditions/`` (manifest.jsonl + PNGs, the split format), ``pairs/`` (pairs.jsonl + candidate images +
candidates.jsonl, the preferences format), ``summary.json``; written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from steps.config import Profiled, field, parse_cli
from steps.fields import Batched, Seeded, Threaded

# world indices of the agreement test set: no train (0..n_train), benchmark (1e6), foundation pool (2e6) or
# validation (3e6) sample has them
AGREEMENT_INDEX_OFFSET = 4_000_000
AGREEMENT_TASK_STRIDE = 100_000  # a task's indices: offset + t * stride + i (sizes can change without overlap)


@dataclass(frozen=True)
class AgreementSetConfig(Profiled, Batched, Seeded, Threaded):
    """The agreement test set. The world (image size, seed, prompt shares) is the ``datasets`` section's; the
    candidate sampling and the annotators are steps.judge.candidates' and steps.judge.annotate's defaults, fixed here
    so a change of the run's own preference data never changes the test set. ``seed`` seeds the candidates' sampling;
    the annotators use ``seed + 1``."""

    SECTION = "agreement_set"  # of configs/<profile>.yaml

    size: int = field(64, "image side in pixels: the profile's datasets.size")
    world_seed: int = field(0, "the world's seed: the profile's datasets.seed")
    text_fraction: float = field(0.2, "share of fill conditions that ask for a quoted word (as datasets)")
    extend_prompt_fraction: float = field(0.5, "share of extend conditions with a user prompt (as datasets)")
    n_fill: int = field(1120, "fill conditions")
    n_extend: int = field(2200, "extend conditions (extend/text_alignment: prompted ones only)")
    n_removal: int = field(710, "removal conditions")
    base_dir: str = field("", "the base model that samples the candidates; empty = the profile's shipped foundation "
                              "(foundations/<profile>/base), or, without one, a seeded untrained base built in code")
    n_candidates: int = field(4, "candidates per condition (paper: 4)")
    noise: float = field(0.10, "simulated annotators: probability an annotator flips its choice")
    n_annotators: int = field(3, "simulated annotators")
    tie_margin: float = field(0.03, "simulated annotators: near-ties below this world-score gap are dropped")
    half_width: float = field(0.03, "95% Wilson half-width every cell must reach (at the accuracy of `design_accuracy`)")
    require_width: bool = field(True, "fail the build when a cell holds fewer pairs than the half-width needs "
                                      "(smoke: false, it states its n)")
    design_accuracy: dict[str, float] = field({}, "per cell, the accuracy the width is computed at (the lower of the "
                                                   "paper's Table 1 threshold and the measured accuracy); a missing cell "
                                                   "uses its Table 1 threshold")

    def __post_init__(self):
        if min(self.n_fill, self.n_extend, self.n_removal) < 1 or self.n_candidates < 2:
            raise ValueError("n_fill, n_extend and n_removal must be >= 1 and n_candidates >= 2")
        if not 0 < self.half_width < 0.5:
            raise ValueError(f"half_width must lie in (0, 0.5), got {self.half_width}")

    @property
    def per_task(self) -> dict[str, int]:
        return {"fill": self.n_fill, "extend": self.n_extend, "removal": self.n_removal}

    def pairs_needed(self) -> dict[str, int]:
        """Pairs each cell needs for the half-width, at its design accuracy."""
        from steps.judge.agreement import PAPER_THRESHOLDS, pairs_needed

        return {c: pairs_needed(self.design_accuracy.get(c, t), self.half_width) for c, t in PAPER_THRESHOLDS.items()}

    @classmethod
    def path_defaults(cls, paths, **context: Any) -> dict[str, Any]:
        return {}


def condition_index(task_number: int, i: int) -> int:
    return AGREEMENT_INDEX_OFFSET + task_number * AGREEMENT_TASK_STRIDE + i


def write_conditions(cfg: AgreementSetConfig, out: Path) -> int:
    from steps.data.datasets import write_split
    from steps.vocabulary import TASKS
    from steps.world import WorldConfig, make_sample

    world = WorldConfig(size=cfg.size, seed=cfg.world_seed, text_fraction=cfg.text_fraction,
                        extend_prompt_fraction=cfg.extend_prompt_fraction)
    samples = (make_sample(world, condition_index(t, i), task)
               for t, task in enumerate(TASKS) for i in range(cfg.per_task[task]))
    return write_split(out, samples, "agreement test conditions")


def base_for(cfg: AgreementSetConfig, profile: str, root: Path, scratch: Path) -> str:
    """The base model's folder: ``base_dir``, else the shipped foundation (checked), else a seeded untrained one."""
    from steps.foundations.job import FOUNDATION_PROFILES, foundations_root, verify_foundation

    if cfg.base_dir:
        return cfg.base_dir
    if profile in FOUNDATION_PROFILES:
        return str(verify_foundation(foundations_root(profile, root), "base", profile))
    from steps.models.policy import build_tiny_fill_pipeline, save_pipeline, spec_for

    spec = spec_for(profile)
    save_pipeline(build_tiny_fill_pipeline(spec, seed=cfg.seed), scratch / "base", spec)
    return str(scratch / "base")


def pair_counts(pairs_file: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in pairs_file.read_text().splitlines():
        if line.strip():
            p = json.loads(line)
            counts[f"{p['task']}/{p['dimension']}"] = counts.get(f"{p['task']}/{p['dimension']}", 0) + 1
    return dict(sorted(counts.items()))


def width_summary(counts: dict[str, int], cfg: AgreementSetConfig) -> dict[str, dict[str, Any]]:
    """Per cell: pairs, pairs needed, and the 95% Wilson half-width at the design accuracy."""
    from steps.judge.agreement import PAPER_THRESHOLDS, wilson_half_width

    needed = cfg.pairs_needed()
    out = {}
    for cell, threshold in PAPER_THRESHOLDS.items():
        n, p = counts.get(cell, 0), cfg.design_accuracy.get(cell, threshold)
        out[cell] = {"n": n, "needed": needed[cell], "design_accuracy": p,
                     "half_width": round(wilson_half_width(p, n), 4) if n else None, "enough": n >= needed[cell]}
    return out


def build_agreement_set(cfg: AgreementSetConfig, out: str | os.PathLike, profile: str,
                        root: str | os.PathLike = ".") -> dict[str, Any]:
    """Write the agreement test set to ``out`` (conditions/, pairs/, summary.json) atomically."""
    import time

    from steps.io import atomic_dir, atomic_write_json
    from steps.judge.annotate import AnnotateConfig, simulate_pairs
    from steps.judge.candidates import CandidatesConfig, generate_candidates

    t0 = time.perf_counter()
    out = Path(out).resolve()  # the annotators relate candidate paths to absolute folders
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(prefix=".agreement-", dir=out.parent) as scratch:
        scratch = Path(scratch)
        n = write_conditions(cfg, tmp / "conditions")
        base = base_for(cfg, profile, Path(root), scratch)
        generate_candidates(CandidatesConfig(
            base_dir=base, train_dir=str(tmp / "conditions"), out_dir=str(scratch / "candidates"), n_conditions=n,
            n_candidates=cfg.n_candidates, batch_size=cfg.batch_size, seed=cfg.seed, threads=cfg.threads))
        labels = simulate_pairs(AnnotateConfig(
            candidates_dir=str(scratch / "candidates"), train_dir=str(tmp / "conditions"), out_dir=str(tmp / "pairs"),
            noise=cfg.noise, n_annotators=cfg.n_annotators, tie_margin=cfg.tie_margin, seed=cfg.seed + 1))
        cells = width_summary(pair_counts(tmp / "pairs" / "pairs.jsonl"), cfg)
        short = {c: r for c, r in cells.items() if not r["enough"]}
        if short and cfg.require_width:
            raise ValueError("agreement test set too small for a 95% half-width of "
                             f"{cfg.half_width}: " + "; ".join(f"{c}: {r['n']} pairs < {r['needed']}"
                                                                for c, r in short.items())
                             + " (raise the task's condition count in the profile's agreement_set section)")
        summary = {"conditions": cfg.per_task, "n_conditions": n, "n_pairs": labels["n_pairs"],
                   "ties_dropped": labels["ties_dropped"], "flipped": labels["flipped"], "cells": cells,
                   "base_dir": base if cfg.base_dir or not base.startswith(str(scratch)) else "seeded untrained base",
                   "labels": "SIMULATED annotators (steps/judge/annotate.py)", "config": asdict(cfg),
                   "index_offset": AGREEMENT_INDEX_OFFSET}
        atomic_write_json(tmp / "summary.json", summary)
    return {**summary, "out_dir": str(out), "seconds": round(time.perf_counter() - t0, 1)}


def read_summary(test_dir: str | os.PathLike) -> dict[str, Any]:
    """A built set's summary.json; for a set without one (flux: human pairs placed there), its counts from
    pairs.jsonl, read through the one pairs reader so a broken set fails here, naming the file and line."""
    from steps.judge.agreement import load_agreement_test

    test_dir = Path(test_dir)
    if (test_dir / "summary.json").is_file():
        return json.loads((test_dir / "summary.json").read_text())
    if not (test_dir / "pairs" / "pairs.jsonl").is_file():
        raise FileNotFoundError(f"{test_dir}: no agreement test set (conditions/manifest.jsonl, pairs/pairs.jsonl); "
                                "smoke/tiny: `dvc repro agreement_test@<profile>`; flux: place a human-labelled set there")
    data = load_agreement_test(test_dir)
    counts: dict[str, int] = {}
    for p in data["heldout"]:
        counts[f"{p.task}/{p.dimension}"] = counts.get(f"{p.task}/{p.dimension}", 0) + 1
    return {"n_conditions": len(data["samples"]), "n_pairs": len(data["heldout"]),
            "cells": width_summary(counts, AgreementSetConfig()), "labels": "as given (pairs.jsonl source)"}


def summary_markdown(summary: dict[str, Any]) -> str:
    rows = ["| task/dimension | pairs | needed for +-0.03 | 95% half-width at | |", "|---|---|---|---|---|"]
    for cell, r in summary["cells"].items():
        hw = "-" if r["half_width"] is None else f"{r['half_width']:.3f}"
        rows.append(f"| {cell} | {r['n']} | {r['needed']} | {hw} (p={r['design_accuracy']:.3f}) | "
                    f"{'ok' if r['enough'] else 'SHORT'} |")
    return (f"{summary['n_pairs']} pairs on {summary['n_conditions']} conditions; labels: {summary['labels']}\n\n"
            + "\n".join(rows))


def main(argv: list[str] | None = None) -> None:
    def extra(p):
        p.add_argument("--out", required=True, help="output folder, e.g. data/tiny/agreement_test")

    cfg, args = parse_cli(AgreementSetConfig, __doc__, argv, extra)
    from steps.paths import DEFAULT_PROFILE

    profile = getattr(args, "profile", None) or os.environ.get("ONEREWARD_PROFILE", DEFAULT_PROFILE)
    result = build_agreement_set(cfg, args.out, profile)
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=2))


if __name__ == "__main__":
    main()
