"""The benchmark's pictures and tables: good/same/bad charts per task, sample grids, the markdown summary.

Rendered by steps.evaluation.benchmark.run_benchmark from its metrics (``gsb/<rater>/<system>/<task>/<dimension>/...``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from steps.evaluation.benchmark import DIM_SHORT, SIMULATED_NOTE, Item
from steps.evaluation.netwin import OUTCOMES, gsb_cells, net_win, net_win_ci
from steps.manifest import TASKS


def task_chart(metrics: dict[str, float], task: str, ours: str, systems: list[str], raters: list[str],
               path: Path, title: str) -> Path:
    """Stacked horizontal good/same/bad bars per system; one panel per rater x dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from steps.vocabulary import DIMENSIONS

    systems = [s for s in systems if any(t == task for r in raters for t, _ in gsb_cells(metrics, r, s))] or systems
    dims = [d for d in DIMENSIONS[task] if any(gsb_cells(metrics, r, s).get((task, d)) for r in raters for s in systems)]
    dims = dims or list(DIMENSIONS[task])
    fig, axes = plt.subplots(len(raters), len(dims), squeeze=False,
                             figsize=(max(3.2 * len(dims) + 1.2, 7.5), (0.42 * len(systems) + 1.3) * len(raters) + 0.7))
    colours = {"good": "#2e7d32", "same": "#bdbdbd", "bad": "#c62828"}
    y = np.arange(len(systems))
    for r, rater in enumerate(raters):
        for d, dim in enumerate(dims):
            ax = axes[r][d]
            left = np.zeros(len(systems))
            for outcome in OUTCOMES:
                vals = np.array([gsb_cells(metrics, rater, s).get((task, dim), {}).get(outcome, 0.0) for s in systems])
                ax.barh(y, vals, left=left, color=colours[outcome], label=outcome, height=0.7)
                left += vals
            ax.set_xlim(0, 1)
            ax.set_yticks(y, systems if d == 0 else [""] * len(systems), fontsize=8)
            ax.invert_yaxis()
            ax.tick_params(axis="x", labelsize=7)
            who = "annotators (SIMULATED)" if rater == "annotators" else rater
            ax.set_title(f"{dim}\n{who}", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"{title}: {ours} vs each system ({task}); share of conditions", fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def sample_grid(items: list[Item], columns: dict[str, dict[str, np.ndarray]], task: str, rows: int, path: Path,
                title: str) -> Path | None:
    from steps.viz import image_grid, save_image

    chosen = [it for it in items if it.condition.task == task][:rows]
    if not chosen:
        return None
    columns = {name: out for name, out in columns.items() if any(it.condition.id in out for it in chosen)}
    blank = np.full_like(chosen[0].image, 255)
    grid_rows = [[it.image, it.mask, *(out.get(it.condition.id, blank) for out in columns.values()),
                  it.target if it.target is not None else blank] for it in chosen]
    labels = [f"{it.condition.id}: {it.condition.prompt}" for it in chosen]
    return save_image(image_grid(grid_rows, ["source", "mask", *columns, "target"], labels,
                                 title=f"{title}: {task}"), path)


def _pct(cell: dict[str, float] | None) -> str:
    if not cell:
        return "-"
    return "/".join(f"{100 * cell.get(k, 0.0):.0f}" for k in OUTCOMES)


def _net(metrics: dict[str, float], rater: str, system: str, task: str | None = None, n_all: int | None = None) -> str:
    """A net win with its 95% interval: ``+0.12 [+0.05, +0.19]``, and its n when fewer than ``n_all`` were rated."""
    value = metrics.get(f"net_win/{rater}/{system}/{task}/value") if task else net_win(metrics, rater, system)
    if value is None:
        return "-"
    ci = net_win_ci(metrics, rater, system, task)
    n = metrics.get(f"net_win/{rater}/{system}" + (f"/{task}" if task else "") + "/n_conditions")
    fewer = n is not None and n_all is not None and int(n) < n_all
    return f"{value:+.2f}" + ("" if ci is None else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]") + (f" (n={int(n)})" if fewer else "")


def markdown_summary(metrics: dict[str, float], split: str, ours: str, systems: list[str], raters: list[str],
                     n_by_task: dict[str, int], tie_margin: float, pasted: bool = False,
                     net_win_raw: dict[str, dict[str, float | None]] | None = None,
                     widest: dict[str, float] | None = None) -> str:
    from steps.vocabulary import DIMENSIONS

    n = sum(n_by_task.values())
    lines = [f"## Benchmark `{split}`: `{ours}` against {len(systems)} systems",
             "",
             f"{n} conditions ({', '.join(f'{t} {k}' for t, k in n_by_task.items())}). Cells: good/same/bad in % "
             f"= share of conditions where `{ours}` is better / tied / worse than the system; net = mean of "
             "(good - bad) over the cells, with its 95% interval [low, high] over conditions.",
             "Judge: asked both ways round; good/bad only when both orders agree, otherwise same. Where it rated a "
             "system on fewer conditions, the net win shows its n.",
             *([f"On all conditions, whatever the ratings, a task's net win is within +-"
                f"{max(widest.values()):.2f} at 95% ({', '.join(f'{t} +-{w:.3f}' for t, w in widest.items())})."]
               if widest else []),
             ("Outputs are rated as users get them: every system's kept pixels PASTED BACK (as the registered model and "
              "`steps.registry.infer` return them); kept-region PSNR/SSIM are of the raw outputs, so they measure drift."
              if pasted else
              "Model outputs are scored RAW (the kept region as the model decoded it, not pasted back as the "
              "registered model and `steps.registry.infer` return it), so consistency and kept-region PSNR/SSIM measure drift."),
             ]
    raw = (net_win_raw or {}).get("annotators", {})
    if raw:
        lines.append("Annotators' net win of the RAW outputs, beside: "
                     + ", ".join(f"`{s}` {v:+.2f}" for s, v in raw.items() if v is not None) + ".")
    if "annotators" in raters:
        lines.append(f"**{SIMULATED_NOTE.format(margin=tie_margin)}**")
    else:
        lines.append("No annotator ratings: this benchmark has no ground truth (the judge alone rates it).")
    cells = [(t, d) for t in TASKS for d in DIMENSIONS[t]
             if any((t, d) in gsb_cells(metrics, r, s) for r in raters for s in systems)]
    for rater in raters:
        heading = "Simulated annotators (SIMULATED labels)" if rater == "annotators" else "Judge"
        lines += ["", f"### {heading}: good/same/bad (%)", "",
                  "| system | " + " | ".join(f"{t}: {DIM_SHORT[d]}" for t, d in cells) + " | net |",
                  "|---|" + "---|" * (len(cells) + 1)]
        for s in systems:
            got = gsb_cells(metrics, rater, s)
            lines.append(f"| {s} | " + " | ".join(_pct(got.get(cell)) for cell in cells) + f" | {_net(metrics, rater, s, n_all=n)} |")
    tasks = [t for t in TASKS if n_by_task.get(t)]
    for rater in raters:
        heading = "Simulated annotators (SIMULATED labels)" if rater == "annotators" else "Judge"
        lines += ["", f"### {heading}: net win per task, 95% interval", "",
                  "| system | " + " | ".join(f"{t} (n={n_by_task[t]})" for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
        lines += [f"| {s} | " + " | ".join(_net(metrics, rater, s, t, n_by_task[t]) for t in tasks) + " |" for s in systems]
    lines += ["", "### Reference metrics: PSNR (dB) / SSIM, kept region vs source | filled region vs target", "",
              "| system | " + " | ".join(f"{t} PSNR kept/filled | {t} SSIM kept/filled" for t in tasks) + " |",
              "|---|" + "---|" * (2 * len(tasks))]
    for s in [ours, *systems]:
        row = []
        for t in tasks:
            for metric, fmt in (("psnr", "{:.1f}"), ("ssim", "{:.3f}")):
                vals = [metrics.get(f"{metric}/{region}/{s}/{t}") for region in ("kept", "filled")]
                row.append(" / ".join("-" if v is None else fmt.format(v) for v in vals))
        lines.append(f"| {s} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
