"""One configuration per profile: configs/<profile>.yaml, resolved by steps.config for the step CLIs, the Dagster
assets and the bench scripts alike; bad input is rejected with the file, line and field named."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestration.assets import evaluation, judge, models, rl
from orchestration.resources import ProjectResource
from steps import config as C
from steps.config import ConfigError, parse_cli
from steps.evaluation.benchmark import BenchmarkConfig
from steps.evaluation.competitors import CompetitorsConfig
from steps.foundations.base_pretrain import BaseConfig
from steps.foundations.judge_pretrain import JudgePretrainConfig
from steps.judge.agreement import AgreementConfig
from steps.judge.annotate import AnnotateConfig
from steps.judge.candidates import CandidatesConfig
from steps.judge.train import JudgeConfig
from steps.rl.config import RLConfig

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [BaseConfig, BenchmarkConfig, JudgeConfig, JudgePretrainConfig, RLConfig]


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", next((REPO / "bench").glob(f"*/{name}.py")))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("profile", ["smoke", "tiny"])
def test_cli_profile_is_the_assets_profile(cls, profile):
    """`--set profile=X` and `--profile X` give exactly for_profile(X); other --set fields override it."""
    expected = cls.for_profile(profile)
    by_set, _ = parse_cli(cls, "", ["--set", f"profile={profile}"])
    by_flag, _ = parse_cli(cls, "", ["--profile", profile])
    assert by_set == expected and by_flag == expected
    seed = dataclasses.replace(expected, seed=7) if hasattr(expected, "seed") else None
    if seed is not None:
        overridden, _ = parse_cli(cls, "", ["--profile", profile, "--set", "seed=7"])
        assert overridden == seed


# Each step: its dataclass, how its asset builds it (the builder the asset calls, with a run config setting
# seed or another field), and the run-time values only the asset knows (threads: every core, up to 4).
def _asset_cases():
    solo = {"threads": ProjectResource().solo_threads}
    return [
        ("base", BaseConfig, lambda p: models.base_model_config(p, models.BaseModelConfig(seed=7)), {}),
        ("judge_pretrain", JudgePretrainConfig,
         lambda p: judge.judge_pretrain_config(p, judge.PretrainRunConfig(seed=7)), {}),
        ("candidates", CandidatesConfig,
         lambda p: judge.candidates_config(p, judge.CandidatesRunConfig(seed=7)), solo),
        ("annotate", AnnotateConfig, lambda p: judge.pairs_config(p, judge.PairsRunConfig(seed=7)), {}),
        ("judge", JudgeConfig, lambda p: judge.judge_config(p, judge.JudgeRunConfig(seed=7)), solo),
        ("agreement", AgreementConfig,
         lambda p: judge.agreement_config(p, judge.AgreementRunConfig(min_pairs=7)), solo),
        ("rl", RLConfig, lambda p: rl.rl_config(p, rl.PolicyConfig(seed=7), "dynamic"), {"reference": "dynamic"}),
        ("competitors", CompetitorsConfig, lambda p: evaluation.competitors_config(p, "photos", num_steps=7), solo),
        ("benchmark", BenchmarkConfig, lambda p: evaluation.benchmark_config(p, "benchmark", grid_rows=7), solo),
    ]


@pytest.mark.parametrize("case", _asset_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("profile", ["smoke", "tiny"])
def test_the_asset_resolves_what_the_cli_resolves(case, profile, monkeypatch):
    """For every step: the Dagster asset's config (its run config over the profile) is the CLI's for the same
    profile and overrides, and both carry the profile file's values."""
    monkeypatch.delenv("ONEREWARD_HUMAN_PAIRS", raising=False)
    monkeypatch.delenv("ONEREWARD_LABEL_STUDIO", raising=False)
    section, cls, build, runtime = case
    from_asset = build(ProjectResource(profile=profile, root="."))
    changed = {"agreement": {"min_pairs": 7}, "competitors": {"num_steps": 7},
               "benchmark": {"grid_rows": 7}}.get(section, {"seed": 7})
    sets = [f"{k}={v}" for k, v in {**changed, **runtime}.items()]
    extra = ["photos"] if section == "competitors" else []
    if extra:  # the photo split's paths: the CLI takes --set for them, the asset a split name
        sets += [f"benchmark={from_asset.benchmark}", f"out_dir={from_asset.out_dir}"]
    from_cli, _ = parse_cli(cls, "", ["--profile", profile, *[a for s in sets for a in ("--set", s)]])
    assert from_asset == from_cli
    for key, value in (yaml.safe_load(C.profile_file(profile).read_text()).get(section) or {}).items():
        if key not in changed:
                assert getattr(from_cli, key) == (tuple(value) if isinstance(value, list) else value), (section, key)


@pytest.mark.parametrize("profile", ["smoke", "tiny"])
def test_the_bench_scripts_resolve_what_the_cli_resolves(profile, tmp_path):
    """bench/rl/rl_sweep.py and bench/judge/judge_ablations.py start from the profile exactly as the CLI does."""
    sweep = _bench("rl_sweep")
    args = argparse.Namespace(profile=profile, guard_every=20, steps=40, threads=1, work=str(tmp_path),
                              set="reward=oracle,lr=3e-5")
    from_bench = sweep.variant_config("v1", {"anchor_beta": 0.1}, args)
    sets = dict(guard_every=20, guard_margin=1.0, steps=40, sample_every=0, checkpoint_every=0, resume=False,
                out_dir=str(tmp_path / "v1"), threads=1, reward="oracle", lr=3e-5, anchor_beta=0.1)
    from_cli, _ = parse_cli(RLConfig, "", ["--profile", profile, *[a for k, v in sets.items()
                                                                   for a in ("--set", f"{k}={v}")]])
    assert from_bench == from_cli and from_bench.guard_per_task == RLConfig.for_profile(profile).guard_per_task

    ablations = _bench("judge_ablations")
    args = argparse.Namespace(profile=profile, pretrained="j0", train_dir="t", steps=30, threads=1)
    name = next(n for n, (overrides, _) in ablations.VARIANTS.items() if overrides)
    from_bench = ablations.variant_config(args, name, "pairs", tmp_path)
    sets = dict(init_dir="j0", pairs_dir="pairs", train_dir="t", out_dir=str(tmp_path / name), steps=30,
                threads=1, **ablations.VARIANTS[name][0])
    from_cli, _ = parse_cli(JudgeConfig, "", ["--profile", profile, *[a for k, v in sets.items()
                                                                      for a in ("--set", f"{k}={v}")]])
    assert from_bench == from_cli


def test_smoke_on_the_command_line_really_is_smoke():
    """The bug this guards against: `--set profile=smoke` used to keep the tiny paths and step counts."""
    cfg, _ = parse_cli(RLConfig, "", ["--set", "profile=smoke"])
    assert cfg.train_dir.endswith("data/smoke/train") and cfg.steps == RLConfig.for_profile("smoke").steps
    assert cfg.steps != RLConfig().steps


def test_profile_smoke_really_runs_smoke(tmp_path):
    """`python -m steps.data.datasets world --profile smoke` builds the smoke world: configs/smoke.yaml's sizes."""
    out = tmp_path / "d"
    subprocess.run([sys.executable, "-m", "steps.data.datasets", "world", "--profile", "smoke", "--out", str(out)],
                   cwd=REPO, check=True, capture_output=True)
    smoke = yaml.safe_load(C.profile_file("smoke").read_text())["datasets"]
    train = (out / "train" / "manifest.jsonl").read_text().splitlines()
    assert len(train) == smoke["n_train"]
    from PIL import Image

    first = yaml.safe_load(train[0])
    assert Image.open(out / "train" / first["image"]).size == (smoke["size"], smoke["size"])


@pytest.mark.parametrize("profile", ["smoke", "tiny", "flux"])
def test_every_section_of_every_profile_file_resolves(profile):
    """No typo hides in a profile file: every section names a step config and every key is one of its fields
    with the right type (the steps that do not run on a profile reject it by name)."""
    data = yaml.safe_load(C.profile_file(profile).read_text())
    assert data and set(data) <= set(C.SECTIONS)
    for section in data:
        cls = C.section_class(section)
        try:
            C.resolve(cls, profile, sections=(section,))
        except ConfigError as e:  # flux has no tiny-sized base or judge pretraining; its judge needs init_dir
            assert profile == "flux" and ("init_dir" in str(e) or "flux" in str(e)), e


def test_bad_fields_are_named():
    with pytest.raises(ConfigError, match=r"--set \(stepz\): unknown field 'stepz' for RLConfig \(did you mean "
                                          r"'steps'\?\)"):
        parse_cli(RLConfig, "", ["--profile", "smoke", "--set", "stepz=3"])
    with pytest.raises(ConfigError, match="field 'steps' of RLConfig expects int, got 'many'"):
        parse_cli(RLConfig, "", ["--profile", "smoke", "--set", "steps=many"])


def test_a_bad_profile_file_names_the_file_line_and_field(tmp_path, monkeypatch):
    for profile in ("smoke", "tiny", "flux"):
        (tmp_path / f"{profile}.yaml").write_text(C.profile_file(profile).read_text())
    monkeypatch.setenv(C.CONFIG_DIR_ENV, str(tmp_path))
    text = (tmp_path / "smoke.yaml").read_text().replace("  ema_tau: 0.9\n", "  ema_tua: 0.9\n")
    (tmp_path / "smoke.yaml").write_text(text)
    line = text.splitlines().index("  ema_tua: 0.9") + 1
    with pytest.raises(ConfigError, match=rf"smoke.yaml:{line} \(rl.ema_tua\): unknown field 'ema_tua'.*'ema_tau'"):
        RLConfig.for_profile("smoke")
    (tmp_path / "smoke.yaml").write_text(text.replace("  ema_tua: 0.9\n", "  ema_tau: fast\n"))
    with pytest.raises(ConfigError, match=rf"smoke.yaml:{line} \(rl.ema_tau\): field 'ema_tau' of RLConfig "
                                          r"expects float, got 'fast'"):
        RLConfig.for_profile("smoke")
    (tmp_path / "smoke.yaml").write_text("rl:\n  steps: 3\nrll:\n  steps: 4\n")
    with pytest.raises(ConfigError, match=r"smoke.yaml:3: unknown section 'rll'"):
        RLConfig.for_profile("smoke")
    with pytest.raises(ConfigError, match=r"unknown profile 'nope'"):
        C.profile_layer("nope", "rl")


def test_help_shows_each_resolved_value_and_its_source():
    out = subprocess.run([sys.executable, "-m", "steps.rl.train", "--profile", "smoke", "--set", "seed=5", "--help"],
                         cwd=REPO, check=True, capture_output=True, text=True).stdout
    lines = C.profile_file("smoke").read_text().splitlines()
    assert f"steps = 6  [configs/smoke.yaml:{lines.index('  steps: 6') + 1} (rl.steps)]" in out
    assert "seed = 5  [--set]" in out and "grad_accum = 1  [default]" in out
    assert "train_dir = 'data/smoke/train'  [steps/paths.py (profile smoke, root .)]" in out
    # the config's own fields first, then its field groups (steps/fields.py) in the order the class lists them
    order = [out.index(f"  {name} = ") for name in ("profile", "reference", "steps", "lora_rank", "fill_prob",
                                                     "guidance", "seed", "threads")]
    assert order == sorted(order)
    assert "A batch is that many conditions per rank" in out  # the config's docstring says what the groups mean


def test_field_groups_are_defined_once():
    """A field group's field is declared in steps/fields.py only, never again in a step's config."""
    import steps.fields as groups

    grouped = {f.name for g in vars(groups).values() if isinstance(g, type) and g.__module__ == groups.__name__
               for f in dataclasses.fields(g)}
    for section in C.SECTIONS:
        cls = C.section_class(section)
        again = grouped & set(vars(cls).get("__annotations__", {}))
        assert not again, f"{cls.__name__} declares {sorted(again)} again: use the group from steps/fields.py"


def test_a_bad_value_at_the_command_line_is_one_line_not_a_traceback():
    res = subprocess.run([sys.executable, "-m", "steps.rl.train", "--profile", "smoke", "--set", "lr=abc"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--set (lr): field 'lr' of RLConfig expects float, got 'abc'" in res.stderr


def test_a_cli_given_no_profile_runs_the_default_profile_or_the_environments():
    """No --profile, no profile in --set or a --config file: tiny (what `make` runs), or $ONEREWARD_PROFILE."""
    def help_of(env_profile):
        env = {k: v for k, v in os.environ.items() if k != "ONEREWARD_PROFILE"}
        if env_profile:
            env["ONEREWARD_PROFILE"] = env_profile
        return subprocess.run([sys.executable, "-m", "steps.judge.candidates", "--help"], cwd=REPO, env=env,
                              check=True, capture_output=True, text=True).stdout

    tiny, smoke = help_of(None), help_of("smoke")
    assert "profile tiny;" in tiny and "n_conditions = 2000  [configs/tiny.yaml:" in tiny
    assert "batch_size = 64  [configs/tiny.yaml:" in tiny
    assert "profile smoke;" in smoke and "n_conditions = 96  [configs/smoke.yaml:" in smoke
    # a config without a docstring shows no generated signature (its class defaults) above the resolved values
    assert "CandidatesConfig(" not in tiny


def test_every_section_names_the_module_that_defines_its_class():
    for section, ref in C.SECTIONS.items():
        module, name = ref.split(":")
        assert C.section_class(section).__module__ == module, f"{section}: {name} is defined elsewhere than {module}"
