"""The RL tests' smoke world, base pipeline and judge (tests/steps/rl/conftest.py), for the RL bench scripts."""

from tests.steps.rl.conftest import smoke  # noqa: F401  (a fixture, used by name)
