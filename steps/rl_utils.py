"""The pieces of the OneReward RL recipe (steps/rl.py) that are worth testing on their own.

- `draw_step`: every random choice of one training step derived from (seed, step, rank), so a resumed
  run repeats an uninterrupted one exactly and DDP ranks draw different batches of the same task;
- `ConditionBank`: a split's conditions grouped by task, encoded once (`encode_conditions`) and cached;
- `rollout` + `onereward_loss`: DESIGN §4 steps 2-4 (reference image, one-step policy x0 with grad,
  J_e = relu(lambda - P(Yes | policy, reference, q(task, e, prompt))), minimised);
- `PairJudge`: the judge asked every dimension of the same image pairs with each image encoded once and
  the tokenised queries cached (same rewards as `Judge.p_yes` row by row; ~2x faster judge in the step,
  docs/BENCHMARKS.md);
- `EmaWeights`: EMA of the trainable parameters (the released weights; Algorithm 2's reference);
- LoRA on the transformer's attention projections, the adapter-disabled reference, merging;
- checkpoints: one folder per step, written atomically, safetensors + `weights_only` loads;
- `RewardHackingGuard`: the rule that stops training when the judge and held-out signals diverge
  (steps.rl raises `RewardHackingError` with its message).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
    in judge training (steps.judge.masked_source), Bx3xHxW float [0, 1]."""
    from steps.judge import masked_source
    from steps.models.denoise import to_image_tensor

    return to_image_tensor(np.stack([masked_source(s.image, s.mask) for s in samples])).to(device)


# ---------------------------------------------------------------- rollout and loss


def rollout(pipe, cond, policy, reference, num_steps: int, t_index: int, guidance: float,
            noise_seeds: tuple[int, int], autocast: Callable = contextlib.nullcontext):
    """(policy images with grad, reference images without) for one batch of conditions.

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
        x0 = denoise(pipe, cond, num_steps, guidance, noise=e2, stop_at=t_index, grad_last=True,
                     transformer=policy)
        policy_images = decode(pipe, x0, cond.height, cond.width)
    return policy_images, ref_images.detach()


def paste_back(images: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep generated pixels inside the mask only (1 = generate)."""
    return mask * images + (1 - mask) * source.to(images.dtype)


class PairJudge:
    """The judge asked several queries about the same image pairs, without repeating work per query.

    `Judge.p_yes` on the rows of `onereward_loss` (one row per sample and dimension: up to 4 rows per
    pair) preprocesses and encodes every row's images with the vision tower again, back-propagates
    through the vision tower for the detached reference images too, and renders the chat template and
    tokenises every row's text on every call. Here each distinct image is preprocessed and encoded ONCE
    (with grad only where the images carry grad), its features are handed to the language model for every
    row that shows it (`mm_encoder_outputs`), and the token ids of each (query, image token counts) are
    cached for the run. Same inputs to the language model as `Judge.encode_images` (tested); p_yes agrees
    with `Judge.p_yes` to float rounding.
    """

    def __init__(self, judge, max_cached: int = 65536):
        self.judge = judge
        self.max_cached = max_cached
        self.token_cache: dict[tuple[str, tuple[int, ...]], list[int]] = {}

    def token_ids(self, query: str, per_image: tuple[int, ...]) -> list[int]:
        """Token ids of one row's chat text, ``per_image[k]`` <|image_pad|> tokens for image k (cached)."""
        key = (query, per_image)
        ids = self.token_cache.get(key)
        if ids is None:
            pad = "<|image_pad|>"
            parts = self.judge.prompt(query, len(per_image)).split(pad)
            if len(parts) != len(per_image) + 1:
                raise ValueError(f"chat text has {len(parts) - 1} image slots for {len(per_image)} images")
            text = parts[0] + "".join(pad * n + part for n, part in zip(per_image, parts[1:]))
            ids = list(self.judge.tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(self.token_cache) < self.max_cached:
                self.token_cache[key] = ids
        return ids

    def encode_text(self, queries: list[str], per_image: list[tuple[int, ...]]):
        """(input_ids, attention_mask), LEFT padded with the tokenizer's pad id, as `Judge.encode_images`."""
        rows = [self.token_ids(q, n) for q, n in zip(queries, per_image)]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), int(self.judge.tokenizer.pad_token_id), dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
                attention_mask[i, width - len(r):] = 1
        return input_ids, attention_mask

    def image_features(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(per-image vision features, grid_thw) of Bx3xHxW float images; no graph when they carry no grad."""
        from steps.models.judge_preprocess import preprocess

        model = self.judge.model
        grad = torch.is_grad_enabled() and images.requires_grad
        with torch.set_grad_enabled(grad):
            pixel_values, grid_thw = preprocess(images.to(model.device), self.judge.geometry)
            out = model.get_image_features(pixel_values.to(model.dtype), grid_thw, return_dict=True)
        return list(out.pooler_output), grid_thw

    def margin(self, groups: list[torch.Tensor], rows: torch.Tensor, queries: list[str]) -> torch.Tensor:
        """logit_Yes - logit_No for row r = (groups[0][rows[r]], groups[1][rows[r]], ...) asked queries[r]."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        judge, model = self.judge, self.judge.model
        if len(queries) != len(rows):
            raise ValueError(f"{len(rows)} rows for {len(queries)} queries")
        encoded = [self.image_features(g) for g in groups]
        rows_list = [int(r) for r in rows]
        features, grids, per_image = [], [], []
        for r in rows_list:  # row-major: the order the placeholders appear in the text
            counts = []
            for feats, grid in encoded:
                features.append(feats[r])
                grids.append(grid[r])
                counts.append(int(feats[r].shape[0]))
            per_image.append(tuple(counts))
        input_ids, attention_mask = self.encode_text(queries, per_image)
        input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
        out = model(input_ids=input_ids, attention_mask=attention_mask,
                    mm_token_type_ids=(input_ids == judge.image_token_id).long(),
                    image_grid_thw=torch.stack(grids),
                    mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=tuple(features))},
                    use_cache=False, logits_to_keep=1)
        logits = out.logits[:, -1].float()
        return logits[:, judge.yes_id] - logits[:, judge.no_id]

    def p_yes(self, first_images: torch.Tensor, second_images: torch.Tensor, rows: torch.Tensor,
              queries: list[str], extra_images: torch.Tensor | None = None) -> torch.Tensor:
        """P(Yes) of rows (first[rows[r]], second[rows[r]][, extra[rows[r]]]) asked queries[r]."""
        groups = [first_images, second_images] + ([extra_images] if extra_images is not None else [])
        return torch.sigmoid(self.margin(groups, rows, queries))


def onereward_loss(judge, policy_images: torch.Tensor, reference_images: torch.Tensor, task: str,
                   prompts: list[str], lam: float, source_images: torch.Tensor | None = None):
    """Mean over samples of the mean over the sample's dimensions of J_e = relu(lam - P(Yes)).

    Each sample is judged on ``dimensions_for(task, prompt)`` (extend without a user prompt has no
    text_alignment), all pairs in one judge batch. ``judge``: a `Judge` (every row encoded on its own) or
    a `PairJudge` (each image encoded once, tokenised queries cached; same result). Returns (loss, stats)
    with stats a (len(DIMENSIONS[task]), 3) tensor of [sum P(Yes), sum J, count] per dimension (summable
    over ranks).
    """
    from steps.preferences import judge_query
    from steps.world import DIMENSIONS, dimensions_for

    dims = DIMENSIONS[task]
    rows, dim_index, queries = [], [], []
    for i, prompt in enumerate(prompts):
        for e in dimensions_for(task, prompt):
            rows.append(i)
            dim_index.append(dims.index(e))
            queries.append(judge_query(task, e, prompt))
    device = policy_images.device
    rows_t = torch.tensor(rows, device=device)
    if isinstance(judge, PairJudge):
        p_yes = judge.p_yes(policy_images, reference_images, rows_t, queries, source_images).float()
    else:
        extra = source_images[rows_t] if source_images is not None else None
        p_yes = judge.p_yes(policy_images[rows_t], reference_images[rows_t], queries, extra).float()
    j = torch.relu(lam - p_yes)
    counts = torch.bincount(rows_t, minlength=len(prompts)).float()
    per_sample = torch.zeros(len(prompts), device=device).index_add(0, rows_t, j) / counts
    loss = per_sample.mean()
    stats = torch.zeros(len(dims), 3, device=device)
    dim_t = torch.tensor(dim_index, device=device)
    stats[:, 0].index_add_(0, dim_t, p_yes.detach())
    stats[:, 1].index_add_(0, dim_t, j.detach())
    stats[:, 2].index_add_(0, dim_t, torch.ones_like(p_yes))
    return loss, stats


class ModuleCall:
    """The policy as `denoise` calls it: the (possibly DDP/FSDP-wrapped) module plus the model's config."""

    def __init__(self, module, config):
        self.module, self.config = module, config

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def stats_to_metrics(task: str, stats: torch.Tensor) -> dict[str, float]:
    """``reward/<task>/<dimension>`` and ``loss/<task>/<dimension>`` from summed stats."""
    from steps.world import DIMENSIONS

    out = {}
    for e, (p, j, n) in zip(DIMENSIONS[task], stats.tolist()):
        if n > 0:
            out[f"reward/{task}/{e}"] = p / n
            out[f"loss/{task}/{e}"] = j / n
    return out


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


# ---------------------------------------------------------------- reward-hacking guard


@dataclass
class RewardHackingGuard:
    """Stop when the judge says "better" while the held-out truth says "worse".

    Rule (documented in steps/rl.py): the first evaluation (the base model, before any update) is the
    baseline. At a later evaluation a task is flagged when its judge reward (mean P(Yes) of policy vs
    base over its dimensions) exceeds the baseline by more than ``min_rise`` AND some held-out signal of
    that task ("<task>/<name>", in [0, 1], higher = better) is below its baseline by more than
    ``margin``. ``patience`` consecutive flagged evaluations stop training.
    """

    margin: float
    min_rise: float = 0.0
    patience: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)
    strikes: int = 0

    @staticmethod
    def task_means(judge: dict[str, float]) -> dict[str, float]:
        by_task: dict[str, list[float]] = {}
        for key, value in judge.items():
            by_task.setdefault(key.split("/")[0], []).append(value)
        return {t: float(np.mean(v)) for t, v in by_task.items()}

    def update(self, step: int, judge: dict[str, float], heldout: dict[str, float],
               train_rise: dict[str, tuple[float, float]] | None = None) -> str | None:
        """Record one evaluation; returns the stop message when the rule fires, else None.

        ``train_rise``: per task, (first, latest) mean TRAINING reward over a window of steps -- the reward
        RL actually optimises (one-step x0 predictions). A rise there counts like a rise of the held-out
        judge reward: the policy can learn to please the judge on its x0 predictions while its full samples
        get worse, which the held-out judge reward alone does not show."""
        self.history.append({"step": step, "judge": dict(judge), "heldout": dict(heldout),
                             "train_reward": {t: list(v) for t, v in (train_rise or {}).items()}})
        if len(self.history) == 1:
            return None
        base = self.history[0]
        judge_now, judge_base = self.task_means(judge), self.task_means(base["judge"])
        found = []
        for key, value in heldout.items():
            task = key.split("/")[0]
            if key not in base["heldout"] or task not in judge_now or task not in judge_base:
                continue
            drop = base["heldout"][key] - value
            rises = [(judge_now[task] - judge_base[task], "held-out judge reward", judge_base[task], judge_now[task])]
            if train_rise and task in train_rise:
                first, latest = train_rise[task]
                rises.append((latest - first, "training reward", first, latest))
            rise, what, before, now = max(rises)
            if rise > self.min_rise and drop > self.margin:
                found.append(f"{task}: {what} {before:.3f} -> {now:.3f} while "
                             f"held-out {key} {base['heldout'][key]:.3f} -> {value:.3f}")
        self.strikes = self.strikes + 1 if found else 0
        self.history[-1]["flags"] = found
        if found and self.strikes >= self.patience:
            return (f"reward hacking suspected at step {step} ({self.strikes} evaluation(s) in a row): "
                    + "; ".join(found) + f" (margin {self.margin}, baseline = step {base['step']}). Training "
                    "stopped; lower lr, raise ema_tau or retrain the judge (guard_every=0 turns this off).")
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "strikes": self.strikes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history, self.strikes = list(state["history"]), int(state["strikes"])


def heldout_scores(judge, outputs: dict[str, torch.Tensor], base_outputs: dict[str, torch.Tensor],
                   samples: dict[str, list], signal: str, lam: float, device,
                   autocast: Callable = contextlib.nullcontext) -> tuple[dict[str, float], dict[str, float]]:
    """(judge reward of outputs vs the base's per "<task>/<dimension>", held-out signals per "<task>/<name>").

    ``signal``: "world" (`world_signals`) or "kept_region" (`kept_region_signals`).
    """
    scorer = world_signals if signal == "world" else kept_region_signals
    judge_scores, heldout = {}, {}
    for task, images in outputs.items():
        with torch.no_grad(), autocast():
            _, stats = onereward_loss(judge, images.to(device), base_outputs[task].to(device), task,
                                      [s.prompt for s in samples[task]], lam)
        rewards = stats_to_metrics(task, stats.cpu())
        judge_scores.update({k[len("reward/"):]: v for k, v in rewards.items() if k.startswith("reward/")})
        heldout.update(scorer(images.permute(0, 2, 3, 1).numpy(), samples[task]))
    return judge_scores, heldout


def world_signals(outputs: np.ndarray, samples: list) -> dict[str, float]:
    """Mean simulated-annotator score per "<task>/<dimension>" (smoke / tiny: the world knows the truth)."""
    from steps.world import score

    acc: dict[str, list[float]] = {}
    for out, s in zip(outputs, samples):
        for dim, v in score(out, s).items():
            acc.setdefault(f"{s.task}/{dim}", []).append(v)
    return {k: float(np.mean(v)) for k, v in sorted(acc.items())}


def kept_region_signals(outputs: np.ndarray, samples: list) -> dict[str, float]:
    """Fidelity of the kept region (mask == 0) to the source: "<task>/kept_ssim" in [0, 1] and
    "<task>/kept_psnr" in dB (``flux``: no ground truth, but what must not change is known)."""
    from skimage.metrics import structural_similarity

    acc: dict[str, list[tuple[float, float]]] = {}
    for out, s in zip(outputs, samples):
        keep = s.mask <= 127
        if not keep.any():
            continue
        cand, src = np.asarray(out, np.float64), s.image.astype(np.float64) / 255.0
        mse = float(((cand - src) ** 2)[keep].mean())
        psnr = 10 * np.log10(1.0 / max(mse, 1e-10))
        _, ssim_map = structural_similarity(cand.mean(-1), src.mean(-1), data_range=1.0, full=True,
                                            win_size=min(7, (min(keep.shape) // 2) * 2 - 1))
        acc.setdefault(s.task, []).append((psnr, float(np.clip(ssim_map[keep].mean(), 0, 1))))
    out: dict[str, float] = {}
    for task, values in sorted(acc.items()):
        out[f"{task}/kept_ssim"] = float(np.mean([v[1] for v in values]))
        out[f"{task}/kept_psnr"] = float(np.mean([v[0] for v in values]))
    return out
