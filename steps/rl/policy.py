"""The trainable policy of the OneReward RL recipe (steps/rl/train.py): which parameters train, LoRA on the
transformer's attention projections (the adapter-disabled base as Algorithm 1's reference, merging for
release), the EMA of the trainable weights (the released weights; Algorithm 2's reference) and the
callable that `denoise` runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

# Attention projections of FluxTransformer2DModel's double blocks (image + text streams) and single blocks.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


class ModuleCall:
    """The policy as `denoise` calls it: the (possibly DDP/FSDP-wrapped) module plus the model's config."""

    def __init__(self, module, config):
        self.module, self.config = module, config

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)


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
