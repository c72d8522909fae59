"""bench/judge/removal_ceiling.py: the hidden background inferred from the kept pixels ranks removal candidates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.bench.loader import load_bench

BENCH = Path(__file__).resolve().parents[2] / "bench" / "judge" / "removal_ceiling.py"


@pytest.fixture(scope="module")
def mod():
    module = load_bench(BENCH, "removal_ceiling")
    return module


def _removals(n: int = 8):
    from steps.world import WorldConfig, make_sample

    return [make_sample(WorldConfig(size=64), i, "removal") for i in range(n)]


def test_the_proxy_with_the_true_background_is_the_world_score(mod):
    from steps.world import score
    from steps.world.truth import to_unit

    for s in _removals(4):
        for cand in (s.target, s.image):  # the clean background there, and the object left in place
            assert mod.removal_proxy(cand, to_unit(s.background), s) == pytest.approx(
                score(cand, s, ("removal_quality",))["removal_quality"], abs=1e-9)


def test_inferred_background_is_near_the_hidden_one_and_ranks_a_small_offset(mod):
    """A linear fit of the 4 px ring predicts the hidden background to a few grey levels (the world's background
    is a gradient plus faint stripes and smooth noise), far better than the source (which shows the object), and
    ranks the true background above the same background one grey level brighter on most conditions."""
    from steps.world.truth import to_unit

    right = 0
    samples = _removals(12)
    for s in samples:
        inside = s.mask > 127
        guess = mod.infer_background(to_unit(s.image), inside, degree=1, band=4)
        truth = to_unit(s.background)
        err = np.abs(guess - truth)[inside].mean()
        assert err < 6 / 255, f"{s.id}: mean error {err * 255:.1f}/255"
        assert err < np.abs(to_unit(s.image) - truth)[inside].mean()
        assert np.array_equal(guess[~inside], to_unit(s.image)[~inside]), "kept pixels are kept"
        brighter = np.clip(s.target.astype(int) + 1, 0, 255).astype(np.uint8)
        right += mod.removal_proxy(s.target, guess, s) > mod.removal_proxy(brighter, guess, s)
    assert right >= 0.6 * len(samples)


def test_rows_count_clean_and_annotated_accuracy(mod):
    from types import SimpleNamespace

    # 4 pairs, gaps 0.1..0.4; pair 3's label is flipped (annotated winner b, clean winner a)
    pairs = [SimpleNamespace(winner="b.png" if i == 3 else "a.png",
                             meta={"score_gap": 0.1 * (i + 1), "clean_winner": "a.png"}) for i in range(4)]
    picks = np.array([False, True, True, False])  # True = prefers the annotated winner
    line = mod.row("x", pairs, picks)
    # clean: pair 0 wrong, 1-2 right, pair 3 picks a (not the annotated b) = the clean winner: 3/4
    assert line.startswith("| x | 4 | 0.750 | 0.500 | 0.000 / 1.000 / 1.000 / 1.000 |")
