"""The reward model: judge pretraining, preference data, judge training, and its human-agreement gate."""

import os

import dagster as dg

from orchestration.assets.datasets import AGREEMENT_TEST, TRAIN
from orchestration.assets.models import BASE_MODEL, image_md, install_tracked
from orchestration.config import config_from_dataclass, overrides
from orchestration.resources import DvcResource, MlflowResource, ProjectResource
from steps.foundations.job import FOUNDATION_PROFILES
from steps.foundations.judge_pretrain import JudgePretrainConfig
from steps.judge.agreement import AgreementConfig
from steps.judge.annotate import AnnotateConfig
from steps.judge.candidates import CandidatesConfig
from steps.judge.train import JudgeConfig

JUDGE_PRETRAIN = dg.AssetKey("judge_pretrain")
CANDIDATES = dg.AssetKey("preference_candidates")
PAIRS = dg.AssetKey("preference_pairs")
JUDGE = dg.AssetKey("judge")
AGREEMENT = dg.AssetKey("judge_agreement")
JUDGE_GROUP = "reward_model"
HUMAN_PAIRS_ENV = "ONEREWARD_HUMAN_PAIRS"
LABEL_STUDIO_ENV = "ONEREWARD_LABEL_STUDIO"  # a Label Studio project URL (or export file) to ingest

_PATHS = ("profile", "train_dir", "out_dir", "base_dir", "candidates_dir", "pairs_dir", "init_dir", "judge_dir",
          "test_dir")
PretrainRunConfig = config_from_dataclass(JudgePretrainConfig, "JudgePretrainRunConfig", exclude=_PATHS)
CandidatesRunConfig = config_from_dataclass(CandidatesConfig, "CandidatesRunConfig", exclude=_PATHS)
PairsRunConfig = config_from_dataclass(AnnotateConfig, "PairsRunConfig", exclude=_PATHS)
JudgeRunConfig = config_from_dataclass(JudgeConfig, "JudgeRunConfig", exclude=_PATHS)
AgreementRunConfig = config_from_dataclass(AgreementConfig, "AgreementRunConfig", exclude=_PATHS)


# Each asset's step config: the profile's (configs/<profile>.yaml via <Config>.for_profile), the run config's
# fields over it, plus what only the run knows (threads, environment). tests/orchestration checks these give what
# the CLI gives for the same profile and overrides.
def judge_pretrain_config(project: ProjectResource, config=None) -> JudgePretrainConfig:
    return JudgePretrainConfig.for_profile(project.profile, project.root_path, **overrides(config))


def candidates_config(project: ProjectResource, config=None) -> CandidatesConfig:
    return CandidatesConfig.for_profile(project.profile, project.root_path,
                                        **{"threads": project.solo_threads, **overrides(config)})


def pairs_config(project: ProjectResource, config=None) -> AnnotateConfig:
    env = dict(human_dir=os.environ.get(HUMAN_PAIRS_ENV, ""), label_studio=os.environ.get(LABEL_STUDIO_ENV, ""))
    return AnnotateConfig.for_profile(project.profile, project.root_path, **{**env, **overrides(config)})


def judge_config(project: ProjectResource, config=None) -> JudgeConfig:
    run = dict(threads=project.solo_threads)  # init_dir: the profile's (project.paths.judge_pretrained)
    if project.profile == "flux":
        run["init_dir"] = os.environ.get("ONEREWARD_JUDGE_PATH", "")
    return JudgeConfig.for_profile(project.profile, project.root_path, **{**run, **overrides(config)})


def agreement_config(project: ProjectResource, config=None) -> AgreementConfig:
    return AgreementConfig.for_profile(project.profile, project.root_path,
                                       **{"threads": project.solo_threads, **overrides(config)})


def _tracked(context, mlflow: MlflowResource, project: ProjectResource, name: str, params: dict, fn, **tags):
    """Run ``fn(log)`` inside an MLflow run tagged per docs/DESIGN.md §8; returns (result, run_id, tracker)."""
    tracker, run_id = mlflow.start_run(context, project.profile, name, tags)
    tracker.log_params(run_id, params)
    try:
        result = fn(tracker.metrics_logger(run_id))
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    return result, run_id, tracker


@dg.asset(key=JUDGE_PRETRAIN, group_name=JUDGE_GROUP, deps=[TRAIN], pool="judge_pretrain")
def judge_pretrain(context: dg.AssetExecutionContext, config: PretrainRunConfig, project: ProjectResource,
                   mlflow: MlflowResource) -> dg.MaterializeResult:
    """The judge's starting point, the analogue of a pretrained VLM: its own comparison question on pairs the
    world's scores label, with hard negatives and adversarial perturbations (steps.foundations.judge_pretrain).

    tiny: the shipped foundation (foundations/tiny/judge, made by `make foundations`), hashes checked.
    smoke: pretrained here in seconds. flux: skipped -- Qwen2.5-VL (ONEREWARD_JUDGE_PATH) takes its place.
    """
    from steps.foundations.judge_pretrain import pretrain_judge

    if project.profile == "flux":
        return dg.MaterializeResult(metadata={"skipped": "flux starts from Qwen2.5-VL",
                                              "judge_path": os.environ.get("ONEREWARD_JUDGE_PATH", "")})
    if project.profile in FOUNDATION_PROFILES:
        return _installed_judge(context, project, mlflow)
    cfg = judge_pretrain_config(project, config)
    summary, run_id, tracker = _tracked(context, mlflow, project, "judge_pretrain", vars(cfg),
                                        lambda log: pretrain_judge(cfg, log))
    tracker.end_run(run_id)
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(summary["out_dir"]), "mlflow_run_id": run_id,
        "seconds": round(summary["seconds"], 1), "judge_params": summary["judge_params"],
        **{k.replace("pretrain/", ""): round(v, 4) for k, v in summary["metrics"].items()}})


def _installed_judge(context, project: ProjectResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    _, record, plots, metadata = install_tracked(context, project, mlflow, "judge", "judge_pretrained",
                                                 "judge_pretrain")
    return dg.MaterializeResult(metadata={
        **metadata,
        "curves": dg.MetadataValue.md("\n\n".join(image_md(p) for p in plots)),
        **{k.replace("pretrain/", ""): round(v, 4) for k, v in record["metrics"].items()}})


@dg.asset(key=CANDIDATES, group_name=JUDGE_GROUP, deps=[BASE_MODEL, TRAIN], pool="dvc")
def preference_candidates(context: dg.AssetExecutionContext, config: CandidatesRunConfig, project: ProjectResource,
                          dvc: DvcResource) -> dg.MaterializeResult:
    """N candidates per training condition from the base model with randomised sampling (paper §4.2),
    stored as images plus candidate-set records and versioned with DVC (`dvc add`)."""
    from steps.judge.candidates import generate_candidates

    cfg = candidates_config(project, config)
    result = generate_candidates(cfg)
    md5 = dvc.add(cfg.out_dir)
    return dg.MaterializeResult(data_version=dg.DataVersion(md5), metadata={
        "path": dg.MetadataValue.path(cfg.out_dir), "dvc_md5": md5, "n_sets": result["n_sets"],
        "n_images": result["n_images"]})


@dg.asset(key=PAIRS, group_name=JUDGE_GROUP, deps=[CANDIDATES], pool="dvc")
def preference_pairs(context: dg.AssetExecutionContext, config: PairsRunConfig, project: ProjectResource,
                     dvc: DvcResource) -> dg.MaterializeResult:
    """Preference pairs (pairs.jsonl): SIMULATED annotators on smoke/tiny, or human annotations ingested from
    a Label Studio project (ONEREWARD_LABEL_STUDIO, `make annotate`) or the folder in ONEREWARD_HUMAN_PAIRS
    (validated first); versioned with DVC. The sensor retrains on change."""
    from steps.judge.annotate import annotate

    cfg = pairs_config(project, config)
    if project.profile == "flux" and not (cfg.human_dir or cfg.label_studio):
        raise dg.Failure(f"flux needs human preference labels: set {HUMAN_PAIRS_ENV} to a folder with pairs.jsonl")
    result = annotate(cfg)
    md5 = dvc.add(cfg.out_dir)
    label_note = "SIMULATED annotators (not people)" if result["source"] == "simulated" else "human annotators"
    return dg.MaterializeResult(data_version=dg.DataVersion(md5), metadata={
        "path": dg.MetadataValue.path(cfg.out_dir), "dvc_md5": md5, "labels": label_note,
        "n_pairs": result["n_pairs"], "per_task_dimension": dg.MetadataValue.json(result["per_task_dimension"]),
        **{k: result[k] for k in ("ties_dropped", "flipped", "label_studio", "annotations") if k in result},
        **{k: dg.MetadataValue.json(result[k]) for k in ("skipped", "annotators") if k in result}})


@dg.asset(key=JUDGE, group_name=JUDGE_GROUP, deps=[JUDGE_PRETRAIN, PAIRS], pool="judge")
def judge(context: dg.AssetExecutionContext, config: JudgeRunConfig, project: ProjectResource,
          mlflow: MlflowResource) -> dg.MaterializeResult:
    """The ONE judge (Qwen2.5-VL architecture) trained on the preference pairs with paper Eq. 3, both orders,
    easy pairs first; steered by the versioned query naming task and dimension. The saved step is chosen on the
    held-out selection pairs (never the agreement test set); the choice and its score are in the metadata."""
    from steps.hashing import dir_digest
    from steps.judge.train import train_judge

    cfg = judge_config(project, config)
    summary, run_id, tracker = _tracked(context, mlflow, project, "judge", vars(cfg), lambda log: train_judge(cfg, log))
    tracker.end_run(run_id)
    digest = dir_digest(cfg.out_dir)
    from orchestration.jobs import preferences_version

    pairs_md5 = preferences_version(project.root_path, project.profile) or ""
    return dg.MaterializeResult(data_version=dg.DataVersion(digest[:16]), metadata={
        "path": dg.MetadataValue.path(cfg.out_dir), "mlflow_run_id": run_id, "sha256": digest,
        "pairs_md5": pairs_md5,
        "n_train_pairs": summary["n_train_pairs"], "n_heldout_pairs": summary["n_heldout_pairs"],
        "final_loss": round(summary["final_loss"], 4), "seconds": round(summary["seconds"], 1),
        "query_template_version": summary["query_template_version"],
        "selected_step": (summary["selected"] or {}).get("step", summary["config"]["steps"]),
        "selection_agreement": round((summary["selected"] or {}).get("selection_agreement", float("nan")), 4),
        "selection": dg.MetadataValue.json(summary["selected"] or {"note": "no selection pairs: the last step"})})


@dg.asset(key=AGREEMENT, group_name=JUDGE_GROUP, deps=[JUDGE, AGREEMENT_TEST], pool="judge_agreement")
def judge_agreement(context: dg.AssetExecutionContext, config: AgreementRunConfig, project: ProjectResource,
                    mlflow: MlflowResource) -> dg.MaterializeResult:
    """Human-agreement validation on the agreement test set: accuracy per task x dimension (both orders) with each
    cell's n and 95% Wilson interval, against the annotated labels and, for simulated ones, the noise-free labels.
    Its blocking check gates RL: every cell at its Table 1 threshold with a half-width <= 0.03 (tiny)."""
    from steps.judge.agreement import run_agreement

    cfg = agreement_config(project, config)
    result, run_id, tracker = _tracked(context, mlflow, project, "judge_agreement", vars(cfg),
                                       lambda log: run_agreement(cfg))
    metrics = {f"agreement/{c}": r["accuracy"] for c, r in result["table"].items()}
    for name in ("ci_low", "ci_high", "n"):
        metrics.update({f"agreement_{name}/{c}": r[name] for c, r in result["table"].items()})
    metrics.update({f"agreement_clean/{c}": r["clean_accuracy"] for c, r in result["table"].items()
                    if r["clean_accuracy"] is not None})
    metrics["agreement/mean"] = result["mean_accuracy"]
    metrics.update(result.get("probe", {}).get("metrics", {}))
    tracker.log_metrics(run_id, metrics)
    tracker.log_artifact(run_id, result["chart"], "agreement")
    tracker.log_artifact(run_id, str(project.paths.agreement_md), "agreement")
    tracker.set_tags(run_id, {"gate": "passed" if result["passed"] else "failed",
                              "labels": "simulated" if result["simulated"] else "human"})
    tracker.end_run(run_id)
    return dg.MaterializeResult(metadata={
        "gate": "passed" if result["passed"] else "FAILED", "mlflow_run_id": run_id,
        "mean_accuracy": round(result["mean_accuracy"], 4), "n_test_pairs": result["n_test"],
        "test_set": dg.MetadataValue.path(result["test_dir"]),
        "table": dg.MetadataValue.md(result["markdown"]), "chart": dg.MetadataValue.md(image_md(result["chart"])),
        "gradient_probe": dg.MetadataValue.md(result.get("probe_markdown", "probe off (probe_per_cell=0)")),
        "reasons": dg.MetadataValue.json(result["reasons"]), "warnings": dg.MetadataValue.json(result["warnings"])})


@dg.asset_check(asset=AGREEMENT, name="agreement_gate", blocking=True, pool="judge_agreement",
                description="On the agreement test set, every task x dimension cell at or above its threshold (paper "
                            "Table 1) with a 95% interval narrow enough to decide it.")
def agreement_gate(project: ProjectResource) -> dg.AssetCheckResult:
    """Fails with ERROR severity (blocks RL and everything after it) unless the project carries an explicit
    override reason (ONEREWARD_GATE_OVERRIDE): then the failure is a WARNING, downstream runs, and the fill model
    it produces is registered as `challenger` only, with the reason on its runs."""
    import json

    result = json.loads(project.paths.agreement_json.read_text())
    overridden = not result["passed"] and bool(project.gate_override.strip())
    message = result.get("message") or "; ".join(result["reasons"]) or "passed"
    metadata = {"verdict": dg.MetadataValue.md(message), "reasons": dg.MetadataValue.json(result["reasons"]),
                "warnings": dg.MetadataValue.json(result["warnings"]), "mean_accuracy": result["mean_accuracy"]}
    if overridden:
        metadata["override"] = f"gate FAILED and was overridden: {project.gate_override.strip()}"
    return dg.AssetCheckResult(passed=result["passed"], metadata=metadata, description=message[:2000],
                               severity=dg.AssetCheckSeverity.WARN if overridden else dg.AssetCheckSeverity.ERROR)
