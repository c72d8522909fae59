"""Dataset builders: deterministic, validated, atomic; the photo split uses bundled photos only."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import steps.data.datasets as datasets
from steps.config import ConfigError, from_dict
from steps.data.datasets import DatasetConfig, build_photos, build_world
from steps.manifest import read_manifest

REPO = Path(__file__).resolve().parents[3]


def tree_digest(root: Path) -> str:
    h = hashlib.md5()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


CFG = DatasetConfig(size=32, n_train=20, n_benchmark_per_task=2, n_validation_per_task=1)


def test_world_splits_are_deterministic_and_complete(tmp_path):
    counts = build_world(CFG, tmp_path / "a")
    build_world(CFG, tmp_path / "b")
    assert counts == {"train": 20, "benchmark": 6, "validation": 3}
    for split in ("train", "validation", "benchmark"):
        assert tree_digest(tmp_path / "a" / split) == tree_digest(tmp_path / "b" / split)
    bench = read_manifest(tmp_path / "a" / "benchmark" / "manifest.jsonl")
    assert [c.task for c in bench] == ["fill"] * 2 + ["extend"] * 2 + ["removal"] * 2
    assert all(c.target is not None and (c.target.parent.parent / c.meta["background"]).exists() for c in bench)
    train_ids = {c.id for c in read_manifest(tmp_path / "a" / "train" / "manifest.jsonl")}
    assert not train_ids & {c.id for c in bench}, "benchmark must be held out"
    val = read_manifest(tmp_path / "a" / "validation" / "manifest.jsonl")
    assert [c.task for c in val] == ["fill", "extend", "removal"]
    assert not {c.id for c in val} & (train_ids | {c.id for c in bench}), "validation is disjoint from both"


def test_benchmark_counts_per_task_and_growing_one_keeps_what_was_drawn(tmp_path):
    """n_benchmark_by_task sets one task's count; a task's conditions sit in their own band of world indices, so
    growing it keeps every condition (and its pixels) it had and changes no other task's."""
    small = DatasetConfig(size=32, n_train=2, n_benchmark_per_task=2, n_validation_per_task=1)
    grown = DatasetConfig(size=32, n_train=2, n_benchmark_per_task=2, n_validation_per_task=1,
                          n_benchmark_by_task={"extend": 4})
    assert grown.benchmark_per_task() == {"fill": 2, "extend": 4, "removal": 2}
    build_world(small, tmp_path / "s")
    assert build_world(grown, tmp_path / "g")["benchmark"] == 8
    before = {c.id: c for c in read_manifest(tmp_path / "s" / "benchmark" / "manifest.jsonl")}
    after = {c.id: c for c in read_manifest(tmp_path / "g" / "benchmark" / "manifest.jsonl")}
    assert set(before) < set(after) and sum(c.task == "extend" for c in after.values()) == 4
    for cid, c in before.items():
        assert c.prompt == after[cid].prompt and c.image.read_bytes() == after[cid].image.read_bytes()
    with pytest.raises(ValueError, match="unknown task"):
        DatasetConfig(n_benchmark_by_task={"inpaint": 3})
    with pytest.raises(ValueError, match="every count"):
        DatasetConfig(n_benchmark_by_task={"fill": 0})


def test_load_samples_limits_read_only_the_kept_conditions(tmp_path, monkeypatch):
    import numpy as np

    import steps.io

    build_world(CFG, tmp_path)
    full = datasets.load_samples(tmp_path / "train")
    reads = []
    real_read = steps.io.read_rgb
    monkeypatch.setattr(steps.io, "read_rgb", lambda p: reads.append(p) or real_read(p))
    first = datasets.load_samples(tmp_path / "train", limit=3)
    assert [s.id for s in first] == [s.id for s in full[:3]]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, full))
    assert len(reads) <= 3 * 3, "images of conditions past the limit must not be read"
    per_task = datasets.load_samples(tmp_path / "train", limit_per_task=2, limit=3)
    assert len(per_task) == 3 and len({s.task for s in per_task}) >= 2


def test_seed_changes_data(tmp_path):
    build_world(CFG, tmp_path / "a")
    build_world(DatasetConfig(size=32, n_train=20, n_benchmark_per_task=2, seed=1), tmp_path / "b")
    assert tree_digest(tmp_path / "a" / "train") != tree_digest(tmp_path / "b" / "train")


def test_failed_build_leaves_previous_split_untouched(tmp_path, monkeypatch):
    build_world(CFG, tmp_path)
    before = tree_digest(tmp_path / "train")

    def broken(*a, **k):
        raise RuntimeError("validation exploded")

    monkeypatch.setattr(datasets, "read_manifest", broken)
    with pytest.raises(RuntimeError):
        build_world(DatasetConfig(size=32, n_train=20, n_benchmark_per_task=2, seed=5), tmp_path)
    assert tree_digest(tmp_path / "train") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmark", "train", "validation"], "no temp folders left behind"


def test_photo_split(tmp_path):
    n = build_photos(CFG, tmp_path)
    conds = read_manifest(tmp_path / "photos" / "manifest.jsonl")
    assert n == len(conds) >= 30
    assert {c.task for c in conds} == {"fill", "extend", "removal"}
    assert all((c.target is not None) == (c.task == "extend") for c in conds)


def test_config_validation_names_source_and_field():
    with pytest.raises(ConfigError, match=r"my source \(sise\): unknown field 'sise'.*did you mean 'size'"):
        from_dict(DatasetConfig, {"sise": 64}, "my source")
    with pytest.raises(ConfigError, match="multiple of 8"):
        from_dict(DatasetConfig, {"size": 30}, "x")


def test_cli_builds_from_a_profile_file(tmp_path):
    """What DVC's world stage runs: the datasets section of a profile file (dvc.yaml)."""
    params = tmp_path / "mine.yaml"
    params.write_text("datasets:\n  size: 32\n  n_train: 5\n  n_benchmark_per_task: 1\n")
    datasets.main(["world", "--config", str(params), "--key", "datasets", "--out", str(tmp_path / "d")])
    assert len(read_manifest(tmp_path / "d" / "train" / "manifest.jsonl")) == 5


def test_a_bad_key_in_the_file_names_file_line_and_field(tmp_path):
    params = tmp_path / "mine.yaml"
    params.write_text("datasets:\n  size: 32\n  n_trian: 5\n")
    with pytest.raises(ConfigError, match=r"mine.yaml:3 \(datasets.n_trian\): unknown field 'n_trian'"):
        datasets.main(["world", "--config", str(params), "--key", "datasets", "--out", str(tmp_path / "d")])
    assert not (tmp_path / "d").exists()


def test_tiny_benchmark_sizes_come_from_the_width():
    """tiny's benchmark: every task's net win has a 95% interval of at most +-0.10 whatever the ratings (issue 23);
    50 per task, the old size, could be +-0.28 wide."""
    from steps.evaluation.netwin import worst_case_half_width

    cfg = DatasetConfig.for_profile("tiny", REPO)
    widths = datasets.benchmark_half_widths(cfg)
    assert set(widths) == {"fill", "extend", "removal"} and max(widths.values()) <= 0.10
    assert worst_case_half_width([("removal_quality",)] * 50) > 0.27
