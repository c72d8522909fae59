"""Pictures people would rather look at than read: image grids with labels (PIL only, fast)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from steps.io import atomic_write_bytes


@lru_cache(maxsize=4)
def font(size: int = 11) -> ImageFont.ImageFont:
    try:
        import matplotlib.font_manager as fm

        return ImageFont.truetype(fm.findfont("DejaVu Sans"), size)
    except Exception:
        return ImageFont.load_default()


def _to_rgb(img: np.ndarray, cell: int) -> Image.Image:
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    im = Image.fromarray(arr).convert("RGB")
    return im.resize((cell, cell), Image.Resampling.NEAREST)


def image_grid(rows: list[list[np.ndarray]], columns: list[str], row_labels: list[str] | None = None,
               cell: int = 96, title: str = "") -> Image.Image:
    """Tile ``rows`` (each a list of HxW[x3] images) under column headers, with optional row labels."""
    label_w = 150 if row_labels else 0
    head = 18 + (18 if title else 0)
    pad = 4
    ncol = max(len(r) for r in rows) if rows else len(columns)
    W = label_w + ncol * (cell + pad) + pad
    H = head + len(rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill="black", font=font(12))
    for j, name in enumerate(columns):
        draw.text((label_w + pad + j * (cell + pad), head - 16), name, fill="black", font=font(11))
    for i, row in enumerate(rows):
        y = head + pad + i * (cell + pad)
        if row_labels:
            words, line, lines = row_labels[i].split(), "", []
            for w in words:
                if len(line) + len(w) > 22:
                    lines.append(line)
                    line = ""
                line = f"{line} {w}".strip()
            lines.append(line)
            for k, text in enumerate(lines[:6]):
                draw.text((pad, y + k * 13), text, fill="black", font=font(10))
        for j, img in enumerate(row):
            canvas.paste(_to_rgb(img, cell), (label_w + pad + j * (cell + pad), y))
    return canvas


def save_image(img: Image.Image, path: str | os.PathLike) -> Path:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
