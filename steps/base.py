"""Recipe: pretrain the tiny base fill model on the synthetic world (profiles ``smoke`` / ``tiny``).

    python -m steps.base --config configs/base_tiny.yaml            # or --set profile=smoke ...

In production the base is FLUX.1-Fill-dev; here nothing pretrained exists, so the pipeline makes its own:
1. train the VAE (AutoencoderKL) to reconstruct the world's images, then set its latent scale/shift so the
   latents are ~N(0, 1);
2. precompute, once, the target latents and the fill conditions (text encodings, masked-image latents);
3. train the FluxTransformer2DModel with rectified flow matching on masked conditions of all three tasks
   (x_t = (1 - s) x0 + s eps, target velocity eps - x0, s ~ logit-normal); the text encoders stay at their
   random initialisation (frozen), which is enough to tell colours, shapes and words apart;
4. evaluate on the held-out benchmark with the world's per-dimension scores against the untrained
   transformer (same VAE) and OpenCV Telea, and write sample grids and loss curves.
The pipeline is saved in the diffusers FluxFill layout (safetensors), atomically.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steps.config import field, parse_cli
from steps.paths import TINY, ArtifactPaths


@dataclass(frozen=True)
class BaseConfig:
    profile: str = field("tiny", "model sizes: smoke | tiny (the flux profile uses FLUX.1-Fill-dev instead)")
    train_dir: str = field(str(TINY.train), "training split folder (manifest.jsonl)")
    eval_dir: str = field(str(TINY.benchmark), "held-out split used for the quality table and sample grids")
    out_dir: str = field(str(TINY.base_model), "where the pipeline (diffusers layout) and reports go")
    seed: int = field(0, "seed for initialisation, batches and noise")
    threads: int = field(1, "torch CPU threads (two assets side by side on 2 cores: 1 each)")
    vae_steps: int = field(300, "VAE training steps")
    vae_batch: int = field(32, "VAE batch size")
    vae_lr: float = field(2e-3, "VAE learning rate (AdamW, cosine decay)")
    vae_kl_weight: float = field(1e-6, "KL weight of the VAE loss")
    vae_crop: int = field(32, "VAE trains on random square crops of this side (convolutional: 4x cheaper than 64)")
    steps: int = field(1400, "transformer flow-matching steps")
    batch_size: int = field(16, "transformer batch size (measured 0.13 s/step at 16 vs 0.30 at 32, 1 thread)")
    lr: float = field(1e-3, "transformer learning rate (AdamW, warmup then cosine decay)")
    warmup: int = field(30, "linear warmup steps")
    mask_weight: float = field(3.0, "loss weight of latent tokens inside the mask (outside: 1)")
    guidance: float = field(30.0, "distilled-guidance value used in training and sampling (FLUX Fill: 30)")
    sample_steps: int = field(8, "Euler steps when sampling (grids, evaluation)")
    eval_per_task: int = field(24, "benchmark conditions per task in the quality table")
    log_every: int = field(25, "log losses every N steps")
    world_pool: int = field(0, "> 0: train on this many world conditions generated at the foundation indices "
                               "(steps.training.FOUNDATION_INDEX_OFFSET) instead of train_dir (the foundation job)")
    checkpoint_dir: str = field("", "resumable checkpoints here every checkpoint_every steps; empty = none")
    checkpoint_every: int = field(500, "steps between checkpoints (VAE and transformer phases alike)")

    def __post_init__(self):
        if self.profile not in ("smoke", "tiny"):
            raise ValueError(f"profile must be smoke or tiny (flux loads FLUX.1-Fill-dev), got {self.profile!r}")
        for name in ("vae_steps", "steps", "batch_size", "vae_batch", "sample_steps", "eval_per_task"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    @classmethod
    def for_profile(cls, profile: str, root: str | os.PathLike = ".", **overrides: Any) -> BaseConfig:
        """Defaults per profile with paths under ``root``; ``overrides`` win."""
        paths = ArtifactPaths(Path(root), profile)
        values: dict[str, Any] = dict(profile=profile, train_dir=str(paths.train), eval_dir=str(paths.benchmark),
                                      out_dir=str(paths.base_model))
        if profile == "smoke":
            values.update(vae_steps=40, steps=40, batch_size=16, vae_batch=16, eval_per_task=4, log_every=10,
                          sample_steps=4)
        values.update(overrides)
        return cls(**values)


def train_vae(pipe, images, cfg: BaseConfig, log, start: int = 0, curve: list[float] | None = None,
              opt_state: dict | None = None, on_step=None) -> list[float]:
    """Reconstruction + tiny KL from step ``start``; returns the loss curve. ``images``: float Nx3xHxW in [-1, 1].

    ``on_step(step, optimizer, scheduler, curve)`` runs after every step (checkpoints)."""
    import torch
    from tqdm import tqdm

    from steps.training import adamw, step_rng

    vae = pipe.vae
    vae.train().requires_grad_(True)
    opt, sched = adamw(vae.parameters(), cfg.vae_lr, 0.0, min(20, cfg.vae_steps // 10 + 1), cfg.vae_steps)
    if opt_state:
        opt.load_state_dict(opt_state["optimizer"])
        sched.load_state_dict(opt_state["scheduler"])
    curve = list(curve or [])
    side = images.shape[-1]
    crop = min(cfg.vae_crop, side)
    for step in tqdm(range(start, cfg.vae_steps), desc="base: VAE", unit="step", mininterval=5, initial=start,
                     total=cfg.vae_steps):
        rng = step_rng(cfg.seed, 1, step)
        x = images[torch.as_tensor(rng.integers(0, len(images), cfg.vae_batch))]
        if crop < side:
            top, left = (int(v) for v in rng.integers(0, side - crop + 1, 2) // 8 * 8)
            x = x[..., top:top + crop, left:left + crop]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=torch.Generator().manual_seed(int(rng.integers(2**62))))).sample
        loss = torch.nn.functional.mse_loss(rec, x) + cfg.vae_kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        curve.append(loss.item())
        if step % cfg.log_every == 0 or step == cfg.vae_steps - 1:
            log({"base/vae_loss": float(np.mean(curve[-cfg.log_every:]))}, step)
        if on_step:
            on_step(step + 1, opt, sched, curve)
    vae.eval().requires_grad_(False)
    return curve


def set_latent_normalisation(pipe, images) -> tuple[float, float]:
    """Choose the VAE's shift/scaling factors so scaled latents of the world have mean 0 and std 1."""
    import torch

    with torch.no_grad():
        lat = torch.cat([pipe.vae.encode(images[i:i + 128]).latent_dist.mode() for i in range(0, len(images), 128)])
    shift, scale = float(lat.mean()), float(1.0 / lat.std())
    pipe.vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    return shift, scale


def encode_dataset(pipe, samples, batch: int = 128):
    """(packed target latents, FillConditions) for every sample, computed once without grad."""
    import torch

    from steps.models.denoise import FillConditions, encode_conditions, to_image_tensor

    conds, targets = [], []
    with torch.no_grad():
        for i in range(0, len(samples), batch):
            chunk = samples[i:i + batch]
            cond = encode_conditions(pipe, np.stack([s.image for s in chunk]), np.stack([s.mask for s in chunk]),
                                     [s.prompt for s in chunk])
            x = to_image_tensor(np.stack([s.target for s in chunk])) * 2 - 1
            lat = pipe.vae.encode(x).latent_dist.mode()
            lat = (lat - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
            targets.append(pipe._pack_latents(lat, *lat.shape))
            conds.append(cond)
    first = conds[0]
    merged = FillConditions(
        prompt_embeds=torch.cat([c.prompt_embeds for c in conds]),
        pooled_prompt_embeds=torch.cat([c.pooled_prompt_embeds for c in conds]),
        text_ids=first.text_ids, masked_image_latents=torch.cat([c.masked_image_latents for c in conds]),
        latent_image_ids=first.latent_image_ids, height=first.height, width=first.width)
    return torch.cat(targets), merged


def latent_mask_weights(pipe, samples, weight: float):
    """Per-token loss weights (N, tokens, 1): ``weight`` where the packed 2x2 latent patch touches the mask."""
    import torch

    f = pipe.vae_scale_factor * 2
    m = torch.as_tensor(np.stack([s.mask for s in samples]) > 127, dtype=torch.float32)[:, None]
    pooled = torch.nn.functional.max_pool2d(m, f)  # N x 1 x H/f x W/f
    return (1 + (weight - 1) * pooled.flatten(1))[..., None]


def train_transformer(pipe, targets, cond, weights, cfg: BaseConfig, log, start: int = 0,
                      curve: list[float] | None = None, opt_state: dict | None = None, on_step=None) -> list[float]:
    """Rectified flow matching on masked conditions from step ``start``; returns the loss curve."""
    import torch
    from tqdm import tqdm

    from steps.models.denoise import velocity
    from steps.training import adamw, step_rng, torch_generator

    tr = pipe.transformer
    tr.train().requires_grad_(True)
    opt, sched = adamw(tr.parameters(), cfg.lr, 0.01, cfg.warmup, cfg.steps)
    if opt_state:
        opt.load_state_dict(opt_state["optimizer"])
        sched.load_state_dict(opt_state["scheduler"])
    curve = list(curve or [])
    for step in tqdm(range(start, cfg.steps), desc="base: transformer", unit="step", mininterval=5, initial=start,
                     total=cfg.steps):
        rng = step_rng(cfg.seed, 2, step)
        gen = torch_generator(rng)
        idx = torch.as_tensor(rng.integers(0, len(targets), cfg.batch_size))
        x0 = targets[idx]
        eps = torch.randn(x0.shape, generator=gen)
        s = torch.sigmoid(torch.randn(len(idx), generator=gen))[:, None, None]
        xt = (1 - s) * x0 + s * eps
        v = velocity(pipe, tr, xt, s.flatten() * 1000, cond.select(idx), cfg.guidance)
        w = weights[idx]
        loss = (w * (v - (eps - x0)) ** 2).mean() / w.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tr.parameters(), 1.0)
        opt.step()
        sched.step()
        curve.append(loss.item())
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            log({"base/loss": float(np.mean(curve[-cfg.log_every:])), "base/lr": sched.get_last_lr()[0]}, step)
        if on_step:
            on_step(step + 1, opt, sched, curve)
    tr.eval().requires_grad_(False)
    return curve


def sample_outputs(pipe, samples, cfg: BaseConfig, transformer=None, batch: int = 64) -> np.ndarray:
    """Fill every sample with the pipeline (fixed seed): N x H x W x 3 uint8."""
    import torch

    from steps.models.denoise import decode, denoise, encode_conditions

    outs = []
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    with torch.no_grad():
        for i in range(0, len(samples), batch):
            chunk = samples[i:i + batch]
            cond = encode_conditions(pipe, np.stack([s.image for s in chunk]), np.stack([s.mask for s in chunk]),
                                     [s.prompt for s in chunk])
            lat = denoise(pipe, cond, cfg.sample_steps, cfg.guidance, generator=gen, transformer=transformer)
            img = decode(pipe, lat, cond.height, cond.width)
            outs.append((img.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
    return np.concatenate(outs)


def quality_table(samples, outputs) -> dict[str, float]:
    """Mean world score per task x dimension: {"<task>/<dimension>": mean}."""
    from steps.world import score

    acc: dict[str, list[float]] = {}
    for s, out in zip(samples, outputs):
        for dim, v in score(out, s).items():
            acc.setdefault(f"{s.task}/{dim}", []).append(v)
    return {k: float(np.mean(v)) for k, v in sorted(acc.items())}


def sample_grids(samples, systems: dict[str, np.ndarray], out_dir: Path, per_task: int = 4) -> list[Path]:
    """One PNG per task; rows: conditions; columns: source | mask | <systems...> | target."""
    from steps.viz import image_grid, save_image

    paths = []
    for task in ("fill", "extend", "removal"):
        idx = [i for i, s in enumerate(samples) if s.task == task][:per_task]
        rows = [[samples[i].image, samples[i].mask, *(out[i] for out in systems.values()), samples[i].target]
                for i in idx]
        grid = image_grid(rows, ["source", "mask", *systems, "target"], [f"{samples[i].prompt}" for i in idx],
                          title=f"base model samples: {task}")
        paths.append(save_image(grid, out_dir / f"samples_{task}.png"))
    return paths


def loss_plot(curves: dict[str, list[float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.2))
    for ax, (name, curve) in zip(np.atleast_1d(axes), curves.items()):
        k = max(1, len(curve) // 50)
        smooth = np.convolve(curve, np.ones(k) / k, mode="valid")
        ax.plot(smooth)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_yscale("log")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


BASE_RESUME_MUST_MATCH = ("profile", "seed", "world_pool", "train_dir", "vae_steps", "vae_batch", "vae_lr", "vae_crop",
                          "steps", "batch_size", "lr", "warmup", "mask_weight", "guidance")


def _training_samples(cfg: BaseConfig, spec) -> list:
    from steps.datasets import load_samples
    from steps.training import world_pool

    if cfg.world_pool:
        return world_pool(spec.image_size, cfg.world_pool)
    samples = load_samples(cfg.train_dir)
    if samples[0].image.shape[0] != spec.image_size:
        raise ValueError(f"{cfg.train_dir}: images are {samples[0].image.shape[0]} px but the {cfg.profile} "
                         f"policy expects {spec.image_size} px (params.yaml datasets.{cfg.profile}.size)")
    return samples


def _eval_samples(cfg: BaseConfig, spec) -> list:
    from steps.datasets import load_samples
    from steps.training import FOUNDATION_INDEX_OFFSET, world_pool

    if cfg.world_pool:  # held out from the pool: the indices after it
        pool = world_pool(spec.image_size, 8 * cfg.eval_per_task, offset=FOUNDATION_INDEX_OFFSET + cfg.world_pool)
        per: dict[str, list] = {}
        for s in pool:
            per.setdefault(s.task, []).append(s)
        return [s for task in ("fill", "extend", "removal") for s in per.get(task, [])[:cfg.eval_per_task]]
    return load_samples(cfg.eval_dir, limit_per_task=cfg.eval_per_task)


def pretrain(cfg: BaseConfig, log=None) -> dict[str, Any]:
    """Run the recipe (resuming from ``cfg.checkpoint_dir`` when it holds a checkpoint); returns
    {"model_dir", "quality", "init_quality", "telea_quality", "grids", ...}."""
    import torch

    from steps.baselines import telea
    from steps.io import atomic_write_json
    from steps.models.denoise import to_image_tensor
    from steps.models.policy import build_tiny_fill_pipeline, count_params, save_pipeline, spec_for
    from steps.runtime import setup
    from steps.checkpoints import Checkpointer as Checkpoints
    from steps.checkpoints import check_resume, load_module, module_tensors

    setup(threads=cfg.threads)
    log = log or (lambda metrics, step: None)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    out_dir = Path(cfg.out_dir)
    reports = out_dir.parent / f"{out_dir.name}_report"
    spec = spec_for(cfg.profile)
    pipe = build_tiny_fill_pipeline(spec, seed=cfg.seed)
    init_transformer = copy.deepcopy(pipe.transformer)
    samples = _training_samples(cfg, spec)
    ckpt = Checkpoints(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    latest = ckpt.latest() if ckpt else None
    state: dict[str, Any] = {"phase": "vae", "step": 0, "vae_curve": [], "curve": [], "seconds": 0.0}
    opt_state = None
    if latest is not None:
        names = ["vae"] + (["transformer"] if "transformer" in json.loads((latest / "state.json").read_text())["phase"]
                           else [])
        tensors, opt_state, state = ckpt.load(latest, names, ["optimizer", "scheduler"])
        check_resume(latest, state.get("config"), asdict(cfg), BASE_RESUME_MUST_MATCH)
        load_module(pipe.vae, tensors["vae"])
        if "transformer" in tensors:
            load_module(pipe.transformer, tensors["transformer"])
        print(f"base: resuming from {latest} ({state['phase']} step {state['step']})", flush=True)
    elapsed = float(state.get("seconds", 0.0))

    def saver(phase: str, offset: int, extra: dict):
        def on_step(step, opt, sched, curve):
            if ckpt and (step % cfg.checkpoint_every == 0):
                groups = {"vae": module_tensors(pipe.vae)}
                if phase == "transformer":
                    groups["transformer"] = module_tensors(pipe.transformer)
                ckpt.save(offset + step, groups, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
                          {**extra, "config": asdict(cfg), "phase": phase, "step": step, "curve" if phase == "transformer" else "vae_curve":
                           list(curve), "seconds": elapsed + time.perf_counter() - t0})
        return on_step

    pixels = to_image_tensor(np.stack([s.target for s in samples] + [s.image for s in samples])) * 2 - 1
    if state["phase"] == "vae":
        vae_curve = train_vae(pipe, pixels, cfg, log, start=state["step"], curve=state["vae_curve"],
                              opt_state=opt_state, on_step=saver("vae", 0, {}))
        shift, scale = set_latent_normalisation(pipe, pixels[: len(samples)])
        start, curve, opt_state = 0, [], None
    else:
        vae_curve, start, curve = state["vae_curve"], state["step"], state["curve"]
        shift, scale = state["latent_shift"], state["latent_scale"]
        pipe.vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    del pixels
    t_vae = time.perf_counter() - t0
    targets, cond = encode_dataset(pipe, samples)
    weights = latent_mask_weights(pipe, samples, cfg.mask_weight)
    extra = {"vae_curve": vae_curve, "latent_shift": shift, "latent_scale": scale}
    curve = train_transformer(pipe, targets, cond, weights, cfg, log, start=start, curve=curve, opt_state=opt_state,
                              on_step=saver("transformer", cfg.vae_steps, extra))
    t_train = time.perf_counter() - t0

    save_pipeline(pipe, out_dir, spec)
    evals = _eval_samples(cfg, spec)
    outputs = sample_outputs(pipe, evals, cfg)
    init_outputs = sample_outputs(pipe, evals, cfg, transformer=init_transformer)
    telea_outputs = np.stack([telea(s.image, s.mask) for s in evals])
    result = {
        "model_dir": str(out_dir),
        "quality": quality_table(evals, outputs),
        "init_quality": quality_table(evals, init_outputs),
        "telea_quality": quality_table(evals, telea_outputs),
        "transformer_params": count_params(pipe.transformer),
        "vae_params": count_params(pipe.vae),
        "latent_shift": shift, "latent_scale": scale,
        "vae_steps": cfg.vae_steps, "steps": cfg.steps, "n_train_conditions": len(samples),
        "vae_final_loss": float(np.mean(vae_curve[-20:])), "final_loss": float(np.mean(curve[-20:])),
        "seconds_vae": t_vae, "seconds_total_train": t_train, "seconds_total": time.perf_counter() - t0,
        "seconds_including_resumed": elapsed + time.perf_counter() - t0,
        "config": asdict(cfg),
    }
    result["grids"] = [str(p) for p in sample_grids(evals, {"base": outputs, "untrained": init_outputs,
                                                            "telea": telea_outputs}, reports)]
    result["loss_plot"] = str(loss_plot({"VAE loss": vae_curve, "flow-matching loss": curve}, reports / "losses.png"))
    atomic_write_json(reports / "quality.json", result)
    result["report"] = str(reports / "quality.json")
    return result


def main(argv: list[str] | None = None) -> None:
    cfg, _ = parse_cli(BaseConfig, __doc__, argv)
    result = pretrain(cfg, log=lambda m, s: None)
    print(json.dumps({k: result[k] for k in ("model_dir", "quality", "init_quality", "telea_quality",
                                             "seconds_total")}, indent=2))


if __name__ == "__main__":
    main()
