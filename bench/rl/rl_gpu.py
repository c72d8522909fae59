"""Time OneReward RL steps at production size: FLUX.1-Fill transformer + Qwen2.5-VL-7B judge, random weights.

    python bench/rl/rl_gpu.py                                   # one GPU: 512x512, T=28, LoRA r=64, bf16
    python bench/rl/rl_gpu.py --update grpo                     # the policy-gradient update: batch x G samples
    python bench/rl/rl_gpu.py --size tiny --device cpu --steps 1 --warmup 0   # the same code path, tiny configs

The models are built from configs that match the released ones (FLUX.1-Fill-dev: 19 double + 38 single
blocks, 24 heads x 128, in 384 / out 64, T5 4096 / CLIP 768, guidance embedding, its 16-channel VAE;
Qwen2.5-VL-7B-Instruct: 28 layers x 3584, 28 heads / 4 KV heads, 32-block vision tower) with their
parameters on the meta device, then materialised directly on the target device with random values
(nothing touches host memory, nothing is downloaded). Text encoders are not needed for the step: the
prompt embeddings are random tensors of T5/CLIP's shapes.

One timed step is the recipe's (steps.rl.rollout.rollout + steps.rl.reward.onereward_loss): Algorithm 1 with LoRA -- the
reference is the base (adapters disabled) denoising all T steps without grad, the policy denoises to
t = the middle of [T/2, T-1] without grad then one x0 step with grad, VAE decode, the judge scores policy
vs reference on the 4 fill dimensions through `PairJudge` (each image encoded once, as the recipe does),
backward, AdamW. ``--update grpo`` times the policy-gradient update instead (steps/rl/grpo.py: G samples per
condition with no grad through an SDE window, the judge's both-orders reward without grad, K log-prob
recomputations with grad); both are composed in bench/rl/gpu_steps.py. Reported: s/step (median), samples/s, peak
memory, FLOPs per step counted by torch.utils.flop_counter (forward + backward, including activation
recomputation when gradient checkpointing is on), and their utilisation of the dense matmul rate
measured in the same run at the same dtype. Writes a JSON file and prints a markdown table.

Layout: bench/rl/gpu_models.py (configs, materialisation, the judge without a tokenizer), bench/rl/gpu_steps.py
(the two updates), bench/rl/timing.py (timing, FLOPs, per-update rows: shared with bench/rl/rl_step.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.rl.gpu_models import (  # noqa: E402  (the repository on sys.path first)
    REAL_FLUX_FILL,
    REAL_QWEN,
    TINY_QWEN,
    bench_judge,
    build_policy,
    judge_factory,
    materialise,
    param_counts,
    random_conditions,
)
from bench.rl.timing import count_flops, device_matmul_rate, time_steps, update_row  # noqa: E402

__all__ = ["REAL_FLUX_FILL", "main", "markdown", "param_counts", "parse", "run"]


def grpo_settings(args) -> dict:
    """The policy-gradient update's settings: RLConfig's defaults (steps/rl/config.py), ``--group-size`` aside."""
    import dataclasses

    from steps.rl.config import RLConfig

    default = {f.name: f.default for f in dataclasses.fields(RLConfig)}
    names = ("sde_window_start", "sde_window", "sde_a", "adv_clip", "clip_range")
    return {"group_size": args.group_size or default["group_size"], **{n: default[n] for n in names}}


def run(args) -> dict:
    import time

    import torch

    from bench.rl import gpu_steps
    from steps.rl.policy import add_lora, trainable
    from steps.runtime import setup

    setup(threads=args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        # Measured on an H200 with torch 2.11.0+cu130 (2026-12-04): the cuDNN attention backend fails in the
        # backward of this step ("mha_graph.execute(...) is_good()", or an illegal memory access under activation
        # recomputation); with it off, SDPA takes the flash / memory-efficient kernels and the step runs.
        torch.backends.cuda.enable_cudnn_sdp(False)
    dtype = getattr(torch, args.dtype)
    t_build = time.perf_counter()
    pipe = build_policy(args.size, device, dtype)
    judge = bench_judge(materialise(judge_factory(args.size), device, dtype, seed=3), args.size, device)
    judge_model = judge.judge.model
    judge_model.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    transformer = pipe.transformer
    add_lora(transformer, args.lora_rank)
    if args.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
        pipe.vae.enable_gradient_checkpointing()
        judge_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        judge_model.train()  # transformers checkpoints only in train mode; Qwen has no dropout
    params = trainable(transformer)
    optimizer = torch.optim.AdamW(params.values(), lr=1e-5)
    text_tokens = (REAL_QWEN if args.size == "real" else TINY_QWEN)["text_tokens"]
    cond = random_conditions(pipe, args.batch, args.resolution, text_tokens, device, dtype)
    build_seconds = time.perf_counter() - t_build
    t_index = (args.T // 2 + args.T - 1) // 2
    autocast = (
        (lambda: torch.autocast(device.type, dtype=dtype))
        if dtype != torch.float32
        else contextlib.nullcontext
    )
    parts = gpu_steps.StepParts(pipe, judge, params, optimizer, cond, autocast, args)
    grpo = grpo_settings(args) if args.update == "grpo" else None
    step = gpu_steps.grpo(parts, **grpo) if grpo else gpu_steps.one_step(parts, t_index)
    samples = args.batch * (grpo["group_size"] if grpo else 1)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, loss = time_steps(step, args.warmup, args.steps, device)
    flops = count_flops(step, args.warmup + args.steps)
    rate = device_matmul_rate(
        device, dtype, 8192 if device.type == "cuda" else 256, 50 if device.type == "cuda" else 5
    )
    row = update_row(args.update, args.batch, samples, times)
    s_per_step = row["s_per_step"]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
        name = torch.cuda.get_device_name(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # host max RSS (KiB -> GiB)
        name = "cpu"
    return {
        "device": name,
        "size": args.size,
        "resolution": args.resolution,
        "T": args.T,
        "t_index": t_index,
        "batch": args.batch,
        "dtype": args.dtype,
        "lora_rank": args.lora_rank,
        "gradient_checkpointing": args.gradient_checkpointing,
        "params": {
            "transformer": sum(p.numel() for p in transformer.parameters()),
            "trainable": sum(p.numel() for p in params.values()),
            "vae": sum(p.numel() for p in pipe.vae.parameters()),
            "judge": sum(p.numel() for p in judge_model.parameters()),
        },
        "build_seconds": build_seconds,
        "step_seconds": times,
        "s_per_step": s_per_step,
        "samples_per_s": row["samples_per_s"],
        "peak_memory_gib": peak,
        "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "host max RSS",
        "flops_per_step": flops,
        "matmul_flops_per_s": rate,
        "utilisation": flops / s_per_step / rate,
        "flops_note": "torch.utils.flop_counter over one step: forward + backward, including activation "
        "recomputation when gradient checkpointing is on (then this is hardware, not model, FLOPs)",
        "last_loss": loss,
        "update": args.update,
        "update_row": row,
        "grpo": grpo,
    }


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def markdown(r: dict) -> str:
    p = r["params"]
    rows = [
        ("device", r["device"]),
        (
            "models",
            f"{r['size']}: transformer {_count(p['transformer'])}, judge {_count(p['judge'])}, "
            f"VAE {_count(p['vae'])}; LoRA r={r['lora_rank']} ({_count(p['trainable'])} trainable)",
        ),
        ("resolution / T / t", f"{r['resolution']} px / {r['T']} / {r['t_index']}"),
        ("batch", r["batch"]),
    ]
    if r.get("update") == "grpo":
        g, row = r["grpo"], r["update_row"]
        rows += [
            ("update", f"grpo: {row['samples']} samples/step (G={g['group_size']}), SDE window "
                       f"[{g['sde_window_start']}, {g['sde_window_start'] + g['sde_window']}) at a={g['sde_a']}"),
            ("s/sample", f"{row['s_per_sample']:.4f}"),
        ]
    rows += [
        ("s/step (median)", f"{r['s_per_step']:.3f}"),
        ("samples/s", f"{r['samples_per_s']:.3f}"),
        ("peak memory", f"{r['peak_memory_gib']:.2f} GiB ({r['peak_memory_kind']})"),
        ("FLOPs/step", f"{r['flops_per_step'] / 1e12:.4g} TFLOP"),
        (f"{r['dtype']} matmul rate", f"{r['matmul_flops_per_s'] / 1e12:.4g} TFLOP/s"),
        ("FLOP utilisation", f"{100 * r['utilisation']:.1f} %"),
    ]
    return "\n".join(["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("real", "tiny"), default="real")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default=None, help="default: bfloat16 (real), float32 (tiny)")
    p.add_argument("--resolution", type=int, default=None, help="default: 512 (real), 32 (tiny)")
    p.add_argument("--T", type=int, default=28, help="denoising steps of the schedule")
    p.add_argument("--update", choices=("one_step", "grpo"), default="one_step",
                   help="the paper's one-step update, or the policy gradient (steps/rl/grpo.py)")
    p.add_argument("--group-size", type=int, default=None, help="grpo: samples per condition (G; default RLConfig's)")
    p.add_argument(
        "--batch", type=int, default=1, help="conditions per step (the judge sees 4x rows: fill dims)"
    )
    p.add_argument("--lora-rank", type=int, default=None, help="default: 64 (real), 4 (tiny)")
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--out", default=None, help="JSON result (default bench/results/rl_gpu_<size>_<device>[_grpo].json)"
    )
    args = p.parse_args(argv)
    real = args.size == "real"
    args.dtype = args.dtype or ("bfloat16" if real else "float32")
    args.resolution = args.resolution or (512 if real else 32)
    args.lora_rank = args.lora_rank or (64 if real else 4)
    return args


def main(argv=None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = parse(argv)
    result = run(args)
    out = Path(
        args.out or Path(__file__).resolve().parents[1] / "results" / f"rl_gpu_{args.size}_{args.device.split(':')[0]}{'_grpo' if args.update == 'grpo' else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    from steps.io import atomic_write_json

    atomic_write_json(out, result)
    print(markdown(result))
    print(f"\nwritten: {out}")
    return result


if __name__ == "__main__":
    main()
