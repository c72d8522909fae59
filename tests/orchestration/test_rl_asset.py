"""The policy asset resumes only a run of the same inputs; the launch command is accelerate's."""

from __future__ import annotations

from orchestration.assets.rl import discard_stale_checkpoints, launch_command
from steps.paths import ArtifactPaths
from steps.rl.config import RESUME_MUST_MATCH, RLConfig


def test_checkpoints_kept_for_same_inputs_and_dropped_for_new_ones(tmp_path):
    base, judge = tmp_path / "base", tmp_path / "judge"
    for d in (base, judge):
        d.mkdir()
        (d / "w.safetensors").write_bytes(b"v1")
    cfg = RLConfig.for_profile("smoke", tmp_path, base_dir=str(base), judge_dir=str(judge))
    ckpt = ArtifactPaths(tmp_path, "smoke").policy_checkpoints("static")
    assert discard_stale_checkpoints(cfg) is True
    (ckpt / "step_0000003").mkdir()
    assert discard_stale_checkpoints(cfg) is False and (ckpt / "step_0000003").exists()  # crash -> resume
    (judge / "w.safetensors").write_bytes(b"v2")  # a retrained judge -> start afresh
    assert discard_stale_checkpoints(cfg) is True and not (ckpt / "step_0000003").exists()
    changed = RLConfig.for_profile("smoke", tmp_path, base_dir=str(base), judge_dir=str(judge), lam=0.7)
    (ckpt / "step_0000003").mkdir()
    assert "lam" in RESUME_MUST_MATCH  # the recipe refuses to resume across it: the asset starts afresh
    assert discard_stale_checkpoints(changed) is True and not (ckpt / "step_0000003").exists()
    # a field the recipe resumes across (more steps: continue training) keeps the checkpoints
    longer = RLConfig.for_profile("smoke", tmp_path, base_dir=str(base), judge_dir=str(judge), lam=0.7, steps=12)
    (ckpt / "step_0000003").mkdir()
    assert "steps" not in RESUME_MUST_MATCH
    assert discard_stale_checkpoints(longer) is False and (ckpt / "step_0000003").exists()


def test_launch_command_is_accelerate_on_cpu():
    cmd = launch_command(1)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and "--cpu" in cmd
    assert cmd[-2:] == ["-m", "orchestration.pipes_rl"]
