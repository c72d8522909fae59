"""The Dagster instance in $DAGSTER_HOME, made ready before a run: `make setup` calls this each time.

1. Its sqlite storage, created once. `dagster asset materialize` creates it (runs, event logs, schedules) on
   first use; two materializations started together in a fresh checkout (two `make smoke`) both created it
   and one died with "table secondary_indexes already exists". Here one process at a time creates it (an
   advisory lock in $DAGSTER_HOME) and leaves a marker.
2. Pool slots of runs that are gone, freed. Every asset holds a pool of one slot (docs/DESIGN.md §9); a run
   killed mid-step (SIGKILL, out of memory, a reboot) keeps its slot claimed and its status STARTED, and the
   next run would wait for that pool forever. Dagster frees such slots only through its daemon's run
   monitoring, which `dagster asset materialize` does not start. A run still marked as running whose process
   (the pid of its RUN_START event, on this machine) is gone is marked failed and its slots are freed; so are
   the slots of runs that ended. Runs alive are left alone, so this is safe while another run goes on.

    python -m orchestration.instance            # $DAGSTER_HOME
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

MARKER = ".storage_ready"


def ensure_storage(home: str | os.PathLike) -> bool:
    """Create the instance storage under ``home`` unless done before; True when this call created it."""
    home = Path(home)
    if (home / MARKER).exists():
        return False
    import fcntl

    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".storage.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (home / MARKER).exists():
            return False
        with dg.DagsterInstance.from_config(str(home)) as instance:  # creates and migrates every storage
            instance.get_runs(limit=1)
            instance.event_log_storage.get_concurrency_keys()
            instance.schedule_storage.all_instigator_state() if instance.schedule_storage else None
        (home / MARKER).touch()
    return True


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def release_dead_runs(instance, alive=_alive) -> dict[str, str]:
    """Free the pool slots held by runs that ended or whose process is gone: {run id: why}."""
    import dagster as dg
    from dagster._core.storage.dagster_run import FINISHED_STATUSES

    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    holders: set[str] = set()
    for pool in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(pool)
        holders |= {s.run_id for s in info.claimed_slots} | {s.run_id for s in info.pending_steps}
    freed = {}
    for run_id in sorted(holders):
        run = instance.get_run_by_id(run_id)
        if run is None or run.status in FINISHED_STATUSES:
            why = "ended" if run is not None else "deleted"
        else:
            starts = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
            pid = starts[0].event_log_entry.dagster_event.pid if starts else None
            if pid is None or alive(pid):
                continue  # running (or not started yet): its slots are its own
            why = f"its process {pid} is gone"
            instance.report_run_failed(run, message=f"Run marked failed by orchestration.instance: {why} "
                                                    "(killed?); its pool slots were freed.")
        storage.free_concurrency_slots_for_run(run_id)
        freed[run_id] = why
    return freed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default=os.environ.get("DAGSTER_HOME", ""), help="default: $DAGSTER_HOME")
    args = parser.parse_args(argv)
    if not args.home:
        parser.error("DAGSTER_HOME is not set")
    ensure_storage(args.home)
    import dagster as dg

    with dg.DagsterInstance.from_config(args.home) as instance:
        for run_id, why in release_dead_runs(instance).items():
            print(f"freed the pool slots of run {run_id} ({why})")


if __name__ == "__main__":
    main()
