"""Judge pretraining (steps/foundations/judge_pretrain.py, judge_pairs.py): its pairs and exact resume."""

from __future__ import annotations

import numpy as np
import pytest

from steps.foundations.judge_pretrain import JudgePretrainConfig, pretrain_judge
from steps.world import dimensions_for, score
from tests.steps.resume import straight_and_resumed


def test_pretraining_pairs_are_labelled_by_the_world():
    from steps.foundations.judge_pairs import pair_batch, soft_label
    from steps.world import WorldConfig, make_sample

    samples = [make_sample(WorldConfig(size=32), i, t) for i in range(12) for t in ("fill", "extend", "removal")]
    cfg = JudgePretrainConfig(profile="smoke")
    firsts, seconds, queries, labels, picked, dims = pair_batch(samples, np.random.default_rng(0), 40, cfg,
                                                                anchor_prob=0.5)
    for a, b, p, s, d in zip(firsts, seconds, labels, picked, dims):
        assert p == pytest.approx(soft_label(score(a, s, (d,))[d], score(b, s, (d,))[d], cfg.label_temperature))
    assert (labels > 0.7).any() and (labels < 0.3).any(), "both orders of clear pairs occur"
    assert len(set(queries)) > 5


@pytest.mark.parametrize("seed", range(4))
def test_hard_negative_textures_lose_against_the_target(seed):
    from steps.foundations.judge_pairs import variant
    from steps.world import WorldConfig, make_sample

    rng = np.random.default_rng(seed)
    for i in range(6):
        s = make_sample(WorldConfig(size=64), i, "fill")
        textured = variant(s, rng, "texture")
        assert textured.shape == s.target.shape and textured.dtype == np.uint8
        worse = [score(textured, s)[d] < score(s.target, s)[d] for d in dimensions_for(s.task, s.prompt)]
        assert sum(worse) >= 2, "a texture in the edited region is worse on most dimensions"


def test_judge_pretraining_kill_and_resume_gives_the_uninterrupted_weights(prefs, tmp_path):
    """Anchor phase, then adversarial pairs: the same weights and metrics after a kill and a resume."""
    root, _ = prefs

    def run(name, log):
        return pretrain_judge(JudgePretrainConfig(
            profile="smoke", train_dir=str(root / "data/train"), out_dir=str(tmp_path / name / "judge"), steps=8,
            batch_size=4, eval_conditions=4, log_every=1, adv_share=0.5, anchor_fraction=0.25,
            checkpoint_dir=str(tmp_path / name / "ckpt"), checkpoint_every=4), log)

    full, cut = straight_and_resumed(tmp_path, run, "pretrain/loss")
    assert full["metrics"] == cut["metrics"]


def test_a_fresh_judge_can_be_trained_on_a_finer_grid(prefs, tmp_path):
    """grid=2: the saved judge sees each image as 4x the tokens and keeps that geometry when loaded."""
    from steps.models.judge import Judge

    root, _ = prefs
    cfg = dict(profile="smoke", train_dir=str(root / "data/train"), steps=2, batch_size=2, eval_conditions=2)
    coarse = pretrain_judge(JudgePretrainConfig(out_dir=str(tmp_path / "g1"), **cfg))
    fine = pretrain_judge(JudgePretrainConfig(out_dir=str(tmp_path / "g2"), grid=2, **cfg))
    assert coarse and fine
    a, b = Judge.load(tmp_path / "g1"), Judge.load(tmp_path / "g2")
    assert b.tokens_per_image(32) == 4 * a.tokens_per_image(32)
    assert b.spec.image_size == 2 * a.spec.image_size
    with pytest.raises(ValueError, match="grid"):
        JudgePretrainConfig(profile="smoke", grid=0)
