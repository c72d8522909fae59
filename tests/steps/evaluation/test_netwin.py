"""steps/evaluation/netwin.py: GSB fractions and net wins read back from metric keys, and the net win's 95% interval."""

from __future__ import annotations

import numpy as np
import pytest

from steps.evaluation.netwin import (
    annotator_outcome,
    gsb_cells,
    gsb_metrics,
    net_win,
    net_win_intervals,
    worst_case_half_width,
)


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


def test_worst_case_half_width_bounds_every_outcome_and_is_reached():
    """The bound holds for random outcomes and is reached by outcomes split evenly between +1 and -1 on every
    dimension; one dimension needs 386 conditions for +-0.10 (1.96 / sqrt(n - 1)); extend's text cell on a share of
    the conditions widens it."""
    rng = np.random.default_rng(1)
    dims = [("aesthetics", "structure", "text_alignment") if rng.random() < 0.4 else ("aesthetics", "structure")
            for _ in range(300)]
    bound = worst_case_half_width(dims)
    for _ in range(20):
        p = rng.dirichlet([1, 1, 1])
        conds = {f"c{i}": {d: int(rng.choice([-1, 0, 1], p=p)) for d in ds} for i, ds in enumerate(dims)}
        assert net_win_intervals({"s": {"extend": conds}})["s"]["extend"]["half_width"] <= bound + 1e-12
    even = {f"c{i}": {d: (-1) ** i for d in ds} for i, ds in enumerate(dims)}
    assert net_win_intervals({"s": {"extend": even}})["s"]["extend"]["half_width"] == pytest.approx(bound, rel=1e-3)
    single = [("removal_quality",)]
    assert worst_case_half_width(single * 385) > 0.10 >= worst_case_half_width(single * 386)
    assert worst_case_half_width(single * 386) == pytest.approx(1.96 / np.sqrt(385))
    assert bound > worst_case_half_width([("aesthetics", "structure")] * 300)
