"""Throughput on CPU: judge scoring (pairs/s, batched vs one at a time) and candidate generation (images/s).

    .venv/bin/python bench/judge/throughput.py --base-dir /tmp/base_tiny/base_model --judge-dir /tmp/judge_tiny2 \\
        --pairs-dir /tmp/prefs_tiny

1. Judge scoring, the agreement table's code path (`steps.judge.agreement.pair_correctness`: every pair judged
   in both orders, no grad) on the first ``--pairs`` held-out preference pairs, at batch 1, 8 and 64 (its
   default), interleaved repetitions. Then the RL-shaped question -- ONE image pair asked every dimension
   of its task (fill: 4 queries) -- row by row through `Judge.p_yes` vs `steps.rl.reward.PairJudge`.
2. Candidate generation, `steps.judge.candidates.generate_candidates` itself (PNG files written to a temporary
   folder): the asset's settings (batch 64, randomised steps / guidance / strength) with a breakdown of
   where the time goes, then a batch-size sweep with the sampling fixed (8 steps, guidance 30, strength 1)
   so that every batch size does the same work.

Writes bench/results/throughput.json and the generated block of docs/BENCHMARKS.md (``--no-doc``: not).
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

from bench.benchlib import REPO, Phases, machine, machine_line, median, table, timed, write_section
from steps.paths import ArtifactPaths

GENERATION = ("encode conditions (CLIP + T5 + VAE encode)", "denoise (transformer calls)", "VAE decode")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tiny = ArtifactPaths(REPO, "tiny")
    p.add_argument("--base-dir", default=str(tiny.base_model))
    p.add_argument("--judge-dir", default=str(tiny.judge))
    p.add_argument("--pairs-dir", default=str(tiny.preferences))
    p.add_argument("--train-dir", default=str(tiny.train))
    p.add_argument("--pairs", type=int, default=128, help="held-out pairs scored per repetition")
    p.add_argument("--conditions", type=int, default=64, help="conditions per candidate-generation run")
    p.add_argument("--sweep-conditions", type=int, default=16, help="conditions per batch-size sweep run")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(REPO / "bench/results/throughput.json"))
    p.add_argument("--no-doc", action="store_true")
    return p.parse_args(argv)


def judge_scoring(args) -> dict:
    import numpy as np
    import torch

    from steps.judge.agreement import load_preference_data, pair_correctness
    from steps.models.judge import Judge
    from steps.preferences import judge_query
    from steps.rl.reward import PairJudge
    from steps.world import dimensions_for

    t = time.perf_counter()
    data = load_preference_data(args.pairs_dir, args.train_dir, 0.2)
    load_seconds = time.perf_counter() - t
    judge = Judge.load(args.judge_dir).freeze()
    pairs = data["heldout"][: args.pairs]
    batches = (1, 8, 64)
    pair_correctness(judge, pairs[:8], data["images"], data["samples"], batch=8)  # warm-up
    seconds = {b: [] for b in batches}
    for r in range(args.reps):
        for b in batches if r % 2 == 0 else batches[::-1]:
            t = time.perf_counter()
            pair_correctness(judge, pairs, data["images"], data["samples"], batch=b)
            seconds[b].append(time.perf_counter() - t)

    # RL-shaped: one (first, second) image pair asked all dimensions of its task
    fill = [p for p in pairs if p.task == "fill"][:8] or pairs[:8]
    first = torch.stack([torch.from_numpy(data["images"][p.winner]) for p in fill]).permute(0, 3, 1, 2) / 255
    second = torch.stack([torch.from_numpy(data["images"][p.loser]) for p in fill]).permute(0, 3, 1, 2) / 255
    rows, queries = [], []
    for i, p in enumerate(fill):
        for e in dimensions_for(p.task, p.prompt):
            rows.append(i)
            queries.append(judge_query(p.task, e, p.prompt))
    rows_t = torch.tensor(rows)
    pair = PairJudge(judge)
    ways = {
        "Judge.p_yes, one row per (pair, dimension)": lambda: judge.p_yes(
            first[rows_t], second[rows_t], queries
        ),
        "PairJudge (each image once, cached queries)": lambda: pair.p_yes(first, second, rows_t, queries),
    }
    with torch.no_grad():
        agree = float((ways[next(iter(ways))]() - list(ways.values())[1]()).abs().max())
        multi = {k: [] for k in ways}
        for r in range(4 * args.reps):
            for k in ways if r % 2 == 0 else list(ways)[::-1]:
                t = time.perf_counter()
                ways[k]()
                multi[k].append(time.perf_counter() - t)
    return {
        "n_pairs": len(pairs),
        "data_load_seconds": load_seconds,
        "seconds": {str(b): v for b, v in seconds.items()},
        "multi_query": {
            "image_pairs": len(fill),
            "queries": len(queries),
            "seconds": multi,
            "max_abs_diff_p_yes": agree,
        },
        "judge_params": sum(p.numel() for p in judge.model.parameters()),
        "numpy": np.__version__,
    }


def candidates(args) -> dict:
    import steps.io
    import steps.models.denoise as dn
    import steps.models.policy as policy
    from bench.benchlib import step_config
    from steps.judge.candidates import CandidatesConfig, generate_candidates

    phases = Phases()
    patches = {
        (dn, "encode_conditions"): "encode conditions (CLIP + T5 + VAE encode)",
        (dn, "denoise"): "denoise (transformer calls)",
        (dn, "decode"): "VAE decode",
        (steps.io, "write_png"): "PNG write",
        (policy, "load_fill_pipeline"): "load the base pipeline",
    }
    import steps.data.datasets

    patches[(steps.data.datasets, "load_samples")] = "load the train split (all of it, then sliced)"
    originals = {key: getattr(*key) for key in patches}
    for (mod, name), label in patches.items():
        setattr(mod, name, timed(phases, originals[(mod, name)], label))
    work = Path(tempfile.mkdtemp(prefix="bench_candidates_"))
    runs = []
    try:
        base = dict(base_dir=args.base_dir, train_dir=args.train_dir, threads=args.threads)
        for r in range(args.reps):
            cfg = step_config(
                CandidatesConfig, "tiny", **base, out_dir=str(work / f"default{r}"), n_conditions=args.conditions, seed=r
            )
            phases.take()
            t = time.perf_counter()
            res = generate_candidates(cfg)
            whole = time.perf_counter() - t
            parts = phases.take()
            parts["other (tqdm, manifest, draws, Python)"] = whole - sum(parts.values())
            runs.append({"seconds": whole, "images": res["n_images"], "parts": parts})
        sweep = defaultdict(list)
        fixed = dict(steps_range=(8, 8), guidance_range=(30.0, 30.0), strengths=(1.0,))
        for r in range(args.reps):
            for b in (1, 8, 64) if r % 2 == 0 else (64, 8, 1):
                cfg = step_config(
                    CandidatesConfig, "tiny", **base, **fixed, out_dir=str(work / f"b{b}_{r}"), n_conditions=args.sweep_conditions,
                    batch_size=b, seed=r,
                )  # fmt: skip
                phases.take()
                t = time.perf_counter()
                res = generate_candidates(cfg)
                whole = time.perf_counter() - t
                parts = phases.take()
                fixed_cost = sum(
                    parts.get(k, 0.0)
                    for k in ("load the base pipeline", "load the train split (all of it, then sliced)")
                )
                sweep[b].append(
                    {"seconds": whole, "images": res["n_images"], "generation": whole - fixed_cost}
                )
    finally:
        for (mod, name), fn in originals.items():
            setattr(mod, name, fn)
        shutil.rmtree(work, ignore_errors=True)
    return {"default": runs, "sweep": {str(k): v for k, v in sweep.items()}, "conditions": args.conditions,
            "sweep_conditions": args.sweep_conditions}  # fmt: skip


def markdown(result: dict) -> str:
    m = result["machine"]
    js = result["judge"]
    out = [
        "### Throughput (bench/judge/throughput.py)",
        "",
        f"Measured {machine_line(m)}.",
        f"Command: `.venv/bin/python {result['command']}`.",
        "",
        f"#### Judge scoring ({js['judge_params'] / 1e6:.2f} M-param tiny judge, "
        f"`steps.judge.agreement.pair_correctness`: both orders per pair, no grad)",
        "",
    ]
    base = median(js["seconds"]["1"])
    rows = []
    for b, v in js["seconds"].items():
        t = median(v)
        rows.append([b, len(v), f"{t:.2f}", f"{js['n_pairs'] / t:.1f}", f"{base / t:.2f}"])
    out += [
        table(
            ["batch", "n", f"s per {js['n_pairs']} pairs (median)", "pairs/s", "speed-up vs batch 1"], rows
        ),
        "",
    ]
    mq = js["multi_query"]
    first = None
    rows = []
    for k, v in mq["seconds"].items():
        t = median(v)
        first = first or t
        rows.append([k, len(v), f"{1000 * t:.1f}", f"{mq['image_pairs'] / t:.1f}", f"{first / t:.2f}"])
    out += [
        f"One image pair asked every dimension of its task (fill: {mq['queries']} queries for "
        f"{mq['image_pairs']} pairs, the RL step's judge call without grad); max |P(Yes) difference| "
        f"{mq['max_abs_diff_p_yes']:.1e}:",
        "",
        table(["path", "n", "ms per call (median)", "image pairs/s", "speed-up"], rows),
        "",
    ]
    cd = result["candidates"]
    runs = cd["default"]
    imgs = runs[0]["images"]
    rate = median(r["images"] / r["seconds"] for r in runs)
    keys = list(runs[0]["parts"])
    rows = [[k, f"{median(r['parts'].get(k, 0.0) for r in runs):.2f}",
             f"{100 * median(r['parts'].get(k, 0.0) / r['seconds'] for r in runs):.1f} %"] for k in keys]  # fmt: skip
    out += [
        f"#### Candidate generation (`steps.judge.candidates.generate_candidates`, {cd['conditions']} conditions x 4 "
        f"candidates = {imgs} images per run, batch 64, randomised sampling)",
        "",
        f"{rate:.1f} images/s including setup and PNG writes (median of n={len(runs)} runs, "
        f"{median(r['seconds'] for r in runs):.2f} s per run); generation alone "
        f"(encode + denoise + decode): "
        f"{median(r['images'] / sum(r['parts'].get(k, 0.0) for k in GENERATION) for r in runs):.1f} images/s.",
        "",
        table(["part", "s per run (median)", "share"], rows),
        "",
    ]
    rows = []
    b1 = median(r["images"] / r["generation"] for r in cd["sweep"]["1"])
    for b, v in cd["sweep"].items():
        g = median(r["images"] / r["generation"] for r in v)
        rows.append(
            [b, len(v), f"{median(r['images'] / r['seconds'] for r in v):.1f}", f"{g:.1f}", f"{g / b1:.2f}"]
        )
    out += [
        f"Batch-size sweep, fixed sampling (8 steps, guidance 30, strength 1; {cd['sweep_conditions']} "
        "conditions x 4 candidates per run):",
        "",
        table(
            ["batch", "n", "images/s (whole call)", "images/s (without model + split loading)", "vs batch 1"],
            rows,
        ),
    ]
    return "\n".join(out)


def main(argv=None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse(argv)
    from steps.runtime import setup

    setup(threads=args.threads)
    result = {
        "machine": machine(),
        "command": "bench/judge/throughput.py "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
    }
    result["judge"] = judge_scoring(args)
    result["candidates"] = candidates(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    text = markdown(result)
    print(text)
    if not args.no_doc:
        print("\nwritten:", write_section("bench/judge/throughput.py", text))
    return result


if __name__ == "__main__":
    main()
