"""Competitor folders: classical and model systems write them; user folders are validated with clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from steps.data.datasets import DatasetConfig, build_world
from steps.evaluation.competitors import (
    CompetitorsConfig,
    build_competitors,
    condition_seed,
    fill_with_pipeline,
    import_folder,
    list_systems,
    load_outputs,
    read_conditions,
    run_classical,
    run_model,
    validate_competitor_folder,
)
from steps.io import read_rgb, write_png
from steps.manifest import ManifestError


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    build_world(DatasetConfig(size=32, n_train=2, n_benchmark_per_task=2), root)
    return root / "benchmark"


@pytest.fixture(scope="module")
def conditions(benchmark):
    return read_conditions(benchmark)


def _user_folder(root, conditions, name="mine"):
    folder = root / name
    for c in conditions:
        write_png(folder / f"{c.id}.png", read_rgb(c.image))
    return folder


def test_classical_systems_cover_their_tasks(conditions, tmp_path):
    telea = run_classical("telea", conditions, tmp_path)
    reflect = run_classical("reflect", conditions, tmp_path)
    assert list_systems(tmp_path) == ["reflect", "telea"]
    outputs = load_outputs(telea, conditions)
    assert set(outputs) == {c.id for c in conditions}
    for c in conditions:  # classical inpainting keeps every pixel outside the mask
        keep = np.asarray(Image.open(c.mask)) == 0
        assert np.array_equal(outputs[c.id][keep], read_rgb(c.image)[keep])
    assert set(load_outputs(reflect, conditions)) == {c.id for c in conditions if c.task == "extend"}
    assert json.loads((reflect / "system.json").read_text())["tasks"] == ["extend"]
    with pytest.raises(ValueError, match="not available"):
        run_classical("nonexistent", conditions, tmp_path)


def test_patchmatch_fills_from_the_image_and_keeps_the_rest(conditions, tmp_path):
    from steps.evaluation.competitors import CompetitorsConfig as Cfg

    assert "patchmatch" in Cfg().classical
    outputs = load_outputs(run_classical("patchmatch", conditions, tmp_path), conditions)
    assert set(outputs) == {c.id for c in conditions}
    for c in conditions:
        hole = np.asarray(Image.open(c.mask)) > 127
        source = read_rgb(c.image)
        assert np.array_equal(outputs[c.id][~hole], source[~hole])  # kept pixels untouched
        if c.task == "extend":  # the grey band is replaced by patches from the image
            assert not (outputs[c.id][hole] == 128).all()
    again = load_outputs(run_classical("patchmatch", conditions, tmp_path / "again"), conditions)
    assert all(np.array_equal(outputs[k], again[k]) for k in outputs)  # deterministic


def test_user_folder_problems_name_file_and_field(conditions, tmp_path):
    folder = _user_folder(tmp_path, conditions)
    gone = [conditions[0].id, conditions[3].id]
    for cid in gone:
        (folder / f"{cid}.png").unlink()
    write_png(folder / f"{conditions[1].id}.png", np.zeros((16, 16, 3), np.uint8))  # wrong size
    (folder / f"{conditions[2].id}.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / f"{conditions[4].id}.png", format="JPEG")

    with pytest.raises(ManifestError) as err:
        validate_competitor_folder(folder, conditions)
    problems = err.value.problems
    first = problems[0]
    assert first.file == str(folder) and first.field == "ids"
    assert "2 benchmark id(s)" in first.message and all(cid in first.message for cid in gone)
    by_field = {p.field: p for p in problems[1:]}
    assert by_field["size"].file.endswith(f"{conditions[1].id}.png") and "16x16" in by_field["size"].message
    unreadable = [p for p in problems if p.field == "image"]
    assert {p.file.rsplit("/", 1)[1] for p in unreadable} == {f"{conditions[2].id}.png", f"{conditions[4].id}.png"}
    assert any("not a PNG (format JPEG)" in p.message for p in unreadable)
    assert str(folder) in str(err.value)


def test_missing_folder_bad_name_and_bad_system_file(conditions, tmp_path):
    with pytest.raises(ManifestError, match="competitor folder not found"):
        validate_competitor_folder(tmp_path / "absent", conditions)
    bad = _user_folder(tmp_path, conditions, name="has space")
    with pytest.raises(ManifestError, match="not a valid system name"):
        validate_competitor_folder(bad, conditions)
    odd = _user_folder(tmp_path, conditions, name="odd")
    (odd / "system.json").write_text('{"tasks": ["paint"]}')
    with pytest.raises(ManifestError, match="unknown task"):
        validate_competitor_folder(odd, conditions)


def test_import_folder_is_all_or_nothing(conditions, tmp_path):
    good = _user_folder(tmp_path / "in", conditions, name="theirs")
    broken = _user_folder(tmp_path / "in", conditions, name="broken")
    (broken / f"{conditions[0].id}.png").unlink()
    out = tmp_path / "competitors"
    with pytest.raises(ManifestError):
        import_folder(broken, conditions, out)
    assert not out.exists() or not any(out.iterdir())  # no half-written folder, no temp folder left
    folder = import_folder(good, conditions, out)
    assert json.loads((folder / "system.json").read_text())["kind"] == "user"
    assert set(validate_competitor_folder(folder, conditions)) == {c.id for c in conditions}


def test_build_competitors_from_config(benchmark, conditions, tmp_path):
    user = _user_folder(tmp_path / "in", conditions, name="colleague")
    cfg = CompetitorsConfig(benchmark=str(benchmark), out_dir=str(tmp_path / "out"),
                            classical=("telea", "biharmonic"), user_folders=(str(user),))
    result = build_competitors(cfg)
    assert sorted(result["systems"]) == ["biharmonic", "colleague", "telea"]
    assert json.loads((tmp_path / "out" / "index.json").read_text())["n_conditions"] == len(conditions)
    with pytest.raises(ValueError, match="unknown classical"):
        CompetitorsConfig(classical=("lama",))
    with pytest.raises(ValueError, match="system name"):
        CompetitorsConfig(models={"bad/name": "x"})


def test_model_system_is_seeded_per_condition(conditions, tmp_path):
    import torch

    from steps.models.policy import build_tiny_fill_pipeline, spec_for

    torch.set_num_threads(1)
    pipe = build_tiny_fill_pipeline(spec_for("smoke"), seed=0)
    a = run_model("base", "in-memory", conditions, tmp_path / "a", seed=3, num_steps=2, batch_size=4, pipe=pipe)
    again = run_model("base", "in-memory", conditions, tmp_path / "c", seed=3, num_steps=2, batch_size=4, pipe=pipe)
    b = run_model("base", "in-memory", conditions, tmp_path / "b", seed=3, num_steps=2, batch_size=1, pipe=pipe)
    for c in conditions:
        assert (a / f"{c.id}.png").read_bytes() == (again / f"{c.id}.png").read_bytes()
        # Same noise whatever the batch: only float rounding of batched matmuls differs.
        diff = np.abs(read_rgb(a / f"{c.id}.png").astype(int) - read_rgb(b / f"{c.id}.png").astype(int))
        assert diff.max() <= 2
    info = json.loads((a / "system.json").read_text())
    assert info["kind"] == "model" and info["seed"] == 3
    assert condition_seed(3, "x") == condition_seed(3, "x") != condition_seed(4, "x")
    image = np.zeros((30, 30, 3), np.uint8)
    with pytest.raises(ValueError, match="multiples of 4"):
        fill_with_pipeline(pipe, [image], [np.full((30, 30), 255, np.uint8)], ["a red circle"], [0], 2)
