"""Human-agreement validation of the judge: accuracy per task x dimension on the agreement test set, the blocking gate.

Accuracy of one pair = the judge prefers the labelled winner, judged in both orders to cancel position bias:
correct when (P(Yes | w, l) + 1 - P(Yes | l, w)) / 2 > 0.5. Reported against the labels as annotated (noisy, like
human agreement figures) with a 95% Wilson interval, and -- for simulated labels -- against the noise-free labels
beside it. The gate passes when every cell's accuracy against the annotated labels is at or above its threshold
(the paper's Table 1) AND its interval is narrow enough to decide (half-width <= ``max_half_width``).

The pairs are the *agreement test set* (steps.data.agreement_set, DVC-versioned, data/<profile>/agreement_test):
conditions no train, validation or benchmark split has, labelled once, read by the gate and nothing else. What
chooses the judge's checkpoint is the held-out slice of the run's own preference pairs (`split_of`; the selection
pairs, steps.judge.train), never this set.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np

# OneReward paper, Table 1 (human agreement of the reward model), per task and dimension.
PAPER_THRESHOLDS = {
    "fill/text_alignment": 0.8377, "fill/consistency": 0.7423, "fill/structure": 0.7463, "fill/aesthetics": 0.7210,
    "extend/text_alignment": 0.8036, "extend/consistency": 0.7250, "extend/structure": 0.7429,
    "extend/aesthetics": 0.7110, "removal/removal_quality": 0.8493,
}


def condition_hash(condition_id: str) -> float:
    """A number in [0, 1] fixed by the condition id (stable across runs and machines): splits are bands of it."""
    return int(hashlib.md5(condition_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def split_of(condition_id: str, heldout_fraction: float) -> str:
    """'heldout' or 'train', stable across runs and machines (hash of the condition id)."""
    return "heldout" if condition_hash(condition_id) < heldout_fraction else "train"


def _load_pairs(pairs_dir, conditions_dir) -> tuple[list, dict, dict, dict]:
    from steps.data.datasets import load_samples
    from steps.io import read_rgb
    from steps.manifest import read_manifest
    from steps.preferences import read_pairs

    conditions = {c.id: c for c in read_manifest(Path(conditions_dir) / "manifest.jsonl")}
    pairs = read_pairs(Path(pairs_dir) / "pairs.jsonl", conditions)
    samples = {s.id: s for s in load_samples(conditions_dir)}
    images = {p: read_rgb(p) for pair in pairs for p in (pair.winner, pair.loser)}
    return pairs, conditions, samples, images


def load_preference_data(pairs_dir, train_dir, heldout_fraction: float) -> dict[str, Any]:
    """The run's preference pairs (validated against the conditions), split by condition into training pairs and
    the held-out selection pairs, with their images in memory."""
    pairs, conditions, samples, images = _load_pairs(pairs_dir, train_dir)
    train = [p for p in pairs if split_of(p.condition_id, heldout_fraction) == "train"]
    heldout = [p for p in pairs if split_of(p.condition_id, heldout_fraction) == "heldout"]
    return {"train": train, "heldout": heldout, "samples": samples, "images": images,
            "train_conditions": {c for c in conditions if split_of(c, heldout_fraction) == "train"}}


def load_agreement_test(test_dir) -> dict[str, Any]:
    """The agreement test set (steps.data.agreement_set: ``conditions/``, ``pairs/``): every pair is a test pair
    (``heldout``), in the shape `load_preference_data` returns."""
    pairs, conditions, samples, images = _load_pairs(Path(test_dir) / "pairs", Path(test_dir) / "conditions")
    return {"train": [], "heldout": pairs, "samples": samples, "images": images, "train_conditions": set()}


def wilson_half_width(p: float, n: int, z: float = 1.96) -> float:
    """Half-width of the 95% Wilson score interval at accuracy ``p`` with ``n`` pairs."""
    return z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)


def pairs_needed(p: float, half_width: float = 0.03, z: float = 1.96) -> int:
    """The fewest pairs whose 95% Wilson interval at accuracy ``p`` is at most +-``half_width`` (682 at 0.8)."""
    lo, hi = 1, 10_000_000
    while lo < hi:
        mid = (lo + hi) // 2
        if wilson_half_width(p, mid, z) <= half_width:
            hi = mid
        else:
            lo = mid + 1
    return lo


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def pair_correctness(judge, pairs, images, samples, show_source: bool = False, batch: int = 64) -> np.ndarray:
    """Per pair: the judge's both-orders preference for the labelled winner, in [0, 1]."""
    from steps.models.judge import preference

    if not pairs:
        return np.zeros(0)
    if show_source and not judge.shows_source:  # asked with the source, as it was trained
        judge.record = {**judge.record, "config": {**judge.record.get("config", {}), "show_source": True}}
    forward, backward = judge.compare(
        [images[p.winner] for p in pairs], [images[p.loser] for p in pairs], [p.task for p in pairs],
        [p.dimension for p in pairs], [p.prompt for p in pairs],
        [samples[p.condition_id].image for p in pairs], [samples[p.condition_id].mask for p in pairs], batch)
    return preference(forward, backward)


def agreement_table(judge, data: dict[str, Any], thresholds: dict[str, float], show_source: bool = False) -> dict:
    """{cell: {accuracy, ci_low, ci_high, half_width, n, clean_accuracy, threshold, passed}} over ``data["heldout"]``."""
    pairs = data["heldout"]
    pref = pair_correctness(judge, pairs, data["images"], data["samples"], show_source)
    table: dict[str, dict[str, Any]] = {}
    for cell in sorted({f"{p.task}/{p.dimension}" for p in pairs}):
        idx = [i for i, p in enumerate(pairs) if f"{p.task}/{p.dimension}" == cell]
        correct = pref[idx] > 0.5
        k, n = int(correct.sum()), len(idx)
        clean = []
        for i in idx:
            cw = pairs[i].meta.get("clean_winner")
            if cw is not None:
                agrees_with_label = Path(pairs[i].winner).name == Path(cw).name
                clean.append(bool(pref[i] > 0.5) == agrees_with_label)
        lo, hi = wilson(k, n)
        thr = thresholds.get(cell, 0.5)
        table[cell] = {"accuracy": k / n, "ci_low": lo, "ci_high": hi, "half_width": (hi - lo) / 2, "n": n,
                       "threshold": thr,
                       "clean_accuracy": float(np.mean(clean)) if clean else None, "passed": k / n >= thr}
    return table


def gate(table: dict[str, dict[str, Any]], required_cells: list[str] | None = None, min_pairs: int = 20,
         insufficient: str = "fail", max_half_width: float = 1.0) -> tuple[bool, list[str], list[str]]:
    """(passed, reasons, warnings). Every cell must hold >= ``min_pairs`` pairs, have a 95% interval no wider than
    +-``max_half_width`` (fewer pairs cannot decide a margin of a few points) and meet its threshold.

    A cell that is too small (or absent) cannot be validated: with ``insufficient="fail"`` (tiny, flux) that fails
    the gate; with ``"warn"`` (smoke: a plumbing check on a few dozen pairs) it is only reported.
    """
    reasons, warnings = [], []
    for c in sorted(set(table) | set(required_cells or [])):
        r = table.get(c)
        if r is None or r["n"] < min_pairs:
            msg = f"{c}: {0 if r is None else r['n']} test pairs < {min_pairs}, cannot be validated"
            (reasons if insufficient == "fail" else warnings).append(msg)
            continue
        ci = f"n={r['n']}, 95% CI {r['ci_low']:.3f}-{r['ci_high']:.3f}"
        if r["half_width"] > max_half_width:
            msg = f"{c}: 95% half-width {r['half_width']:.3f} > {max_half_width:.3f} ({ci}): too few pairs to decide"
            (reasons if insufficient == "fail" else warnings).append(msg)
        if not r["passed"]:
            reasons.append(f"{c}: accuracy {r['accuracy']:.3f} < threshold {r['threshold']:.4f} ({ci})")
    return (not reasons), reasons, warnings


def gate_message(result: dict[str, Any]) -> str:
    """The verdict in one paragraph: what failed, with each cell's n and interval, and the table."""
    head = "agreement gate PASSED" if result["passed"] else "agreement gate FAILED: " + "; ".join(result["reasons"])
    return head + "\n\n" + result["markdown"]


def table_markdown(table: dict[str, dict[str, Any]], simulated: bool) -> str:
    rows = ["| task/dimension | accuracy | 95% CI | +- | clean-label acc. | threshold | n | |",
            "|---|---|---|---|---|---|---|---|"]
    for c, r in table.items():
        clean = "-" if r["clean_accuracy"] is None else f"{r['clean_accuracy']:.3f}"
        rows.append(f"| {c} | {r['accuracy']:.3f} | {r['ci_low']:.3f}-{r['ci_high']:.3f} | {r['half_width']:.3f} | "
                    f"{clean} | {r['threshold']:.4f} | {r['n']} | {'pass' if r['passed'] else 'FAIL'} |")
    note = ("\n\nLabels are SIMULATED annotators (steps/judge/annotate.py), not people." if simulated else "")
    return "Judge agreement on the agreement test set (both orders, 95% Wilson intervals):\n\n" + "\n".join(rows) + note


def agreement_chart(table: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(table)
    acc = [table[c]["accuracy"] for c in cells]
    err = [[a - table[c]["ci_low"] for c, a in zip(cells, acc)], [table[c]["ci_high"] - a for c, a in zip(cells, acc)]]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(cells) + 1.4))
    y = np.arange(len(cells))
    ax.barh(y, acc, xerr=err, color=["tab:green" if table[c]["passed"] else "tab:red" for c in cells], alpha=0.8)
    clean = [table[c]["clean_accuracy"] for c in cells]
    ax.scatter([v if v is not None else np.nan for v in clean], y, marker="o", color="black", zorder=3,
               label="vs noise-free labels")
    ax.scatter([table[c]["threshold"] for c in cells], y, marker="|", s=300, color="blue", zorder=3,
               label="threshold")
    ax.axvline(0.5, color="grey", ls=":", lw=1)
    ax.set_yticks(y, cells)
    ax.set_xlim(0, 1)
    ax.set_xlabel("held-out accuracy (both orders)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


from dataclasses import asdict, dataclass  # noqa: E402

from steps.config import Profiled, field, parse_cli  # noqa: E402
from steps.fields import ShowsSource, Threaded  # noqa: E402
from steps.paths import TINY  # noqa: E402


@dataclass(frozen=True)
class AgreementConfig(Profiled, ShowsSource, Threaded):
    SECTION = "agreement"  # of configs/<profile>.yaml

    judge_dir: str = field(str(TINY.judge), "the trained judge")
    test_dir: str = field(str(TINY.agreement_test), "the agreement test set (conditions/, pairs/; "
                                                    "steps.data.agreement_set): the gate's pairs and nothing else's")
    out_dir: str = field(str(TINY.judge_agreement), "table (JSON, markdown) and chart")
    threshold_scale: float = field(1.0, "1.0 = the paper's Table 1 thresholds (tiny, flux: never lowered); smoke "
                                        "uses lower ones")
    threshold_floor: float = field(0.5, "no threshold below this (chance)")
    min_pairs: int = field(50, "cells with fewer test pairs cannot be validated")
    max_half_width: float = field(0.03, "a cell whose 95% Wilson half-width is wider cannot decide the gate")
    insufficient: str = field("fail", "fail | warn: what an unvalidated cell does to the gate (smoke: warn)")
    probe_per_cell: int = field(16, "start images per task x dimension for the gradient probe "
                                    "(steps.judge.probe); 0 = no probe")

    def thresholds(self) -> dict[str, float]:
        return {c: max(self.threshold_floor, t * self.threshold_scale) for c, t in PAPER_THRESHOLDS.items()}

    @classmethod
    def path_defaults(cls, paths, **context: Any) -> dict[str, Any]:
        return dict(judge_dir=str(paths.judge), test_dir=str(paths.agreement_test), out_dir=str(paths.judge_agreement))


def check_disjoint(judge_record: dict[str, Any], test_conditions: set[str]) -> None:
    """Refuse a judge whose preference pairs share a condition with the test set (its record names its pairs)."""
    from steps.manifest import read_manifest

    cfg = judge_record.get("config", {})
    train_dir = cfg.get("train_dir")
    if not train_dir or not (Path(train_dir) / "manifest.jsonl").is_file():
        return
    shared = test_conditions & {c.id for c in read_manifest(Path(train_dir) / "manifest.jsonl")}
    if shared:
        raise ValueError(f"the judge was trained on conditions of {train_dir} that the agreement test set also holds "
                         f"({len(shared)}, e.g. {sorted(shared)[:3]}): the test would measure its training")


def run_agreement(cfg: AgreementConfig) -> dict[str, Any]:
    """Compute, save and return the agreement table on the agreement test set and the gate verdict."""
    from steps.io import atomic_write_json, atomic_write_text
    from steps.models.judge import Judge
    from steps.runtime import setup

    setup(threads=cfg.threads)
    data = load_agreement_test(cfg.test_dir)
    judge = Judge.load(cfg.judge_dir).eval()
    check_disjoint(judge.record, set(data["samples"]))
    table = agreement_table(judge, data, cfg.thresholds(), cfg.show_source)
    simulated = any(p.source == "simulated" for p in data["heldout"])
    passed, reasons, warnings = gate(table, sorted(PAPER_THRESHOLDS), cfg.min_pairs, cfg.insufficient,
                                     cfg.max_half_width)
    out = Path(cfg.out_dir)
    md = table_markdown(table, simulated)
    chart = agreement_chart(table, out / "agreement.png",
                            "judge agreement (SIMULATED labels)" if simulated else "judge agreement")
    result = {"table": table, "passed": passed, "reasons": reasons, "warnings": warnings, "simulated": simulated,
              "n_test": len(data["heldout"]), "test_dir": str(cfg.test_dir), "markdown": md, "chart": str(chart),
              "config": asdict(cfg),
              "mean_accuracy": float(np.mean([r["accuracy"] for r in table.values()])) if table else 0.0}
    result["message"] = gate_message(result)
    if cfg.probe_per_cell:
        from steps.judge.probe import heldout_items, probe_markdown, run_probe

        probe = run_probe(judge, heldout_items(data), per_cell=cfg.probe_per_cell)
        result["probe"] = {k: probe[k] for k in ("cells", "summary", "metrics", "budgets", "steps")}
        result["probe_markdown"] = probe_markdown(probe)
        atomic_write_text(out / "probe.md", result["probe_markdown"] + "\n")
    atomic_write_json(out / "agreement.json", result)
    atomic_write_text(out / "agreement.md", md + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    cfg, _ = parse_cli(AgreementConfig, __doc__, argv)
    result = run_agreement(cfg)
    print(result["markdown"])
    if "probe_markdown" in result:
        print(result["probe_markdown"])
    print("gate:", "PASSED" if result["passed"] else "FAILED: " + "; ".join(result["reasons"]))
    for w in result["warnings"]:
        print("warning:", w)


if __name__ == "__main__":
    main()
