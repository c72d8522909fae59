"""The base_model asset on the smoke profile: trains through steps.foundations.base_pretrain, records metadata and MLflow."""

from __future__ import annotations

import dagster as dg

from orchestration.assets.datasets import world_datasets
from orchestration.assets.models import base_model
from orchestration.resources import DvcResource, MlflowResource, ProjectResource
from steps.paths import ArtifactPaths


def test_base_model_asset(dvc_project, mlflow_uri):
    resources = {"project": ProjectResource(profile="smoke", root=str(dvc_project)),
                 "dvc": DvcResource(root=str(dvc_project)),
                 "mlflow": MlflowResource(tracking_uri=mlflow_uri, root=str(dvc_project))}
    result = dg.materialize(
        [world_datasets, base_model], resources=resources,
        run_config={"ops": {"base_model": {"config": {"vae_steps": 5, "steps": 5, "eval_per_task": 2}}}},
    )
    assert result.success
    mat = next(e.materialization for e in result.get_asset_materialization_events()
               if e.asset_key.to_user_string() == "base_model")
    meta = mat.metadata
    assert (ArtifactPaths(dvc_project, "smoke").base_model / "model_index.json").exists()
    assert "| fill/text_alignment |" in meta["quality"].value
    assert meta["samples"].value.count("data:image/png;base64") == 3
    assert mat.tags["dagster/data_version"] == meta["sha256"].value[:16]

    from mlflow.tracking import MlflowClient

    run = MlflowClient(mlflow_uri).get_run(meta["mlflow_run_id"].value)
    assert run.data.params["steps"] == "5" and run.data.tags["dagster_run_id"] == result.run_id
    assert "world_score/base/removal/removal_quality" in run.data.metrics
    assert "base/loss" in run.data.metrics


def test_tiny_assets_install_the_shipped_foundations(tmp_path, mlflow_uri):
    """tiny: base_model and judge_pretrain check the committed foundations' hashes and copy them (no training)."""
    import shutil
    from pathlib import Path

    from orchestration.assets.judge import judge_pretrain

    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(repo / "foundations" / "tiny", tmp_path / "foundations" / "tiny",
                    ignore=shutil.ignore_patterns("checkpoints"))
    resources = {"project": ProjectResource(profile="tiny", root=str(tmp_path)),
                 "mlflow": MlflowResource(tracking_uri=mlflow_uri, root=str(tmp_path))}
    result = dg.materialize([base_model, judge_pretrain], resources=resources)
    assert result.success
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta["base_model"]["foundation_command"].value.startswith("python -m steps.foundations")
    assert "| fill/text_alignment |" in meta["base_model"]["quality"].value
    assert meta["judge_pretrain"]["heldout_accuracy"].value > 0.5
    assert (ArtifactPaths(tmp_path, "tiny").base_model / "model_index.json").exists()
    assert (ArtifactPaths(tmp_path, "tiny").judge_pretrained / "config.json").exists()
