"""The synthetic world's scenes: procedurally generated conditions with known ground truth (docs/DESIGN.md §5).

It stands in for real data and human annotators in the `tiny` and `smoke` profiles: every sample knows
its clean background, its objects and the requested content, so the world can build fill / extend /
removal conditions AND score any candidate image on every dimension of its task. Deterministic in
(seed, index, task); numpy + PIL at import time (skimage and matplotlib load lazily, torch never).

World content: a smooth two-colour gradient background at a random angle with mild texture (low-amplitude
sinusoidal stripes + bicubic-upsampled 4x4 noise), muted (near-grey) so named colours stand out; objects
are shapes in a named colour, 25-45% of the image side; words are rendered with DejaVu Sans Bold.

How a candidate is scored against that ground truth: steps/world/truth.py.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from steps.vocabulary import (  # noqa: F401 - the world speaks the method's vocabulary (re-exported)
    DIMENSIONS,
    EXTEND_DEFAULT_PROMPT,
    REMOVAL_PROMPT,
    TASKS,
    dimensions_for,
)
from steps.vocabulary import MASKED_GREY as EXTEND_FILL_GREY  # what the model sees in the region to outpaint

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 225),
    "yellow": (245, 230, 40),
    "purple": (140, 40, 190),
    "orange": (250, 140, 10),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
WORDS: tuple[str, ...] = ("SUN", "CAT", "DOG", "SKY", "BOX", "MAP", "STAR", "MOON", "FISH", "TREE", "BIRD",
                          "LAMP")

SUPERSAMPLE = 4  # shapes and glyphs are drawn at 4x and box-filtered down (anti-aliased edges)
_SIDES = ("left", "right", "top", "bottom")


def object_prompt(colour: str, shape: str) -> str:
    """The fill/extend prompt that names an object: "a red circle", "an orange square"."""
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"


@dataclass(frozen=True)
class WorldConfig:
    size: int = 64
    """image side in px (multiple of 8, >= 16; `smoke` uses 32)"""
    seed: int = 0
    """world seed: same seed, index and task give identical samples"""
    text_fraction: float = 0.2
    """share of fill conditions that ask for a quoted word"""
    extend_prompt_fraction: float = 0.5
    """share of extend conditions with a user prompt naming an object in the outpainted border"""
    distractors: int = 1
    """max extra objects outside the mask (0..4)"""

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size < 16 or self.size % 8:
            raise ValueError(f"WorldConfig.size must be an int multiple of 8 and >= 16, got {self.size!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"WorldConfig.seed must be a non-negative int, got {self.seed!r}")
        for name in ("text_fraction", "extend_prompt_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"WorldConfig.{name} must lie in [0, 1], got {value!r}")
        if not isinstance(self.distractors, int) or not 0 <= self.distractors <= 4:
            raise ValueError(f"WorldConfig.distractors must be an int in [0, 4], got {self.distractors!r}")


@dataclass
class Sample:
    id: str
    task: str
    prompt: str
    image: np.ndarray  # HxWx3 uint8 source as shown to the model (extend: masked part mid grey)
    mask: np.ndarray  # HxW uint8, 255 = region to generate, 0 = keep
    target: np.ndarray  # HxWx3 uint8 ground truth for the whole image
    background: np.ndarray  # HxWx3 uint8 clean background (no objects, no text)
    meta: dict  # JSON-serialisable: colour, shape, word, bbox, mask_bbox, seed, index, ...


# ---------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=1)
def _font_path() -> str | None:
    try:
        from matplotlib import font_manager

        return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans", weight="bold"))
    except Exception:  # no matplotlib or no font: PIL's bundled font below
        return None


@functools.lru_cache(maxsize=64)
def _font(px: int) -> ImageFont.FreeTypeFont:
    path = _font_path()
    return ImageFont.truetype(path, px) if path else ImageFont.load_default(px)


def _coverage(size: int, draw) -> np.ndarray:
    """Draw at SUPERSAMPLE x resolution with `draw(ImageDraw)`, box-filter down: HxW float32 in [0, 1]."""
    big = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), 0)
    draw(ImageDraw.Draw(big))
    return np.asarray(big.resize((size, size), Image.BOX), np.float32) / 255.0


def shape_coverage(size: int, shape: str, bbox) -> np.ndarray:
    """Anti-aliased coverage of `shape` filling bbox = (x0, y0, x1, y1) (end exclusive)."""
    x0, y0, x1, y1 = (v * SUPERSAMPLE for v in bbox)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "circle":
        return _coverage(size, lambda d: d.ellipse([x0, y0, x1 - 1, y1 - 1], fill=255))
    if shape == "square":
        return _coverage(size, lambda d: d.rectangle([x0, y0, x1 - 1, y1 - 1], fill=255))
    if shape == "triangle":
        return _coverage(size, lambda d: d.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=255))
    if shape == "diamond":
        return _coverage(size, lambda d: d.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=255))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def word_extent(word: str, font_px: int) -> tuple[int, int]:
    """Ink width and height in px of `word` at font size `font_px`."""
    x0, y0, x1, y1 = _font(font_px * SUPERSAMPLE).getbbox(word)
    return math.ceil((x1 - x0) / SUPERSAMPLE), math.ceil((y1 - y0) / SUPERSAMPLE)


def word_coverage(size: int, word: str, xy, font_px: int) -> np.ndarray:
    """Anti-aliased coverage of `word` whose ink box starts at xy = (x, y)."""
    font = _font(font_px * SUPERSAMPLE)
    ox, oy = font.getbbox(word)[:2]
    pos = (xy[0] * SUPERSAMPLE - ox, xy[1] * SUPERSAMPLE - oy)
    return _coverage(size, lambda d: d.text(pos, word, fill=255, font=font))


def _composite(image: np.ndarray, coverage: np.ndarray, colour: str) -> np.ndarray:
    a = coverage[..., None]
    out = image.astype(np.float32) * (1 - a) + np.array(COLOURS[colour], np.float32) * a
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def render_object(image: np.ndarray, shape: str, colour: str, bbox) -> np.ndarray:
    """`image` with a `colour` `shape` drawn into bbox = (x0, y0, x1, y1)."""
    return _composite(image, shape_coverage(image.shape[0], shape, bbox), colour)


def render_word(image: np.ndarray, word: str, colour: str, xy, font_px: int) -> np.ndarray:
    """`image` with `word` written in `colour`, ink box starting at xy."""
    return _composite(image, word_coverage(image.shape[0], word, xy, font_px), colour)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    c0, c1 = (rng.uniform(60, 190) + rng.uniform(-15, 15, 3) for _ in range(2))
    theta, phi = rng.uniform(0, 2 * np.pi, 2)
    proj = xx * np.cos(theta) + yy * np.sin(theta)
    t = ((proj - proj.min()) / (proj.max() - proj.min()))[..., None]
    img = c0 * (1 - t) + c1 * t
    period = rng.uniform(0.3, 0.6)  # as a fraction of the side: smooth enough for classical inpainting
    stripes = rng.uniform(2, 6) * np.sin(2 * np.pi * (xx * np.cos(phi) + yy * np.sin(phi)) / period
                                         + rng.uniform(0, 2 * np.pi))
    grid = rng.normal(0, 4, (3, 4, 4)).astype(np.float32)
    noise = np.stack([np.asarray(Image.fromarray(g, "F").resize((size, size), Image.BICUBIC)) for g in grid],
                     -1)
    return np.clip(np.round(img + stripes[..., None] + noise), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- conditions


def _grow(bbox, margin: int, size: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = bbox
    return max(0, x0 - margin), max(0, y0 - margin), min(size, x1 + margin), min(size, y1 + margin)


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _place(rng, size: int, w: int, h: int) -> tuple[int, int, int, int]:
    x0, y0 = int(rng.integers(1, size - w)), int(rng.integers(1, size - h))
    return x0, y0, x0 + w, y0 + h


def _box_mask(size: int, bbox) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[bbox[1]:bbox[3], bbox[0]:bbox[2]] = 255
    return mask


def _object_side(rng, size: int, lo: float = 0.25, hi: float = 0.45) -> int:
    return max(4, int(round(rng.uniform(lo, hi) * size)))


def _add_distractors(rng, cfg: WorldConfig, scene: np.ndarray, avoid: list, colour: str):
    """Draw up to cfg.distractors objects (not in `colour`) that overlap no box in `avoid`."""
    placed = []
    for _ in range(int(rng.integers(0, cfg.distractors + 1))):
        side = _object_side(rng, cfg.size, 0.2, 0.3)
        shape = str(rng.choice(SHAPES))
        other = str(rng.choice([c for c in COLOURS if c != colour]))
        for _try in range(30):
            bbox = _place(rng, cfg.size, side, side)
            if not any(_overlaps(_grow(bbox, 1, cfg.size), a) for a in avoid):
                scene = render_object(scene, shape, other, bbox)
                avoid = [*avoid, bbox]
                placed.append({"shape": shape, "colour": other, "bbox": list(bbox)})
                break
    return scene, placed


def _fill(rng, cfg: WorldConfig, bg: np.ndarray, colour: str, shape: str, meta: dict):
    size, margin = cfg.size, max(2, round(0.06 * cfg.size))
    if rng.random() < cfg.text_fraction:
        word = str(rng.choice(WORDS))
        font_px = max(6, int(round(rng.uniform(0.26, 0.34) * size)))
        while font_px > 6 and word_extent(word, font_px)[0] > 0.85 * size:
            font_px -= 1
        w, h = word_extent(word, font_px)
        bbox = _place(rng, size, min(w, size - 2), min(h, size - 2))
        meta.update(word=word, shape=None, font_px=font_px, text_xy=list(bbox[:2]))
        prompt = f'the word "{word}" in {colour}'
    else:
        side = _object_side(rng, size)
        bbox = _place(rng, size, side, side)
        prompt = object_prompt(colour, shape)
    mask_bbox = _grow(bbox, margin, size)
    source, meta["distractors"] = _add_distractors(rng, cfg, bg, [mask_bbox], colour)
    if meta.get("word"):
        target = render_word(source, meta["word"], colour, bbox[:2], meta["font_px"])
    else:
        target = render_object(source, shape, colour, bbox)
    meta.update(bbox=list(bbox), mask_bbox=list(mask_bbox))
    return prompt, source, _box_mask(size, mask_bbox), target


def _extend(rng, cfg: WorldConfig, bg: np.ndarray, colour: str, shape: str, meta: dict):
    size = cfg.size
    sides = [_SIDES[i] for i in rng.permutation(4)[: int(rng.integers(1, 4))]]
    widths = [int(round(rng.uniform(0.2, 0.35) * size)) for _ in sides]
    user = bool(rng.random() < cfg.extend_prompt_fraction)
    if user:  # the named object lies inside the first border band: the model must create it
        widths[0] = int(round(rng.uniform(0.28, 0.35) * size))
        side = min(_object_side(rng, size), widths[0] - 1)
        lo, hi = 1, size - 1 - side
        a, b = int(rng.integers(lo, hi)), {"left": 1, "top": 1}.get(sides[0], size - 1 - side)
        x0, y0 = (b, a) if sides[0] in ("left", "right") else (a, b)
        bbox = (x0, y0, x0 + side, y0 + side)
    else:
        side = _object_side(rng, size)
        bbox = _place(rng, size, side, side)
    mask = np.zeros((size, size), np.uint8)
    for name, w in zip(sides, widths):
        region = {"left": np.s_[:, :w], "right": np.s_[:, size - w:], "top": np.s_[:w, :],
                  "bottom": np.s_[size - w:, :]}[name]
        mask[region] = 255
    target, meta["distractors"] = _add_distractors(rng, cfg, render_object(bg, shape, colour, bbox),
                                                   [bbox], colour)
    source = target.copy()
    source[mask == 255] = EXTEND_FILL_GREY
    ys, xs = np.nonzero(mask)
    mask_bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    meta.update(bbox=list(bbox), mask_bbox=mask_bbox, sides=sides, band_widths=widths, user_prompt=user)
    return (object_prompt(colour, shape) if user else EXTEND_DEFAULT_PROMPT), source, mask, target


def _removal(rng, cfg: WorldConfig, bg: np.ndarray, colour: str, shape: str, meta: dict):
    size, margin = cfg.size, max(2, round(0.06 * cfg.size))
    side = _object_side(rng, size)
    bbox = _place(rng, size, side, side)
    mask_bbox = _grow(bbox, margin, size)
    target, meta["distractors"] = _add_distractors(rng, cfg, bg, [mask_bbox], colour)
    meta.update(bbox=list(bbox), mask_bbox=list(mask_bbox))
    return REMOVAL_PROMPT, render_object(target, shape, colour, bbox), _box_mask(size, mask_bbox), target


def make_sample(cfg: WorldConfig, index: int, task: str) -> Sample:
    """One condition with ground truth; deterministic in (cfg.seed, index, task) and the other cfg fields."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    index = int(index)
    rng = np.random.default_rng([cfg.seed, index, TASKS.index(task)])
    bg = _background(rng, cfg.size)
    colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
    meta = {"seed": cfg.seed, "index": index, "task": task, "size": cfg.size, "colour": colour,
            "shape": shape, "word": None}
    build = {"fill": _fill, "extend": _extend, "removal": _removal}[task]
    prompt, image, mask, target = build(rng, cfg, bg, colour, shape, meta)
    return Sample(f"{task}-{index:06d}", task, prompt, image, mask, target, bg, meta)


def generate(cfg: WorldConfig, n: int, task_probs=(("fill", 0.5), ("extend", 0.25), ("removal", 0.25)),
             start: int = 0) -> list[Sample]:
    """Samples start..start+n-1; each index draws its task from its own seed, so chunks compose."""
    names, probs = [t for t, _ in task_probs], np.array([p for _, p in task_probs], np.float64)
    if unknown := [t for t in names if t not in TASKS]:
        raise ValueError(f"task_probs names unknown task(s) {unknown}; expected {TASKS}")
    if (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f"task_probs must be >= 0 with a positive sum, got {list(task_probs)}")
    cum = np.cumsum(probs) / probs.sum()
    samples = []
    for i in range(start, start + n):
        u = np.random.default_rng([cfg.seed, i, len(TASKS)]).random()
        task = names[min(int(np.searchsorted(cum, u, side="right")), len(names) - 1)]
        samples.append(make_sample(cfg, i, task))
    return samples


# ---------------------------------------------------------------- scores


