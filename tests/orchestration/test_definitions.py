"""The code location loads, the graph is what the design says, and string selections parse."""

from __future__ import annotations

import dagster as dg

from orchestration.definitions import defs


def test_definitions_load_with_expected_assets_and_checks():
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"train_conditions", "benchmark_conditions", "photo_benchmark"} <= keys
    checks = {(c.asset_key.to_user_string(), c.name) for c in repo.asset_graph.asset_check_keys}
    for key in ("train_conditions", "benchmark_conditions", "photo_benchmark"):
        assert (key, "great_expectations_suite") in checks
    for spec in defs.get_all_asset_check_specs() if hasattr(defs, "get_all_asset_check_specs") else []:
        assert spec.blocking


def test_string_asset_selection_parses():
    """Needs antlr4-python3-runtime 4.13 (dvc's hydra-core would pull 4.9, see pyproject.toml)."""
    graph = defs.get_repository_def().asset_graph
    sel = dg.AssetSelection.from_string("key:train_conditions+ or key:photo_benchmark")
    resolved = {k.to_user_string() for k in sel.resolve(graph)}
    assert {"train_conditions", "photo_benchmark"} <= resolved
    assert {k.to_user_string() for k in dg.AssetSelection.from_string("*").resolve(graph)} >= resolved


def test_steps_library_has_no_dagster_import():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "steps"
    offenders = [p for p in root.rglob("*.py") if "import dagster" in p.read_text() or "from dagster" in p.read_text()]
    assert not offenders
    assert not (root.parent / "mlflow" / "__init__.py").exists()
