"""How bench/rl/rl_step.py looks inside the recipe's step: the phases it names, the wrappers that time them
(instance attributes only: the recipe's classes are untouched), and the variants it switches between.

- `instrument`: transformer calls by role and grad mode, VAE decodes, the judge's towers, preprocessing and
  query text, the condition batch, ONE backward split by hooks (judge / VAE decoder / transformer), the
  optimizer; every span goes into a `bench.benchlib.Phases`, whose clock may be seconds or FLOPs;
- `use`: the variant a step runs (``after``, ``before``, ``no_cache``);
- `step_key`: what fixes a step's shapes, hence its FLOPs.
"""

from __future__ import annotations

from bench.benchlib import Phases, TimedTokenizer, TimedTransformer, timed

# Model compute: what the goal's "sum of its model-compute parts" adds up.
COMPUTE = [
    "reference rollout: transformer (T calls, no grad)",
    "reference rollout: VAE decode (no grad)",
    "policy partial rollout: transformer (t calls, no grad)",
    "grad step: transformer forward",
    "grad step: VAE decode forward",
    "judge: vision tower forward",
    "judge: language model forward",
    "backward: judge",
    "backward: VAE decoder",
    "backward: transformer",
    "optimizer: clip + AdamW + EMA",
    "conditions: batch (cached select, or CLIP + T5 + VAE encode)",
]
OVERHEAD = [
    "judge: image preprocessing (normalise + patchify)",
    "judge: query text (chat template + tokenizer)",
    "logging: MLflow log_batch",
    "other: draws, noises, schedulers, metrics, Python",
]
JUDGE = [
    "judge: vision tower forward",
    "judge: language model forward",
    "backward: judge",
    "judge: image preprocessing (normalise + patchify)",
    "judge: query text (chat template + tokenizer)",
]
VARIANTS = ("after", "before", "no_cache")
# operator names counted as dense kernels in the profile
DENSE = ("mm", "addmm", "bmm", "convolution", "conv", "scaled_dot_product", "flash_attention", "linear")


def instrument(recipe, phases: Phases, banks: dict) -> None:
    """Wrap the recipe's model calls (instance attributes only: the classes are untouched)."""
    import steps.models.judge_preprocess as jp

    recipe.policy_forward = TimedTransformer(
        recipe.policy_forward,
        phases,
        "policy partial rollout: transformer (t calls, no grad)",
        "grad step: transformer forward",
        mark="transformer_out",
    )
    recipe.base_reference = TimedTransformer(
        recipe.base_reference, phases, "reference rollout: transformer (T calls, no grad)", "unexpected"
    )
    vae = recipe.pipe.vae
    vae_decode = vae.decode

    def decode(*args, **kwargs):
        import torch

        grad = torch.is_grad_enabled()
        name = "grad step: VAE decode forward" if grad else "reference rollout: VAE decode (no grad)"
        with phases.span(name):
            out = vae_decode(*args, **kwargs)
        if grad and out[0].requires_grad:
            out[0].register_hook(lambda g: phases.mark("vae_out"))
        return out

    vae.decode = decode
    judge = recipe.judge
    judge.model.forward = timed(phases, judge.model.forward, "judge: language model forward")
    inner = judge.model.model
    inner.get_image_features = timed(phases, inner.get_image_features, "judge: vision tower forward")
    jp.preprocess = timed(phases, jp.preprocess, "judge: image preprocessing (normalise + patchify)")
    text = "judge: query text (chat template + tokenizer)"
    judge.prompt = timed(phases, judge.prompt, text)
    judge.tokenizer = TimedTokenizer(judge.tokenizer, phases, text)
    recipe.pair.encode_text = timed(phases, recipe.pair.encode_text, text)
    for bank in banks.values():
        bank.batch = timed(phases, bank.batch, "conditions: batch (cached select, or CLIP + T5 + VAE encode)")

    acc = recipe.accelerator
    backward = acc.backward

    def split_backward(loss, **kwargs):
        start = phases.clock()
        backward(loss, **kwargs)
        end = phases.clock()
        m = phases.marks
        if "vae_out" in m and "transformer_out" in m:
            phases.add("backward: judge", m["vae_out"] - start)
            phases.add("backward: VAE decoder", m["transformer_out"] - m["vae_out"])
            phases.add("backward: transformer", end - m["transformer_out"])
        else:
            phases.add("backward: unsplit", end - start)

    acc.backward = split_backward
    opt = "optimizer: clip + AdamW + EMA"
    acc.clip_grad_norm_ = timed(phases, acc.clip_grad_norm_, opt)
    recipe.optimizer.step = timed(phases, recipe.optimizer.step, opt)
    recipe.optimizer.zero_grad = timed(phases, recipe.optimizer.zero_grad, opt)
    recipe.ema.update = timed(phases, recipe.ema.update, opt)


def use(recipe, variant: str, banks: dict) -> None:
    recipe.scorer = recipe.judge if variant == "before" else recipe.pair
    recipe.bank = banks["uncached" if variant == "no_cache" else "cached"]


def step_key(recipe, step: int) -> tuple[str, int, int]:
    """(task, t_index, judge rows): what fixes the shapes, hence the FLOPs, of one step."""
    from steps.rl.rollout import draw_step
    from steps.world import dimensions_for

    cfg = recipe.cfg
    draw = draw_step(cfg.seed, step, recipe.rank, cfg.task_probs, recipe.bank.sizes, cfg.batch_size,
                     cfg.t_range, cfg.grad_accum)  # fmt: skip
    samples = recipe.bank.samples[draw.task]
    rows = sum(len(dimensions_for(draw.task, samples[int(i)].prompt)) for i in draw.indices[0])
    return draw.task, draw.t_index, rows
