"""The OneReward RL recipe on the smoke profile: gradient path, DDP, exact resume, learning, LoRA, guard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from steps.rl.config import RLConfig
from steps.rl.rollout import draw_step, rollout
from steps.rl.train import OneRewardRecipe, RewardHackingError, main, train
from steps.training.checkpoints import latest_checkpoint

REPO = Path(__file__).resolve().parents[3]
FILL_ONLY = dict(fill_prob=1.0, extend_prob=0.0, removal_prob=0.0)
QUIET = dict(guard_every=0, sample_every=0, checkpoint_every=0)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """Smoke world, random-init smoke base pipeline and judge, saved as the real ones are."""
    from steps.data.datasets import DatasetConfig, build_world
    from steps.models.judge import Judge
    from steps.models.judge_spec import spec_for as judge_spec
    from steps.models.policy import build_tiny_fill_pipeline, save_pipeline, spec_for
    from steps.preferences import QUERY_TEMPLATE

    root = tmp_path_factory.mktemp("rl_smoke")
    build_world(DatasetConfig(size=32, n_train=48, n_benchmark_per_task=3, n_validation_per_task=3), root / "data")
    save_pipeline(build_tiny_fill_pipeline(spec_for("smoke"), seed=0), root / "base", spec_for("smoke"))
    Judge.build(judge_spec("smoke"), seed=0, corpus=[QUERY_TEMPLATE]).save(root / "judge")
    return root


def config(smoke: Path, out: Path, **overrides) -> RLConfig:
    paths = dict(
        base_dir=str(smoke / "base"),
        judge_dir=str(smoke / "judge"),
        train_dir=str(smoke / "data/train"),
        eval_dir=str(smoke / "data/validation"),
        out_dir=str(out),
    )
    return RLConfig.for_profile("smoke", **{**paths, **overrides})


def transformer_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights = {}
    for f in sorted((model_dir / "transformer").glob("*.safetensors")):
        weights.update(load_file(str(f)))
    return weights


def test_config_defaults_and_validation():
    tiny = RLConfig.for_profile("tiny", "/r")
    assert tiny.t_range == (4, 7) and tiny.lam == 0.8 and not tiny.paste_back and tiny.reference == "static"
    assert tiny.task_probs == {"fill": 0.5, "extend": 0.25, "removal": 0.25}
    assert tiny.base_dir == "/r/outputs/tiny/base_model" and tiny.params()["t1"] == 4
    assert tiny.lr == 3e-5 and tiny.judge_sees_source  # measured (ABLATIONS section 1); the tiny judge sees it
    flux = RLConfig.for_profile("flux")
    assert flux.denoise_steps == 28 and flux.t_range == (14, 27) and flux.lora_rank > 0
    assert flux.mixed_precision == "bf16" and flux.guard_signal == "kept_region"
    for bad in (
        dict(reference="both"),
        dict(t1=6, t2=5),
        dict(t2=8),
        dict(fill_prob=0.9),
        dict(lam=0.0),
        dict(ema_tau=1.0),
        dict(guard_signal="psnr"),
    ):
        with pytest.raises(ValueError, match="RLConfig: invalid"):
            RLConfig.for_profile("tiny", **bad)


def test_step_draws_are_pure_and_split_batches_across_ranks():
    args = dict(
        seed=3,
        step=11,
        task_probs={"fill": 0.5, "extend": 0.25, "removal": 0.25},
        task_sizes={"fill": 40, "extend": 20, "removal": 20},
        batch_size=4,
        t_range=(2, 3),
    )
    a, again, other = draw_step(rank=0, **args), draw_step(rank=0, **args), draw_step(rank=1, **args)
    assert (a.task, a.t_index, a.noise_seeds) == (again.task, again.t_index, again.noise_seeds)
    assert np.array_equal(a.indices[0], again.indices[0])
    assert (a.task, a.t_index) == (other.task, other.t_index)  # same work on every rank
    assert not np.array_equal(a.indices[0], other.indices[0]) and a.noise_seeds != other.noise_seeds
    draws = [draw_step(rank=0, **{**args, "step": s}) for s in range(400)]
    assert abs([d.task for d in draws].count("fill") / 400 - 0.5) < 0.08
    assert {d.t_index for d in draws} == {2, 3}


def test_gradients_flow_only_through_the_last_step(smoke, tmp_path):
    recipe = OneRewardRecipe(config(smoke, tmp_path, **QUIET)).setup()
    cond, samples = recipe.bank.batch("fill", [0, 1])
    calls = []
    hook = recipe.transformer.register_forward_hook(lambda m, i, out: calls.append(out[0].requires_grad))
    policy_images, reference_images = rollout(
        recipe.pipe,
        cond,
        recipe.policy_forward,
        recipe.reference,
        num_steps=4,
        t_index=3,
        guidance=30.0,
        noise_seeds=(1, 2),
    )
    hook.remove()
    # reference: 4 steps without grad (frozen base copy, not hooked); policy: 3 without grad, the 4th with.
    assert calls == [False, False, False, True]
    assert policy_images.requires_grad and not reference_images.requires_grad
    from steps.rl.reward import onereward_loss

    loss, _ = onereward_loss(
        recipe.judge, policy_images, reference_images, "fill", [s.prompt for s in samples], lam=0.8
    )
    loss.backward()
    grads = [p.grad for p in recipe.transformer.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    frozen = [
        recipe.pipe.vae,
        recipe.pipe.text_encoder,
        recipe.pipe.text_encoder_2,
        recipe.judge.model,
        recipe.base_reference,
    ]
    assert all(p.grad is None and not p.requires_grad for m in frozen for p in m.parameters())


@pytest.mark.parametrize("show_source", [False, True])
def test_pair_judge_matches_the_judge_row_by_row(smoke, show_source):
    """PairJudge (each image encoded once, queries tokenised once) = Judge.p_yes on every row: loss, stats,
    gradients to the policy pixels, and the language model's token ids."""
    from steps.models.judge import Judge
    from steps.preferences import judge_query
    from steps.rl.reward import PairJudge, onereward_loss

    judge = Judge.load(smoke / "judge").freeze()
    pair = PairJudge(judge)
    gen = torch.Generator().manual_seed(0)
    policy = torch.rand(3, 3, 32, 32, generator=gen).requires_grad_(True)
    reference, source = torch.rand(3, 3, 32, 32, generator=gen), torch.rand(3, 3, 32, 32, generator=gen)
    prompts = ["a red circle", 'the word "TREE" in red', "high-definition, perfect composition"]
    for task in ("fill", "extend", "removal"):
        results = []
        for scorer in (judge, pair, pair):  # the second PairJudge call reads its token cache
            loss, stats = onereward_loss(
                scorer, policy, reference, task, prompts, 0.8, source if show_source else None
            )
            (grad,) = torch.autograd.grad(loss, policy)
            results.append((loss.detach(), stats, grad))
        for loss, stats, grad in results[1:]:
            torch.testing.assert_close(loss, results[0][0], atol=1e-6, rtol=0)
            torch.testing.assert_close(stats, results[0][1], atol=1e-5, rtol=0)
            torch.testing.assert_close(grad, results[0][2], atol=1e-7, rtol=1e-4)
    assert pair.token_cache
    queries = [judge_query("fill", "consistency", p) for p in prompts]
    groups = [policy, reference] + ([source] if show_source else [])
    expected = judge.encode_images(groups, queries)
    per_image = [judge.tokens_per_image(32)] * len(groups)
    ids, mask = pair.encode_text(queries, [tuple(per_image)] * len(queries))
    assert torch.equal(ids, expected["input_ids"]) and torch.equal(mask, expected["attention_mask"])


def test_smoke_run_raises_the_judge_reward(smoke, tmp_path):
    # Fill only (the same four dimensions every step), a large lr; a random judge moves little but steadily.
    logged = []
    train(config(smoke, tmp_path, steps=16, lr=3e-3, **FILL_ONLY, **QUIET), log=lambda m, s: logged.append(m))
    rewards = [np.mean([v for k, v in m.items() if k.startswith("reward/fill/")]) for m in logged]
    assert len(rewards) == 16
    assert np.mean(rewards[-4:]) > np.mean(rewards[:4]) + 1e-3
    assert all(0.0 < r < 1.0 for r in rewards)
    assert {"lr", "grad_norm", "step_seconds", "loss/fill/consistency"} <= set(logged[0])


def test_kill_and_resume_gives_the_uninterrupted_weights(smoke, tmp_path):
    cfg = dict(steps=6, checkpoint_every=3, guard_every=3, sample_every=0)
    full = train(config(smoke, tmp_path / "full", **cfg))

    class Killed(Exception):
        pass

    def die_at_5(metrics, step):
        if step == 5 and "loss" in metrics:
            raise Killed

    with pytest.raises(Killed):
        train(config(smoke, tmp_path / "killed", **cfg), log=die_at_5)
    assert latest_checkpoint(tmp_path / "killed/static_checkpoints").name == "step_0000003"
    steps_seen = []
    resumed = train(config(smoke, tmp_path / "killed", **cfg), log=lambda m, s: steps_seen.append(s))
    assert min(s for s in steps_seen) == 4  # continued after the checkpoint, not from scratch
    a, b = transformer_weights(tmp_path / "full/static"), transformer_weights(tmp_path / "killed/static")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0
    assert full["final_rewards"] == resumed["final_rewards"]
    assert full["guard"]["history"] == resumed["guard"]["history"]
    from safetensors.torch import load_file

    for name in ("policy", "ema"):
        x = load_file(str(tmp_path / f"full/static_checkpoints/step_0000006/{name}.safetensors"))
        y = load_file(str(tmp_path / f"killed/static_checkpoints/step_0000006/{name}.safetensors"))
        assert all(torch.equal(x[k], y[k]) for k in x)
    # one folder per checkpoint, the newest keep_checkpoints=2 kept, no temporary folders left behind
    assert sorted(p.name for p in (tmp_path / "killed/static_checkpoints").iterdir()) == [
        "step_0000003",
        "step_0000006",
    ]
    torch.load(tmp_path / "full/static_checkpoints/step_0000006/optimizer.pt", weights_only=True)


def test_resume_refuses_a_changed_algorithm(smoke, tmp_path):
    train(config(smoke, tmp_path, steps=2, **QUIET))
    with pytest.raises(ValueError, match="cannot resume.*lam"):
        train(config(smoke, tmp_path, steps=3, lam=0.5, **QUIET))


def test_static_and_dynamic_run_and_release_loadable_pipelines(smoke, tmp_path):
    from steps.models.denoise import generate
    from steps.models.policy import load_fill_pipeline

    grids = []
    static = train(config(smoke, tmp_path, steps=3, sample_every=3, guard_every=3), log_artifact=grids.append)
    # the CLI, as `accelerate launch -m steps.rl.train` runs it
    cfg_file = tmp_path / "rl.yaml"
    cfg_file.write_text(
        yaml.safe_dump(
            {k: v for k, v in config(smoke, tmp_path, steps=3).params().items() if k not in ("t1", "t2")}
        )
    )
    main(["--config", str(cfg_file), "--set", "reference=dynamic", "--set", "guard_every=0"])
    dynamic = json.loads((tmp_path / "dynamic_report/summary.json").read_text())
    for summary in (static, dynamic):
        assert summary["status"] == "finished" and summary["released_weights"] == "EMA"
        pipe = load_fill_pipeline(summary["model_dir"])
        img, mask = np.zeros((1, 32, 32, 3), np.uint8), np.full((1, 32, 32), 255, np.uint8)
        assert generate(pipe, img, mask, ["a red circle"], num_steps=2).shape == (1, 3, 32, 32)
    assert len(grids) == 1 and grids[0].suffix == ".png" and grids[0].is_file()
    assert [h["step"] for h in static["guard"]["history"]] == [0, 3]
    assert {k.split("/")[0] for k in static["guard"]["history"][1]["heldout"]} == {
        "fill",
        "extend",
        "removal",
    }


def test_dynamic_reference_is_the_ema_policy(smoke, tmp_path):
    recipe = OneRewardRecipe(config(smoke, tmp_path, reference="dynamic", steps=2, **QUIET)).setup()
    recipe.train_step(1)
    policy = {n: p.detach().clone() for n, p in recipe.params.items()}
    assert any(not torch.equal(policy[n], recipe.ema.shadow[n]) for n in policy)
    assert recipe.base_reference is None  # Algorithm 2 keeps no frozen base copy
    with recipe.reference():
        assert all(torch.equal(p, recipe.ema.shadow[n]) for n, p in recipe.params.items())
    assert all(torch.equal(p, policy[n]) for n, p in recipe.params.items())


def test_lora_static_reference_is_the_adapter_disabled_base(smoke, tmp_path):
    from steps.models.denoise import denoise
    from steps.models.policy import load_fill_pipeline

    recipe = OneRewardRecipe(config(smoke, tmp_path, lora_rank=4, steps=2, **QUIET)).setup()
    assert recipe.base_reference is None  # no second copy of the transformer
    assert recipe.params and all("lora_" in n for n in recipe.params)
    for step in (1, 2):
        recipe.train_step(step)
    assert any(float(p.detach().abs().sum()) > 0 for n, p in recipe.params.items() if "lora_B" in n)
    base = load_fill_pipeline(smoke / "base")
    cond, _ = recipe.bank.batch("removal", [0, 1])
    noise = torch.randn(2, cond.masked_image_latents.shape[1], 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with recipe.reference() as ref:
            ours = denoise(recipe.pipe, cond, 4, noise=noise, transformer=ref)
        expected = denoise(base, cond, 4, noise=noise)
        trained = denoise(recipe.pipe, cond, 4, noise=noise, transformer=recipe.policy_forward)
    assert torch.equal(ours, expected) and not torch.equal(trained, expected)
    assert all(p.requires_grad for p in recipe.params.values())  # adapters re-enabled after the reference
    summary = recipe.train()
    assert summary["released_weights"] == "EMA (LoRA merged)"
    released = transformer_weights(Path(summary["model_dir"]))
    assert (
        not any("lora" in k for k in released)
        and released.keys() == transformer_weights(smoke / "base").keys()
    )


def test_guard_stops_training_with_a_clear_error(smoke, tmp_path):
    recipe = OneRewardRecipe(
        config(smoke, tmp_path, steps=6, guard_every=2, guard_patience=1, sample_every=0, checkpoint_every=0)
    )
    real_scores = OneRewardRecipe.heldout_scores
    evaluations = []

    def diverging(self, outputs):  # the judge keeps rising while the held-out truth keeps falling
        judge, heldout = real_scores(self, outputs)
        k = len(evaluations)
        evaluations.append(k)
        return {key: 0.5 + 0.1 * k for key in judge}, {key: 0.9 - 0.2 * k for key in heldout}

    recipe.heldout_scores = diverging.__get__(recipe)
    recipe.setup()
    with pytest.raises(RewardHackingError, match="reward hacking suspected at step 2"):
        recipe.train()
    summary = json.loads((tmp_path / "static_report/summary.json").read_text())
    assert summary["status"] == "stopped_by_guard" and "step 2" in summary["error"]
    assert "The base (step 0) had the best held-out signal" in summary["error"]
    assert summary["best_heldout"]["step"] == 0  # kept beside it: the base's weights, step 0
    assert [p.name for p in (tmp_path / "static_best").iterdir()] == ["step_0000000"]
    assert not (tmp_path / "static").exists()  # nothing released


def test_the_best_heldout_step_keeps_its_weights(smoke, tmp_path):
    """The held-out truth peaks at step 4 of 8 (then the judge rises as it falls): the stop message points at
    step 4's folder, which holds exactly the policy weights the recipe had at step 4."""
    from safetensors.torch import load_file

    recipe = OneRewardRecipe(config(smoke, tmp_path, steps=8, guard_every=2, guard_patience=1, guard_margin=0.1,
                                    sample_every=0, checkpoint_every=4, keep_checkpoints=5, lr=1e-3, release="last"))
    real_scores = OneRewardRecipe.heldout_scores
    truth = [0.60, 0.65, 0.70, 0.65, 0.45]  # steps 0, 2, 4, 6, 8

    def peaking(self, outputs):
        judge, heldout = real_scores(self, outputs)
        k = len(self.guard.history)
        return {key: 0.5 + 0.1 * k for key in judge}, {key: truth[k] for key in heldout}

    recipe.heldout_scores = peaking.__get__(recipe)
    recipe.setup()
    with pytest.raises(RewardHackingError, match="best held-out evaluation was step 4"):
        recipe.train()
    summary = json.loads((tmp_path / "static_report/summary.json").read_text())
    assert summary["best_heldout"]["step"] == 4 and summary["best_heldout"]["score"] == pytest.approx(0.70)
    best = Path(summary["best_heldout"]["dir"])
    assert best == tmp_path / "static_best" / "step_0000004" and [p.name for p in best.parent.iterdir()] == [best.name]
    kept = load_file(str(best / "policy.safetensors"))
    at_step_4 = load_file(str(tmp_path / "static_checkpoints" / "step_0000004" / "policy.safetensors"))
    assert kept.keys() == at_step_4.keys() and all(torch.equal(kept[k], at_step_4[k]) for k in kept)
    final = load_file(str(tmp_path / "static_checkpoints" / "step_0000008" / "policy.safetensors")) \
        if (tmp_path / "static_checkpoints" / "step_0000008").exists() else None
    assert final is None or any(not torch.equal(kept[k], final[k]) for k in kept)


def test_two_processes_keep_identical_parameters(smoke, tmp_path):
    """torchrun + gloo on CPU: each rank draws its own batch, DDP all-reduces, parameters stay identical."""
    cfg = config(smoke, tmp_path, steps=2, **{**QUIET, "checkpoint_every": 1})
    cfg_file = tmp_path / "rl.yaml"
    cfg_file.write_text(yaml.safe_dump({k: v for k, v in cfg.params().items() if k not in ("t1", "t2")}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "steps.rl.train",
        "--config",
        str(cfg_file),
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "static_report/summary.json").read_text())
    assert summary["world_size"] == 2
    assert len(summary["checksums"]) == 2 and summary["checksums"][0] == summary["checksums"][1]
    last = latest_checkpoint(tmp_path / "static_checkpoints")
    assert {p.name for p in last.glob("rng_rank*.pt")} == {"rng_rank0.pt", "rng_rank1.pt"}
    single = train(config(smoke, tmp_path / "single", steps=2, **QUIET))
    assert single["checksums"] != summary["checksums"]  # the second rank's batch changed the update


@pytest.mark.parametrize(
    "name, kind", [("accelerate_ddp.yaml", "MULTI_GPU"), ("accelerate_fsdp.yaml", "FSDP")]
)
def test_accelerate_configs_load(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(REPO / "configs" / name))
    assert cfg.distributed_type.name == kind and cfg.mixed_precision == "bf16"
    if kind == "FSDP":
        import diffusers.models.transformers.transformer_flux as flux

        wrap = cfg.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")
        assert all(hasattr(flux, cls) for cls in wrap) and cfg.fsdp_config["fsdp_use_orig_params"]


def test_flux_settings_run_in_miniature(smoke, tmp_path):
    """The flux profile's code path (LoRA, bf16 autocast and weights, gradient checkpointing, kept-region
    guard) on the smoke models."""
    summary = train(
        config(
            smoke,
            tmp_path,
            steps=2,
            lora_rank=4,
            mixed_precision="bf16",
            dtype="bfloat16",
            gradient_checkpointing=True,
            guard_signal="kept_region",
            guard_every=2,
            sample_every=2,
            checkpoint_every=0,
        )
    )
    heldout = summary["guard"]["history"][-1]["heldout"]
    assert summary["status"] == "finished" and set(heldout) == {
        f"{t}/kept_ssim" for t in ("fill", "extend", "removal")
    }
    assert all(0.0 <= v <= 1.0 for v in heldout.values())


def test_cli_logs_to_mlflow(smoke, tmp_path, mlflow_uri, monkeypatch):
    from steps.tracking import Tracker

    tracker = Tracker(mlflow_uri, root=tmp_path)
    run_id = tracker.start_run("smoke", "rl-test")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    cfg_file = tmp_path / "rl.yaml"
    cfg_file.write_text(
        yaml.safe_dump(
            {k: v for k, v in config(smoke, tmp_path, steps=3).params().items() if k not in ("t1", "t2")}
        )
    )
    main(["--config", str(cfg_file), "--mlflow-run-id", run_id])
    run = tracker.client.get_run(run_id)
    assert {"lr", "grad_norm", "step_seconds"} <= set(run.data.metrics)
    assert any(k.startswith("reward/") for k in run.data.metrics)
    assert any(k.startswith("guard/world/") for k in run.data.metrics)
    artifacts = [a.path for a in tracker.client.list_artifacts(run_id, "rl_grids")]
    assert artifacts and all(a.endswith(".png") for a in artifacts)


def test_judge_must_be_queried_as_trained(smoke, tmp_path):
    import shutil

    from steps.rl.train import check_judge

    judge_dir = tmp_path / "judge"
    shutil.copytree(smoke / "judge", judge_dir)
    cfg = config(smoke, tmp_path, judge_dir=str(judge_dir))
    check_judge(cfg)  # no training.json: a released model, nothing to check
    (judge_dir / "training.json").write_text(json.dumps({"query_template_version": "v0", "config": {}}))
    with pytest.raises(ValueError, match="retrain the judge"):
        check_judge(cfg)
    (judge_dir / "training.json").write_text(
        json.dumps({"query_template_version": "v1", "config": {"show_source": True}})
    )
    with pytest.raises(ValueError, match="judge_sees_source=True"):
        check_judge(cfg)
    check_judge(config(smoke, tmp_path, judge_dir=str(judge_dir), judge_sees_source=True))


def test_rl_shows_the_judge_the_same_masked_source_as_training():
    from steps.rl.rollout import judge_source
    from steps.vocabulary import masked_source
    from steps.world import WorldConfig, make_sample

    samples = [make_sample(WorldConfig(size=32), i, task) for i, task in enumerate(["fill", "extend", "removal"])]
    shown = judge_source(samples, "cpu")
    expected = np.stack([masked_source(s.image, s.mask) for s in samples]).astype(np.float32) / 255
    assert shown.shape == (3, 3, 32, 32)
    assert torch.allclose(shown, torch.from_numpy(expected).permute(0, 3, 1, 2), atol=1e-6)


def test_oracle_reward_runs_the_recipe_without_a_judge(smoke, tmp_path):
    """reward=oracle: the world's differentiable truth replaces the judge (no judge directory needed); the
    oracle's training reward rises on the removal task and the guard logs the truth of full samples."""
    logged = []
    cfg = config(smoke, tmp_path, judge_dir=str(tmp_path / "no_judge"), reward="oracle", steps=20, lr=3e-3,
                 fill_prob=0.0, extend_prob=0.0, removal_prob=1.0, guard_every=10, guard_margin=1.0,
                 sample_every=0, checkpoint_every=0)
    train(cfg, log=lambda m, s: logged.append(m))
    rewards = [m["reward/removal/removal_quality"] for m in logged if "reward/removal/removal_quality" in m]
    assert len(rewards) == 20 and np.mean(rewards[-5:]) > np.mean(rewards[:5])
    truth = [m["guard/world/removal/removal_quality"] for m in logged if "guard/world/removal/removal_quality" in m]
    assert len(truth) == 3 and all(0 <= t <= 1 for t in truth)


def test_oracle_truth_matches_the_world_scores():
    from steps.foundations.judge_pairs import variant
    from steps.rl.oracle import SampleTruth
    from steps.world import WorldConfig, dimensions_for, make_sample, score

    rng = np.random.default_rng(0)
    for i in range(4):
        for task in ("fill", "extend", "removal"):
            s = make_sample(WorldConfig(size=32), i, task)
            truth = SampleTruth(s)
            for kind in ("target", "corrupt", "blur", "noise", "nothing"):
                image = variant(s, rng, kind)
                x = torch.as_tensor(image).permute(2, 0, 1).float() / 255
                for dim, value in score(image, s).items():
                    tolerance = 0.25 if dim == "text_alignment" else 0.05  # soft vs hard colour masks
                    assert abs(float(truth(x, dim)) - value) < tolerance, (s.id, kind, dim)
            assert set(dimensions_for(s.task, s.prompt)) == set(score(s.target, s))


def test_velocity_anchor_holds_the_policy_nearer_the_base(smoke, tmp_path):
    """anchor_beta > 0 adds beta * mean((v_policy - v_base)^2): logged, and the released weights move less."""
    base = transformer_weights(smoke / "base")

    def distance(out):
        moved = transformer_weights(out / "static")
        return float(sum((moved[k].float() - base[k].float()).pow(2).sum() for k in base))

    logged = []
    common = dict(steps=12, lr=3e-3, ema_tau=0.0, **FILL_ONLY, **QUIET)
    train(config(smoke, tmp_path / "free", **common))
    train(config(smoke, tmp_path / "anchored", anchor_beta=100.0, **common), log=lambda m, s: logged.append(m))
    assert all(m["anchor/velocity_mse"] >= 0 for m in logged) and logged[-1]["anchor/velocity_mse"] > 0
    assert distance(tmp_path / "anchored") < distance(tmp_path / "free")


@pytest.mark.parametrize("release", ["best_validation", "last"])
def test_release_is_chosen_on_the_validation_split(smoke, tmp_path, release):
    """The validation truth peaks at step 4 of 8 (guard margin wide: it never stops): best_validation releases
    exactly step 4's EMA weights and says so; last releases the final EMA."""
    from safetensors.torch import load_file

    recipe = OneRewardRecipe(config(smoke, tmp_path, steps=8, guard_every=2, guard_margin=1.0, sample_every=0,
                                    checkpoint_every=4, keep_checkpoints=5, lr=1e-3, release=release))
    real_scores = OneRewardRecipe.heldout_scores
    truth = [0.60, 0.65, 0.70, 0.65, 0.45]  # steps 0, 2, 4, 6, 8

    def peaking(self, outputs):
        judge, heldout = real_scores(self, outputs)
        return judge, {key: truth[len(self.guard.history)] for key in heldout}

    recipe.heldout_scores = peaking.__get__(recipe)
    summary = recipe.setup().train()
    released = transformer_weights(tmp_path / "static")
    ema = {4: load_file(str(tmp_path / "static_checkpoints/step_0000004/ema.safetensors")),
           8: load_file(str(tmp_path / "static_checkpoints/step_0000008/ema.safetensors"))}
    step = 4 if release == "best_validation" else 8
    assert summary["release"]["step"] == step and summary["release"]["rule"] == release
    assert all(torch.equal(released[k], v) for k, v in ema[step].items())
    assert any(not torch.equal(released[k], v) for k, v in ema[12 - step].items())


def test_when_no_step_beats_the_base_the_base_is_released(smoke, tmp_path):
    """The validation truth only falls (the guard margin is wide: it never stops the run): best_validation
    releases the base's own weights -- not the last, worse step's -- and says RL did not improve on it."""
    recipe = OneRewardRecipe(config(smoke, tmp_path, steps=6, guard_every=2, guard_margin=1.0, sample_every=0,
                                    checkpoint_every=0, lr=1e-3))
    real_scores = OneRewardRecipe.heldout_scores
    truth = [0.70, 0.60, 0.55, 0.50]  # steps 0, 2, 4, 6

    def falling(self, outputs):
        judge, heldout = real_scores(self, outputs)
        return judge, {key: truth[len(self.guard.history)] for key in heldout}

    recipe.heldout_scores = falling.__get__(recipe)
    base = {n: p.detach().clone() for n, p in recipe.setup().params.items()}
    summary = recipe.train()
    assert summary["status"] == "finished" and summary["release"]["step"] == 0
    assert "no RL step beat the base" in summary["release"]["note"]
    released = transformer_weights(tmp_path / "static")
    from safetensors.torch import load_file

    moved = load_file(str(tmp_path / "static_checkpoints/step_0000006/policy.safetensors"))
    assert all(torch.equal(released[n], base[n].to(released[n].dtype)) for n in base)
    assert any(not torch.equal(moved[n], base[n]) for n in base)  # RL did change the weights it trained


def test_guard_stop_releases_the_best_validation_weights(smoke, tmp_path):
    """release=best_validation turns the guard's stop into early stopping: the run ends without an error,
    releases step 4's EMA weights and says it was stopped and why."""
    from safetensors.torch import load_file

    recipe = OneRewardRecipe(config(smoke, tmp_path, steps=8, guard_every=2, guard_patience=1, guard_margin=0.1,
                                    sample_every=0, checkpoint_every=2, keep_checkpoints=5, lr=1e-3))
    real_scores = OneRewardRecipe.heldout_scores
    truth = [0.60, 0.65, 0.70, 0.45, 0.40]  # steps 0, 2, 4, 6 (stop), 8

    def peaking(self, outputs):
        judge, heldout = real_scores(self, outputs)
        k = len(self.guard.history)
        return {key: 0.5 + 0.1 * k for key in judge}, {key: truth[k] for key in heldout}

    recipe.heldout_scores = peaking.__get__(recipe)
    summary = recipe.setup().train()
    assert summary["status"] == "stopped_by_guard" and "step 6" in summary["error"]
    assert summary["release"]["step"] == 4
    released = transformer_weights(tmp_path / "static")
    ema4 = load_file(str(tmp_path / "static_checkpoints/step_0000004/ema.safetensors"))
    assert all(torch.equal(released[k], v) for k, v in ema4.items())
