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

    from steps.rl.reward import check_judge

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


@pytest.fixture(scope="module")
def judges(tmp_path_factory):
    """Two smoke judges whose weights are perturbed (a fresh one answers 0.5 to everything): ensemble members
    that disagree."""
    from steps.models.judge import Judge
    from steps.models.judge_spec import spec_for
    from steps.preferences import QUERY_TEMPLATE

    root = tmp_path_factory.mktemp("judges")
    for seed in (0, 1):
        judge = Judge.build(spec_for("smoke"), seed=seed, corpus=[QUERY_TEMPLATE])
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in judge.model.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
        judge.save(root / f"judge{seed}")
    return root / "judge0", root / "judge1"


def test_ensemble_reward_is_the_members_mean_minus_k_spread(judges):
    """Both-orders preference (grpo): k = 0 is the members' mean; k > 0 lowers every sample's reward by k x the
    members' spread; two copies of one judge are that judge. P(Yes) (one_step) combines the same way."""
    from steps.models.judge import Judge
    from steps.rl.reward import JudgeEnsemble, PairJudge, judge_rows, preference_rewards

    a, b = (PairJudge(Judge.load(p).freeze()) for p in judges)
    gen = torch.Generator().manual_seed(0)
    images, reference = torch.rand(4, 3, 32, 32, generator=gen), torch.rand(4, 3, 32, 32, generator=gen)
    prompts = ["a red circle", "", 'the word "TREE" in red', "a blue square"]
    ra, _ = preference_rewards(a, images, reference, "fill", prompts)
    rb, _ = preference_rewards(b, images, reference, "fill", prompts)
    assert (ra - rb).abs().max() > 1e-4, "the two members must disagree for the test to mean anything"
    r0, stats = preference_rewards(JudgeEnsemble([a, b], k=0.0), images, reference, "fill", prompts)
    torch.testing.assert_close(r0, (ra + rb) / 2, atol=1e-6, rtol=0)
    assert stats.shape == (4, 3) and float(stats[:, 2].sum()) == 16  # 4 samples x 4 fill dimensions
    r1, _ = preference_rewards(JudgeEnsemble([a, b], k=1.0), images, reference, "fill", prompts)
    assert (r1 < r0).all()
    same, _ = preference_rewards(JudgeEnsemble([a, a], k=2.0), images, reference, "fill", prompts)
    torch.testing.assert_close(same, ra, atol=1e-6, rtol=0)
    pa, _, _ = judge_rows(a, images, reference, "removal", prompts)
    pb, _, _ = judge_rows(b, images, reference, "removal", prompts)
    pe, _, _ = judge_rows(JudgeEnsemble([a, b], k=0.5), images, reference, "removal", prompts)
    torch.testing.assert_close(pe, (pa + pb) / 2 - 0.5 * (pa - pb).abs() / 2, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="at least 2"):
        JudgeEnsemble([a])


def test_rl_trains_against_an_ensemble(smoke, judges, tmp_path):
    """judge_ensemble in RLConfig: the training reward is the ensemble's (logged below the single judge's when
    they disagree); an oracle run with an ensemble is refused."""
    from steps.rl.train import train
    from tests.steps.rl.helpers import FILL_ONLY, QUIET

    grpo = dict(update="grpo", group_size=2, batch_size=2, sde_window=1, denoise_steps=2, **FILL_ONLY, **QUIET)
    rewards = {}
    for name, extra in (("single", ()), ("ensemble", (str(judges[1]),))):
        logged = []
        train(config(smoke, tmp_path / name, steps=1, lr=0.0, judge_dir=str(judges[0]), judge_ensemble=extra,
                     ensemble_k=1.0, **grpo),
              log=lambda m, s, logged=logged: logged.append(m))
        rewards[name] = logged[0]["grpo/reward_mean"]
    assert rewards["ensemble"] < rewards["single"]
    with pytest.raises(ValueError, match="judge_ensemble"):
        config(smoke, tmp_path / "x", reward="oracle", judge_ensemble=(str(judges[1]),))
