"""The policy: a mask-guided fill model (FluxFillPipeline) at every profile.

- ``smoke`` / ``tiny``: `build_tiny_fill_pipeline` builds the FLUX.1-Fill architecture from small configs
  (FluxTransformer2DModel, AutoencoderKL, CLIPTextModel, T5EncoderModel, FlowMatchEulerDiscreteScheduler)
  with tokenizers trained locally (steps.models.tokenizers). Nothing is downloaded.
- ``flux``: `load_fill_pipeline` loads FLUX.1-Fill-dev in the diffusers layout from a local directory
  (argument or ``ONEREWARD_FLUX_PATH``), optionally with a replacement transformer (the released
  OneReward transformer checkpoints, or one of our RL checkpoints), local files and safetensors only.

The same `FluxFillPipeline` class runs everywhere; `save_pipeline` writes the FLUX layout, so a tiny
pipeline goes through the production loader unchanged (tests/steps/models/test_policy.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.config import field
from steps.io import atomic_dir

# The FLUX.1-Fill-dev scheduler config (resolution-dependent shift), shared by every built pipeline.
FLUX_FILL_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                           max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)

FLUX_PATH_ENV = "ONEREWARD_FLUX_PATH"
TRANSFORMER_PATH_ENV = "ONEREWARD_TRANSFORMER_PATH"  # optional replacement transformer for the flux base
# The components of the FLUX.1-Fill-dev diffusers layout, and what each must contain to load.
FLUX_COMPONENTS = {
    "scheduler": ("scheduler_config.json",),
    "vae": ("config.json", "*.safetensors"),
    "text_encoder": ("config.json", "*.safetensors"),
    "text_encoder_2": ("config.json", "*.safetensors"),
    "tokenizer": ("tokenizer_config.json",),
    "tokenizer_2": ("tokenizer_config.json",),
    "transformer": ("config.json", "*.safetensors"),
}
SPEC_FILE = "policy_spec.json"


@dataclass(frozen=True)
class PolicySpec:
    """Sizes of a fill pipeline built from config (profiles ``smoke`` and ``tiny``)."""

    image_size: int = field(64, "side of the square training/eval images in pixels (multiple of 2*vae scale)")
    # VAE
    vae_block_out_channels: tuple[int, ...] = field(
        (16, 32, 64), "VAE channels per level; scale = 2**(levels-1)"
    )
    vae_latent_channels: int = field(8, "VAE latent channels (lc); transformer in = 8*lc + 4*scale**2")
    vae_layers_per_block: int = field(1, "resnet layers per VAE level")
    vae_norm_num_groups: int = field(8, "GroupNorm groups in the VAE (must divide every block width)")
    vae_mid_attention: bool = field(True, "self-attention in the VAE mid block (FLUX's VAE has one)")
    vae_scaling_factor: float = field(1.0, "latent scaling factor (FLUX: 0.3611)")
    vae_shift_factor: float = field(0.0, "latent shift factor (FLUX: 0.1159)")
    # transformer
    num_layers: int = field(2, "double-stream (MM-DiT) blocks")
    num_single_layers: int = field(2, "single-stream blocks")
    num_attention_heads: int = field(4, "attention heads")
    attention_head_dim: int = field(32, "head dimension (= sum of axes_dims_rope)")
    axes_dims_rope: tuple[int, int, int] = field((8, 12, 12), "RoPE dims for (text idx, row, col)")
    guidance_embeds: bool = field(True, "distilled-guidance embedding, as FLUX.1-Fill-dev")
    # text encoders
    clip_hidden_size: int = field(32, "CLIP text hidden size (= pooled_projection_dim)")
    clip_layers: int = field(2, "CLIP text layers")
    clip_heads: int = field(2, "CLIP text heads")
    clip_max_length: int = field(32, "CLIP tokens (FLUX: 77); every world prompt fits (the longest has 20)")
    clip_vocab_size: int = field(800, "BPE vocabulary trained for CLIP (before the </w> singles)")
    t5_d_model: int = field(32, "T5 d_model (= joint_attention_dim)")
    t5_layers: int = field(2, "T5 encoder layers")
    t5_heads: int = field(4, "T5 heads")
    t5_d_kv: int = field(8, "T5 per-head dim")
    t5_d_ff: int = field(64, "T5 feed-forward width")
    t5_max_length: int = field(24, "T5 tokens = text tokens the transformer sees (FLUX: 512)")
    t5_vocab_size: int = field(300, "Unigram vocabulary trained for T5")

    def __post_init__(self) -> None:
        scale = self.vae_scale_factor
        if self.image_size % (2 * scale):
            raise ValueError(f"image_size {self.image_size} must be a multiple of 2*vae scale ({2 * scale})")
        if sum(self.axes_dims_rope) != self.attention_head_dim:
            raise ValueError(f"sum(axes_dims_rope)={sum(self.axes_dims_rope)} != attention_head_dim")
        if any(c % self.vae_norm_num_groups for c in self.vae_block_out_channels):
            raise ValueError("vae_norm_num_groups must divide every vae_block_out_channels entry")

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_block_out_channels) - 1)

    @property
    def transformer_in_channels(self) -> int:
        """Packed noisy latents + packed masked-image latents + packed mask (docs/DESIGN.md §10)."""
        return 4 * self.vae_latent_channels * 2 + 4 * self.vae_scale_factor**2


POLICY_SPECS: dict[str, PolicySpec] = {
    "smoke": PolicySpec(
        image_size=32,
        vae_block_out_channels=(8, 16),
        vae_latent_channels=4,
        vae_norm_num_groups=4,
        num_layers=1,
        num_single_layers=1,
        num_attention_heads=2,
        attention_head_dim=28,
        axes_dims_rope=(4, 12, 12),
        clip_hidden_size=16,
        clip_layers=1,
        t5_d_model=16,
        t5_layers=1,
        t5_max_length=16,
    ),
    "tiny": PolicySpec(),
}


def spec_for(profile: str) -> PolicySpec:
    """The `PolicySpec` of a built-from-config profile (``smoke`` or ``tiny``)."""
    try:
        return POLICY_SPECS[profile]
    except KeyError:
        raise ValueError(
            f"no built-from-config policy for profile {profile!r}; known: {sorted(POLICY_SPECS)}"
        ) from None


def build_tiny_fill_pipeline(spec: PolicySpec, seed: int = 0):
    """A randomly initialised `FluxFillPipeline` of ``spec``'s sizes (deterministic for a seed)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxFillPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from steps.models.tokenizers import train_clip_tokenizer, train_t5_tokenizer

    tokenizer = train_clip_tokenizer(vocab_size=spec.clip_vocab_size, model_max_length=spec.clip_max_length)
    tokenizer_2 = train_t5_tokenizer(vocab_size=spec.t5_vocab_size, model_max_length=spec.t5_max_length)

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=spec.transformer_in_channels,
        out_channels=4 * spec.vae_latent_channels,
        num_layers=spec.num_layers,
        num_single_layers=spec.num_single_layers,
        attention_head_dim=spec.attention_head_dim,
        num_attention_heads=spec.num_attention_heads,
        joint_attention_dim=spec.t5_d_model,
        pooled_projection_dim=spec.clip_hidden_size,
        guidance_embeds=spec.guidance_embeds,
        axes_dims_rope=tuple(spec.axes_dims_rope),
    )
    torch.manual_seed(seed + 1)
    n = len(spec.vae_block_out_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(spec.vae_block_out_channels),
        layers_per_block=spec.vae_layers_per_block,
        latent_channels=spec.vae_latent_channels,
        norm_num_groups=spec.vae_norm_num_groups,
        sample_size=spec.image_size,
        scaling_factor=spec.vae_scaling_factor,
        shift_factor=spec.vae_shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
        mid_block_add_attention=spec.vae_mid_attention,
    )
    torch.manual_seed(seed + 2)
    clip_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.clip_hidden_size,
        intermediate_size=2 * spec.clip_hidden_size,
        num_hidden_layers=spec.clip_layers,
        num_attention_heads=spec.clip_heads,
        max_position_embeddings=spec.clip_max_length,
        projection_dim=spec.clip_hidden_size,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text_encoder = CLIPTextModel(clip_config)
    torch.manual_seed(seed + 3)
    t5_config = T5Config(
        vocab_size=len(tokenizer_2),
        d_model=spec.t5_d_model,
        d_kv=spec.t5_d_kv,
        d_ff=spec.t5_d_ff,
        num_layers=spec.t5_layers,
        num_heads=spec.t5_heads,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=tokenizer_2.pad_token_id,
        eos_token_id=tokenizer_2.eos_token_id,
        decoder_start_token_id=tokenizer_2.pad_token_id,
    )
    text_encoder_2 = T5EncoderModel(t5_config)
    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_FILL_SCHEDULER)
    pipe = FluxFillPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    for module in (transformer, vae, text_encoder, text_encoder_2):
        module.eval()  # as from_pretrained leaves them: T5 has dropout, which would make encoding random
    pipe.set_progress_bar_config(disable=True)
    return pipe


def freeze_for_rl(pipe) -> None:
    """Freeze everything but the transformer (VAE and text encoders stay fixed during RL)."""
    for name in ("vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name)
        module.requires_grad_(False)
        module.eval()


def count_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def save_pipeline(pipe, directory: str | os.PathLike, spec: PolicySpec | None = None) -> Path:
    """Write ``pipe`` in the diffusers (FLUX.1-Fill-dev) layout with safetensors, atomically.

    The directory appears complete or not at all; an existing one is replaced. ``spec`` (optional) is
    recorded beside the components as ``policy_spec.json`` for provenance.
    """
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        if spec is not None:
            (tmp / SPEC_FILE).write_text(json.dumps(dataclasses.asdict(spec), indent=2) + "\n")
    return directory


def save_transformer(transformer, directory: str | os.PathLike) -> Path:
    """Write one transformer (config.json + safetensors) atomically: the replacement-transformer layout."""
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        transformer.save_pretrained(tmp, safe_serialization=True)
    return directory


def check_flux_layout(path: str | os.PathLike, skip: tuple[str, ...] = ()) -> Path:
    """Raise FileNotFoundError naming the first missing component of a diffusers FluxFill directory.

    ``skip``: components supplied from elsewhere (the transformer, when a replacement is given).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"fill model directory {path} does not exist (set {FLUX_PATH_ENV} or pass a path)"
        )
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"{path}: not a diffusers pipeline directory (model_index.json missing)")
    for component, needs in FLUX_COMPONENTS.items():
        if component in skip:
            continue
        sub = path / component
        if not sub.is_dir():
            raise FileNotFoundError(f"{path}: component {component!r} missing (no {component}/ directory)")
        for pattern in needs:
            if not any(sub.glob(pattern)):
                raise FileNotFoundError(
                    f"{path}: component {component!r} incomplete ({component}/{pattern} missing)"
                )
    return path


def _transformer_dir(path: str | os.PathLike) -> Path:
    """A replacement transformer is either a model dir (config.json) or a pipeline dir with transformer/."""
    path = Path(path)
    for candidate in (path, path / "transformer"):
        if (candidate / "config.json").is_file():
            if not any(candidate.glob("*.safetensors")):
                raise FileNotFoundError(f"replacement transformer {candidate}: no *.safetensors weights")
            return candidate
    raise FileNotFoundError(
        f"replacement transformer {path}: expected config.json + *.safetensors (or a transformer/ subfolder)"
    )


def load_fill_pipeline(
    path: str | os.PathLike | None = None,
    transformer_path: str | os.PathLike | None = None,
    dtype: Any = None,
):
    """Load a `FluxFillPipeline` from a local diffusers directory (the ``flux`` profile's loader).

    ``path`` defaults to ``$ONEREWARD_FLUX_PATH``. ``transformer_path`` swaps in another transformer of
    the same architecture (the released OneReward transformer, an RL checkpoint). ``dtype`` e.g.
    ``torch.bfloat16``. Local files only, safetensors only; a missing or incomplete directory raises
    FileNotFoundError naming the component.
    """
    from diffusers import FluxFillPipeline, FluxTransformer2DModel

    if not path and transformer_path is None:  # the flux base from the environment
        transformer_path = os.environ.get(TRANSFORMER_PATH_ENV) or None
    path = path or os.environ.get(FLUX_PATH_ENV)
    if not path:
        raise FileNotFoundError(f"no fill model directory: pass a path or set {FLUX_PATH_ENV}")
    path = check_flux_layout(path, skip=("transformer",) if transformer_path is not None else ())
    kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": True}
    if dtype is not None:
        kwargs[_dtype_kwarg()] = dtype
    if transformer_path is not None:
        kwargs["transformer"] = FluxTransformer2DModel.from_pretrained(
            _transformer_dir(transformer_path), **kwargs
        )
    pipe = FluxFillPipeline.from_pretrained(path, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _dtype_kwarg() -> str:
    """diffusers >= 0.42 takes ``dtype`` (``torch_dtype`` is deprecated); older releases only ``torch_dtype``."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"


def load_spec(path: str | os.PathLike) -> PolicySpec | None:
    """The `PolicySpec` recorded by `save_pipeline`, or None for a pipeline without one (e.g. FLUX)."""
    file = Path(path) / SPEC_FILE
    if not file.is_file():
        return None
    values = json.loads(file.read_text())
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return PolicySpec(**values)
