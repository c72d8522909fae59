"""Shared fixtures: offline switches, a throwaway DVC project, a session-wide MLflow sqlite store."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1",
               "GX_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

REPO = Path(__file__).resolve().parents[1]

# Small enough for seconds, big enough to hold every task.
TEST_PARAMS = {"size": 32, "seed": 0, "n_train": 24, "n_benchmark_per_task": 3, "n_validation_per_task": 3}


def make_dvc_project(root: Path, params: dict | None = None) -> Path:
    """A git + DVC repo with this project's dvc.yaml and small profile files (configs/<profile>.yaml, the
    datasets section DVC reads); steps/ linked in."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    p = params or TEST_PARAMS
    (root / "configs").mkdir()
    for profile in ("smoke", "tiny", "flux"):
        sections = {"datasets": p}
        real = yaml.safe_load((REPO / "configs" / f"{profile}.yaml").read_text()) or {}
        if "agreement_set" in real:  # DVC's agreement_test stage reads it; sized like the datasets above
            sections["agreement_set"] = {**real["agreement_set"], "size": p["size"], "world_seed": p["seed"]}
        (root / "configs" / f"{profile}.yaml").write_text(yaml.safe_dump(sections))
    (root / "steps").symlink_to(REPO / "steps")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init"],
                   cwd=root, check=True)
    from dvc.repo import Repo

    Repo.init(str(root)).close()
    return root


@pytest.fixture
def dvc_project(tmp_path: Path) -> Path:
    return make_dvc_project(tmp_path / "project")


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One migrated sqlite store per test session (a fresh one takes seconds to migrate)."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def prefs(tmp_path_factory):
    """World (32 px) -> random-init smoke base -> 4 candidates x 24 conditions -> simulated pairs."""
    from steps.data.datasets import DatasetConfig, build_world
    from steps.judge.annotate import AnnotateConfig, annotate
    from steps.judge.candidates import CandidatesConfig, generate_candidates
    from steps.models.policy import build_tiny_fill_pipeline, save_pipeline, spec_for

    root = tmp_path_factory.mktemp("prefs")
    build_world(DatasetConfig(size=32, n_train=24, n_benchmark_per_task=2), root / "data")
    save_pipeline(build_tiny_fill_pipeline(spec_for("smoke"), seed=0), root / "base", spec_for("smoke"))
    generate_candidates(CandidatesConfig(base_dir=str(root / "base"), train_dir=str(root / "data/train"),
                                         out_dir=str(root / "cands"), n_conditions=24, batch_size=12))
    info = annotate(AnnotateConfig(candidates_dir=str(root / "cands"), train_dir=str(root / "data/train"),
                                   out_dir=str(root / "prefs"), noise=0.0, tie_margin=0.0))
    return root, info


@pytest.fixture(scope="session")
def agreement_test(tmp_path_factory):
    """A small agreement test set (steps.data.agreement_set, 32 px, a seeded untrained smoke base): conditions no
    train split has, labelled without noise."""
    from steps.data.agreement_set import AgreementSetConfig, build_agreement_set

    out = tmp_path_factory.mktemp("agreement") / "agreement_test"
    info = build_agreement_set(AgreementSetConfig(size=32, n_fill=6, n_extend=6, n_removal=4, noise=0.0, tie_margin=0.0,
                                                  require_width=False, batch_size=16), out, "smoke")
    return out, info
