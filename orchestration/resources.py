"""Resources: the project (profile + root), MLflow, and DVC. Thin wrappers over steps/ code."""


import os
from pathlib import Path

import dagster as dg

from steps.paths import PROFILES, ArtifactPaths
from steps.tracking import REPO_ROOT


class ProjectResource(dg.ConfigurableResource):
    """Which profile runs (smoke | tiny | flux) and where the project lives."""

    profile: str = "tiny"
    root: str = str(REPO_ROOT)
    gate_override: str = ""
    """A reason, in words, to let RL run although the judge failed its agreement gate (ONEREWARD_GATE_OVERRIDE).
    Empty (the default): the gate blocks. With a reason the failed check is reported as a warning, the reason is
    tagged on every MLflow run downstream, and the fill model can never become `champion`."""

    def setup_for_execution(self, context) -> None:
        if self.profile not in PROFILES:
            raise dg.Failure(f"unknown profile {self.profile!r}; expected one of {PROFILES} (ONEREWARD_PROFILE)")

    @property
    def solo_threads(self) -> int:
        """torch threads for steps that run ALONE in the graph (candidates, judge, agreement, competitors,
        benchmark): every core, up to 4. Steps that run side by side (base_model with judge_pretrain, the two
        RL variants) keep one thread each. Measured on 2 cores (bench/judge/threads.py): a judge training step 1.35x faster with 2 threads."""
        return max(1, min(os.cpu_count() or 1, 4))

    def gate_tags(self) -> dict[str, str]:
        """MLflow tags for runs downstream of the agreement gate: {} when it passed, the override otherwise."""
        import json

        path = self.paths.agreement_json
        if not path.is_file() or json.loads(path.read_text())["passed"]:
            return {}
        return {"judge_gate": "FAILED (overridden)", "gate_override": self.gate_override.strip() or "none given"}

    @property
    def root_path(self) -> Path:
        return Path(self.root)

    @property
    def paths(self) -> ArtifactPaths:
        """Every artifact path of this profile (steps.paths): the assets ask it, never build a path."""
        return ArtifactPaths(self.root_path, self.profile)

    @property
    def data_dir(self) -> Path:
        return self.paths.data_dir

    @property
    def outputs_dir(self) -> Path:
        return self.paths.outputs_dir


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking + registry. Empty ``tracking_uri``: MLFLOW_TRACKING_URI or the local sqlite store."""

    tracking_uri: str = ""
    root: str = str(REPO_ROOT)

    def tracker(self):
        from steps.tracking import Tracker

        return Tracker(self.tracking_uri or None, root=self.root)

    def start_run(self, context: dg.AssetExecutionContext, profile: str, run_name: str,
                  dvc_hashes: dict[str, str] | None = None) -> tuple[object, str]:
        """Start a run tagged with the Dagster run id, git commit, profile and input DVC hashes."""
        tracker = self.tracker()
        tags = {"dagster_run_id": context.run.run_id, "dagster_asset": run_name}
        tags.update({f"dvc/{k}": v for k, v in (dvc_hashes or {}).items()})
        return tracker, tracker.start_run(profile, run_name, tags)


class DvcResource(dg.ConfigurableResource):
    """DVC in the project root. Assets using it run in the ``dvc`` pool (limit 1): DVC locks its repo."""

    root: str = str(REPO_ROOT)

    def repro(self, stage: str) -> bool:
        from steps.data.versioning import repro

        return repro(self.root, stage)

    def add(self, path: str) -> str:
        from steps.data.versioning import add

        return add(self.root, path)

    def out_hashes(self, stage: str) -> dict[str, str]:
        from steps.data.versioning import stage_out_hashes

        return stage_out_hashes(self.root, stage)


def default_resources() -> dict[str, dg.ConfigurableResource]:
    root = os.environ.get("ONEREWARD_ROOT", str(REPO_ROOT))
    return {
        "project": ProjectResource(profile=os.environ.get("ONEREWARD_PROFILE", "tiny"), root=root,
                                   gate_override=os.environ.get("ONEREWARD_GATE_OVERRIDE", "")),
        "mlflow": MlflowResource(tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""), root=root),
        "dvc": DvcResource(root=root),
    }
