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
    reasons = [] if passed else ["fill/structure: accuracy 0.593 < threshold 0.7463 (n=806, 95% CI 0.559-0.626)"]
    (out / "agreement.json").write_text(json.dumps({
        "passed": passed, "reasons": reasons, "warnings": [], "mean_accuracy": 0.66,
        "message": ("agreement gate PASSED" if passed else "agreement gate FAILED: " + reasons[0]) + "\n\n| table |"}))


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
    if not passed:  # the failure message names the cell, its n and its 95% interval, and carries the table
        assert "n=806, 95% CI 0.559-0.626" in result.description and "| table |" in result.metadata["verdict"].value
    assert ("override" in result.metadata) == (not passed and bool(override.strip()))
    tags = project.gate_tags()
    assert tags == ({} if passed else {"judge_gate": "FAILED (overridden)", "gate_override": override.strip() or "none given"})
