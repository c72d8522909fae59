"""Judge ablations (issue 4): what each ingredient of the reward-model recipe buys, on one fixed dataset.

    python bench/judge/judge_ablations.py --candidates data/tiny/candidates --pretrained outputs/tiny/judge_pretrained \\
        --steps 900 --out bench/results/judge_ablations.json

Variants, each trained with steps.judge.train.train_judge on the same candidate sets and scored on the same
held-out conditions (noisy-label accuracy per task x dimension, and against the noise-free labels):

  baseline        the default recipe (judge_pretrain init, easy-pairs curriculum, 10% label noise, no source)
  source_on       the masked source as a third image
  noise_0/noise_20 label noise 0% / 20% (simulated annotators re-run on the same candidates)
  curriculum_off  no easy ground-truth pairs
  no_pretrain     a freshly initialised judge instead of the judge_pretrain output

Labels are SIMULATED annotators. Results (JSON) go to --out; the table, with the command, date and machine,
replaces the generated block named by --section in docs/ABLATIONS.md (--section "" skips that).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.benchlib import REPO, machine, machine_line, write_section  # noqa: E402
from steps.paths import TINY  # noqa: E402

VARIANTS = {
    "baseline": ({}, 0.10),
    "source_on": ({"show_source": True}, 0.10),
    "noise_0": ({}, 0.0),
    "noise_20": ({}, 0.20),
    "curriculum_off": ({"easy_fraction": 0.0, "easy_prob_late": 0.0}, 0.10),
    "no_pretrain": ({"init_dir": ""}, 0.10),
}


def variant_config(args, name: str, pairs_dir: str, work: Path):
    """One variant's JudgeConfig: the profile's judge section (as the CLI and the judge asset resolve it), the
    ablation's paths and steps, then the variant's overrides."""
    from bench.benchlib import step_config
    from steps.judge.train import JudgeConfig

    values = {"init_dir": args.pretrained, "pairs_dir": pairs_dir, "train_dir": args.train_dir,
              "out_dir": str(work / name), "steps": args.steps, "threads": args.threads}
    return step_config(JudgeConfig, args.profile, VARIANTS[name][0], **values)


def run(args) -> dict:
    from bench.benchlib import step_config
    from steps.judge.agreement import PAPER_THRESHOLDS, agreement_table, load_preference_data
    from steps.judge.annotate import AnnotateConfig, simulate_pairs
    from steps.judge.train import train_judge
    from steps.models.judge import Judge
    from steps.runtime import setup

    setup(threads=args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="judge_ablations_"))
    results = {}
    pairs_for: dict[float, str] = {}
    for name in args.variants:
        overrides, noise = VARIANTS[name]
        if noise not in pairs_for:
            out = work / f"pairs_noise{int(noise * 100)}"
            simulate_pairs(step_config(AnnotateConfig, args.profile, candidates_dir=args.candidates,
                                       train_dir=args.train_dir, out_dir=str(out), noise=noise))
            pairs_for[noise] = str(out)
        cfg = variant_config(args, name, pairs_for[noise], work)
        t0 = time.perf_counter()
        summary = train_judge(cfg)
        seconds = time.perf_counter() - t0
        # every variant is scored on the 10%-noise held-out labels (the gate's labels) AND the clean ones
        data = load_preference_data(pairs_for.get(0.10, pairs_for[noise]), args.train_dir, cfg.heldout_fraction)
        table = agreement_table(Judge.load(cfg.out_dir).eval(), data, PAPER_THRESHOLDS, cfg.show_source)
        results[name] = {"overrides": overrides, "noise": noise, "seconds": seconds,
                         "n_train_pairs": summary["n_train_pairs"],
                         "mean_accuracy": sum(r["accuracy"] for r in table.values()) / len(table),
                         "mean_clean_accuracy": sum(r["clean_accuracy"] or 0 for r in table.values()) / len(table),
                         "cells_passed": sum(r["passed"] for r in table.values()), "table": table}
        print(f"{name}: mean {results[name]['mean_accuracy']:.3f} clean {results[name]['mean_clean_accuracy']:.3f} "
              f"passed {results[name]['cells_passed']}/{len(table)} ({seconds:.0f} s)", flush=True)
    return results


def markdown(results: dict) -> str:
    cells = sorted({c for r in results.values() for c in r["table"]})
    head = "| variant | " + " | ".join(cells) + " | mean | mean (clean labels) | cells passed | s |"
    rows = [head, "|" + "---|" * (len(cells) + 5)]
    for name, r in results.items():
        vals = " | ".join(f"{r['table'][c]['accuracy']:.2f}" if c in r["table"] else "-" for c in cells)
        rows.append(f"| {name} | {vals} | {r['mean_accuracy']:.3f} | {r['mean_clean_accuracy']:.3f} | "
                    f"{r['cells_passed']}/{len(r['table'])} | {r['seconds']:.0f} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", default=str(TINY.candidates))
    ap.add_argument("--train-dir", default=str(TINY.train))
    ap.add_argument("--pretrained", default=str(TINY.judge_pretrained))
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--work", default="", help="folder for pairs and judges (default: a temp folder)")
    ap.add_argument("--out", default="bench/results/judge_ablations.json")
    ap.add_argument("--section", default="judge-ablations", help="generated block in docs/ABLATIONS.md")
    args = ap.parse_args(argv)
    t0 = time.time()
    results = run(args)
    m = machine()
    meta = {"machine": machine_line(m), "command": "python " + " ".join(sys.argv), "wall_s": time.time() - t0}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
    md = markdown(results)
    print(md)
    if args.section:
        write_section(args.section, f"Measured {meta['machine']}; {meta['wall_s'] / 60:.0f} min in all.\n\n"
                      f"```\n{meta['command']}\n```\n\n{md}", REPO / "docs" / "ABLATIONS.md")


if __name__ == "__main__":
    main()
