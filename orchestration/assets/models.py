"""Model assets: the base fill model the RL starts from."""

import base64
import os
from pathlib import Path

import dagster as dg

from orchestration.assets.datasets import BENCHMARK, TRAIN
from orchestration.config import config_from_dataclass, overrides
from orchestration.resources import MlflowResource, ProjectResource
from steps.foundations.base_pretrain import BaseConfig
from steps.foundations.job import FOUNDATION_PROFILES

BASE_MODEL = dg.AssetKey("base_model")
MODELS_GROUP = "models"
BaseModelConfig = config_from_dataclass(BaseConfig, "BaseModelConfig", exclude=("profile", "train_dir", "eval_dir", "out_dir"))


def base_model_config(project: ProjectResource, config=None) -> BaseConfig:
    """The base model's step config: the profile's, the run config's fields over it."""
    return BaseConfig.for_profile(project.profile, project.root_path, **overrides(config))


def image_md(path: str | Path, width: int = 480) -> str:
    """A PNG inline in markdown metadata. Markdown image syntax: Dagster's renderer drops raw HTML (an
    `<img>` tag showed an empty box), but lets `data:` image sources through. ``width`` is not expressible."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{Path(path).stem}](data:image/png;base64,{data})"


def quality_md(result: dict) -> str:
    rows = ["| task/dimension | base | untrained | telea |", "|---|---|---|---|"]
    for key, v in result["quality"].items():
        rows.append(f"| {key} | {v:.3f} | {result['init_quality'][key]:.3f} | {result['telea_quality'][key]:.3f} |")
    return "World scores on the held-out benchmark (synthetic ground truth):\n\n" + "\n".join(rows)


@dg.asset(key=BASE_MODEL, group_name=MODELS_GROUP, deps=[TRAIN, BENCHMARK], pool="base_model")
def base_model(context: dg.AssetExecutionContext, config: BaseModelConfig, project: ProjectResource,
               mlflow: MlflowResource) -> dg.MaterializeResult:
    """The base fill model (FluxFillPipeline) that RL starts from and that sampled the preference candidates.

    tiny: the shipped foundation (foundations/tiny/base, made by `make foundations`), hashes checked.
    smoke: pretrained here on the synthetic world in seconds (VAE, then flow matching on all three tasks).
    flux: FLUX.1-Fill-dev from ONEREWARD_FLUX_PATH (optionally ONEREWARD_TRANSFORMER_PATH), recorded by path
    and content hash, not trained.
    """
    from steps.hashing import dir_digest

    if project.profile == "flux":
        from steps.models.policy import FLUX_PATH_ENV, TRANSFORMER_PATH_ENV, check_flux_layout

        path = check_flux_layout(os.environ.get(FLUX_PATH_ENV, ""))
        digest = dir_digest(path)
        metadata = {"path": dg.MetadataValue.path(str(path)), "sha256": digest}
        if os.environ.get(TRANSFORMER_PATH_ENV):
            metadata["transformer_path"] = os.environ[TRANSFORMER_PATH_ENV]
            metadata["transformer_sha256"] = dir_digest(os.environ[TRANSFORMER_PATH_ENV])
            digest = digest + metadata["transformer_sha256"]
        return dg.MaterializeResult(data_version=dg.DataVersion(digest[:16]), metadata=metadata)
    if project.profile in FOUNDATION_PROFILES:
        return _installed_base(context, project, mlflow)
    cfg = base_model_config(project, config)
    tracker, run_id = mlflow.start_run(context, project.profile, "base_model")
    tracker.log_params(run_id, {k: v for k, v in vars(cfg).items()})
    result = __import__("steps.foundations.base_pretrain", fromlist=["pretrain"]).pretrain(cfg, log=tracker.metrics_logger(run_id))
    for name, table in (("base", result["quality"]), ("untrained", result["init_quality"]), ("telea", result["telea_quality"])):
        tracker.log_metrics(run_id, {f"world_score/{name}/{k}": v for k, v in table.items()})
    for path in [*result["grids"], result["loss_plot"], result["report"]]:
        tracker.log_artifact(run_id, path, "report")
    tracker.end_run(run_id)
    digest = dir_digest(result["model_dir"])
    return dg.MaterializeResult(
        data_version=dg.DataVersion(digest[:16]),
        metadata={
            "path": dg.MetadataValue.path(result["model_dir"]),
            "sha256": digest,
            "mlflow_run_id": run_id,
            "transformer_params": result["transformer_params"],
            "seconds": round(result["seconds_total"], 1),
            "quality": dg.MetadataValue.md(quality_md(result)),
            "samples": dg.MetadataValue.md("\n\n".join(image_md(p) for p in result["grids"])),
            "losses": dg.MetadataValue.md(image_md(result["loss_plot"])),
        },
    )


def install_tracked(context, project: ProjectResource, mlflow: MlflowResource, part: str, folder: str,
                    run_name: str) -> tuple[Path, dict, list[Path], dict]:
    """A shipped foundation checked against its provenance, copied to ``project.paths.<folder>`` (base_model,
    judge_pretrained) and recorded in an MLflow run (provenance as params, its metrics, its report PNGs).
    Returns (dest, record, pngs, metadata)."""
    from steps.foundations.job import install_foundation

    dest = getattr(project.paths, folder)
    record = install_foundation(project.profile, part, dest, project.root_path)
    tracker, run_id = mlflow.start_run(context, project.profile, run_name)
    tracker.log_params(run_id, {"foundation": record["path"], "foundation_commit": record["commit"],
                                "foundation_command": record["command"]})
    tracker.log_metrics(run_id, record["metrics"])
    pngs = sorted(Path(record["report_dir"]).glob("*.png"))
    for path in pngs:
        tracker.log_artifact(run_id, path, "report")
    tracker.end_run(run_id)
    metadata = {"path": dg.MetadataValue.path(str(dest)), "mlflow_run_id": run_id,
                "foundation": dg.MetadataValue.path(record["path"]), "foundation_command": record["command"],
                "foundation_commit": record["commit"],
                "foundation_hours": round(record["wall_seconds_total"] / 3600, 2)}
    return dest, record, pngs, metadata


def _installed_base(context, project: ProjectResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    """The shipped foundation, checked against its provenance and copied to the pipeline's base_model folder."""
    from steps.hashing import dir_digest

    dest, record, grids, metadata = install_tracked(context, project, mlflow, "base", "base_model", "base_model")
    digest = dir_digest(dest)
    quality = {k.removeprefix("world_score/base/"): v for k, v in record["metrics"].items()
               if k.startswith("world_score/base/")}
    telea = {k.removeprefix("world_score/telea/"): v for k, v in record["metrics"].items()
             if k.startswith("world_score/telea/")}
    rows = ["| task/dimension | base | telea |", "|---|---|---|"]
    rows += [f"| {k} | {v:.3f} | {telea.get(k, float('nan')):.3f} |" for k, v in quality.items()]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(digest[:16]),
        metadata={
            **metadata, "sha256": digest,
            "quality": dg.MetadataValue.md("World scores on held-out world conditions (synthetic ground truth), "
                                           "measured by the foundation job:\n\n" + "\n".join(rows)),
            "samples": dg.MetadataValue.md("\n\n".join(image_md(p) for p in grids)),
        },
    )
