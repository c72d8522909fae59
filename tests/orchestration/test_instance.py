"""orchestration/instance.py: the instance storage is created once, and a killed run does not hold its pools forever."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid

import dagster as dg

from orchestration.instance import MARKER, ensure_storage, release_dead_runs
from tests.conftest import REPO


def _home(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    return home


def test_storage_created_once_by_two_processes_at_once(tmp_path):
    home = _home(tmp_path)
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from orchestration.instance import ensure_storage; " \
           f"print(ensure_storage({str(home)!r}))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(o.strip().splitlines()[-1] for o, _ in outs) == ["False", "True"]  # one created it
    assert (home / MARKER).exists() and ensure_storage(home) is False


def _started_run(instance, pid: int) -> str:
    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.storage.dagster_run import DagsterRun

    run = instance.add_run(DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4())))
    instance.report_dagster_event(DagsterEvent(DagsterEventType.RUN_START.value, job_name="__ASSET_JOB", pid=pid),
                                  run.run_id)
    return run.run_id


def test_slots_of_a_killed_run_are_freed_and_a_live_run_keeps_its_own(tmp_path):
    home = _home(tmp_path)
    ensure_storage(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        for pool in ("policy", "judge"):
            storage.initialize_concurrency_limit_to_default(pool)
        killed, live = _started_run(instance, pid=111), _started_run(instance, pid=222)
        assert storage.claim_concurrency_slot("policy", killed, "policy").is_claimed
        assert storage.claim_concurrency_slot("judge", live, "judge").is_claimed
        assert not storage.claim_concurrency_slot("policy", live, "policy").is_claimed  # waits for `killed`

        assert release_dead_runs(instance, alive=lambda pid: True) == {}  # nothing gone: nothing touched
        freed = release_dead_runs(instance, alive=lambda pid: pid != 111)
        assert freed == {killed: "its process 111 is gone"}
        assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED
        assert storage.claim_concurrency_slot("policy", live, "policy").is_claimed  # the waiting step goes on
        assert [s.run_id for s in storage.get_concurrency_info("judge").claimed_slots] == [live]
