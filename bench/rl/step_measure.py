"""The measurements bench/rl/rl_step.py takes beside its matched steps, each on the recipe it set up.

- `periodic_work`: checkpoint, sample grid and reward-hacking guard, timed per call, with their cadence;
- `reference_reuse`: how often a condition comes back in a whole tiny run (what a reference cache could reuse);
- `adamw_comparison`: torch's CPU default AdamW (a loop over tensors) vs fused, same params and grads;
- `op_profile`: torch.profiler self CPU time by operator over a few steps;
- `record_flops`: FLOPs per phase of each distinct step shape (the `Phases` clock swapped for a FLOP counter);
- `grpo_recipe`: the policy-gradient recipe (steps/rl/grpo.py) on the same config and conditions, whose own
  ``train_step`` rl_step.py times beside the one-step update's.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from pathlib import Path

from bench.benchlib import Phases
from bench.rl.step_instrument import use

CHECKPOINT = "checkpoint (safetensors + optimizer + RNG, atomic rename)"
GRID = "sample grid (PNG)"
GUARD = "reward-hacking guard (held-out samples + judge + world scores)"


def periodic_work(recipe, banks: dict, work: Path, first_step: int, reps: int) -> tuple[dict, dict, dict]:
    """(seconds per call of each periodic work, guard seconds per judge variant, cadence in steps)."""
    from steps.rl.guard import RewardHackingError
    from steps.rl.report import save_sample_grid

    periodic = defaultdict(list)
    use(recipe, "after", banks)
    for r in range(reps):
        t = time.perf_counter()
        recipe.save_checkpoint(10**5 + r)
        periodic[CHECKPOINT].append(time.perf_counter() - t)
        t = time.perf_counter()
        save_sample_grid(*recipe.last_batch, work / "grids" / f"{r}.png", "bench")
        periodic[GRID].append(time.perf_counter() - t)
    guard = {"after": [], "before": []}
    for r in range(max(2, reps - 1)):
        for variant in ("before", "after") if r % 2 else ("after", "before"):
            use(recipe, variant, banks)
            t = time.perf_counter()
            try:
                recipe.guard_step(first_step + r)
            except RewardHackingError:
                pass
            guard[variant].append(time.perf_counter() - t)
    periodic[GUARD] = guard["after"]
    cfg = recipe.cfg
    cadence = {CHECKPOINT: cfg.checkpoint_every, GRID: cfg.sample_every, GUARD: cfg.guard_every}
    return dict(periodic), guard, cadence


def reference_reuse(cfg, sizes: dict[str, int]) -> dict[str, int]:
    """Reference rollouts and distinct conditions over a whole tiny run, counted with `draw_step`."""
    from steps.rl.config import RLConfig
    from steps.rl.rollout import draw_step

    run_steps = RLConfig.for_profile("tiny").steps
    seen, rollouts = set(), 0
    for s in range(1, run_steps + 1):
        d = draw_step(cfg.seed, s, 0, cfg.task_probs, sizes, cfg.batch_size, cfg.t_range)
        seen.update((d.task, int(i)) for i in d.indices[0])
        rollouts += len(d.indices[0])
    return {"steps": run_steps, "rollouts": rollouts, "distinct": len(seen)}


def adamw_comparison(recipe, reps: int = 40) -> tuple[dict[str, list[float]], int]:
    """Seconds per AdamW step, CPU default vs fused, interleaved; and the number of tensors."""
    import torch

    params = list(recipe.params.values())
    for q in params:
        q.grad = torch.randn_like(q)
    optimizers = {
        "default": torch.optim.AdamW(params, lr=0.0, fused=False),
        "fused": torch.optim.AdamW(params, lr=0.0, fused=True),
    }
    adamw = {k: [] for k in optimizers}
    for r in range(reps):
        for k in sorted(optimizers, reverse=bool(r % 2)):
            t = time.perf_counter()
            optimizers[k].step()
            adamw[k].append(time.perf_counter() - t)
    for q in params:
        q.grad = None
    return adamw, len(params)


def op_profile(recipe, banks: dict, steps: range) -> dict[str, float]:
    """Self CPU seconds by operator over ``steps`` of the ``after`` variant (the profiler adds overhead)."""
    import torch

    use(recipe, "after", banks)
    ops: dict[str, float] = defaultdict(float)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for s in steps:
            recipe.train_step(s)
    for ev in prof.key_averages():
        ops[ev.key] += ev.self_cpu_time_total / 1e6
    return ops


def record_flops(recipe, banks: dict, phases: Phases, records: list[dict]) -> None:
    """Add ``flops`` (per phase and ``total``) to each record, counted once per (variant, task, t, judge rows):
    the shapes, hence the counts, are fixed by these."""
    from torch.utils.flop_counter import FlopCounterMode

    flops: dict[tuple, dict[str, float]] = {}
    for rec in records:
        key = (rec["variant"], *rec["key"])
        if key in flops:
            continue
        use(recipe, rec["variant"], banks)
        with FlopCounterMode(display=False) as counter:
            phases.clock = counter.get_total_flops
            phases.take()
            recipe.train_step(rec["step"])
            parts = phases.take()
            parts["total"] = counter.get_total_flops()
        phases.clock = time.perf_counter
        flops[key] = parts
    for rec in records:
        rec["flops"] = flops[(rec["variant"], *rec["key"])]


def grpo_recipe(cfg, work: Path, bank):
    """The grpo recipe of ``cfg`` (same batch, conditions, models), its guard off (rl_step times the one-step
    recipe's), sharing the one-step recipe's condition ``bank``; returns (recipe, its settings)."""
    from steps.rl.grpo import GrpoRecipe

    # cache_conditions off: its own bank is then built without encoding anything, and replaced by ``bank``
    grpo_cfg = dataclasses.replace(cfg, update="grpo", out_dir=str(work / "grpo"), guard_every=0,
                                   cache_conditions=False)
    recipe = GrpoRecipe(grpo_cfg).setup()
    recipe.bank = bank
    names = ("batch_size", "group_size", "group_noise", "sde_window_start", "sde_window", "sde_a", "inner_epochs")
    return recipe, {k: getattr(grpo_cfg, k) for k in names}
