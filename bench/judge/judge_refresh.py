"""Refresh the judge with labelled samples of the RL policy (one round of iterated reward modelling).

    python bench/judge/judge_refresh.py --checkpoint outputs/tiny/policy/static_checkpoints/step_0000050 \\
        --work /tmp/refresh            # then RL again with --set judge_dir=/tmp/refresh/judge

When RL hacks the judge (docs/ABLATIONS.md §3), the standard remedy is to show the annotators what the
policy now produces and retrain the reward model on it. This script does one round on the synthetic world:
1. samples ``--per-set`` images from the base AND from the checkpoint (full sampling, fresh seeds) for every
   condition of ``--tasks`` that has a candidate set, and appends them to that set (the other sets are
   kept as they are) -- a new candidates folder under ``--work``;
2. the SIMULATED annotators label the enlarged sets exactly as before (steps.judge.annotate: best and worst per
   dimension, near-ties dropped, 10 % flips);
3. the judge is fine-tuned from ``--judge-dir`` on the new pairs (steps.judge.train.train_judge, ``--steps``);
4. reports, for the old and the refreshed judge: held-out agreement on the new pairs (cells of ``--tasks``),
   and on ``--n-bench`` benchmark conditions of each task the judge's mean P(Yes | checkpoint sample first,
   base sample second) over both orders (0.5 = no preference) with the world's truth beside it.
Writes ``--work``/report.json and prints a table. The labels are SIMULATED.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from steps.paths import TINY  # noqa: E402


def enlarged_candidates(args, base_pipe, ckpt_pipe, samples: dict, work: Path, sample) -> Path:
    """A candidates folder: the original sets, plus base and checkpoint samples in the sets of ``--tasks``."""
    from PIL import Image

    src = Path(args.candidates)
    out = work / "candidates"
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = [json.loads(line) for line in (src / "candidates.jsonl").read_text().splitlines() if line.strip()]
    chosen = [rec for rec in lines if rec["task"] in args.tasks]
    picked = [samples[rec["condition_id"]] for rec in chosen]
    extra: dict[str, list[tuple[str, dict]]] = {rec["condition_id"]: [] for rec in chosen}
    # a tag per refresh round (the checkpoint): names and seeds differ from an earlier round's additions
    tag = hashlib.md5(str(Path(args.checkpoint).resolve()).encode()).hexdigest()[:8]
    for who, pipe in (("base", base_pipe), ("policy", ckpt_pipe)):
        for k in range(args.per_set):
            seed = int(tag, 16) % 100_000 + 17 * k + (500_000 if who == "policy" else 0)
            images = sample(pipe, picked, seed, args.num_steps)
            for rec, image in zip(chosen, images):
                name = f"images/{rec['condition_id']}-{who}{k}-{tag}.png"
                if name in rec["candidates"] or (out / name).exists():
                    raise FileExistsError(f"{out / name}: this checkpoint's samples were added already")
                Image.fromarray(image).save(out / name)
                extra[rec["condition_id"]].append((name, {"source": who, "checkpoint": args.checkpoint}
                                                   if who == "policy" else {"source": who}))
    with open(out / "candidates.jsonl", "w") as f:
        for rec in lines:
            for path in rec["candidates"]:
                dst = out / path
                if not dst.exists():
                    os.link(src / path, dst)
            added = extra.get(rec["condition_id"], [])
            rec = {**rec, "candidates": rec["candidates"] + [n for n, _ in added],
                   "sampling": rec.get("sampling", []) + [how for _, how in added]}
            f.write(json.dumps(rec) + "\n")
    return out


def preference_for_checkpoint(judge, base_out, ckpt_out, samples, show_source: bool) -> dict[str, float]:
    """Per task/dimension: mean over conditions of P(checkpoint better), both orders averaged."""
    from steps.models.judge import preference
    from steps.vocabulary import dimensions_for

    if show_source and not judge.shows_source:  # asked with the source, as it was trained
        judge.record = {**judge.record, "config": {**judge.record.get("config", {}), "show_source": True}}
    rows = [(b, c, s, dim) for b, c, s in zip(base_out, ckpt_out, samples) for dim in dimensions_for(s.task, s.prompt)]
    forward, backward = judge.compare([r[1] for r in rows], [r[0] for r in rows], [r[2].task for r in rows],
                                      [r[3] for r in rows], [r[2].prompt for r in rows],
                                      [r[2].image for r in rows], [r[2].mask for r in rows])
    out: dict[str, list[float]] = {}
    for r, p in zip(rows, preference(forward, backward)):
        out.setdefault(f"{r[2].task}/{r[3]}", []).append(float(p))
    return {k: float(np.mean(v)) for k, v in sorted(out.items())}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="an RL checkpoint folder (policy*.safetensors)")
    ap.add_argument("--weights", choices=("policy", "ema"), default="policy")
    ap.add_argument("--base-dir", default=str(TINY.base_model))
    ap.add_argument("--judge-dir", default=str(TINY.judge))
    ap.add_argument("--candidates", default=str(TINY.candidates))
    ap.add_argument("--train-dir", default=str(TINY.train))
    ap.add_argument("--benchmark", default=str(TINY.benchmark))
    ap.add_argument("--tasks", nargs="+", default=["removal"])
    ap.add_argument("--per-set", type=int, default=2, help="base and checkpoint samples added to each set")
    ap.add_argument("--num-steps", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning steps of the judge")
    ap.add_argument("--n-bench", type=int, default=50, help="benchmark conditions per task for the preference")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", default="tiny", help="judge size of the refreshed judge's config (smoke | tiny)")
    ap.add_argument("--work", required=True)
    args = ap.parse_args(argv)

    import importlib.util

    from bench.benchlib import step_config
    from steps.data.datasets import load_samples
    from steps.judge.agreement import PAPER_THRESHOLDS, agreement_table, load_preference_data
    from steps.judge.annotate import AnnotateConfig, simulate_pairs
    from steps.judge.train import JudgeConfig, train_judge, trained_with_source
    from steps.models.judge import Judge
    from steps.models.policy import load_fill_pipeline
    from steps.runtime import setup

    spec = importlib.util.spec_from_file_location("checkpoint_samples", Path(__file__).resolve().parents[1] / "rl" / "checkpoint_samples.py")
    ckpt_tools = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ckpt_tools)

    setup(threads=args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    files = ckpt_tools.checkpoint_files(Path(args.checkpoint), args.weights)
    base_pipe, ckpt_pipe = load_fill_pipeline(args.base_dir), load_fill_pipeline(args.base_dir)
    ckpt_tools.load_weights(ckpt_pipe.transformer, files, 0.0)
    samples = {s.id: s for s in load_samples(args.train_dir)}
    candidates = enlarged_candidates(args, base_pipe, ckpt_pipe, samples, work, ckpt_tools.sample)
    simulate_pairs(step_config(AnnotateConfig, args.profile, candidates_dir=str(candidates),
                               train_dir=args.train_dir, out_dir=str(work / "pairs"), noise=0.10))
    show_source = trained_with_source(args.judge_dir)
    cfg = step_config(JudgeConfig, args.profile, init_dir=args.judge_dir, pairs_dir=str(work / "pairs"),
                      train_dir=args.train_dir, out_dir=str(work / "judge"), steps=args.steps,
                      show_source=show_source, threads=args.threads)
    train_judge(cfg)

    data = load_preference_data(cfg.pairs_dir, cfg.train_dir, cfg.heldout_fraction)
    data["heldout"] = [p for p in data["heldout"] if p.task in args.tasks]
    bench = [s for s in load_samples(args.benchmark, limit_per_task=args.n_bench) if s.task in args.tasks]
    base_out = ckpt_tools.sample(base_pipe, bench, 7, args.num_steps)
    ckpt_out = ckpt_tools.sample(ckpt_pipe, bench, 7, args.num_steps)
    truth = {}  # per task/dimension: mean world score of the checkpoint minus the base's
    for task in args.tasks:
        rows = [i for i, s in enumerate(bench) if s.task == task]
        if rows:
            dims = ckpt_tools.compare(base_out[rows], ckpt_out[rows], [bench[i] for i in rows], 0.02)["dimensions"]
            truth.update({f"{task}/{d}": r["checkpoint"] - r["base"] for d, r in dims.items()})
    report = {"checkpoint": args.checkpoint, "command": " ".join(sys.argv), "judges": {}, "truth_gain": truth}
    for name, path in (("old", args.judge_dir), ("refreshed", cfg.out_dir)):
        judge = Judge.load(path).eval()
        table = agreement_table(judge, data, PAPER_THRESHOLDS, show_source)
        report["judges"][name] = {
            "agreement": {k: {"accuracy": r["accuracy"], "n": r["n"]} for k, r in table.items()},
            "p_checkpoint_better": preference_for_checkpoint(judge, base_out, ckpt_out, bench, show_source)}
    report["seconds"] = time.perf_counter() - t0
    (work / "report.json").write_text(json.dumps(report, indent=1))
    print("| judge | cell | held-out agreement (new pairs) | n | P(checkpoint better than base) | truth: checkpoint - base |")
    print("|---|---|---|---|---|---|")
    for name, r in report["judges"].items():
        for cell, a in r["agreement"].items():
            print(f"| {name} | {cell} | {a['accuracy']:.3f} | {a['n']} | {r['p_checkpoint_better'].get(cell, float('nan')):.3f} "
                  f"| {report['truth_gain'].get(cell, float('nan')):+.3f} |")
    print(f"written: {work / 'report.json'} ({report['seconds']:.0f} s); judge: {cfg.out_dir}")
    return report


if __name__ == "__main__":
    main()
