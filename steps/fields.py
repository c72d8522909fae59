"""Field groups that several step configs share: each field defined once, with one meaning.

A step's config lists the groups it has beside its own fields, for example
``class RLConfig(Profiled, Optimiser, Batched, Scale, TaskMix, Guided, CheckpointCadence, Seeded, Threaded)``. What a profile uses
is set in ``configs/<profile>.yaml`` (the step's section); the defaults here are only the fallback of a config
built in code. A dataclass lists a base's fields before its own, so these come first in ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass

from steps.config import field
from steps.paths import TINY


@dataclass(frozen=True)
class Seeded:
    seed: int = field(0, "seed of every random draw of the step: same seed and inputs, same output")


@dataclass(frozen=True)
class Threaded:
    threads: int = field(1, "torch CPU threads (steps that run side by side on 2 cores take 1 each)")


@dataclass(frozen=True)
class Batched:
    batch_size: int = field(16, "examples per batch: per optimizer step when training, per forward pass when "
                                "sampling (what an example is: the config's docstring)")


@dataclass(frozen=True)
class Optimiser:
    """A training loop's optimizer (steps.training.optim.adamw: AdamW, linear warmup, then its schedule); the
    batch is the config's `Batched` group."""

    steps: int = field(1000, "optimizer steps")
    lr: float = field(5e-4, "AdamW learning rate")
    warmup: int = field(50, "linear warmup steps")
    weight_decay: float = field(0.01, "AdamW weight decay")
    log_every: int = field(25, "log losses and metrics every N steps")


@dataclass(frozen=True)
class CheckpointCadence:
    """Resumable checkpoints (steps.training.checkpoints): a killed run started again resumes exactly. The RL
    recipe and the foundation job keep them in their own layout (steps.paths)."""

    checkpoint_every: int = field(500, "steps between checkpoints")


@dataclass(frozen=True)
class Checkpoints(CheckpointCadence):
    """CheckpointCadence, in a folder the caller names."""

    checkpoint_dir: str = field("", "resumable checkpoints here every checkpoint_every steps; empty = none")


@dataclass(frozen=True)
class Attack:
    """Adversarial training of the judge (Adv-RM style): part of each batch's images is perturbed against the
    judge within an RMS budget before the step, labels kept, so that RL cannot win by such perturbations."""

    adv_share: float = field(0.0, "share of each batch's pairs attacked before training; 0 = off")
    adv_rms: float = field(0.01, "RMS budget of the perturbation per image (pixels in [0, 1]; 0.03 ~ 8/255)")
    adv_steps: int = field(2, "normalised gradient steps of the attack")


@dataclass(frozen=True)
class Scale:
    """How a large model fits (flux): LoRA, activation recomputation, autocast."""

    lora_rank: int = field(0, "0 = full fine-tune (smoke/tiny); > 0 = LoRA of this rank")
    gradient_checkpointing: bool = field(False, "recompute activations in the backward pass (memory for compute)")
    mixed_precision: str = field("no", "no | bf16 | fp16 (autocast on GPUs)")


@dataclass(frozen=True)
class TaskMix:
    """The share of each task (steps.vocabulary.TASKS) in what the step draws."""

    fill_prob: float = field(0.5, "share of fill conditions")
    extend_prob: float = field(0.25, "share of extend conditions")
    removal_prob: float = field(0.25, "share of removal conditions")


@dataclass(frozen=True)
class PreferenceSplit:
    """The run's preference pairs and their held-out split (steps.judge.agreement.split_of, by condition): the
    held-out pairs are the judge's *selection* set (they choose its checkpoint); the agreement gate reads the
    agreement test set instead (steps.data.agreement_set)."""

    pairs_dir: str = field(str(TINY.preferences), "pairs.jsonl + images (the held-out split is taken from it)")
    heldout_fraction: float = field(0.35, "share of the pairs' conditions held out from training as the selection "
                                          "set (never trained on)")


@dataclass(frozen=True)
class Guided:
    guidance: float = field(30.0, "FLUX Fill's distilled-guidance value, in training and sampling (the released "
                                  "FLUX.1-Fill-dev uses 30)")


@dataclass(frozen=True)
class ShowsSource:
    show_source: bool = field(False, "the judge sees the masked source (steps.vocabulary.masked_source) as a third "
                                     "image: where the edit is and what must be kept")
