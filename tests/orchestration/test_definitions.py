"""The code location loads, the graph is what the design says, and string selections parse."""

from __future__ import annotations

import dagster as dg

from orchestration.definitions import defs

ASSETS = {"train_conditions", "validation_conditions", "benchmark_conditions", "photo_benchmark", "agreement_test_set",
          "base_model",
          "judge_pretrain",
          "preference_candidates", "preference_pairs", "judge", "judge_agreement", "policy", "competitor_outputs",
          "benchmark_report", "fill_model_registration", "judge_registration", "user_benchmark"}


def _graph():
    return defs.get_repository_def().asset_graph


def test_definitions_load_with_expected_graph():
    graph = _graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == ASSETS
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert checks == {("train_conditions", "great_expectations_suite"), ("benchmark_conditions", "great_expectations_suite"),
                      ("validation_conditions", "great_expectations_suite"),
                      ("photo_benchmark", "great_expectations_suite"), ("judge_agreement", "agreement_gate")}
    for key in graph.asset_check_keys:
        assert graph.get_check_spec(key).blocking, key

    def parents(name):
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert "judge_agreement" in parents("policy") and "base_model" in parents("policy")
    assert parents("judge") == {"judge_pretrain", "preference_pairs"}
    # the gate reads the fixed agreement test set; nothing that chooses (judge, policy) reads it
    assert parents("judge_agreement") == {"judge", "agreement_test_set"}
    assert not {k.to_user_string() for k in graph.get(dg.AssetKey("agreement_test_set")).child_keys} - {"judge_agreement"}
    assert "validation_conditions" in parents("policy") and "benchmark_conditions" not in parents("policy")
    assert "judge_pretrain" not in {k.to_user_string() for k in graph.get(dg.AssetKey("base_model")).parent_keys}
    assert parents("benchmark_report") == {"competitor_outputs", "judge"}
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, f"{key} needs a docstring: it is the UI description"


def test_jobs_schedules_sensors():
    repo = defs.get_repository_def()
    assert {s.name for s in repo.schedule_defs} == {"weekly_retraining"}
    assert repo.get_schedule_def("weekly_retraining").default_status == dg.DefaultScheduleStatus.STOPPED
    assert {s.name for s in repo.sensor_defs} == {"new_preferences_sensor"}
    retrain = repo.get_job("retrain_on_new_preferences")
    keys = {k.to_user_string() for k in retrain.asset_layer.executable_asset_keys}
    assert keys == {"judge", "judge_agreement", "policy", "competitor_outputs", "benchmark_report",
                    "fill_model_registration", "judge_registration"}


def test_string_asset_selection_parses():
    """Needs antlr4-python3-runtime 4.13 (dvc's hydra-core would pull 4.9, see pyproject.toml)."""
    graph = _graph()
    sel = dg.AssetSelection.from_string("key:train_conditions+ or key:photo_benchmark")
    resolved = {k.to_user_string() for k in sel.resolve(graph)}
    assert {"train_conditions", "photo_benchmark", "base_model"} <= resolved
    assert {k.to_user_string() for k in dg.AssetSelection.from_string("*").resolve(graph)} == ASSETS


def test_steps_library_has_no_dagster_import():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "steps"
    offenders = [p for p in root.rglob("*.py") if "import dagster" in p.read_text() or "from dagster" in p.read_text()]
    assert not offenders
    assert not (root.parent / "mlflow" / "__init__.py").exists()


DVC_ASSETS = {"train_conditions", "validation_conditions", "benchmark_conditions", "photo_benchmark", "agreement_test_set",
              "preference_candidates", "preference_pairs"}


def test_every_asset_holds_its_own_pool():
    """Two runs of one checkout queue asset by asset (docs/DESIGN.md §9): every asset writes fixed folders (or the
    registry) and holds a pool of one slot (orchestration/dagster.yaml); the DVC assets share `dvc` (DVC locks its
    repository), every other asset has a pool of its own, so independent assets of one run still overlap."""
    graph = _graph()
    pools = {k.to_user_string(): graph.get(k).pools for k in graph.get_all_asset_keys()}
    assert {name for name, p in pools.items() if p == {"dvc"}} == DVC_ASSETS
    assert {name: p for name, p in pools.items() if name not in DVC_ASSETS} == \
        {name: {name} for name in ASSETS - DVC_ASSETS}
    import yaml

    from tests.conftest import REPO

    settings = yaml.safe_load((REPO / "orchestration" / "dagster.yaml").read_text())["concurrency"]["pools"]
    assert settings == {"default_limit": 1, "granularity": "op"}


def test_every_asset_check_holds_the_pool_of_the_asset_it_reads():
    """A check is a step of its own: without a pool, one run's check read a dataset while the other run's same check
    ran (seen in CI through the served queue, 2026-12-05). Each check holds the pool of the asset it checks."""
    from orchestration.definitions import defs

    graph = _graph()
    checks = defs.get_repository_def().asset_checks_defs_by_key
    assert set(checks) == set(graph.asset_check_keys) and len(checks) == 5
    for key, check in checks.items():
        assert check.node_def.pool == next(iter(graph.get(key.asset_key).pools)), key
