"""The new-preferences sensor asks for a retrain exactly when the preference data's DVC version changes."""

from __future__ import annotations

import dagster as dg

from orchestration.jobs import new_preferences_sensor
from steps.paths import ArtifactPaths


def _write_dvc(root, md5):
    path = ArtifactPaths(root, "tiny").preferences_dvc
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"outs:\n- md5: {md5}\n  path: preferences\n")


def test_sensor_triggers_on_new_version_only(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEREWARD_ROOT", str(tmp_path))
    monkeypatch.setenv("ONEREWARD_PROFILE", "tiny")
    instance = dg.DagsterInstance.ephemeral()
    ctx = dg.build_sensor_context(instance=instance)
    assert isinstance(new_preferences_sensor(ctx), dg.SkipReason)  # nothing versioned yet

    _write_dvc(tmp_path, "aaa.dir")
    ctx = dg.build_sensor_context(instance=instance)
    request = new_preferences_sensor(ctx)
    assert isinstance(request, dg.RunRequest) and request.run_key == "preferences-aaa.dir"
    assert ctx.cursor == "aaa.dir"

    again = new_preferences_sensor(dg.build_sensor_context(instance=instance, cursor="aaa.dir"))
    assert isinstance(again, dg.SkipReason) and "unchanged" in again.skip_message

    _write_dvc(tmp_path, "bbb.dir")
    request = new_preferences_sensor(dg.build_sensor_context(instance=instance, cursor="aaa.dir"))
    assert isinstance(request, dg.RunRequest) and request.tags["preferences_md5"] == "bbb.dir"
