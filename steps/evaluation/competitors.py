"""Competitor outputs for the benchmark: ``competitors/<system>/<benchmark id>.png`` (docs/DESIGN.md §6, §7).

Three kinds of system fill folders of the same layout, one folder per system:
- classical (`CLASSICAL_TASKS`): OpenCV Telea and Navier-Stokes, scikit-image biharmonic on every task,
  PatchMatch (the ``pypatchmatch`` wheel), reflect padding on extend only. They ignore prompts.
- model systems: any FluxFill pipeline directory (``base``, ``static``, ``dynamic``, the current
  ``champion``), sampled by `fill_with_pipeline` with a noise seed per condition (the seed and the
  benchmark id), so every model system starts a condition from the same noise: a paired comparison, and
  outputs that do not depend on batch size or order (up to float rounding of batched matmuls). The registered pyfunc samples the same way.
  Images of another size than the model's resolution are resized to it and the outputs back
  (steps.evaluation.fill). The benchmark keeps RAW outputs (no kept pixels pasted back, unlike the registered model
  and ``python -m steps.registry.infer``), so PSNR/SSIM of the kept region still measure the model's drift.
- user folders: anything a user drops in, checked by `validate_competitor_folder` and copied in.

A folder may carry ``system.json`` (``{"tasks": ["extend"], "kind": ..., ...}``) to say it covers only
some tasks; without one, every benchmark id needs its PNG. Each folder is written to a temporary
sibling and renamed into place (docs/DESIGN.md §9).

    python -m steps.evaluation.competitors --profile tiny --config cfg.yaml          # CompetitorsConfig fields
    python -m steps.evaluation.competitors --set benchmark=data/tiny/benchmark --set out_dir=outputs/x \\
        --set 'models={base: outputs/tiny/base_model}'
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steps.config import Profiled, field, parse_cli, resolve
from steps.fields import Batched, Guided, Seeded, Threaded
from steps.manifest import TASKS, Condition, ManifestError, Problem
from steps.paths import TINY, ArtifactPaths

SYSTEM_FILE = "system.json"
SYSTEM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # safe in MLflow metric keys and paths
# Tasks each classical system is run on; reflect padding is an outpainting method only.
CLASSICAL_TASKS: dict[str, tuple[str, ...]] = {
    "telea": TASKS, "navier_stokes": TASKS, "biharmonic": TASKS, "reflect": ("extend",), "patchmatch": TASKS,
}


@dataclass(frozen=True)
class CompetitorsConfig(Profiled, Batched, Guided, Seeded, Threaded):
    """Competitor outputs; the model systems' noise comes from the seed combined with each benchmark id."""

    SECTION = "competitors"  # of configs/<profile>.yaml

    benchmark: str = field(str(TINY.benchmark), "benchmark split folder (manifest.jsonl) or a manifest path")
    out_dir: str = field(str(TINY.competitors("benchmark")), "where competitors/<system>/<id>.png go")
    classical: tuple[str, ...] = field(("telea", "navier_stokes", "biharmonic", "patchmatch", "reflect"),
                                       "classical systems to run (patchmatch: the pypatchmatch package)")
    models: dict[str, str] = field({}, "model systems: {system name: FluxFill pipeline directory}")
    user_folders: tuple[str, ...] = field((), "user folders of <id>.png to validate and copy in (name = folder name)")
    num_steps: int = field(8, "Euler steps of the model systems")

    def __post_init__(self):
        unknown = sorted(set(self.classical) - set(CLASSICAL_TASKS))
        if unknown:
            raise ValueError(f"unknown classical system(s) {unknown}; known: {sorted(CLASSICAL_TASKS)}")
        for name in [*self.models, *(Path(f).name for f in self.user_folders)]:
            check_system_name(name)
        if self.num_steps < 1 or self.batch_size < 1:
            raise ValueError("num_steps and batch_size must be >= 1")

    @classmethod
    def path_defaults(cls, paths: ArtifactPaths, **context: Any) -> dict[str, Any]:
        """``split``: which benchmark split (benchmark | photos | user)."""
        split = context.get("split", "benchmark")
        return dict(benchmark=str(paths.split(split)), out_dir=str(paths.competitors(split)))

    @classmethod
    def for_profile(cls, profile: str, root: str | os.PathLike = ".", split: str = "benchmark",
                    **overrides: Any) -> CompetitorsConfig:
        return resolve(cls, profile, root, overrides, split=split)


def check_system_name(name: str) -> str:
    if not SYSTEM_NAME.match(name):
        raise ValueError(f"system name {name!r} must match {SYSTEM_NAME.pattern} (it becomes a folder name and "
                         "part of MLflow metric keys)")
    return name


def manifest_path(benchmark: str | os.PathLike) -> Path:
    """A split folder means its manifest.jsonl; a file is the manifest itself."""
    path = Path(benchmark)
    return path / "manifest.jsonl" if path.is_dir() else path


def read_conditions(benchmark: str | os.PathLike) -> list[Condition]:
    from steps.manifest import read_manifest

    return read_manifest(manifest_path(benchmark))


def condition_seed(seed: int, condition_id: str) -> int:
    """The noise seed of one condition: stable across runs, batch sizes, orders and model systems."""
    return (seed * 1_000_003 + zlib.crc32(condition_id.encode("utf-8"))) % (2**63)


def available_classical() -> dict[str, Any]:
    """name -> fn(image, mask) for the classical systems that run here (PatchMatch only if its library loads)."""
    from steps.evaluation.baselines import CLASSICAL

    systems = dict(CLASSICAL)
    try:  # pypatchmatch ships libpatchmatch.so; absent or not loadable on this platform -> not offered
        from patchmatch import patch_match

        if getattr(patch_match, "patchmatch_available", False):
            systems["patchmatch"] = lambda image, mask: patch_match.inpaint(image, mask=mask, patch_size=3)
    except Exception:
        pass
    return systems


# ---------------------------------------------------------------- producing outputs


def _write_system(out_root: Path, system: str, outputs: dict[str, np.ndarray], info: dict[str, Any]) -> Path:
    from steps.io import atomic_dir, write_png

    check_system_name(system)
    with atomic_dir(out_root / system) as tmp:
        for cid, image in outputs.items():
            write_png(tmp / f"{cid}.png", image)
        (tmp / SYSTEM_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return out_root / system


def run_classical(system: str, conditions: list[Condition], out_root: str | os.PathLike) -> Path:
    """Run one classical system on the conditions of its tasks; returns ``out_root/<system>``."""
    from steps.io import read_mask, read_rgb

    systems = available_classical()
    if system not in systems:
        hint = " (install pypatchmatch)" if system == "patchmatch" else ""
        raise ValueError(f"classical system {system!r} is not available{hint}; available: {sorted(systems)}")
    tasks = CLASSICAL_TASKS[system]
    fn = systems[system]
    outputs = {c.id: fn(read_rgb(c.image), read_mask(c.mask)) for c in conditions if c.task in tasks}
    return _write_system(Path(out_root), system, outputs, {"kind": "classical", "tasks": list(tasks)})


def fill_with_pipeline(pipe, images: list[np.ndarray], masks: list[np.ndarray], prompts: list[str],
                       seeds: list[int], num_steps: int = 8, guidance: float = 30.0,
                       batch_size: int = 16) -> list[np.ndarray]:
    """Fill each (image, mask, prompt) with a FluxFill pipeline; HxWx3 uint8 per request.

    Row i starts from Gaussian noise drawn with ``seeds[i]``, so its output does not depend on the batch
    (beyond float rounding: batched matmuls may move a pixel by one level).
    Requests are batched by image size; sides must be multiples of 2 x the VAE scale factor.
    """
    import torch

    from steps.models.denoise import decode, denoise, encode_conditions, latent_shape

    multiple = 2 * pipe.vae_scale_factor
    for i, (image, mask) in enumerate(zip(images, masks)):
        if image.shape[:2] != mask.shape[:2]:
            raise ValueError(f"request {i}: mask {mask.shape[1]}x{mask.shape[0]} differs from image "
                             f"{image.shape[1]}x{image.shape[0]}")
        if image.shape[0] % multiple or image.shape[1] % multiple:
            raise ValueError(f"request {i}: image {image.shape[1]}x{image.shape[0]} must have sides that are "
                             f"multiples of {multiple} for this fill model")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image.shape[:2], []).append(i)
    outputs: list[np.ndarray | None] = [None] * len(images)
    with torch.no_grad():
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                cond = encode_conditions(pipe, np.stack([images[i] for i in chunk]),
                                         np.stack([masks[i] for i in chunk]), [prompts[i] for i in chunk])
                shape = latent_shape(pipe, cond)[1:]
                noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(seeds[i])))
                                     for i in chunk])
                latents = denoise(pipe, cond, num_steps, guidance, noise=noise)
                pixels = decode(pipe, latents, cond.height, cond.width).permute(0, 2, 3, 1).float().cpu()
                for i, out in zip(chunk, (pixels.numpy() * 255).round().astype(np.uint8)):
                    outputs[i] = out
    return outputs  # type: ignore[return-value]


def run_model(system: str, pipeline_dir: str | os.PathLike, conditions: list[Condition],
              out_root: str | os.PathLike, seed: int = 0, num_steps: int = 8, guidance: float = 30.0,
              batch_size: int = 16, pipe=None) -> Path:
    """Fill every condition with the FluxFill pipeline in ``pipeline_dir`` (or an already loaded ``pipe``)."""
    from tqdm import tqdm

    from steps.evaluation.fill import fill_images
    from steps.io import read_mask, read_rgb
    from steps.models.policy import load_fill_pipeline

    pipe = pipe if pipe is not None else load_fill_pipeline(pipeline_dir)
    outputs: dict[str, np.ndarray] = {}
    step = max(batch_size * 4, 1)
    for start in tqdm(range(0, len(conditions), step), desc=f"competitors: {system}", unit="batch", mininterval=5):
        chunk = conditions[start:start + step]
        filled = fill_images(pipe, [read_rgb(c.image) for c in chunk], [read_mask(c.mask) for c in chunk],
                             [c.prompt for c in chunk], [condition_seed(seed, c.id) for c in chunk],
                             num_steps, guidance, batch_size, keep_unmasked=False)
        outputs.update({c.id: out for c, out in zip(chunk, filled)})
    info = {"kind": "model", "tasks": sorted({c.task for c in conditions}), "pipeline": str(pipeline_dir),
            "output": "raw (kept region as the model decoded it, not pasted back)", "seed": seed, "num_steps": num_steps, "guidance": guidance}
    return _write_system(Path(out_root), system, outputs, info)


# ---------------------------------------------------------------- validating and reading folders


def declared_tasks(folder: Path, problems: list[Problem]) -> tuple[str, ...]:
    """The tasks a folder covers: from its system.json, else all of them."""
    file = folder / SYSTEM_FILE
    if not file.is_file():
        return TASKS
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
        tasks = tuple(info["tasks"])
    except (ValueError, KeyError, TypeError) as e:
        problems.append(Problem(str(file), 0, "tasks", f"expected a JSON object with a list 'tasks': {e}"))
        return TASKS
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        problems.append(Problem(str(file), 0, "tasks", f"unknown task(s) {unknown}; expected some of {list(TASKS)}"))
    return tuple(t for t in tasks if t in TASKS)


def validate_competitor_folder(folder: str | os.PathLike, conditions: list[Condition]) -> dict[str, Path]:
    """Check a competitor folder against the benchmark; {benchmark id: PNG path} for the ids it covers.

    Raises `ManifestError` listing every problem, each naming the file and field: the folder or its name,
    ALL missing ids at once, files that are not readable PNGs, and images whose size differs from the
    benchmark image (the manifest line is named too).
    """
    from PIL import Image

    folder = Path(folder)
    problems: list[Problem] = []
    if not folder.is_dir():
        raise ManifestError([Problem(str(folder), 0, "folder", "competitor folder not found")])
    if not SYSTEM_NAME.match(folder.name):
        problems.append(Problem(str(folder), 0, "system", f"folder name {folder.name!r} is not a valid system "
                                                          f"name ({SYSTEM_NAME.pattern})"))
    tasks = declared_tasks(folder, problems)
    found: dict[str, Path] = {}
    missing: list[str] = []
    for c in conditions:
        if c.task not in tasks:
            continue
        path = folder / f"{c.id}.png"
        if not path.resolve().is_relative_to(folder.resolve()):
            problems.append(Problem(str(folder), 0, "ids", f"benchmark id {c.id!r} escapes the folder"))
            continue
        if not path.is_file():
            missing.append(c.id)
            continue
        try:
            with Image.open(path) as im:
                fmt, size = im.format, im.size
                im.load()
        except Exception as e:  # PIL raises many types for corrupt files
            problems.append(Problem(str(path), 0, "image", f"unreadable PNG: {type(e).__name__}: {e}"))
            continue
        if fmt != "PNG":
            problems.append(Problem(str(path), 0, "image", f"not a PNG (format {fmt})"))
            continue
        with Image.open(c.image) as ref:
            want = ref.size
        if size != want:
            problems.append(Problem(str(path), 0, "size", f"size {size[0]}x{size[1]} differs from benchmark image "
                                                          f"{c.id!r} ({want[0]}x{want[1]}, manifest line {c.line})"))
            continue
        found[c.id] = path
    if missing:
        problems.insert(0, Problem(str(folder), 0, "ids", f"{len(missing)} benchmark id(s) without <id>.png: "
                                                          + ", ".join(missing)))
    if problems:
        raise ManifestError(problems, limit=50)
    return found


def load_outputs(folder: str | os.PathLike, conditions: list[Condition]) -> dict[str, np.ndarray]:
    """Validated outputs of one system as {benchmark id: HxWx3 uint8}."""
    from steps.io import read_rgb

    return {cid: read_rgb(path) for cid, path in validate_competitor_folder(folder, conditions).items()}


def list_systems(root: str | os.PathLike) -> list[str]:
    """System folders under a competitors root (hidden and temporary folders skipped), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"competitors folder {root} not found")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def import_folder(folder: str | os.PathLike, conditions: list[Condition], out_root: str | os.PathLike,
                  name: str | None = None) -> Path:
    """Validate a user folder, then copy it in as ``out_root/<name>`` (default: the folder's name)."""
    folder = Path(folder)
    name = check_system_name(name or folder.name)
    found = validate_competitor_folder(folder, conditions)
    from steps.io import atomic_dir

    with atomic_dir(Path(out_root) / name) as tmp:
        for cid, path in found.items():
            shutil.copyfile(path, tmp / f"{cid}.png")
        info = {"kind": "user", "source": str(folder.resolve()),
                "tasks": sorted({c.task for c in conditions if c.id in found})}
        (tmp / SYSTEM_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return Path(out_root) / name


def build_competitors(cfg: CompetitorsConfig) -> dict[str, Any]:
    """Produce every configured system's folder; returns {"systems": {name: folder}, "index": path, ...}."""
    from steps.io import atomic_write_json
    from steps.runtime import setup

    setup(threads=cfg.threads)
    t0 = time.perf_counter()
    conditions = read_conditions(cfg.benchmark)
    out = Path(cfg.out_dir)
    systems: dict[str, str] = {}
    for name in cfg.classical:
        systems[name] = str(run_classical(name, conditions, out))
    for name, pipeline_dir in cfg.models.items():
        systems[name] = str(run_model(name, pipeline_dir, conditions, out, cfg.seed, cfg.num_steps, cfg.guidance,
                                      cfg.batch_size))
    for folder in cfg.user_folders:
        systems[Path(folder).name] = str(import_folder(folder, conditions, out))
    result = {"systems": systems, "n_conditions": len(conditions), "benchmark": str(manifest_path(cfg.benchmark)),
              "seconds": time.perf_counter() - t0}
    atomic_write_json(out / "index.json", result)
    result["index"] = str(out / "index.json")
    return result


def main(argv: list[str] | None = None) -> None:
    cfg, _ = parse_cli(CompetitorsConfig, __doc__, argv)
    print(json.dumps(build_competitors(cfg), indent=2))


if __name__ == "__main__":
    main()
