"""The SDE window sampler: a = 0 is the Euler sampler bit for bit, stored log-probs are recomputed exactly, and
the step's law is the documented Gaussian."""

from __future__ import annotations

import pytest
import torch

from steps.models.denoise import denoise, encode_conditions, sample_noise
from steps.models.policy import POLICY_SPECS, build_tiny_fill_pipeline
from steps.rl.sde import sample_window, sde_step, step_std, window_log_prob

torch.set_num_threads(1)
PROMPTS = ["a red circle", 'the word "CAT"', ""]


@pytest.fixture(scope="module")
def setup():
    spec = POLICY_SPECS["smoke"]
    pipe = build_tiny_fill_pipeline(spec, seed=0)
    size = spec.image_size
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(3, 3, size, size, generator=gen)
    mask = torch.zeros(3, 1, size, size)
    mask[0, :, size // 4: size // 2, size // 4: 3 * size // 4] = 1
    mask[1:, :, :, size // 2:] = 1
    cond = encode_conditions(pipe, image, mask, PROMPTS)
    noise = sample_noise(pipe, cond, torch.Generator().manual_seed(5))
    return pipe, cond, noise


def test_a_zero_is_the_euler_sampler_bit_for_bit(setup):
    pipe, cond, noise = setup
    expected = denoise(pipe, cond, 6, 30.0, noise=noise)
    got = sample_window(pipe, cond, pipe.transformer, 6, 30.0, noise, 1, 2, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(got.latents, expected)
    assert torch.count_nonzero(got.log_probs) == 0


def test_window_noise_changes_the_sample_and_only_from_the_window_on(setup):
    pipe, cond, noise = setup
    ode = denoise(pipe, cond, 6, 30.0, noise=noise)
    a = sample_window(pipe, cond, pipe.transformer, 6, 30.0, noise, 2, 2, 0.7, torch.Generator().manual_seed(1))
    b = sample_window(pipe, cond, pipe.transformer, 6, 30.0, noise, 2, 2, 0.7, torch.Generator().manual_seed(2))
    again = sample_window(pipe, cond, pipe.transformer, 6, 30.0, noise, 2, 2, 0.7,
                          torch.Generator().manual_seed(1))
    assert torch.equal(a.latents, again.latents)  # the draw is a function of the generator's seed
    assert not torch.allclose(a.latents, b.latents) and not torch.allclose(a.latents, ode)
    assert torch.equal(a.states[0], b.states[0])  # identical up to the window's first step
    assert a.step_indices == [2, 3] and a.log_probs.shape == (2, 3)
    assert torch.isfinite(a.log_probs).all()


def test_recomputed_log_prob_equals_the_stored_one_and_carries_grad(setup):
    pipe, cond, noise = setup
    roll = sample_window(pipe, cond, pipe.transformer, 6, 30.0, noise, 0, 3, 0.7, torch.Generator().manual_seed(3))
    params = [p for p in pipe.transformer.parameters()]
    for p in params:
        p.requires_grad_(True)
    try:
        for k in range(3):
            step = window_log_prob(pipe, cond, pipe.transformer, roll, k, 30.0, 0.7)
            torch.testing.assert_close(step.log_prob, roll.log_probs[k], rtol=0, atol=1e-5)
            step.log_prob.sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None


def test_the_step_is_the_documented_gaussian():
    torch.manual_seed(0)
    x, v = torch.randn(2000, 4, 8), torch.randn(2000, 4, 8)
    sigma, sigma_next, a = torch.tensor(0.6), torch.tensor(0.45), 0.7
    draws = torch.stack([sde_step(v, x, sigma, sigma_next, a, 0.9,
                                  generator=torch.Generator().manual_seed(s)).x_next for s in range(40)])
    std = float(a * (0.6 / 0.4) ** 0.5 * 0.15 ** 0.5)
    dt = -0.15
    s2 = (a * (0.6 / 0.4) ** 0.5) ** 2
    mean = x * (1 + s2 / (2 * 0.6) * dt) + v * (1 + s2 * 0.4 / (2 * 0.6)) * dt
    residual = draws - mean  # 2.56 M draws: their mean is 0 and their std the step's, to within 1%
    assert abs(float(residual.mean())) < 0.01 * std
    assert abs(float(residual.std()) - std) < 0.01 * std
    # the log-prob is the Gaussian's, averaged over dimensions
    one = sde_step(v, x, sigma, sigma_next, a, 0.9, x_next=mean)
    assert torch.allclose(one.log_prob, torch.full((2000,), -torch.log(torch.tensor(std)).item()
                                                   - 0.5 * torch.log(torch.tensor(2 * torch.pi)).item()))


def test_pure_noise_step_uses_the_second_sigma():
    assert torch.isfinite(step_std(torch.tensor(1.0), 0.9, 0.7))
    assert float(step_std(torch.tensor(1.0), 0.9, 0.7)) == pytest.approx(0.7 * (1 / 0.1) ** 0.5, rel=1e-5)
