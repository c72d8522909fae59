"""Resumable checkpoints of a training run, for every recipe (steps/training/recipe.py): one folder per step,
written atomically (a temporary folder, then one rename), the newest ``keep`` kept.

A checkpoint folder ``step_<n>/`` holds safetensors groups of tensors (weights, EMA), ``torch.save`` objects
loaded back with ``weights_only=True`` (optimizer and scheduler state dicts), the Python/numpy/torch RNG
states of every rank and ``state.json`` (the step, the config, curves: whatever the recipe needs). A folder
without ``state.json`` is incomplete and never resumed from; temporary folders start with '.'.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT_PREFIX = "step_"


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in types `torch.load(weights_only=True)` accepts."""
    import torch

    np_state = np.random.get_state(legacy=False)
    state = {"python": random.getstate(),
             "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                       "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                       "gauss": float(np_state["gauss"])},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
                         "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(root: Path, step: int) -> Path:
    return Path(root) / f"{CHECKPOINT_PREFIX}{step:07d}"


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``root`` (temporary folders start with '.' and are skipped)."""
    root = Path(root)
    done = sorted(p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if (p / "state.json").is_file())
    return done[-1] if done else None


def check_resume(folder: Path, saved: dict[str, Any] | None, current: dict[str, Any], fields: tuple[str, ...],
                 remedy: str = "") -> None:
    """Refuse to resume a checkpoint written with other values of ``fields`` (the schedule, the data). Values compare
    as JSON stores them (a tuple as a list); a field the checkpoint's code did not have yet is not compared."""
    if not saved:
        return
    now = json.loads(json.dumps({k: current.get(k) for k in fields}))
    changed = {k: (saved.get(k), now[k]) for k in fields if k in saved and saved[k] != now[k]}
    if changed:
        remedy = remedy or f"use another checkpoint_dir or delete {folder.parent}"
        raise ValueError(f"{folder}: cannot resume, config field(s) differ from the checkpoint's "
                         f"(checkpoint, now): {changed}; {remedy}")


def module_tensors(module) -> dict[str, Any]:
    return {k: v.detach().contiguous() for k, v in module.state_dict().items()}


def load_module(module, tensors: dict[str, Any]) -> None:
    missing, unexpected = module.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _no_barrier() -> None:
    pass


@dataclass
class Checkpointer:
    """Writes and reads the checkpoints of one run under ``root``, from every rank.

    ``sharded``: every rank writes its own weights/optimizer files (FSDP shards); otherwise rank 0 writes them
    (DDP ranks hold identical copies; a single process is rank 0 of 1). RNG states are always per rank.
    ``barrier`` synchronises the ranks (a no-op for one process).
    """

    root: Path
    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] = field(default=_no_barrier)
    keep: int = 2
    sharded: bool = False

    def __post_init__(self):
        self.root = Path(self.root)

    def suffix(self) -> str:
        return f"_rank{self.rank}" if self.sharded else ""

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        return latest_checkpoint(self.root) if self.root.is_dir() else None

    def save(self, step: int, tensors: dict[str, dict[str, Any]], objects: dict[str, Any],
             state: dict[str, Any]) -> Path:
        """``tensors``: {group: {name: tensor}} (safetensors); ``objects``: torch.save'd (state dicts);
        ``state``: JSON. Returns the finished folder."""
        import torch
        from safetensors.torch import save_file

        final = checkpoint_dir(self.root, step)
        tmp = self.root / f".{final.name}.tmp"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
        torch.save(rng_state(), tmp / f"rng_rank{self.rank}.pt")
        if self.sharded or self.rank == 0:
            for name, group in tensors.items():
                cpu = {k: v.detach().to("cpu").contiguous() for k, v in group.items()}
                save_file(cpu, str(tmp / f"{name}{self.suffix()}.safetensors"))
            for name, obj in objects.items():
                torch.save(obj, tmp / f"{name}{self.suffix()}.pt")
        self.barrier()
        if self.rank == 0:
            (tmp / "state.json").write_text(json.dumps({**state, "world_size": self.world_size}, indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in sorted(p for p in self.root.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir())[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
            for stale in self.root.glob(f".{CHECKPOINT_PREFIX}*.tmp"):  # left by a run killed mid-write
                shutil.rmtree(stale, ignore_errors=True)
        self.barrier()
        return final

    def load(self, folder: Path, tensor_names: list[str], object_names: list[str]):
        """(tensors, objects, state) for this rank; restores this rank's RNG states."""
        import torch
        from safetensors.torch import load_file

        state = json.loads((folder / "state.json").read_text())
        suffix = self.suffix()
        tensors = {n: load_file(str(folder / f"{n}{suffix}.safetensors")) for n in tensor_names}
        objects = {n: torch.load(folder / f"{n}{suffix}.pt", weights_only=True) for n in object_names}
        rng_file = folder / f"rng_rank{self.rank}.pt"
        if state["world_size"] == self.world_size and rng_file.is_file():
            set_rng_state(torch.load(rng_file, weights_only=True))
        return tensors, objects, state

    def save_training(self, step: int, modules: dict[str, Any], optimizer, scheduler, state: dict[str, Any],
                      tensors: dict[str, dict[str, Any]] | None = None) -> Path:
        """The usual checkpoint: every module's weights, the optimizer and scheduler, ``state`` (+ the step)
        and any further tensor groups (EMA, the best weights so far)."""
        groups = {name: module_tensors(m) for name, m in modules.items()}
        objects = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        return self.save(step, {**groups, **(tensors or {})}, objects, {"step": step, **state})

    def restore(self, folder: Path, modules: dict[str, Any], optimizer=None, scheduler=None,
                tensor_names: tuple[str, ...] = (), config: dict[str, Any] | None = None,
                must_match: tuple[str, ...] = (), remedy: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
        """Load what `save_training` wrote into ``modules``, the optimizer and the scheduler (when given), after
        refusing a checkpoint whose config differs from ``config`` in ``must_match`` (`check_resume`); returns
        (state, the further tensor groups named in ``tensor_names``)."""
        if config is not None:
            saved = json.loads((folder / "state.json").read_text()).get("config")
            check_resume(folder, saved, config, must_match, remedy)
        objects = [n for n, o in (("optimizer", optimizer), ("scheduler", scheduler)) if o is not None]
        tensors, loaded, state = self.load(folder, [*modules, *tensor_names], objects)
        for name, module in modules.items():
            load_module(module, tensors[name])
        if optimizer is not None:
            optimizer.load_state_dict(loaded["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(loaded["scheduler"])
        return state, {n: tensors[n] for n in tensor_names}
