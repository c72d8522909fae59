"""A judge built from config (profiles smoke and tiny): its sizes, tokenizer corpus, processor and Qwen2.5-VL
model (the judge itself: steps/models/judge.py)."""

from __future__ import annotations

from dataclasses import dataclass

from steps.config import field

# Qwen2.5-VL-Instruct's chat layout: a default system turn; each image is
# <|vision_start|><|image_pad|><|vision_end|>.
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class JudgeSpec:
    """Sizes of a judge built from config (profiles ``smoke`` and ``tiny``)."""

    image_size: int = field(64, "side of the images the judge sees; resize is the identity at this size")
    patch_size: int = field(8, "vision patch side in pixels (Qwen: 14)")
    merge_size: int = field(2, "patches merged per side into one LM token (Qwen: 2)")
    vision_hidden: int = field(32, "vision encoder width")
    vision_depth: int = field(2, "vision encoder blocks (the last one uses full attention)")
    vision_heads: int = field(2, "vision attention heads")
    text_hidden: int = field(64, "language model width")
    text_layers: int = field(2, "language model layers")
    text_heads: int = field(4, "language model attention heads")
    text_kv_heads: int = field(2, "language model key/value heads (GQA)")
    text_intermediate: int = field(128, "language model MLP width")
    vocab_size: int = field(768, "byte-level BPE vocabulary to train (plus Qwen's special tokens)")

    @property
    def head_dim(self) -> int:
        return self.text_hidden // self.text_heads

    @property
    def mrope_section(self) -> list[int]:
        """Split of head_dim/2 rotary frequencies over (temporal, height, width); must sum to head_dim/2."""
        half = self.head_dim // 2
        t = half // 4 or 1
        h = (half - t) // 2
        return [t, h, half - t - h]

    def geometry(self):
        """The `ImageGeometry` under which an ``image_size`` image passes unresized."""
        from steps.models.judge_preprocess import ImageGeometry

        factor = self.patch_size * self.merge_size
        if self.image_size % factor:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch*merge={factor}")
        return ImageGeometry(
            patch_size=self.patch_size,
            merge_size=self.merge_size,
            min_pixels=factor * factor,
            max_pixels=max(self.image_size**2, factor * factor),
        )


JUDGE_SPECS: dict[str, JudgeSpec] = {
    "smoke": JudgeSpec(
        image_size=32,
        patch_size=4,
        vision_hidden=16,
        vision_depth=1,
        vision_heads=2,
        text_hidden=32,
        text_layers=1,
        text_heads=2,
        text_kv_heads=1,
        text_intermediate=64,
        vocab_size=512,
    ),
    # 1.1 M parameters: the 0.4 M judge (48-wide vision, 2 blocks) was measured too small to learn the
    # comparison robustly (docs/ABLATIONS.md); this size trains at ~1 s per 16 pairs on one core.
    "tiny": JudgeSpec(
        vision_hidden=96,
        vision_depth=3,
        vision_heads=4,
        text_hidden=128,
        text_layers=3,
        text_heads=4,
        text_kv_heads=2,
        text_intermediate=256,
    ),
}


def judge_corpus() -> list[str]:
    """The sentences a built-from-config judge reads: every query (all tasks, dimensions, prompt kinds).

    Trained into the tokenizer so the query is ~40 word-level tokens instead of ~85 character pieces:
    a shorter sequence and one token per dimension name make the query easy to condition on.
    """
    from steps.preferences import judge_query
    from steps.vocabulary import DIMENSIONS, EXTEND_DEFAULT_PROMPT, REMOVAL_PROMPT

    prompts = ["a red circle", "an orange square", 'the word "CAT" in blue', EXTEND_DEFAULT_PROMPT, REMOVAL_PROMPT]
    lines = [judge_query(task, dim, prompt) for task, dims in DIMENSIONS.items() for dim in dims for prompt in prompts]
    return lines * 4  # weight: merges for the query's words win over rarer world words


def build_processor(spec: JudgeSpec, corpus: list[str] | None = None):
    """Tokenizer (trained here) + PIL image processor with ``spec``'s geometry + Qwen chat template."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from steps.models.judge import processor_class  # defined on first use there (no import cycle at load)
    from steps.models.tokenizers import train_qwen_tokenizer, world_corpus

    lines = judge_corpus() + list(corpus or ())
    tokenizer = train_qwen_tokenizer(world_corpus(lines), vocab_size=spec.vocab_size)
    g = spec.geometry()
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=g.patch_size,
        merge_size=g.merge_size,
        temporal_patch_size=g.temporal_patch_size,
        min_pixels=g.min_pixels,
        max_pixels=g.max_pixels,
    )
    return processor_class()(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN_CHAT_TEMPLATE
    )


def build_model(spec: JudgeSpec, tokenizer, seed: int = 0):
    """A randomly initialised `Qwen2_5_VLForConditionalGeneration` of ``spec``'s sizes."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {
        name: tokenizer.convert_tokens_to_ids(tok)
        for name, tok in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        )
    }
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": spec.text_hidden,
            "intermediate_size": spec.text_intermediate,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": spec.text_heads,
            "num_key_value_heads": spec.text_kv_heads,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": spec.mrope_section,
            },
            "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": 2 * spec.vision_hidden,
            "num_heads": spec.vision_heads,
            "patch_size": spec.patch_size,
            "spatial_merge_size": spec.merge_size,
            "temporal_patch_size": 2,
            "out_hidden_size": spec.text_hidden,
            "window_size": spec.patch_size * spec.merge_size * 2,
            "fullatt_block_indexes": [spec.vision_depth - 1],
        },
        tie_word_embeddings=False,
        **ids,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    return model.eval()


def spec_for(profile: str) -> JudgeSpec:
    try:
        return JUDGE_SPECS[profile]
    except KeyError:
        raise ValueError(
            f"no built-from-config judge for profile {profile!r}; known: {sorted(JUDGE_SPECS)}"
        ) from None
