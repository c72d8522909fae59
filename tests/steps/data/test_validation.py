"""The Great Expectations suite passes built data and fails each kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from steps.data.datasets import DatasetConfig, build_world
from steps.data.validation import validate_manifest


def test_suite_passes_on_built_world(tmp_path):
    build_world(DatasetConfig(size=32, n_train=12, n_benchmark_per_task=2), tmp_path)
    report = validate_manifest(tmp_path / "train" / "manifest.jsonl")
    assert report.success, report.summary()
    assert report.n_rows == 12 and report.evaluated >= 10
    assert sum(report.rows_per_task.values()) == 12


def test_suite_fails_and_names_rows(tmp_path: Path):
    (tmp_path / "i").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "i" / "a.png")
    m = np.zeros((16, 16), np.uint8)
    m[2:5, 2:5] = 255
    Image.fromarray(m).save(tmp_path / "i" / "m.png")
    Image.fromarray(m // 2).save(tmp_path / "i" / "grey.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "i" / "small.png")
    rows = [
        {"id": "ok", "task": "fill", "image": "i/a.png", "mask": "i/m.png", "prompt": "a red circle"},
        {"id": "ok", "task": "extend", "image": "i/a.png", "mask": "i/m.png", "prompt": ""},
        {"id": "t", "task": "paint", "image": "i/a.png", "mask": "i/m.png", "prompt": "x"},
        {"id": "g", "task": "removal", "image": "i/a.png", "mask": "i/grey.png", "prompt": ""},
        {"id": "s", "task": "removal", "image": "i/a.png", "mask": "i/small.png", "prompt": ""},
        {"id": "p", "task": "fill", "image": "i/a.png", "mask": "i/m.png", "prompt": ""},
    ]
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = validate_manifest(path)
    assert not report.success
    failed = {(f["expectation"], f["column"]): f for f in report.failures}
    assert "line 2 id ok" in failed[("expect_column_values_to_be_unique", "id")]["rows"]
    assert failed[("expect_column_values_to_be_in_set", "task")]["rows"] == ["line 3 id t"]
    assert failed[("expect_column_values_to_be_in_set", "mask_binary")]["rows"] == ["line 4 id g"]
    assert failed[("expect_column_pair_values_to_be_equal", "image_width/mask_width")]["rows"] == ["line 5 id s"]
    assert failed[("expect_column_value_lengths_to_be_between", "prompt")]["rows"] == ["line 6 id p"]
    assert "line 3 id t" in report.summary()


def test_empty_manifest_fails(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text("")
    assert not validate_manifest(path).success
