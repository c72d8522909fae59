"""Benchmark against competitors, and the MLflow registry with its promotion gate."""

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.assets.datasets import BENCHMARK, PHOTOS, USER
from orchestration.assets.judge import AGREEMENT, JUDGE
from orchestration.assets.models import BASE_MODEL, image_md
from orchestration.resources import MlflowResource, ProjectResource
from steps.paths import VARIANTS

POLICY = dg.AssetKey("policy")
COMPETITORS = dg.AssetKey("competitor_outputs")
REPORT = dg.AssetKey("benchmark_report")
FILL_REGISTRATION = dg.AssetKey("fill_model_registration")
JUDGE_REGISTRATION = dg.AssetKey("judge_registration")
EVAL_GROUP = "evaluation"
SPLITS = ("benchmark", "photos")  # always; plus "user" when user_benchmark copied a folder in
USER_COMPETITORS_ENV = "ONEREWARD_COMPETITORS"  # os.pathsep-separated folders competitors/<system>/<id>.png


def splits(project: ProjectResource) -> list[str]:
    from steps.data.user_benchmark import USER_SPLIT

    return [*SPLITS, *([USER_SPLIT] if (project.paths.split(USER_SPLIT) / "manifest.jsonl").is_file() else [])]


def policy_dirs(project: ProjectResource) -> dict[str, Path]:
    """The RL variants that were trained: {"static": dir, "dynamic": dir} (pipelines in diffusers layout)."""
    found = {v: project.paths.policy(v) for v in VARIANTS}
    return {v: path for v, path in found.items() if (path / "model_index.json").exists()}


def ours(project: ProjectResource) -> str:
    """Our released model: the dynamic variant when trained (docs/DESIGN.md §4), else the static one."""
    dirs = policy_dirs(project)
    if not dirs:
        raise dg.Failure(f"no trained policy under {project.paths.policy_root}: materialize `policy` first")
    return "dynamic" if "dynamic" in dirs else "static"


def competitors_config(project: ProjectResource, split: str, **run: Any):
    """One split's competitors config: the profile's (configs/<profile>.yaml), then what the run found (models,
    user folders) and every core for threads."""
    from steps.evaluation.competitors import CompetitorsConfig

    return CompetitorsConfig.for_profile(project.profile, project.root_path, split,
                                         **{"threads": project.solo_threads, **run})


def benchmark_config(project: ProjectResource, split: str, **run: Any):
    """One split's benchmark config: the profile's, then what the run knows (which system is ours)."""
    from steps.evaluation.benchmark import BenchmarkConfig

    return BenchmarkConfig.for_profile(project.profile, project.root_path, split,
                                       **{"threads": project.solo_threads, **run})


@dg.asset(key=COMPETITORS, group_name=EVAL_GROUP, deps=[POLICY, BASE_MODEL, BENCHMARK, PHOTOS, USER],
          pool="competitor_outputs")
def competitor_outputs(context: dg.AssetExecutionContext, project: ProjectResource,
                       mlflow: MlflowResource) -> dg.MaterializeResult:
    """Outputs of every system on every benchmark split: our RL variants, the base, the current registry
    champion, classical inpainting (Telea, Navier-Stokes, biharmonic, PatchMatch, reflect) and user folders
    (ONEREWARD_COMPETITORS, validated: missing ids and sizes are reported); on the user split, its own
    competitors/<system>/. Model outputs are raw (kept region not pasted back) and resized back to each photo."""
    from steps.data.user_benchmark import USER_SPLIT, competitor_folders
    from steps.evaluation.competitors import build_competitors
    from steps.registry.register import download_pipeline

    models = {"base": str(project.paths.base_model)}
    models.update({k: str(v) for k, v in policy_dirs(project).items()})
    champion = download_pipeline(mlflow.tracker().tracking_uri, "models:/onereward-fill@champion",
                                 project.paths.registry_champion)
    if champion is not None:
        models["champion"] = str(champion)
    users = tuple(p for p in os.environ.get(USER_COMPETITORS_ENV, "").split(os.pathsep) if p)
    metadata = {}
    for split in splits(project):
        folders = {"benchmark": users, USER_SPLIT: tuple(map(str, competitor_folders(project.paths.split(split))))}
        cfg = competitors_config(project, split, models=models, user_folders=folders.get(split, ()))
        result = build_competitors(cfg)
        metadata[f"{split}_systems"] = dg.MetadataValue.json(sorted(result["systems"]))
        metadata[f"{split}_dir"] = dg.MetadataValue.path(cfg.out_dir)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(key=REPORT, group_name=EVAL_GROUP, deps=[COMPETITORS, JUDGE], pool="benchmark_report")
def benchmark_report(context: dg.AssetExecutionContext, project: ProjectResource,
                     mlflow: MlflowResource) -> dg.MaterializeResult:
    """Good/same/bad of our model against every system, per task x dimension, by the judge (both orders) and
    by the SIMULATED annotators where ground truth exists; PSNR/SSIM; charts and sample grids per split."""
    from steps.evaluation.benchmark import log_to_mlflow, run_benchmark
    from steps.models.judge import Judge

    judge = Judge.load(project.paths.judge).eval()
    metadata: dict = {"ours": ours(project)}
    for split in splits(project):
        cfg = benchmark_config(project, split, ours=ours(project))
        result = run_benchmark(cfg, judge=judge)
        tracker, run_id = mlflow.start_run(context, project.profile, f"benchmark/{split}")
        log_to_mlflow(tracker, run_id, result)
        tracker.end_run(run_id)
        metadata[f"{split}_summary"] = dg.MetadataValue.md(result["markdown"])
        metadata[f"{split}_n_by_task"] = dg.MetadataValue.json(result["n_by_task"])
        metadata[f"{split}_widest_half_width"] = dg.MetadataValue.json(  # what the size guarantees (docs/DESIGN.md §7)
            {t: round(w, 4) for t, w in result["net_win_widest_half_width"].items()})
        metadata[f"{split}_charts"] = dg.MetadataValue.md("\n\n".join(image_md(p, 640) for p in result["charts"]))
        metadata[f"{split}_mlflow_run_id"] = run_id
        metadata[f"{split}_report"] = dg.MetadataValue.path(result["report"])
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(key=FILL_REGISTRATION, group_name=EVAL_GROUP, deps=[REPORT], pool="fill_model_registration")
def fill_model_registration(context: dg.AssetExecutionContext, project: ProjectResource,
                            mlflow: MlflowResource) -> dg.MaterializeResult:
    """`onereward-fill` in the MLflow registry: every new version is `challenger`; `champion` moves only
    when the promotion gate passes (beats the base and the current champion, no dimension much worse)."""
    from steps.registry.register import register_fill_model

    report = json.loads(project.paths.benchmark_report_json("benchmark").read_text())
    tracker, run_id = mlflow.start_run(context, project.profile, "register/onereward-fill")
    gate_tags = project.gate_tags()  # {} when the judge passed its agreement gate
    never = f"the judge failed its agreement gate (run went on by override: {gate_tags['gate_override']})" \
        if gate_tags else ""
    if gate_tags:
        tracker.set_tags(run_id, gate_tags)
    variant = ours(project)
    policy_dir = policy_dirs(project)[variant]
    summary_path = project.paths.policy_report(variant) / "summary.json"
    release = json.loads(summary_path.read_text()).get("release", {}) if summary_path.is_file() else {}
    tags = {f"release.{k}": str(v) for k, v in release.items()}  # the step released, chosen on validation
    released = register_fill_model(tracker.tracking_uri, policy_dir, report["metrics"], run_id=run_id,
                                   profile=project.profile, artifact_root=project.paths.mlflow_artifacts,
                                   never_champion=never, tags=tags)
    tracker.end_run(run_id)
    return dg.MaterializeResult(metadata={
        "version": released["version"], "aliases": dg.MetadataValue.json(released["aliases"]),
        "champion": str(released["champion"]), "model_uri": released["model_uri"],
        "verdict": dg.MetadataValue.md("\n".join(f"- {r}" for r in released["verdict"]["reasons"])),
        "load_with": f'mlflow.pyfunc.load_model("models:/onereward-fill@{"champion" if released["verdict"]["passed"] else "challenger"}")'})


@dg.asset(key=JUDGE_REGISTRATION, group_name=EVAL_GROUP, deps=[AGREEMENT], pool="judge_registration")
def judge_registration(context: dg.AssetExecutionContext, project: ProjectResource,
                       mlflow: MlflowResource) -> dg.MaterializeResult:
    """`onereward-judge` in the MLflow registry (a pyfunc scoring (first, second, query) -> P(Yes));
    `champion` when the agreement gate passed."""
    from steps.registry.register import register_judge_model

    agreement = json.loads(project.paths.agreement_json.read_text())
    tracker, run_id = mlflow.start_run(context, project.profile, "register/onereward-judge")
    released = register_judge_model(
        tracker.tracking_uri, project.paths.judge,
        {f"agreement/{c}": r["accuracy"] for c, r in agreement["table"].items()}, run_id=run_id,
        profile=project.profile, artifact_root=project.paths.mlflow_artifacts,
        verdict=(agreement["passed"], agreement["reasons"]))
    tracker.end_run(run_id)
    return dg.MaterializeResult(metadata={"version": released["version"],
                                          "aliases": dg.MetadataValue.json(released["aliases"])})
