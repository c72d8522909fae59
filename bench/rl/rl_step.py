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

Writes bench/results/rl_step.json and the generated block of docs/BENCHMARKS.md (``--no-doc``: not).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.benchlib import (
    REPO,
    Phases,
    TimedTokenizer,
    TimedTransformer,
    machine,
    machine_line,
    matmul_rate,
    median,
    table,
    timed,
    write_section,
)
from steps.paths import ArtifactPaths

# Model compute: what the goal's "sum of its model-compute parts" adds up.
COMPUTE = [
    "reference rollout: transformer (T calls, no grad)",
    "reference rollout: VAE decode (no grad)",
    "policy partial rollout: transformer (t calls, no grad)",
    "grad step: transformer forward",
    "grad step: VAE decode forward",
    "judge: vision tower forward",
    "judge: language model forward",
    "backward: judge",
    "backward: VAE decoder",
    "backward: transformer",
    "optimizer: clip + AdamW + EMA",
    "conditions: batch (cached select, or CLIP + T5 + VAE encode)",
]
OVERHEAD = [
    "judge: image preprocessing (normalise + patchify)",
    "judge: query text (chat template + tokenizer)",
    "logging: MLflow log_batch",
    "other: draws, noises, schedulers, metrics, Python",
]
JUDGE = [
    "judge: vision tower forward",
    "judge: language model forward",
    "backward: judge",
    "judge: image preprocessing (normalise + patchify)",
    "judge: query text (chat template + tokenizer)",
]
VARIANTS = ("after", "before", "no_cache")
# operator names counted as dense kernels in the profile
DENSE = ("mm", "addmm", "bmm", "convolution", "conv", "scaled_dot_product", "flash_attention", "linear")


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


def instrument(recipe, phases: Phases, banks: dict) -> None:
    """Wrap the recipe's model calls (instance attributes only: the classes are untouched)."""
    import steps.models.judge_preprocess as jp

    recipe.policy_forward = TimedTransformer(
        recipe.policy_forward,
        phases,
        "policy partial rollout: transformer (t calls, no grad)",
        "grad step: transformer forward",
        mark="transformer_out",
    )
    recipe.base_reference = TimedTransformer(
        recipe.base_reference, phases, "reference rollout: transformer (T calls, no grad)", "unexpected"
    )
    vae = recipe.pipe.vae
    vae_decode = vae.decode

    def decode(*args, **kwargs):
        import torch

        grad = torch.is_grad_enabled()
        name = "grad step: VAE decode forward" if grad else "reference rollout: VAE decode (no grad)"
        with phases.span(name):
            out = vae_decode(*args, **kwargs)
        if grad and out[0].requires_grad:
            out[0].register_hook(lambda g: phases.mark("vae_out"))
        return out

    vae.decode = decode
    judge = recipe.judge
    judge.model.forward = timed(phases, judge.model.forward, "judge: language model forward")
    inner = judge.model.model
    inner.get_image_features = timed(phases, inner.get_image_features, "judge: vision tower forward")
    jp.preprocess = timed(phases, jp.preprocess, "judge: image preprocessing (normalise + patchify)")
    text = "judge: query text (chat template + tokenizer)"
    judge.prompt = timed(phases, judge.prompt, text)
    judge.tokenizer = TimedTokenizer(judge.tokenizer, phases, text)
    recipe.pair.encode_text = timed(phases, recipe.pair.encode_text, text)
    for bank in banks.values():
        bank.batch = timed(phases, bank.batch, "conditions: batch (cached select, or CLIP + T5 + VAE encode)")

    acc = recipe.accelerator
    backward = acc.backward

    def split_backward(loss, **kwargs):
        start = phases.clock()
        backward(loss, **kwargs)
        end = phases.clock()
        m = phases.marks
        if "vae_out" in m and "transformer_out" in m:
            phases.add("backward: judge", m["vae_out"] - start)
            phases.add("backward: VAE decoder", m["transformer_out"] - m["vae_out"])
            phases.add("backward: transformer", end - m["transformer_out"])
        else:
            phases.add("backward: unsplit", end - start)

    acc.backward = split_backward
    opt = "optimizer: clip + AdamW + EMA"
    acc.clip_grad_norm_ = timed(phases, acc.clip_grad_norm_, opt)
    recipe.optimizer.step = timed(phases, recipe.optimizer.step, opt)
    recipe.optimizer.zero_grad = timed(phases, recipe.optimizer.zero_grad, opt)
    recipe.ema.update = timed(phases, recipe.ema.update, opt)


def use(recipe, variant: str, banks: dict) -> None:
    recipe.scorer = recipe.judge if variant == "before" else recipe.pair
    recipe.bank = banks["uncached" if variant == "no_cache" else "cached"]


def step_key(recipe, step: int) -> tuple[str, int, int]:
    """(task, t_index, judge rows): what fixes the shapes, hence the FLOPs, of one step."""
    from steps.rl.rollout import draw_step
    from steps.world import dimensions_for

    cfg = recipe.cfg
    draw = draw_step(cfg.seed, step, recipe.rank, cfg.task_probs, recipe.bank.sizes, cfg.batch_size,
                     cfg.t_range, cfg.grad_accum)  # fmt: skip
    samples = recipe.bank.samples[draw.task]
    rows = sum(len(dimensions_for(draw.task, samples[int(i)].prompt)) for i in draw.indices[0])
    return draw.task, draw.t_index, rows


def run(args) -> dict:
    from steps.runtime import setup

    setup(threads=args.threads)
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from steps.data.datasets import load_samples
    from steps.rl.config import RLConfig
    from steps.rl.guard import RewardHackingError
    from steps.rl.report import save_sample_grid
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

    tracker = Tracker(f"sqlite:///{work / 'mlflow.db'}", root=work)
    run_id = tracker.start_run("tiny", "bench_rl_step")

    def one(variant: str, step: int) -> dict:
        use(recipe, variant, banks)
        phases.take()
        t0 = time.perf_counter()
        metrics = recipe.train_step(step)
        recipe.history.append({"step": step, "step_seconds": metrics["step_seconds"]})
        with phases.span("logging: MLflow log_batch"):
            tracker.log_metrics(run_id, metrics, step)
        whole = time.perf_counter() - t0
        parts = phases.take()
        named = sum(parts.values())
        parts["other: draws, noises, schedulers, metrics, Python"] = whole - named
        return {"variant": variant, "step": step, "whole": whole, "parts": parts}

    first = 1
    for variant in VARIANTS:
        for s in range(first, first + args.warmup):
            one(variant, s)
    first += args.warmup
    records = []
    for i, s in enumerate(range(first, first + args.steps)):
        order = VARIANTS[i % 3 :] + VARIANTS[: i % 3]
        for variant in order:
            rec = one(variant, s)
            rec["key"] = step_key(recipe, s)
            records.append(rec)
        if i == args.steps // 2:
            rates.append(matmul_rate())

    # periodic work, amortised over its cadence (tiny: every 50 steps)
    periodic = defaultdict(list)
    use(recipe, "after", banks)
    for r in range(args.periodic_reps):
        t = time.perf_counter()
        recipe.save_checkpoint(10**5 + r)
        periodic["checkpoint (safetensors + optimizer + RNG, atomic rename)"].append(time.perf_counter() - t)
        t = time.perf_counter()
        save_sample_grid(*recipe.last_batch, work / "grids" / f"{r}.png", "bench")
        periodic["sample grid (PNG)"].append(time.perf_counter() - t)
    guard = {"after": [], "before": []}
    for r in range(max(2, args.periodic_reps - 1)):
        for variant in ("before", "after") if r % 2 else ("after", "before"):
            use(recipe, variant, banks)
            t = time.perf_counter()
            try:
                recipe.guard_step(first + args.steps + r)
            except RewardHackingError:
                pass
            guard[variant].append(time.perf_counter() - t)
    periodic["reward-hacking guard (held-out samples + judge + world scores)"] = guard["after"]
    cadence = {
        "checkpoint (safetensors + optimizer + RNG, atomic rename)": cfg.checkpoint_every,
        "sample grid (PNG)": cfg.sample_every,
        "reward-hacking guard (held-out samples + judge + world scores)": cfg.guard_every,
    }

    # how often a condition comes back in a whole tiny run (what a reference-image cache could reuse)
    from steps.rl.rollout import draw_step

    run_steps = RLConfig.for_profile("tiny").steps
    seen, rollouts = set(), 0
    for s in range(1, run_steps + 1):
        d = draw_step(cfg.seed, s, 0, cfg.task_probs, cached.sizes, cfg.batch_size, cfg.t_range)
        seen.update((d.task, int(i)) for i in d.indices[0])
        rollouts += len(d.indices[0])
    reuse = {"steps": run_steps, "rollouts": rollouts, "distinct": len(seen)}

    # the optimizer: torch's CPU default (a loop over tensors) vs fused, same params and grads, interleaved
    params = list(recipe.params.values())
    for q in params:
        q.grad = torch.randn_like(q)
    optimizers = {
        "default": torch.optim.AdamW(params, lr=0.0, fused=False),
        "fused": torch.optim.AdamW(params, lr=0.0, fused=True),
    }
    adamw = {k: [] for k in optimizers}
    n_tensors = len(params)
    for r in range(40):
        for k in sorted(optimizers, reverse=bool(r % 2)):
            t = time.perf_counter()
            optimizers[k].step()
            adamw[k].append(time.perf_counter() - t)
    for q in params:
        q.grad = None

    # where the step's CPU time goes by operator (torch.profiler, self time; the profiler adds overhead)
    use(recipe, "after", banks)
    ops: dict[str, float] = defaultdict(float)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for s in range(first, first + min(args.steps, 6)):
            recipe.train_step(s)
    for ev in prof.key_averages():
        ops[ev.key] += ev.self_cpu_time_total / 1e6

    # FLOPs: once per (variant, task, t, judge rows) -- the shapes, hence the counts, are fixed by these
    flops: dict[tuple, dict[str, float]] = {}
    for rec in records:
        key = (rec["variant"], *rec["key"])
        if key in flops:
            continue
        use(recipe, rec["variant"], banks)
        with FlopCounterMode(display=False) as counter:
            phases.clock = counter.get_total_flops
            phases.take()
            recipe.train_step(rec["step"])
            parts = phases.take()
            parts["total"] = counter.get_total_flops()
        phases.clock = time.perf_counter
        flops[key] = parts
    rates.append(matmul_rate())
    small_rate = matmul_rate(8 * 88, 128, 512, reps=20)  # a tiny-transformer-shaped matmul
    for rec in records:
        rec["flops"] = flops[(rec["variant"], *rec["key"])]

    shutil.rmtree(work, ignore_errors=True)
    params = {
        "transformer": sum(p.numel() for p in recipe.transformer.parameters()),
        "vae": sum(p.numel() for p in recipe.pipe.vae.parameters()),
        "judge": sum(p.numel() for p in recipe.judge.model.parameters()),
    }
    return {
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
        "periodic": dict(periodic),
        "cadence": cadence,
        "guard_seconds": guard,
        "adamw_step_seconds": adamw,
        "reference_reuse": reuse,
        "n_adamw_tensors": n_tensors,
        "op_self_seconds": dict(sorted(ops.items(), key=lambda kv: -kv[1])[:40]),
        "op_total_seconds": sum(ops.values()),
        "op_dense_seconds": sum(v for k, v in ops.items() if any(d in k for d in DENSE)),
        "op_profile_steps": min(args.steps, 6),
        "torch_threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------- report


def ms(x: float) -> str:
    return f"{1000 * x:.1f}"


def summarise(result: dict) -> dict:
    recs = result["records"]
    by = defaultdict(list)
    for r in recs:
        by[(r["variant"], r["key"][0])].append(r)
        by[(r["variant"], "all")].append(r)
    amort = sum(median(v) / result["cadence"][k] for k, v in result["periodic"].items())
    matched = defaultdict(dict)
    for r in recs:
        matched[r["step"]][r["variant"]] = r
    return {"by": by, "amortised": amort, "matched": matched}


def compute_of(rec: dict) -> float:
    return sum(rec["parts"].get(k, 0.0) for k in COMPUTE)


def judge_of(rec: dict) -> float:
    return sum(rec["parts"].get(k, 0.0) for k in JUDGE)


def markdown(result: dict) -> str:
    s = summarise(result)
    by, amort, matched = s["by"], s["amortised"], s["matched"]
    m = result["machine"]
    rate = median(result["matmul_1024_flops_per_s"])
    tasks = ["fill", "extend", "removal", "all"]
    cfg = result["config"]
    out = [
        "### Inside one RL step (bench/rl/rl_step.py)",
        "",
        f"Measured {machine_line(m)}.",
        f"Command: `.venv/bin/python {result['command']}`.",
        f"Models: transformer {result['params']['transformer'] / 1e6:.2f} M params, VAE "
        f"{result['params']['vae'] / 1e6:.2f} M, judge {result['params']['judge'] / 1e6:.2f} M; batch "
        f"{cfg['batch_size']}, T={cfg['denoise_steps']}, t in {cfg['t_range']}, static reference. "
        f"Inputs: `{result['inputs']['base_dir']}`, `{result['inputs']['judge_dir']}`, "
        f"`{result['inputs']['train_dir']}` ({result['n_train_conditions']} conditions).",
        "",
        "All times are medians over the steps of that task (n in the header); every step ran in every "
        "variant (matched: same task, t, conditions and noises), variants in rotating order. The "
        "breakdown's rows are medians per row, so they need not add up to the whole-step median.",
        "",
    ]
    for variant, title in (
        ("after", "now (PairJudge, conditions cached)"),
        ("before", "before (judge row by row)"),
    ):
        header = ["phase (ms/step)"] + [f"{t} (n={len(by[(variant, t)])})" for t in tasks]
        rows = []
        for name in COMPUTE + OVERHEAD:
            vals = [median(r["parts"].get(name, 0.0) for r in by[(variant, t)]) for t in tasks]
            if max(vals) < 5e-5:
                continue
            rows.append([("" if name in COMPUTE else "*overhead:* ") + name] + [ms(v) for v in vals])
        rows.append(
            ["**sum of model-compute parts**"]
            + [f"**{ms(median(compute_of(r) for r in by[(variant, t)]))}**" for t in tasks]
        )
        rows.append(
            ["**whole step (train_step + log)**"]
            + [f"**{ms(median(r['whole'] for r in by[(variant, t)]))}**" for t in tasks]
        )
        rows.append(
            ["whole / sum of compute (median of per-step ratios)"]
            + [f"{median(r['whole'] / compute_of(r) for r in by[(variant, t)]):.3f}" for t in tasks]
        )
        rows.append(
            [f"whole + amortised periodic work ({ms(amort)} ms/step) / compute"]
            + [f"{median((r['whole'] + amort) / compute_of(r) for r in by[(variant, t)]):.3f}" for t in tasks]
        )
        out += [f"#### Breakdown, {title}", "", table(header, rows), ""]

    out += ["#### Periodic work (amortised over its cadence)", ""]
    rows = []
    for k, v in result["periodic"].items():
        c = result["cadence"][k]
        rows.append([k, f"{ms(median(v))} (n={len(v)})", c, ms(median(v) / c)])
    out += [table(["work", "ms per call (median)", "every N steps", "ms/step amortised"], rows), ""]

    # before/after ratios on matched steps
    def ratio_rows(a: str, b: str, fn, label: str):
        rows = []
        for t in tasks:
            rs = [
                fn(v[a]) / fn(v[b])
                for v in matched.values()
                if a in v and b in v and (t == "all" or v[a]["key"][0] == t)
            ]
            if rs:
                rows.append([label, t, len(rs), f"{median(rs):.2f}", f"{min(rs):.2f} - {max(rs):.2f}"])
        return rows

    rows = ratio_rows("before", "after", lambda r: r["whole"], "whole step: before / after")
    rows += ratio_rows("before", "after", judge_of, "judge fwd + bwd + inputs: before / after")
    rows += ratio_rows("no_cache", "after", lambda r: r["whole"], "whole step: conditions per batch / cached")
    g = result["guard_seconds"]
    if g["before"] and g["after"]:
        gr = [b / a for b, a in zip(g["before"], g["after"])]
        rows.append(["guard evaluation: before / after", "all 3 tasks", len(gr), f"{median(gr):.2f}",
                     f"{min(gr):.2f} - {max(gr):.2f}"])  # fmt: skip
    out += [
        "#### Before / after, same run, matched steps",
        "",
        table(["ratio", "task", "n", "median", "range"], rows),
        "",
    ]
    text = "judge: query text (chat template + tokenizer)"
    batch = cfg["batch_size"]
    rows = []
    for variant in ("before", "after"):
        for t in tasks:
            rs = by[(variant, t)]
            tx = [r["parts"].get(text, 0.0) for r in rs]
            rows.append(
                [variant, t, len(rs), ms(median(judge_of(r) for r in rs)),
                 ms(median(judge_of(r) / (r["key"][2] / batch) for r in rs)), ms(median(tx)),
                 f"{100 * median(x / judge_of(r) for x, r in zip(tx, rs)):.1f} %",
                 f"{100 * median(x / r['whole'] for x, r in zip(tx, rs)):.1f} %"]
            )  # fmt: skip
    out += [
        "#### The judge per step (vision + language model forward, backward, preprocessing, query text)",
        "",
        "Per dimension = the judge's time / (judge rows / batch): fill asks 4 dimensions per sample, "
        "extend 3 or 4, removal 1.",
        "",
        table(
            [
                "variant",
                "task",
                "n",
                "judge ms/step",
                "ms per dimension",
                "query text ms/step",
                "query text / judge",
                "query text / step",
            ],
            rows,
        ),  # fmt: skip
        "",
    ]
    ref = result["reference_reuse"]
    ref_ms = median(
        r["parts"].get(COMPUTE[0], 0.0) + r["parts"].get(COMPUTE[1], 0.0) for r in by[("after", "all")]
    )
    out += [
        f"Reference images: the reference rollout costs {ms(ref_ms)} ms/step (T transformer calls + decode, "
        f"median). Over a {ref['steps']}-step tiny run the step draws ask for {ref['rollouts']} reference "
        f"images of {ref['distinct']} distinct conditions (counted with `draw_step`), so even a cache that "
        f"froze one reference image per condition (fixed noise e1, which Algorithm 1 does not allow) would "
        f"skip only {100 * (1 - ref['distinct'] / ref['rollouts']):.0f} % of the rollouts.",
        "",
    ]
    cond = "conditions: batch (cached select, or CLIP + T5 + VAE encode)"
    c_on = median(r["parts"].get(cond, 0.0) for r in by[("after", "all")])
    c_off = median(r["parts"].get(cond, 0.0) for r in by[("no_cache", "all")])
    out += [
        f"Condition cache: one batch costs {ms(c_on)} ms cached vs {ms(c_off)} ms encoded (medians, "
        f"n={len(by[('after', 'all')])}); building the cache for all {result['n_train_conditions']} train "
        f"conditions took {result['condition_bank_seconds']:.1f} s once (recipe setup in total "
        f"{result['setup_seconds']:.1f} s), i.e. it pays for itself after "
        f"{result['condition_bank_seconds'] / max(c_off - c_on, 1e-9):.0f} steps.",
        "",
    ]

    a = result["adamw_step_seconds"]
    ar = [d / f for d, f in zip(a["default"], a["fused"])]
    out += [
        f"Optimizer: one AdamW step over the {result['n_adamw_tensors']} trainable tensors takes "
        f"{ms(median(a['default']))} ms with torch's CPU default (a Python loop over tensors) and "
        f"{ms(median(a['fused']))} ms fused (n={len(ar)} each, interleaved; ratio {median(ar):.2f}); "
        "the recipe now builds it fused.",
        "",
    ]

    # operators
    ops = result["op_self_seconds"]
    total, dense_s = result["op_total_seconds"], result["op_dense_seconds"]
    rows = [[f"`{k}`", f"{100 * v / total:.1f} %"] for k, v in list(ops.items())[:14]]
    out += [
        f"#### Operators (torch.profiler self CPU time over {result['op_profile_steps']} steps, now)",
        "",
        f"Dense kernels (matmul, convolution, attention: names containing {', '.join(DENSE)}) take "
        f"{100 * dense_s / total:.1f} % of the self time; the rest is element-wise and bookkeeping work "
        "(normalisation, rotary embeddings, GELU, copies, reshapes) that runs far below the matmul rate.",
        "",
        table(["operator", "share of self CPU time"], rows),
        "",
    ]

    # FLOPs
    rows = []
    for variant in ("after", "before"):
        for t in tasks:
            rs = by[(variant, t)]
            f = [r["flops"]["total"] for r in rs]
            ach = [r["flops"]["total"] / r["whole"] for r in rs]
            rows.append(
                [variant, t, len(rs), f"{median(f) / 1e9:.2f}", f"{median(ach) / 1e9:.2f}",
                 f"{100 * median(ach) / rate:.1f} %"]
            )  # fmt: skip
    rates = ", ".join(f"{r / 1e9:.1f}" for r in result["matmul_1024_flops_per_s"])
    out += [
        "#### FLOPs (torch.utils.flop_counter.FlopCounterMode over one train_step: forward + backward)",
        "",
        f"fp32 1024x1024 matmul on {result['torch_threads']} thread, same process: {rates} GFLOP/s "
        f"(start, middle, end; median {rate / 1e9:.1f}); a tiny-transformer-shaped matmul "
        f"(704x128 @ 128x512): {result['matmul_704x128x512_flops_per_s'] / 1e9:.1f} GFLOP/s.",
        "",
        table(
            ["variant", "task", "n", "GFLOP/step (median)", "achieved GFLOP/s (median)", "of 1024 matmul"],
            rows,
        ),
        "",
    ]
    rows = []
    for name in COMPUTE:
        recs = by[("after", "all")]
        fl = sum(r["flops"].get(name, 0.0) for r in recs)
        tm = sum(r["parts"].get(name, 0.0) for r in recs)
        if fl <= 0 or tm <= 0:
            continue
        rows.append(
            [name, f"{fl / len(recs) / 1e9:.3f}", f"{fl / tm / 1e9:.2f}", f"{100 * fl / tm / rate:.1f} %"]
        )
    out += [
        "Per phase, now (all steps: total FLOPs / total time):",
        "",
        table(["phase", "GFLOP/step (mean)", "GFLOP/s", "of 1024 matmul"], rows),
    ]
    return "\n".join(out)


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
