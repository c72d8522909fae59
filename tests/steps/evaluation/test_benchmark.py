"""Benchmark: good/same/bad by the judge (both orders) and the simulated annotators, reference metrics, reports."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from steps.data.datasets import DatasetConfig, build_photos, build_world
from steps.evaluation.benchmark import BenchmarkConfig, run_benchmark
from steps.evaluation.competitors import read_conditions, run_classical
from steps.evaluation.netwin import gsb_cells, net_win, net_win_ci
from steps.io import read_mask, read_rgb, write_png
from steps.manifest import ManifestError
from steps.models.judge import BothOrders
from steps.world import dimensions_for

KEY = re.compile(r"^gsb/(judge|annotators)/[A-Za-z0-9_.-]+/(fill|extend|removal)/[a-z_]+/(good|same|bad)$")


class TruthJudge(BothOrders):
    """Says Yes exactly when the first image is a ground-truth target and the second is not."""

    def __init__(self, targets):
        self.targets = {t.tobytes() for t in targets}

    def p_yes(self, first, second, queries):
        import torch

        assert len(first) == len(second) == len(queries)
        p = [0.5 + 0.4 * ((a.tobytes() in self.targets) - (b.tobytes() in self.targets)) for a, b in zip(first, second)]
        return torch.tensor(p)


class FirstBiasedJudge(BothOrders):
    """Always prefers whatever is shown first: pure position bias."""

    def p_yes(self, first, second, queries):
        import torch

        return torch.full((len(queries),), 0.9)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic benchmark with competitors: oracle (the targets), grey fill, telea, reflect (extend only)."""
    root = tmp_path_factory.mktemp("bench")
    build_world(DatasetConfig(size=32, n_train=2, n_benchmark_per_task=2), root)
    conditions = read_conditions(root / "benchmark")
    comp = root / "competitors"
    for c in conditions:
        write_png(comp / "oracle" / f"{c.id}.png", read_rgb(c.target))
        grey = read_rgb(c.image).copy()
        grey[read_mask(c.mask) > 127] = 128
        write_png(comp / "grey" / f"{c.id}.png", grey)
    run_classical("telea", conditions, comp)
    run_classical("reflect", conditions, comp)
    return root, conditions


def _cfg(root, tmp_path, **kw):
    values = dict(benchmark=str(root / "benchmark"), competitors_dir=str(root / "competitors"), ours="oracle",
                  out_dir=str(tmp_path / "report"), grid_rows=2,
                  judge_dir=str(tmp_path / "no_judge"))  # the test judges are passed in: no training record read
    values.update(kw)
    return BenchmarkConfig(**values)


def test_truth_outscores_grey_by_judge_and_simulated_annotators(world, tmp_path):
    root, conditions = world
    result = run_benchmark(_cfg(root, tmp_path), judge=TruthJudge([read_rgb(c.target) for c in conditions]))
    m = result["metrics"]
    gsb = {k: v for k, v in m.items() if k.startswith("gsb/")}
    assert gsb and all(KEY.match(k) for k in gsb)
    assert result["raters"] == ["judge", "annotators"] and result["systems"] == ["grey", "reflect", "telea"]
    for rater in ("judge", "annotators"):
        for cell in gsb_cells(m, rater, "grey").values():
            assert sum(cell.values()) == pytest.approx(1.0)
            assert 0.0 <= cell["good"] <= 1.0
    # The judge knows the truth: ours (the targets) is better than grey on every condition and dimension.
    assert all(cell["good"] == 1.0 for cell in gsb_cells(m, "judge", "grey").values())
    # Simulated annotators: content in the hole is better, the untouched outside is a tie.
    assert m["gsb/annotators/grey/removal/removal_quality/good"] == 1.0
    assert m["gsb/annotators/grey/fill/text_alignment/good"] == 1.0
    assert m["gsb/annotators/grey/fill/consistency/same"] == 1.0
    assert net_win(m, "annotators", "grey") > 0.3
    # reflect only covers extend; extend asks text_alignment only of conditions with a user prompt.
    assert {t for t, _ in gsb_cells(m, "judge", "reflect")} == {"extend"}
    extend_dims = {d for c in conditions if c.task == "extend" for d in dimensions_for(c.task, c.prompt)}
    assert {d for _, d in gsb_cells(m, "judge", "reflect")} == extend_dims
    # Reference metrics: the targets fill the hole exactly (capped PSNR) and telea keeps the source outside it.
    assert m["psnr/filled/oracle/fill"] == 100.0 and m["ssim/filled/oracle/fill"] == pytest.approx(1.0)
    assert m["psnr/kept/telea/fill"] == 100.0 and m["psnr/filled/grey/fill"] < 40
    assert "psnr/kept/reflect/fill" not in m and "psnr/kept/reflect/extend" in m


def test_judge_rates_the_gates_opponents_everywhere_and_the_rest_on_the_first_conditions(world, tmp_path):
    """judge_per_task: the judge rates systems outside judge_all_systems on the first N conditions of each task; the
    systems the promotion gate reads on all of them; the annotators every system on all; the report shows the n."""
    root, conditions = world
    judge = TruthJudge([read_rgb(c.target) for c in conditions])
    result = run_benchmark(_cfg(root, tmp_path, judge_per_task=1, judge_all_systems=("grey",)), judge=judge)
    m = result["metrics"]
    assert m["net_win/judge/grey/fill/n_conditions"] == 2 and m["net_win/judge/telea/fill/n_conditions"] == 1
    assert m["net_win/judge/telea/n_conditions"] == 3 and m["net_win/annotators/telea/n_conditions"] == 6
    assert m["net_win/judge/reflect/extend/n_conditions"] == 1
    # the judge's ratings on the rated conditions are the same as on the full run's
    full = run_benchmark(_cfg(root, tmp_path / "full", judge_per_task=1, judge_all_systems=("grey", "telea")),
                         judge=judge)["metrics"]
    assert full["net_win/judge/telea/fill/n_conditions"] == 2
    assert {k: v for k, v in m.items() if k.startswith("gsb/judge/grey/")} == \
        {k: v for k, v in full.items() if k.startswith("gsb/judge/grey/")}
    assert "(n=1)" in result["markdown"]
    # two removal conditions, one dimension: +-1.96 / sqrt(2 - 1) at worst, in the report and its summary
    assert result["net_win_widest_half_width"]["removal"] == pytest.approx(1.96)
    assert "removal +-1.960" in result["markdown"]


def test_position_bias_cancels_to_same(world, tmp_path):
    root, _ = world
    result = run_benchmark(_cfg(root, tmp_path, systems=("telea",)), judge=FirstBiasedJudge())
    cells = gsb_cells(result["metrics"], "judge", "telea")
    assert cells and all(c["same"] == 1.0 for c in cells.values())


def test_outputs_charts_grids_markdown_report(world, tmp_path):
    root, conditions = world
    result = run_benchmark(_cfg(root, tmp_path), judge=FirstBiasedJudge())
    assert [p.rsplit("/", 1)[1] for p in result["charts"]] == ["extend.png", "fill.png", "removal.png"]
    for path in result["charts"] + result["grids"]:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 200
    widths = {p.rsplit("/", 1)[1]: Image.open(p).size[0] for p in result["grids"]}
    # extend: source | mask | oracle | grey | reflect | telea | target; fill drops reflect (extend only)
    assert widths["extend.png"] == 150 + 7 * 100 + 4 and widths["fill.png"] == 150 + 6 * 100 + 4
    md = open(result["summary"]).read()
    assert md == result["markdown"]
    assert "SIMULATED" in md and "| grey |" in md and "PSNR" in md
    report = json.loads(open(result["report"]).read())
    assert report["annotators_simulated"] is True and "SIMULATED" in report["note"]
    assert report["metrics"] == pytest.approx(result["metrics"])
    assert report["n_conditions"] == len(conditions)
    assert not list((tmp_path).glob(".report.tmp-*"))
    # every net win carries its 95% interval: in the metrics, the report and both GSB tables of the summary
    for rater in ("judge", "annotators"):
        ci = net_win_ci(result["metrics"], rater, "grey")
        assert ci and ci[0] <= net_win(result["metrics"], rater, "grey") <= ci[1]
        assert report["net_win_ci95"][rater]["grey"]["all"]["value"] == pytest.approx(net_win(result["metrics"], rater, "grey"))
        assert net_win_ci(result["metrics"], rater, "grey", "fill") is not None
    assert md.count("net win per task, 95% interval") == 2 and "[" in md.split("| grey |")[1].split("\n")[0]


def test_photos_have_no_annotators_and_a_real_judge_runs(tmp_path):
    from steps.models.judge import Judge
    from steps.models.judge_spec import spec_for

    build_photos(DatasetConfig(size=32), tmp_path)
    conditions = read_conditions(tmp_path / "photos")[:9]
    manifest = tmp_path / "photos" / "small.jsonl"
    lines = (tmp_path / "photos" / "manifest.jsonl").read_text().splitlines()
    manifest.write_text("\n".join(lines[:9]) + "\n")
    comp = tmp_path / "competitors"
    run_classical("telea", conditions, comp)
    run_classical("biharmonic", conditions, comp)
    cfg = BenchmarkConfig(benchmark=str(manifest), competitors_dir=str(comp), ours="telea",
                          out_dir=str(tmp_path / "report"))
    result = run_benchmark(cfg, judge=Judge.build(spec_for("smoke")))
    m = result["metrics"]
    assert result["raters"] == ["judge"] and not any(k.startswith("gsb/annotators/") for k in m)
    assert all(0.0 <= v <= 1.0 for k, v in m.items() if k.startswith("gsb/"))
    # photos have a target only for extend (the original photo)
    assert "psnr/filled/telea/extend" in m and "psnr/filled/telea/fill" not in m
    assert "no ground truth" in result["markdown"]


def test_bad_competitor_folder_fails_before_writing(world, tmp_path):
    root, conditions = world
    comp = tmp_path / "competitors"
    for name in ("oracle", "broken"):
        for c in conditions[1:] if name == "broken" else conditions:
            write_png(comp / name / f"{c.id}.png", read_rgb(c.target))
    with pytest.raises(ManifestError) as err:
        run_benchmark(_cfg(root, tmp_path, competitors_dir=str(comp)), judge=FirstBiasedJudge())
    assert "broken" in str(err.value) and conditions[0].id in str(err.value)
    assert not (tmp_path / "report").exists()
    with pytest.raises(FileNotFoundError, match="no outputs of our model"):
        run_benchmark(_cfg(root, tmp_path, ours="absent"), judge=FirstBiasedJudge())



def test_outputs_are_rated_pasted_back_with_the_raw_net_win_beside(world, tmp_path):
    # "drift": the target inside the mask, noise outside it. Users get it pasted back (then it IS the target);
    # its raw output is worse where the kept region drifted.
    root, conditions = world
    comp = tmp_path / "competitors"
    rng = np.random.default_rng(0)
    for c in conditions:
        target, keep = read_rgb(c.target), read_mask(c.mask) <= 127
        drift = target.copy()
        drift[keep] = rng.integers(0, 256, size=(int(keep.sum()), 3), dtype=np.uint8)
        write_png(comp / "drift" / f"{c.id}.png", drift)
        write_png(comp / "oracle" / f"{c.id}.png", target)
    pasted = run_benchmark(_cfg(root, tmp_path / "p", competitors_dir=str(comp)), judge=FirstBiasedJudge())
    m = pasted["metrics"]
    assert pasted["outputs_rated"] == "pasted back"
    assert all(cell["same"] == 1.0 for cell in gsb_cells(m, "annotators", "drift").values())
    assert pasted["net_win_raw"]["annotators"]["drift"] > 0.1  # raw, the oracle keeps what drift changed
    assert m["psnr/kept/drift/fill"] < 20  # kept-region metrics stay raw: they measure drift
    raw = run_benchmark(_cfg(root, tmp_path / "r", competitors_dir=str(comp), paste_back=False),
                        judge=FirstBiasedJudge())
    assert raw["outputs_rated"] == "raw" and raw["net_win_raw"] == {}
    assert net_win(raw["metrics"], "annotators", "drift") == pytest.approx(pasted["net_win_raw"]["annotators"]["drift"])
