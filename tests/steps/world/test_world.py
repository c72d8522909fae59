"""The synthetic world: deterministic conditions with known ground truth, and scores that rank the
obvious failures (wrong colour, drift, object left, noise, blur, wrong word) below the target."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from steps import world as W

SIZES = (32, 64)
N = 6  # samples per case: enough to catch an unlucky layout, cheap (~1 ms each)


def _samples(task, size=64, n=N, **cfg):
    world = W.WorldConfig(size=size, **cfg)
    return [W.make_sample(world, i, task) for i in range(n)]


def _blurred_in_mask(sample, radius):
    blurred = np.asarray(Image.fromarray(sample.target).filter(ImageFilter.GaussianBlur(radius)))
    out = sample.target.copy()
    out[sample.mask == 255] = blurred[sample.mask == 255]
    return out


def test_public_vocabulary():
    assert W.TASKS == ("fill", "extend", "removal")
    assert set(W.DIMENSIONS) == set(W.TASKS)
    assert W.DIMENSIONS["removal"] == ("removal_quality",)
    assert len(W.COLOURS) >= 6 and {"circle", "square", "triangle"} <= set(W.SHAPES)
    assert all(w.isupper() and 3 <= len(w) <= 4 for w in W.WORDS)
    palette = np.array(list(W.COLOURS.values()), float)
    dists = np.linalg.norm(palette[:, None] - palette[None], axis=-1)[np.triu_indices(len(palette), 1)]
    assert dists.min() > 80  # named colours stay distinguishable


@pytest.mark.parametrize("task", W.TASKS)
def test_make_sample_is_deterministic_by_seed(task):
    a, b = (W.make_sample(W.WorldConfig(seed=5), 3, task) for _ in range(2))
    for name in ("image", "mask", "target", "background"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.id, a.prompt, a.meta) == (b.id, b.prompt, b.meta) and a.id == f"{task}-000003"
    other = W.make_sample(W.WorldConfig(seed=6), 3, task)
    assert not np.array_equal(a.target, other.target)
    assert not np.array_equal(a.background, W.make_sample(W.WorldConfig(seed=5), 4, task).background)


@pytest.mark.parametrize("size", SIZES)
def test_generate_covers_all_tasks_with_well_formed_samples(size):
    samples = W.generate(W.WorldConfig(size=size, seed=1), 40)
    assert {s.task for s in samples} == set(W.TASKS)
    assert len({s.id for s in samples}) == 40
    for s in samples:
        assert s.image.shape == s.target.shape == s.background.shape == (size, size, 3)
        assert s.mask.shape == (size, size)
        assert {a.dtype for a in (s.image, s.mask, s.target, s.background)} == {np.dtype(np.uint8)}
        assert set(np.unique(s.mask)) == {0, 255}  # binary, neither empty nor full
        json.dumps(s.meta)
        keep = s.mask == 0
        if s.task != "extend":  # extend shows grey where it outpaints; fill/removal agree outside the mask
            np.testing.assert_array_equal(s.image[keep], s.target[keep])
        else:
            assert (s.image[s.mask == 255] == W.EXTEND_FILL_GREY).all()
    # chunks compose: the task of an index is drawn from its own seed
    chunk = W.generate(W.WorldConfig(size=size, seed=1), 5, start=35)
    assert [s.id for s in chunk] == [s.id for s in samples[35:]]
    np.testing.assert_array_equal(chunk[0].target, samples[35].target)


def test_generate_respects_task_probs():
    samples = W.generate(W.WorldConfig(size=32), 20, task_probs=(("removal", 1.0), ("fill", 0.0)))
    assert {s.task for s in samples} == {"removal"}
    with pytest.raises(ValueError, match="unknown task"):
        W.generate(W.WorldConfig(), 1, task_probs=(("paint", 1.0),))


@pytest.mark.parametrize("kwargs", [dict(size=30), dict(size=8), dict(seed=-1), dict(text_fraction=1.5),
                                    dict(extend_prompt_fraction=-0.1), dict(distractors=9)])
def test_config_validation(kwargs):
    with pytest.raises(ValueError, match="WorldConfig"):
        W.WorldConfig(**kwargs)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("task,cfg", [("fill", dict(text_fraction=0.0)), ("fill", dict(text_fraction=1.0)),
                                      ("extend", dict(extend_prompt_fraction=0.0)),
                                      ("extend", dict(extend_prompt_fraction=1.0)), ("removal", {})])
def test_target_scores_high_on_every_dimension(task, cfg, size):
    for s in _samples(task, size, **cfg):
        scores = W.score(s.target, s)
        assert tuple(scores) == W.dimensions_for(task, s.prompt)
        assert min(scores.values()) >= 0.9, (s.id, scores)


def test_extend_text_alignment_only_with_a_user_prompt():
    assert "text_alignment" not in W.dimensions_for("extend", W.EXTEND_DEFAULT_PROMPT)
    assert "text_alignment" not in W.dimensions_for("extend", "")
    assert "text_alignment" in W.dimensions_for("extend", "a red circle")
    for s in _samples("extend", extend_prompt_fraction=0.0):
        assert s.prompt == W.EXTEND_DEFAULT_PROMPT and "text_alignment" not in W.score(s.target, s)
    for s in _samples("extend", extend_prompt_fraction=1.0):
        assert s.prompt == W.object_prompt(s.meta["colour"], s.meta["shape"])
        assert "text_alignment" in W.score(s.target, s)
        x0, y0, x1, y1 = s.meta["bbox"]  # the named object is in the region to outpaint
        assert (s.mask[y0:y1, x0:x1] == 255).mean() >= 0.9
    with pytest.raises(ValueError, match="unknown task"):
        W.dimensions_for("paint", "")


@pytest.mark.parametrize("size", SIZES)
def test_wrong_colour_fill_scores_lower_on_text_alignment(size):
    for i, s in enumerate(_samples("fill", size, text_fraction=0.0)):
        other = [c for c in W.COLOURS if c != s.meta["colour"]][i % (len(W.COLOURS) - 1)]
        wrong = W.render_object(s.image, s.meta["shape"], other, s.meta["bbox"])
        assert W.score(wrong, s)["text_alignment"] < 0.1 < W.score(s.target, s)["text_alignment"]


@pytest.mark.parametrize("size", SIZES)
def test_wrong_word_scores_lower_on_text_alignment(size):
    for i, s in enumerate(_samples("fill", size, text_fraction=1.0)):
        assert s.meta["word"] in s.prompt and s.meta["colour"] in s.prompt
        word = [w for w in W.WORDS if w != s.meta["word"]][i]
        wrong = W.render_word(s.image, word, s.meta["colour"], s.meta["text_xy"], s.meta["font_px"])
        assert W.score(wrong, s)["text_alignment"] < 0.7 * W.score(s.target, s)["text_alignment"]


@pytest.mark.parametrize("task", ["fill", "extend"])
def test_changes_outside_the_mask_lower_consistency(task):
    for s in _samples(task):
        drifted = s.target.astype(int)
        drifted[s.mask == 0] += 40
        drifted = np.clip(drifted, 0, 255).astype(np.uint8)
        assert W.score(drifted, s)["consistency"] < W.score(s.target, s)["consistency"] - 0.2


@pytest.mark.parametrize("size", SIZES)
def test_object_left_in_place_fails_removal(size):
    for s in _samples("removal", size):
        assert W.score(s.image, s)["removal_quality"] < 0.2 < W.score(s.target, s)["removal_quality"]
        smeared = _blurred_in_mask(s, 1)  # slightly smoothed clean background is still a good removal
        assert W.score(smeared, s)["removal_quality"] > 0.8


@pytest.mark.parametrize("task", ["fill", "extend"])
def test_added_noise_lowers_aesthetics(task):
    rng = np.random.default_rng(0)
    for s in _samples(task):
        noisy = np.clip(s.target + rng.normal(0, 20, s.target.shape), 0, 255).astype(np.uint8)
        assert W.score(noisy, s)["aesthetics"] < 0.7


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("task,cfg", [("fill", dict(text_fraction=0.0)),
                                      ("extend", dict(extend_prompt_fraction=1.0))])
def test_blurred_shape_lowers_structure(task, cfg, size):
    drops = []
    for s in _samples(task, size, **cfg):
        drops.append(1.0 - W.score(_blurred_in_mask(s, size / 16), s)["structure"])
    assert min(drops) > 0 and np.mean(drops) > 0.1, drops


def test_score_rejects_a_candidate_of_the_wrong_size():
    s = W.make_sample(W.WorldConfig(size=32), 0, "fill")
    with pytest.raises(ValueError, match="fill-000000"):
        W.score(np.zeros((64, 64, 3), np.uint8), s)


def test_float_candidates_in_unit_range_score_like_uint8():
    s = W.make_sample(W.WorldConfig(size=32), 0, "fill")
    assert W.score(s.target.astype(np.float32) / 255, s) == pytest.approx(W.score(s.target, s), abs=1e-6)


def test_import_stays_light():
    heavy = "{'torch', 'dagster', 'skimage', 'matplotlib'}"
    code = f"import sys, steps.world; assert not {heavy} & set(sys.modules), {heavy} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3])
