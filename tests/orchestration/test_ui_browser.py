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


def test_the_first_visit_dialog_is_seen_and_suppressed(tmp_path):
    """Without the suppressing local-storage entry Dagster's "Join the Dagster community" dialog covers the
    page (and the check names it); with it, nothing covers the page the screenshots show."""
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    from scripts.ui_check import (
        CHROMIUM_ARGS,
        SUPPRESS_NUX,
        CoveredError,
        covering_dialogs,
        free_port,
        screenshot,
        start_webserver,
    )

    home = tmp_path / "dagster_home"
    home.mkdir()
    port = free_port()
    server = start_webserver(port, {**os.environ, "DAGSTER_HOME": str(home), "ONEREWARD_PROFILE": "smoke"})
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            fresh = browser.new_context().new_page()
            fresh.goto(f"http://127.0.0.1:{port}/assets", wait_until="networkidle")
            assert any("Join the Dagster community" in text for text in covering_dialogs(fresh))
            with pytest.raises(CoveredError, match="catalog.png: a dialog covers the page"):
                screenshot(fresh, tmp_path / "catalog.png")
            context = browser.new_context()
            context.add_init_script(SUPPRESS_NUX)
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/assets", wait_until="networkidle")
            assert covering_dialogs(page) == []
            assert screenshot(page, tmp_path / "clear.png").stat().st_size > 10_000
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
