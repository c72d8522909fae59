"""Promotion gates: the fill model's (benchmark net wins) and the judge's (held-out agreement)."""

from __future__ import annotations

import pytest

from steps.registry.gates import GateConfig, agreement_gate, promotion_gate
from steps.world import DIMENSIONS


def gsb(rater: str, system: str, good: float, bad: float, worse: tuple[str, str] | None = None) -> dict[str, float]:
    """Benchmark metrics with the same good/bad in every task x dimension (``worse``: one cell all bad)."""
    m = {}
    for task, dims in DIMENSIONS.items():
        for dim in dims:
            g, b = (0.0, 1.0) if (task, dim) == worse else (good, bad)
            m.update({f"gsb/{rater}/{system}/{task}/{dim}/good": g, f"gsb/{rater}/{system}/{task}/{dim}/bad": b,
                      f"gsb/{rater}/{system}/{task}/{dim}/same": 1.0 - g - b})
    return m


def passing(worse=None) -> dict[str, float]:
    m = {}
    for rater in ("judge", "annotators"):
        m.update(gsb(rater, "base", 0.6, 0.1))
        m.update(gsb(rater, "champion", 0.4, 0.2, worse if rater == "annotators" else None))
    return m


def test_gate_passes_only_when_better_than_champion_and_base():
    verdict = promotion_gate(passing(), champion_version="3")
    assert verdict.passed, verdict.reasons
    assert verdict.net_wins["judge/base"] == pytest.approx(0.5)
    assert verdict.net_wins["annotators/champion"] == pytest.approx(0.2)
    assert any("version 3" in r for r in verdict.reasons)

    worse = promotion_gate(passing(worse=("fill", "structure")), champion_version="3")
    assert not worse.passed
    assert any(r.startswith("FAIL annotators: fill/structure worse than the champion") for r in worse.reasons)

    m = passing()
    m.update(gsb("judge", "champion", 0.1, 0.1))
    assert not promotion_gate(m, "3").passed  # a tie is not a win

    no_champion_outputs = {k: v for k, v in passing().items() if "/champion/" not in k}
    v = promotion_gate(no_champion_outputs, champion_version="3")
    assert not v.passed and any("no results against the current champion" in r for r in v.reasons)
    first = promotion_gate(no_champion_outputs, champion_version=None)
    assert first.passed and any("compared with the base only" in r for r in first.reasons)


def test_gate_reasons_show_each_net_win_with_its_interval():
    m = passing()
    m.update({"net_win/judge/base/value": 0.5, "net_win/judge/base/ci_low": 0.41, "net_win/judge/base/ci_high": 0.59})
    verdict = promotion_gate(m, champion_version=None)
    assert any("net win against base +0.500, 95% CI [+0.410, +0.590]" in r for r in verdict.reasons)


def test_gate_without_annotators_or_results():
    judge_only = {k: v for k, v in passing().items() if k.startswith("gsb/judge/")}
    v = promotion_gate(judge_only, "1")
    assert v.passed and any("judge only" in r for r in v.reasons)
    assert not promotion_gate(None, "1").passed
    assert not promotion_gate({k: v for k, v in passing().items() if "annotators" in k}, None).passed
    assert not promotion_gate(passing(), "1", GateConfig(min_net_win=0.3)).passed


def test_agreement_gate_names_every_cell_below_the_threshold():
    agreement = {"agreement/fill/consistency": 0.60, "agreement/fill/structure": 0.80,
                 "agreement/removal/removal_quality": 0.70, "pretrain/pair_accuracy": 0.10}
    verdict = agreement_gate(agreement, 0.75)
    assert not verdict.passed
    assert verdict.reasons == ["FAIL agreement/fill/consistency = 0.600 < 0.750",
                               "FAIL agreement/removal/removal_quality = 0.700 < 0.750"]
    assert agreement_gate(agreement, 0.6).passed  # keys outside agreement/ are not judged
    assert agreement_gate(agreement, 0.6).reasons == ["ok every agreement >= 0.600 (lowest 0.600)"]
    assert not agreement_gate({}, 0.5).passed and not agreement_gate(None, 0.5).passed
    tags = verdict.tags()
    assert tags["gate.passed"] == "false" and "fill/consistency" in tags["gate.reasons"]
