"""The reward model: a Qwen2.5-VL judge answering "Yes"/"No" to "is the FIRST image better than the SECOND?".

- ``smoke`` / ``tiny``: `Judge.build(spec)` makes `Qwen2_5_VLForConditionalGeneration` from a small config,
  a locally trained byte-level BPE tokenizer with Qwen's special tokens, Qwen's chat-template layout and a
  processor that needs no torchvision (`JudgeProcessor`).
- ``flux``: `Judge.load(path)` on a local Qwen2.5-VL-7B-Instruct directory (or ``$ONEREWARD_JUDGE_PATH``)
  or on a directory written by `Judge.save` (safetensors, atomic).

Reward (docs/DESIGN.md §4): P(Yes) normalised over {Yes, No} = sigmoid(logit_Yes - logit_No) at the answer
position. Images go through `steps.models.judge_preprocess` (torch), so `p_yes` is differentiable w.r.t.
float image tensors; batches are LEFT padded so the last position is every row's answer position.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from steps.io import atomic_dir
from steps.models.judge_spec import QWEN_CHAT_TEMPLATE, JudgeSpec, build_model, build_processor

if TYPE_CHECKING:
    import torch

JUDGE_PATH_ENV = "ONEREWARD_JUDGE_PATH"
SPEC_FILE = "judge_spec.json"
TRAINING_RECORD = "training.json"  # written by steps.judge.train beside the weights: how the judge must be asked
YES, NO = "Yes", "No"


_PROCESSOR_CLASS: type | None = None


def processor_class() -> type:
    """`JudgeProcessor`: `Qwen2_5_VLProcessor` without the video processor (which needs torchvision).

    Images + text only; builds, saves and reloads exactly (docs/DESIGN.md §10) and loads a released
    Qwen2.5-VL directory too. Defined on first use so importing this module stays cheap (no transformers).
    """
    global _PROCESSOR_CLASS
    if _PROCESSOR_CLASS is None:
        from transformers import Qwen2_5_VLProcessor

        class JudgeProcessor(Qwen2_5_VLProcessor):
            def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
                super().__init__(
                    image_processor=image_processor,
                    tokenizer=tokenizer,
                    video_processor=None,
                    chat_template=chat_template,
                    **kwargs,
                )

        JudgeProcessor.__module__ = __name__
        _PROCESSOR_CLASS = JudgeProcessor
    return _PROCESSOR_CLASS


def __getattr__(name: str):
    if name == "JudgeProcessor":
        return processor_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _rows(images, start: int, size: int):
    chunk = images[start:start + size]
    return chunk if hasattr(chunk, "shape") else np.stack(chunk)


def preference(forward, backward):
    """The both-orders preference for the first image, in [0, 1] (0.5 = none): (P(f, s) + 1 - P(s, f)) / 2."""
    return (forward + 1 - backward) / 2


def _as_float_images(images: Any):
    """Float Bx3xHxW in [0, 1] (kept as is, so gradients flow) from tensors or uint8 arrays BxHxWx3."""
    import torch

    if isinstance(images, torch.Tensor) and images.is_floating_point():
        return images if images.ndim == 4 else images[None]
    if isinstance(images, (list, tuple)):
        return torch.cat([_as_float_images(i) for i in images])
    x = torch.as_tensor(np.asarray(images))
    if x.ndim == 3:
        x = x[None]
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def training_record(path: str | os.PathLike) -> dict[str, Any]:
    """The judge folder's training record (steps.judge.train's training.json), or {} (a released VLM, a foundation)."""
    record = Path(path) / TRAINING_RECORD
    return json.loads(record.read_text()) if record.is_file() else {}


class BothOrders:
    """`compare`: the one way every evaluation asks a judge (agreement, benchmark, refresh), from its `p_yes`.

    Subclasses provide ``p_yes(first, second, queries, extra=None)`` and may set ``record`` (the training
    record that says whether the judge was shown the masked source)."""

    record: dict[str, Any] = {}

    @property
    def shows_source(self) -> bool:
        """Trained with the masked source as a third image: then every question must show it too."""
        return bool(self.record.get("config", {}).get("show_source", False))

    def compare(self, first, second, tasks: list[str], dimensions: list[str], prompts: list[str],
                sources=None, masks=None, batch: int = 64):
        """Both orders of each comparison, without grad: (P(Yes | first, second), P(Yes | second, first)),
        numpy arrays of shape (B,). Row b asks judge_query(tasks[b], dimensions[b], prompts[b]); ``sources``
        and ``masks`` (the conditions') are needed when the judge was trained seeing the masked source
        (`shows_source`), which it is then shown -- the way it was trained."""
        import torch

        from steps.vocabulary import judge_query, masked_source

        if self.shows_source and (sources is None or masks is None):
            raise ValueError("this judge was trained seeing the masked source: pass sources and masks")
        queries = [judge_query(t, d, p) for t, d, p in zip(tasks, dimensions, prompts)]
        forward, backward = [], []
        with torch.no_grad():
            for i in range(0, len(queries), batch):
                f, s, q = _rows(first, i, batch), _rows(second, i, batch), queries[i:i + batch]
                extra = None
                if self.shows_source:
                    extra = np.stack([masked_source(src, m) for src, m in zip(_rows(sources, i, batch),
                                                                              _rows(masks, i, batch))])
                args = () if extra is None else (extra,)
                forward.append(self.p_yes(f, s, q, *args).float().cpu().numpy())
                backward.append(self.p_yes(s, f, q, *args).float().cpu().numpy())
        empty = np.zeros(0, np.float32)
        return (np.concatenate(forward) if forward else empty), (np.concatenate(backward) if backward else empty)


class Judge(BothOrders):
    """A Qwen2.5-VL judge with its processor; `p_yes` is the reward (differentiable w.r.t. images).

    ``record``: its training record (query template version, whether it was shown the masked source), loaded
    with it; `compare` asks it the way it was trained."""

    def __init__(self, model, processor, spec: JudgeSpec | None = None, record: dict[str, Any] | None = None):
        from steps.models.judge_preprocess import ImageGeometry

        self.record = dict(record or {})
        self.model = model
        self.processor = processor
        self.spec = spec
        self.tokenizer = processor.tokenizer
        self.geometry = ImageGeometry.from_image_processor(processor.image_processor)
        self.image_token_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        self.yes_id, self.no_id = (self._single_token(w) for w in (YES, NO))

    def _single_token(self, word: str) -> int:
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"judge tokenizer encodes {word!r} as {len(ids)} tokens; the reward needs one")
        return ids[0]

    # ---- construction and persistence -------------------------------------------------------------
    @classmethod
    def build(cls, spec: JudgeSpec, seed: int = 0, corpus: list[str] | None = None) -> Judge:
        """A fresh judge of ``spec``'s sizes; ``corpus`` adds tokenizer lines (e.g. the query template)."""
        processor = build_processor(spec, corpus)
        return cls(build_model(spec, processor.tokenizer, seed), processor, spec)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, dtype: Any = None) -> Judge:
        """Load from a local directory: one written by `save`, or a released Qwen2.5-VL-Instruct one.

        ``path`` defaults to ``$ONEREWARD_JUDGE_PATH``. Local files and safetensors only.
        """
        from transformers import Qwen2_5_VLForConditionalGeneration

        path = path or os.environ.get(JUDGE_PATH_ENV)
        if not path:
            raise FileNotFoundError(f"no judge directory: pass a path or set {JUDGE_PATH_ENV}")
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"judge directory {path} does not exist")
        for need in ("config.json", "tokenizer_config.json"):
            if not (path / need).is_file():
                raise FileNotFoundError(f"judge directory {path} incomplete: {need} missing")
        if not any(path.glob("*.safetensors")):
            raise FileNotFoundError(f"judge directory {path} incomplete: no *.safetensors weights")
        kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": True}
        if dtype is not None:
            kwargs["dtype"] = dtype
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, **kwargs).eval()
        processor = processor_class().from_pretrained(path, local_files_only=True)
        if processor.chat_template is None:
            processor.chat_template = QWEN_CHAT_TEMPLATE
        spec = None
        if (path / SPEC_FILE).is_file():
            spec = JudgeSpec(**json.loads((path / SPEC_FILE).read_text()))
        return cls(model, processor, spec, training_record(path))

    def save(self, path: str | os.PathLike, record: dict | None = None) -> Path:
        """Write model (safetensors), processor, spec and the training ``record`` (TRAINING_RECORD: how the
        judge must be asked) to ``path`` atomically (replacing it): a reader never finds weights without it."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.processor.save_pretrained(tmp)
            if self.spec is not None:
                (tmp / SPEC_FILE).write_text(json.dumps(dataclasses.asdict(self.spec), indent=2) + "\n")
            if record is not None:
                (tmp / TRAINING_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        return path

    # ---- inputs -----------------------------------------------------------------------------------
    def prompt(self, query: str, num_images: int) -> str:
        """The chat text for one query: one user turn with the images then the query, and the answer cue.

        Qwen2.5-VL's own layout (images, then the text). Measured on the tiny judge (docs/ABLATIONS.md):
        with the query placed BEFORE the images, preference training on all nine task x dimension cells
        did not condition on the query (text alignment came out reversed, held-out mean 0.54 after 900
        steps); with the query last, right before the answer, the same run reached 0.67.
        """
        content = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": query}]
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(
        self, first_images, second_images, queries: list[str], extra_images=None
    ) -> dict[str, torch.Tensor]:
        """Model inputs for B comparisons (images per row: first, second[, extra]); LEFT padded.

        Image placeholders are expanded exactly as `Qwen2_5_VLProcessor` does (one <|image_pad|> per
        merged patch); pixel values come from the torch preprocessing, so they carry gradients.
        """
        groups = [first_images, second_images] + ([extra_images] if extra_images is not None else [])
        return self.encode_images(groups, queries)

    def encode_images(self, groups: list, queries: list[str]) -> dict[str, torch.Tensor]:
        """Model inputs for B queries with ``len(groups)`` images each (groups[k][b]: image k of row b).

        One image per row serves the single-image questions of judge pretraining; two (first, second)
        and an optional third (the masked source) serve preference judging.
        """
        from steps.models.judge_preprocess import preprocess

        groups = [_as_float_images(g) for g in groups]
        batch = groups[0].shape[0]
        if any(g.shape[0] != batch for g in groups) or len(queries) != batch:
            raise ValueError(f"p_yes: {[g.shape[0] for g in groups]} images for {len(queries)} queries")
        device = self.model.device
        images = [g[b] for b in range(batch) for g in groups]  # row-major: the order placeholders appear
        pixel_values, grid_thw = preprocess([i.to(device) for i in images], self.geometry)
        per_image = (grid_thw.prod(-1) // self.geometry.merge_size**2).tolist()
        pad = "<|image_pad|>"
        texts, k = [], 0
        for query in queries:
            parts = self.prompt(query, len(groups)).split(pad)
            text = parts[0]
            for part in parts[1:]:
                text += pad * per_image[k] + part
                k += 1
            texts.append(text)
        enc = self.tokenizer(
            texts, padding=True, padding_side="left", return_tensors="pt", add_special_tokens=False
        )
        input_ids = enc["input_ids"].to(device)
        return {
            "input_ids": input_ids,
            "attention_mask": enc["attention_mask"].to(device),
            "mm_token_type_ids": (input_ids == self.image_token_id).long(),
            "pixel_values": pixel_values.to(self.model.dtype),
            "image_grid_thw": grid_thw,
        }

    # ---- outputs ----------------------------------------------------------------------------------
    def answer_logits(
        self, first_images, second_images, queries: list[str], extra_images=None
    ) -> torch.Tensor:
        """Full-vocabulary logits (B, V) at the answer position (for CE training on Yes/No targets)."""
        inputs = self.encode(first_images, second_images, queries, extra_images)
        out = self.model(**inputs, use_cache=False, logits_to_keep=1)
        return out.logits[:, -1].float()

    def image_logits(self, groups: list, queries: list[str]) -> torch.Tensor:
        """Full-vocabulary logits (B, V) at the answer position for ``len(groups)`` images per row."""
        out = self.model(**self.encode_images(groups, queries), use_cache=False, logits_to_keep=1)
        return out.logits[:, -1].float()

    def margin(self, first_images, second_images, queries: list[str], extra_images=None) -> torch.Tensor:
        """logit_Yes - logit_No (B,): the judge's log-odds that the first image is better."""
        logits = self.answer_logits(first_images, second_images, queries, extra_images)
        return logits[:, self.yes_id] - logits[:, self.no_id]

    def p_yes(self, first_images, second_images, queries: list[str], extra_images=None) -> torch.Tensor:
        """P(Yes) normalised over {Yes, No} = sigmoid(logit_Yes - logit_No), shape (B,), in (0, 1)."""
        import torch

        return torch.sigmoid(self.margin(first_images, second_images, queries, extra_images))


    # ---- conveniences -----------------------------------------------------------------------------
    def parameters(self):
        return self.model.parameters()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def tokens_per_image(self, height: int, width: int | None = None) -> int:
        return self.geometry.tokens_per_image(height, width or height)

    def train(self, mode: bool = True) -> Judge:
        self.model.train(mode)
        return self

    def eval(self) -> Judge:
        return self.train(False)

    def freeze(self) -> Judge:
        """No parameter gradients (the reward during RL); gradients still flow to the input images."""
        self.model.requires_grad_(False)
        return self.eval()


