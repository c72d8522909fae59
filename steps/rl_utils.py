"""The pieces of the OneReward RL recipe (steps/rl.py) that are worth testing on their own.

- `draw_step`: every random choice of one training step derived from (seed, step, rank), so a resumed
  run repeats an uninterrupted one exactly and DDP ranks draw different batches of the same task;
- `ConditionBank`: a split's conditions grouped by task, encoded once (`encode_conditions`) and cached;
- `rollout`: docs/DESIGN.md §4 steps 2-3 (reference image, one-step policy x0 with grad); the reward and loss
  of step 4 are in steps/rl_reward.py;
- `EmaWeights`: EMA of the trainable parameters (the released weights; Algorithm 2's reference);
- LoRA on the transformer's attention projections, the adapter-disabled reference, merging;
- checkpoints: one folder per step, written atomically, safetensors + `weights_only` loads.
The reward-hacking guard is steps/rl_guard.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Attention projections of FluxTransformer2DModel's double blocks (image + text streams) and single blocks.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
CHECKPOINT_PREFIX = "step_"


# ---------------------------------------------------------------- per-step randomness


@dataclass(frozen=True)
class StepDraw:
    """The random choices of one optimizer step on one rank (``indices``/``noise_seeds`` per micro-batch)."""

    task: str
    t_index: int
    indices: list[np.ndarray]
    noise_seeds: list[tuple[int, int]]


def draw_step(seed: int, step: int, rank: int, task_probs: dict[str, float], task_sizes: dict[str, int],
              batch_size: int, t_range: tuple[int, int], micro_batches: int = 1) -> StepDraw:
    """Task and t are shared by all ranks (same work per rank); conditions and noises e1, e2 are per rank.

    Pure in its arguments: no global RNG is read, which is what makes resume exact.
    """
    shared = np.random.default_rng([seed, step, 0])
    tasks = [t for t, p in task_probs.items() if p > 0]
    probs = np.array([task_probs[t] for t in tasks], dtype=np.float64)
    task = tasks[int(shared.choice(len(tasks), p=probs / probs.sum()))]
    t_index = int(shared.integers(t_range[0], t_range[1] + 1))
    indices, seeds = [], []
    for micro in range(micro_batches):
        local = np.random.default_rng([seed, step, 1, rank, micro])
        n = task_sizes[task]
        indices.append(local.choice(n, size=batch_size, replace=n < batch_size))
        e1, e2 = (int(s) for s in local.integers(0, 2**62, size=2))
        seeds.append((e1, e2))
    return StepDraw(task, t_index, indices, seeds)


# ---------------------------------------------------------------- conditions


class ConditionBank:
    """The conditions of a split grouped by task, for batches by index (encoded once when ``cache``)."""

    def __init__(self, pipe, samples: list, cache: bool = True, chunk: int = 64):
        self.pipe = pipe
        self.samples: dict[str, list] = {}
        for s in samples:
            self.samples.setdefault(s.task, []).append(s)
        self.cache: dict[str, Any] = {}
        if cache:
            for task, group in self.samples.items():
                parts = [self._encode(group[i:i + chunk]) for i in range(0, len(group), chunk)]
                self.cache[task] = _concat_conditions(parts)

    def _encode(self, samples: list):
        from steps.models.denoise import encode_conditions

        return encode_conditions(self.pipe, np.stack([s.image for s in samples]),
                                 np.stack([s.mask for s in samples]), [s.prompt for s in samples])

    @property
    def sizes(self) -> dict[str, int]:
        return {task: len(group) for task, group in self.samples.items()}

    def batch(self, task: str, indices) -> tuple[Any, list]:
        """(FillConditions, samples) of ``indices`` into the task's list."""
        picked = [self.samples[task][int(i)] for i in indices]
        if task in self.cache:
            return self.cache[task].select(torch.as_tensor(np.asarray(indices), dtype=torch.long)), picked
        return self._encode(picked), picked


def _concat_conditions(parts: list):
    from steps.models.denoise import FillConditions

    first = parts[0]
    return FillConditions(
        prompt_embeds=torch.cat([p.prompt_embeds for p in parts]),
        pooled_prompt_embeds=torch.cat([p.pooled_prompt_embeds for p in parts]),
        text_ids=first.text_ids,
        masked_image_latents=torch.cat([p.masked_image_latents for p in parts]),
        latent_image_ids=first.latent_image_ids, height=first.height, width=first.width)


def pixels(samples: list, attr: str, device) -> torch.Tensor:
    """Bx3xHxW float [0, 1] (images) or Bx1xHxW {0, 1} (``attr="mask"``) from samples."""
    from steps.models.denoise import to_image_tensor, to_mask_tensor

    stack = np.stack([getattr(s, attr) for s in samples])
    return (to_mask_tensor(stack) if attr == "mask" else to_image_tensor(stack)).to(device)


def judge_source(samples: list, device) -> torch.Tensor:
    """The judge's optional third image: the source with the region to generate blanked to grey, exactly as
    in judge training (steps.vocabulary.masked_source), Bx3xHxW float [0, 1]."""
    from steps.models.denoise import to_image_tensor
    from steps.vocabulary import masked_source

    return to_image_tensor(np.stack([masked_source(s.image, s.mask) for s in samples])).to(device)


# ---------------------------------------------------------------- rollout and loss


def rollout(pipe, cond, policy, reference, num_steps: int, t_index: int, guidance: float,
            noise_seeds: tuple[int, int], autocast: Callable = contextlib.nullcontext, anchor=None):
    """(policy images with grad, reference images without[, anchor]) for one batch of conditions.

    ``anchor``: a context manager yielding the BASE transformer; then a third value is returned, the
    velocity-space anchor mean((v_policy - v_base)^2) on the same x_t at the grad step (Flow-GRPO's KL term
    for rectified flows: it holds the policy near the base where the reward does not ask it to move).

    ``reference``: a context manager yielding the transformer that makes the reference image (frozen
    base, adapter-disabled policy or EMA policy); ``policy``: the trainable transformer (or its DDP
    wrapper). Noises e1 (reference) and e2 (policy) are independent, drawn on CPU from their seeds.
    """
    from steps.models.denoise import decode, denoise, sample_noise

    e1 = sample_noise(pipe, cond, torch.Generator().manual_seed(noise_seeds[0]))
    e2 = sample_noise(pipe, cond, torch.Generator().manual_seed(noise_seeds[1]))
    with torch.no_grad(), autocast(), reference() as ref:
        ref_images = decode(pipe, denoise(pipe, cond, num_steps, guidance, noise=e1, transformer=ref),
                            cond.height, cond.width)
    with autocast():
        x0, x_t, t, v = denoise(pipe, cond, num_steps, guidance, noise=e2, stop_at=t_index, grad_last=True,
                                transformer=policy, with_state=True)
        policy_images = decode(pipe, x0, cond.height, cond.width)
    if anchor is None:
        return policy_images, ref_images.detach()
    from steps.models.denoise import velocity

    with torch.no_grad(), autocast(), anchor() as base:
        v_base = velocity(pipe, base, x_t.detach(), t, cond, guidance)
    return policy_images, ref_images.detach(), (v.float() - v_base.float()).pow(2).mean()


def paste_back(images: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep generated pixels inside the mask only (1 = generate)."""
    return mask * images + (1 - mask) * source.to(images.dtype)


class ModuleCall:
    """The policy as `denoise` calls it: the (possibly DDP/FSDP-wrapped) module plus the model's config."""

    def __init__(self, module, config):
        self.module, self.config = module, config

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)


# ---------------------------------------------------------------- EMA and LoRA


class EmaWeights:
    """shadow <- tau * shadow + (1 - tau) * param, in fp32, for the trainable parameters only."""

    def __init__(self, params: dict[str, torch.nn.Parameter], tau: float):
        self.tau = tau
        self.shadow = {n: p.detach().float().clone() for n, p in params.items()}

    @torch.no_grad()
    def update(self, params: dict[str, torch.nn.Parameter]) -> None:
        for n, p in params.items():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - self.tau)

    @contextlib.contextmanager
    def applied(self, params: dict[str, torch.nn.Parameter]) -> Iterator[None]:
        """Run the model with EMA weights inside the block (copies in place: works on FSDP shards too)."""
        backup = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(backup[n])

    @torch.no_grad()
    def copy_to(self, params: dict[str, torch.nn.Parameter]) -> None:
        for n, p in params.items():
            p.copy_(self.shadow[n])


def add_lora(transformer, rank: int, alpha: float = 0.0) -> None:
    """peft LoRA (adapter "default") on the attention projections; only the adapters train (fp32)."""
    from peft import LoraConfig

    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
                                       target_modules=list(LORA_TARGETS)))
    for name, p in transformer.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
            p.requires_grad_(True)


@contextlib.contextmanager
def adapters_disabled(transformer) -> Iterator[None]:
    """The base model inside the block (Algorithm 1's reference with LoRA: no second copy)."""
    transformer.disable_adapters()
    try:
        yield
    finally:
        transformer.enable_adapters()  # peft re-enables requires_grad on the active adapter


def merge_lora(transformer) -> None:
    """Fold the adapters into the base weights and remove the LoRA layers (a plain transformer again)."""
    transformer.fuse_lora()
    transformer.unload_lora()


def trainable(module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------- checkpoints


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in types `torch.load(weights_only=True)` accepts."""
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
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
                         "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"{CHECKPOINT_PREFIX}{step:07d}"


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``root`` (temporary folders start with '.' and are skipped)."""
    root = Path(root)
    done = sorted(p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if (p / "state.json").is_file())
    return done[-1] if done else None


@dataclass
class CheckpointWriter:
    """Writes one checkpoint folder atomically from every rank: temp folder, per-rank files, one rename.

    ``sharded``: every rank writes its own weights/EMA/optimizer files (FSDP shards); otherwise rank 0
    writes them (DDP ranks hold identical copies). RNG states are always per rank.
    """

    root: Path
    rank: int
    world_size: int
    barrier: Callable[[], None]
    keep: int = 2
    sharded: bool = False

    def suffix(self) -> str:
        return f"_rank{self.rank}" if self.sharded else ""

    def save(self, step: int, tensors: dict[str, dict[str, torch.Tensor]], objects: dict[str, Any],
             state: dict[str, Any]) -> Path:
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
        from safetensors.torch import load_file

        state = json.loads((folder / "state.json").read_text())
        suffix = self.suffix()
        tensors = {n: load_file(str(folder / f"{n}{suffix}.safetensors")) for n in tensor_names}
        objects = {n: torch.load(folder / f"{n}{suffix}.pt", weights_only=True) for n in object_names}
        rng_file = folder / f"rng_rank{self.rank}.pt"
        if state["world_size"] == self.world_size and rng_file.is_file():
            set_rng_state(torch.load(rng_file, weights_only=True))
        return tensors, objects, state


# ---------------------------------------------------------------- reports


def save_sample_grid(samples: list, reference: torch.Tensor, policy: torch.Tensor, path: Path,
                     title: str) -> Path:
    """Rows: source | mask | reference | policy x0 (what the judge compared) | target; at most 4 rows."""
    from steps.viz import image_grid, save_image

    def hwc(x: torch.Tensor) -> np.ndarray:
        return x.permute(1, 2, 0).float().numpy()

    rows = [[s.image, s.mask, hwc(reference[i]), hwc(policy[i]), s.target] for i, s in enumerate(samples[:4])]
    grid = image_grid(rows, ["source", "mask", "reference", "policy x0", "target"],
                      [f"{s.task}: {s.prompt}" for s in samples[:4]], title=title)
    return save_image(grid, path)


def summarise(history: list[dict[str, Any]], window_fraction: float = 0.2) -> dict[str, Any]:
    """Mean reward per key over the last ``window_fraction`` of the steps, and step timings."""
    window = history[-max(1, int(len(history) * window_fraction)):]
    final: dict[str, list[float]] = {}
    for record in window:
        for k, v in record.items():
            if k.startswith("reward/"):
                final.setdefault(k, []).append(v)
    seconds = [r["step_seconds"] for r in history] or [0.0]
    return {"steps_done": history[-1]["step"] if history else 0,
            "final_rewards": {k: float(np.mean(v)) for k, v in sorted(final.items())},
            "step_seconds_median": float(np.median(seconds)), "train_seconds": float(np.sum(seconds))}
