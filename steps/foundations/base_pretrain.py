"""Recipe: pretrain the tiny base fill model on the synthetic world (profiles ``smoke`` / ``tiny``).

    python -m steps.foundations.base_pretrain --profile tiny                             # configs/tiny.yaml, section base

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steps.config import Profiled, field
from steps.fields import Batched, Checkpoints, Guided, Optimiser, Seeded, Threaded
from steps.foundations.base_report import loss_plot, quality_table, sample_grids, sample_outputs
from steps.paths import TINY, ArtifactPaths
from steps.training.recipe import Recipe, run_cli


@dataclass(frozen=True)
class BaseConfig(Profiled, Optimiser, Batched, Checkpoints, Guided, Seeded, Threaded):
    """Base pretraining. The optimizer fields (steps.fields.Optimiser) are the transformer's: rectified flow
    matching, AdamW with warmup then cosine decay; a batch is that many conditions (measured on 2 cores: 0.13 s a
    step at 16 against 0.30 at 32, 1 thread). The VAE trains first with its own ``vae_*`` fields. Checkpoints
    cover both phases."""

    SECTION = "base"  # of configs/<profile>.yaml

    profile: str = field("tiny", "model sizes: smoke | tiny (the flux profile uses FLUX.1-Fill-dev instead)")
    train_dir: str = field(str(TINY.train), "training split folder (manifest.jsonl)")
    eval_dir: str = field(str(TINY.benchmark), "held-out split used for the quality table and sample grids")
    out_dir: str = field(str(TINY.base_model), "where the pipeline (diffusers layout) and reports go")
    vae_steps: int = field(300, "VAE training steps")
    vae_batch: int = field(32, "VAE batch size")
    vae_lr: float = field(2e-3, "VAE learning rate (AdamW, cosine decay)")
    vae_kl_weight: float = field(1e-6, "KL weight of the VAE loss")
    vae_crop: int = field(32, "VAE trains on random square crops of this side (convolutional: 4x cheaper than 64)")
    mask_weight: float = field(3.0, "loss weight of latent tokens inside the mask (outside: 1)")
    sample_steps: int = field(8, "Euler steps when sampling (grids, evaluation)")
    eval_per_task: int = field(24, "benchmark conditions per task in the quality table")
    world_pool: int = field(0, "> 0: train on this many world conditions generated at the foundation indices "
                               "(steps.training.draws.FOUNDATION_INDEX_OFFSET) instead of train_dir (the foundation job)")

    def __post_init__(self):
        if self.profile not in ("smoke", "tiny"):
            raise ValueError(f"profile must be smoke or tiny (flux loads FLUX.1-Fill-dev), got {self.profile!r}")
        for name in ("vae_steps", "steps", "batch_size", "vae_batch", "sample_steps", "eval_per_task"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    @classmethod
    def path_defaults(cls, paths: ArtifactPaths, **context: Any) -> dict[str, Any]:
        return dict(train_dir=str(paths.train), eval_dir=str(paths.benchmark), out_dir=str(paths.base_model))


def vae_optimizer(vae, cfg: BaseConfig):
    """AdamW for the VAE phase (warmup, cosine decay over ``vae_steps``): (optimizer, scheduler)."""
    from steps.training.optim import adamw

    return adamw(vae.parameters(), cfg.vae_lr, 0.0, min(20, cfg.vae_steps // 10 + 1), cfg.vae_steps)


def transformer_optimizer(transformer, cfg: BaseConfig):
    """AdamW for the flow-matching phase (``warmup``, cosine decay over ``steps``): (optimizer, scheduler)."""
    from steps.training.optim import adamw

    return adamw(transformer.parameters(), cfg.lr, cfg.weight_decay, cfg.warmup, cfg.steps)


def train_vae(pipe, images, cfg: BaseConfig, log, start: int = 0, curve: list[float] | None = None,
              optim=None, on_step=None) -> list[float]:
    """Reconstruction + tiny KL from step ``start``; returns the loss curve. ``images``: float Nx3xHxW in [-1, 1].

    ``optim``: (optimizer, scheduler) to continue (default: `vae_optimizer`); ``on_step(step, curve)`` runs
    after every step (checkpoints)."""
    import torch

    from steps.training.draws import step_rng
    from steps.training.recipe import due, optimizer_step, progress

    vae = pipe.vae
    vae.train().requires_grad_(True)
    opt, sched = optim or vae_optimizer(vae, cfg)
    curve = list(curve or [])
    side = images.shape[-1]
    crop = min(cfg.vae_crop, side)
    for step in progress(range(start, cfg.vae_steps), "base: VAE"):
        rng = step_rng(cfg.seed, 1, step)
        x = images[torch.as_tensor(rng.integers(0, len(images), cfg.vae_batch))]
        if crop < side:
            top, left = (int(v) for v in rng.integers(0, side - crop + 1, 2) // 8 * 8)
            x = x[..., top:top + crop, left:left + crop]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=torch.Generator().manual_seed(int(rng.integers(2**62))))).sample
        loss = torch.nn.functional.mse_loss(rec, x) + cfg.vae_kl_weight * post.kl().mean()
        optimizer_step(loss, opt, sched)
        curve.append(loss.item())
        if due(step, cfg.log_every, cfg.vae_steps - 1):
            log({"base/vae_loss": float(np.mean(curve[-cfg.log_every:]))}, step)
        if on_step:
            on_step(step + 1, curve)
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
                      curve: list[float] | None = None, optim=None, on_step=None) -> list[float]:
    """Rectified flow matching on masked conditions from step ``start``; returns the loss curve.

    ``optim``: (optimizer, scheduler) to continue (default: `transformer_optimizer`); ``on_step(step, curve)``
    runs after every step (checkpoints)."""
    import torch

    from steps.models.denoise import velocity
    from steps.training.draws import step_rng, torch_generator
    from steps.training.recipe import due, optimizer_step, progress

    tr = pipe.transformer
    tr.train().requires_grad_(True)
    opt, sched = optim or transformer_optimizer(tr, cfg)
    curve = list(curve or [])
    for step in progress(range(start, cfg.steps), "base: transformer"):
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
        optimizer_step(loss, opt, sched, tr.parameters(), clip=1.0)
        curve.append(loss.item())
        if due(step, cfg.log_every, cfg.steps - 1):
            log({"base/loss": float(np.mean(curve[-cfg.log_every:])), "base/lr": sched.get_last_lr()[0]}, step)
        if on_step:
            on_step(step + 1, curve)
    tr.eval().requires_grad_(False)
    return curve


BASE_RESUME_MUST_MATCH = ("profile", "seed", "world_pool", "train_dir", "vae_steps", "vae_batch", "vae_lr", "vae_crop",
                          "steps", "batch_size", "lr", "warmup", "weight_decay", "mask_weight", "guidance")


def _training_samples(cfg: BaseConfig, spec) -> list:
    from steps.data.datasets import load_samples
    from steps.training.draws import world_pool

    if cfg.world_pool:
        return world_pool(spec.image_size, cfg.world_pool)
    samples = load_samples(cfg.train_dir)
    if samples[0].image.shape[0] != spec.image_size:
        raise ValueError(f"{cfg.train_dir}: images are {samples[0].image.shape[0]} px but the {cfg.profile} "
                         f"policy expects {spec.image_size} px (configs/{cfg.profile}.yaml datasets.size)")
    return samples


def _eval_samples(cfg: BaseConfig, spec) -> list:
    from steps.data.datasets import load_samples
    from steps.training.draws import FOUNDATION_INDEX_OFFSET, world_pool

    if cfg.world_pool:  # held out from the pool: the indices after it
        pool = world_pool(spec.image_size, 8 * cfg.eval_per_task, offset=FOUNDATION_INDEX_OFFSET + cfg.world_pool)
        per: dict[str, list] = {}
        for s in pool:
            per.setdefault(s.task, []).append(s)
        return [s for task in ("fill", "extend", "removal") for s in per.get(task, [])[:cfg.eval_per_task]]
    return load_samples(cfg.eval_dir, limit_per_task=cfg.eval_per_task)


class BaseRecipe(Recipe):
    """The base fill model: setup -> train (the VAE phase, then the transformer phase; checkpoints every
    ``checkpoint_every`` steps of either, exact resume) -> the saved pipeline, evaluated (steps/training/recipe.py).

    Checkpoint folders are numbered by the global step (VAE steps, then ``vae_steps`` + transformer steps);
    their state holds the phase and the step within it (``start_step`` is that step)."""

    name = "base"

    def setup(self) -> BaseRecipe:
        import torch

        from steps.models.policy import build_tiny_fill_pipeline, spec_for
        from steps.runtime import setup

        cfg = self.cfg
        setup(threads=cfg.threads)
        torch.manual_seed(cfg.seed)
        self.spec = spec_for(cfg.profile)
        self.pipe = build_tiny_fill_pipeline(self.spec, seed=cfg.seed)
        self.init_transformer = copy.deepcopy(self.pipe.transformer)
        self.samples = _training_samples(cfg, self.spec)
        self.vae_optim = vae_optimizer(self.pipe.vae, cfg)
        self.optim = transformer_optimizer(self.pipe.transformer, cfg)
        self.phase, self.vae_curve, self.curve, self.latent = "vae", [], [], None
        self.resume_from(cfg.checkpoint_dir)
        return self

    def load_checkpoint(self, folder: Path) -> dict[str, Any]:
        phase = json.loads((folder / "state.json").read_text())["phase"]
        modules = {"vae": self.pipe.vae, **({"transformer": self.pipe.transformer} if phase == "transformer" else {})}
        opt, sched = self.optim if phase == "transformer" else self.vae_optim
        state, _ = self.checkpointer.restore(folder, modules, opt, sched, config=asdict(self.cfg),
                                             must_match=BASE_RESUME_MUST_MATCH)
        self.phase, self.vae_curve, self.curve = phase, list(state["vae_curve"]), list(state.get("curve", []))
        if phase == "transformer":
            self.latent = (state["latent_shift"], state["latent_scale"])
        return state

    def save_checkpoint(self, step: int) -> Path:
        """The checkpoint after ``step`` of the current phase."""
        pipe, transformer = self.pipe, self.phase == "transformer"
        modules = {"vae": pipe.vae, **({"transformer": pipe.transformer} if transformer else {})}
        opt, sched = self.optim if transformer else self.vae_optim
        state = {"config": asdict(self.cfg), "phase": self.phase, "vae_curve": self.vae_curve,
                 "seconds": self.seconds_including_resumed()}
        if transformer:
            state.update(curve=self.curve, latent_shift=self.latent[0], latent_scale=self.latent[1])
        return self.checkpointer.save_training((self.cfg.vae_steps if transformer else 0) + step, modules, opt,
                                               sched, {**state, "step": step})

    def on_step(self, step: int, curve: list[float]) -> None:
        if self.checkpointer and step % self.cfg.checkpoint_every == 0:
            if self.phase == "transformer":
                self.curve = curve
            else:
                self.vae_curve = curve
            self.save_checkpoint(step)

    def train(self) -> dict[str, Any]:
        from steps.evaluation.baselines import telea
        from steps.io import atomic_write_json
        from steps.models.denoise import to_image_tensor
        from steps.models.policy import save_pipeline

        cfg, pipe, samples = self.cfg, self.pipe, self.samples
        pixels = to_image_tensor(np.stack([s.target for s in samples] + [s.image for s in samples])) * 2 - 1
        if self.phase == "vae":
            self.vae_curve = train_vae(pipe, pixels, cfg, self.log, start=self.start_step, curve=self.vae_curve,
                                       optim=self.vae_optim, on_step=self.on_step)
            self.latent = set_latent_normalisation(pipe, pixels[: len(samples)])
            self.phase, start = "transformer", 0
        else:
            start = self.start_step
            pipe.vae.register_to_config(shift_factor=self.latent[0], scaling_factor=self.latent[1])
        del pixels
        self.seconds_vae = self.seconds()
        targets, cond = encode_dataset(pipe, samples)
        weights = latent_mask_weights(pipe, samples, cfg.mask_weight)
        self.curve = train_transformer(pipe, targets, cond, weights, cfg, self.log, start=start, curve=self.curve,
                                       optim=self.optim, on_step=self.on_step)
        self.seconds_train = self.seconds()

        out_dir = Path(cfg.out_dir)
        reports = out_dir.parent / f"{out_dir.name}_report"
        save_pipeline(pipe, out_dir, self.spec)
        evals = _eval_samples(cfg, self.spec)
        outputs = sample_outputs(pipe, evals, cfg)
        init_outputs = sample_outputs(pipe, evals, cfg, transformer=self.init_transformer)
        telea_outputs = np.stack([telea(s.image, s.mask) for s in evals])
        self.quality = {"quality": quality_table(evals, outputs), "init_quality": quality_table(evals, init_outputs),
                        "telea_quality": quality_table(evals, telea_outputs)}
        result = self.summary()
        result["grids"] = [str(p) for p in sample_grids(evals, {"base": outputs, "untrained": init_outputs,
                                                                "telea": telea_outputs}, reports)]
        result["loss_plot"] = str(loss_plot({"VAE loss": self.vae_curve, "flow-matching loss": self.curve},
                                            reports / "losses.png"))
        atomic_write_json(reports / "quality.json", result)
        result["report"] = str(reports / "quality.json")
        return result

    def summary(self) -> dict[str, Any]:
        from steps.models.policy import count_params

        cfg, pipe = self.cfg, self.pipe
        shift, scale = self.latent or (None, None)
        return {
            "model_dir": str(Path(cfg.out_dir)), **getattr(self, "quality", {}),
            "transformer_params": count_params(pipe.transformer), "vae_params": count_params(pipe.vae),
            "latent_shift": shift, "latent_scale": scale,
            "vae_steps": cfg.vae_steps, "steps": cfg.steps, "n_train_conditions": len(self.samples),
            "vae_final_loss": float(np.mean(self.vae_curve[-20:])), "final_loss": float(np.mean(self.curve[-20:])),
            "seconds_vae": getattr(self, "seconds_vae", None), "seconds_total_train": getattr(self, "seconds_train", None),
            "seconds_total": self.seconds(), "seconds_including_resumed": self.seconds_including_resumed(),
            "config": asdict(cfg),
        }


def pretrain(cfg: BaseConfig, log=None) -> dict[str, Any]:
    """Run `BaseRecipe` (resuming from ``cfg.checkpoint_dir`` when it holds a checkpoint); returns
    {"model_dir", "quality", "init_quality", "telea_quality", "grids", ...}."""
    return BaseRecipe(cfg, log).run()


def main(argv: list[str] | None = None) -> None:
    run_cli(BaseConfig, __doc__, pretrain, argv, keep=("model_dir", "quality", "init_quality", "telea_quality",
                                                        "seconds_total"))


if __name__ == "__main__":
    main()
