"""DVC versions the datasets: unchanged params -> no rebuild and the same hash; a new seed -> a new hash."""

from __future__ import annotations

import yaml

from steps.data.versioning import repro, stage_out_hashes


def test_repro_is_idempotent_and_seed_sensitive(dvc_project):
    assert repro(dvc_project, "world@smoke") is True
    first = stage_out_hashes(dvc_project, "world@smoke")
    assert set(first) == {"data/smoke/train", "data/smoke/validation", "data/smoke/benchmark"}
    assert all(v.endswith(".dir") for v in first.values())
    manifest = dvc_project / "data" / "smoke" / "train" / "manifest.jsonl"
    mtime = manifest.stat().st_mtime_ns

    assert repro(dvc_project, "world@smoke") is False, "unchanged params must not rebuild"
    assert stage_out_hashes(dvc_project, "world@smoke") == first
    assert manifest.stat().st_mtime_ns == mtime

    params = yaml.safe_load((dvc_project / "configs" / "smoke.yaml").read_text())
    params["datasets"]["seed"] = 1
    (dvc_project / "configs" / "smoke.yaml").write_text(yaml.safe_dump(params))
    assert repro(dvc_project, "world@smoke") is True
    second = stage_out_hashes(dvc_project, "world@smoke")
    assert all(second[k] != first[k] for k in first)
