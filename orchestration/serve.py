"""The team stack on one machine: PostgreSQL, the MLflow tracking server on it, the Dagster webserver and daemon.

    python -m orchestration.serve start     # `make serve`: starts what is not running, waits until each answers
    python -m orchestration.serve status    # what runs, on which port, with which pid
    python -m orchestration.serve stop      # `make serve-stop`: stops what `start` started, by pid, newest first
    python -m orchestration.serve env       # the shell exports that send `make run` (or any step) to the stack

Everything lives in one folder, ``$ONEREWARD_SERVE_DIR`` (default ``.serve/`` in the checkout, git-ignored):

    pg/cluster  pg/run       the PostgreSQL cluster (databases ``mlflow`` and ``dagster``) and its socket
    secrets/pgpass           the generated password (libpq passfile, mode 600): never in git, logs or a command line
    mlflow/artifacts         what the MLflow server stores for its clients (--serve-artifacts)
    dagster_home/            DAGSTER_HOME of the served instance: dagster.yaml (PostgreSQL storage, the run queue,
                             the project's pools of one slot per asset), written here from orchestration/dagster.yaml
    pids/<service>.pid  logs/<service>.log  state.json

Configuration (environment; the Makefile passes its variables of the same meaning): ONEREWARD_SERVE_DIR,
ONEREWARD_SERVE_HOST (127.0.0.1), ONEREWARD_PG_PORT (5433), ONEREWARD_MLFLOW_PORT (5001), ONEREWARD_DAGSTER_PORT
(3001), ONEREWARD_MAX_CONCURRENT_RUNS (2, the run queue), ONEREWARD_PG_USER (onereward), and, to use what a team
already runs instead (docs/TEAM.md): ONEREWARD_PG_HOST (an existing PostgreSQL: nothing is started for it; its
password comes from $PGPASSFILE or ~/.pgpass) and ONEREWARD_ARTIFACTS_DESTINATION (e.g. s3://bucket/onereward with
the usual AWS_* / MLFLOW_S3_ENDPOINT_URL variables). The profile of the served code location is ONEREWARD_PROFILE.

Each service is started in its own session (process group) and its pid written to pids/; `stop` signals exactly
those groups (after checking that the pid still runs what was started) and removes the pid files. PostgreSQL
refuses to run as root: as root the cluster belongs to the ``postgres`` system user (Debian's package creates it).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("postgres", "mlflow", "dagster-webserver", "dagster-daemon")  # start order; stop is the reverse
DATABASES = ("mlflow", "dagster")
# What each service's command line must contain for a pid file to still name it (pids are reused).
MARKERS = {"postgres": "postgres", "mlflow": "mlflow", "dagster-webserver": "dagster_webserver",
           "dagster-daemon": "dagster._daemon"}
DAEMONS_NEEDED = ("SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR")


class ServeError(RuntimeError):
    """A service that cannot start or answer: the message says which, why, and where its log is."""


@dataclass(frozen=True)
class ServeConfig:
    """Where the stack lives and listens; `from_env` reads every field from the environment (module docstring)."""

    root: Path
    dir: Path
    host: str = "127.0.0.1"
    pg_host: str = ""
    pg_port: int = 5433
    pg_user: str = "onereward"
    mlflow_port: int = 5001
    dagster_port: int = 3001
    max_concurrent_runs: int = 2
    artifacts_destination: str = ""
    profile: str = "tiny"
    external_passfile: str = ""  # with pg_host: $PGPASSFILE or ~/.pgpass

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServeConfig:
        env = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            return env.get(name) or default

        root = Path(get("ONEREWARD_ROOT", str(REPO_ROOT))).resolve()
        return cls(root=root, dir=Path(get("ONEREWARD_SERVE_DIR", str(REPO_ROOT / ".serve"))).resolve(),
                   host=get("ONEREWARD_SERVE_HOST", cls.host), pg_host=get("ONEREWARD_PG_HOST", ""),
                   pg_port=int(get("ONEREWARD_PG_PORT", str(cls.pg_port))),
                   pg_user=get("ONEREWARD_PG_USER", cls.pg_user),
                   mlflow_port=int(get("ONEREWARD_MLFLOW_PORT", str(cls.mlflow_port))),
                   dagster_port=int(get("ONEREWARD_DAGSTER_PORT", str(cls.dagster_port))),
                   max_concurrent_runs=int(get("ONEREWARD_MAX_CONCURRENT_RUNS", str(cls.max_concurrent_runs))),
                   artifacts_destination=get("ONEREWARD_ARTIFACTS_DESTINATION", ""),
                   profile=get("ONEREWARD_PROFILE", cls.profile),
                   external_passfile=get("PGPASSFILE", str(Path.home() / ".pgpass")))

    @property
    def local_pg(self) -> bool:
        """Whether this stack runs its own PostgreSQL (no ONEREWARD_PG_HOST given)."""
        return not self.pg_host

    @property
    def db_host(self) -> str:
        return self.pg_host or self.host

    @property
    def passfile(self) -> Path:
        if self.local_pg:
            return self.dir / "secrets" / "pgpass"
        return Path(self.external_passfile)

    @property
    def pg_cluster(self) -> Path:
        """The PostgreSQL cluster's folder (initdb's -D)."""
        return self.dir / "pg" / "cluster"

    @property
    def dagster_home(self) -> Path:
        return self.dir / "dagster_home"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def dagster_url(self) -> str:
        return f"http://{self.host}:{self.dagster_port}"

    def db_uri(self, db: str, scheme: str = "postgresql") -> str:
        """A libpq URI without the password: libpq reads it from the passfile named in the URI."""
        return f"{scheme}://{self.pg_user}@{self.db_host}:{self.pg_port}/{db}?passfile={self.passfile}"

    def pid_file(self, service: str) -> Path:
        return self.dir / "pids" / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.dir / "logs" / f"{service}.log"

    def client_env(self) -> dict[str, str]:
        """What sends a run (or `make run`) to this stack instead of the embedded default."""
        return {"ONEREWARD_BACKEND": "server", "DAGSTER_HOME": str(self.dagster_home),
                "MLFLOW_TRACKING_URI": self.mlflow_uri}


# ---------------------------------------------------------------- processes and files


def _alive(pid: int) -> bool:
    from orchestration.instance import _alive as alive  # one definition of "gone" (zombies count as gone)

    return alive(pid)


def read_pid(cfg: ServeConfig, service: str) -> int | None:
    """The pid of ``service`` when its pid file names a live process that still runs it, else None."""
    try:
        pid = int(cfg.pid_file(service).read_text().strip())
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return pid if MARKERS[service] in cmdline else None


def _write_private(path: Path, text: str, mode: int = 0o600, owner: str | None = None) -> None:
    """Write ``text`` atomically to a file that only its owner can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if owner:
            shutil.chown(tmp, owner, owner)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return "\n".join(f"    {line}" for line in tail)


def _spawn(cfg: ServeConfig, service: str, cmd: list[str], env: dict[str, str] | None = None,
           user: str | None = None, cwd: Path | None = None) -> int:
    """Start ``cmd`` in its own session, output to logs/<service>.log; write and return its pid."""
    log_path = cfg.log_file(service)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cfg.pid_file(service).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} start {service}\n".encode())
        log.flush()
        kwargs = {"user": user, "group": user, "extra_groups": []} if user else {}
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=cwd, start_new_session=True, **kwargs)
    _write_private(cfg.pid_file(service), f"{proc.pid}\n", mode=0o644)
    return proc.pid


def _wait(what: str, ready, timeout: float, cfg: ServeConfig, service: str, pid: int | None = None) -> None:
    """Poll ``ready()`` until it is true; a `ServeError` with the log's tail when the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if pid is not None and not _alive(pid):
            raise ServeError(f"{service} exited before {what} (log {cfg.log_file(service)}):\n"
                             f"{_log_tail(cfg.log_file(service))}")
        if time.monotonic() > deadline:
            raise ServeError(f"{service}: no {what} after {timeout:.0f} s (log {cfg.log_file(service)}):\n"
                             f"{_log_tail(cfg.log_file(service))}")
        time.sleep(0.5)


def _http_ok(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 -- our own 127.0.0.1 URL
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def graphql(cfg: ServeConfig, query: str, variables: dict | None = None, timeout: float = 30.0) -> dict:
    """POST a query to the Dagster webserver's GraphQL API; its ``data`` (errors raise `ServeError`)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{cfg.dagster_url}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise ServeError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


LOCATION, REPOSITORY = "orchestration.definitions", "__repository__"  # what `-m orchestration.definitions` serves


def _repo(**extra) -> dict:
    return {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, **extra}


def launch(cfg: ServeConfig, job: str, tags: dict[str, str] | None = None) -> str:
    """Launch ``job`` as a user does from the UI (the webserver's GraphQL API): the run joins the daemon's queue.
    Its run id."""
    data = graphql(cfg, """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
        ... on LaunchRunSuccess { run { runId } } ... on Error { message } } }""",
                   {"p": {"selector": _repo(jobName=job), "runConfigData": {},
                          "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}}})
    result = data["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise ServeError(f"launching {job}: {result['__typename']}: {result.get('message')}")
    return result["run"]["runId"]


def set_schedule(cfg: ServeConfig, name: str, running: bool) -> None:
    """Turn a schedule on or off (what the UI's toggle does)."""
    if running:
        data = graphql(cfg, """mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) { __typename
            ... on Error { message } } }""", {"s": _repo(scheduleName=name)})["startSchedule"]
        if data["__typename"] != "ScheduleStateResult":
            raise ServeError(f"schedule {name}: {data['__typename']}: {data.get('message')}")
        return
    # Stopped while the daemon finishes a tick, the daemon's write of the tick's state can put it back to RUNNING
    # (measured: a stop right after a tick's run appeared was undone). Stop until it stays stopped.
    query = """query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) {
        ... on Schedule { scheduleState { id status } } } }"""
    stopped_since = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = graphql(cfg, query, {"s": _repo(scheduleName=name)})["scheduleOrError"]["scheduleState"]
        if state["status"] == "STOPPED":
            stopped_since = stopped_since or time.monotonic()
            if time.monotonic() - stopped_since > 10:
                return
        else:
            stopped_since = None
            data = graphql(cfg, """mutation($id: String) { stopRunningSchedule(id: $id) { __typename
                ... on Error { message } } }""", {"id": state["id"]})["stopRunningSchedule"]
            if data["__typename"] != "ScheduleStateResult":
                raise ServeError(f"schedule {name}: {data['__typename']}: {data.get('message')}")
        time.sleep(1)
    raise ServeError(f"schedule {name} did not stay stopped")


def start_sensor(cfg: ServeConfig, name: str) -> None:
    data = graphql(cfg, """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename
        ... on Error { message } } }""", {"s": _repo(sensorName=name)})["startSensor"]
    if data["__typename"] != "Sensor":
        raise ServeError(f"sensor {name}: {data['__typename']}: {data.get('message')}")


def run_status(cfg: ServeConfig, run_id: str) -> str:
    """QUEUED, STARTING, STARTED, SUCCESS, FAILURE, CANCELED ... as the webserver reports it."""
    data = graphql(cfg, "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }",
                   {"id": run_id})["runOrError"]
    if data["__typename"] != "Run":
        raise ServeError(f"run {run_id}: {data['__typename']}")
    return data["status"]


def wait_for_run(cfg: ServeConfig, run_id: str, timeout: float = 1200.0) -> str:
    """Poll until the run ends; its final status (`ServeError` when it does not end in ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        status = run_status(cfg, run_id)
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        if time.monotonic() > deadline:
            raise ServeError(f"run {run_id} still {status} after {timeout:.0f} s")
        time.sleep(2)


# ---------------------------------------------------------------- PostgreSQL


def pg_bin() -> Path:
    """The folder of PostgreSQL's server programs: $ONEREWARD_PG_BIN, Debian's newest, or where pg_ctl is."""
    if os.environ.get("ONEREWARD_PG_BIN"):
        return Path(os.environ["ONEREWARD_PG_BIN"])
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if debian:
        return debian[-1].parent
    found = shutil.which("pg_ctl")
    if found and (Path(found).resolve().parent / "initdb").exists():
        return Path(found).resolve().parent
    raise ServeError("PostgreSQL's server programs (initdb, postgres) are not installed: as root, "
                     "`apt-get install -y postgresql` (what `make serve` does), or set ONEREWARD_PG_BIN")


def _pg_os_user() -> str | None:
    """The system user that owns and runs the cluster: None (the caller) unless we are root."""
    if os.geteuid() != 0:
        return None
    user = os.environ.get("ONEREWARD_PG_OS_USER", "postgres")
    try:
        import pwd

        pwd.getpwnam(user)
    except KeyError:
        raise ServeError(f"PostgreSQL refuses to run as root and there is no system user {user!r} to run it as: "
                         "install Debian's postgresql package (it creates one) or set ONEREWARD_PG_OS_USER") from None
    return user


def _connect(cfg: ServeConfig, db: str = "postgres"):
    import psycopg2

    return psycopg2.connect(cfg.db_uri(db), connect_timeout=3)


def pg_ready(cfg: ServeConfig) -> bool:
    try:
        _connect(cfg).close()
        return True
    except Exception:
        return False


def _check_reachable(path: Path, user: str) -> None:
    """The cluster's folder must be reachable by ``user``: every folder above it must let others pass (x)."""
    for parent in path.parents:
        if not os.stat(parent).st_mode & 0o001:
            raise ServeError(f"the {user} user cannot reach {path}: {parent} is not searchable by others; set "
                             f"ONEREWARD_SERVE_DIR to a folder it can reach (e.g. under /var/tmp) or `chmod o+x {parent}`")


def init_cluster(cfg: ServeConfig) -> None:
    """initdb once: superuser ``pg_user`` with a generated password (scram-sha-256 on every connection)."""
    data = cfg.pg_cluster
    if (data / "PG_VERSION").exists():
        return
    user = _pg_os_user()
    password = secrets.token_urlsafe(24)  # no ':' or '\\': safe in a passfile line
    _write_private(cfg.passfile, f"{cfg.db_host}:{cfg.pg_port}:*:{cfg.pg_user}:{password}\n")
    pg_dir = cfg.dir / "pg"
    for d in (pg_dir, pg_dir / "run"):
        d.mkdir(parents=True, exist_ok=True)
        if user:
            shutil.chown(d, user, user)
    if user:
        _check_reachable(pg_dir, user)
    pwfile = pg_dir / ".pwfile"  # read by initdb (run as the cluster's owner), removed right after
    _write_private(pwfile, password + "\n", owner=user)
    try:
        kwargs = {"user": user, "group": user, "extra_groups": []} if user else {}
        done = subprocess.run([str(pg_bin() / "initdb"), "-D", str(data), "-U", cfg.pg_user, f"--pwfile={pwfile}",
                               "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                              capture_output=True, text=True, **kwargs)
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        raise ServeError(f"initdb failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def start_postgres(cfg: ServeConfig) -> int | None:
    """Start the local cluster (after initdb on first use) and create the databases; the pid, or None if running."""
    if not cfg.local_pg:
        if not pg_ready(cfg):
            raise ServeError(f"cannot connect to the PostgreSQL at {cfg.db_host}:{cfg.pg_port} as {cfg.pg_user} "
                             f"(password from {cfg.passfile}); see docs/TEAM.md")
        return None
    pid = read_pid(cfg, "postgres")
    if pid is None:
        init_cluster(cfg)
        cmd = [str(pg_bin() / "postgres"), "-D", str(cfg.pg_cluster), "-p", str(cfg.pg_port),
               "-c", f"listen_addresses={cfg.host}", "-c", f"unix_socket_directories={cfg.dir / 'pg' / 'run'}",
               "-c", "max_connections=200"]
        log = cfg.log_file("postgres")
        log.parent.mkdir(parents=True, exist_ok=True)
        user = _pg_os_user()
        log.touch()
        if user:
            shutil.chown(log, user, user)
        pid = _spawn(cfg, "postgres", cmd, user=user)
    _wait("connection accepted", lambda: pg_ready(cfg), 60, cfg, "postgres", pid)
    conn = _connect(cfg)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{db}"')
    finally:
        conn.close()
    return pid


# ---------------------------------------------------------------- MLflow and Dagster


def service_env(cfg: ServeConfig) -> dict[str, str]:
    """The environment of the MLflow server and the Dagster processes (and of every run the daemon launches)."""
    from steps.runtime import OFFLINE_ENV

    env = {**os.environ, **OFFLINE_ENV, **cfg.client_env(), "ONEREWARD_PROFILE": cfg.profile,
           "ONEREWARD_ROOT": str(cfg.root)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env


def start_mlflow(cfg: ServeConfig) -> int:
    pid = read_pid(cfg, "mlflow")
    if pid is None:
        destination = cfg.artifacts_destination or str(cfg.dir / "mlflow" / "artifacts")
        if "://" not in destination:
            Path(destination).mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
               # psycopg2, the driver dagster-postgres needs too (SQLAlchemy 2.1's default is psycopg 3)
               cfg.db_uri("mlflow", "postgresql+psycopg2"),
               "--serve-artifacts", "--artifacts-destination", destination, "--host", cfg.host,
               "--port", str(cfg.mlflow_port), "--workers", "2"]
        pid = _spawn(cfg, "mlflow", cmd, env=service_env(cfg), cwd=cfg.dir)
    _wait("answer on /health", lambda: _http_ok(f"{cfg.mlflow_uri}/health"), 180, cfg, "mlflow", pid)
    return pid


def write_instance(cfg: ServeConfig) -> Path:
    """dagster.yaml of the served instance: the project's settings (orchestration/dagster.yaml: telemetry, pools)
    plus PostgreSQL storage, the run queue and run monitoring (a run whose worker died is marked failed)."""
    import yaml

    settings = yaml.safe_load((REPO_ROOT / "orchestration" / "dagster.yaml").read_text())
    settings.setdefault("concurrency", {})["runs"] = {"max_concurrent_runs": cfg.max_concurrent_runs}
    settings["run_coordinator"] = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}
    settings["storage"] = {"postgres": {"postgres_db": {
        "username": cfg.pg_user, "hostname": cfg.db_host, "port": cfg.pg_port, "db_name": "dagster",
        "params": {"passfile": str(cfg.passfile)}, "scheme": "postgresql+psycopg2"}}}
    settings["run_monitoring"] = {"enabled": True, "poll_interval_seconds": 5, "start_timeout_seconds": 180,
                                  "free_slots_after_run_end_seconds": 30}
    text = ("# Written by `python -m orchestration.serve start` (make serve) from orchestration/dagster.yaml;\n"
            "# the password is in the passfile named below, never here.\n" + yaml.safe_dump(settings, sort_keys=False))
    path = cfg.dagster_home / "dagster.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        _write_private(path, text, mode=0o644)
    return path


def code_pools() -> set[str]:
    """Every pool an op of the code location names (one per asset that writes fixed folders, and ``dvc``)."""
    from orchestration.definitions import defs

    return {op.pool for job in defs.get_repository_def().get_all_jobs() for op in job.graph.iterate_op_defs()
            if getattr(op, "pool", None)}


def prepare_instance(cfg: ServeConfig) -> dict[str, str]:
    """Make the served instance ready before its daemon runs anything:

    - every pool's limit row is created now, once. Left to the runs, two runs claiming a new pool at once race on
      PostgreSQL (dagster 1.13's insert-then-update hits "current transaction is aborted" and the run fails);
      sqlite never shows it. Measured here with two smoke graphs queued together.
    - runs still marked running whose process is gone (the stack died under them) are marked failed and their
      pool slots freed (orchestration.instance): Dagster's default run launcher cannot watch its run workers.
    Returns {run id: why} for the runs marked failed."""
    import dagster as dg

    from orchestration.instance import release_dead_runs

    with dg.DagsterInstance.from_config(str(cfg.dagster_home)) as instance:
        storage = instance.event_log_storage
        known = set(storage.get_concurrency_keys())
        for pool in sorted(code_pools() - known):
            storage.initialize_concurrency_limit_to_default(pool)
        freed = release_dead_runs(instance)
    for run_id, why in freed.items():
        print(f"run {run_id}: marked failed, its pool slots freed ({why})", flush=True)
    return freed


def daemons_healthy(cfg: ServeConfig) -> bool:
    try:
        data = graphql(cfg, "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }", timeout=5)
    except Exception:
        return False
    healthy = {d["daemonType"] for d in data["instance"]["daemonHealth"]["allDaemonStatuses"] if d["healthy"]}
    return all(d in healthy for d in DAEMONS_NEEDED)


def start_dagster(cfg: ServeConfig) -> tuple[int, int]:
    write_instance(cfg)
    from orchestration.instance import ensure_storage

    ensure_storage(cfg.dagster_home)  # creates and migrates the PostgreSQL schema once, one process at a time
    prepare_instance(cfg)  # every pool created before any run; runs whose worker died with the stack: failed
    env = service_env(cfg)
    location = ["-m", "orchestration.definitions", "--working-directory", str(cfg.root)]
    web = read_pid(cfg, "dagster-webserver")
    if web is None:
        web = _spawn(cfg, "dagster-webserver", [sys.executable, "-m", "dagster_webserver", "-h", cfg.host,
                                                "-p", str(cfg.dagster_port), *location], env=env, cwd=cfg.root)
    daemon = read_pid(cfg, "dagster-daemon")
    if daemon is None:
        daemon = _spawn(cfg, "dagster-daemon", [sys.executable, "-m", "dagster._daemon", "run", *location],
                        env=env, cwd=cfg.root)
    _wait("answer on /server_info", lambda: _http_ok(f"{cfg.dagster_url}/server_info"), 180, cfg,
          "dagster-webserver", web)
    _wait(f"healthy daemons ({', '.join(DAEMONS_NEEDED)})", lambda: daemons_healthy(cfg), 180, cfg,
          "dagster-daemon", daemon)
    return web, daemon


# ---------------------------------------------------------------- the lifecycle


def start(cfg: ServeConfig | None = None) -> dict:
    """Start every service that is not running (each waits for the one before), then describe the stack."""
    cfg = cfg or ServeConfig.from_env()
    cfg.dir.mkdir(parents=True, exist_ok=True)
    pids = {"postgres": start_postgres(cfg), "mlflow": start_mlflow(cfg)}
    pids["dagster-webserver"], pids["dagster-daemon"] = start_dagster(cfg)
    state = {**{k: str(v) for k, v in asdict(cfg).items()}, "pids": pids, **cfg.client_env(),
             "dagster_url": cfg.dagster_url}
    _write_private(cfg.dir / "state.json", json.dumps(state, indent=2) + "\n", mode=0o644)
    return state


def _stop_one(cfg: ServeConfig, service: str, timeout: float = 30.0) -> str:
    pid = read_pid(cfg, service)
    if pid is None:
        cfg.pid_file(service).unlink(missing_ok=True)
        return "not running"
    # postgres: SIGINT is its fast shutdown (SIGTERM would wait for every client); the others: their session.
    if service == "postgres":
        os.kill(pid, signal.SIGINT)
    else:
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    how = "stopped"
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
        how = f"killed (no exit {timeout:.0f} s after the stop signal)"
    if service != "postgres":  # what the service started in its session (run workers, code servers)
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    cfg.pid_file(service).unlink(missing_ok=True)
    return f"{how} (pid {pid})"


def stop(cfg: ServeConfig | None = None, services: tuple[str, ...] = SERVICES) -> dict[str, str]:
    """Stop the given services (all by default), newest first, by the pids this module wrote."""
    cfg = cfg or ServeConfig.from_env()
    return {s: _stop_one(cfg, s) for s in reversed(SERVICES) if s in services}


def status(cfg: ServeConfig | None = None) -> dict[str, int | None]:
    cfg = cfg or ServeConfig.from_env()
    return {s: read_pid(cfg, s) for s in SERVICES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestration.serve", description=__doc__.split("\n\n")[0],
                                     epilog="Configuration: see the module docstring or docs/TEAM.md.")
    parser.add_argument("command", choices=("start", "stop", "status", "env", "launch"),
                        help="launch JOB [--wait]: a job (full_pipeline, retrain_on_new_preferences) through the queue")
    parser.add_argument("services", nargs="*", default=[], help=f"stop only these, of {', '.join(SERVICES)} "
                                                                 "(default: all); launch: the job's name")
    parser.add_argument("--wait", action="store_true", help="launch: wait for the run to end; exit 1 unless SUCCESS")
    args = parser.parse_args(argv)
    cfg = ServeConfig.from_env()
    if args.command == "launch":
        if len(args.services) != 1:
            parser.error("launch takes one job name, e.g. full_pipeline")
        run_id = launch(cfg, args.services[0])
        print(f"queued run {run_id}: {cfg.dagster_url}/runs/{run_id}", flush=True)
        if not args.wait:
            return 0
        final = wait_for_run(cfg, run_id, timeout=24 * 3600)
        print(f"run {run_id}: {final}")
        return 0 if final == "SUCCESS" else 1
    unknown = [s for s in args.services if s not in SERVICES]
    if unknown:
        parser.error(f"unknown service(s) {unknown}; expected some of {list(SERVICES)}")
    if args.command == "env":
        print("\n".join(f"export {k}={v}" for k, v in cfg.client_env().items()))
        return 0
    if args.command == "status":
        running = status(cfg)
        for service, pid in running.items():
            where = {"postgres": f"{cfg.db_host}:{cfg.pg_port}", "mlflow": cfg.mlflow_uri,
                     "dagster-webserver": cfg.dagster_url, "dagster-daemon": str(cfg.dagster_home)}[service]
            print(f"{service:18} {'pid ' + str(pid) if pid else 'not running':14} {where}")
        return 0 if all(running.values()) or (not cfg.local_pg and all(
            v for k, v in running.items() if k != "postgres")) else 1
    if args.command == "stop":
        for service, what in stop(cfg, tuple(args.services) or SERVICES).items():
            print(f"{service}: {what}")
        return 0
    try:
        start(cfg)
    except ServeError as e:
        print(f"error: {e}", file=sys.stderr)
        print("Whatever did start is still running: `make serve-stop` stops it.", file=sys.stderr)
        return 1
    print(f"Serving ({cfg.profile} profile) from {cfg.dir}:\n"
          f"  PostgreSQL  {cfg.db_host}:{cfg.pg_port} (databases {', '.join(DATABASES)}; password in {cfg.passfile})\n"
          f"  MLflow      {cfg.mlflow_uri}\n"
          f"  Dagster     {cfg.dagster_url} (webserver + daemon; DAGSTER_HOME={cfg.dagster_home})\n"
          f"Send runs here: ONEREWARD_BACKEND=server make run   (or: eval \"$(python -m orchestration.serve env)\")\n"
          f"Stop: make serve-stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
