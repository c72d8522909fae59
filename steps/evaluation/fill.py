"""What a user gets back from a fill: any photo size in, the same size out, the kept pixels kept.

The fill model works at its own resolution (the VAE's ``sample_size``: 32 px smoke, 64 px tiny, 1024 px
FLUX). A request of another size is resized to that square, filled, and the output resized back to the
request's size. By default the kept region (mask 0) is then pasted back over the output with diffusers'
inpainting overlay (`VaeImageProcessor.apply_overlay`), because the VAE re-encodes and blurs the whole
image, kept region included. ``keep_unmasked=False`` returns the raw decoded output instead: the benchmark
scores raw outputs so that PSNR/SSIM of the kept region (consistency) still measure the model's drift.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def model_resolution(pipe) -> int:
    """The side of the square images the fill model was built for (its VAE's ``sample_size``)."""
    size = pipe.vae.config.sample_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Binary 0/255 mask at another size (area-averaged, then any coverage counts as 'generate')."""
    if mask.shape[1] == width and mask.shape[0] == height:
        return mask
    small = np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.BOX))
    return np.where(small > 0, 255, 0).astype(np.uint8)


def paste_kept(source: np.ndarray, mask: np.ndarray, output: np.ndarray) -> np.ndarray:
    """The output with the source's kept pixels (mask 0) pasted back: diffusers' inpainting overlay."""
    from diffusers.image_processor import VaeImageProcessor

    overlaid = VaeImageProcessor().apply_overlay(Image.fromarray(mask), Image.fromarray(source),
                                                 Image.fromarray(output))
    return np.asarray(overlaid)


def fill_images(pipe, images: list[np.ndarray], masks: list[np.ndarray], prompts: list[str], seeds: list[int],
                num_steps: int = 8, guidance: float = 30.0, batch_size: int = 16,
                keep_unmasked: bool = True) -> list[np.ndarray]:
    """Fill requests of any size (HxWx3 uint8 each, 0/255 masks); outputs have the requests' sizes.

    Requests at the model's resolution are filled as they are; others are resized to it and back.
    ``keep_unmasked``: paste the kept pixels back (what a user expects); False: the raw model output.
    """
    from steps.evaluation.competitors import fill_with_pipeline

    size = model_resolution(pipe)
    small_images = [resize_image(im, size, size) for im in images]
    small_masks = [resize_mask(m, size, size) for m in masks]
    raw = fill_with_pipeline(pipe, small_images, small_masks, prompts, seeds, num_steps, guidance, batch_size)
    outputs = []
    for image, mask, out in zip(images, masks, raw):
        out = resize_image(out, image.shape[1], image.shape[0])
        outputs.append(paste_kept(image, mask, out) if keep_unmasked else out)
    return outputs
