"""orchestration/serve.py without servers (seconds): the served instance's settings, configuration from the
environment, and `stop` touching only the processes it started. The servers themselves: test_serve.py."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from orchestration.serve import ServeConfig, read_pid, stop, write_instance
from tests.conftest import REPO


def _cfg(tmp_path, **env) -> ServeConfig:
    return ServeConfig.from_env({"ONEREWARD_SERVE_DIR": str(tmp_path / "serve"), "ONEREWARD_ROOT": str(tmp_path),
                                 **env})


def test_configuration_comes_from_the_environment(tmp_path):
    cfg = _cfg(tmp_path, ONEREWARD_PG_PORT="6543", ONEREWARD_MLFLOW_PORT="6001", ONEREWARD_DAGSTER_PORT="6002",
               ONEREWARD_PROFILE="smoke")
    assert (cfg.pg_port, cfg.mlflow_port, cfg.dagster_port, cfg.profile) == (6543, 6001, 6002, "smoke")
    assert cfg.host == "127.0.0.1" and cfg.local_pg
    assert cfg.client_env() == {"ONEREWARD_BACKEND": "server", "DAGSTER_HOME": str(cfg.dir / "dagster_home"),
                                "MLFLOW_TRACKING_URI": "http://127.0.0.1:6001"}
    # the password is never in a URI: libpq reads it from the passfile the URI names
    assert cfg.db_uri("mlflow") == f"postgresql://onereward@127.0.0.1:6543/mlflow?passfile={cfg.dir}/secrets/pgpass"
    external = _cfg(tmp_path, ONEREWARD_PG_HOST="db.internal", PGPASSFILE="/etc/team.pgpass")
    assert not external.local_pg and external.db_uri("dagster").startswith("postgresql://onereward@db.internal:5433/")
    assert str(external.passfile) == "/etc/team.pgpass"


def test_the_served_instance_keeps_the_projects_pools_and_adds_postgres_and_the_queue(tmp_path):
    cfg = _cfg(tmp_path, ONEREWARD_MAX_CONCURRENT_RUNS="3")
    settings = yaml.safe_load(write_instance(cfg).read_text())
    project = yaml.safe_load((REPO / "orchestration" / "dagster.yaml").read_text())
    assert settings["concurrency"]["pools"] == project["concurrency"]["pools"]
    assert settings["telemetry"] == project["telemetry"]
    assert settings["concurrency"]["runs"] == {"max_concurrent_runs": 3}
    assert settings["run_coordinator"]["class"] == "QueuedRunCoordinator"
    db = settings["storage"]["postgres"]["postgres_db"]
    assert db["params"] == {"passfile": str(cfg.passfile)} and "password" not in db
    assert settings["run_monitoring"]["enabled"] is True


def test_stop_touches_only_the_processes_it_started(tmp_path):
    cfg = _cfg(tmp_path)
    assert stop(cfg) == {s: "not running" for s in ("dagster-daemon", "dagster-webserver", "mlflow", "postgres")}
    # a pid file naming a live process that is not the service (a reused pid) is not signalled
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cfg.pid_file("mlflow").parent.mkdir(parents=True)
        cfg.pid_file("mlflow").write_text(f"{stranger.pid}\n")
        assert read_pid(cfg, "mlflow") is None
        assert stop(cfg, ("mlflow",)) == {"mlflow": "not running"}
        assert stranger.poll() is None and not cfg.pid_file("mlflow").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_status_says_what_is_not_running(tmp_path):
    env = {**os.environ, "ONEREWARD_SERVE_DIR": str(tmp_path / "serve")}
    done = subprocess.run([sys.executable, "-m", "orchestration.serve", "status"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout.count("not running") == 4, done.stdout + done.stderr
