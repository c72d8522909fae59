"""Every bad input is rejected with an error naming the file, the line and the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from steps.manifest import EXTEND_DEFAULT_PROMPT, ManifestError, read_manifest, write_manifest


def _png(path: Path, arr: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path.name


@pytest.fixture
def ds(tmp_path: Path) -> Path:
    img = np.full((32, 32, 3), 100, np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:16, 8:16] = 255
    _png(tmp_path / "images" / "a.png", img)
    _png(tmp_path / "masks" / "a.png", mask)
    return tmp_path


def good(i: str = "a", **kw) -> dict:
    rec = {"id": i, "task": "fill", "image": "images/a.png", "mask": "masks/a.png", "prompt": "a red circle"}
    rec.update(kw)
    return rec


def write(ds: Path, records: list, extra_lines: str = "") -> Path:
    path = ds / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + extra_lines)
    return path


def problems_of(path: Path) -> list:
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    return info.value.problems


def test_good_manifest_reads(ds):
    conds = read_manifest(write(ds, [good(), good("b", task="extend", prompt=""), good("c", task="removal", prompt="")]))
    assert [c.id for c in conds] == ["a", "b", "c"]
    assert conds[0].image == (ds / "images" / "a.png").resolve()
    assert conds[1].prompt == EXTEND_DEFAULT_PROMPT and not conds[1].user_prompt
    assert conds[2].prompt == "remove"


@pytest.mark.parametrize(
    "setup, line, field, needle",
    [
        ("corrupt_png", 1, "image", "unreadable image"),
        ("size_mismatch", 1, "mask", "mask masks/small.png size 16x16 differs from image images/a.png size 32x32"),
        ("non_binary", 1, "mask", "mask masks/grey.png is not binary"),
        ("empty_mask", 1, "mask", "mask masks/zero.png is empty"),
        ("unknown_task", 1, "task", "unknown task 'paint'"),
        ("missing_file", 1, "image", "file not found"),
        ("escape_dotdot", 1, "image", "escapes the dataset root"),
        ("escape_absolute", 1, "mask", "absolute path"),
        ("duplicate_id", 2, "id", "duplicate id 'a' (first on line 1)"),
        ("malformed_json", 2, "", "malformed JSON"),
        ("missing_field", 1, "prompt", "required field missing"),
        ("fill_without_prompt", 1, "prompt", "fill needs a prompt"),
        ("rgb_mask", 1, "mask", "mask masks/rgb.png must be single-channel"),
    ],
)
def test_rejections_name_file_line_field(ds, setup, line, field, needle):
    records = [good()]
    extra = ""
    if setup == "corrupt_png":
        (ds / "images" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
        records = [good(image="images/bad.png")]
    elif setup == "size_mismatch":
        _png(ds / "masks" / "small.png", np.full((16, 16), 255, np.uint8))
        records = [good(mask="masks/small.png")]
    elif setup == "non_binary":
        m = np.zeros((32, 32), np.uint8)
        m[4:8, 4:8] = 128
        _png(ds / "masks" / "grey.png", m)
        records = [good(mask="masks/grey.png")]
    elif setup == "empty_mask":
        _png(ds / "masks" / "zero.png", np.zeros((32, 32), np.uint8))
        records = [good(mask="masks/zero.png")]
    elif setup == "unknown_task":
        records = [good(task="paint")]
    elif setup == "missing_file":
        records = [good(image="images/nope.png")]
    elif setup == "escape_dotdot":
        records = [good(image="../outside.png")]
    elif setup == "escape_absolute":
        records = [good(mask=str((ds / "masks" / "a.png").resolve()))]
    elif setup == "duplicate_id":
        records = [good(), good()]
    elif setup == "malformed_json":
        extra = '{"id": "b", "task": \n'
    elif setup == "missing_field":
        rec = good()
        del rec["prompt"]
        records = [rec]
    elif setup == "fill_without_prompt":
        records = [good(prompt="  ")]
    elif setup == "rgb_mask":
        _png(ds / "masks" / "rgb.png", np.full((32, 32, 3), 255, np.uint8))
        records = [good(mask="masks/rgb.png")]
    path = write(ds, records, extra)
    problems = problems_of(path)
    match = [p for p in problems if p.line == line and p.field == field and needle in p.message]
    assert match, f"expected line {line} field {field!r} '{needle}', got {[str(p) for p in problems]}"
    assert str(path) in str(match[0]) and f":{line}:" in str(match[0])


def test_empty_manifest(ds):
    path = write(ds, [], "\n  \n")
    problems = problems_of(path)
    assert len(problems) == 1 and "empty manifest" in problems[0].message


def test_all_problems_reported_not_just_first(ds):
    path = write(ds, [good(task="paint"), good("b", image="images/nope.png"), good("c")])
    lines = {p.line for p in problems_of(path)}
    assert lines == {1, 2}


def test_write_manifest_is_atomic_and_stable(tmp_path, monkeypatch):
    path = tmp_path / "manifest.jsonl"
    write_manifest(path, [{"b": 1, "a": 2}])
    assert path.read_text() == '{"a": 2, "b": 1}\n'
    import steps.io

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(steps.io.os, "replace", boom)
    with pytest.raises(OSError):
        write_manifest(path, [{"c": 3}])
    assert path.read_text() == '{"a": 2, "b": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.jsonl"]
