"""The hand-written denoising loop: exact with no grad, gradients only through the last step."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from steps.models.denoise import decode, denoise, encode_conditions, generate, sample_noise  # noqa: E402
from steps.models.policy import POLICY_SPECS, build_tiny_fill_pipeline, freeze_for_rl  # noqa: E402

torch.set_num_threads(1)
PROMPTS = ["a red circle", 'the word "CAT"']


def _batch(size: int):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, size, size, generator=gen)
    mask = torch.zeros(2, 1, size, size)
    mask[0, :, size // 4 : size // 2, size // 4 : 3 * size // 4] = 1
    mask[1, :, :, size // 2 :] = 1
    return image, mask


@pytest.fixture(scope="module", params=["smoke", "tiny"])
def setup(request):
    spec = POLICY_SPECS[request.param]
    return spec, build_tiny_fill_pipeline(spec, seed=0)


def test_no_grad_full_run_reproduces_the_pipeline_exactly(setup):
    spec, pipe = setup
    image, mask = _batch(spec.image_size)
    cond = encode_conditions(
        pipe, image, mask, PROMPTS, generator=torch.Generator().manual_seed(3), sample_mode="sample"
    )
    noise = sample_noise(pipe, cond, torch.Generator().manual_seed(5))
    for steps in (1, 4):
        expected = pipe(
            prompt=PROMPTS,
            image=image,
            mask_image=mask,
            height=spec.image_size,
            width=spec.image_size,
            num_inference_steps=steps,
            guidance_scale=30.0,
            latents=noise,
            output_type="pt",
            generator=torch.Generator().manual_seed(3),
            max_sequence_length=spec.t5_max_length,
        ).images
        again = encode_conditions(
            pipe, image, mask, PROMPTS, generator=torch.Generator().manual_seed(3), sample_mode="sample"
        )
        with torch.no_grad():
            ours = decode(pipe, denoise(pipe, again, steps, 30.0, noise=noise), again.height, again.width)
        assert ours.shape == expected.shape
        assert (ours - expected).abs().max().item() <= 1e-6


def test_conditions_are_deterministic_and_accept_uint8(setup):
    spec, pipe = setup
    image, mask = _batch(spec.image_size)
    a = encode_conditions(pipe, image, mask, PROMPTS)
    u8_image = (image.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    u8_mask = (mask[:, 0].numpy() * 255).astype(np.uint8)
    b = encode_conditions(pipe, u8_image, u8_mask, PROMPTS)
    assert torch.equal(a.prompt_embeds, b.prompt_embeds)
    assert a.masked_image_latents.shape == b.masked_image_latents.shape
    assert (a.masked_image_latents - b.masked_image_latents).abs().max() < 0.05  # uint8 rounding only
    assert torch.equal(
        a.masked_image_latents, encode_conditions(pipe, image, mask, PROMPTS).masked_image_latents
    )
    assert a.prompt_embeds.shape[1] == spec.t5_max_length
    assert a.select([1]).batch_size == 1


def test_x0_prediction_at_the_last_step_equals_the_full_run(setup):
    spec, pipe = setup
    image, mask = _batch(spec.image_size)
    cond = encode_conditions(pipe, image, mask, PROMPTS)
    noise = sample_noise(pipe, cond, torch.Generator().manual_seed(5))
    full = denoise(pipe, cond, 4, noise=noise)
    x0 = denoise(pipe, cond, 4, noise=noise, stop_at=3)
    assert (full - x0).abs().max().item() <= 1e-6


def test_gradients_reach_the_transformer_only_through_the_last_step(setup):
    spec, pipe = setup
    image, mask = _batch(spec.image_size)
    cond = encode_conditions(pipe, image, mask, PROMPTS)
    noise = sample_noise(pipe, cond, torch.Generator().manual_seed(5))
    freeze_for_rl(pipe)
    pipe.transformer.requires_grad_(True)
    pipe.transformer.zero_grad(set_to_none=True)
    seen: list[bool] = []
    hook = pipe.transformer.register_forward_hook(lambda m, a, out: seen.append(out[0].requires_grad))
    try:
        x0 = denoise(pipe, cond, 8, noise=noise, stop_at=5, grad_last=True)
    finally:
        hook.remove()
    assert seen == [False] * 5 + [True]  # steps 0..4 without grad, ONE step with grad
    images = decode(pipe, x0)  # square: size inferred from the latent tokens
    assert images.shape == (2, 3, spec.image_size, spec.image_size)
    assert images.min() >= 0 and images.max() <= 1
    (1 - images).mean().backward()
    grads = [p.grad for p in pipe.transformer.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
    assert all(p.grad is None and not p.requires_grad for p in pipe.vae.parameters())
    assert all(p.grad is None for p in pipe.text_encoder.parameters())
    pipe.transformer.zero_grad(set_to_none=True)


def test_initial_noise_strength_skips_early_steps(setup):
    spec, pipe = setup
    image, mask = _batch(spec.image_size)
    calls: list[int] = []
    hook = pipe.transformer.register_forward_hook(lambda m, a, out: calls.append(1))
    try:
        with pytest.raises(ValueError, match="with_image_latents"):
            denoise(pipe, encode_conditions(pipe, image, mask, PROMPTS), 4, strength=0.5)
        calls.clear()
        out = generate(
            pipe, image, mask, PROMPTS, num_steps=4, strength=0.5, generator=torch.Generator().manual_seed(0)
        )
    finally:
        hook.remove()
    assert len(calls) == 2
    assert out.shape == image.shape and 0 <= out.min() and out.max() <= 1
