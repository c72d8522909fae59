"""The report of bench/rl/rl_step.py: its JSON result as the markdown block of docs/BENCHMARKS.md.

Sections, in order: the per-phase breakdown of each variant, periodic work, before / after ratios on matched
steps, the two updates side by side (one-step vs grpo, when the result has the grpo step), the judge per step,
the reference images and condition cache, the optimizer, operators, FLOPs.
"""

from __future__ import annotations

from collections import defaultdict

from bench.benchlib import machine_line, median, table
from bench.rl.step_instrument import COMPUTE, DENSE, JUDGE, OVERHEAD
from bench.rl.timing import update_row, update_table


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
    return {"by": by, "amortised": amort, "matched": matched, "config": result["config"],
            "rate": median(result["matmul_1024_flops_per_s"]), "tasks": ["fill", "extend", "removal", "all"]}


def compute_of(rec: dict) -> float:
    return sum(rec["parts"].get(k, 0.0) for k in COMPUTE)


def judge_of(rec: dict) -> float:
    return sum(rec["parts"].get(k, 0.0) for k in JUDGE)


def markdown(result: dict) -> str:
    s = summarise(result)
    out = breakdowns(result, s) + ratios(result, s)
    if "grpo" in result:
        out += updates(result, s)
    out += judge_and_caches(result, s) + operators_and_flops(result, s)
    return "\n".join(out)


def breakdowns(result: dict, s: dict) -> list[str]:
    by, amort, matched, rate, tasks, cfg = (s[k] for k in ("by", "amortised", "matched", "rate", "tasks", "config"))
    m = result["machine"]
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
    return out


def ratios(result: dict, s: dict) -> list[str]:
    by, amort, matched, rate, tasks, cfg = (s[k] for k in ("by", "amortised", "matched", "rate", "tasks", "config"))
    out = []
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
    return out


def update_rows(result: dict) -> list[dict]:
    """One-step (the ``after`` variant) and grpo on the same steps: s/step, samples/s, s/sample."""
    batch, grpo = result["config"]["batch_size"], result["grpo"]
    after = [r["whole"] for r in result["records"] if r["variant"] == "after"]
    return [update_row("one_step", batch, batch, after),
            update_row("grpo", batch, batch * grpo["config"]["group_size"], [r["whole"] for r in grpo["records"]])]


def updates(result: dict, s: dict) -> list[str]:
    g = result["grpo"]
    c, recs = g["config"], g["records"]
    window = f"[{c['sde_window_start']}, {c['sde_window_start'] + c['sde_window']})"
    sampling = median(r["sample_seconds"] for r in recs)
    return [
        "#### The two updates on the same steps: one-step vs grpo (steps/rl/grpo.py)",
        "",
        f"Each recipe's own `train_step` + the MLflow log, on the same step numbers (same task and conditions: "
        f"`draw_step` is pure in the step), interleaved with the variants above; one-step is the `after` variant. "
        f"Both take {c['batch_size']} conditions a step: one-step judges {c['batch_size']} policy samples, grpo "
        f"{c['batch_size']} x G={c['group_size']} ({c['group_noise']} initial noise, SDE window {window} at "
        f"a={c['sde_a']}, {c['inner_epochs']} inner epoch(s)).",
        "",
        update_table(update_rows(result)),
        "",
        f"grpo's step, medians: sampling {sampling:.3f} s (reference image, G samples through the window, decode, "
        f"the judge's both orders; no grad: the recipe's `grpo/sample_seconds`), the update "
        f"{median(r['train_step_seconds'] - r['sample_seconds'] for r in recs):.3f} s (K log-prob "
        f"recomputations with grad, backward, AdamW, EMA).",
        "",
    ]


def judge_and_caches(result: dict, s: dict) -> list[str]:
    by, amort, matched, rate, tasks, cfg = (s[k] for k in ("by", "amortised", "matched", "rate", "tasks", "config"))
    out = []
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
    return out


def operators_and_flops(result: dict, s: dict) -> list[str]:
    by, amort, matched, rate, tasks, cfg = (s[k] for k in ("by", "amortised", "matched", "rate", "tasks", "config"))
    out = []
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
    return out
