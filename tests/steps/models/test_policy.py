"""The fill model: tiny specs build from config, save in the FLUX layout and load through the flux loader."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from steps.models.policy import (  # noqa: E402
    FLUX_PATH_ENV,
    POLICY_SPECS,
    PolicySpec,
    build_tiny_fill_pipeline,
    count_params,
    load_fill_pipeline,
    load_spec,
    save_pipeline,
    save_transformer,
)

torch.set_num_threads(1)


def _run(pipe, spec: PolicySpec, steps: int = 2) -> torch.Tensor:
    size = spec.image_size
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, size, size, generator=gen)
    mask = torch.zeros(2, 1, size, size)
    mask[:, :, size // 4 : size // 2, size // 4 : 3 * size // 4] = 1
    return pipe(
        prompt=["a red circle", 'the word "CAT"'],
        image=image,
        mask_image=mask,
        height=size,
        width=size,
        num_inference_steps=steps,
        guidance_scale=30.0,
        generator=torch.Generator().manual_seed(1),
        output_type="pt",
        max_sequence_length=spec.t5_max_length,
    ).images


@pytest.fixture(scope="module")
def smoke():
    spec = POLICY_SPECS["smoke"]
    return spec, build_tiny_fill_pipeline(spec, seed=0)


@pytest.fixture(scope="module")
def saved(smoke, tmp_path_factory):
    spec, pipe = smoke
    return save_pipeline(pipe, tmp_path_factory.mktemp("flux") / "fill", spec)


def test_spec_sizes_match_the_design():
    smoke, tiny = POLICY_SPECS["smoke"], POLICY_SPECS["tiny"]
    assert tiny.transformer_in_channels == 4 * 8 + 4 * 8 + 4 * 4**2 == 128
    assert (tiny.num_layers, tiny.num_single_layers, tiny.num_attention_heads, tiny.attention_head_dim) == (
        2,
        2,
        4,
        32,
    )
    assert tiny.vae_scale_factor == 4 and tiny.image_size == 64 and smoke.image_size == 32
    with pytest.raises(ValueError, match="multiple"):
        PolicySpec(image_size=60)
    with pytest.raises(ValueError, match="axes_dims_rope"):
        PolicySpec(axes_dims_rope=(8, 8, 8))


def test_param_counts_and_text_encoders(smoke):
    spec, pipe = smoke
    assert 0.15e6 < count_params(pipe.transformer) < 0.3e6
    tiny = build_tiny_fill_pipeline(POLICY_SPECS["tiny"], seed=0)
    assert 1.5e6 < count_params(tiny.transformer) < 2.5e6
    assert pipe.transformer.config.in_channels == spec.transformer_in_channels
    # CLIP pooling looks for the eos id; T5 specials sit at 0, 1, 2 as in the real tokenizer.
    assert pipe.text_encoder.config.eos_token_id == pipe.tokenizer.eos_token_id
    assert pipe.tokenizer.backend_tokenizer.model.end_of_word_suffix == "</w>"
    t5 = pipe.tokenizer_2
    assert (t5.pad_token_id, t5.eos_token_id, t5.unk_token_id) == (0, 1, 2)
    assert pipe.tokenizer.model_max_length == spec.clip_max_length
    assert t5.model_max_length == spec.t5_max_length


def test_build_is_deterministic(smoke):
    spec, pipe = smoke
    again = build_tiny_fill_pipeline(spec, seed=0)
    for a, b in zip(pipe.transformer.state_dict().values(), again.transformer.state_dict().values()):
        assert torch.equal(a, b)
    assert pipe.tokenizer.get_vocab() == again.tokenizer.get_vocab()


def test_saved_pipeline_loads_through_the_flux_loader_with_identical_output(smoke, saved, monkeypatch):
    spec, pipe = smoke
    expected = _run(pipe, spec)
    loaded = load_fill_pipeline(saved)
    assert torch.equal(_run(loaded, spec), expected)
    assert load_spec(saved) == spec
    monkeypatch.setenv(FLUX_PATH_ENV, str(saved))
    from_env = load_fill_pipeline()
    assert torch.equal(_run(from_env, spec), expected)


def test_replacement_transformer_is_picked_up(smoke, saved, tmp_path):
    spec, pipe = smoke
    other = build_tiny_fill_pipeline(spec, seed=7)
    replacement = save_transformer(other.transformer, tmp_path / "onereward-transformer")
    loaded = load_fill_pipeline(saved, transformer_path=replacement)
    for a, b in zip(other.transformer.state_dict().values(), loaded.transformer.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(_run(loaded, spec), _run(pipe, spec))
    # A pipeline directory works as a transformer source too (its transformer/ subfolder).
    via_pipeline_dir = load_fill_pipeline(saved, transformer_path=saved)
    assert torch.equal(_run(via_pipeline_dir, spec), _run(pipe, spec))


def test_missing_or_incomplete_directories_name_the_problem(saved, tmp_path, monkeypatch):
    monkeypatch.delenv(FLUX_PATH_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=FLUX_PATH_ENV):
        load_fill_pipeline()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_fill_pipeline(tmp_path / "nowhere")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    for weights in (broken / "vae").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(FileNotFoundError, match="'vae'"):
        load_fill_pipeline(broken)
    shutil.rmtree(broken)
    shutil.copytree(saved, broken)
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(FileNotFoundError, match="'text_encoder_2'"):
        load_fill_pipeline(broken)
    with pytest.raises(FileNotFoundError, match="replacement transformer"):
        load_fill_pipeline(saved, transformer_path=tmp_path)
    # With a replacement transformer the base directory need not carry transformer weights.
    shutil.rmtree(broken)
    shutil.copytree(saved, broken)
    for weights in (broken / "transformer").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(FileNotFoundError, match="'transformer'"):
        load_fill_pipeline(broken)
    assert load_fill_pipeline(broken, transformer_path=saved / "transformer") is not None


def test_save_is_atomic(smoke, tmp_path, monkeypatch):
    spec, pipe = smoke
    target = save_pipeline(pipe, tmp_path / "fill")
    before = sorted(p.name for p in target.iterdir())

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(pipe), "save_pretrained", boom)
    with pytest.raises(RuntimeError):
        save_pipeline(pipe, target)
    assert sorted(p.name for p in target.iterdir()) == before  # the old copy is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["fill"]  # no temp dir left behind
