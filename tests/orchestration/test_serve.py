"""The served stack for real (orchestration/serve.py, `make serve`): PostgreSQL, the MLflow server, the Dagster
webserver and daemon, started as `make serve` starts them and stopped by pid after.

One module-scoped stack on a throwaway smoke checkout; the tests run in order and share it (three graph runs in
all: a run launched through GraphQL and the schedule's run, at once; then the sensor's retraining run, during which
the daemon and the MLflow server are killed and started again). Marker `serve`; .ci/run installs PostgreSQL so
they always run there. About 6-10 min on 2 shared cores.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestration.serve import (
    ServeConfig,
    ServeError,
    graphql,
    launch,
    pg_bin,
    read_pid,
    run_status,
    set_schedule,
    start_sensor,
    wait_for_run,
)
from tests.conftest import REPO
from tests.orchestration.test_concurrent_runs import _steps, smoke_checkout

pytestmark = [pytest.mark.serve, pytest.mark.timeout(5400)]

RUN_TIMEOUT_S = 2400  # generous: a shared machine under load ran one smoke graph 20x slower than alone
SCHEDULE = "weekly_retraining"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def serve_cli(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """What the Makefile runs: `python -m orchestration.serve ...`."""
    return subprocess.run([sys.executable, "-m", "orchestration.serve", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


class Stack:
    def __init__(self, cfg: ServeConfig, env: dict[str, str]):
        self.cfg, self.env = cfg, env
        self.state: dict = {}  # what one test leaves for the next (run ids)

    def instance(self):
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.cfg.dagster_home))

    def sql(self, db: str, query: str, args: tuple = ()) -> list[tuple]:
        import psycopg2

        with psycopg2.connect(self.cfg.db_uri(db), connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()

    def mlflow(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.cfg.mlflow_uri, registry_uri=self.cfg.mlflow_uri)

    def restart(self) -> None:
        """`make serve` again: starts what is not running."""
        done = serve_cli(self.env, "start")
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    try:
        pg_bin()
    except ServeError as e:  # .ci/run installs it; elsewhere say what is missing
        pytest.skip(str(e))
    base = tmp_path_factory.mktemp("serve")
    env = smoke_checkout(base)
    # PostgreSQL runs as the postgres user when we are root: its folder must be reachable (not under pytest's 0700).
    serve_dir = Path(tempfile.mkdtemp(prefix="onereward-serve-", dir="/tmp"))
    serve_dir.chmod(0o755)
    pg, ml, dag = _free_ports(3)
    env.update({"ONEREWARD_SERVE_DIR": str(serve_dir), "ONEREWARD_PG_PORT": str(pg), "ONEREWARD_MLFLOW_PORT": str(ml),
                "ONEREWARD_DAGSTER_PORT": str(dag), "ONEREWARD_RETRAIN_CRON": "* * * * *",
                "ONEREWARD_MAX_CONCURRENT_RUNS": "2"})
    cfg = ServeConfig.from_env(env)
    env.update(cfg.client_env())
    t0 = time.perf_counter()
    started = serve_cli(env, "start")
    print(f"make serve (fresh cluster): {time.perf_counter() - t0:.0f} s")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield Stack(cfg, env)
    finally:
        pids = {s: read_pid(cfg, s) for s in ("postgres", "mlflow", "dagster-webserver", "dagster-daemon")}
        stopped = serve_cli(env, "stop")
        print(stopped.stdout, stopped.stderr)
        still = {s: p for s, p in pids.items() if p is not None and read_pid(cfg, s) is not None}
        shutil.rmtree(serve_dir, ignore_errors=True)
        assert stopped.returncode == 0 and not still, (stopped.stdout, stopped.stderr, still)
        from orchestration.instance import _alive

        assert not [p for p in pids.values() if p and _alive(p)], pids


def _wait(what: str, check, timeout: float, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout:.0f} s")
        time.sleep(every)


def _runs_tagged(stack: Stack, key: str, value: str) -> list:
    import dagster as dg

    with stack.instance() as instance:
        return list(instance.get_runs(filters=dg.RunsFilter(tags={key: value})))


def test_a_launched_run_and_the_schedules_run_go_through_the_queue_at_once(stack):
    """A user's launch from GraphQL and the retraining schedule's tick (the daemon, every minute here) put two
    full smoke graphs in the daemon's run queue; both finish, never holding one pool at the same time, and their
    runs, events and asset checks are in PostgreSQL, their MLflow runs and artifacts on the server."""
    import dagster as dg

    t0 = time.perf_counter()
    launched = launch(stack.cfg, "full_pipeline", tags={"launched_by": "test"})
    set_schedule(stack.cfg, SCHEDULE, running=True)
    try:
        scheduled = _wait("run from the schedule's tick", lambda: _runs_tagged(stack, "dagster/schedule_name", SCHEDULE),
                          180)
    finally:
        set_schedule(stack.cfg, SCHEDULE, running=False)  # one tick is enough
    scheduled_id = scheduled[0].run_id
    print(f"launched {launched}; the schedule's tick queued {scheduled_id} ({time.perf_counter() - t0:.0f} s)")
    statuses = {r: wait_for_run(stack.cfg, r, RUN_TIMEOUT_S) for r in (launched, scheduled_id)}
    print(f"two smoke graphs through the served queue: {time.perf_counter() - t0:.0f} s")
    stack.state["runs"] = [launched, scheduled_id]
    assert statuses == {launched: "SUCCESS", scheduled_id: "SUCCESS"}, statuses

    ticks = graphql(stack.cfg, """query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) {
        ... on Schedule { scheduleState { ticks(limit: 10) { status runIds } } } } }""",
                    {"s": {"repositoryLocationName": "orchestration.definitions", "repositoryName": "__repository__",
                           "scheduleName": SCHEDULE}})["scheduleOrError"]["scheduleState"]["ticks"]
    assert any(t["status"] == "SUCCESS" and scheduled_id in t["runIds"] for t in ticks), ticks

    # PostgreSQL holds the runs, their queue events, materializations and asset checks
    rows = dict(stack.sql("dagster", "SELECT run_id, status FROM runs WHERE run_id IN (%s, %s)", (launched, scheduled_id)))
    assert rows == {launched: "SUCCESS", scheduled_id: "SUCCESS"}, rows
    E = dg.DagsterEventType
    for run_id in (launched, scheduled_id):
        counts = dict(stack.sql("dagster", "SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = %s "
                                           "GROUP BY dagster_event_type", (run_id,)))
        # queued by the webserver or the scheduler, started by the daemon's run coordinator (dagster 1.13 writes no
        # RUN_DEQUEUED event: RUN_STARTING is the coordinator's launch)
        for event in (E.RUN_ENQUEUED, E.RUN_STARTING, E.RUN_START, E.RUN_SUCCESS, E.ASSET_MATERIALIZATION,
                      E.ASSET_CHECK_EVALUATION):
            assert counts.get(event.value, 0) > 0, (run_id, event, counts)
        checks = stack.sql("dagster", "SELECT check_name, execution_status FROM asset_check_executions "
                                      "WHERE run_id = %s", (run_id,))
        assert checks and all(status == "SUCCEEDED" for _, status in checks), checks

    with stack.instance() as instance:
        (a, _), (b, _) = (_steps(instance, r) for r in (launched, scheduled_id))
        runs = {r.run_id: r for r in instance.get_runs()}
        starts = {r: instance.get_run_record_by_id(r).start_time for r in (launched, scheduled_id)}
        ends = {r: instance.get_run_record_by_id(r).end_time for r in (launched, scheduled_id)}
    assert runs[scheduled_id].tags.get("dagster/schedule_name") == SCHEDULE
    assert len(_runs_tagged(stack, "dagster/schedule_name", SCHEDULE)) == 1  # turned off after one tick: it stayed off
    assert starts[launched] < ends[scheduled_id] and starts[scheduled_id] < ends[launched], "the runs did not overlap"
    clashes = [(ka, kb) for ka, (sa, ea) in a.items() for kb, (sb, eb) in b.items() if ka == kb and sa < eb and sb < ea]
    assert not clashes, f"one asset ran in both runs at the same time: {clashes}"

    client = stack.mlflow()
    exp = client.get_experiment_by_name("onereward/smoke")
    assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location  # served, not a local path
    for run_id in (launched, scheduled_id):
        tracked = client.search_runs([exp.experiment_id], f"tags.dagster_run_id = '{run_id}'")
        assert tracked and all(r.info.status == "FINISHED" for r in tracked), run_id
    versions = client.search_model_versions("name = 'onereward-fill'")
    assert len(versions) == 2 and all(v.status == "READY" for v in versions)
    served = stack.cfg.dir / "mlflow" / "artifacts"
    assert any(p.name == "MLmodel" for p in served.rglob("MLmodel")), "no model stored by the MLflow server"


def test_the_registry_pull_over_http_from_another_process_fills_as_in_process(stack, tmp_path):
    """Serving code elsewhere: `mlflow.pyfunc.load_model("models:/onereward-fill@<alias>")` against the server's
    URI in a separate process (no access to the checkout's files) gives the same fill as the model in this one."""
    from steps.registry.register import CHAMPION, FILL_MODEL_NAME, alias_version, load_model
    from steps.registry.serving import decode_png, fill_request

    if "runs" not in stack.state:
        pytest.skip("needs the runs of the test before")
    client = stack.mlflow()
    alias = CHAMPION if alias_version(client, FILL_MODEL_NAME, CHAMPION) else "challenger"
    print(f"pulling models:/{FILL_MODEL_NAME}@{alias}")
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :, 2] = 180
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    request = pd.DataFrame([fill_request(image, mask, "a red circle", "fill")])
    request_file = tmp_path / "request.json"
    request_file.write_text(request.to_json(orient="records"))
    code = ("import sys, mlflow, pandas as pd; "
            f"model = mlflow.pyfunc.load_model('models:/{FILL_MODEL_NAME}@{alias}'); "
            f"print(model.predict(pd.read_json({str(request_file)!r}, orient='records'))['image'][0])")
    env = {k: v for k, v in stack.env.items() if k not in ("ONEREWARD_ROOT", "DAGSTER_HOME", "PYTHONPATH")}
    env["MLFLOW_TRACKING_URI"] = stack.cfg.mlflow_uri
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    remote = decode_png(done.stdout.strip().splitlines()[-1])
    local = decode_png(load_model(f"models:/{FILL_MODEL_NAME}@{alias}", stack.cfg.mlflow_uri)
                       .predict(request)["image"][0])
    assert remote.shape == (32, 32, 3) and np.array_equal(remote, local)
    assert np.array_equal(remote[mask == 0], image[mask == 0]) and not np.array_equal(remote, image)
    assert base64.b64decode(done.stdout.strip().splitlines()[-1])[:8] == b"\x89PNG\r\n\x1a\n"


def _registry(client, name: str) -> dict[str, tuple[str, str]]:
    return {v.version: (v.status, v.source) for v in client.search_model_versions(f"name = '{name}'")}


def _kill(stack: Stack, service: str, group: bool) -> int:
    """SIGKILL the service (``group``: with every process of its session, e.g. the MLflow server's workers), as a
    crash or the OOM killer would; its pid."""
    pid = read_pid(stack.cfg, service)
    assert pid is not None, f"{service} is not running"
    (os.killpg if group else os.kill)(pid, signal.SIGKILL)
    return pid


def _step_started(stack: Stack, run_id: str, step: str) -> bool:
    import dagster as dg

    with stack.instance() as instance:
        return any(r.dagster_event and r.dagster_event.event_type == dg.DagsterEventType.STEP_START
                   and r.dagster_event.step_key == step for r in instance.all_logs(run_id))


def test_the_sensor_retrains_on_new_preferences_through_daemon_and_mlflow_crashes(stack):
    """A new preferences version (pairs changed, `dvc add`) makes the daemon's sensor request a retraining run.
    During it the daemon is killed and started again, then the MLflow server during the registration: the run ends
    (it resumes or is marked failed, never stays running), and the registry is unchanged or complete."""
    from steps.data.versioning import add
    from steps.paths import ArtifactPaths
    from steps.registry.register import FILL_MODEL_NAME, JUDGE_MODEL_NAME

    if "runs" not in stack.state:
        pytest.skip("needs the runs of the test before")
    root = Path(stack.env["ONEREWARD_ROOT"])
    paths = ArtifactPaths(root, "smoke")
    client = stack.mlflow()
    before = {n: _registry(client, n) for n in (FILL_MODEL_NAME, JUDGE_MODEL_NAME)}
    pairs = paths.preferences / "pairs.jsonl"
    lines = pairs.read_text().splitlines(keepends=True)
    pairs.write_text("".join(lines[:-1]))  # one pair fewer: new annotations, a new DVC version
    version = add(root, paths.preferences)
    start_sensor(stack.cfg, "new_preferences_sensor")
    runs = _wait("run requested by the sensor", lambda: _runs_tagged(stack, "preferences_md5", version), 240)
    run_id = runs[0].run_id
    assert runs[0].job_name == "retrain_on_new_preferences"

    _wait("a step under way", lambda: run_status(stack.cfg, run_id) in ("SUCCESS", "FAILURE", "CANCELED")
          or _step_started(stack, run_id, "judge"), 300, every=1)
    old_daemon = _kill(stack, "dagster-daemon", group=False)
    time.sleep(3)
    stack.restart()
    assert read_pid(stack.cfg, "dagster-daemon") not in (None, old_daemon)

    registration = _wait("the registration step (or the run's end)", lambda: "ended" if run_status(
        stack.cfg, run_id) in ("SUCCESS", "FAILURE", "CANCELED") else _step_started(stack, run_id, "fill_model_registration"),
        RUN_TIMEOUT_S, every=1)
    if registration is True:
        _kill(stack, "mlflow", group=True)
        time.sleep(5)
        stack.restart()
    final = wait_for_run(stack.cfg, run_id, RUN_TIMEOUT_S)
    print(f"retraining run after a daemon kill{' and an MLflow kill' if registration is True else ''}: {final}")
    assert final in ("SUCCESS", "FAILURE"), final

    # The registry: every version complete (READY, its model loads) and nothing half-written; at most one new each.
    from steps.registry.register import download_pipeline

    for name in (FILL_MODEL_NAME, JUDGE_MODEL_NAME):
        after = _registry(client, name)
        assert set(before[name]) <= set(after) and len(after) - len(before[name]) <= 1, (name, before[name], after)
        assert all(status == "READY" for status, _ in after.values()), (name, after)
        if final == "SUCCESS":
            assert len(after) == len(before[name]) + 1, (name, after)
        for alias, version in client.get_registered_model(name).aliases.items():
            assert str(version) in after, (name, alias, version)
    newest = max(_registry(client, FILL_MODEL_NAME), key=int)
    pipeline = download_pipeline(stack.cfg.mlflow_uri, f"models:/{FILL_MODEL_NAME}/{newest}",
                                 Path(tempfile.mkdtemp(prefix="onereward-dl-")) / "pipeline")
    assert (pipeline / "model_index.json").is_file() and (pipeline / "transformer").is_dir()
    shutil.rmtree(pipeline.parent, ignore_errors=True)
    if final == "FAILURE":  # run monitoring / the run worker freed what it held
        with stack.instance() as instance:
            storage = instance.event_log_storage
            _wait("pool slots freed", lambda: not any(storage.get_concurrency_info(p).claimed_slots
                                                      for p in storage.get_concurrency_keys()), 120)
    stack.state["runs"].append(run_id)


def test_a_postgres_restart_loses_no_finished_run(stack):
    """Stop PostgreSQL (by its pid) and start it again: every finished run, its events and the MLflow runs are
    still there, and the webserver and the MLflow server answer again without a restart of their own."""
    if "runs" not in stack.state:
        pytest.skip("needs the runs of the tests before")
    client = stack.mlflow()
    exp = client.get_experiment_by_name("onereward/smoke")
    tracked = {r.info.run_id for r in client.search_runs([exp.experiment_id], max_results=1000)}
    runs = dict(stack.sql("dagster", "SELECT run_id, status FROM runs"))
    events = stack.sql("dagster", "SELECT count(*) FROM event_logs")[0][0]
    others = {s: read_pid(stack.cfg, s) for s in ("mlflow", "dagster-webserver", "dagster-daemon")}

    old = read_pid(stack.cfg, "postgres")
    stopped = serve_cli(stack.env, "stop", "postgres")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    from orchestration.instance import _alive

    assert not _alive(old)
    stack.restart()
    assert read_pid(stack.cfg, "postgres") not in (None, old)
    assert {s: read_pid(stack.cfg, s) for s in others} == others  # only postgres was restarted

    assert dict(stack.sql("dagster", "SELECT run_id, status FROM runs")) == runs
    assert stack.sql("dagster", "SELECT count(*) FROM event_logs")[0][0] >= events
    assert all(runs[r] in ("SUCCESS", "FAILURE") for r in stack.state["runs"])
    for run_id in stack.state["runs"]:
        assert _wait("the webserver answering", lambda r=run_id: _try(lambda: run_status(stack.cfg, r)), 60) == runs[run_id]
    again = _wait("the MLflow server answering", lambda: _try(lambda: {
        r.info.run_id for r in client.search_runs([exp.experiment_id], max_results=1000)}), 60)
    assert again == tracked


def _try(fn):
    try:
        return fn()
    except Exception:
        return None


def test_no_password_outside_the_passfile(stack):
    """The generated password is only in the passfile (mode 600): not in dagster.yaml, the logs, the state, the
    checkout, or any process's command line."""
    passfile = stack.cfg.passfile
    assert oct(passfile.stat().st_mode & 0o777) == "0o600"
    password = passfile.read_text().strip().rsplit(":", 1)[1]
    assert len(password) >= 24
    leaks = [p for p in [*stack.cfg.dir.rglob("*"), *Path(stack.env["ONEREWARD_ROOT"]).rglob("*.yaml")]
             if p.is_file() and p != passfile and "pg/cluster" not in str(p) and password.encode() in p.read_bytes()]
    assert not leaks, leaks
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            assert password.encode() not in (proc / "cmdline").read_bytes(), proc
        except OSError:
            continue
    assert json.loads((stack.cfg.dir / "state.json").read_text())["MLFLOW_TRACKING_URI"] == stack.cfg.mlflow_uri
