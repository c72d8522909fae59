"""bench/rl/rl_gpu.py: the production-size OneReward timing script, run at tiny size on CPU (same code path)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.loader import load_bench

BENCH = Path(__file__).resolve().parents[2] / "bench" / "rl" / "rl_gpu.py"


@pytest.fixture(scope="module")
def bench():
    module = load_bench(BENCH, "rl_gpu_bench")
    return module


def test_real_configs_have_the_released_models_sizes(bench):
    counts = bench.param_counts("real")
    assert 11.8e9 < counts["transformer"] < 12.0e9  # FLUX.1-Fill-dev: 11.9 B
    assert 8.2e9 < counts["judge"] < 8.4e9  # Qwen2.5-VL-7B-Instruct: 8.29 B
    assert 80e6 < counts["vae"] < 90e6  # FLUX's 16-channel AutoencoderKL: 83.8 M
    assert bench.REAL_FLUX_FILL["in_channels"] == 384 and bench.REAL_FLUX_FILL["out_channels"] == 64


def test_tiny_cpu_run_writes_json_and_table(bench, tmp_path, capsys):
    out = tmp_path / "result.json"
    result = bench.main(
        [
            "--size",
            "tiny",
            "--device",
            "cpu",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--T",
            "4",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    assert saved["s_per_step"] == result["s_per_step"] > 0 and saved["samples_per_s"] > 0
    assert saved["flops_per_step"] > 0 and saved["matmul_flops_per_s"] > 0 and 0 < saved["utilisation"]
    assert saved["params"]["trainable"] < saved["params"]["transformer"]  # LoRA only
    assert (saved["T"], saved["t_index"], saved["device"]) == (4, 2, "cpu")
    table = capsys.readouterr().out
    assert "| s/step (median) |" in table and "| FLOP utilisation |" in table


def test_tiny_cpu_grpo_step(bench, tmp_path, capsys):
    out = tmp_path / "grpo.json"
    bench.main(["--size", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "0", "--T", "4", "--threads", "1",
                "--update", "grpo", "--group-size", "2", "--batch", "2", "--out", str(out)])  # fmt: skip
    saved = json.loads(out.read_text())
    row = saved["update_row"]
    assert (saved["update"], row["conditions"], row["samples"]) == ("grpo", 2, 4)
    assert saved["s_per_step"] == row["s_per_step"] > 0 and saved["flops_per_step"] > 0
    table = capsys.readouterr().out
    assert "| update | grpo: 4 samples/step (G=2)" in table and "| s/sample |" in table
