"""The fill model's denoising loop, rebuilt from FluxFillPipeline's helpers so gradients can flow.

`FluxFillPipeline.__call__` runs under ``torch.no_grad``. RL with reward feedback (docs/DESIGN.md §4, Algorithm 1
step 3) needs: denoise WITHOUT grad down to a step t, then predict x0 in ONE step WITH grad
(rectified flow: x_t = (1 - sigma) x0 + sigma eps, v = eps - x0, so x0 = x_t - sigma_t v), and decode
x0 through the frozen VAE differentiably. This module does that with the pipeline's own pieces
(encode_prompt, prepare_mask_latents, _pack/_unpack_latents, retrieve_timesteps, calculate_shift, the
scheduler's Euler step), so with no grad and all steps it reproduces ``pipe(..., output_type="pt")``
exactly (tests/steps/models/test_denoise.py).

Usage::

    cond = encode_conditions(pipe, images, masks, prompts)           # once per batch, no grad
    x0 = denoise(pipe, cond, num_steps=8, noise=eps, stop_at=t, grad_last=True)
    pixels = decode(pipe, x0, cond.height, cond.width)                  # [0, 1], differentiable

Each call builds a fresh scheduler from ``pipe.scheduler.config``, so two pipelines that share a
scheduler object (policy and reference) never disturb each other's step counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class FillConditions:
    """Everything the transformer sees besides the noisy latents; computed once per batch (no grad).

    ``masked_image_latents`` is the pipeline's conditioning tensor: packed VAE latents of the masked
    image concatenated with the packed mask (B, N, 4*lc + 4*vsf^2). ``image_latents`` (unpacked, scaled)
    is only present when requested, for starting from the source image with ``strength`` < 1.
    """

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    text_ids: torch.Tensor
    masked_image_latents: torch.Tensor
    latent_image_ids: torch.Tensor
    height: int
    width: int
    image_latents: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.prompt_embeds.shape[0]

    def to(self, device: Any) -> FillConditions:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return FillConditions(**moved)

    def select(self, index) -> FillConditions:
        """The conditions of a subset of the batch (``index``: slice, list or bool/long tensor)."""
        per_sample = ("prompt_embeds", "pooled_prompt_embeds", "masked_image_latents", "image_latents")
        picked = {k: (v[index] if k in per_sample and v is not None else v) for k, v in self.__dict__.items()}
        return FillConditions(**picked)


def to_image_tensor(images: Any) -> torch.Tensor:
    """Images as float Bx3xHxW in [0, 1] from a float tensor (kept) or uint8 BxHxWx3 / Bx3xHxW."""
    if isinstance(images, (list, tuple)):
        return torch.stack([to_image_tensor(i)[0] for i in images])
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.ndim == 3:
        x = x[None]
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def to_mask_tensor(masks: Any) -> torch.Tensor:
    """Masks as float Bx1xHxW in {0, 1} (1 = generate): from uint8 0/255 or float 0/1, BxHxW or Bx1xHxW."""
    if isinstance(masks, (list, tuple)):
        return torch.cat([to_mask_tensor(m) for m in masks])
    m = torch.as_tensor(np.asarray(masks)) if not isinstance(masks, torch.Tensor) else masks
    if m.ndim == 2:
        m = m[None]
    if m.ndim == 3:
        m = m[:, None]
    return m.float() / 255.0 if m.dtype == torch.uint8 else m.float()


@torch.no_grad()
def encode_conditions(
    pipe,
    images,
    masks,
    prompts: list[str],
    max_sequence_length: int | None = None,
    generator: torch.Generator | None = None,
    sample_mode: str = "argmax",
    with_image_latents: bool = False,
) -> FillConditions:
    """Encode prompts, masks and masked images as `FluxFillPipeline.__call__` does.

    ``max_sequence_length`` defaults to ``pipe.tokenizer_2.model_max_length`` (capped at 512: FLUX's
    512, the tiny profiles' few dozen). The masked image's VAE posterior is taken at its mode
    (``sample_mode="argmax"``: deterministic, cache-friendly); ``sample_mode="sample"`` with the
    pipeline's ``generator`` draws it exactly as the pipeline does.
    """
    from diffusers.pipelines.flux.pipeline_flux_fill import retrieve_latents

    images, masks = to_image_tensor(images), to_mask_tensor(masks)
    height, width = int(images.shape[-2]), int(images.shape[-1])
    device = pipe._execution_device
    if max_sequence_length is None:
        max_sequence_length = min(int(pipe.tokenizer_2.model_max_length), 512)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    prompt_embeds, pooled, text_ids = pipe.encode_prompt(
        prompt=prompts,
        prompt_2=None,
        device=device,
        num_images_per_prompt=1,
        max_sequence_length=max_sequence_length,
    )
    dtype = prompt_embeds.dtype
    batch = len(prompts)
    lc = pipe.vae.config.latent_channels

    init_image = pipe.image_processor.preprocess(images, height=height, width=width).to(dtype=torch.float32)
    mask = pipe.mask_processor.preprocess(masks, height=height, width=width)
    height, width = init_image.shape[-2:]
    masked_image = (init_image * (1 - mask)).to(device=device, dtype=dtype)
    if sample_mode != "sample":
        # Encode here at the posterior mode; prepare_mask_latents then skips its own (sampling) encode.
        masked_image = retrieve_latents(pipe.vae.encode(masked_image), sample_mode=sample_mode)
    mask_packed, masked_latents = pipe.prepare_mask_latents(
        mask, masked_image, batch, lc, 1, height, width, dtype, device, generator
    )
    h_lat = 2 * (int(height) // (pipe.vae_scale_factor * 2))
    w_lat = 2 * (int(width) // (pipe.vae_scale_factor * 2))
    ids = pipe._prepare_latent_image_ids(batch, h_lat // 2, w_lat // 2, device, dtype)
    image_latents = None
    if with_image_latents:
        enc = retrieve_latents(
            pipe.vae.encode(init_image.to(device=device, dtype=dtype)), sample_mode="argmax"
        )
        image_latents = (enc - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
    return FillConditions(
        prompt_embeds=prompt_embeds,
        pooled_prompt_embeds=pooled,
        text_ids=text_ids,
        masked_image_latents=torch.cat((masked_latents, mask_packed), dim=-1),
        latent_image_ids=ids,
        height=int(height),
        width=int(width),
        image_latents=image_latents,
    )


def latent_shape(pipe, cond: FillConditions) -> tuple[int, int, int, int]:
    """Unpacked latent shape (B, lc, h, w) for the conditions' image size."""
    h = 2 * (cond.height // (pipe.vae_scale_factor * 2))
    w = 2 * (cond.width // (pipe.vae_scale_factor * 2))
    return (cond.batch_size, pipe.vae.config.latent_channels, h, w)


def sample_noise(pipe, cond: FillConditions, generator: torch.Generator | None = None) -> torch.Tensor:
    """Packed Gaussian noise (B, N, 4*lc), drawn as `FluxFillPipeline.prepare_latents` draws it."""
    from diffusers.utils.torch_utils import randn_tensor

    shape = latent_shape(pipe, cond)
    noise = randn_tensor(
        shape, generator=generator, device=cond.prompt_embeds.device, dtype=cond.prompt_embeds.dtype
    )
    return pipe._pack_latents(noise, *shape)


def make_scheduler(pipe, cond: FillConditions, num_steps: int, strength: float = 1.0):
    """A fresh scheduler set to the pipeline's sigma schedule; returns (scheduler, timesteps)."""
    from diffusers.pipelines.flux.pipeline_flux_fill import calculate_shift, retrieve_timesteps

    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
    seq_len = (cond.height // pipe.vae_scale_factor // 2) * (cond.width // pipe.vae_scale_factor // 2)
    cfg = scheduler.config
    mu = calculate_shift(
        seq_len,
        cfg.get("base_image_seq_len", 256),
        cfg.get("max_image_seq_len", 4096),
        cfg.get("base_shift", 0.5),
        cfg.get("max_shift", 1.15),
    )
    device = cond.prompt_embeds.device
    timesteps, n = retrieve_timesteps(scheduler, num_steps, device, sigmas=sigmas, mu=mu)
    # FluxFillPipeline.get_timesteps, on our scheduler instead of pipe.scheduler.
    t_start = int(max(n - min(n * strength, n), 0))
    timesteps = scheduler.timesteps[t_start * scheduler.order :]
    scheduler.set_begin_index(t_start * scheduler.order)
    if len(timesteps) < 1:
        raise ValueError(f"strength {strength} leaves no denoising step out of {num_steps}")
    return scheduler, timesteps


def velocity(
    pipe, transformer, latents: torch.Tensor, t: torch.Tensor, cond: FillConditions, guidance: float
) -> torch.Tensor:
    """One transformer call: the predicted velocity v = eps - x0 at timestep ``t`` (0..1000)."""
    g = None
    if transformer.config.guidance_embeds:
        g = torch.full([1], guidance, device=latents.device, dtype=torch.float32).expand(latents.shape[0])
    timestep = t.expand(latents.shape[0]).to(latents.dtype)
    return transformer(
        hidden_states=torch.cat((latents, cond.masked_image_latents), dim=2),
        timestep=timestep / 1000,
        guidance=g,
        pooled_projections=cond.pooled_prompt_embeds,
        encoder_hidden_states=cond.prompt_embeds,
        txt_ids=cond.text_ids,
        img_ids=cond.latent_image_ids,
        return_dict=False,
    )[0]


def denoise(
    pipe,
    cond: FillConditions,
    num_steps: int,
    guidance: float = 30.0,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    stop_at: int | None = None,
    grad_last: bool = False,
    strength: float = 1.0,
    transformer=None,
    with_state: bool = False,
):
    """Run the fill model's Euler sampler; returns packed latents (B, N, 4*lc).

    - ``stop_at=None, grad_last=False``: all steps without grad -> exactly the pipeline's final latents.
    - ``stop_at=t`` (an index into the steps actually run): steps 0..t-1 without grad, then at step t
      ONE prediction x0 = x_t - sigma_t * v, with grad through the transformer if ``grad_last`` (the RL
      step). ``stop_at=None, grad_last=True`` takes the last step with grad (the same x0 formula, since
      the sigma after the last step is 0).
    - ``noise``: packed (B, N, 4*lc) or unpacked (B, lc, h, w); else drawn with ``generator``.
    - ``strength`` < 1 starts from the source image noised to the first kept sigma (needs
      ``cond.image_latents``, see `encode_conditions(with_image_latents=True)`); "initial-noise strength".
    - ``transformer`` replaces ``pipe.transformer`` (e.g. an EMA copy or a LoRA-wrapped model).
    - ``with_state`` (with ``stop_at``/``grad_last``): returns (x0, x_t, t, v) -- the latents and timestep of
      the grad step and the velocity predicted there (a velocity-space anchor compares it with the base's).
    """
    transformer = transformer if transformer is not None else pipe.transformer
    scheduler, timesteps = make_scheduler(pipe, cond, num_steps, strength)
    shape = latent_shape(pipe, cond)
    if noise is None:
        noise = sample_noise(pipe, cond, generator)
    elif noise.ndim == 4:
        noise = pipe._pack_latents(noise, *shape)
    latents = noise.to(device=cond.prompt_embeds.device, dtype=cond.prompt_embeds.dtype)
    if strength < 1.0:
        if cond.image_latents is None:
            raise ValueError("strength < 1 needs encode_conditions(..., with_image_latents=True)")
        start = timesteps[:1].repeat(shape[0])
        unpacked = pipe._unpack_latents(latents, cond.height, cond.width, pipe.vae_scale_factor)
        latents = pipe._pack_latents(scheduler.scale_noise(cond.image_latents, start, unpacked), *shape)

    last = len(timesteps) - 1 if stop_at is None else int(stop_at)
    if not 0 <= last < len(timesteps):
        raise ValueError(f"stop_at={stop_at} outside the {len(timesteps)} denoising steps")
    with torch.no_grad():
        for t in timesteps[:last]:
            v = velocity(pipe, transformer, latents, t, cond, guidance)
            latents = scheduler.step(v, t, latents, return_dict=False)[0]
    t = timesteps[last]
    if not grad_last and stop_at is None:
        with torch.no_grad():
            v = velocity(pipe, transformer, latents, t, cond, guidance)
            return scheduler.step(v, t, latents, return_dict=False)[0]
    sigma = scheduler.sigmas[scheduler.begin_index + last]
    with torch.set_grad_enabled(grad_last):
        v = velocity(pipe, transformer, latents, t, cond, guidance)
        x0 = (latents.float() - sigma.to(latents.device) * v.float()).to(v.dtype)
    return (x0, latents, t, v) if with_state else x0


def decode(
    pipe, latents: torch.Tensor, height: int | None = None, width: int | None = None, clamp: bool = True
) -> torch.Tensor:
    """Packed latents -> images Bx3xHxW in [0, 1] through the VAE decoder, differentiable.

    ``height``/``width`` default to a square image (from the number of latent tokens). Matches the
    pipeline's ``output_type="pt"`` post-processing (x/2 + 0.5, clamped to [0, 1]; the clamp zeroes the
    gradient of saturated pixels). The VAE is not modified: freeze it with
    `steps.models.policy.freeze_for_rl` so no gradients accumulate there.
    """
    if height is None or width is None:
        side = int(round(latents.shape[1] ** 0.5))
        if side * side != latents.shape[1]:
            raise ValueError(
                f"{latents.shape[1]} latent tokens are not a square image: pass height and width"
            )
        height = width = side * 2 * pipe.vae_scale_factor
    x = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    x = x / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    image = pipe.vae.decode(x.to(pipe.vae.dtype), return_dict=False)[0]
    image = image / 2 + 0.5
    return image.clamp(0, 1) if clamp else image


def generate(
    pipe,
    images,
    masks,
    prompts: list[str],
    num_steps: int,
    guidance: float = 30.0,
    generator: torch.Generator | None = None,
    strength: float = 1.0,
    max_sequence_length: int | None = None,
) -> torch.Tensor:
    """Full no-grad fill: images Bx3xHxW in [0, 1] (the reference image of Algorithm 1, evaluation)."""
    with torch.no_grad():
        cond = encode_conditions(
            pipe,
            images,
            masks,
            prompts,
            max_sequence_length=max_sequence_length,
            with_image_latents=strength < 1.0,
        )
        latents = denoise(pipe, cond, num_steps, guidance, generator=generator, strength=strength)
        return decode(pipe, latents, cond.height, cond.width)
