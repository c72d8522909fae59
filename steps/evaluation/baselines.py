"""Classical inpainting / outpainting that runs offline on CPU: the competitors that cannot read a prompt.

OpenCV Telea and Navier-Stokes (``cv2.inpaint``), scikit-image biharmonic
(``skimage.restoration.inpaint_biharmonic``) and reflect padding for extend. All take an HxWx3 uint8
image and an HxW uint8 mask (255 = generate) and return HxWx3 uint8.
"""

from __future__ import annotations

import numpy as np


def telea(image: np.ndarray, mask: np.ndarray, radius: int = 3) -> np.ndarray:
    import cv2

    return cv2.inpaint(np.ascontiguousarray(image), (mask > 127).astype(np.uint8), radius, cv2.INPAINT_TELEA)


def navier_stokes(image: np.ndarray, mask: np.ndarray, radius: int = 3) -> np.ndarray:
    import cv2

    return cv2.inpaint(np.ascontiguousarray(image), (mask > 127).astype(np.uint8), radius, cv2.INPAINT_NS)


def biharmonic(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from skimage.restoration import inpaint_biharmonic

    out = inpaint_biharmonic(image.astype(np.float64) / 255.0, mask > 127, channel_axis=-1)
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def reflect(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Extend by mirroring the kept rectangle outwards (the classical outpainting baseline).

    The kept region of an extend condition is a rectangle; pixels outside it are filled by reflecting
    the kept rectangle across its edges (numpy 'symmetric' padding). For other masks falls back to Telea.
    """
    keep = mask <= 127
    rows, cols = np.where(keep.any(axis=1))[0], np.where(keep.any(axis=0))[0]
    if len(rows) == 0 or len(cols) == 0:
        return image.copy()
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    inner = image[top:bottom, left:right]
    if not keep[top:bottom, left:right].all():
        return telea(image, mask)
    h, w = image.shape[:2]
    pad = ((top, h - bottom), (left, w - right), (0, 0))
    while any(p > s for p, s in zip((max(pad[0]), max(pad[1])), inner.shape[:2])):  # reflect in steps
        step = tuple((min(a, inner.shape[0]), min(b, inner.shape[0])) for a, b in pad[:1]) + \
            tuple((min(a, inner.shape[1]), min(b, inner.shape[1])) for a, b in pad[1:2]) + ((0, 0),)
        inner = np.pad(inner, step, mode="symmetric")
        pad = tuple((a - s[0], b - s[1]) for (a, b), s in zip(pad[:2], step[:2])) + ((0, 0),)
    out = np.pad(inner, pad, mode="symmetric")
    out[keep] = image[keep]
    return out


CLASSICAL = {"telea": telea, "navier_stokes": navier_stokes, "biharmonic": biharmonic, "reflect": reflect}
