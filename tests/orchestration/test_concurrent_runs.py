"""Two materializations of the whole smoke graph started at once in one checkout both end well.

What a user does with two `make smoke` in two terminals: one project root, one Dagster instance ($DAGSTER_HOME
with the project's dagster.yaml), one MLflow store (fresh: the two runs create it together). Before the
per-asset pools, run B read run A's RL fingerprint, "resumed" into the same checkpoints folder and one run's
rotation removed the other's temporary checkpoint (SafetensorError). Now each asset holds its own pool of one
slot: the runs queue asset by asset (a step of one run waits while the same asset of the other runs), and
every folder is replaced in one atomic step (steps/io.py), so a reader in one run never sees the other's
half-written output. About two smoke graphs' worth of work on 2 cores (docs/DESIGN.md §9 has the timings).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, make_dvc_project

pytestmark = pytest.mark.timeout(1500)

RUN_TIMEOUT_S = 1200


def smoke_checkout(tmp_path: Path) -> dict[str, str]:
    """A throwaway checkout (DVC project with the smoke datasets section), Dagster home and MLflow store: the env to run in."""
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())["datasets"]
    project = make_dvc_project(tmp_path / "project", smoke)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "orchestration" / "dagster.yaml", home / "dagster.yaml")  # what `make setup` does
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEREWARD_")}
    return {**env, "ONEREWARD_PROFILE": "smoke", "ONEREWARD_ROOT": str(project), "DAGSTER_HOME": str(home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}",
            "PYTHONPATH": os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)}


def materialize_at_once(env: dict[str, str], n: int, logs: Path) -> tuple[list[int], float]:
    """Start ``n`` times what `make run` does, together; (exit codes, wall seconds)."""
    cmd = ["bash", "-c", f"{sys.executable} -m orchestration.instance && "  # `make setup`, then `make run`:
           f"{sys.executable} -m dagster asset materialize -m orchestration.definitions --select '*'"]
    procs = []
    t0 = time.perf_counter()
    try:
        for i in range(n):
            log = open(logs / f"run{i}.log", "w")  # noqa: SIM115 -- closed below
            procs.append((subprocess.Popen(cmd, cwd=env["ONEREWARD_ROOT"], env=env, stdout=log,
                                           stderr=subprocess.STDOUT), log))
        for proc, _ in procs:
            proc.wait(timeout=RUN_TIMEOUT_S)
    finally:  # a timeout or an interrupt must not leave a run going
        for proc, log in procs:
            if proc.poll() is None:
                proc.send_signal(2)  # SIGINT: Dagster fails the run and frees its pool slots
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()
    return [proc.returncode for proc, _ in procs], time.perf_counter() - t0


def _steps(instance, run_id: str) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """A run's {step key: (start, end)} and its "blocked by limit for pool" messages."""
    import dagster as dg

    starts, ends, blocked = {}, {}, []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = record.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            ends[event.step_key] = record.timestamp
        elif event.event_type == dg.DagsterEventType.ENGINE_EVENT and "blocked by limit for pool" in (
                event.message or ""):
            blocked.append(f"{event.step_key}: {event.message}")
    return {k: (starts[k], ends[k]) for k in starts if k in ends}, blocked


def test_two_smoke_materializations_at_once_both_succeed(tmp_path):
    import dagster as dg
    from mlflow.tracking import MlflowClient

    from orchestration.definitions import defs
    from steps.paths import VARIANTS, ArtifactPaths

    env = smoke_checkout(tmp_path)
    codes, seconds = materialize_at_once(env, 2, tmp_path)
    logs = [(tmp_path / f"run{i}.log").read_text() for i in range(2)]
    for code, log in zip(codes, logs):
        assert code == 0, log[-8000:]
    print(f"two smoke materializations at once: {seconds:.0f} s")

    graph = defs.get_repository_def().asset_graph
    pool_of = {graph.get(k).assets_def.op.name: next(iter(graph.get(k).pools)) for k in graph.get_all_asset_keys()}
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    try:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        (a, blocked_a), (b, blocked_b) = (_steps(instance, r.run_id) for r in runs)
        assert "policy" in a and "policy" in b
        # the same pool never held by both runs at once (op granularity: one slot per pool) ...
        clashes = [(ka, kb) for ka, (sa, ea) in a.items() for kb, (sb, eb) in b.items()
                   if ka in pool_of and pool_of.get(ka) == pool_of.get(kb) and sa < eb and sb < ea]
        assert not clashes, f"steps of one pool ran in both runs at the same time: {clashes}"
        # ... so one run waited for the other, and the event log says so
        assert blocked_a or blocked_b, "neither run reports a step blocked by a pool"
        for pool in set(pool_of.values()):  # every slot freed at the end
            info = instance.event_log_storage.get_concurrency_info(pool)
            assert info.slot_count == 1 and not info.claimed_slots and not info.pending_steps, pool
    finally:
        instance.dispose()

    paths = ArtifactPaths(Path(env["ONEREWARD_ROOT"]), "smoke")
    for variant in VARIANTS:
        assert (paths.policy(variant) / "model_index.json").is_file()
        assert (paths.policy_report(variant) / "summary.json").is_file()
    assert paths.benchmark_report_json("benchmark").is_file()
    # no temporary or displaced folder left behind by the atomic replacements
    leftovers = [p for p in paths.outputs_dir.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]
    assert not leftovers, leftovers

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    for name in ("onereward-fill", "onereward-judge"):  # each run registered its version
        assert len(client.search_model_versions(f"name = '{name}'")) == 2, name
    exp = client.get_experiment_by_name("onereward/smoke")
    for run in runs:
        policy_runs = client.search_runs([exp.experiment_id], f"tags.dagster_run_id = '{run.run_id}' and "
                                         "attributes.run_name LIKE 'policy/%'")
        assert sorted(r.data.tags["reference"] for r in policy_runs) == sorted(VARIANTS)
        assert all(r.info.status == "FINISHED" for r in policy_runs)
