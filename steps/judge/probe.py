"""The judge's gradient probe: does climbing the judge's reward make images better by the world's truth?

RL follows the judge's gradient. The probe follows it directly, in pixel space, from images like the ones RL
starts from: for each start image x0 (a base-model candidate of a held-out condition) and each dimension of
its task, ``steps`` normalised gradient steps raise log P(Yes | x better than x0) with the total change held
to an RMS ``budget`` (pixels in [0, 1]); the world's truth scores x0 and the end point. A random walk of the
same steps and budget is the control. Per task x dimension: the mean truth change, the share of cases that
improved, P(Yes) at the end, and the random walk's mean truth change.

A judge whose probe lowers the truth at a small budget (changes of ~8/255 that a person barely sees) will be
hacked by RL; one whose probe raises the truth above the random walk points RL at better images
(perceptually aligned gradients: Kawar, Ganz & Elad 2023).

    python bench/judge/judge_probe.py --judge outputs/tiny/judge --candidates data/tiny/candidates \\
        --train data/tiny/train
"""

from __future__ import annotations

from typing import Any

import numpy as np

BUDGETS = (0.03, 0.12)
PROBE_STEPS = 12


def _project(delta, budget: float):
    import torch

    rms = delta.pow(2).flatten(1).mean(1).sqrt().clamp_min(1e-12)
    return delta * torch.clamp(budget / rms, max=1.0)[:, None, None, None]


def both_orders_logp(judge, x, start, queries: list[str], source=None):
    """log of the both-orders preference for ``x`` over ``start``: (P(Yes | x, start) + 1 - P(Yes | start, x)) / 2
    (a first-position bias of the judge cannot raise it)."""
    import torch

    from steps.models.judge import preference

    forward = torch.sigmoid(judge.margin(x, start, queries, source))
    backward = torch.sigmoid(judge.margin(start, x, queries, source))
    return preference(forward, backward).clamp_min(1e-6).log()


def jitter(images: list, generator=None, shift: int = 3):
    """The same random translation (circular, up to ``shift`` px) of every image in ``images`` (B,3,H,W each)
    and the same random blur (sigma 0-1 px): one draw of the expectation over transformations (EOT)."""
    import torch

    dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator))
    sigma = float(torch.rand((), generator=generator))
    out = [torch.roll(x, (dy, dx), (2, 3)) if x is not None else None for x in images]
    if sigma > 0.2:
        k = torch.arange(-2, 3, dtype=torch.float32)
        w = torch.exp(-k**2 / (2 * sigma**2))
        w = (w / w.sum()).to(images[0].dtype)
        def blur(x):
            c = x.shape[1]
            x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2, 2, 0, 0), mode="replicate"),
                                           w.view(1, 1, 1, 5).repeat(c, 1, 1, 1), groups=c)
            return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 0, 2, 2), mode="replicate"),
                                              w.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)
        out = [blur(x) if x is not None else None for x in out]
    return out


def climb(judge, start, queries: list[str], budget: float, steps: int = PROBE_STEPS, generator=None,
          random_walk: bool = False, source=None, both_orders: bool = False, eot: int = 0):
    """End points (B,3,H,W in [0, 1]) of the judge-gradient climb (or of a random walk) from ``start``.
    ``source``: the masked source (B,3,H,W) for a judge trained to see it (`Judge.shows_source`), else None."""
    import torch

    x0 = start.detach()
    delta = torch.zeros_like(x0)
    step = 2.0 * budget / steps
    for k in range(steps):
        if random_walk:
            g = torch.randn(x0.shape, generator=generator)
        else:
            d = delta.clone().requires_grad_(True)
            if eot:
                eg = torch.Generator().manual_seed(1234 + k)  # the same draws at every budget
                draws = [jitter([(x0 + d).clamp(0, 1), x0, source], eg) for _ in range(eot)]
                logp = sum(torch.nn.functional.logsigmoid(judge.margin(a, b, queries, src))
                           for a, b, src in draws) / eot
            elif both_orders:
                logp = both_orders_logp(judge, (x0 + d).clamp(0, 1), x0, queries, source)
            else:
                logp = torch.nn.functional.logsigmoid(judge.margin((x0 + d).clamp(0, 1), x0, queries, source))
            (g,) = torch.autograd.grad(logp.sum(), d)
        g_rms = g.pow(2).flatten(1).mean(1).sqrt().clamp_min(1e-12)[:, None, None, None]
        delta = _project(delta + step * g / g_rms, budget).detach()
        delta = (x0 + delta).clamp(0, 1) - x0
    return (x0 + delta).detach()


def _truth(images, rows, score) -> np.ndarray:
    arr = images.permute(0, 2, 3, 1).numpy()
    return np.array([score(arr[i], s, (d,))[d] for i, (s, _, d) in enumerate(rows)])


def run_probe(judge, items: list[tuple[Any, np.ndarray]], budgets=BUDGETS, steps: int = PROBE_STEPS,
              seed: int = 0, per_cell: int = 16, both_orders: bool = False, eot: int = 0) -> dict[str, Any]:
    """``items``: (world sample, start image HxWx3 uint8). Returns {"cells": {budget: {cell: stats}},
    "summary": {budget: {...}}, "metrics": {probe/<budget>/<task>/<dimension>/<stat>: value}}."""
    import torch

    from steps.preferences import judge_query
    from steps.vocabulary import masked_source
    from steps.world import dimensions_for, score

    by_cell: dict[str, list[tuple[Any, np.ndarray, str]]] = {}
    for sample, image in items:
        for dim in dimensions_for(sample.task, sample.prompt):
            cell = f"{sample.task}/{dim}"
            if len(by_cell.setdefault(cell, [])) < per_cell:
                by_cell[cell].append((sample, image, dim))
    was_training = judge.model.training
    judge.eval()
    gen = torch.Generator().manual_seed(seed)
    cells: dict[str, dict[str, dict[str, float]]] = {}
    metrics: dict[str, float] = {}
    summary: dict[str, dict[str, float]] = {}
    for budget in budgets:
        key = f"{budget:g}"
        cells[key] = {}
        changes_all, improved_all = [], []
        for cell, rows in sorted(by_cell.items()):
            start = torch.as_tensor(np.stack([r[1] for r in rows])).permute(0, 3, 1, 2).float() / 255.0
            queries = [judge_query(s.task, d, s.prompt) for s, _, d in rows]
            source = None
            if judge.shows_source:
                source = torch.as_tensor(np.stack([masked_source(s.image, s.mask) for s, _, _ in rows]))
                source = source.permute(0, 3, 1, 2).float() / 255.0
            end = climb(judge, start, queries, budget, steps, source=source, both_orders=both_orders, eot=eot)
            walk = climb(judge, start, queries, budget, steps, generator=gen, random_walk=True)
            with torch.no_grad():
                p_end = (both_orders_logp(judge, end, start, queries, source).exp() if both_orders else
                         torch.sigmoid(judge.margin(end, start, queries, source))).numpy()

            t0, t1, tw = (_truth(x, rows, score) for x in (start, end, walk))
            change, walk_change = t1 - t0, tw - t0
            stats = {"truth_change": float(change.mean()), "improved": float((change > 0).mean()),
                     "p_yes_end": float(p_end.mean()), "random_truth_change": float(walk_change.mean()),
                     "n": len(rows)}
            cells[key][cell] = stats
            changes_all += list(change)
            improved_all += list(change > 0)
            for stat in ("truth_change", "improved", "p_yes_end", "random_truth_change"):
                metrics[f"probe/{key}/{cell}/{stat}"] = stats[stat]
        summary[key] = {
            "mean_truth_change": float(np.mean(changes_all)), "improved": float(np.mean(improved_all)),
            "cells_not_lowered": sum(v["truth_change"] >= 0 for v in cells[key].values()),
            "cells_above_random": sum(v["truth_change"] > v["random_truth_change"] for v in cells[key].values()),
            "cells": len(cells[key])}
        metrics[f"probe/{key}/mean_truth_change"] = summary[key]["mean_truth_change"]
        metrics[f"probe/{key}/improved"] = summary[key]["improved"]
    judge.train(was_training)
    return {"cells": cells, "summary": summary, "metrics": metrics, "budgets": list(budgets), "steps": steps,
            "both_orders": both_orders}


def probe_markdown(result: dict[str, Any]) -> str:
    lines = []
    for key, cells in result["cells"].items():
        s = result["summary"][key]
        lines += [f"**Gradient probe, RMS budget {key}** ({result['steps']} normalised steps up the judge's "
                  f"P(Yes | x better than the start); truth = the world's score): mean truth change "
                  f"{s['mean_truth_change']:+.3f}, improved {s['improved']:.0%}, {s['cells_not_lowered']}/{s['cells']} "
                  f"cells not lowered, {s['cells_above_random']}/{s['cells']} above the random walk",
                  "", "| cell | truth change | improved | P(Yes) at end | random walk | n |", "|---|---|---|---|---|---|"]
        lines += [f"| {c} | {v['truth_change']:+.3f} | {v['improved']:.0%} | {v['p_yes_end']:.2f} | "
                  f"{v['random_truth_change']:+.3f} | {v['n']} |" for c, v in cells.items()]
        lines.append("")
    return "\n".join(lines)


def heldout_items(data: dict[str, Any], limit: int = 400) -> list[tuple[Any, np.ndarray]]:
    """(sample, first candidate) of held-out conditions of the preference data (steps.judge.agreement), at most
    ``limit`` and at most a third of them per task (a test set is ordered by task)."""
    seen: dict[str, tuple[Any, np.ndarray]] = {}
    per_task: dict[str, int] = {}
    for p in data["heldout"]:
        if p.condition_id not in seen and per_task.get(p.task, 0) < -(-limit // 3):
            first = min(p.winner, p.loser)
            seen[p.condition_id] = (data["samples"][p.condition_id], data["images"][first])
            per_task[p.task] = per_task.get(p.task, 0) + 1
        if len(seen) >= limit:
            break
    return list(seen.values())
