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


def test_agreement_test_set_is_a_dvc_stage_with_its_n_per_cell(dvc_project, mlflow_uri):
    """agreement_test@smoke builds the gate's test set once; the asset's version is its DVC hash and its metadata
    and MLflow run state each cell's n."""
    from orchestration.assets.datasets import agreement_test_set

    config = dvc_project / "configs" / "smoke.yaml"
    sections = yaml.safe_load(config.read_text())
    sections["agreement_set"] = {"size": 32, "n_fill": 4, "n_extend": 4, "n_removal": 4, "require_width": False,
                                 "batch_size": 12}
    config.write_text(yaml.safe_dump(sections))
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([agreement_test_set], resources=_resources(dvc_project, mlflow_uri), instance=instance)
    assert result.success
    lock = yaml.safe_load((dvc_project / "dvc.lock").read_text())["stages"]["agreement_test@smoke"]
    assert _versions(result)["agreement_test_set"] == lock["outs"][0]["md5"]
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["rebuilt"].value is True and "| removal/removal_quality |" in meta["cells"].value
    again = dg.materialize([agreement_test_set], resources=_resources(dvc_project, mlflow_uri), instance=instance)
    assert _versions(again) == _versions(result)  # built once: not rebuilt while nothing changed
