"""The Dagster code location: `dagster dev -m orchestration.definitions` / `dagster asset materialize ...`.

Profile comes from ONEREWARD_PROFILE (smoke | tiny | flux; default tiny), the MLflow store from
MLFLOW_TRACKING_URI (default: sqlite under mlflow/). Each domain lives in its own module; this file
only gathers them and applies global policy (the executor).
"""


import os

import dagster as dg

from steps.runtime import OFFLINE_ENV

for _k, _v in OFFLINE_ENV.items():
    os.environ.setdefault(_k, _v)

from orchestration import jobs  # noqa: E402
from orchestration.assets import datasets as dataset_assets  # noqa: E402
from orchestration.assets import evaluation as evaluation_assets  # noqa: E402
from orchestration.assets import judge as judge_assets  # noqa: E402
from orchestration.assets import models as model_assets  # noqa: E402
from orchestration.assets import rl as rl_assets  # noqa: E402
from orchestration.checks.datasets import dataset_checks  # noqa: E402
from orchestration.resources import default_resources  # noqa: E402

# tiny/flux: two independent steps side by side (one torch thread each on 2 cores), never more.
# smoke: one process for the whole graph -- its steps take seconds, so per-step process start-up dominated.
if os.environ.get("ONEREWARD_PROFILE") == "smoke":
    executor = dg.in_process_executor
else:
    executor = dg.multiprocess_executor.configured(
        {"max_concurrent": int(os.environ.get("ONEREWARD_MAX_CONCURRENT", "2"))})

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([dataset_assets, model_assets, judge_assets, rl_assets, evaluation_assets]),
    asset_checks=[*dataset_checks, judge_assets.agreement_gate],
    resources={**default_resources(), "pipes_subprocess_client": dg.PipesSubprocessClient()},
    jobs=[jobs.retrain_job, jobs.full_pipeline_job],
    schedules=[jobs.weekly_retraining],
    sensors=[jobs.new_preferences_sensor],
    executor=executor,
)
