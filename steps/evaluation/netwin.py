"""From good / same / bad outcomes to the benchmark's numbers: GSB fractions and net wins with 95% intervals.

The raters (steps/evaluation/benchmark.py) give one outcome per condition and dimension of OUR model against a
system; this module turns them into metric keys (docs/DESIGN.md §8) and reads them back, for the report
(steps/evaluation/report.py) and the promotion gate (steps/registry/gates.py):
``gsb/<rater>/<system>/<task>/<dimension>/{good,same,bad}`` and ``net_win/<rater>/<system>[/<task>]/{value,ci_low,ci_high,n_conditions}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

OUTCOMES = ("good", "same", "bad")
SIGN = {"good": 1, "same": 0, "bad": -1}
Z95 = 1.96


def annotator_outcome(diff: float, tie_margin: float) -> str:
    """The simulated annotators' verdict on ours - theirs world score: good / same (within the margin) / bad."""
    return "good" if diff > tie_margin else "bad" if diff < -tie_margin else "same"


def gsb_metrics(counts: dict[str, dict]) -> dict[str, float]:
    """``gsb/<rater>/<system>/<task>/<dimension>/{good,same,bad}`` fractions from {rater: counts}."""
    metrics = {}
    for rater, by_system in counts.items():
        for system, by_task in by_system.items():
            for task, by_dim in by_task.items():
                for dim, tally in by_dim.items():
                    n = sum(tally.values())
                    for outcome in OUTCOMES:
                        metrics[f"gsb/{rater}/{system}/{task}/{dim}/{outcome}"] = tally[outcome] / n
    return metrics


def gsb_cells(metrics: dict[str, float], rater: str, system: str) -> dict[tuple[str, str], dict[str, float]]:
    """{(task, dimension): {good, same, bad}} for one rater and system, read back from metric keys."""
    cells: dict[tuple[str, str], dict[str, float]] = {}
    prefix = f"gsb/{rater}/{system}/"
    for key, value in metrics.items():
        if key.startswith(prefix):
            parts = key[len(prefix):].split("/")
            if len(parts) == 3 and parts[2] in OUTCOMES:
                cells.setdefault((parts[0], parts[1]), {})[parts[2]] = float(value)
    return cells


def net_win(metrics: dict[str, float], rater: str, system: str) -> float | None:
    """Mean over task x dimension cells of (good - bad): > 0 means ours wins overall; None without data."""
    cells = gsb_cells(metrics, rater, system)
    if not cells:
        return None
    return float(np.mean([c.get("good", 0.0) - c.get("bad", 0.0) for c in cells.values()]))


def _net_with_interval(by_task: dict[str, dict[str, dict[str, int]]]) -> dict[str, float] | None:
    """Net win = mean over the cells (task x dimension) of mean(outcome), with its 95% interval.

    The estimate is a sum over conditions of v_c = sum over the condition's dimensions d of o_cd / (C * n_d) (C cells,
    n_d conditions rated on d); conditions are independent draws within a task, so its variance is the sum over
    tasks of n_task * var(v_c) (the plug-in estimate; dimensions of one condition may correlate, which this keeps)."""
    cells = {(t, d): sum(1 for o in conds.values() if d in o) for t, conds in by_task.items()
             for d in {d for o in conds.values() for d in o}}
    if not cells:
        return None
    net, var = 0.0, 0.0
    for task, conds in by_task.items():
        v = np.array([sum(o[d] / (len(cells) * cells[(task, d)]) for d in o) for o in conds.values()])
        net += float(v.sum())
        var += len(v) * float(v.var(ddof=1)) if len(v) > 1 else float("inf")
    half = Z95 * var ** 0.5
    return {"value": net, "ci_low": net - half, "ci_high": net + half, "half_width": half,
            "n_conditions": sum(len(c) for c in by_task.values())}


def worst_case_half_width(dims: list[tuple[str, ...]]) -> float:
    """The widest 95% half-width `_net_with_interval` can report for one task whose conditions are rated on these
    dimensions (one tuple per condition), whatever the outcomes: the sizes a benchmark needs come from it.

    Each condition's term v_c = sum over its dimensions d of o_cd / (C n_d) is at most m_c = sum_d 1 / (C n_d) in size,
    and the sample variance (ddof 1) of the v_c is at most n / (n - 1) times their mean square, so the half-width is
    at most Z95 * sqrt(n^2 / (n - 1) * mean(m_c^2)); outcomes split evenly between +1 and -1 on every dimension reach it."""
    n = len(dims)
    if n < 2:
        return float("inf")
    n_d: dict[str, int] = {}
    for ds in dims:
        for d in ds:
            n_d[d] = n_d.get(d, 0) + 1
    m = np.array([sum(1.0 / (len(n_d) * n_d[d]) for d in ds) for ds in dims])
    return float(Z95 * (n * n / (n - 1) * float(np.mean(m * m))) ** 0.5)


def half_widths_by_task(conditions) -> dict[str, float]:
    """{task: `worst_case_half_width`} over (task, prompt) pairs, one per condition: what a benchmark's size
    guarantees for each task's net win (its dimensions from steps.vocabulary.dimensions_for)."""
    from steps.vocabulary import dimensions_for

    dims: dict[str, list[tuple[str, ...]]] = {}
    for task, prompt in conditions:
        dims.setdefault(task, []).append(dimensions_for(task, prompt))
    return {task: worst_case_half_width(d) for task, d in dims.items()}


def net_win_intervals(outcomes: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """{system: {"all": {value, ci_low, ci_high, half_width, n_conditions}, <task>: {...}}} from `judge_ratings` /
    `annotator_ratings` outcomes: the net win over all cells (the promotion gate's) and per task."""
    out = {}
    for system, by_task in outcomes.items():
        out[system] = {"all": _net_with_interval(by_task),
                       **{task: _net_with_interval({task: conds}) for task, conds in by_task.items()}}
    return out


def net_win_metrics(intervals: dict[str, dict[str, dict]]) -> dict[str, float]:
    """``net_win/<rater>/<system>[/<task>]/{value,ci_low,ci_high,n_conditions}`` from {rater: `net_win_intervals`}."""
    metrics = {}
    for rater, by_system in intervals.items():
        for system, parts in by_system.items():
            for part, r in parts.items():
                key = f"net_win/{rater}/{system}" + ("" if part == "all" else f"/{part}")
                metrics.update({f"{key}/{k}": r[k] for k in ("value", "ci_low", "ci_high", "n_conditions")} if r else {})
    return metrics


def net_win_ci(metrics: dict[str, float], rater: str, system: str, task: str | None = None) -> tuple[float, float] | None:
    """The 95% interval of a net win read back from metric keys (None when the run did not record one)."""
    key = f"net_win/{rater}/{system}" + (f"/{task}" if task else "")
    lo, hi = metrics.get(f"{key}/ci_low"), metrics.get(f"{key}/ci_high")
    return None if lo is None or hi is None else (float(lo), float(hi))
