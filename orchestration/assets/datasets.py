"""Dataset assets: DVC builds and versions them, Dagster records what and which version."""


from pathlib import Path

import dagster as dg

from orchestration.resources import DvcResource, MlflowResource, ProjectResource

TRAIN = dg.AssetKey("train_conditions")
BENCHMARK = dg.AssetKey("benchmark_conditions")
VALIDATION = dg.AssetKey("validation_conditions")
PHOTOS = dg.AssetKey("photo_benchmark")
USER = dg.AssetKey("user_benchmark")
AGREEMENT_TEST = dg.AssetKey("agreement_test_set")
USER_BENCHMARK_ENV = "ONEREWARD_USER_BENCHMARK"  # a folder: manifest.jsonl, images, masks, competitors/<system>/
SPLIT_DIRS = {TRAIN: "train", VALIDATION: "validation", BENCHMARK: "benchmark", PHOTOS: "photos"}
DATA_GROUP = "datasets"


def _record(context, project: ProjectResource, mlflow: MlflowResource, stage: str, rebuilt: bool,
            hashes: dict[str, str], key: dg.AssetKey) -> dg.MaterializeResult:
    from steps.config import dvc_params
    from steps.data.datasets import preview, split_stats

    split = SPLIT_DIRS[key]
    split_dir = project.paths.split(split)
    rel = str(split_dir.relative_to(project.root_path))
    stats = split_stats(split_dir)
    grid = preview(split_dir, project.paths.dataset_preview(split))
    tracker, run_id = mlflow.start_run(context, project.profile, f"dataset/{split}", {rel: hashes[rel]})
    tracker.log_params(run_id, dvc_params(project.root_path, project.profile))
    tracker.log_metrics(run_id, {k: v for k, v in stats.items()})
    tracker.log_artifact(run_id, grid, "preview")
    tracker.end_run(run_id)
    return dg.MaterializeResult(
        asset_key=key,
        data_version=dg.DataVersion(hashes[rel]),
        metadata={
            "path": dg.MetadataValue.path(str(split_dir)),
            "dvc_stage": stage,
            "dvc_md5": hashes[rel],
            "rebuilt": rebuilt,
            "preview": dg.MetadataValue.path(str(grid)),
            "mlflow_run_id": run_id,
            **{k: dg.MetadataValue.int(v) for k, v in stats.items()},
        },
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(TRAIN, group_name=DATA_GROUP, description="Training conditions of the synthetic world "
                     "(fill / extend / removal with ground truth), built by DVC stage world@<profile>."),
        dg.AssetSpec(BENCHMARK, group_name=DATA_GROUP, description="Held-out benchmark conditions of the "
                     "synthetic world, balanced per task, with ground truth."),
        dg.AssetSpec(VALIDATION, group_name=DATA_GROUP, description="Validation conditions of the synthetic "
                     "world, balanced per task, disjoint from the benchmark: everything that selects or stops "
                     "during training (the RL guard, release selection) reads this split, never the benchmark."),
    ],
    pool="dvc",
)
def world_datasets(context: dg.AssetExecutionContext, project: ProjectResource, dvc: DvcResource,
                   mlflow: MlflowResource):
    """Reproduce DVC stage world@<profile>; the data version is the DVC hash of each split folder."""
    stage = f"world@{project.profile}"
    rebuilt = dvc.repro(stage)
    context.log.info(f"{stage}: {'rebuilt' if rebuilt else 'up to date, not rebuilt'}")
    hashes = dvc.out_hashes(stage)
    for key in (TRAIN, VALIDATION, BENCHMARK):
        yield _record(context, project, mlflow, stage, rebuilt, hashes, key)


@dg.asset(key=PHOTOS, group_name=DATA_GROUP, pool="dvc")
def photo_benchmark(context: dg.AssetExecutionContext, project: ProjectResource, dvc: DvcResource,
                    mlflow: MlflowResource) -> dg.MaterializeResult:
    """Real photos bundled with scikit-image / scikit-learn / matplotlib, with generated masks per task."""
    stage = f"photos@{project.profile}"
    rebuilt = dvc.repro(stage)
    return _record(context, project, mlflow, stage, rebuilt, dvc.out_hashes(stage), PHOTOS)


@dg.asset(key=AGREEMENT_TEST, group_name=DATA_GROUP, pool="dvc")
def agreement_test_set(context: dg.AssetExecutionContext, project: ProjectResource, dvc: DvcResource,
                       mlflow: MlflowResource) -> dg.MaterializeResult:
    """The judge agreement gate's fixed test set: conditions no other split has, candidates from the shipped
    foundation base, labelled once (SIMULATED annotators on smoke/tiny; human labels on flux), sized so every task x
    dimension cell's 95% interval is at most +-0.03 (tiny). Read by the gate and nothing else; DVC stage
    agreement_test@<profile> (flux: a human-labelled set placed in data/flux/agreement_test)."""
    from steps.data.agreement_set import read_summary, summary_markdown
    from steps.hashing import dir_digest

    path = project.paths.agreement_test
    if project.profile == "flux":
        rebuilt, md5 = False, dir_digest(path)[:32] if path.is_dir() else ""
    else:
        stage = f"agreement_test@{project.profile}"
        rebuilt = dvc.repro(stage)
        md5 = dvc.out_hashes(stage)[str(path.relative_to(project.root_path))]
    summary = read_summary(path)
    tracker, run_id = mlflow.start_run(context, project.profile, "dataset/agreement_test", {"agreement_test": md5})
    tracker.log_metrics(run_id, {f"agreement_test_n/{c}": r["n"] for c, r in summary["cells"].items()})
    tracker.end_run(run_id)
    return dg.MaterializeResult(data_version=dg.DataVersion(md5), metadata={
        "path": dg.MetadataValue.path(str(path)), "dvc_md5": md5, "rebuilt": rebuilt, "mlflow_run_id": run_id,
        "n_pairs": summary["n_pairs"], "n_conditions": summary["n_conditions"],
        "cells": dg.MetadataValue.md(summary_markdown(summary))})


@dg.asset(key=USER, group_name=DATA_GROUP, pool="user_benchmark")
def user_benchmark(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
    """Your own benchmark (ONEREWARD_USER_BENCHMARK): photos of any size, masks and competitors/<system>/<id>.png,
    validated (every missing or mis-sized competitor output named) and copied to data/<profile>/user; the
    benchmark then rates our model against every system on it. Unset: no user split (an old copy is removed)."""
    import os
    import shutil

    from steps.data.user_benchmark import USER_SPLIT, ingest_user_benchmark
    from steps.hashing import dir_digest

    out = project.paths.split(USER_SPLIT)
    folder = os.environ.get(USER_BENCHMARK_ENV, "")
    if not folder:
        shutil.rmtree(out, ignore_errors=True)
        return dg.MaterializeResult(data_version=dg.DataVersion("none"),
                                    metadata={"configured": f"no ({USER_BENCHMARK_ENV} is not set)"})
    result = ingest_user_benchmark(folder, out)
    digest = dir_digest(out)
    return dg.MaterializeResult(data_version=dg.DataVersion(digest[:16]), metadata={
        "source": dg.MetadataValue.path(result["source"]), "path": dg.MetadataValue.path(str(out)), "sha256": digest,
        "n_conditions": result["n_conditions"], "per_task": dg.MetadataValue.json(result["n_by_task"]),
        "competitor_systems": dg.MetadataValue.json(result["systems"])})


def manifest_path(project: ProjectResource, key: dg.AssetKey) -> Path:
    return project.paths.split(SPLIT_DIRS[key]) / "manifest.jsonl"
