"""The models bench/rl/rl_gpu.py times: production-size (or tiny) configs, built on the meta device and
materialised with random values directly on the target device (nothing downloaded, nothing in host memory).

- the FLUX.1-Fill-dev transformer and its 16-channel VAE, the Qwen2.5-VL-7B-Instruct judge (``REAL_*``), and
  tiny configs of the same architectures for a CPU run of the same code path (``TINY_*``);
- `materialise`, the factories and `param_counts` (on the meta device, < 1 s);
- `build_policy` (a FluxFillPipeline without text encoders), `bench_judge` (the recipe's `PairJudge` without a
  tokenizer) and `random_conditions` (FillConditions of the shapes real prompts and images give).
"""

from __future__ import annotations

import numpy as np

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
