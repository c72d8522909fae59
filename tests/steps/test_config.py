"""The step CLI resolves a profile the way the assets and bench scripts do (for_profile), and rejects bad input
with the source and the field named."""

from __future__ import annotations

import dataclasses

import pytest

from steps.base import BaseConfig
from steps.benchmark import BenchmarkConfig
from steps.config import ConfigError, parse_cli
from steps.judge import JudgeConfig
from steps.judge_pretrain import JudgePretrainConfig
from steps.rl import RLConfig

CONFIGS = [BaseConfig, BenchmarkConfig, JudgeConfig, JudgePretrainConfig, RLConfig]


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


def test_smoke_on_the_command_line_really_is_smoke():
    """The bug this guards against: `--set profile=smoke` used to keep the tiny paths and step counts."""
    cfg, _ = parse_cli(RLConfig, "", ["--set", "profile=smoke"])
    assert cfg.train_dir.endswith("data/smoke/train") and cfg.steps == RLConfig.for_profile("smoke").steps
    assert cfg.steps != RLConfig().steps


def test_bad_fields_are_named():
    with pytest.raises(ConfigError, match=r"command line: unknown field\(s\) \['stepz'\]"):
        parse_cli(RLConfig, "", ["--profile", "smoke", "--set", "stepz=3"])
    with pytest.raises(ConfigError, match="field 'steps' expects int"):
        parse_cli(RLConfig, "", ["--profile", "smoke", "--set", "steps=many"])
