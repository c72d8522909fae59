"""steps/evaluation/netwin.py: GSB fractions and net wins read back from metric keys, and the net win's 95% interval."""

from __future__ import annotations

import numpy as np
import pytest

from steps.evaluation.netwin import annotator_outcome, gsb_cells, gsb_metrics, net_win, net_win_intervals


def test_net_win_reads_metric_keys():
    m = {"gsb/judge/base/fill/structure/good": 0.5, "gsb/judge/base/fill/structure/same": 0.25,
         "gsb/judge/base/fill/structure/bad": 0.25, "gsb/judge/base/removal/removal_quality/good": 0.0,
         "gsb/judge/base/removal/removal_quality/same": 1.0, "gsb/judge/base/removal/removal_quality/bad": 0.0,
         "psnr/kept/base/fill": 30.0}
    assert net_win(m, "judge", "base") == pytest.approx(0.125)
    assert net_win(m, "annotators", "base") is None
    assert np.isclose(sum(gsb_cells(m, "judge", "base")[("fill", "structure")].values()), 1.0)


def test_net_win_interval_is_the_mean_over_cells_with_its_95_percent_width():
    """One cell: the interval of a mean of +1/0/-1 outcomes; several cells of one condition set: the plug-in variance of
    the mean over cells; 385 conditions per task keep any net win within +-0.10 (the outcome's variance is <= 1)."""
    rng = np.random.default_rng(0)
    n = 400
    outcomes = {"base": {"fill": {f"c{i}": {"structure": int(rng.choice([-1, 0, 1], p=[0.2, 0.3, 0.5])),
                                            "aesthetics": int(rng.choice([-1, 1]))} for i in range(n)},
                         "removal": {f"r{i}": {"removal_quality": int(rng.choice([-1, 1]))} for i in range(n)}}}
    counts = {"judge": {"base": {t: {d: {o: sum(1 for c in conds.values() if c[d] == v)
                                         for o, v in (("good", 1), ("same", 0), ("bad", -1))}
                                     for d in next(iter(conds.values()))} for t, conds in outcomes["base"].items()}}}
    got = net_win_intervals(outcomes)["base"]
    assert got["all"]["value"] == pytest.approx(net_win(gsb_metrics(counts), "judge", "base"))
    removal = np.array([c["removal_quality"] for c in outcomes["base"]["removal"].values()])
    assert got["removal"]["half_width"] == pytest.approx(1.96 * removal.std(ddof=1) / np.sqrt(n))
    assert got["all"]["ci_low"] < got["all"]["value"] < got["all"]["ci_high"]
    worst = {"base": {"removal": {f"r{i}": {"removal_quality": (-1) ** i} for i in range(385)}}}
    assert net_win_intervals(worst)["base"]["removal"]["half_width"] <= 0.1001


def test_annotator_outcome_uses_the_tie_margin_on_both_sides():
    assert [annotator_outcome(d, 0.02) for d in (0.03, 0.02, 0.0, -0.02, -0.03)] == ["good", "same", "same", "same", "bad"]
