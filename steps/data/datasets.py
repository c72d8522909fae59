"""Build the versioned datasets: the synthetic world's train/benchmark splits and the real-photo split.

DVC runs these (dvc.yaml, one stage per profile); Dagster asks DVC to reproduce them and reads the data
version (the DVC hash) back. Run by hand:

    python -m steps.data.datasets world  --profile tiny --out data/tiny     # configs/tiny.yaml, section datasets
    python -m steps.data.datasets photos --profile tiny --out data/tiny

Each split is a folder with ``manifest.jsonl`` and PNGs (docs/DESIGN.md §6), written to a temporary folder,
validated with the one manifest reader and only then renamed into place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from steps.config import Profiled, field, parse_cli
from steps.fields import Seeded, TaskMix
from steps.io import atomic_dir, write_png
from steps.manifest import read_manifest, write_manifest
from steps.vocabulary import TASKS as BENCHMARK_TASKS  # fill, extend, removal: bands 0, 1, 2

BENCHMARK_INDEX_OFFSET = 1_000_000  # benchmark samples use indices no train sample can have
BENCHMARK_TASK_STRIDE = 100_000  # task t's benchmark condition i is world index OFFSET + t * STRIDE + i: growing one
# task's count keeps every condition already drawn (fill, extend, removal at t = 0, 1, 2)
# validation samples (what selects or stops during training: the RL guard, release selection) use indices no
# train or benchmark sample has, so nothing chosen during training has seen the benchmark
VALIDATION_INDEX_OFFSET = 3_000_000


@dataclass(frozen=True)
class DatasetConfig(Profiled, TaskMix, Seeded):
    """The synthetic world's datasets: the same seed and sizes give byte-identical files. The task mix
    (steps.fields.TaskMix) is the train split's; the benchmark and validation splits hold a fixed number per task."""

    SECTION = "datasets"  # of configs/<profile>.yaml

    size: int = field(64, "image side in pixels (multiple of 8)")
    n_train: int = field(2000, "training conditions (tasks drawn with task_probs)")
    n_benchmark_per_task: int = field(50, "held-out benchmark conditions per task")
    n_benchmark_by_task: dict[str, int] = field({}, "per-task benchmark counts over n_benchmark_per_task "
                                                   "({extend: 420}: sized for the width of its net win's interval)")
    n_validation_per_task: int = field(50, "validation conditions per task (RL guard and release selection; "
                                           "disjoint from the benchmark)")
    text_fraction: float = field(0.2, "share of fill conditions that ask for a quoted word")
    extend_prompt_fraction: float = field(0.5, "share of extend conditions with a user prompt")

    def __post_init__(self):
        if self.size < 16 or self.size % 8:
            raise ValueError(f"size must be a multiple of 8 and >= 16, got {self.size}")
        if self.n_train < 1 or self.n_benchmark_per_task < 1 or self.n_validation_per_task < 1:
            raise ValueError("n_train, n_benchmark_per_task and n_validation_per_task must be >= 1")
        unknown = sorted(set(self.n_benchmark_by_task) - set(BENCHMARK_TASKS))
        if unknown:
            raise ValueError(f"n_benchmark_by_task: unknown task(s) {unknown}; expected some of {BENCHMARK_TASKS}")
        if not all(1 <= int(n) <= BENCHMARK_TASK_STRIDE for n in self.n_benchmark_by_task.values()):
            raise ValueError(f"n_benchmark_by_task: every count must lie in [1, {BENCHMARK_TASK_STRIDE}], "
                             f"got {dict(self.n_benchmark_by_task)}")
        probs = (self.fill_prob, self.extend_prob, self.removal_prob)
        if min(probs) < 0 or abs(sum(probs) - 1) > 1e-6:
            raise ValueError(f"task probabilities must be >= 0 and sum to 1, got {probs}")

    def world(self):
        from steps.world import WorldConfig

        return WorldConfig(size=self.size, seed=self.seed, text_fraction=self.text_fraction,
                           extend_prompt_fraction=self.extend_prompt_fraction)

    def benchmark_per_task(self) -> dict[str, int]:
        """{task: benchmark conditions}: n_benchmark_per_task, overridden per task by n_benchmark_by_task."""
        return {t: int(self.n_benchmark_by_task.get(t, self.n_benchmark_per_task)) for t in BENCHMARK_TASKS}

    @property
    def task_probs(self) -> tuple[tuple[str, float], ...]:
        return (("fill", self.fill_prob), ("extend", self.extend_prob), ("removal", self.removal_prob))

    @classmethod
    def path_defaults(cls, paths, **context: Any) -> dict[str, Any]:
        return {}


def benchmark_index(task: str, i: int) -> int:
    """The world index of a task's i-th benchmark condition (its band: BENCHMARK_TASK_STRIDE wide)."""
    return BENCHMARK_INDEX_OFFSET + BENCHMARK_TASKS.index(task) * BENCHMARK_TASK_STRIDE + i


def benchmark_half_widths(cfg: DatasetConfig) -> dict[str, float]:
    """{task: the widest 95% half-width its net win can have} on the benchmark this config draws, whatever the
    ratings (steps.evaluation.netwin.worst_case_half_width over each condition's dimensions; no file written)."""
    from steps.evaluation.netwin import half_widths_by_task
    from steps.world import make_sample

    world = cfg.world()
    return half_widths_by_task((task, make_sample(world, benchmark_index(task, i), task).prompt)
                               for task, n in cfg.benchmark_per_task().items() for i in range(n))


def _write_sample(root: Path, sample) -> dict[str, Any]:
    rel = {k: f"{k}s/{sample.id}.png" for k in ("image", "mask", "target", "background")}
    write_png(root / rel["image"], sample.image)
    write_png(root / rel["mask"], sample.mask)
    write_png(root / rel["target"], sample.target)
    write_png(root / rel["background"], sample.background)
    meta = dict(sample.meta, background=rel["background"], source="synthetic")
    return {"id": sample.id, "task": sample.task, "image": rel["image"], "mask": rel["mask"],
            "prompt": sample.prompt, "target": rel["target"], "meta": meta}


def write_split(out: Path, samples, desc: str) -> int:
    """Write samples as a validated split folder, atomically. Returns the record count."""
    with atomic_dir(out) as tmp:
        records = [_write_sample(tmp, s) for s in tqdm(samples, desc=desc, unit="img", mininterval=2)]
        write_manifest(tmp / "manifest.jsonl", records)
        read_manifest(tmp / "manifest.jsonl")  # the same reader every ingestion uses: fail before rename
    return len(records)


def build_world(cfg: DatasetConfig, out: str | os.PathLike) -> dict[str, int]:
    """Write ``out/train``, ``out/validation`` and ``out/benchmark`` from the synthetic world."""
    from steps.world import make_sample

    world = cfg.world()
    out = Path(out)
    rng = np.random.default_rng(cfg.seed)
    tasks = rng.choice([t for t, _ in cfg.task_probs], size=cfg.n_train, p=[p for _, p in cfg.task_probs])
    train = (make_sample(world, i, str(task)) for i, task in enumerate(tasks))
    n_train = write_split(out / "train", train, "train split")
    bench = (make_sample(world, benchmark_index(task, i), task)
             for task, n in cfg.benchmark_per_task().items() for i in range(n))
    n_bench = write_split(out / "benchmark", bench, "benchmark split")
    val = (make_sample(world, VALIDATION_INDEX_OFFSET + t * cfg.n_validation_per_task + i, task)
           for t, task in enumerate(("fill", "extend", "removal")) for i in range(cfg.n_validation_per_task))
    n_val = write_split(out / "validation", val, "validation split")
    return {"train": n_train, "benchmark": n_bench, "validation": n_val}


def build_photos(cfg: DatasetConfig, out: str | os.PathLike) -> int:
    """Write ``out/photos``: bundled real photos with a generated fill, extend and removal mask each."""
    from steps.data.photos import border_mask, iter_photos, rect_mask, square_resize
    from steps.world import COLOURS, SHAPES, object_prompt

    out = Path(out) / "photos"
    rng = np.random.default_rng(cfg.seed + 7)
    with atomic_dir(out) as tmp:
        records = []
        for name, photo in tqdm(list(iter_photos()), desc="photo split", unit="photo"):
            img = square_resize(photo, cfg.size)
            write_png(tmp / f"originals/{name}.png", img)
            for task in ("fill", "extend", "removal"):
                mask = border_mask(cfg.size, rng) if task == "extend" else rect_mask(cfg.size, rng)
                source = img.copy()
                if task == "extend":
                    source[mask == 255] = 128
                cid = f"photo-{name}-{task}"
                write_png(tmp / f"images/{cid}.png", source)
                write_png(tmp / f"masks/{cid}.png", mask)
                prompt = {"fill": object_prompt(str(rng.choice(list(COLOURS))), str(rng.choice(list(SHAPES)))), "extend": "",
                          "removal": "remove"}[task]
                rec = {"id": cid, "task": task, "image": f"images/{cid}.png", "mask": f"masks/{cid}.png",
                       "prompt": prompt, "meta": {"source": "photo", "photo": name}}
                if task == "extend":
                    rec["target"] = f"originals/{name}.png"
                records.append(rec)
        write_manifest(tmp / "manifest.jsonl", records)
        read_manifest(tmp / "manifest.jsonl")
    return len(records)


def main(argv: list[str] | None = None) -> None:
    def extra(p):
        p.add_argument("what", choices=["world", "photos"], help="which dataset to build")
        p.add_argument("--out", required=True, help="output folder, e.g. data/tiny")

    cfg, args = parse_cli(DatasetConfig, __doc__, argv, extra)
    if args.what == "world":
        print(build_world(cfg, args.out))
    else:
        print({"photos": build_photos(cfg, args.out)})


if __name__ == "__main__":
    main()


def split_stats(split_dir: str | os.PathLike) -> dict[str, Any]:
    """Counts per task and prompt kinds of a built split (for metadata and MLflow)."""
    from steps.manifest import read_manifest

    conds = read_manifest(Path(split_dir) / "manifest.jsonl")
    stats: dict[str, Any] = {"n": len(conds)}
    for task in ("fill", "extend", "removal"):
        of_task = [c for c in conds if c.task == task]
        stats[f"n_{task}"] = len(of_task)
        stats[f"n_{task}_user_prompt"] = sum(c.user_prompt for c in of_task)
    stats["n_with_target"] = sum(c.target is not None for c in conds)
    return stats


def preview(split_dir: str | os.PathLike, out_png: str | os.PathLike, per_task: int = 3) -> Path:
    """A PNG grid: per task a few conditions as source | mask | target (blank when unknown)."""
    from steps.io import read_mask, read_rgb
    from steps.manifest import read_manifest
    from steps.viz import image_grid, save_image

    conds = read_manifest(Path(split_dir) / "manifest.jsonl")
    rows, labels = [], []
    for task in ("fill", "extend", "removal"):
        for c in [c for c in conds if c.task == task][:per_task]:
            img = read_rgb(c.image)
            target = read_rgb(c.target) if c.target else np.full_like(img, 255)
            rows.append([img, read_mask(c.mask), target])
            labels.append(f"{c.task}: {c.prompt}")
    grid = image_grid(rows, ["source", "mask", "target"], labels, title=f"{Path(split_dir).name} ({len(conds)} conditions)")
    return save_image(grid, out_png)


def load_samples(split_dir: str | os.PathLike, limit_per_task: int | None = None, limit: int | None = None) -> list:
    """A built split as `steps.world.Sample` objects (ground truth included) for training and scoring.

    The whole manifest is validated; images are read only for the kept conditions (the first
    ``limit_per_task`` of each task, then the first ``limit`` in manifest order)."""
    from steps.io import read_mask, read_rgb
    from steps.manifest import read_manifest
    from steps.world import Sample

    conds = read_manifest(Path(split_dir) / "manifest.jsonl")
    if limit_per_task is not None:
        kept, seen = [], {}
        for c in conds:
            if seen.get(c.task, 0) < limit_per_task:
                kept.append(c)
                seen[c.task] = seen.get(c.task, 0) + 1
        conds = kept
    if limit is not None:
        conds = conds[:limit]
    samples = []
    for c in conds:
        image = read_rgb(c.image)
        background = c.meta.get("background")
        samples.append(Sample(
            id=c.id, task=c.task, prompt=c.prompt, image=image, mask=read_mask(c.mask),
            target=read_rgb(c.target) if c.target else image,
            background=read_rgb(Path(split_dir) / background) if background else image,
            meta=c.meta))
    return samples
