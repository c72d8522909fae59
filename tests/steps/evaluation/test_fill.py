"""What a user gets back: any size in, the same size out, the kept pixels kept (raw output on request)."""

from __future__ import annotations

import numpy as np
import pytest

from steps.evaluation.fill import fill_images, model_resolution, paste_kept, resize_mask


@pytest.fixture(scope="module")
def pipe():
    import torch

    from steps.models.policy import build_tiny_fill_pipeline, spec_for

    torch.set_num_threads(1)
    return build_tiny_fill_pipeline(spec_for("smoke"), seed=0)


def photo(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: h // 2, w // 3: 2 * w // 3] = 255
    return image, mask


def test_paste_kept_is_the_source_outside_and_the_output_inside():
    image, mask = photo(20, 24)
    output = np.full_like(image, 7)
    pasted = paste_kept(image, mask, output)
    assert np.array_equal(pasted[mask == 0], image[mask == 0])
    assert np.array_equal(pasted[mask == 255], output[mask == 255])


def test_resize_mask_keeps_every_generated_pixel_covered():
    _, mask = photo(512, 384)
    small = resize_mask(mask, 32, 32)
    assert set(np.unique(small)) == {0, 255} and small.shape == (32, 32)
    assert small.sum() >= mask.sum() * 32 * 32 / (512 * 384)


def test_any_size_comes_back_at_its_size_with_the_kept_pixels_kept(pipe):
    assert model_resolution(pipe) == 32
    image, mask = photo(120, 88)  # not the model's 32 px, and not a multiple of its 4 px grid: resized
    kept = fill_images(pipe, [image], [mask], ["a red circle"], [0], num_steps=2)[0]
    raw = fill_images(pipe, [image], [mask], ["a red circle"], [0], num_steps=2, keep_unmasked=False)[0]
    assert kept.shape == raw.shape == image.shape
    assert np.array_equal(kept[mask == 0], image[mask == 0])
    assert np.array_equal(kept[mask == 255], raw[mask == 255])
    # The raw output regenerates the kept region too (what a user used to get back).
    assert np.abs(raw[mask == 0].astype(int) - image[mask == 0]).mean() > 10
