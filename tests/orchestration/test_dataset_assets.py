"""Dataset assets end to end on a throwaway DVC project: versions, checks, MLflow tags."""

from __future__ import annotations

import dagster as dg
import yaml

from orchestration.assets.datasets import photo_benchmark, world_datasets
from orchestration.checks.datasets import dataset_checks
from orchestration.resources import DvcResource, MlflowResource, ProjectResource


def _resources(root, uri):
    return {"project": ProjectResource(profile="smoke", root=str(root)),
            "dvc": DvcResource(root=str(root)), "mlflow": MlflowResource(tracking_uri=uri, root=str(root))}


def _versions(result) -> dict[str, str]:
    out = {}
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        out[mat.asset_key.to_user_string()] = (mat.tags or {}).get("dagster/data_version")
    return out


def test_dataset_assets_version_check_and_track(dvc_project, mlflow_uri):
    instance = dg.DagsterInstance.ephemeral()
    assets = [world_datasets, photo_benchmark, *dataset_checks]
    first = dg.materialize(assets, resources=_resources(dvc_project, mlflow_uri), instance=instance)
    assert first.success
    v1 = _versions(first)
    lock = yaml.safe_load((dvc_project / "dvc.lock").read_text())["stages"]
    assert v1["train_conditions"] == next(o["md5"] for o in lock["world@smoke"]["outs"] if o["path"].endswith("train"))
    assert v1["photo_benchmark"] == lock["photos@smoke"]["outs"][0]["md5"]
    evals = first.get_asset_check_evaluations()
    assert len(evals) == 4 and all(e.passed for e in evals)  # train, validation, benchmark, photos

    # Unchanged params: DVC does not rebuild and the versions stay.
    again = dg.materialize(assets, resources=_resources(dvc_project, mlflow_uri), instance=instance)
    assert _versions(again) == v1
    mats = {e.asset_key.to_user_string(): e for e in again.get_asset_materialization_events()}
    assert mats["train_conditions"].materialization.metadata["rebuilt"].value is False

    # MLflow: runs tagged with the Dagster run id, the profile, the git commit and the DVC hash.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("onereward/smoke")
    runs = client.search_runs([exp.experiment_id], f"tags.dagster_run_id = '{again.run_id}'")
    assert len(runs) == 4  # one per split: train, validation, benchmark, photos
    train_run = next(r for r in runs if r.info.run_name == "dataset/train")
    assert train_run.data.tags["dvc/data/smoke/train"] == v1["train_conditions"]
    assert train_run.data.tags["profile"] == "smoke" and train_run.data.tags["git_commit"]
    assert train_run.data.metrics["n"] == 24


def test_blocking_check_stops_downstream_on_bad_data(dvc_project, mlflow_uri):
    """Corrupt a built manifest after the fact: the GX check fails and blocks a downstream asset."""
    from steps.data.versioning import repro

    repro(dvc_project, "world@smoke")
    manifest = dvc_project / "data" / "smoke" / "train" / "manifest.jsonl"
    manifest.chmod(0o644)
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines + [lines[0]]) + "\n")  # a duplicate id

    ran = []

    @dg.asset(deps=["train_conditions"])
    def downstream():
        ran.append(True)

    @dg.asset(name="train_conditions")
    def stub_train():  # the real asset would rebuild (DVC notices the edit); we want the bad data to stay
        return None

    check = next(c for c in dataset_checks if "train_conditions" in str(c.check_keys))
    result = dg.materialize([stub_train, check, downstream], resources=_resources(dvc_project, mlflow_uri),
                            raise_on_error=False)
    assert not result.success
    (ev,) = result.get_asset_check_evaluations()
    assert not ev.passed and "duplicate" in str(ev.metadata["reader_problems"].value)
    assert not ran
