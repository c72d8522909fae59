"""The agreement gate blocks by default; an explicit override turns its failure into a warning."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from orchestration.assets.judge import agreement_gate
from orchestration.resources import ProjectResource
from steps.paths import ArtifactPaths


def _write(root, passed: bool):
    out = ArtifactPaths(root, "tiny").judge_agreement
    out.mkdir(parents=True, exist_ok=True)
    (out / "agreement.json").write_text(json.dumps({
        "passed": passed, "reasons": [] if passed else ["fill/structure: accuracy 0.593 < threshold 0.7463 (n=167)"],
        "warnings": [], "mean_accuracy": 0.66}))


@pytest.mark.parametrize("passed,override,severity", [
    (True, "", dg.AssetCheckSeverity.ERROR),
    (False, "", dg.AssetCheckSeverity.ERROR),
    (False, "   ", dg.AssetCheckSeverity.ERROR),  # blank is no reason
    (False, "exploring RL with a weak judge", dg.AssetCheckSeverity.WARN),
])
def test_gate_severity_and_override(tmp_path, passed, override, severity):
    _write(tmp_path, passed)
    project = ProjectResource(profile="tiny", root=str(tmp_path), gate_override=override)
    result = agreement_gate(project=project)
    assert result.passed is passed and result.severity == severity
    assert ("override" in result.metadata) == (not passed and bool(override.strip()))
    tags = project.gate_tags()
    assert tags == ({} if passed else {"judge_gate": "FAILED (overridden)", "gate_override": override.strip() or "none given"})
