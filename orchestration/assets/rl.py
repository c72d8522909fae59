"""The RL asset: OneReward training of the fill model against the judge, as its own process (Pipes)."""

import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg

from orchestration.assets.datasets import TRAIN, VALIDATION
from orchestration.assets.evaluation import POLICY
from orchestration.assets.judge import AGREEMENT
from orchestration.assets.models import BASE_MODEL, image_md
from orchestration.config import config_from_dataclass, overrides
from orchestration.resources import MlflowResource, ProjectResource
from steps.paths import PolicyLayout
from steps.rl.config import RESUME_MUST_MATCH, RLConfig

RL_GROUP = "rl"
_RLFields = config_from_dataclass(RLConfig, "RLFields", exclude=(
    "profile", "base_dir", "judge_dir", "train_dir", "eval_dir", "out_dir", "reference"))


class PolicyConfig(_RLFields):
    variants: str = "both"  # static | dynamic | both
    num_processes: int = 1  # accelerate processes (GPUs); 1 on CPU


def rl_config(project: ProjectResource, config: PolicyConfig | None, variant: str) -> RLConfig:
    """One variant's step config: the profile's (configs/<profile>.yaml), the run config's fields over it."""
    fields = {k: v for k, v in overrides(config).items() if k not in ("variants", "num_processes")}
    return RLConfig.for_profile(project.profile, project.root_path, reference=variant, **fields)


def launch_command(num_processes: int) -> list[str]:
    """`accelerate launch` of the Pipes child; CPU-only machines get --cpu."""
    import torch

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
           "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no"]
    if not torch.cuda.is_available():
        cmd.append("--cpu")
    elif num_processes > 1:
        cmd.append("--multi_gpu")
    return [*cmd, "-m", "orchestration.pipes_rl"]


def discard_stale_checkpoints(cfg: RLConfig) -> bool:
    """Resume only a run of the SAME inputs (crash recovery); new base/judge/recipe -> start afresh.

    The recipe's checkpoints folder (steps.paths.PolicyLayout) carries a fingerprint of the base model, the
    judge and the config fields the recipe itself refuses to resume across (steps.rl.config.RESUME_MUST_MATCH);
    when it differs (or is missing), old checkpoints are removed. Other fields (``steps``, cadences) may
    change between a run and its resumption, as the recipe allows. Returns True for a fresh start.
    """
    import hashlib
    import json

    from steps.hashing import dir_digest

    ckpts = PolicyLayout(Path(cfg.out_dir), cfg.reference).checkpoints
    base = dir_digest(cfg.base_dir) if cfg.base_dir and Path(cfg.base_dir).exists() else cfg.base_dir
    params = cfg.params()
    recipe = {k: params[k] for k in RESUME_MUST_MATCH}
    payload = json.dumps({"base": base, "judge": dir_digest(cfg.judge_dir), "config": recipe}, sort_keys=True,
                         default=str)
    fingerprint = hashlib.sha256(payload.encode()).hexdigest()
    stamp = ckpts / "INPUTS_FINGERPRINT"
    if stamp.exists() and stamp.read_text().strip() == fingerprint:
        return False
    shutil.rmtree(ckpts, ignore_errors=True)
    ckpts.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint + "\n")
    return True


@dg.asset(key=POLICY, group_name=RL_GROUP, deps=[BASE_MODEL, AGREEMENT, TRAIN, VALIDATION],
          pool="policy")
def policy(context: dg.AssetExecutionContext, config: PolicyConfig, project: ProjectResource,
           mlflow: MlflowResource, pipes_subprocess_client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
    """The RL-trained fill model(s): OneReward with the static reference (Algorithm 1, frozen base) and/or
    the dynamic one (Algorithm 2, EMA policy). Runs only after the judge's agreement gate passed; each
    variant is `accelerate launch`ed as its own process through Dagster Pipes. Its pool `policy` (every profile)
    keeps two runs out of the fixed checkpoints folder at once: the second waits, then resumes or starts afresh."""
    from steps.hashing import dir_digest

    if config.variants not in ("static", "dynamic", "both"):
        raise dg.Failure(f"variants must be static, dynamic or both, got {config.variants!r}")
    variants = ["static", "dynamic"] if config.variants == "both" else [config.variants]
    metadata: dict = {}

    def run_variant(variant: str) -> dict:
        cfg = rl_config(project, config, variant)
        layout = PolicyLayout(Path(cfg.out_dir), variant)
        out = str(layout.model)
        fresh = discard_stale_checkpoints(cfg)
        context.log.info(f"{variant}: {'fresh start' if fresh else 'resuming from its last checkpoint'}")
        tracker, run_id = mlflow.start_run(context, project.profile, f"policy/{variant}")
        tracker.log_params(run_id, cfg.params())
        tracker.set_tags(run_id, {"reference": variant, **project.gate_tags()})
        try:
            invocation = pipes_subprocess_client.run(
                command=launch_command(config.num_processes), context=context,
                extras={"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
                        "mlflow_run_id": run_id, "tracking_uri": tracker.tracking_uri,
                        "root": str(project.root_path)},
                env={**os.environ, "ONEREWARD_PROFILE": project.profile})
        except BaseException:
            tracker.end_run(run_id, "FAILED")
            raise
        messages = invocation.get_custom_messages()
        summary = messages[-1] if messages else {}
        tracker.end_run(run_id)
        found = {f"{variant}_path": dg.MetadataValue.path(out), f"{variant}_mlflow_run_id": run_id,
                 f"{variant}_sha256": dir_digest(out), f"{variant}_summary": dg.MetadataValue.json(summary)}
        release = summary.get("release") or {}
        if release:  # which weights were released, chosen on the validation split (never the benchmark)
            found[f"{variant}_released_step"] = int(release["step"])
            found[f"{variant}_release"] = release["note"]
        best = summary.get("best_heldout") or {}
        if "step" in best:  # the guard's best held-out evaluation (0: no RL step beat the base)
            found[f"{variant}_best_heldout_step"] = int(best["step"])
        # the recipe writes its grids to <variant>_report/grids/step_<n>.png (steps.rl.train.OneRewardRecipe.train)
        grids = sorted((layout.report / "grids").glob("step_*.png"))
        if grids:
            found[f"{variant}_samples"] = dg.MetadataValue.md(image_md(grids[-1], 560))
        return found

    # CPU profiles: the variants run side by side (one core each); on GPUs one after the other.
    parallel = len(variants) if project.profile != "flux" else 1
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for found in pool.map(run_variant, variants):
            metadata.update(found)
    for stale in {"static", "dynamic"} - set(variants):  # a variant not trained now must not be benchmarked
        shutil.rmtree(project.paths.policy(stale), ignore_errors=True)
    return dg.MaterializeResult(metadata=metadata)
