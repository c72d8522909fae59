"""The smoke world, base pipeline and judge every RL test starts from (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smoke(tmp_path_factory) -> Path:
    """Smoke world, random-init smoke base pipeline and judge, saved as the real ones are."""
    from steps.data.datasets import DatasetConfig, build_world
    from steps.models.judge import Judge
    from steps.models.judge_spec import spec_for as judge_spec
    from steps.models.policy import build_tiny_fill_pipeline, save_pipeline, spec_for
    from steps.preferences import QUERY_TEMPLATE

    root = tmp_path_factory.mktemp("rl_smoke")
    build_world(DatasetConfig(size=32, n_train=48, n_benchmark_per_task=3, n_validation_per_task=3), root / "data")
    save_pipeline(build_tiny_fill_pipeline(spec_for("smoke"), seed=0), root / "base", spec_for("smoke"))
    Judge.build(judge_spec("smoke"), seed=0, corpus=[QUERY_TEMPLATE]).save(root / "judge")
    return root
