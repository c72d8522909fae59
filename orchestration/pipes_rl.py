"""Child side of the `policy` asset: runs the steps.rl.train recipe under Dagster Pipes.

Launched by the asset as ``accelerate launch [...] -m orchestration.pipes_rl`` (its own process, on GPUs
in production). The RLConfig and the MLflow run id come in as Pipes extras; the main process streams
progress to the Dagster run's log, logs metrics to MLflow, and reports the summary back. The ML code
stays in steps/ (which never imports Dagster); this file is the only bridge.
"""

import os

from dagster_pipes import open_dagster_pipes


def main() -> None:
    from steps.config import from_dict
    from steps.rl.config import RLConfig
    from steps.rl.train import train
    from steps.tracking import Tracker

    main_process = int(os.environ.get("RANK", "0")) == 0
    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        cfg = from_dict(RLConfig, extras["config"], "policy asset config")
        run_id = extras.get("mlflow_run_id")
        tracker = Tracker(extras.get("tracking_uri") or None, root=extras.get("root", ".")) if main_process else None
        every = max(1, cfg.steps // 20)

        def log(metrics: dict, step: int) -> None:
            if tracker is None:
                return
            tracker.log_metrics(run_id, metrics, step)
            if step % every == 0:
                shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("reward/", "loss/", "guard/"))}
                pipes.log.info(f"{cfg.reference} step {step}/{cfg.steps}: {shown}")

        def log_artifact(path) -> None:
            if tracker is not None:
                tracker.log_artifact(run_id, str(path), f"rl_{cfg.reference}")

        summary = train(cfg, log, log_artifact)
        if main_process:
            keep = ("status", "model_dir", "final_rewards", "train_seconds", "guard", "steps_done")
            pipes.report_custom_message({k: summary.get(k) for k in keep if k in summary})


if __name__ == "__main__":
    main()
