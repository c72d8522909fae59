"""Real photos that ship inside installed packages, with generated masks (a real-image benchmark split).

Sources (all bundled in the wheels, nothing is downloaded): scikit-image ``skimage.data`` (astronaut,
chelsea, coffee, rocket, hubble_deep_field, stereo_motorcycle, immunohistochemistry, colorwheel),
scikit-learn ``load_sample_images`` (china, flower) and matplotlib's sample ``grace_hopper.jpg``.
Each photo is centre-cropped to a square, resized to the profile's size, and gets one condition per task:
fill (a rectangle and a prompt from the world's vocabulary; no target), extend (border bands; the
original photo is the target) and removal (a rectangle; no target).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "stereo_motorcycle",
                  "immunohistochemistry", "colorwheel")


def iter_photos() -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, HxWx3 uint8) for every bundled photo, in a fixed order."""
    import skimage.data

    for name in SKIMAGE_PHOTOS:
        img = getattr(skimage.data, name)()
        yield name, img[0] if isinstance(img, tuple) else img
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    for fname, img in zip(bunch.filenames, bunch.images):
        yield fname.rsplit("/", 1)[-1].split(".")[0], img
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        yield "grace_hopper", np.asarray(Image.open(f).convert("RGB"))


def square_resize(img: np.ndarray, size: int) -> np.ndarray:
    img = img[..., :3]
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(np.ascontiguousarray(img[top:top + s, left:left + s]))
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))


def rect_mask(size: int, rng: np.random.Generator, lo: float = 0.3, hi: float = 0.45) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mh, mw = (int(size * rng.uniform(lo, hi)) for _ in range(2))
    top = int(rng.integers(size // 8, size - mh - size // 8 + 1))
    left = int(rng.integers(size // 8, size - mw - size // 8 + 1))
    mask[top:top + mh, left:left + mw] = 255
    return mask


def border_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    sides = rng.choice(4, size=int(rng.integers(1, 4)), replace=False)
    for side in sides:
        band = max(1, int(size * rng.uniform(0.2, 0.35)))
        if side == 0:
            mask[:band] = 255
        elif side == 1:
            mask[-band:] = 255
        elif side == 2:
            mask[:, :band] = 255
        else:
            mask[:, -band:] = 255
    return mask
