"""bench/benchlib.py: the doc writer keeps hand-written text; spans account exclusive time."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.loader import load_bench

BENCHLIB = Path(__file__).resolve().parents[2] / "bench" / "benchlib.py"


@pytest.fixture(scope="module")
def lib():
    module = load_bench(BENCHLIB, "benchlib")
    return module


def test_write_section_replaces_only_its_block(lib, tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# B\n\nintro\n")
    lib.write_section("a.py", "first", doc)
    lib.write_section("b.py", "other", doc)
    text = doc.read_text() + "\nhand-written notes\n"
    doc.write_text(text)
    lib.write_section("a.py", "second", doc)
    out = doc.read_text()
    assert "second" in out and "first" not in out and "other" in out
    assert out.startswith("# B\n\nintro\n") and "hand-written notes" in out
    assert out.count("BEGIN a.py") == 1


def test_phases_exclusive_time_with_any_clock(lib):
    ticks = iter(range(100))
    phases = lib.Phases(clock=lambda: next(ticks))
    with phases.span("outer"):  # 0 .. 5
        with phases.span("inner"):  # 1 .. 2
            pass
        phases.add("added", 1.0)
        with phases.span("inner"):  # 3 .. 4
            pass
    got = phases.take()
    assert got == {"inner": 2, "added": 1.0, "outer": 5 - 2 - 1.0}
    assert phases.take() == {}


def test_threads_benchmark_runs_and_reports_a_ratio(tmp_path, capsys):
    from steps.data.datasets import DatasetConfig, build_world

    build_world(DatasetConfig(size=32, n_train=8, n_benchmark_per_task=1), tmp_path / "data")
    mod = load_bench(Path("bench/judge/threads.py"), "threads_bench")
    mod.main(["--profile", "smoke", "--train-dir", str(tmp_path / "data/train"), "--reps", "1", "--steps", "1"])
    out = capsys.readouterr().out
    assert "with 1 thread vs" in out and out.rstrip().endswith("x**")
