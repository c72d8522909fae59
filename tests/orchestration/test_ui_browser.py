"""The Dagster UI in a real headless browser (skipped when Chromium or Playwright is absent; CI installs them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from scripts.ui_check import chromium_path

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="chromium not installed (apt-get install chromium)")


def test_ui_shows_materialized_assets(dvc_project, mlflow_uri, tmp_path):
    pytest.importorskip("playwright")
    from orchestration.assets.datasets import photo_benchmark, world_datasets
    from orchestration.resources import DvcResource, MlflowResource, ProjectResource

    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "ONEREWARD_PROFILE": "smoke", "ONEREWARD_ROOT": str(dvc_project),
           "MLFLOW_TRACKING_URI": mlflow_uri}
    instance = dg.DagsterInstance.from_config(str(home))
    resources = {"project": ProjectResource(profile="smoke", root=str(dvc_project)),
                 "dvc": DvcResource(root=str(dvc_project)),
                 "mlflow": MlflowResource(tracking_uri=mlflow_uri, root=str(dvc_project))}
    assert dg.materialize([world_datasets, photo_benchmark], resources=resources, instance=instance).success

    script = Path(__file__).resolve().parents[2] / "scripts" / "ui_check.py"
    ok = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "ui"),
                         "--assets", "train_conditions,benchmark_conditions,photo_benchmark"],
                        env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "3/3 assets shown as materialized" in ok.stdout
    assert (tmp_path / "ui" / "catalog.png").stat().st_size > 20_000
    assert (tmp_path / "ui" / "lineage.png").exists()
    assert (tmp_path / "ui" / "group_datasets.png").stat().st_size > 20_000  # the group's graph, expanded

    not_yet = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "ui2"),
                              "--assets", "train_conditions,base_model"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert not_yet.returncode == 1 and "not materialized in the UI: base_model" in not_yet.stdout
