"""The MLflow model registry: the released fill model and judge, and the promotion gate (docs/DESIGN.md §8).

- `register_fill_model` logs a FluxFill pipeline directory as an MLflow pyfunc through "models from code"
  (steps/registry/fill_pyfunc.py; the steps/ package travels with it as code), with a signature and explicit pip
  requirements, registers it as ``onereward-fill``, points ``challenger`` at the new version, and moves
  ``champion`` only when `promotion_gate` passes. The verdict and its reasons become version tags.
- `register_judge_model` does the same for the judge (``onereward-judge``, steps/registry/judge_pyfunc.py);
  ``champion`` moves when every ``agreement/<task>/<dimension>`` reaches ``min_agreement``.
- `load_model` loads ``models:/<name>@<alias>`` (or any model URI) with clear errors for an unknown
  model or alias; ``mlflow.pyfunc.load_model`` on the same URI gives the same model.

The request format of both pyfuncs is steps/registry/serving.py; the gates are steps/registry/gates.py.

Everything goes through ``MlflowClient(tracking_uri)``; run ids are explicit (no active run is used or
left behind), and a new experiment's artifacts go under ``artifact_root`` (default: ``artifacts/`` beside
a sqlite database).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.registry.gates import GateConfig, Verdict, agreement_gate, promotion_gate
from steps.registry.serving import fill_signature, judge_signature

FILL_MODEL_NAME = "onereward-fill"
JUDGE_MODEL_NAME = "onereward-judge"
CHALLENGER, CHAMPION = "challenger", "champion"
STEPS_DIR = Path(__file__).resolve().parents[1]  # the whole library travels with a model (code_paths)
FILL_PYFUNC_FILE = Path(__file__).resolve().with_name("fill_pyfunc.py")
JUDGE_PYFUNC_FILE = Path(__file__).resolve().with_name("judge_pyfunc.py")
# What the pyfunc imports at serving time; pinned to the versions it was logged with.
PIP_PACKAGES = ("mlflow", "torch", "diffusers", "transformers", "tokenizers", "safetensors", "numpy", "pandas",
                "pillow", "scikit-image", "opencv-python-headless", "pyyaml", "tqdm")


class ModelNotFoundError(LookupError):
    """A model URI that names no registered model, version or alias."""


# ---------------------------------------------------------------- requirements


def pip_requirements() -> list[str]:
    """Explicit requirements (no inference): the installed versions of what the pyfuncs import."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for name in PIP_PACKAGES:
        try:
            reqs.append(f"{name}=={version(name).split('+')[0]}")  # torch 2.13.0+cpu -> torch==2.13.0
        except PackageNotFoundError:
            reqs.append(name)
    return reqs


# ---------------------------------------------------------------- MLflow plumbing


def client_for(tracking_uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _experiment_id(client, tracking_uri: str, profile: str, artifact_root: str | os.PathLike | None) -> str:
    name = f"onereward/{profile}"
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    if tracking_uri.startswith(("http://", "https://")):
        artifact_root = None  # a tracking server stores the artifacts itself (--serve-artifacts): its default
    if artifact_root is None and tracking_uri.startswith("sqlite:///"):
        artifact_root = Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
    location = Path(artifact_root).resolve().as_uri() if artifact_root is not None else None
    return client.create_experiment(name, artifact_location=location)


def alias_version(client, name: str, alias: str) -> str | None:
    """The version an alias points at, or None (also when the model does not exist yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _log_pyfunc(client, experiment_id: str, run_id: str, name: str, code_file: Path, artifacts: dict[str, str],
                signature, model_config: dict[str, Any]) -> str:
    """Save a models-from-code pyfunc locally, upload it as an MLflow 3 LoggedModel of ``run_id``; its id."""
    import mlflow
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model

    logged = client.create_logged_model(experiment_id, name=name, source_run_id=run_id,
                                        params={k: str(v) for k, v in model_config.items()})
    with tempfile.TemporaryDirectory(prefix="onereward-pyfunc-") as tmp:
        local = Path(tmp) / "model"
        mlflow_model = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id,
                             model_id=logged.model_id)
        with warnings.catch_warnings():  # "add type hints" / "no input example": the signature is explicit
            warnings.simplefilter("ignore", UserWarning)
            mlflow.pyfunc.save_model(local, python_model=str(code_file), artifacts=artifacts,
                                     code_paths=[str(STEPS_DIR)], signature=signature,
                                     pip_requirements=pip_requirements(), model_config=model_config,
                                     mlflow_model=mlflow_model)
        for cache in list(local.rglob("__pycache__")):
            shutil.rmtree(cache, ignore_errors=True)
        client.log_model_artifacts(logged.model_id, str(local))
    client.finalize_logged_model(logged.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    return logged.model_id


def _register(client, name: str, model_id: str, run_id: str, description: str, tags: dict[str, str]):
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=description)
    # The sqlite registry store looks the logged model up through the *global* tracking URI (MLflow 3.17).
    with use_tracking_uri(client.tracking_uri):
        version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id,
                                              model_id=model_id, tags=tags)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return version


@dataclass(frozen=True)
class _Release:
    """What differs between registering the fill model and the judge."""

    name: str
    logged_name: str
    code_file: Path
    artifacts: dict[str, str]
    signature: Any
    model_config: dict[str, Any]
    description: str
    run_name: str


def _release(tracking_uri: str, release: _Release, gate, *, run_id: str | None, profile: str, artifact_root,
             tags: dict[str, str]) -> dict[str, Any]:
    """Log the pyfunc to ``run_id`` (or a run of its own), register it, ``challenger`` -> it, and
    ``champion`` -> it when ``gate(previous champion version)`` passes; the verdict becomes version tags."""
    client = client_for(tracking_uri)
    created = run_id is None
    if created:
        from steps.tracking import git_commit

        experiment_id = _experiment_id(client, tracking_uri, profile, artifact_root)
        run_id = client.create_run(experiment_id, run_name=release.run_name,
                                   tags={"profile": profile, "git_commit": git_commit()}).info.run_id
    else:
        experiment_id = client.get_run(run_id).info.experiment_id
    name = release.name
    try:
        previous = alias_version(client, name, CHAMPION)
        verdict = gate(previous)
        model_id = _log_pyfunc(client, experiment_id, run_id, release.logged_name, release.code_file,
                               release.artifacts, release.signature, release.model_config)
        version = _register(client, name, model_id, run_id, release.description, {**tags, "profile": profile})
        for key, value in verdict.tags().items():
            client.set_model_version_tag(name, version.version, key, value)
        if verdict.passed:
            client.set_registered_model_alias(name, CHAMPION, version.version)
        client.log_batch(run_id, metrics=_gate_metrics(verdict, name))
        client.set_tag(run_id, f"registry.{name}", str(version.version))
    except BaseException:
        if created:
            client.set_terminated(run_id, "FAILED")
        raise
    if created:
        client.set_terminated(run_id, "FINISHED")
    v = str(version.version)
    return {"name": name, "version": v, "model_uri": f"models:/{model_id}", "model_id": model_id,
            "registry_uri": f"models:/{name}/{v}", "run_id": run_id,
            "aliases": [CHALLENGER] + ([CHAMPION] if verdict.passed else []), "previous_champion": previous,
            "champion": v if verdict.passed else previous, "verdict": verdict.as_dict()}


def _gate_metrics(verdict: Verdict, name: str) -> list:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(f"gate/{k}/net_win", v, now, 0) for k, v in verdict.net_wins.items()]
    return items + [Metric(f"gate/{name}/passed", float(verdict.passed), now, 0)]


def register_fill_model(tracking_uri: str, pipeline_dir: str | os.PathLike, metrics: dict[str, float] | None = None,
                        *, run_id: str | None = None, profile: str = "tiny",
                        artifact_root: str | os.PathLike | None = None, num_steps: int = 8, guidance: float = 30.0,
                        seed: int = 0, gate: GateConfig = GateConfig(), tags: dict[str, str] | None = None,
                        name: str = FILL_MODEL_NAME, never_champion: str = "") -> dict[str, Any]:
    """Log + register the fill pipeline; ``challenger`` -> new version; ``champion`` only if the gate passes.

    ``metrics``: the benchmark's metrics for this model (``gsb/...``), with the current champion's outputs
    as system ``gate.champion_system``. ``run_id``: the MLflow run to attach the model to (a run named
    ``register-fill`` is created and finished otherwise). ``num_steps``/``guidance``/``seed``: the pyfunc's
    sampling defaults. Returns {"name", "version", "model_uri" (models:/<logged model id>), "model_id",
    "registry_uri", "run_id", "aliases", "previous_champion", "champion", "verdict": {passed, reasons,
    net_wins}}. ``never_champion``: a reason this version must stay ``challenger`` whatever the benchmark says
    (the pipeline passes the overridden judge-agreement gate here); it heads the verdict's reasons.
    """
    from steps.models.policy import check_flux_layout

    pipeline_dir = check_flux_layout(pipeline_dir)
    release = _Release(name, "fill_model", FILL_PYFUNC_FILE, {"pipeline": str(pipeline_dir)},
                       fill_signature(num_steps, guidance, seed),
                       {"num_steps": num_steps, "guidance": guidance, "seed": seed},
                       "OneReward fill model (fill, extend, removal): a FluxFill pipeline as an MLflow pyfunc",
                       "register-fill")
    def decide(previous):
        verdict = promotion_gate(metrics, previous, gate)
        if never_champion:
            return Verdict(False, [f"FAIL {never_champion}: challenger only"] + verdict.reasons, verdict.net_wins)
        return verdict

    return _release(tracking_uri, release, decide, run_id=run_id, profile=profile, artifact_root=artifact_root,
                    tags={**(tags or {}), "pipeline_dir": str(pipeline_dir)})


def register_judge_model(tracking_uri: str, judge_dir: str | os.PathLike, agreement: dict[str, float] | None = None,
                         *, min_agreement: float = 0.6, run_id: str | None = None, profile: str = "tiny",
                         artifact_root: str | os.PathLike | None = None, tags: dict[str, str] | None = None,
                         name: str = JUDGE_MODEL_NAME, verdict: tuple[bool, list[str]] | None = None) -> dict[str, Any]:
    """Log + register the judge (pyfunc: first image, second image, query -> P(Yes)).

    ``challenger`` -> new version; ``champion`` when every ``agreement/<task>/<dimension>`` in
    ``agreement`` (the held-out human-agreement metrics) is at least ``min_agreement``, or -- when
    ``verdict`` = (passed, reasons) is given -- as the pipeline's per-cell agreement gate decided.
    Returns the same dict as `register_fill_model`.
    """
    judge_dir = Path(judge_dir)
    if not (judge_dir / "config.json").is_file():
        raise FileNotFoundError(f"{judge_dir}: not a judge directory (config.json missing; see Judge.save)")
    release = _Release(name, "judge_model", JUDGE_PYFUNC_FILE, {"judge": str(judge_dir)}, judge_signature(),
                       {"batch_size": 32},
                       "OneReward judge: P(Yes) that the first image is better for a task/dimension query",
                       "register-judge")
    decide = (lambda previous: Verdict(verdict[0], list(verdict[1]) or ["agreement gate passed"])) if verdict \
        else (lambda previous: agreement_gate(agreement, min_agreement))
    return _release(tracking_uri, release, decide, run_id=run_id,
                    profile=profile, artifact_root=artifact_root, tags={**(tags or {}), "judge_dir": str(judge_dir)})


# ---------------------------------------------------------------- loading


@contextlib.contextmanager
def use_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``mlflow.pyfunc.load_model``) at ``tracking_uri``, then restore it."""
    import mlflow

    was_set = mlflow.is_tracking_uri_set()
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous if was_set else None)


def check_model_uri(tracking_uri: str, model_uri: str) -> str | None:
    """For ``models:/<name>@<alias>`` and ``models:/<name>/<version>``: the version, or `ModelNotFoundError`
    saying what exists instead. Other URIs (``models:/<model id>``, ``runs:/``, paths) pass through (None)."""
    from mlflow.exceptions import MlflowException

    if not model_uri.startswith("models:/"):
        return None
    ref = model_uri.removeprefix("models:/").strip("/")
    if ref.startswith("m-"):  # an MLflow 3 logged-model id
        return None
    name, alias, version = ref, None, None
    if "@" in ref:
        name, alias = ref.split("@", 1)
    elif "/" in ref:
        name, version = ref.rsplit("/", 1)
    client = client_for(tracking_uri)
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models())
        raise ModelNotFoundError(f"no registered model {name!r} in {tracking_uri}; registered: {known or 'none'}") from None
    aliases = dict(registered.aliases or {})
    if alias is not None:
        if alias not in aliases:
            shown = ", ".join(f"{a} -> version {v}" for a, v in sorted(aliases.items())) or "none"
            raise ModelNotFoundError(f"model {name!r} has no alias {alias!r} (its aliases: {shown})")
        return str(aliases[alias])
    if version is not None and version != "latest":
        try:
            client.get_model_version(name, version)
        except MlflowException:
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}") from None
    return version


def load_model(model_uri: str, tracking_uri: str | None = None):
    """``mlflow.pyfunc.load_model(model_uri)`` against ``tracking_uri`` (default: the project's store)."""
    import mlflow

    from steps.tracking import default_tracking_uri

    tracking_uri = tracking_uri or default_tracking_uri()
    check_model_uri(tracking_uri, model_uri)
    with use_tracking_uri(tracking_uri), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.pyfunc.load_model(model_uri)


def download_pipeline(tracking_uri: str, model_uri: str, dst: str | os.PathLike) -> Path | None:
    """The pipeline directory inside a registered fill model (e.g. the champion's, to benchmark it as the
    ``champion`` system), copied to ``dst``; None when the URI names no model (no champion yet)."""
    import mlflow

    try:
        check_model_uri(tracking_uri, model_uri)
    except ModelNotFoundError:
        return None
    with use_tracking_uri(tracking_uri), tempfile.TemporaryDirectory(prefix="onereward-dl-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        src = next((p.parent for p in local.rglob("model_index.json")), None)
        if src is None:
            raise FileNotFoundError(f"{model_uri}: no pipeline (model_index.json) inside the model")
        from steps.io import atomic_dir

        with atomic_dir(dst) as out:
            shutil.copytree(src, out, dirs_exist_ok=True)
    return Path(dst)
