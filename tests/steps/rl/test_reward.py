"""The OneReward reward (steps/rl/reward.py): the judge asked per dimension, as it was trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.steps.rl.helpers import config


@pytest.mark.parametrize("show_source", [False, True])
def test_pair_judge_matches_the_judge_row_by_row(smoke, show_source):
    """PairJudge (each image encoded once, queries tokenised once) = Judge.p_yes on every row: loss, stats,
    gradients to the policy pixels, and the language model's token ids."""
    from steps.models.judge import Judge
    from steps.preferences import judge_query
    from steps.rl.reward import PairJudge, onereward_loss

    judge = Judge.load(smoke / "judge").freeze()
    pair = PairJudge(judge)
    gen = torch.Generator().manual_seed(0)
    policy = torch.rand(3, 3, 32, 32, generator=gen).requires_grad_(True)
    reference, source = torch.rand(3, 3, 32, 32, generator=gen), torch.rand(3, 3, 32, 32, generator=gen)
    prompts = ["a red circle", 'the word "TREE" in red', "high-definition, perfect composition"]
    for task in ("fill", "extend", "removal"):
        results = []
        for scorer in (judge, pair, pair):  # the second PairJudge call reads its token cache
            loss, stats = onereward_loss(
                scorer, policy, reference, task, prompts, 0.8, source if show_source else None
            )
            (grad,) = torch.autograd.grad(loss, policy)
            results.append((loss.detach(), stats, grad))
        for loss, stats, grad in results[1:]:
            torch.testing.assert_close(loss, results[0][0], atol=1e-6, rtol=0)
            torch.testing.assert_close(stats, results[0][1], atol=1e-5, rtol=0)
            torch.testing.assert_close(grad, results[0][2], atol=1e-7, rtol=1e-4)
    assert pair.token_cache
    queries = [judge_query("fill", "consistency", p) for p in prompts]
    groups = [policy, reference] + ([source] if show_source else [])
    expected = judge.encode_images(groups, queries)
    per_image = [judge.tokens_per_image(32)] * len(groups)
    ids, mask = pair.encode_text(queries, [tuple(per_image)] * len(queries))
    assert torch.equal(ids, expected["input_ids"]) and torch.equal(mask, expected["attention_mask"])


def test_judge_must_be_queried_as_trained(smoke, tmp_path):
    import shutil

    from steps.rl.train import check_judge

    judge_dir = tmp_path / "judge"
    shutil.copytree(smoke / "judge", judge_dir)
    cfg = config(smoke, tmp_path, judge_dir=str(judge_dir))
    check_judge(cfg)  # no training.json: a released model, nothing to check
    (judge_dir / "training.json").write_text(json.dumps({"query_template_version": "v0", "config": {}}))
    with pytest.raises(ValueError, match="retrain the judge"):
        check_judge(cfg)
    (judge_dir / "training.json").write_text(
        json.dumps({"query_template_version": "v1", "config": {"show_source": True}})
    )
    with pytest.raises(ValueError, match="judge_sees_source=True"):
        check_judge(cfg)
    check_judge(config(smoke, tmp_path, judge_dir=str(judge_dir), judge_sees_source=True))


def test_rl_shows_the_judge_the_same_masked_source_as_training():
    from steps.rl.rollout import judge_source
    from steps.vocabulary import masked_source
    from steps.world import WorldConfig, make_sample

    samples = [make_sample(WorldConfig(size=32), i, task) for i, task in enumerate(["fill", "extend", "removal"])]
    shown = judge_source(samples, "cpu")
    expected = np.stack([masked_source(s.image, s.mask) for s in samples]).astype(np.float32) / 255
    assert shown.shape == (3, 3, 32, 32)
    assert torch.allclose(shown, torch.from_numpy(expected).permute(0, 3, 1, 2), atol=1e-6)
