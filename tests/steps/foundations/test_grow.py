"""Growing a judge deeper (steps/foundations/grow.py): the same answers, more trainable blocks."""

from __future__ import annotations

import pytest
import torch

from steps.foundations.grow import grow_judge, placements
from steps.models.judge import Judge
from steps.models.judge_spec import spec_for


def _trained_like(seed: int = 0) -> Judge:
    """A smoke judge whose every weight is random (no zero projections), as a trained one's are."""
    judge = Judge.build(spec_for("smoke"), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in judge.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return judge.eval()


def _pairs(seed: int = 1, n: int = 3):
    g = torch.Generator().manual_seed(seed)
    first, second, src = (torch.rand(n, 3, 32, 32, generator=g) for _ in range(3))
    queries = ["Is the first image better than the second for removal quality?"] * n
    return first, second, queries, src


def test_placements_keep_order_and_the_last_block_last():
    assert placements(3, 6, keep_last=True) == [0, 2, 5]
    assert placements(3, 6, keep_last=False) == [0, 2, 4]
    assert placements(2, 2, keep_last=True) == [0, 1]
    with pytest.raises(ValueError):
        placements(3, 2, keep_last=False)


def test_grown_judge_answers_as_before_and_saves(tmp_path):
    judge = _trained_like()
    grown = grow_judge(judge, vision_depth=3, text_layers=3)
    assert grown.spec.vision_depth == 3 and grown.spec.text_layers == 3
    assert grown.num_parameters() > judge.num_parameters()
    first, second, queries, src = _pairs()
    with torch.no_grad():
        before = judge.margin(first, second, queries, src)
        after = grown.margin(first, second, queries, src)
    assert before.abs().max() > 1e-3, "a random judge has a margin to preserve"
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)
    back = Judge.load(grown.save(tmp_path / "grown", grown.record))
    assert back.spec == grown.spec and back.record["grown"]["vision_depth"] == 3
    with torch.no_grad():
        torch.testing.assert_close(back.margin(first, second, queries, src), before, atol=1e-5, rtol=1e-4)


def test_new_blocks_get_gradients():
    grown = grow_judge(_trained_like(), vision_depth=2, text_layers=2).train()
    first, second, queries, src = _pairs()
    grown.margin(first, second, queries, src).sum().backward()
    new = dict(grown.model.named_parameters())
    # smoke: 1 vision block -> 2 (the trained one stays last: new block 0); 1 text layer -> 2 (new layer 1)
    for name in ("model.visual.blocks.0.attn.proj.weight", "model.language_model.layers.1.self_attn.o_proj.weight"):
        assert new[name].grad is not None and new[name].grad.abs().sum() > 0, name
        assert new[name].detach().abs().sum() == 0, "starts as the identity"


def test_a_judge_without_spec_is_refused():
    judge = _trained_like()
    judge.spec = None
    with pytest.raises(ValueError, match="judge_spec"):
        grow_judge(judge, 2, 2)


def test_upsampled_judge_sees_a_finer_grid_and_saves(tmp_path):
    from steps.foundations.grow import upsample_judge

    judge = _trained_like()
    before = judge.tokens_per_image(32)
    x2 = upsample_judge(judge, 2)
    assert x2.spec.image_size == 2 * judge.spec.image_size
    assert x2.tokens_per_image(32) == 4 * before
    assert judge.tokens_per_image(32) == before, "the original judge is unchanged"
    first, second, queries, src = _pairs()
    with torch.no_grad():
        margin = x2.margin(first, second, queries, src)
        back = Judge.load(x2.save(tmp_path / "x2", x2.record))
        assert back.tokens_per_image(32) == x2.tokens_per_image(32) and back.record["upsampled"]["factor"] == 2
        torch.testing.assert_close(back.margin(first, second, queries, src), margin, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError):
        upsample_judge(judge, 0)
