"""What the benchmark costs per condition, part by part, and so what a decisive benchmark would cost the run.

    python bench/evaluation/benchmark_cost.py --per-task 50 --systems 7 --target 385 601
    python bench/evaluation/benchmark_cost.py --per-task 50 --systems 7 --target 400 --judge-per-task 50 --judge-all 1

Times, on the first ``--per-task`` conditions of each task of the tiny benchmark split, in one process with one
torch thread: every classical competitor, one model system's sampling (the foundation base: every model system
-- base, static, dynamic, champion -- costs the same), the world's scoring of one system (the simulated
annotators), the judge on one system in both orders, and the report's charts and grids. Then it multiplies the
per-condition costs by ``--target`` conditions per task (385: a net win's 95% interval at most +-0.10 for any
outcome mix; 601: extend, whose text_alignment covers half its conditions) and by ``--systems`` rated systems
(tiny: 5 classical + base + static + dynamic, minus ours = 7), and prints the table with the machine. Linear in
conditions: every part is a loop over conditions (the judge and the sampler in fixed batches).
``--judge-per-task N --judge-all K`` projects the benchmark's `judge_per_task`: the judge rates K systems (the promotion
gate's opponents: base, and the champion once there is one) on every condition and the others on the first N per task.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.benchlib import REPO, machine, machine_line  # noqa: E402
from steps.paths import ArtifactPaths  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    tiny = ArtifactPaths(REPO, "tiny")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", default=str(tiny.benchmark))
    ap.add_argument("--base-dir", default=str(tiny.foundations / "base"))
    ap.add_argument("--judge-dir", default=str(tiny.foundations / "judge"))
    ap.add_argument("--per-task", type=int, default=50)
    ap.add_argument("--systems", type=int, default=7, help="competitor systems the report rates ours against")
    ap.add_argument("--models", type=int, default=3, help="model systems sampled (base, static, dynamic)")
    ap.add_argument("--target", type=int, nargs="+", default=[400], help="conditions per task (tiny: 390/420/390)")
    ap.add_argument("--judge-per-task", type=int, default=0,
                    help="the judge rates systems beyond --judge-all on the first N conditions per task (0: all)")
    ap.add_argument("--judge-all", type=int, default=1, help="systems the judge rates on every condition")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)

    import tempfile

    from steps.evaluation.benchmark import annotator_ratings, judge_ratings, limit, load_items, pasted_outputs
    from steps.evaluation.competitors import CLASSICAL_TASKS, available_classical, read_conditions, run_model
    from steps.evaluation.report import sample_grid
    from steps.io import read_mask, read_rgb
    from steps.judge.train import trained_with_source
    from steps.models.judge import Judge
    from steps.models.policy import load_fill_pipeline
    from steps.runtime import setup

    setup(threads=args.threads)
    m = machine()
    conditions = limit(read_conditions(args.benchmark), args.per_task)
    n = len(conditions)
    items = load_items(conditions, Path(args.benchmark))
    times: dict[str, float] = {}

    def timed(name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - t0
        print(f"{name}: {times[name]:.1f} s", flush=True)
        return out

    classical = available_classical()
    for system, fn in classical.items():
        chosen = [c for c in conditions if c.task in CLASSICAL_TASKS[system]]
        timed(f"classical {system}", lambda fn=fn, chosen=chosen: [fn(read_rgb(c.image), read_mask(c.mask))
                                                                   for c in chosen])
    with tempfile.TemporaryDirectory() as tmp:
        pipe = timed("load the base pipeline", lambda: load_fill_pipeline(args.base_dir))
        timed("one model system: sampling", lambda: run_model("base", args.base_dir, conditions, tmp, pipe=pipe))
        from steps.evaluation.competitors import load_outputs

        raw = load_outputs(Path(tmp) / "base", conditions)
    ours = pasted_outputs(items, raw)
    theirs = {"other": {it.condition.id: it.image for it in items}}  # a stand-in system: the cost does not depend on it
    timed("one system: simulated annotators", lambda: annotator_ratings(items, ours, theirs, 0.02))
    judge = timed("load the judge", lambda: Judge.load(args.judge_dir).eval())
    timed("one system: judge, both orders", lambda: judge_ratings(judge, items, ours, theirs, 32,
                                                                   trained_with_source(args.judge_dir)))
    with tempfile.TemporaryDirectory() as tmp:
        timed("grids (3 tasks)", lambda: [sample_grid(items, {"ours": ours, **theirs}, t, 4, Path(tmp) / f"{t}.png", "x")
                                          for t in ("fill", "extend", "removal")])

    per_cond = {
        "classical competitors (all)": sum(v for k, v in times.items() if k.startswith("classical")) / n,
        f"model systems' sampling (x{args.models})": args.models * times["one model system: sampling"] / n,
        f"simulated annotators (x{args.systems} systems, pasted + raw)":
            2 * args.systems * times["one system: simulated annotators"] / n,
        f"judge ratings (x{args.systems} systems)": args.systems * times["one system: judge, both orders"] / n,
    }
    targets = " | ".join(f"at {t}/task (s)" for t in args.target)
    rows = [f"| part | measured on {n} conditions (s) | per condition (ms) | {targets} |",
            "|---|---|---|" + "---|" * len(args.target)]
    for k, v in times.items():
        rows.append(f"| {k} | {v:.1f} | {1000 * v / n:.1f} | |" + " |" * (len(args.target) - 1))
    judge_key = f"judge ratings (x{args.systems} systems)"
    if args.judge_per_task:
        judge_key = (f"judge ratings ({args.judge_all} system(s) on all, {args.systems - args.judge_all} on the first "
                     f"{args.judge_per_task}/task)")
        per_cond[judge_key] = per_cond.pop(f"judge ratings (x{args.systems} systems)")

    def projected(part: str, v: float, per_task: int) -> float:
        """Seconds of this part at ``per_task`` conditions per task (v: its cost per condition, all systems)."""
        if part != judge_key or not args.judge_per_task:
            return v * 3 * per_task
        one = v / args.systems  # one system, one condition
        return one * 3 * (args.judge_all * per_task + (args.systems - args.judge_all) * min(args.judge_per_task, per_task))

    total = {t: 0.0 for t in args.target}
    for k, v in per_cond.items():
        cells = []
        for t in args.target:
            s = projected(k, v, t)
            total[t] += s
            cells.append(f"{s:.0f}")
        rows.append(f"| **{k}** | | {1000 * v:.1f} | " + " | ".join(cells) + " |")
    now = sum(per_cond.values()) * n
    rows.append(f"| **total, the benchmark split** | {now:.0f} (now, {n // 3}/task) | | "
                + " | ".join(f"{total[t]:.0f} (+{total[t] - now:.0f})" for t in args.target) + " |")
    markdown = "\n".join(rows)
    print(f"\n{machine_line(m)}\n\n{markdown}")
    result = {"machine": m, "command": "python bench/evaluation/benchmark_cost.py " + " ".join(argv or sys.argv[1:]),
              "n_conditions": n, "seconds": times, "per_condition_s": per_cond,
              "projected_s": {str(t): total[t] for t in args.target}, "now_s": now, "markdown": markdown}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
