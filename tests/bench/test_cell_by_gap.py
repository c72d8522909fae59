"""bench/judge/cell_by_gap.py: clean-label accuracy by score-gap quartile (pure numbers, milliseconds)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from tests.bench.loader import load_bench

BENCH = Path(__file__).resolve().parents[2] / "bench" / "judge" / "cell_by_gap.py"


def _module():
    mod = load_bench(BENCH, "cell_by_gap")
    return mod


def test_accuracy_by_gap_quartile_counts_clean_and_noisy_labels_apart():
    """Eight pairs, gaps 0.1..0.8; the two smallest-gap pairs are judged wrong against the clean winner, and one
    flipped label (annotated winner != clean winner) that the judge gets right against the clean label is wrong
    against the annotated one: noisy 5/8, clean 6/8, quartiles 0 / 1 / 1 / 1."""
    pairs, pref = [], []
    for i in range(8):
        flipped = i == 7
        clean = "a.png"
        winner = "b.png" if flipped else "a.png"
        pairs.append(SimpleNamespace(winner=winner, meta={"score_gap": 0.1 * (i + 1), "clean_winner": clean}))
        prefers_winner = i >= 2 and not flipped  # the flipped pair: the judge picks the clean winner (a)
        pref.append(0.9 if prefers_winner else 0.1)
    row = _module().by_gap("test", pairs, np.array(pref))[0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["test", "8", "0.625", "0.750"]
    assert [c.split()[0] for c in cells[4:]] == ["0.000", "1.000", "1.000", "1.000"]
