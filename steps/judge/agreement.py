"""Human-agreement validation of the judge: held-out accuracy per task x dimension, the blocking gate.

Accuracy of one held-out pair = the judge prefers the labelled winner, judged in both orders to cancel
position bias: correct when (P(Yes | w, l) + 1 - P(Yes | l, w)) / 2 > 0.5. Reported against the held-out
labels as annotated (noisy, like human agreement figures) with a 95% Wilson interval, and -- for simulated
labels -- against the noise-free labels beside it. The gate passes when every cell's accuracy against the
annotated labels is at or above its threshold (defaults: the paper's Table 1).
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


def load_preference_data(pairs_dir, train_dir, heldout_fraction: float) -> dict[str, Any]:
    """Pairs (validated against the conditions), split by condition, with their images in memory."""
    from steps.data.datasets import load_samples
    from steps.io import read_rgb
    from steps.manifest import read_manifest
    from steps.preferences import read_pairs

    conditions = {c.id: c for c in read_manifest(Path(train_dir) / "manifest.jsonl")}
    pairs = read_pairs(Path(pairs_dir) / "pairs.jsonl", conditions)
    samples = {s.id: s for s in load_samples(train_dir)}
    images = {p: read_rgb(p) for pair in pairs for p in (pair.winner, pair.loser)}
    train = [p for p in pairs if split_of(p.condition_id, heldout_fraction) == "train"]
    heldout = [p for p in pairs if split_of(p.condition_id, heldout_fraction) == "heldout"]
    return {"train": train, "heldout": heldout, "samples": samples, "images": images,
            "train_conditions": {c for c in conditions if split_of(c, heldout_fraction) == "train"}}


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
    """{cell: {accuracy, ci_low, ci_high, n, clean_accuracy, threshold, passed}} plus an overall row."""
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
        table[cell] = {"accuracy": k / n, "ci_low": lo, "ci_high": hi, "n": n, "threshold": thr,
                       "clean_accuracy": float(np.mean(clean)) if clean else None, "passed": k / n >= thr}
    return table


def gate(table: dict[str, dict[str, Any]], required_cells: list[str] | None = None, min_pairs: int = 20,
         insufficient: str = "fail") -> tuple[bool, list[str], list[str]]:
    """(passed, reasons, warnings). Every cell with >= ``min_pairs`` held-out pairs must meet its threshold.

    A cell with fewer pairs (or none) cannot be validated: with ``insufficient="fail"`` (tiny, flux) that
    fails the gate; with ``"warn"`` (smoke: a plumbing check on a few dozen pairs) it is only reported.
    """
    reasons, warnings = [], []
    for c in sorted(set(table) | set(required_cells or [])):
        r = table.get(c)
        if r is None or r["n"] < min_pairs:
            msg = f"{c}: {0 if r is None else r['n']} held-out pairs < {min_pairs}, cannot be validated"
            (reasons if insufficient == "fail" else warnings).append(msg)
        elif not r["passed"]:
            reasons.append(f"{c}: accuracy {r['accuracy']:.3f} < threshold {r['threshold']:.4f} (n={r['n']})")
    return (not reasons), reasons, warnings


def table_markdown(table: dict[str, dict[str, Any]], simulated: bool) -> str:
    rows = ["| task/dimension | accuracy | 95% CI | clean-label acc. | threshold | n | |", "|---|---|---|---|---|---|---|"]
    for c, r in table.items():
        clean = "-" if r["clean_accuracy"] is None else f"{r['clean_accuracy']:.3f}"
        rows.append(f"| {c} | {r['accuracy']:.3f} | {r['ci_low']:.2f}-{r['ci_high']:.2f} | {clean} | "
                    f"{r['threshold']:.4f} | {r['n']} | {'pass' if r['passed'] else 'FAIL'} |")
    note = ("\n\nLabels are SIMULATED annotators (steps/judge/annotate.py), not people." if simulated else "")
    return "Held-out judge agreement (both orders):\n\n" + "\n".join(rows) + note


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
from steps.fields import PreferenceSplit, ShowsSource, Threaded  # noqa: E402
from steps.paths import TINY  # noqa: E402


@dataclass(frozen=True)
class AgreementConfig(Profiled, PreferenceSplit, ShowsSource, Threaded):
    SECTION = "agreement"  # of configs/<profile>.yaml

    judge_dir: str = field(str(TINY.judge), "the trained judge")
    train_dir: str = field(str(TINY.train), "conditions the pairs refer to")
    out_dir: str = field(str(TINY.judge_agreement), "table (JSON, markdown) and chart")
    threshold_scale: float = field(1.0, "1.0 = the paper's Table 1 thresholds; smoke uses lower ones")
    threshold_floor: float = field(0.5, "no threshold below this (chance)")
    min_pairs: int = field(50, "cells with fewer held-out pairs cannot be validated")
    insufficient: str = field("fail", "fail | warn: what an unvalidated cell does to the gate (smoke: warn)")
    probe_per_cell: int = field(16, "start images per task x dimension for the gradient probe "
                                    "(steps.judge.probe); 0 = no probe")

    def thresholds(self) -> dict[str, float]:
        return {c: max(self.threshold_floor, t * self.threshold_scale) for c, t in PAPER_THRESHOLDS.items()}

    @classmethod
    def path_defaults(cls, paths, **context: Any) -> dict[str, Any]:
        return dict(judge_dir=str(paths.judge), pairs_dir=str(paths.preferences), train_dir=str(paths.train),
                    out_dir=str(paths.judge_agreement))


def run_agreement(cfg: AgreementConfig) -> dict[str, Any]:
    """Compute, save and return the agreement table and the gate verdict."""
    from steps.io import atomic_write_json, atomic_write_text
    from steps.models.judge import Judge
    from steps.runtime import setup

    setup(threads=cfg.threads)
    data = load_preference_data(cfg.pairs_dir, cfg.train_dir, cfg.heldout_fraction)
    judge = Judge.load(cfg.judge_dir).eval()
    trained_on = judge.record.get("config", {}).get("heldout_fraction")
    if trained_on is not None and float(trained_on) != cfg.heldout_fraction:
        raise ValueError(f"{cfg.judge_dir}: the judge was trained with heldout_fraction={trained_on}, the agreement "
                         f"is asked for {cfg.heldout_fraction}: its held-out pairs would include training pairs; "
                         "set the same value in both sections (judge, agreement) of the profile file")
    table = agreement_table(judge, data, cfg.thresholds(), cfg.show_source)
    simulated = any(p.source == "simulated" for p in data["heldout"])
    cells = sorted({f"{p.task}/{p.dimension}" for p in data["train"] + data["heldout"]})
    passed, reasons, warnings = gate(table, cells, cfg.min_pairs, cfg.insufficient)
    out = Path(cfg.out_dir)
    md = table_markdown(table, simulated)
    chart = agreement_chart(table, out / "agreement.png",
                            "judge agreement (SIMULATED labels)" if simulated else "judge agreement")
    result = {"table": table, "passed": passed, "reasons": reasons, "warnings": warnings, "simulated": simulated,
              "n_heldout": len(data["heldout"]), "markdown": md, "chart": str(chart), "config": asdict(cfg),
              "mean_accuracy": float(np.mean([r["accuracy"] for r in table.values()])) if table else 0.0}
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
