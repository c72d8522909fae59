"""The shape every training loop here has (torchtune's recipes): a `Recipe` is set up, resumes from its
newest checkpoint, trains, writes checkpoints on the way and ends with a summary.

    recipe = SomeRecipe(cfg, log).setup()     # models, data, optimizer; start_step = resume()
    summary = recipe.train()                  # steps start_step.., save_checkpoint(step) on its cadence

The pieces the loops share live in the library, once: `steps.training.optim.adamw` (optimizer + schedule),
`steps.training.checkpoints.Checkpointer` (atomic, rotated checkpoints; weights, optimizer, scheduler, RNG, state),
`progress` (the progress bar), `optimizer_step` (zero_grad, backward, clip, step, schedule), the metrics
callback ``log(metrics, step)`` (`no_log` by default; `steps.tracking.Tracker.metrics_logger` for MLflow)
and `run_cli` (a recipe's command line). The recipes: steps/foundations/base_pretrain.py (`BaseRecipe`), steps/foundations/judge_pretrain.py
(`JudgePretrainRecipe`), steps/judge/train.py (`JudgeRecipe`), steps/rl/train.py (`OneRewardRecipe`).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

MetricsLog = Callable[[dict[str, float], int], None]


def no_log(metrics: dict[str, float], step: int) -> None:
    """The default metrics callback: nothing is logged."""


def progress(steps: range, desc: str, total: int | None = None, disable: bool = False) -> Iterable[int]:
    """A progress bar over ``steps`` that shows the steps done before them (a resumed run) as done."""
    from tqdm import tqdm

    total = steps.stop if total is None else total
    return tqdm(steps, desc=desc, unit="step", mininterval=5, initial=total - len(steps), total=total,
                disable=disable)


def optimizer_step(loss, optimizer, scheduler, params=None, clip: float | None = None) -> None:
    """Backward ``loss`` and take one optimizer and schedule step (grads clipped to ``clip`` when given)."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    scheduler.step()


def due(step: int, every: int, last: int | None = None) -> bool:
    """Whether ``step`` is on an ``every``-step cadence (0: never) or is ``last``."""
    return bool(every and step % every == 0) or step == last


class Recipe(ABC):
    """setup -> train, with checkpoints written by `save_checkpoint` and read back by `resume` (the newest,
    through `load_checkpoint`).

    ``log(metrics, step)`` is the metrics callback. ``start_step``: the first step `train` runs (the step
    of the checkpoint resumed from, 0 for a fresh run). Wall time is counted across resumes.
    """

    name = "recipe"  # what the progress bars and messages call it

    def __init__(self, cfg: Any, log: MetricsLog | None = None):
        self.cfg = cfg
        self.log = log or no_log
        self.start_step = 0
        self.resumed_seconds = 0.0  # wall time of the runs before the resume
        self.t0 = time.perf_counter()

    @abstractmethod
    def setup(self) -> Recipe:
        """Models, data, optimizer and checkpointer; ends with ``self.start_step = self.resume()``."""

    def resume(self) -> int:
        """Load the newest checkpoint (if any) into the models, optimizer and state; its step, or 0."""
        folder = self.latest_checkpoint()
        return 0 if folder is None else self.resumed(folder, self.load_checkpoint(folder))

    @abstractmethod
    def load_checkpoint(self, folder: Path) -> dict[str, Any]:
        """Load what `save_checkpoint` wrote in ``folder``; its state (``state["step"]``: the step done)."""

    @abstractmethod
    def train(self) -> dict[str, Any]:
        """Train from ``start_step`` to the end, checkpointing on the way; the `summary`."""

    @abstractmethod
    def save_checkpoint(self, step: int) -> Path | None:
        """Write everything `resume` needs to continue after ``step``."""

    @abstractmethod
    def summary(self) -> dict[str, Any]:
        """What the run did (the entry points return it; reports and MLflow read it)."""

    def run(self) -> dict[str, Any]:
        return self.setup().train()

    def resume_from(self, folder: str, keep: int = 2) -> int:
        """Checkpoint under ``folder`` from now on ('' = no checkpoints) and `resume` from its newest
        checkpoint: the step to start from. The last call of a single-process recipe's `setup`."""
        from steps.training.checkpoints import Checkpointer

        self.checkpointer = Checkpointer(folder, keep=keep) if folder else None
        self.start_step = self.resume()
        return self.start_step

    def resumed(self, folder: Path, state: dict[str, Any]) -> int:
        """Note a resume from ``folder`` (the wall time before it, a line on stdout); the step it continues after."""
        self.resumed_seconds = float(state.get("seconds", 0.0))
        where = " ".join(str(x) for x in (state.get("phase"), "step", state["step"]) if x is not None)
        print(f"{self.name}: resuming from {folder} ({where})", flush=True)
        return int(state["step"])

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint to resume from, or None (none yet, or no checkpoint folder)."""
        checkpointer = getattr(self, "checkpointer", None)
        return checkpointer.latest() if checkpointer else None

    def seconds(self) -> float:
        """Wall time of this process's run."""
        return time.perf_counter() - self.t0

    def seconds_including_resumed(self) -> float:
        return self.resumed_seconds + self.seconds()


def run_cli(config_cls, doc: str, run: Callable[[Any], dict[str, Any]], argv: list[str] | None = None,
            drop: tuple[str, ...] = (), keep: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A recipe's command line: parse the config (steps.config.parse_cli), run, print the summary as JSON
    (without the ``drop`` keys, or only the ``keep`` keys)."""
    from steps.config import parse_cli

    cfg, _ = parse_cli(config_cls, doc, argv)
    summary = run(cfg)
    shown = {k: v for k, v in summary.items() if k not in drop and (keep is None or k in keep)}
    print(json.dumps(shown, indent=2))
    return summary
