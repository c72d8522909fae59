"""Time OneReward RL steps at production size: FLUX.1-Fill transformer + Qwen2.5-VL-7B judge, random weights.

    python bench/rl/rl_gpu.py                                   # one GPU: 512x512, T=28, LoRA r=64, bf16
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
backward, AdamW. Reported: s/step (median), samples/s, peak
memory, FLOPs per step counted by torch.utils.flop_counter (forward + backward, including activation
recomputation when gradient checkpointing is on), and their utilisation of the dense matmul rate
measured in the same run at the same dtype. Writes a JSON file and prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

REAL_FLUX_FILL = dict(
    patch_size=1,
    in_channels=384,
    out_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
TINY_FLUX_FILL = dict(
    patch_size=1,
    in_channels=48,
    out_channels=16,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=16,
    guidance_embeds=True,
    axes_dims_rope=(4, 6, 6),
)
REAL_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    latent_channels=16,
    layers_per_block=2,
    norm_num_groups=32,
    scaling_factor=0.3611,
    shift_factor=0.1159,
)
TINY_VAE = dict(
    block_out_channels=(8, 16),
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=4,
    scaling_factor=1.0,
    shift_factor=0.0,
)
# Qwen2.5-VL-7B-Instruct's sizes and special-token ids.
REAL_QWEN = dict(
    text=dict(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        rope_theta=1e6,
        mrope_section=[16, 24, 24],
    ),
    vision=dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        patch_size=14,
        spatial_merge_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
    ),
    ids=dict(
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653
    ),
    text_tokens=512,
    query_tokens=96,
)
TINY_QWEN = dict(
    text=dict(
        vocab_size=512,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        rope_theta=1e4,
        mrope_section=[2, 3, 3],
    ),
    vision=dict(
        depth=1,
        hidden_size=16,
        intermediate_size=32,
        num_heads=2,
        patch_size=4,
        spatial_merge_size=2,
        window_size=16,
        fullatt_block_indexes=[0],
    ),
    ids=dict(image_token_id=500, video_token_id=501, vision_start_token_id=502, vision_end_token_id=503),
    text_tokens=16,
    query_tokens=12,
)


def materialise(factory, device, dtype, seed: int = 0):
    """Build ``factory()`` with parameters on the meta device, then create each one on ``device``:
    ones for normalisation weights, N(0, 1/fan_in) for matrices/kernels, zeros for biases."""
    import torch
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device

    with init_empty_weights():  # parameters on meta; the few small buffers (rotary tables) are real
        model = factory()
    gen = torch.Generator(device=device).manual_seed(seed)
    for module_name, module in model.named_modules():
        is_norm = "norm" in type(module).__name__.lower()
        for name, p in list(module.named_parameters(recurse=False)):
            if is_norm and name == "weight":
                value = torch.ones(p.shape, device=device, dtype=dtype)
            elif p.ndim >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                value = torch.randn(p.shape, device=device, dtype=dtype, generator=gen) / fan_in**0.5
            else:
                value = torch.zeros(p.shape, device=device, dtype=dtype)
            set_module_tensor_to_device(
                model, f"{module_name}.{name}" if module_name else name, device, value=value, dtype=dtype
            )
    return model.to(device).eval()


def transformer_factory(size: str):
    from diffusers import FluxTransformer2DModel

    return lambda: FluxTransformer2DModel(**(REAL_FLUX_FILL if size == "real" else TINY_FLUX_FILL))


def vae_factory(size: str):
    from diffusers import AutoencoderKL

    vae_cfg = REAL_VAE if size == "real" else TINY_VAE
    n = len(vae_cfg["block_out_channels"])
    return lambda: AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        use_quant_conv=False,
        use_post_quant_conv=False,
        **vae_cfg,
    )


def judge_factory(size: str):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    q = REAL_QWEN if size == "real" else TINY_QWEN
    t, v = q["text"], q["vision"]
    config = Qwen2_5_VLConfig(
        text_config={
            **{
                k: t[k]
                for k in (
                    "vocab_size",
                    "hidden_size",
                    "intermediate_size",
                    "num_hidden_layers",
                    "num_attention_heads",
                    "num_key_value_heads",
                )
            },
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": t["rope_theta"],
                "mrope_section": t["mrope_section"],
            },
        },
        vision_config={**v, "temporal_patch_size": 2, "out_hidden_size": t["hidden_size"], "in_chans": 3},
        tie_word_embeddings=False,
        **q["ids"],
    )
    return lambda: Qwen2_5_VLForConditionalGeneration(config)


def param_counts(size: str) -> dict[str, int]:
    """Parameters of each model at ``size``, counted on the meta device (no memory, < 1 s)."""
    from accelerate import init_empty_weights

    counts = {}
    for name, factory in (
        ("transformer", transformer_factory),
        ("vae", vae_factory),
        ("judge", judge_factory),
    ):
        with init_empty_weights(include_buffers=True):
            counts[name] = sum(p.numel() for p in factory(size)().parameters())
    return counts


def build_policy(size: str, device, dtype):
    """A FluxFillPipeline with random-weight transformer and VAE on ``device`` (no text encoders)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxFillPipeline

    from steps.models.policy import FLUX_FILL_SCHEDULER

    transformer = materialise(transformer_factory(size), device, dtype, seed=1)
    vae = materialise(vae_factory(size), device, dtype, seed=2)
    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_FILL_SCHEDULER)
    pipe = FluxFillPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bench_judge(model, size: str, device):
    """The recipe's judge path (`steps.rl.reward.PairJudge`: each image encoded once, its features shared
    by every dimension's row, the reference's without a graph) without a tokenizer: each query is a
    fixed-length random token sequence of a realistic query's length, behind a 20-token chat prefix."""
    import hashlib
    from types import SimpleNamespace

    import torch

    from steps.models.judge_preprocess import ImageGeometry
    from steps.rl.reward import PairJudge

    q = REAL_QWEN if size == "real" else TINY_QWEN
    v, ids = q["vision"], q["ids"]
    factor = v["patch_size"] * v["spatial_merge_size"]
    geometry = (
        ImageGeometry()
        if size == "real"
        else ImageGeometry(patch_size=v["patch_size"], merge_size=v["spatial_merge_size"],
                           min_pixels=factor**2, max_pixels=64 * 64)
    )
    prefix = torch.randint(0, 100, (20,), generator=torch.Generator().manual_seed(0)).tolist()

    class BenchPairJudge(PairJudge):
        def token_ids(self, query: str, per_image: tuple[int, ...]) -> list[int]:
            key = (query, per_image)
            if key not in self.token_cache:
                seed = int(hashlib.md5(query.encode()).hexdigest()[:8], 16)
                words = torch.randint(0, 100, (q["query_tokens"],), generator=torch.Generator().manual_seed(seed))
                row = list(prefix)
                for n in per_image:
                    row += [ids["vision_start_token_id"]] + [ids["image_token_id"]] * n + [ids["vision_end_token_id"]]
                self.token_cache[key] = row + words.tolist()
            return self.token_cache[key]

    judge = SimpleNamespace(model=model, geometry=geometry, tokenizer=SimpleNamespace(pad_token_id=0),
                            image_token_id=ids["image_token_id"], yes_id=101, no_id=102)
    return BenchPairJudge(judge)


def random_conditions(pipe, batch: int, resolution: int, text_tokens: int, device, dtype):
    """FillConditions of the right shapes (what encode_conditions would give for real prompts/images)."""
    import torch

    from steps.models.denoise import FillConditions

    tr = pipe.transformer.config
    gen = torch.Generator().manual_seed(5)
    side = resolution // (pipe.vae_scale_factor * 2)
    tokens = side * side
    cond_channels = tr.in_channels - tr.out_channels

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    return FillConditions(
        prompt_embeds=rand(batch, text_tokens, tr.joint_attention_dim),
        pooled_prompt_embeds=rand(batch, tr.pooled_projection_dim),
        text_ids=torch.zeros(text_tokens, 3, device=device, dtype=dtype),
        masked_image_latents=rand(batch, tokens, cond_channels),
        latent_image_ids=pipe._prepare_latent_image_ids(batch, side, side, device, dtype),
        height=resolution,
        width=resolution,
    )


def matmul_rate(device, dtype, n: int, iters: int) -> float:
    """Dense matmul FLOP/s at ``dtype`` on ``device`` (the utilisation denominator)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0)


def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run(args) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from steps.rl.policy import adapters_disabled, add_lora, trainable
    from steps.rl.reward import onereward_loss
    from steps.rl.rollout import rollout
    from steps.runtime import setup

    setup(threads=args.threads)
    device = torch.device(args.device)
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

    @contextlib.contextmanager
    def reference():
        with adapters_disabled(transformer):
            yield transformer

    def step(i: int) -> float:
        policy_images, reference_images = rollout(
            pipe, cond, transformer, reference, args.T, t_index, 30.0, (2 * i, 2 * i + 1), autocast
        )
        with autocast():
            loss, _ = onereward_loss(
                judge, policy_images, reference_images, "fill", ["a red circle"] * args.batch, 0.8
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.steps):
        sync(device)
        t0 = time.perf_counter()
        loss = step(i)
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    with FlopCounterMode(display=False) as counter:
        step(args.warmup + args.steps)
    flops = counter.get_total_flops()
    rate = matmul_rate(
        device, dtype, 8192 if device.type == "cuda" else 256, 50 if device.type == "cuda" else 5
    )
    s_per_step = float(np.median(times))
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
        "samples_per_s": args.batch / s_per_step,
        "peak_memory_gib": peak,
        "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "host max RSS",
        "flops_per_step": flops,
        "matmul_flops_per_s": rate,
        "utilisation": flops / s_per_step / rate,
        "flops_note": "torch.utils.flop_counter over one step: forward + backward, including activation "
        "recomputation when gradient checkpointing is on (then this is hardware, not model, FLOPs)",
        "last_loss": loss,
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
    p.add_argument(
        "--batch", type=int, default=1, help="conditions per step (the judge sees 4x rows: fill dims)"
    )
    p.add_argument("--lora-rank", type=int, default=None, help="default: 64 (real), 4 (tiny)")
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--out", default=None, help="JSON result (default bench/results/rl_gpu_<size>_<device>.json)"
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
        args.out or Path(__file__).resolve().parents[1] / "results" / f"rl_gpu_{args.size}_{args.device.split(':')[0]}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    from steps.io import atomic_write_json

    atomic_write_json(out, result)
    print(markdown(result))
    print(f"\nwritten: {out}")
    return result


if __name__ == "__main__":
    main()
