"""MLflow tracking conventions (docs/DESIGN.md §8), usable from Dagster assets and from the step CLIs alike.

Default store: ``sqlite:///<repo>/mlflow/mlflow.db`` with artifacts under ``mlflow/artifacts``; a team
server replaces it through ``MLFLOW_TRACKING_URI``. Experiments are ``onereward/<profile>``. Every run
carries the Dagster run id, the git commit, the DVC hashes of its inputs and the profile as tags, and run
ids are passed explicitly (no reliance on an "active run").
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from steps.paths import mlflow_artifacts, mlflow_db

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_tracking_uri(root: str | os.PathLike = REPO_ROOT) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlflow_db(Path(root).resolve())}"


def git_commit(root: str | os.PathLike = REPO_ROOT) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created), held for the block; a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Tracker:
    """A thin, explicit-run-id layer over ``MlflowClient``."""

    def __init__(self, tracking_uri: str | None = None, root: str | os.PathLike = REPO_ROOT):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        self.root = Path(root)
        self.tracking_uri = tracking_uri or default_tracking_uri(root)
        if not self.tracking_uri.startswith("sqlite:///"):
            self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            return
        db = Path(self.tracking_uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(db.with_name(db.name + ".lock")):
            # MLflow creates and migrates a new sqlite store on first use; two processes doing it at once fail
            # (alembic: "Online migration expected to match one row"). One at a time: the second finds it done.
            self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            self.client.search_experiments(max_results=1)
            self.client.search_registered_models(max_results=1)

    def experiment_id(self, profile: str) -> str:
        from mlflow.exceptions import MlflowException

        name = f"onereward/{profile}"
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.tracking_uri.startswith("sqlite:"):
            location = mlflow_artifacts(self.root).resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # a concurrent run created it a moment ago
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def start_run(self, profile: str, run_name: str, tags: dict[str, str] | None = None) -> str:
        base = {"profile": profile, "git_commit": git_commit(self.root)}
        run = self.client.create_run(self.experiment_id(profile), run_name=run_name, tags={**base, **(tags or {})})
        return run.info.run_id

    def log_params(self, run_id: str, params: dict[str, Any], prefix: str = "") -> None:
        from mlflow.entities import Param

        items = [Param(f"{prefix}{k}", str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i:i + 500])

    def log_artifact(self, run_id: str, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, v)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def metrics_logger(self, run_id: str):
        """The recipes' metrics callback ``log(metrics, step)`` (steps/training/recipe.py) for ``run_id``."""
        return lambda metrics, step: self.log_metrics(run_id, metrics, step)
