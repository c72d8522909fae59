"""Grow a judge deeper without changing what it computes: the start of a larger judge's foundation stage.

    python -m steps.foundations.grow --judge foundations/tiny/judge --out /tmp/judge_deep --vision-depth 6 --text-layers 6
    python -m steps.foundations.grow --judge foundations/tiny/judge --out /tmp/judge_x2 --upsample 2   # a finer token grid

Training a larger judge from random weights repeats hours of foundation stages (docs/ABLATIONS.md section 0). A
residual block whose output projections are zero is the identity, so a judge with extra blocks interleaved between
its trained ones, each starting as the identity, gives exactly the trained judge's answers (to float rounding) and
has more capacity to train (the zero-initialised residual branch of Goyal et al. 2017 / Fixup, used here as in
progressive growing, e.g. Gong et al. 2019 "Efficient training of BERT by progressively stacking"). The trained
blocks keep their order; the vision encoder's last, full-attention block stays last (`fullatt_block_indexes` of
steps.models.judge_spec.build_model); new vision blocks use window attention. The tokenizer and processor are the
trained judge's.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

# A new block is the identity when these (its residual branches' last projections) are zero.
VISION_OUT = ("attn.proj.weight", "attn.proj.bias", "mlp.down_proj.weight", "mlp.down_proj.bias")
TEXT_OUT = ("self_attn.o_proj.weight", "mlp.down_proj.weight")


def placements(old: int, new: int, keep_last: bool) -> list[int]:
    """Where the ``old`` trained blocks go among ``new`` (increasing; spread evenly; with ``keep_last`` the last one
    stays last). The other positions get identity blocks."""
    if new < old:
        raise ValueError(f"cannot grow {old} blocks into {new}")
    if keep_last:
        return [round(i * (new - 1) / max(old - 1, 1)) if old > 1 else new - 1 for i in range(old)]
    return [round(i * new / old) for i in range(old)]


def grow_judge(judge, vision_depth: int, text_layers: int, seed: int = 0):
    """A `Judge` with ``vision_depth`` vision blocks and ``text_layers`` language-model layers computing what
    ``judge`` computes: its trained weights, and identity blocks between them."""
    import torch

    from steps.models.judge import Judge
    from steps.models.judge_spec import build_model

    spec = judge.spec
    if spec is None:
        raise ValueError("this judge has no judge_spec.json (a released Qwen2.5-VL): it is not built from config")
    new_spec = dataclasses.replace(spec, vision_depth=vision_depth, text_layers=text_layers)
    model = build_model(new_spec, judge.tokenizer, seed)
    maps = {
        "model.visual.blocks.": dict(enumerate(placements(spec.vision_depth, vision_depth, keep_last=True))),
        "model.language_model.layers.": dict(enumerate(placements(spec.text_layers, text_layers, keep_last=False))),
    }
    new_state = model.state_dict()
    taken = set()
    for key, value in judge.model.state_dict().items():
        target = key
        for prefix, where in maps.items():
            if key.startswith(prefix):
                index, rest = key[len(prefix):].split(".", 1)
                target = f"{prefix}{where[int(index)]}.{rest}"
                taken.add(f"{prefix}{where[int(index)]}.")
        if new_state[target].shape != value.shape:
            raise ValueError(f"{key} -> {target}: shape {tuple(value.shape)} != {tuple(new_state[target].shape)}")
        new_state[target] = value.clone()
    for prefix, outs, count in (("model.visual.blocks.", VISION_OUT, vision_depth),
                                ("model.language_model.layers.", TEXT_OUT, text_layers)):
        for i in range(count):
            if f"{prefix}{i}." not in taken:
                for name in outs:
                    new_state[f"{prefix}{i}.{name}"] = torch.zeros_like(new_state[f"{prefix}{i}.{name}"])
    model.load_state_dict(new_state)
    record = dict(judge.record)
    record["grown"] = {"from_vision_depth": spec.vision_depth, "from_text_layers": spec.text_layers,
                       "vision_depth": vision_depth, "text_layers": text_layers,
                       "vision_placements": maps["model.visual.blocks."],
                       "text_placements": maps["model.language_model.layers."]}
    return Judge(model.eval(), judge.processor, new_spec, record)


def upsample_judge(judge, factor: int):
    """The same weights shown the images ``factor`` times larger (bicubic, by its image processor): each vision patch
    covers 1/factor^2 of the pixels it did, and the language model gets factor^2 as many image tokens. Not the
    same answers (the patches' content changes); the resolution fine-tuning of FixRes (Touvron et al. 2019). Costs
    about factor^2 the vision compute. A larger token grid without new weights: Qwen2.5-VL's rotary positions
    need no interpolation."""
    import copy

    from steps.models.judge import Judge

    spec = judge.spec
    if spec is None:
        raise ValueError("this judge has no judge_spec.json (a released Qwen2.5-VL): it is not built from config")
    if factor < 1:
        raise ValueError(f"upsampling factor must be >= 1, got {factor}")
    side = spec.image_size * factor
    processor = copy.deepcopy(judge.processor)
    ip = processor.image_processor
    ip.size = {"shortest_edge": side * side, "longest_edge": side * side}
    ip.min_pixels = ip.max_pixels = side * side
    record = dict(judge.record)
    record["upsampled"] = {"factor": factor, "from_image_size": spec.image_size, "image_size": side}
    return Judge(judge.model, processor, dataclasses.replace(spec, image_size=side), record)


def main(argv: list[str] | None = None) -> Path:
    from steps.models.judge import Judge

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", required=True, help="a judge directory written by Judge.save (built from config)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--vision-depth", type=int, default=0, help="vision blocks (0: as it is)")
    ap.add_argument("--text-layers", type=int, default=0, help="language-model layers (0: as it is)")
    ap.add_argument("--upsample", type=int, default=1, help="show it the images this many times larger")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    judge = Judge.load(args.judge)
    grown = grow_judge(judge, args.vision_depth or judge.spec.vision_depth, args.text_layers or judge.spec.text_layers,
                       args.seed)
    if args.upsample > 1:
        grown = upsample_judge(grown, args.upsample)
    before = sum(p.numel() for p in judge.model.parameters())
    after = sum(p.numel() for p in grown.model.parameters())
    out = grown.save(args.out, grown.record)
    print(f"{args.judge} ({before:,} parameters) -> {out} ({after:,}, x{after / before:.2f})")
    return out


if __name__ == "__main__":
    main()
