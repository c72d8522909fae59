"""Where the time of ONE OneReward RL step goes (tiny profile, CPU), and what the removed waste was worth.

    .venv/bin/python bench/rl/rl_step.py --base-dir /tmp/base_tiny/base_model --judge-dir /tmp/judge_tiny2

One recipe (steps.rl.train.OneRewardRecipe, static reference, batch 8, T=8) is set up once; its own
``train_step`` runs, with wrappers around the model calls that time them (and count their FLOPs in a
second pass) -- the code path is the recipe's, nothing is re-implemented:

- transformer calls by role (reference rollout, the policy's no-grad partial rollout, the grad step),
  VAE decodes (reference: no grad; policy: grad), the judge's vision tower and language model,
  its image preprocessing and its query text (chat template + tokenizer), the condition batch;
- ONE backward split by hooks into judge / VAE decoder / transformer backward;
- clip + AdamW + EMA (the lr scheduler's step is in "other": wrapping it would enter its state_dict); the MLflow metric log (a sqlite store, as the pipeline uses) after
  every step (log_every=1); checkpoint, sample grid and reward-hacking guard, each timed separately and
  amortised over their cadence (every 50 steps at tiny).

Variants, run on the SAME steps (same task, t, conditions and noises: `draw_step` is pure in the step
number), in rotating order, so every ratio is a matched, same-process comparison:

- ``after``: the recipe as it is now (PairJudge: each image encoded once per step for all of its judge
  queries, tokenised queries cached; conditions cached);
- ``before``: the judge asked row by row as before (`Judge.p_yes` on one row per sample and dimension);
- ``no_cache``: conditions encoded per batch (RLConfig.cache_conditions=False) with the after judge.

The policy-gradient update (steps/rl/grpo.py, ``update: grpo``) is timed beside them: a `GrpoRecipe` on the same
config and conditions runs its own ``train_step`` on the same step numbers, in the same rotation; a grpo step takes
the same ``batch`` conditions x G samples, so the two are compared per step and per sample.

Writes bench/results/rl_step.json and the generated block of docs/BENCHMARKS.md (``--no-doc``: not).
Layout: bench/rl/step_instrument.py (the phases and their wrappers), bench/rl/step_measure.py (periodic work,
optimizer, operators, FLOPs, the grpo recipe), bench/rl/step_report.py (the markdown), bench/rl/timing.py (per-
update rows, shared with bench/rl/rl_gpu.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.benchlib import REPO, Phases, machine, matmul_rate, write_section  # noqa: E402
from bench.rl import step_measure  # noqa: E402
from bench.rl.step_instrument import DENSE, VARIANTS, instrument, step_key, use  # noqa: E402
from bench.rl.step_report import markdown, update_rows  # noqa: E402
from steps.paths import ArtifactPaths  # noqa: E402

OTHER = "other: draws, noises, schedulers, metrics, Python"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tiny = ArtifactPaths(REPO, "tiny")
    p.add_argument("--base-dir", default=str(tiny.base_model))
    p.add_argument("--judge-dir", default=str(tiny.judge))
    p.add_argument("--train-dir", default=str(tiny.train))
    p.add_argument("--eval-dir", default=str(tiny.benchmark))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=30, help="matched steps (each run once per variant)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--periodic-reps", type=int, default=3, help="checkpoint / grid / guard repetitions")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(REPO / "bench/results/rl_step.json"))
    p.add_argument("--no-doc", action="store_true", help="do not write docs/BENCHMARKS.md")
    p.add_argument("--from-json", default=None, help="re-render the report of a saved result (no run)")
    return p.parse_args(argv)


def run(args) -> dict:
    from steps.runtime import setup

    setup(threads=args.threads)
    import torch

    from steps.data.datasets import load_samples
    from steps.rl.config import RLConfig
    from steps.rl.reward import PairJudge
    from steps.rl.rollout import ConditionBank
    from steps.rl.train import OneRewardRecipe
    from steps.tracking import Tracker

    work = Path(tempfile.mkdtemp(prefix="bench_rl_step_"))
    rates = [matmul_rate()]
    cfg = RLConfig.for_profile(
        "tiny",
        REPO,
        base_dir=args.base_dir,
        judge_dir=args.judge_dir,
        train_dir=args.train_dir,
        eval_dir=args.eval_dir,
        out_dir=str(work / "policy"),
        batch_size=args.batch,
        steps=10**6,
        resume=False,
        guard_patience=10**6,  # the bench times the guard; it must not stop anything
        threads=args.threads,
    )
    t = time.perf_counter()
    recipe = OneRewardRecipe(cfg).setup()
    setup_seconds = time.perf_counter() - t
    recipe.pair = recipe.scorer if isinstance(recipe.scorer, PairJudge) else PairJudge(recipe.judge)
    samples = load_samples(cfg.train_dir)
    t = time.perf_counter()
    cached = ConditionBank(recipe.pipe, samples, cache=True)
    bank_seconds = time.perf_counter() - t
    banks = {"cached": cached, "uncached": ConditionBank(recipe.pipe, samples, cache=False)}
    phases = Phases()
    instrument(recipe, phases, banks)
    grpo, grpo_config = step_measure.grpo_recipe(cfg, work, cached)

    tracker = Tracker(f"sqlite:///{work / 'mlflow.db'}", root=work)
    run_id = tracker.start_run("tiny", "bench_rl_step")

    def one(variant: str, step: int) -> dict:
        stepper = grpo if variant == "grpo" else recipe
        if variant != "grpo":
            use(recipe, variant, banks)
        phases.take()
        t0 = time.perf_counter()
        metrics = stepper.train_step(step)
        stepper.history.append({"step": step, "step_seconds": metrics["step_seconds"]})
        with phases.span("logging: MLflow log_batch"):
            tracker.log_metrics(run_id, metrics, step)
        whole = time.perf_counter() - t0
        parts = phases.take()
        if variant == "grpo":  # the recipe's own split: sampling (no grad) vs the rest of its train_step
            return {"step": step, "whole": whole, "sample_seconds": metrics["grpo/sample_seconds"],
                    "train_step_seconds": metrics["step_seconds"]}
        parts[OTHER] = whole - sum(parts.values())
        return {"variant": variant, "step": step, "whole": whole, "parts": parts}

    rotation = (*VARIANTS, "grpo")
    first = 1
    for variant in rotation:
        for s in range(first, first + args.warmup):
            one(variant, s)
    first += args.warmup
    records, grpo_records = [], []
    for i, s in enumerate(range(first, first + args.steps)):
        for variant in rotation[i % len(rotation) :] + rotation[: i % len(rotation)]:
            rec = one(variant, s)
            rec["key"] = step_key(recipe, s)
            (grpo_records if variant == "grpo" else records).append(rec)
        if i == args.steps // 2:
            rates.append(matmul_rate())

    periodic, guard, cadence = step_measure.periodic_work(recipe, banks, work, first + args.steps,
                                                          args.periodic_reps)
    reuse = step_measure.reference_reuse(cfg, cached.sizes)
    adamw, n_tensors = step_measure.adamw_comparison(recipe)
    profile_steps = range(first, first + min(args.steps, 6))
    ops = step_measure.op_profile(recipe, banks, profile_steps)
    step_measure.record_flops(recipe, banks, phases, records)
    rates.append(matmul_rate())
    small_rate = matmul_rate(8 * 88, 128, 512, reps=20)  # a tiny-transformer-shaped matmul

    shutil.rmtree(work, ignore_errors=True)
    params = {
        "transformer": sum(p.numel() for p in recipe.transformer.parameters()),
        "vae": sum(p.numel() for p in recipe.pipe.vae.parameters()),
        "judge": sum(p.numel() for p in recipe.judge.model.parameters()),
    }
    result = {
        "machine": machine(),
        "command": "bench/rl/rl_step.py " + " ".join(args.argv),
        "config": {k: getattr(cfg, k) for k in ("batch_size", "denoise_steps", "guidance", "lam")}
        | {"t_range": list(cfg.t_range), "reference": cfg.reference, "log_every": cfg.log_every},
        "params": params,
        "inputs": {"base_dir": args.base_dir, "judge_dir": args.judge_dir, "train_dir": args.train_dir},
        "setup_seconds": setup_seconds,
        "condition_bank_seconds": bank_seconds,
        "n_train_conditions": len(samples),
        "matmul_1024_flops_per_s": rates,
        "matmul_704x128x512_flops_per_s": small_rate,
        "records": [{k: (list(v) if k == "key" else v) for k, v in r.items()} for r in records],
        "periodic": periodic,
        "cadence": cadence,
        "guard_seconds": guard,
        "adamw_step_seconds": adamw,
        "reference_reuse": reuse,
        "n_adamw_tensors": n_tensors,
        "op_self_seconds": dict(sorted(ops.items(), key=lambda kv: -kv[1])[:40]),
        "op_total_seconds": sum(ops.values()),
        "op_dense_seconds": sum(v for k, v in ops.items() if any(d in k for d in DENSE)),
        "op_profile_steps": len(profile_steps),
        "torch_threads": torch.get_num_threads(),
        "grpo": {"config": grpo_config,
                 "records": [{k: (list(v) if k == "key" else v) for k, v in r.items()} for r in grpo_records]},
    }
    result["updates"] = update_rows(result)
    return result


def main(argv=None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse(argv)
    args.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
    else:
        result = run(args)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=float))
    text = markdown(result)
    print(text)
    if not args.no_doc:
        print("\nwritten:", write_section("bench/rl/rl_step.py", text))
    return result


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
