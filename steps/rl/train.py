"""Recipe: OneReward RL of the fill model against the VLM judge (docs/DESIGN.md §4, Algorithms 1 and 2).

    python -m steps.rl.train --profile tiny --config rl.yaml --set reference=dynamic    # any YAML of RLConfig fields (--key a.b)
    torchrun --nproc_per_node 2 -m steps.rl.train --profile tiny --config ...        # 2 CPU processes (gloo), as the tests do
    accelerate launch --config_file configs/accelerate_ddp.yaml -m steps.rl.train --profile tiny --config ...    # GPUs, DDP
    accelerate launch --config_file configs/accelerate_fsdp.yaml -m steps.rl.train --profile flux --config ...   # flux, FSDP

One iteration (per rank; every rank draws the same task and t, its own conditions and noises):
1. task k ~ p_k, a batch of its conditions c (encoded once and cached: `ConditionBank`);
2. reference image: full no-grad denoise from noise e1 by the reference -- ``static`` (Algorithm 1): the
   frozen base (with LoRA: the policy with adapters disabled, no second copy); ``dynamic`` (Algorithm 2):
   the EMA policy;
3. policy image: from independent noise e2, no-grad Euler steps down to a random step t in [t1, t2] of
   the T-step schedule, then ONE x0 prediction with grad, decoded by the frozen VAE;
4. J_e = relu(lambda - P(Yes | policy first, reference second, q(k, e, prompt))) for each dimension e of
   the sample; loss = mean over e, MINIMISED (the paper's "gradient ascent" is a sign slip). The judge is
   frozen; gradients reach the policy pixels through its torch preprocessing;
5. AdamW step on the trainable parameters (all of the transformer, or the LoRA adapters), EMA update.

Exact resume: every random choice of step s comes from (seed, s, rank) (`draw_step`), so a run killed
after the checkpoint at step s and resumed from it ends with exactly the weights of an uninterrupted run
(CPU, same seed). Checkpoints (safetensors weights + EMA, optimizer and scheduler state, per-rank RNG
states, guard state) are one folder per step, written to a temporary folder and renamed.

Reward-hacking guard (steps/rl/validation.py; every guard_every steps, on a fixed held-out batch with fixed noise): the policy's
full samples are scored by signals it never optimises -- the world's per-dimension scores (smoke / tiny)
or the kept region's SSIM to the source (flux) -- and by the judge against the base model's samples.
The first evaluation (the base, step 0) is the baseline; a task is flagged when its judge reward rose
by more than guard_min_rise while one of its held-out signals fell by more than guard_margin; after
guard_patience flagged evaluations in a row training stops with `RewardHackingError`. The evaluation with
the highest mean held-out signal is tracked (`guard/best_step` in MLflow, ``best_heldout`` in the summary)
and its policy + EMA weights are kept outside the rotation in ``out_dir/<reference>_best/step_<n>/``: when
the guard stops a run, that is the checkpoint to look at (`python bench/rl/checkpoint_samples.py --checkpoint
...`). With ``release=best_validation`` (the default) the released model is the EMA of that best evaluation
-- the base's own weights when no step beat it (RL did not help; the promotion gate then keeps it from
becoming champion); ``release=last`` releases the last step's.

Scale-out: `accelerate launch` (DDP: tested on CPU through torchrun + gloo, which is what accelerate's
multi-CPU mode uses; `accelerate launch --cpu` starts one process only). FSDP (per-rank sharded
checkpoints, the EMA weights gathered for release) is written but has not run: no GPUs here. Checkpoint
folders must be on a filesystem every rank sees.

Outputs: ``out_dir/<reference>/`` the released pipeline (diffusers layout) with the EMA weights (LoRA
merged); ``out_dir/<reference>_checkpoints/``; ``out_dir/<reference>_report/`` summary.json and sample
grids (rows: source | mask | reference | policy x0 | target).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steps.config import parse_cli
from steps.paths import PolicyLayout
from steps.rl.config import RESUME_MUST_MATCH, RLConfig
from steps.rl.guard import RewardHackingError
from steps.rl.validation import HeldOutValidation
from steps.training.recipe import Recipe, due, progress

if TYPE_CHECKING:
    pass


class OneRewardRecipe(HeldOutValidation, Recipe):
    """setup -> train -> save (steps/training/recipe.py). ``log(metrics, step)`` and ``log_artifact(path)`` are
    called on the main process only (no-ops by default)."""

    name = "rl"

    def __init__(self, cfg: RLConfig, log=None, log_artifact=None):
        super().__init__(cfg, log)
        self.log_artifact = log_artifact or (lambda path: None)
        layout = PolicyLayout(Path(cfg.out_dir), cfg.reference)
        self.model_dir, self.ckpt_root = layout.model, layout.checkpoints
        self.best_root, self.report_dir = layout.best, layout.report

    # ------------------------------------------------------------------ setup
    def setup(self) -> OneRewardRecipe:
        """Accelerator, models, optimizer, conditions; then resume, or evaluate the base for the guard."""
        import torch
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState, GradientState

        from steps.data.datasets import load_samples
        from steps.rl.guard import RewardHackingGuard
        from steps.rl.rollout import ConditionBank
        from steps.runtime import setup

        cfg = self.cfg
        setup(threads=cfg.threads)
        if cfg.reward == "judge":
            from steps.rl.reward import check_judge

            check_judge(cfg)
        # Accelerate's state is a per-process singleton; forget a previous in-process recipe's precision
        # (tests, notebooks). The process group (PartialState) is kept.
        AcceleratorState._reset_state()
        GradientState._reset_state()
        self.accelerator = Accelerator(mixed_precision=cfg.mixed_precision,
                                       cpu=cfg.cpu or not torch.cuda.is_available())
        self.is_main, self.rank = self.accelerator.is_main_process, self.accelerator.process_index
        self.setup_models()
        self.bank = ConditionBank(self.pipe, load_samples(cfg.train_dir), cache=cfg.cache_conditions)
        missing = [t for t, p in cfg.task_probs.items() if p > 0 and t not in self.bank.sizes]
        if missing:
            raise ValueError(f"{cfg.train_dir}: no conditions of task(s) {missing}, whose probability is > 0")
        self.guard = RewardHackingGuard(cfg.guard_margin, cfg.guard_min_rise, cfg.guard_patience)
        self.heldout = None
        if cfg.guard_every:
            heldout = load_samples(cfg.eval_dir, limit_per_task=cfg.guard_per_task)
            self.heldout = ConditionBank(self.pipe, heldout)
        self.history, self.guard_base, self.last_batch = [], None, None
        self.start_step = self.resume() if cfg.resume else 0
        if not self.start_step and self.heldout is not None:
            self.guard_base = self.generate_heldout()  # the policy IS the base before any update
            self.guard_step(0)
        return self

    def setup_models(self) -> None:
        """Policy (full or LoRA), reference, frozen VAE / text encoders / judge, optimizer, EMA."""
        import torch
        from accelerate.utils import DistributedType

        from steps.models.judge import Judge
        from steps.models.policy import freeze_for_rl, load_fill_pipeline
        from steps.rl.policy import EmaWeights, ModuleCall, add_lora, trainable
        from steps.rl.reward import PairJudge
        from steps.training.checkpoints import Checkpointer
        from steps.training.optim import adamw

        cfg, acc = self.cfg, self.accelerator
        dtype = getattr(torch, cfg.dtype)
        pipe = self.pipe = load_fill_pipeline(cfg.base_dir or None, dtype=dtype)
        freeze_for_rl(pipe)
        pipe.to(acc.device)
        transformer = self.transformer = pipe.transformer
        self.base_reference = None
        if cfg.lora_rank:
            add_lora(transformer, cfg.lora_rank, cfg.lora_alpha)
        else:
            if cfg.reference == "static" or cfg.anchor_beta > 0 or cfg.kl_beta > 0:
                self.base_reference = copy.deepcopy(transformer).requires_grad_(False)
            transformer.float().requires_grad_(True)
        if cfg.reward == "oracle":
            from steps.rl.oracle import OracleReward

            self.judge, self.scorer = None, OracleReward(cfg.oracle_sharpness)
        else:
            self.judge = Judge.load(cfg.judge_dir, dtype=None if cfg.dtype == "float32" else dtype).freeze()
            self.judge.model.to(acc.device)
            # what onereward_loss asks: each image encoded once for all its queries, or every row on its own
            self.scorer = PairJudge(self.judge) if cfg.judge_share_images else self.judge
            if cfg.judge_ensemble:  # the reward only: validation, the guard and the benchmark ask judge_dir alone
                from steps.rl.reward import ensemble_scorer

                self.scorer = ensemble_scorer(cfg, self.scorer, acc.device, dtype)
        if cfg.gradient_checkpointing and self.judge is not None:  # the grad path: one transformer call, the VAE decoder, the judge
            transformer.enable_gradient_checkpointing()
            pipe.vae.enable_gradient_checkpointing()
            no_reentrant = {"use_reentrant": False}  # frozen judge: grads flow to inputs only
            self.judge.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=no_reentrant)
            self.judge.model.train()  # transformers checkpoints in train mode only; Qwen has no dropout

        # fused: one kernel for all tensors (bench/rl/rl_step.py: the CPU for-each-tensor default is ~3x slower);
        # linear warmup, then constant
        optimizer, self.scheduler = adamw(trainable(transformer).values(), cfg.lr, cfg.weight_decay, cfg.warmup,
                                          schedule="constant", fused=acc.device.type in ("cpu", "cuda"))
        self.policy, self.optimizer = acc.prepare(transformer, optimizer)
        self.params = trainable(acc.unwrap_model(self.policy))
        self.policy_forward = ModuleCall(self.policy, transformer.config)
        self.ema = EmaWeights(self.params, cfg.ema_tau)
        self.sharded = acc.distributed_type == DistributedType.FSDP
        self.checkpointer = Checkpointer(self.ckpt_root, self.rank, acc.num_processes, acc.wait_for_everyone,
                                   keep=cfg.keep_checkpoints, sharded=self.sharded)
        # the weights of the best held-out evaluation, outside the rotation (one folder, replaced on a new best)
        self.best_writer = Checkpointer(self.best_root, self.rank, acc.num_processes, acc.wait_for_everyone,
                                        keep=1, sharded=self.sharded)

    @contextlib.contextmanager
    def reference(self):
        """The transformer that makes the reference image (see the module docstring)."""
        from steps.rl.policy import adapters_disabled

        if self.cfg.reference == "dynamic":
            with self.ema.applied(self.params):
                yield self.policy_forward
        elif self.cfg.lora_rank:
            with adapters_disabled(self.accelerator.unwrap_model(self.policy)):
                yield self.policy_forward
        else:
            yield self.base_reference

    @contextlib.contextmanager
    def base_model(self):
        """The frozen base transformer (the anchor): adapter-disabled policy (LoRA) or the kept copy."""
        from steps.rl.policy import adapters_disabled

        if self.cfg.lora_rank:
            with adapters_disabled(self.accelerator.unwrap_model(self.policy)):
                yield self.policy_forward
        else:
            yield self.base_reference

    # ------------------------------------------------------------------ train
    def train(self) -> dict[str, Any]:
        from steps.rl.report import save_sample_grid

        cfg = self.cfg
        for step in progress(range(self.start_step + 1, cfg.steps + 1), f"rl ({cfg.reference})",
                             disable=not self.is_main):
            metrics = self.train_step(step)
            self.history.append({"step": step, **{k: v for k, v in metrics.items() if "/" in k},
                                 "step_seconds": metrics["step_seconds"]})
            if self.is_main and due(step, cfg.log_every, cfg.steps):
                self.log(metrics, step)
            if self.is_main and cfg.sample_every and step % cfg.sample_every == 0:
                grid = self.report_dir / "grids" / f"step_{step:07d}.png"
                self.log_artifact(save_sample_grid(*self.last_batch, grid, f"{cfg.reference}, step {step}"))
            if cfg.guard_every and step % cfg.guard_every == 0:
                try:
                    self.guard_step(step)
                except RewardHackingError as stop:
                    if cfg.release != "best_validation" or not self.guard.best.get("step"):
                        raise
                    # early stopping: the weights of the best validation evaluation are released
                    self.save_checkpoint(step)
                    return self.save_final(status="stopped_by_guard", error=str(stop))
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps:
                self.save_checkpoint(step)
        return self.save_final()

    def train_step(self, step: int) -> dict[str, float]:
        from steps.rl.reward import onereward_loss, stats_to_metrics
        from steps.rl.rollout import draw_step, judge_source, paste_back, pixels, rollout

        cfg, acc = self.cfg, self.accelerator
        t0 = time.perf_counter()
        draw = draw_step(cfg.seed, step, self.rank, cfg.task_probs, self.bank.sizes, cfg.batch_size,
                         cfg.t_range, cfg.grad_accum)
        stats = loss_sum = anchor_sum = 0
        for micro, (indices, seeds) in enumerate(zip(draw.indices, draw.noise_seeds)):
            cond, samples = self.bank.batch(draw.task, indices)
            sync = contextlib.nullcontext() if micro == cfg.grad_accum - 1 else acc.no_sync(self.policy)
            with sync:
                out = rollout(self.pipe, cond, self.policy_forward, self.reference, cfg.denoise_steps,
                              draw.t_index, cfg.guidance, seeds, acc.autocast,
                              anchor=self.base_model if cfg.anchor_beta > 0 else None)
                policy_images, reference_images = out[:2]
                source = pixels(samples, "image", acc.device)
                if cfg.paste_back:
                    mask = pixels(samples, "mask", acc.device)
                    policy_images = paste_back(policy_images, source, mask)
                    reference_images = paste_back(reference_images, source, mask)
                shown = judge_source(samples, acc.device) if cfg.judge_sees_source else None
                with acc.autocast():
                    loss, micro_stats = onereward_loss(
                        self.scorer, policy_images, reference_images, draw.task, [s.prompt for s in samples],
                        cfg.lam, shown, samples=samples)
                if cfg.anchor_beta > 0:
                    anchor_sum = anchor_sum + out[2].detach() / cfg.grad_accum
                    loss = loss + cfg.anchor_beta * out[2]
                acc.backward(loss / cfg.grad_accum)
            stats, loss_sum = stats + micro_stats, loss_sum + loss.detach() / cfg.grad_accum
        grad_norm = acc.clip_grad_norm_(list(self.params.values()), cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.params)
        self.last_batch = (samples, reference_images.detach().float().cpu(),
                           policy_images.detach().float().cpu())
        metrics = stats_to_metrics(draw.task, acc.reduce(stats, reduction="sum").cpu())
        loss_mean = float(acc.reduce(loss_sum, reduction="mean"))
        if cfg.anchor_beta > 0:
            metrics["anchor/velocity_mse"] = float(acc.reduce(anchor_sum, reduction="mean"))
        return {**metrics, "loss": loss_mean, "lr": self.scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm), "t_index": draw.t_index,
                "step_seconds": time.perf_counter() - t0}

    # ------------------------------------------------------------------ checkpoints and outputs
    def save_checkpoint(self, step: int) -> Path:
        tensors = {"policy": {n: p.detach() for n, p in self.params.items()}, "ema": self.ema.shadow}
        if self.guard_base is not None:
            tensors["guard_base"] = self.guard_base
        objects = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        state = {"step": step, "config": self.cfg.params(), "guard": self.guard.state_dict(),
                 "history": self.history}
        return self.checkpointer.save(step, tensors, objects, state)

    def load_checkpoint(self, folder: Path) -> dict[str, Any]:
        """Weights, EMA, optimizer, scheduler, RNG, guard and history from a checkpoint folder."""
        import torch

        from steps.training.checkpoints import check_resume

        names = ["policy", "ema"] + (["guard_base"] if self.heldout is not None else [])
        base_file = folder / f"guard_base{self.checkpointer.suffix()}.safetensors"
        if self.heldout is not None and not base_file.is_file():
            raise ValueError(f"{folder}: written with the guard off; resume with guard_every=0 "
                             "or use a new out_dir")
        tensors, objects, state = self.checkpointer.load(folder, names, ["optimizer", "scheduler"])
        check_resume(folder, state["config"], self.cfg.params(), RESUME_MUST_MATCH,
                     "use a new out_dir or resume=false")
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(tensors["policy"][n])
        self.ema.shadow = {n: t.to(self.accelerator.device) for n, t in tensors["ema"].items()}
        self.optimizer.load_state_dict(objects["optimizer"])
        self.scheduler.load_state_dict(objects["scheduler"])
        self.guard.load_state_dict(state["guard"])
        self.guard_base = tensors.get("guard_base")
        self.history = list(state["history"])
        return state

    def param_checksums(self) -> list[float]:
        """Sum of |trainable params| on every rank (DDP keeps them identical)."""
        import torch

        local = torch.tensor([sum(float(p.detach().double().abs().sum()) for p in self.params.values())],
                             dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.gather(local).tolist()

    def save_final(self, status: str = "finished", **extra: Any) -> dict[str, Any]:
        """Release the EMA weights (LoRA merged) as a pipeline and write the summary."""
        import torch

        from steps.models.policy import load_spec, save_pipeline
        from steps.rl.policy import add_lora, merge_lora

        acc, cfg = self.accelerator, self.cfg
        checksums = self.param_checksums()
        if not self.sharded and max(checksums) != min(checksums):
            raise RuntimeError(f"ranks hold different policy parameters (checksums {checksums})")
        selection = self.select_release()
        if self.sharded:  # FSDP (not exercised on CPU): gather the full EMA weights on rank 0
            with self.ema.applied(self.params):
                full = acc.get_state_dict(self.policy)
            if self.is_main:
                transformer = type(self.transformer).from_config(self.transformer.config)
                if cfg.lora_rank:
                    add_lora(transformer, cfg.lora_rank, cfg.lora_alpha)
                transformer.load_state_dict(full)
                self.pipe.register_modules(transformer=transformer)
        elif self.is_main:
            transformer = acc.unwrap_model(self.policy)
            self.ema.copy_to(self.params)
        if self.is_main:
            if cfg.lora_rank:
                merge_lora(transformer)
            transformer.to(getattr(torch, cfg.dtype))
            save_pipeline(self.pipe, self.model_dir, load_spec(cfg.base_dir) if cfg.base_dir else None)
            self.write_summary(status=status, checksums=checksums, release=selection, **extra)
        acc.wait_for_everyone()
        return json.loads((self.report_dir / "summary.json").read_text())

    def summary(self, status: str = "finished", **extra: Any) -> dict[str, Any]:
        from steps.rl.report import summarise

        released = "EMA (LoRA merged)" if self.cfg.lora_rank else "EMA"
        return {"status": status, "model_dir": str(self.model_dir), "reference": self.cfg.reference,
                "released_weights": released, **summarise(self.history), "guard": self.guard.state_dict(),
                "world_size": self.accelerator.num_processes, "config": self.cfg.params(),
                "best_heldout": self.best_heldout(), **extra}

    def write_summary(self, status: str, **extra: Any) -> None:
        from steps.io import atomic_write_json

        atomic_write_json(self.report_dir / "summary.json", self.summary(status, **extra))


def train(cfg: RLConfig, log=None, log_artifact=None) -> dict[str, Any]:
    """Run the recipe (setup, train, save); returns the summary (also in out_dir/<reference>_report).
    ``update=grpo`` runs the policy-gradient recipe (steps/rl/grpo.py), which differs in its update only."""
    recipe = OneRewardRecipe
    if cfg.update == "grpo":
        from steps.rl.grpo import GrpoRecipe

        recipe = GrpoRecipe
    return recipe(cfg, log, log_artifact).setup().train()


def main(argv: list[str] | None = None) -> None:
    def extra(parser):
        parser.add_argument("--mlflow-run-id", help="log metrics and grids to this MLflow run (main process)")

    cfg, args = parse_cli(RLConfig, __doc__, argv, extra)
    log = log_artifact = None
    if args.mlflow_run_id and int(os.environ.get("RANK", "0")) == 0:
        from steps.tracking import Tracker

        tracker = Tracker(os.environ.get("MLFLOW_TRACKING_URI"))
        log = tracker.metrics_logger(args.mlflow_run_id)
        log_artifact = lambda path: tracker.log_artifact(args.mlflow_run_id, path, "rl_grids")  # noqa: E731
    summary = train(cfg, log, log_artifact)
    if int(os.environ.get("RANK", "0")) == 0:
        keys = ("status", "model_dir", "final_rewards", "train_seconds")
        print(json.dumps({k: summary[k] for k in keys}, indent=2))


if __name__ == "__main__":
    main()
