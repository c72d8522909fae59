"""Timing pieces of the RL step benchmarks (bench/rl/rl_step.py on CPU, bench/rl/rl_gpu.py on a GPU).

- `sync`, `device_matmul_rate`, `time_steps`, `count_flops`: wall time of a step on any device (synchronised),
  the dense matmul rate at the step's dtype (the utilisation denominator), FLOPs of one step;
- `update_row` / `update_table`: one update's throughput at a given number of conditions, per step and per
  sample. The paper's one-step update judges ``batch`` policy samples a step; the policy-gradient update
  (steps/rl/grpo.py) ``batch`` conditions x G samples, so both are reported per step and per sample.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

UPDATE_HEADER = ["update", "conditions/step", "samples/step", "n steps", "s/step (median)", "samples/s",
                 "s/sample"]  # fmt: skip


def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def device_matmul_rate(device, dtype, n: int, iters: int) -> float:
    """Dense matmul FLOP/s at ``dtype`` on ``device`` (the utilisation denominator)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0)


def time_steps(step: Callable[[int], Any], warmup: int, steps: int, device) -> tuple[list[float], Any]:
    """Run ``step(i)`` for i = 0 .. warmup + steps - 1; the synchronised seconds of the last ``steps`` calls
    and the last call's return value."""
    times, value = [], None
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        value = step(i)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times, value


def _as_mha(shapes: tuple) -> tuple:
    """(q, k, v, ...) shapes with grouped-query key/value heads counted as the query's heads (what SDPA computes
    after broadcasting them): torch's FLOP counter asserts on Qwen2.5-VL's 28 query / 4 KV heads otherwise."""
    q, k, v, *rest = (tuple(x) for x in shapes)
    if len(q) == 4 and len(k) == 4 and k[1] != q[1]:
        k, v = (k[0], q[1]) + k[2:], (v[0], q[1]) + v[2:]
    return (q, k, v, *rest)


def count_flops(step: Callable[[int], Any], i: int) -> int:
    """FLOPs of one call ``step(i)`` (torch.utils.flop_counter: forward + backward, recomputation included)."""
    import torch.utils.flop_counter as fc

    forward, backward = fc.sdpa_flop_count, fc.sdpa_backward_flop_count
    fc.sdpa_flop_count = lambda *shapes, **kw: forward(*_as_mha(shapes), **kw)
    fc.sdpa_backward_flop_count = lambda grad, *shapes, **kw: backward(grad, *_as_mha(shapes), **kw)
    try:
        with fc.FlopCounterMode(display=False) as counter:
            step(i)
    finally:
        fc.sdpa_flop_count, fc.sdpa_backward_flop_count = forward, backward
    return counter.get_total_flops()


def update_row(update: str, conditions: int, samples: int, seconds: Sequence[float]) -> dict[str, Any]:
    """One update's throughput from its step times: s/step (median), samples/s and s/sample."""
    s_per_step = float(statistics.median(seconds))
    return {"update": update, "conditions": conditions, "samples": samples, "n": len(seconds),
            "s_per_step": s_per_step, "samples_per_s": samples / s_per_step, "s_per_sample": s_per_step / samples}


def update_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of `update_row` as a markdown table (UPDATE_HEADER)."""
    from bench.benchlib import table

    return table(UPDATE_HEADER, [[r["update"], r["conditions"], r["samples"], r["n"], f"{r['s_per_step']:.3f}",
                                  f"{r['samples_per_s']:.3f}", f"{r['s_per_sample']:.4f}"] for r in rows])
