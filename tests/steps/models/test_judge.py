"""The judge: tokenizer/processor built offline, torch preprocessing == processor, batched P(Yes)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from steps.models.judge import JUDGE_PATH_ENV, Judge, processor_class
from steps.models.judge_preprocess import preprocess  # noqa: E402
from steps.models.judge_spec import JUDGE_SPECS
from steps.models.tokenizers import QWEN_SPECIAL_TOKENS  # noqa: E402

torch.set_num_threads(1)
QUERIES = [
    "Is the first image better than the second image in text alignment? Prompt: a red circle",
    "removal quality",
    'Is the first image better than the second image in consistency? Prompt: the word "CAT"',
]


@pytest.fixture(scope="module")
def judge():
    return Judge.build(JUDGE_SPECS["tiny"], seed=0)


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _uint8(images: torch.Tensor) -> np.ndarray:
    return (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def test_sizes_and_image_tokens(judge):
    assert judge.num_parameters() < 1_500_000  # 1.14 M: the size the foundation trains (docs/ABLATIONS.md)
    assert judge.tokens_per_image(64) >= 16
    smoke = JUDGE_SPECS["smoke"]
    assert smoke.geometry().tokens_per_image(smoke.image_size, smoke.image_size) >= 16
    for spec in JUDGE_SPECS.values():
        assert sum(spec.mrope_section) == spec.head_dim // 2


def test_tokenizer_has_qwen_specials_and_single_token_answers(judge):
    tok = judge.tokenizer
    assert len(tok.encode("Yes", add_special_tokens=False)) == 1
    assert len(tok.encode("No", add_special_tokens=False)) == 1
    assert judge.yes_id != judge.no_id
    for special in QWEN_SPECIAL_TOKENS:
        assert tok.encode(special, add_special_tokens=False) == [tok.convert_tokens_to_ids(special)]
    assert tok.padding_side == "left"
    cfg = judge.model.config
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")


def test_chat_template_has_qwens_layout(judge):
    text = judge.prompt("Q?", num_images=2)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>Q?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("size", [64, (32, 48)])
def test_torch_preprocessing_matches_the_processor(judge, size):
    h, w = (size, size) if isinstance(size, int) else size
    images = torch.rand(3, 3, h, w, generator=torch.Generator().manual_seed(1))
    u8 = _uint8(images)
    ref = judge.processor.image_processor(list(u8), return_tensors="pt")
    pixel_values, grid = preprocess(torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255, judge.geometry)
    assert torch.equal(grid, ref["image_grid_thw"])
    assert pixel_values.shape == ref["pixel_values"].shape
    assert (pixel_values - ref["pixel_values"]).abs().max().item() <= 1e-5


def test_torch_resize_is_close_to_pil_when_the_size_changes(judge):
    # Off the judge's resolution the torch path uses antialiased bicubic instead of PIL's: close, not exact.
    yy, xx = np.mgrid[0:100, 0:100]
    smooth = np.stack([(yy * 2.5) % 256, (xx * 2.5) % 256, (xx + yy) * 1.2 % 256], -1).astype(np.uint8)[None]
    ref = judge.processor.image_processor(list(smooth), return_tensors="pt")
    pixel_values, grid = preprocess(
        torch.from_numpy(smooth).permute(0, 3, 1, 2).float() / 255, judge.geometry
    )
    assert torch.equal(grid, ref["image_grid_thw"])
    grey_levels = (pixel_values - ref["pixel_values"]).abs() * 0.27 * 255  # undo normalisation, roughly
    assert grey_levels.mean() < 1.0


def test_preprocessing_passes_gradients_to_pixels(judge):
    images = _images(2, 64, 2).requires_grad_(True)
    pixel_values, _ = preprocess(images, judge.geometry)
    (pixel_values**2).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_inputs_match_the_processor(judge):
    first, second = _images(2, 64, 3), _images(2, 64, 4)
    queries = QUERIES[:2]
    ours = judge.encode(_uint8(first), _uint8(second), queries)  # uint8 in, like the processor
    texts = [judge.prompt(q, 2) for q in queries]
    images = [img for pair in zip(_uint8(first), _uint8(second)) for img in pair]
    ref = judge.processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(ours["attention_mask"], ref["attention_mask"])
    assert torch.equal(ours["mm_token_type_ids"], ref["mm_token_type_ids"])
    assert torch.equal(ours["image_grid_thw"], ref["image_grid_thw"])
    assert (ours["pixel_values"] - ref["pixel_values"]).abs().max().item() <= 1e-5
    assert (ours["attention_mask"][:, -1] == 1).all()  # left padding: the last position is real everywhere


def test_batched_equals_one_at_a_time(judge):
    first, second, extra = _images(3, 64, 5), _images(3, 64, 6), _images(3, 64, 7)
    with torch.no_grad():
        for third in (None, extra):
            batched = judge.p_yes(first, second, QUERIES, third)
            single = torch.cat(
                [
                    judge.p_yes(
                        first[i : i + 1],
                        second[i : i + 1],
                        QUERIES[i : i + 1],
                        None if third is None else third[i : i + 1],
                    )
                    for i in range(3)
                ]
            )
            assert batched.shape == (3,)
            assert ((batched > 0) & (batched < 1)).all()
            assert torch.allclose(batched, single, atol=1e-5, rtol=0)


def test_p_yes_is_the_normalised_yes_probability_and_accepts_uint8(judge):
    first, second = _images(2, 64, 8), _images(2, 64, 9)
    with torch.no_grad():
        logits = judge.answer_logits(first, second, QUERIES[:2])
        two_way = torch.softmax(logits[:, [judge.yes_id, judge.no_id]], dim=-1)[:, 0]
        p = judge.p_yes(first, second, QUERIES[:2])
        assert torch.allclose(p, two_way, atol=1e-6)
        u8 = judge.p_yes(_uint8(first), _uint8(second), QUERIES[:2])
        rounded = judge.p_yes(
            torch.from_numpy(_uint8(first)).permute(0, 3, 1, 2).float() / 255,
            torch.from_numpy(_uint8(second)).permute(0, 3, 1, 2).float() / 255,
            QUERIES[:2],
        )
        assert torch.allclose(u8, rounded, atol=1e-6)


def test_reward_gradient_reaches_images_not_a_frozen_judge(judge):
    judge.freeze()
    try:
        first = _images(2, 64, 10).requires_grad_(True)
        second = _images(2, 64, 11)
        judge.p_yes(first, second, QUERIES[:2]).sum().backward()
        assert first.grad is not None and first.grad.abs().sum() > 0
        assert all(p.grad is None for p in judge.parameters())
    finally:
        judge.model.requires_grad_(True)


def test_save_load_round_trip(judge, tmp_path, monkeypatch):
    first, second = _images(2, 64, 12), _images(2, 64, 13)
    with torch.no_grad():
        expected = judge.p_yes(first, second, QUERIES[:2])
    path = judge.save(tmp_path / "judge")
    assert list(path.glob("*.safetensors"))
    loaded = Judge.load(path)
    assert loaded.spec == judge.spec
    with torch.no_grad():
        assert torch.equal(loaded.p_yes(first, second, QUERIES[:2]), expected)
    monkeypatch.setenv(JUDGE_PATH_ENV, str(path))
    assert Judge.load().yes_id == judge.yes_id


def test_processor_save_load_round_trip(judge, tmp_path):
    judge.processor.save_pretrained(tmp_path)
    again = processor_class().from_pretrained(tmp_path)
    assert again.chat_template == judge.processor.chat_template
    images = list(_uint8(_images(2, 64, 14)))
    texts = [judge.prompt("q", 1), judge.prompt("a longer query here", 1)]
    a = judge.processor(text=texts, images=images, padding=True, return_tensors="pt")
    b = again(text=texts, images=images, padding=True, return_tensors="pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_loads_a_released_qwen_layout(judge, tmp_path):
    # Qwen2.5-VL-Instruct ships preprocessor_config.json (torchvision processor type) + chat_template.json.
    path = judge.save(tmp_path / "qwen")
    (path / "processor_config.json").unlink()
    (path / "judge_spec.json").unlink()
    (path / "chat_template.json").write_text(
        json.dumps({"chat_template": (path / "chat_template.jinja").read_text()})
    )
    (path / "chat_template.jinja").unlink()
    g = judge.geometry
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "min_pixels": g.min_pixels,
                "max_pixels": g.max_pixels,
                "patch_size": g.patch_size,
                "temporal_patch_size": g.temporal_patch_size,
                "merge_size": g.merge_size,
                "image_mean": list(g.image_mean),
                "image_std": list(g.image_std),
                "image_processor_type": "Qwen2VLImageProcessor",
                "processor_class": "Qwen2_5_VLProcessor",
            }
        )
    )
    loaded = Judge.load(path)
    assert loaded.spec is None and loaded.geometry == judge.geometry
    first, second = _images(1, 64, 15), _images(1, 64, 16)
    with torch.no_grad():
        assert torch.equal(loaded.p_yes(first, second, QUERIES[:1]), judge.p_yes(first, second, QUERIES[:1]))


def test_missing_judge_directory_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(JUDGE_PATH_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=JUDGE_PATH_ENV):
        Judge.load()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Judge.load(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        Judge.load(tmp_path)


def test_smoke_judge_runs():
    smoke = Judge.build(JUDGE_SPECS["smoke"], seed=0)
    size = JUDGE_SPECS["smoke"].image_size
    with torch.no_grad():
        p = smoke.p_yes(_images(2, size, 17), _images(2, size, 18), QUERIES[:2])
    assert p.shape == (2,) and ((p > 0) & (p < 1)).all()
