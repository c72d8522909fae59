"""Jobs, the weekly retraining schedule and the new-annotations sensor."""

import os
from pathlib import Path

import dagster as dg

from orchestration.assets.judge import JUDGE, PAIRS
from orchestration.resources import REPO_ROOT
from steps.paths import ArtifactPaths

# judge -> agreement (gate) -> RL -> benchmark -> registry, on the current preference data.
retrain_job = dg.define_asset_job(
    "retrain_on_new_preferences", selection=dg.AssetSelection.assets(JUDGE).downstream(),
    description="Retrain the judge, re-validate it, rerun RL, benchmark and register, on the current preference data.")
full_pipeline_job = dg.define_asset_job(
    "full_pipeline", selection=dg.AssetSelection.all(), description="Everything, from the datasets to the registry.")

# When it ticks is configuration: ONEREWARD_RETRAIN_CRON (the served stack's tests tick it every minute).
RETRAIN_CRON = os.environ.get("ONEREWARD_RETRAIN_CRON") or "0 3 * * 1"
weekly_retraining = dg.ScheduleDefinition(
    name="weekly_retraining", job=full_pipeline_job, cron_schedule=RETRAIN_CRON,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=f"`{RETRAIN_CRON}` (default Monday 03:00; ONEREWARD_RETRAIN_CRON): the whole pipeline "
                "(off by default; turn it on in the UI).")


def preferences_version(root: Path, profile: str) -> str | None:
    """The DVC hash of the preference data (data/<profile>/preferences.dvc), or None before the first add."""
    import yaml

    dvc_file = ArtifactPaths(root, profile).preferences_dvc
    if not dvc_file.exists():
        return None
    return (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", [{}])[0].get("md5")


@dg.sensor(job=retrain_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Retrain when the preference data's DVC version changes (new annotations were added with "
                       "`dvc add`/`dvc pull`, or preference_pairs ingested a new export).")
def new_preferences_sensor(context: dg.SensorEvaluationContext):
    root = Path(os.environ.get("ONEREWARD_ROOT", str(REPO_ROOT)))
    profile = os.environ.get("ONEREWARD_PROFILE", "tiny")
    version = preferences_version(root, profile)
    if version is None:
        return dg.SkipReason(f"no {ArtifactPaths(root, profile).preferences_dvc} yet")
    if version == context.cursor:
        return dg.SkipReason(f"preference data unchanged ({version})")
    judged = context.instance.get_latest_materialization_event(JUDGE)
    trained_on = None
    if judged is not None:
        meta = judged.asset_materialization.metadata
        trained_on = meta["pairs_md5"].value if "pairs_md5" in meta else None
    context.update_cursor(version)
    if trained_on == version:
        return dg.SkipReason(f"the current judge was already trained on preference data {version}")
    return dg.RunRequest(run_key=f"preferences-{version}", tags={"preferences_md5": version})


__all__ = ["PAIRS", "full_pipeline_job", "new_preferences_sensor", "retrain_job", "weekly_retraining"]
