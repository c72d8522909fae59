"""Recipe: the foundations of a built-from-config profile -- the pretrained base fill model and judge that the
pipeline then fine-tunes, as the paper fine-tunes FLUX.1-Fill-dev and Qwen2.5-VL-7B that others pretrained.

    make foundations                                              # tiny, both models, hours of CPU
    python -m steps.foundations --profile tiny --set part=base --set threads=1    # one model per core
    python -m steps.foundations --profile tiny --set part=judge --set threads=1
    python -m steps.foundations --profile tiny --set part=judge2 --set threads=1  # after judge
    python -m steps.foundations --profile smoke --set out_dir=/tmp/f               # seconds (tests)

Both parts train on a pool of world conditions at indices no train, validation or benchmark sample has
(steps.training.draws.FOUNDATION_INDEX_OFFSET), checkpoint every ``checkpoint_every`` steps under
``<out_dir>/checkpoints/<part>/`` and resume from there when run again (exactly, on CPU). When a part
finishes, its model is written to ``<out_dir>/<part>/`` (safetensors) and ``<out_dir>/provenance.json``
records the command, the commit, the steps, the wall time, the final metrics and the sha256 of every file.
The `tiny` profile's pipeline loads ``foundations/tiny/{base,judge}`` and checks those hashes
(`verify_foundation`): a missing or altered file is an error that names it and this command.

- base: steps.foundations.base_pretrain.pretrain (VAE, then rectified flow matching on all three tasks) on the world pool;
- judge: steps.foundations.judge_pretrain.pretrain_judge -- the judge's own comparison question on pairs whose answer the
  world's scores give, adversarial perturbations and hard negatives (see that module);
- judge2: the judge's second stage, started from the first (configs/<profile>.yaml ``foundation_judge2``): it is shown the masked source as
  a third image (where the edit is, what must be kept) and whole images flattened the way RL flattened them;
  it replaces ``<out_dir>/judge`` and its provenance keeps the first stage under ``earlier_stages``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from steps.config import Layer, Profiled, field, parse_cli, resolve
from steps.fields import CheckpointCadence, Seeded, Threaded
from steps.paths import TINY, ArtifactPaths

PARTS = ("base", "judge", "judge2")
POOL_FILE = "candidate_pool.npz"  # base-model candidates of pool conditions (part=pool), for the judge's stage 2
PROVENANCE = "provenance.json"
REBUILD = "make foundations  (or: python -m steps.foundations --profile {profile} --set part={part})"


@dataclass(frozen=True)
class FoundationsConfig(Profiled, CheckpointCadence, Seeded, Threaded):
    SECTION = "foundations"  # of configs/<profile>.yaml

    profile: str = field("tiny", "smoke | tiny (flux starts from FLUX.1-Fill-dev and Qwen2.5-VL instead)")
    part: str = field("all", "base | judge | judge2 (the judge's second stage, after judge) | all | pool "
                             "(base-model candidates of pool conditions, after base)")
    out_dir: str = field(str(TINY.foundations), "models, provenance.json and checkpoints/ go here")
    base_overrides: dict = field({}, "BaseConfig fields that override the profile's foundation defaults")
    judge_overrides: dict = field({}, "JudgePretrainConfig fields that override the profile's foundation defaults")
    pool_conditions: int = field(3000, "part=pool: pool conditions that get 4 base-model candidates each")
    pool_tasks: tuple[str, ...] = field((), "part=pool: only the pool conditions of these tasks among the first "
                                            "pool_conditions get candidates (empty = all tasks)")

    def __post_init__(self):
        if self.profile not in ("smoke", "tiny"):
            raise ValueError(f"foundations are for smoke/tiny, got {self.profile!r}")
        if self.part not in (*PARTS, "all", "pool"):
            raise ValueError(f"part must be one of {PARTS}, 'all' or 'pool', got {self.part!r}")
        from steps.vocabulary import TASKS

        if unknown := [t for t in self.pool_tasks if t not in TASKS]:
            raise ValueError(f"pool_tasks: unknown task(s) {unknown}; expected some of {TASKS}")

    def parts(self) -> tuple[str, ...]:
        return PARTS if self.part == "all" else (self.part,)

    @classmethod
    def path_defaults(cls, paths, **context: Any) -> dict[str, Any]:
        return dict(out_dir=str(paths.foundations))


# The foundation budget per profile lives in configs/<profile>.yaml: `foundation_base` over `base`, and
# `foundation_judge` (both stages) then `foundation_judge2` (the second stage) over `judge_pretrain`. `tiny` is
# sized for hours of one CPU core per part (BENCHMARKS.md).
BASE_SECTIONS = ("base", "foundation_base")
JUDGE_SECTIONS = ("judge_pretrain", "foundation_judge")
JUDGE2_SECTIONS = (*JUDGE_SECTIONS, "foundation_judge2")


def base_config(cfg: FoundationsConfig):
    from steps.foundations.base_pretrain import BaseConfig

    values = dict(checkpoint_every=cfg.checkpoint_every, seed=cfg.seed, threads=cfg.threads,
                  out_dir=str(Path(cfg.out_dir) / "base"), checkpoint_dir=str(Path(cfg.out_dir) / "checkpoints" / "base"))
    return resolve(BaseConfig, cfg.profile, layers=[Layer("the foundation job", values)],
                   overrides=cfg.base_overrides, sections=BASE_SECTIONS, source="base_overrides")


def judge_config(cfg: FoundationsConfig, stage: int = 1):
    """The judge foundation's config; a later stage (stage 2, or judge_overrides with init_dir) starts from
    ``<out_dir>/judge`` and checkpoints elsewhere."""
    from steps.foundations.judge_pretrain import JudgePretrainConfig

    values = dict(checkpoint_every=cfg.checkpoint_every, seed=cfg.seed, threads=cfg.threads,
                  out_dir=str(Path(cfg.out_dir) / "judge"),
                  checkpoint_dir=str(Path(cfg.out_dir) / "checkpoints" / "judge"))
    if stage == 2:
        values.update(init_dir=str(Path(cfg.out_dir) / "judge"),
                      checkpoint_dir=str(Path(cfg.out_dir) / "checkpoints" / "judge2"))
    elif cfg.judge_overrides.get("init_dir"):
        values["checkpoint_dir"] += "_stage2"
    return resolve(JudgePretrainConfig, cfg.profile, layers=[Layer("the foundation job", values)],
                   overrides=cfg.judge_overrides, sections=JUDGE2_SECTIONS if stage == 2 else JUDGE_SECTIONS,
                   source="judge_overrides")


def file_hashes(folder: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path (sorted)."""
    root = Path(folder)
    out = {}
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class FoundationError(FileNotFoundError):
    """A foundation model that is missing or does not match its provenance record."""


def verify_foundation(root: str | os.PathLike, part: str, profile: str = "tiny") -> Path:
    """``<root>/<part>`` after checking every file against ``<root>/provenance.json``; else a clear error."""
    root = Path(root)
    rebuild = REBUILD.format(profile=profile, part=part)
    record_path = root / PROVENANCE
    if not record_path.is_file():
        raise FoundationError(f"{record_path}: missing -- the {profile} foundations are not there; rebuild: {rebuild}")
    record = json.loads(record_path.read_text()).get(part)
    if not record:
        raise FoundationError(f"{record_path}: no entry for {part!r}; rebuild: {rebuild}")
    folder = root / part
    expected: dict[str, str] = record["sha256"]
    for rel, digest in expected.items():
        path = folder / rel
        if not path.is_file():
            raise FoundationError(f"{path}: missing (listed in {record_path}); rebuild: {rebuild}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise FoundationError(f"{path}: altered (sha256 differs from {record_path}); rebuild: {rebuild}")
    extra = sorted(set(file_hashes(folder)) - set(expected))
    if extra:
        raise FoundationError(f"{folder}: file(s) not in {record_path}: {extra}; rebuild: {rebuild}")
    return folder


FOUNDATION_PROFILES = ("tiny",)  # profiles whose pipeline loads shipped foundations (smoke builds in seconds)
REPO_ROOT = Path(__file__).resolve().parents[2]


def foundations_root(profile: str, root: str | os.PathLike = REPO_ROOT) -> Path:
    return ArtifactPaths(Path(root), profile).foundations


def install_foundation(profile: str, part: str, dest: str | os.PathLike,
                       root: str | os.PathLike = REPO_ROOT) -> dict[str, Any]:
    """Check ``foundations/<profile>/<part>`` against its provenance and copy it to ``dest`` atomically (the
    pipeline's working copy, like a model directory read from disk in flux); returns the provenance record."""
    import shutil

    from steps.io import atomic_dir

    source = verify_foundation(foundations_root(profile, root), part, profile)
    with atomic_dir(dest) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
    record = json.loads((foundations_root(profile, root) / PROVENANCE).read_text())[part]
    return dict(record, path=str(source), report_dir=str(source.parent / f"{part}_report"))


START_COMMIT: dict[str, str] = {}  # the commit a part's training started from (the code that trained it)


def write_provenance(cfg: FoundationsConfig, part: str, result: dict[str, Any], seconds: float) -> dict[str, Any]:
    from steps.io import atomic_write_json
    from steps.tracking import git_commit

    root = Path(cfg.out_dir)
    path = root / PROVENANCE
    record = json.loads(path.read_text()) if path.is_file() else {}
    earlier = []
    if result["config"].get("init_dir") and part in record:  # a later stage that started from the earlier one
        old = record[part]
        earlier = old.get("earlier_stages", []) + [{k: v for k, v in old.items()
                                                    if k not in ("sha256", "earlier_stages")}]
    record[part] = {
        "command": " ".join(shlex.quote(a) for a in ["python", "-m", "steps.foundations", *sys.argv[1:]]),
        "commit": START_COMMIT.get(part) or git_commit(),
        "commit_when_written": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": _machine(),
        "config": result["config"],
        "wall_seconds_this_process": round(seconds, 1),
        "wall_seconds_total": round(result.get("seconds_including_resumed", seconds), 1),
        "metrics": result["metrics"],
        "sha256": file_hashes(root / part),
        **({"earlier_stages": earlier} if earlier else {}),
    }
    atomic_write_json(path, record)
    return record[part]


def _machine() -> str:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), torch {torch.__version__} with {torch.get_num_threads()} thread(s)"


def _tracker_log(profile: str, run_name: str, run_id_file: Path):
    """(log(metrics, step), finish(metrics, artifacts)) on one MLflow run that survives a resume."""
    from steps.tracking import Tracker

    tracker = Tracker()
    run_id = run_id_file.read_text().strip() if run_id_file.is_file() else None
    if run_id is None:
        run_id = tracker.start_run(profile, run_name, tags={"foundation": run_name})
        run_id_file.parent.mkdir(parents=True, exist_ok=True)
        run_id_file.write_text(run_id + "\n")
    else:
        tracker.client.update_run(run_id, status="RUNNING")

    def finish(metrics: dict[str, float], artifacts: list[str], params: dict[str, Any]) -> None:
        tracker.log_params(run_id, params)
        tracker.log_metrics(run_id, metrics)
        for a in artifacts:
            tracker.log_artifact(run_id, a, "report")
        tracker.end_run(run_id)

    return tracker.metrics_logger(run_id), finish, run_id


def run_base(cfg: FoundationsConfig) -> dict[str, Any]:
    from steps.foundations.base_pretrain import pretrain
    from steps.tracking import git_commit

    START_COMMIT["base"] = git_commit()
    bcfg = base_config(cfg)
    log, finish, run_id = _tracker_log(cfg.profile, "foundation_base", Path(bcfg.checkpoint_dir) / "mlflow_run_id")
    t0 = time.perf_counter()
    result = pretrain(bcfg, log=log)
    metrics = {f"world_score/base/{k}": v for k, v in result["quality"].items()}
    metrics.update({f"world_score/telea/{k}": v for k, v in result["telea_quality"].items()})
    metrics.update(vae_final_loss=result["vae_final_loss"], final_loss=result["final_loss"])
    result["metrics"] = metrics
    finish(metrics, [*result["grids"], result["loss_plot"]], {k: v for k, v in asdict(bcfg).items()})
    record = write_provenance(cfg, "base", result, time.perf_counter() - t0)
    return {"part": "base", "mlflow_run_id": run_id, "model_dir": result["model_dir"], **record}


def run_judge(cfg: FoundationsConfig, stage: int = 1) -> dict[str, Any]:
    from steps.foundations.judge_pretrain import pretrain_judge
    from steps.tracking import git_commit

    jcfg = judge_config(cfg, stage)
    done = json.loads((Path(cfg.out_dir) / PROVENANCE).read_text()).get("judge", {}) \
        if (Path(cfg.out_dir) / PROVENANCE).is_file() else {}
    stages = [*done.get("earlier_stages", []), done] if done else []
    if not cfg.judge_overrides.get("init_dir") and any(
            (2 if s.get("config", {}).get("init_dir") else 1) == stage
            for s in stages):  # this stage already finished (rerunning `all`): keep what is there
        print(f"judge stage {stage}: already in {Path(cfg.out_dir) / PROVENANCE}; kept", flush=True)
        return {"part": "judge", "model_dir": jcfg.out_dir, **done}
    if stage == 2:
        verify_foundation(cfg.out_dir, "judge", cfg.profile)  # the first stage, finished and unaltered
    START_COMMIT["judge"] = git_commit()
    name = "foundation_judge" if stage == 1 else "foundation_judge_stage2"
    log, finish, run_id = _tracker_log(cfg.profile, name, Path(jcfg.checkpoint_dir) / "mlflow_run_id")
    t0 = time.perf_counter()
    result = pretrain_judge(jcfg, log=log)
    finish(result["metrics"], result.get("artifacts", []), {k: v for k, v in asdict(jcfg).items()})
    record = write_provenance(cfg, "judge", result, time.perf_counter() - t0)
    return {"part": "judge", "mlflow_run_id": run_id, "model_dir": result["out_dir"], **record}


def candidate_pool(base_dir: str | os.PathLike, out: str | os.PathLike, size: int, n_conditions: int,
                   n_candidates: int = 4, seed: int = 0, batch: int = 64, tasks: tuple[str, ...] = ()) -> Path:
    """Base-model candidates of the first ``n_conditions`` pool conditions (only those of ``tasks`` when given),
    sampled as steps.judge.candidates samples preference candidates (randomised steps, guidance, strength, seed):
    an npz of ids and images, written atomically. A judge foundation stage compares them (labelled by the world)."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from steps.judge.candidates import CandidatesConfig, draw_sampling
    from steps.models.denoise import decode, denoise, encode_conditions
    from steps.models.policy import load_fill_pipeline
    from steps.training.draws import world_pool

    pipe = load_fill_pipeline(str(base_dir))
    samples = [s for s in world_pool(size, n_conditions) if not tasks or s.task in tasks]
    rng = np.random.default_rng([seed, 17])
    ccfg = CandidatesConfig()
    ids, images = [], []
    for i in tqdm(range(0, len(samples), batch), desc="candidate pool", unit="batch", mininterval=5):
        chunk = samples[i:i + batch]
        with torch.no_grad():
            cond = encode_conditions(pipe, np.stack([s.image for s in chunk]), np.stack([s.mask for s in chunk]),
                                     [s.prompt for s in chunk], with_image_latents=True)
            for _ in range(n_candidates):
                sampling = draw_sampling(rng, ccfg)
                lat = denoise(pipe, cond, sampling["num_steps"], sampling["guidance"],
                              generator=torch.Generator().manual_seed(sampling["seed"]), strength=sampling["strength"])
                pixels = decode(pipe, lat, cond.height, cond.width).permute(0, 2, 3, 1).numpy() * 255
                ids += [s.id for s in chunk]
                images.append(pixels.round().astype(np.uint8))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez_compressed(tmp, ids=np.array(ids), images=np.concatenate(images))
    os.replace(tmp, out)
    return out


def build(cfg: FoundationsConfig) -> list[dict[str, Any]]:
    from steps.runtime import setup

    setup(threads=cfg.threads)
    if cfg.part == "pool":
        return [run_pool(cfg)]
    return [run_base(cfg) if part == "base" else run_judge(cfg, 2 if part == "judge2" else 1)
            for part in cfg.parts()]


def run_pool(cfg: FoundationsConfig) -> dict[str, Any]:
    """Candidates of the first ``pool_conditions`` pool conditions from the (finished) base foundation."""
    from steps.models.policy import spec_for

    root = Path(cfg.out_dir)
    base = verify_foundation(root, "base", cfg.profile)
    t0 = time.perf_counter()
    path = candidate_pool(base, root / "checkpoints" / POOL_FILE, spec_for(cfg.profile).image_size,
                          cfg.pool_conditions, seed=cfg.seed, tasks=tuple(cfg.pool_tasks))
    record = {"part": "pool", "model_dir": str(path), "wall_seconds_total": round(time.perf_counter() - t0, 1),
              "metrics": {"conditions": cfg.pool_conditions, "tasks": list(cfg.pool_tasks) or "all"},
              "command": " ".join(shlex.quote(a) for a in ["python", "-m", "steps.foundations", *sys.argv[1:]]),
              "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    from steps.io import atomic_write_json

    prov = json.loads((root / PROVENANCE).read_text())
    prov["candidate_pool"] = {k: v for k, v in record.items() if k != "part"}
    atomic_write_json(root / PROVENANCE, prov)
    return record


def main(argv: list[str] | None = None) -> None:
    cfg, _ = parse_cli(FoundationsConfig, __doc__, argv)
    for record in build(cfg):
        print(json.dumps({k: record[k] for k in ("part", "model_dir", "wall_seconds_total", "metrics")}, indent=2))


if __name__ == "__main__":
    main()
