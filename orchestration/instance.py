"""Create the Dagster instance's storage in $DAGSTER_HOME once, before any run: `make setup` calls this.

`dagster asset materialize` creates the sqlite storage (runs, event logs, schedules) on first use; two
materializations started together in a fresh checkout (two `make smoke`) both created it and one died with
"table secondary_indexes already exists". Here one process at a time creates it (an advisory lock in
$DAGSTER_HOME) and leaves a marker; later calls see the marker and return at once.

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default=os.environ.get("DAGSTER_HOME", ""), help="default: $DAGSTER_HOME")
    args = parser.parse_args(argv)
    if not args.home:
        parser.error("DAGSTER_HOME is not set")
    ensure_storage(args.home)


if __name__ == "__main__":
    main()
