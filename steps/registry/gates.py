"""Promotion gates of the registry: when a new version may become ``champion`` (docs/DESIGN.md §8).

- `promotion_gate`: the fill model, over benchmark metrics (``gsb/<rater>/<system>/...``): net win against
  the base (and the current champion) above ``min_net_win`` for every rater, no task x dimension worse
  than the champion by more than ``max_drop``;
- `agreement_gate`: the judge, every held-out ``agreement/<task>/<dimension>`` >= ``min_agreement``.
The `Verdict` and its reasons become version tags (`Verdict.tags`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TAG_VALUE_LIMIT = 5000


@dataclass(frozen=True)
class GateConfig:
    """Promotion gate for ``onereward-fill`` over benchmark metrics (``gsb/<rater>/<system>/...``)."""

    min_net_win: float = 0.0
    """net win = mean over task x dimension of (good - bad); it must EXCEED this against champion and base"""
    max_drop: float = 0.10
    """no task x dimension may have good - bad below -max_drop against the champion"""
    champion_system: str = "champion"
    """benchmark system name of the current champion's outputs"""
    base_system: str = "base"
    """benchmark system name of the base model's outputs"""
    raters: tuple[str, ...] = ("judge", "annotators")
    """raters consulted when the benchmark has them; the judge is required, annotators exist only with ground truth"""


@dataclass
class Verdict:
    passed: bool
    reasons: list[str]
    net_wins: dict[str, float] = field(default_factory=dict)  # "<rater>/<system>" -> net win

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": list(self.reasons), "net_wins": dict(self.net_wins)}

    def tags(self) -> dict[str, str]:
        tags = {"gate.passed": str(self.passed).lower(), "gate.reasons": "\n".join(self.reasons)[:TAG_VALUE_LIMIT]}
        tags.update({f"gate.net_win.{k.replace('/', '.')}": f"{v:+.4f}" for k, v in self.net_wins.items()})
        return tags


def promotion_gate(metrics: dict[str, float] | None, champion_version: str | None,
                   gate: GateConfig = GateConfig()) -> Verdict:
    """Pass when, for every rater present, the net win against the base (and the current champion, if any)
    exceeds ``min_net_win`` and no task x dimension is worse than the champion by more than ``max_drop``."""
    from steps.evaluation.netwin import gsb_cells, net_win, net_win_ci

    if not metrics:
        return Verdict(False, ["no benchmark results: nothing to judge the new version by"])
    raters = [r for r in gate.raters if any(k.startswith(f"gsb/{r}/") for k in metrics)]
    reasons: list[str] = []
    ok = True
    if "judge" not in raters:
        return Verdict(False, ["the benchmark has no judge ratings (gsb/judge/...)"])
    if "annotators" in gate.raters and "annotators" not in raters:
        reasons.append("no simulated-annotator ratings (no ground truth in this benchmark): judge only")
    opponents = [gate.base_system]
    if champion_version is None:
        reasons.append("no current champion: compared with the base only")
    else:
        opponents.append(gate.champion_system)
    net_wins: dict[str, float] = {}
    for rater in raters:
        for system in opponents:
            who = f"the current champion (version {champion_version})" if system == gate.champion_system else system
            net = net_win(metrics, rater, system)
            if net is None:
                ok = False
                reasons.append(f"FAIL {rater}: no results against {who} (benchmark system {system!r})")
                continue
            net_wins[f"{rater}/{system}"] = net
            passed = net > gate.min_net_win
            ok &= passed
            ci = net_win_ci(metrics, rater, system)
            interval = "" if ci is None else f", 95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}]"
            reasons.append(f"{'ok' if passed else 'FAIL'} {rater}: net win against {who} {net:+.3f}{interval} "
                           f"({'>' if passed else '<='} {gate.min_net_win:+.3f})")
            if system != gate.champion_system:
                continue
            for (task, dim), cell in sorted(gsb_cells(metrics, rater, system).items()):
                cell_net = cell.get("good", 0.0) - cell.get("bad", 0.0)
                if cell_net < -gate.max_drop:
                    ok = False
                    reasons.append(f"FAIL {rater}: {task}/{dim} worse than the champion: good - bad = "
                                   f"{cell_net:+.3f} < {-gate.max_drop:+.3f}")
    reasons.append("promote to champion" if ok else "keep the current champion" if champion_version else
                   "no champion yet")
    return Verdict(ok, reasons, net_wins)


def agreement_gate(agreement: dict[str, float] | None, min_agreement: float) -> Verdict:
    """Judge promotion: every ``agreement/<task>/<dimension>`` (held-out accuracy) >= ``min_agreement``."""
    values = {k: v for k, v in (agreement or {}).items() if k.startswith("agreement/")}
    if not values:
        return Verdict(False, ["no agreement metrics (agreement/<task>/<dimension>)"])
    low = {k: v for k, v in values.items() if v < min_agreement}
    reasons = [f"FAIL {k} = {v:.3f} < {min_agreement:.3f}" for k, v in sorted(low.items())]
    if not low:
        reasons.append(f"ok every agreement >= {min_agreement:.3f} (lowest {min(values.values()):.3f})")
    return Verdict(not low, reasons, {})
