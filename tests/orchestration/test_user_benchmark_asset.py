"""A user folder (24 real photos at 512 px, competitor `acme_fill` unknown to the project) becomes a benchmark
split: one Dagster materialization gives a good/same/bad chart per task in the metadata and in MLflow."""

from __future__ import annotations

import re

import dagster as dg
import mlflow
import numpy as np

from orchestration.assets.datasets import USER_BENCHMARK_ENV, photo_benchmark, user_benchmark, world_datasets
from orchestration.assets.evaluation import benchmark_report, competitor_outputs
from orchestration.resources import DvcResource, MlflowResource, ProjectResource
from steps.paths import ArtifactPaths
from tests.steps.data.test_user_benchmark import make_user_folder


def trained_outputs(root):
    """Stand-ins for base_model, policy and judge (smoke sizes, random weights): what the graph reads."""
    import torch

    from steps.models.judge import Judge
    from steps.models.judge_spec import JUDGE_SPECS
    from steps.models.policy import build_tiny_fill_pipeline, save_pipeline, spec_for

    torch.set_num_threads(1)
    paths = ArtifactPaths(root, "smoke")
    pipe = build_tiny_fill_pipeline(spec_for("smoke"), seed=0)
    save_pipeline(pipe, paths.base_model, spec_for("smoke"))
    save_pipeline(pipe, paths.policy("static"), spec_for("smoke"))
    Judge.build(JUDGE_SPECS["smoke"], seed=0).save(paths.judge)


def test_user_folder_gets_a_chart_per_task_in_one_materialization(dvc_project, mlflow_uri, tmp_path, monkeypatch):
    folder = make_user_folder(tmp_path / "my_photos")
    trained_outputs(dvc_project)
    monkeypatch.setenv(USER_BENCHMARK_ENV, str(folder))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    resources = {"project": ProjectResource(profile="smoke", root=str(dvc_project)),
                 "dvc": DvcResource(root=str(dvc_project)),
                 "mlflow": MlflowResource(tracking_uri=mlflow_uri, root=str(dvc_project))}
    result = dg.materialize([world_datasets, photo_benchmark, user_benchmark, competitor_outputs, benchmark_report],
                            resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    meta = {ev.asset_key.to_user_string(): ev.materialization.metadata
            for ev in result.get_asset_materialization_events()}
    assert meta["user_benchmark"]["competitor_systems"].value == {"acme_fill": 24}
    assert "acme_fill" in meta["competitor_outputs"]["user_systems"].value
    charts = meta["benchmark_report"]["user_charts"].value
    assert len(re.findall(r"!\[(fill|extend|removal)\]\(data:image/png;base64,", charts)) == 3
    summary = meta["benchmark_report"]["user_summary"].value
    assert "No annotator ratings: this benchmark has no ground truth" in summary and "| acme_fill |" in summary
    n_by_task = meta["benchmark_report"]["user_n_by_task"].value
    widest = meta["benchmark_report"]["user_widest_half_width"].value
    assert set(widest) == set(n_by_task) == {"fill", "extend", "removal"} and all(w > 0.28 for w in widest.values())

    # Our outputs: at each photo's 512 px although the model works at 32 px; raw (the benchmark scores drift).
    from steps.io import read_rgb

    ours = read_rgb(ArtifactPaths(dvc_project, "smoke").competitors("user") / "static" / "photo00.png")
    assert ours.shape == (512, 512, 3)
    assert not np.array_equal(ours, read_rgb(folder / "images" / "photo00.png"))

    run = mlflow.MlflowClient(mlflow_uri).get_run(meta["benchmark_report"]["user_mlflow_run_id"].value)
    assert run.data.tags["benchmark.split"] == "user" and run.data.tags["benchmark.annotators"] == "none"
    for task, dim in (("fill", "text_alignment"), ("extend", "consistency"), ("removal", "removal_quality")):
        cell = [run.data.metrics[f"gsb/judge/acme_fill/{task}/{dim}/{o}"] for o in ("good", "same", "bad")]
        assert abs(sum(cell) - 1) < 1e-9
    assert not any(k.startswith("gsb/annotators/") for k in run.data.metrics)
    artifacts = {a.path for a in mlflow.MlflowClient(mlflow_uri).list_artifacts(run.info.run_id, "benchmark/user/charts")}
    assert artifacts == {f"benchmark/user/charts/{t}.png" for t in ("extend", "fill", "removal")}
