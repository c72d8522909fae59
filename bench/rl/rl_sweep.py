"""RL sweeps measured on the validation split: the truth of FULL samples (what users get) against RL steps.

    python bench/rl/rl_sweep.py --work /tmp/sweep --steps 200 --guard-every 20 \\
        --variant default: --variant lora8:lora_rank=8,lr=1e-3 --set reward=oracle

Every variant runs the RL recipe (steps.rl.train, static reference, tiny profile paths unless overridden with
--set) in its own folder with the guard evaluating every ``--guard-every`` steps on the validation split
(``guard_margin`` 1: the guard records, it never stops the run); the table gives, per variant and task, the
world's mean truth of full samples at step 0 (the base), at the best evaluation and at the end, with the
step of the best. ``--set`` applies to every variant, ``--variant name:k=v,k=v`` to one. The whole result
(every evaluation) is saved as JSON with the machine and the command; ``--section`` writes the table into
docs/ABLATIONS.md between generated markers.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def parse_pairs(text: str) -> dict[str, object]:
    import yaml

    out = {}
    for item in filter(None, text.split(",")):
        k, v = item.split("=", 1)
        value = yaml.safe_load(v)
        if isinstance(value, str):  # YAML 1.1 reads 3e-5 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        out[k.strip()] = value
    return out


def task_truth(heldout: dict[str, float]) -> dict[str, float]:
    import numpy as np

    by_task: dict[str, list[float]] = {}
    for key, value in heldout.items():
        if not key.endswith("_psnr"):
            by_task.setdefault(key.split("/")[0], []).append(value)
    return {t: float(np.mean(v)) for t, v in sorted(by_task.items())}


def variant_config(name: str, overrides: dict, args):
    """One variant's RLConfig: the profile's (as the CLI and the policy asset resolve it), the sweep's values,
    then --set and the variant's overrides."""
    from bench.benchlib import step_config
    from steps.rl.config import RLConfig

    values = dict(guard_every=args.guard_every, guard_margin=1.0, steps=args.steps, sample_every=0,
                  checkpoint_every=0, resume=False, out_dir=str(Path(args.work) / name), threads=args.threads)
    overrides = {k: v for k, v in overrides.items() if k != "minutes"}  # the sweep's, not the recipe's
    return step_config(RLConfig, args.profile, {**parse_pairs(args.set), **overrides}, **values)


class TimeUp(Exception):
    """The variant's wall-time budget (--minutes) ran out at an evaluation."""


def evaluation(step: int, metrics: dict) -> dict:
    """One validation evaluation from the metrics the recipe logs (guard/*)."""
    def group(prefix: str) -> dict[str, float]:
        return {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}

    heldout = group("guard/world/") or group("guard/kept/")
    return {"step": step, "truth": task_truth(heldout), "heldout": heldout,
            "raw": task_truth(group("guard/world_raw/") or group("guard/kept_raw/")),
            "reward": group("guard/judge/"),
            "onpolicy": {k.split("/")[0]: v for k, v in group("guard/").items() if k.endswith("onpolicy_agreement")}}


def run_variant(name: str, overrides: dict, args) -> dict:
    from steps.rl.guard import RewardHackingError
    from steps.rl.train import train

    cfg = variant_config(name, overrides, args)
    t0 = time.perf_counter()
    evals: list[dict] = []
    budget = 60 * float(overrides.get("minutes", args.minutes) or 0)

    def log(metrics: dict, step: int) -> None:
        if "guard/heldout_mean" in metrics:  # the recipe logs an evaluation's signals, then its mean
            evals.append(evaluation(step, pending.pop(step, {}) | metrics))
            if budget and time.perf_counter() - t0 > budget:
                raise TimeUp(f"{budget / 60:.1f} min")
        elif any(k.startswith("guard/") for k in metrics):
            pending.setdefault(step, {}).update(metrics)

    pending: dict[int, dict] = {}
    try:
        status = train(cfg, log=log)["status"]
    except RewardHackingError as e:
        status = f"stopped: {e}"
    except TimeUp as e:
        status = f"time budget reached ({e})"
    steps = evals[-1]["step"] if evals else 0
    return {"name": name, "overrides": overrides, "status": status, "seconds": time.perf_counter() - t0,
            "steps": steps, "evals": evals}


def table(results: list[dict]) -> str:
    import numpy as np

    rows = ["| variant | task | truth at step 0 (base) | best (step) | last (step) | change at last | raw change "
            "| judge on-policy agreement (first -> last) | s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        evals = r["evals"]
        if not evals:
            continue
        for task in evals[0]["truth"]:
            series = [(e["step"], e["truth"][task]) for e in evals if task in e["truth"]]
            best = max(series[1:] or series, key=lambda x: x[1])
            raw = [e.get("raw", {}).get(task) for e in (evals[0], evals[-1])]
            raw_change = f"{raw[1] - raw[0]:+.3f}" if None not in raw else ""
            agree = [e.get("onpolicy", {}).get(task) for e in (evals[0], evals[-1])]
            agreement = " -> ".join(f"{a:.2f}" for a in agree if a is not None)
            rows.append(f"| {r['name']} | {task} | {series[0][1]:.3f} | {best[1]:.3f} ({best[0]}) | "
                        f"{series[-1][1]:.3f} ({series[-1][0]}) | {series[-1][1] - series[0][1]:+.3f} | {raw_change} "
                        f"| {agreement} | |")
        mean0 = np.mean(list(evals[0]["truth"].values()))
        meanl = np.mean(list(evals[-1]["truth"].values()))
        rows.append(f"| {r['name']} | **mean** | {mean0:.3f} | | {meanl:.3f} ({evals[-1]['step']}) | "
                    f"{meanl - mean0:+.3f} | | | {r['seconds']:.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    from bench.benchlib import machine, machine_line, write_section

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--profile", default="tiny", help="the profile whose rl section (configs/<profile>.yaml) "
                                                      "every variant starts from")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--guard-every", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", default="", help="k=v,k=v for every variant (e.g. reward=oracle)")
    ap.add_argument("--variant", action="append", default=[], help="name:k=v,k=v (repeatable)")
    ap.add_argument("--minutes", type=float, default=0, help="wall-time budget per variant (stops at the first "
                                                              "evaluation past it; a variant may set minutes=)")
    ap.add_argument("--parallel", type=int, default=1, help="variants run at once, each in its own process "
                                                             "with --threads threads (a many-core machine)")
    ap.add_argument("--out", default="")
    ap.add_argument("--section", default="", help="write the table into docs/ABLATIONS.md under this key")
    args = ap.parse_args(argv)
    variants = [(v.split(":", 1)[0], parse_pairs(v.split(":", 1)[1] if ":" in v else "")) for v in args.variant]
    m = machine()
    command = "python bench/rl/rl_sweep.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    out = Path(args.out or Path(args.work) / "sweep.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []

    def finished(result: dict) -> None:
        results.append(result)
        print(table(results[-1:]), flush=True)  # each variant's rows as it ends; the JSON keeps what finished
        out.write_text(json.dumps({"machine": m, "command": command, "results": results}, indent=2) + "\n")

    todo = variants or [("default", {})]
    if args.parallel > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(args.parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
            for future in as_completed([pool.submit(run_variant, name, ov, args) for name, ov in todo]):
                finished(future.result())
        order = [name for name, _ in todo]
        results.sort(key=lambda r: order.index(r["name"]))
    else:
        for name, ov in todo:
            finished(run_variant(name, ov, args))
    md = f"Measured {machine_line(m)}.\n\n```\n{command}\n```\n\n{table(results)}"
    print(md)
    if args.section:
        write_section(args.section, md, doc=Path(__file__).resolve().parents[2] / "docs" / "ABLATIONS.md")


if __name__ == "__main__":
    main()
