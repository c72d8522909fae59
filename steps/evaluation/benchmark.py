"""Benchmark evaluation: our fill model against every competitor, per task x dimension (docs/DESIGN.md §7).

    python -m steps.evaluation.benchmark --profile tiny --config cfg.yaml               # BenchmarkConfig fields

Inputs: a benchmark split (synthetic held-out, real photos, or any user manifest), a competitors root
holding ``<system>/<benchmark id>.png`` folders (steps/evaluation/competitors.py; ours is one of them) and a judge.

Raters, each giving good / same / bad of OUR model against a system, per condition and dimension:
- ``judge``: the VLM judge asked both ways round. good when P(Yes | ours first) > 0.5 AND
  P(Yes | theirs first) < 0.5; bad when the reverse; same when the two orders disagree (a judge that
  only prefers whichever image comes first says "same" everywhere: position bias cancels).
  With ``judge_per_task`` set, the judge rates the systems outside ``judge_all_systems`` (the promotion gate's
  opponents: base, champion) on the first N conditions of each task only: its ratings are the benchmark's costliest part
  (docs/BENCHMARKS.md), and those comparisons decide nothing; their n and wider intervals are shown.
- ``annotators``: SIMULATED annotators, only where ground truth exists (synthetic conditions,
  ``meta.source == "synthetic"``): the world's per-dimension scores (steps.world.score) of the two
  outputs; good when ours is higher by more than ``tie_margin``, bad when lower by more, same otherwise.
  No label noise (it would only blur the fractions). No human rated anything here.
Metric keys (fractions in [0, 1], docs/DESIGN.md §8): ``gsb/<rater>/<system>/<task>/<dimension>/{good,same,bad}``.
Net win = mean over task x dimension cells of (good - bad), overall and per task, with its 95% interval from the
per-condition outcomes (steps/evaluation/netwin.py): ``net_win/<rater>/<system>[/<task>]/{value,ci_low,ci_high}``.

Reference metrics, mean over the conditions of a task, for every system including ours:
``psnr/kept/<system>/<task>`` and ``ssim/kept/<system>/<task>``: outside the mask, against the source;
``psnr/filled/<system>/<task>`` and ``ssim/filled/<system>/<task>``: inside the mask, against the target,
only over conditions that have one. PSNR is skimage's over the region's pixels (dB, data range 255,
capped at `PSNR_CAP` for identical regions); SSIM is the mean of skimage's full SSIM map (7x7 window,
per channel) over the region (windows near the mask edge also see pixels across it).

Outputs under ``out_dir`` (written to a temporary folder, then renamed): ``charts/<task>.png``,
``grids/<task>.png`` (rows: conditions; columns: source | mask | ours | systems... | target),
``summary.md`` and ``report.json``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steps.config import Profiled, field, parse_cli, resolve
from steps.evaluation.netwin import (
    OUTCOMES,
    SIGN,
    annotator_outcome,
    gsb_metrics,
    half_widths_by_task,
    net_win,
    net_win_intervals,
    net_win_metrics,
)
from steps.fields import Threaded
from steps.manifest import TASKS, Condition
from steps.paths import TINY, ArtifactPaths

RATERS = ("judge", "annotators")
PSNR_CAP = 100.0
SIMULATED_NOTE = ("Annotator ratings are SIMULATED: the synthetic world's ground-truth scores of both outputs, "
                  "compared with a tie margin of {margin}; no human rated these images.")
DIM_SHORT = {"text_alignment": "text", "consistency": "consistency", "structure": "structure",
             "aesthetics": "aesthetics", "removal_quality": "removal"}


@dataclass(frozen=True)
class BenchmarkConfig(Profiled, Threaded):
    SECTION = "benchmark"  # of configs/<profile>.yaml

    profile: str = field("tiny", "profile (names the default paths)")
    benchmark: str = field(str(TINY.benchmark), "benchmark split folder (manifest.jsonl) or a manifest path")
    competitors_dir: str = field(str(TINY.competitors("benchmark")), "folders <system>/<benchmark id>.png")
    ours: str = field("static", "the system folder holding OUR model's outputs")
    systems: tuple[str, ...] = field((), "systems to compare against (empty: every other folder)")
    judge_dir: str = field(str(TINY.judge), "the judge directory (steps.models.judge.Judge.load)")
    out_dir: str = field(str(TINY.benchmark_report("benchmark")), "where charts, grids and reports go")
    tie_margin: float = field(0.02, "simulated annotators: world-score difference below which it is 'same'")
    paste_back: bool = field(True, "rate what users get: every system's output with the kept pixels pasted back "
                                   "(as steps.registry.infer returns it); the annotators' net win of the RAW outputs "
                                   "is reported beside (report.json net_win_raw); kept-region PSNR/SSIM stay raw")
    judge_batch: int = field(32, "comparisons per judge forward pass (each asked in both orders)")
    grid_rows: int = field(4, "conditions per task in the sample grids")
    limit_per_task: int = field(0, "use only the first N conditions of each task (0: all)")
    judge_per_task: int = field(0, "the judge rates systems outside judge_all_systems on the first N conditions of "
                                   "each task only (0: all); the annotators rate every condition")
    judge_all_systems: tuple[str, ...] = field(("base", "champion"), "systems the judge rates on every condition: "
                                                                      "the promotion gate's opponents")

    def __post_init__(self):
        if not 0 <= self.tie_margin < 1:
            raise ValueError(f"tie_margin must lie in [0, 1), got {self.tie_margin}")
        if self.judge_batch < 1 or self.grid_rows < 0 or self.limit_per_task < 0 or self.judge_per_task < 0:
            raise ValueError("judge_batch must be >= 1, grid_rows, limit_per_task and judge_per_task >= 0")
        if self.ours in self.systems:
            raise ValueError(f"ours ({self.ours!r}) cannot also be a competitor in systems")

    @classmethod
    def path_defaults(cls, paths: ArtifactPaths, **context: Any) -> dict[str, Any]:
        """``split``: which benchmark split (benchmark | photos | user)."""
        split = context.get("split", "benchmark")
        return dict(benchmark=str(paths.split(split)), competitors_dir=str(paths.competitors(split)),
                    judge_dir=str(paths.judge), out_dir=str(paths.benchmark_report(split)))

    @classmethod
    def for_profile(cls, profile: str, root: str | os.PathLike = ".", split: str = "benchmark",
                    **overrides: Any) -> BenchmarkConfig:
        return resolve(cls, profile, root, overrides, split=split)


# ---------------------------------------------------------------- data


@dataclass
class Item:
    """One benchmark condition with its pixels, and its ground truth when the world knows it."""

    condition: Condition
    image: np.ndarray
    mask: np.ndarray
    target: np.ndarray | None
    sample: Any = None  # steps.world.Sample for synthetic conditions (the simulated annotators' view)


def pasted_outputs(items: list[Item], outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each output with its condition's kept pixels (mask 0) pasted back: what a user receives."""
    from steps.evaluation.fill import paste_kept

    return {it.condition.id: paste_kept(it.image, it.mask, outputs[it.condition.id])
            for it in items if it.condition.id in outputs}


def load_items(conditions: list[Condition], root: Path) -> list[Item]:
    from steps.io import read_mask, read_rgb
    from steps.world import Sample

    items = []
    for c in conditions:
        image, mask = read_rgb(c.image), read_mask(c.mask)
        target = read_rgb(c.target) if c.target else None
        sample = None
        if c.meta.get("source") == "synthetic" and target is not None and "colour" in c.meta:
            bg = c.meta.get("background")
            background = read_rgb(root / bg) if bg else target
            sample = Sample(id=c.id, task=c.task, prompt=c.prompt, image=image, mask=mask, target=target,
                            background=background, meta=c.meta)
        items.append(Item(c, image, mask, target, sample))
    return items


def limit(conditions: list[Condition], per_task: int) -> list[Condition]:
    if not per_task:
        return conditions
    seen: dict[str, int] = {}
    kept = []
    for c in conditions:
        if seen.get(c.task, 0) < per_task:
            kept.append(c)
            seen[c.task] = seen.get(c.task, 0) + 1
    return kept


# ---------------------------------------------------------------- raters


def _tally() -> dict[str, int]:
    return {k: 0 for k in OUTCOMES}


def judge_ratings(judge, items: list[Item], ours: dict[str, np.ndarray], systems: dict[str, dict[str, np.ndarray]],
                  batch: int = 32, show_source: bool = False,
                  outcomes: dict | None = None) -> dict[str, dict[str, dict[str, dict[str, int]]]]:
    """Counts {system: {task: {dimension: {good, same, bad}}}} from the judge asked in both orders.

    ``show_source``: the judge was trained with the masked source as a third image (steps.vocabulary.masked_source).
    ``outcomes``: filled with each condition's outcome, {system: {task: {condition id: {dimension: +1 | 0 | -1}}}}."""
    from steps.vocabulary import dimensions_for

    rows = []  # (system, task, dimension, ours image, theirs image, prompt, source, mask, condition id)
    for system, outputs in systems.items():
        for it in items:
            c = it.condition
            if c.id not in outputs or c.id not in ours:
                continue
            for dim in dimensions_for(c.task, c.prompt):
                rows.append((system, c.task, dim, ours[c.id], outputs[c.id], c.prompt, it.image, it.mask, c.id))
    if show_source and not judge.shows_source:
        judge.record = {**judge.record, "config": {**judge.record.get("config", {}), "show_source": True}}
    by_size: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        by_size.setdefault(r[3].shape, []).append(i)
    p_first = np.zeros(len(rows))
    p_second = np.zeros(len(rows))
    for indices in by_size.values():
        chunk = [rows[i] for i in indices]
        fwd, bwd = judge.compare([r[3] for r in chunk], [r[4] for r in chunk], [r[1] for r in chunk],
                                 [r[2] for r in chunk], [r[5] for r in chunk], [r[6] for r in chunk],
                                 [r[7] for r in chunk], batch)
        p_first[indices], p_second[indices] = fwd, bwd
    counts: dict = {}
    for r, a, b in zip(rows, p_first, p_second):
        outcome = "good" if a > 0.5 and b < 0.5 else "bad" if a < 0.5 and b > 0.5 else "same"
        counts.setdefault(r[0], {}).setdefault(r[1], {}).setdefault(r[2], _tally())[outcome] += 1
        _record(outcomes, r[0], r[1], r[8], r[2], outcome)
    return counts


def _record(outcomes: dict | None, system: str, task: str, cid: str, dim: str, outcome: str) -> None:
    if outcomes is not None:
        outcomes.setdefault(system, {}).setdefault(task, {}).setdefault(cid, {})[dim] = SIGN[outcome]


def annotator_ratings(items: list[Item], ours: dict[str, np.ndarray], systems: dict[str, dict[str, np.ndarray]],
                      tie_margin: float, outcomes: dict | None = None) -> dict[str, dict[str, dict[str, dict[str, int]]]]:
    """Counts (and ``outcomes``) like `judge_ratings` from the SIMULATED annotators (world scores), synthetic items only."""
    from steps.world import score

    truth = [it for it in items if it.sample is not None and it.condition.id in ours]
    our_scores = {it.condition.id: score(ours[it.condition.id], it.sample) for it in truth}
    counts: dict = {}
    for system, outputs in systems.items():
        for it in truth:
            c = it.condition
            if c.id not in outputs:
                continue
            theirs = score(outputs[c.id], it.sample)
            for dim, mine in our_scores[c.id].items():
                outcome = annotator_outcome(mine - theirs[dim], tie_margin)
                counts.setdefault(system, {}).setdefault(c.task, {}).setdefault(dim, _tally())[outcome] += 1
                _record(outcomes, system, c.task, c.id, dim, outcome)
    return counts



# ---------------------------------------------------------------- reference metrics


def region_psnr_ssim(output: np.ndarray, reference: np.ndarray, region: np.ndarray) -> tuple[float, float] | None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if not region.any():
        return None
    a, b = output.astype(np.float64), reference.astype(np.float64)
    with np.errstate(divide="ignore"):  # identical regions: infinite PSNR, capped below
        psnr = float(peak_signal_noise_ratio(b[region], a[region], data_range=255))
    _, ssim_map = structural_similarity(b, a, data_range=255, channel_axis=-1, full=True)
    return min(psnr, PSNR_CAP), float(ssim_map[region].mean())


def reference_metrics(items: list[Item], outputs: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """psnr/ssim of the kept region (vs source) and of the filled region (vs target), per system and task."""
    acc: dict[str, list[float]] = {}
    for system, by_id in outputs.items():
        for it in items:
            out = by_id.get(it.condition.id)
            if out is None:
                continue
            inside = it.mask > 127
            pairs = [("kept", it.image, ~inside)] + ([("filled", it.target, inside)] if it.target is not None else [])
            for region_name, reference, region in pairs:
                values = region_psnr_ssim(out, reference, region)
                if values is None:
                    continue
                for metric, v in zip(("psnr", "ssim"), values):
                    acc.setdefault(f"{metric}/{region_name}/{system}/{it.condition.task}", []).append(v)
    return {k: float(np.mean(v)) for k, v in sorted(acc.items())}


# ---------------------------------------------------------------- the step


def run_benchmark(cfg: BenchmarkConfig, judge=None) -> dict[str, Any]:
    """Rate ``cfg.ours`` against every other system; write charts, grids, summary.md, report.json.

    ``judge``: a `steps.models.judge.BothOrders` (default: `Judge.load(cfg.judge_dir)`).
    Returns {"metrics", "markdown", "charts", "grids", "summary", "report", "systems", "raters", ...} with
    paths at their final place.
    """
    from steps.evaluation.competitors import list_systems, load_outputs, manifest_path, read_conditions
    from steps.io import atomic_dir, atomic_write_json, atomic_write_text
    from steps.runtime import setup

    setup(threads=cfg.threads)
    t0 = time.perf_counter()
    manifest = manifest_path(cfg.benchmark)
    split = manifest.parent.name if manifest.name == "manifest.jsonl" else manifest.stem
    conditions = limit(read_conditions(manifest), cfg.limit_per_task)
    root = Path(cfg.competitors_dir)
    systems = list(cfg.systems) or [s for s in list_systems(root) if s != cfg.ours]
    if not (root / cfg.ours).is_dir():
        raise FileNotFoundError(f"{root / cfg.ours}: no outputs of our model (ours={cfg.ours!r}); "
                                f"systems there: {list_systems(root)}")
    if not systems:
        raise ValueError(f"{root}: no competitor folders besides {cfg.ours!r}")
    raw_ours = load_outputs(root / cfg.ours, conditions)
    raw_outputs = {s: load_outputs(root / s, conditions) for s in systems}
    items = load_items(conditions, manifest.parent)
    ours, outputs = raw_ours, raw_outputs
    if cfg.paste_back:
        ours = pasted_outputs(items, raw_ours)
        outputs = {s: pasted_outputs(items, o) for s, o in raw_outputs.items()}
    if judge is None:
        from steps.models.judge import Judge

        judge = Judge.load(cfg.judge_dir).eval()

    from steps.judge.train import trained_with_source

    outcomes: dict[str, dict] = {"judge": {}}
    shows_source = trained_with_source(cfg.judge_dir)
    everywhere = {s: o for s, o in outputs.items() if s in cfg.judge_all_systems or not cfg.judge_per_task}
    first = {s: o for s, o in outputs.items() if s not in everywhere}
    judged = {c.id for c in limit(conditions, cfg.judge_per_task)}
    counts = {"judge": judge_ratings(judge, items, ours, everywhere, cfg.judge_batch, shows_source, outcomes["judge"])}
    if first:
        counts["judge"].update(judge_ratings(judge, [it for it in items if it.condition.id in judged], ours, first,
                                             cfg.judge_batch, shows_source, outcomes["judge"]))
    if any(it.sample is not None for it in items):
        outcomes["annotators"] = {}
        counts["annotators"] = annotator_ratings(items, ours, outputs, cfg.tie_margin, outcomes["annotators"])
    raters = [r for r in RATERS if r in counts]
    intervals = {r: net_win_intervals(outcomes[r]) for r in raters}
    metrics = gsb_metrics(counts)
    metrics.update(net_win_metrics(intervals))
    metrics.update(reference_metrics(items, {cfg.ours: raw_ours, **raw_outputs}))  # the kept region as decoded
    net_win_raw = {}
    if cfg.paste_back and "annotators" in counts:
        raw_counts = annotator_ratings(items, raw_ours, raw_outputs, cfg.tie_margin)
        raw_metrics = gsb_metrics({"annotators": raw_counts})
        net_win_raw = {"annotators": {s: net_win(raw_metrics, "annotators", s) for s in systems}}
    n_by_task = {t: sum(c.task == t for c in conditions) for t in TASKS if any(c.task == t for c in conditions)}
    widest = half_widths_by_task((c.task, c.prompt) for c in conditions)
    from steps.evaluation.report import markdown_summary, sample_grid, task_chart

    markdown = markdown_summary(metrics, split, cfg.ours, systems, raters, n_by_task, cfg.tie_margin,
                                pasted=cfg.paste_back, net_win_raw=net_win_raw, widest=widest)

    out = Path(cfg.out_dir)
    title = f"{split}"
    with atomic_dir(out) as tmp:
        for task in n_by_task:
            task_chart(metrics, task, cfg.ours, systems, raters, tmp / "charts" / f"{task}.png", title)
            sample_grid(items, {cfg.ours: ours, **outputs}, task, cfg.grid_rows, tmp / "grids" / f"{task}.png", title)
        charts = sorted(str(out / "charts" / p.name) for p in (tmp / "charts").glob("*.png"))
        grids = sorted(str(out / "grids" / p.name) for p in (tmp / "grids").glob("*.png"))
        atomic_write_text(tmp / "summary.md", markdown)
        report = {
            "split": split, "benchmark": str(manifest), "ours": cfg.ours, "systems": systems, "raters": raters,
            "n_conditions": len(conditions), "n_by_task": n_by_task, "counts": counts, "metrics": metrics,
            "net_win": {r: {s: net_win(metrics, r, s) for s in systems} for r in raters},
            "net_win_ci95": intervals, "net_win_widest_half_width": widest,
            "outputs_rated": "pasted back" if cfg.paste_back else "raw",
            "net_win_raw": net_win_raw,
            "annotators_simulated": "annotators" in raters,
            "note": SIMULATED_NOTE.format(margin=cfg.tie_margin) if "annotators" in raters else "",
            "charts": charts, "grids": grids, "config": asdict(cfg), "seconds": time.perf_counter() - t0,
        }
        atomic_write_json(tmp / "report.json", report)
    return {**report, "markdown": markdown, "summary": str(out / "summary.md"), "report": str(out / "report.json"),
            "out_dir": str(out)}


def log_to_mlflow(tracker, run_id: str, result: dict[str, Any], artifact_path: str | None = None) -> None:
    """Log a `run_benchmark` result to an MLflow run (explicit run id): metrics, charts, grids, reports.

    One run per split: the docs/DESIGN.md §8 keys carry no split name.
    """
    tracker.log_metrics(run_id, result["metrics"])
    folder = artifact_path or f"benchmark/{result['split']}"
    for path in result["charts"]:
        tracker.log_artifact(run_id, path, f"{folder}/charts")
    for path in result["grids"]:
        tracker.log_artifact(run_id, path, f"{folder}/grids")
    for path in (result["summary"], result["report"]):
        tracker.log_artifact(run_id, path, folder)
    tracker.set_tags(run_id, {"benchmark.split": result["split"], "benchmark.ours": result["ours"],
                              "benchmark.annotators": "simulated" if result["annotators_simulated"] else "none"})


def main(argv: list[str] | None = None) -> None:
    cfg, _ = parse_cli(BenchmarkConfig, __doc__, argv)
    result = run_benchmark(cfg)
    print(result["markdown"])
    print(json.dumps({k: result[k] for k in ("summary", "report", "charts", "grids", "seconds")}, indent=2))


if __name__ == "__main__":
    main()
