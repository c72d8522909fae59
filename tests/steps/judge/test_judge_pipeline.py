"""Preference data -> judge training -> agreement gate, on the smoke profile (seconds)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from steps.data.datasets import DatasetConfig, build_world, load_samples
from steps.foundations.judge_pretrain import JudgePretrainConfig, pretrain_judge
from steps.judge.agreement import AgreementConfig, gate, run_agreement, split_of, wilson
from steps.judge.annotate import AnnotateConfig, annotate
from steps.judge.candidates import CandidatesConfig, generate_candidates, read_candidate_sets
from steps.judge.easy_pairs import easy_loser
from steps.judge.train import JudgeConfig, train_judge
from steps.manifest import ManifestError
from steps.preferences import read_pairs
from steps.world import DIMENSIONS, dimensions_for, score


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    """World (32 px) -> random-init smoke base -> 4 candidates x 24 conditions -> simulated pairs."""
    from steps.models.policy import build_tiny_fill_pipeline, save_pipeline, spec_for

    root = tmp_path_factory.mktemp("prefs")
    build_world(DatasetConfig(size=32, n_train=24, n_benchmark_per_task=2), root / "data")
    save_pipeline(build_tiny_fill_pipeline(spec_for("smoke"), seed=0), root / "base", spec_for("smoke"))
    generate_candidates(CandidatesConfig(base_dir=str(root / "base"), train_dir=str(root / "data/train"),
                                         out_dir=str(root / "cands"), n_conditions=24, batch_size=12))
    info = annotate(AnnotateConfig(candidates_dir=str(root / "cands"), train_dir=str(root / "data/train"),
                                   out_dir=str(root / "prefs"), noise=0.0, tie_margin=0.0))
    return root, info


def test_candidates_and_simulated_pairs(prefs):
    root, info = prefs
    sets = read_candidate_sets(root / "cands" / "candidates.jsonl")
    assert len(sets) == 24 and all(len(s["candidates"]) == 4 and len(s["sampling"]) == 4 for s in sets)
    assert len({json.dumps(s["sampling"][0]) for s in sets} | {json.dumps(s["sampling"][1]) for s in sets}) > 1
    from steps.manifest import read_manifest

    conds = {c.id: c for c in read_manifest(root / "data/train/manifest.jsonl")}
    pairs = read_pairs(root / "prefs" / "pairs.jsonl", conds)
    assert info["n_pairs"] == len(pairs) > 0 and all(p.source == "simulated" for p in pairs)
    samples = {s.id: s for s in load_samples(root / "data/train")}
    from steps.io import read_rgb

    for p in pairs[:20]:  # noise 0: the winner really scores higher on the pair's dimension
        s = samples[p.condition_id]
        assert score(read_rgb(p.winner), s)[p.dimension] >= score(read_rgb(p.loser), s)[p.dimension]
        assert p.meta["clean_winner"].endswith(p.winner.name)
    assert "SIMULATED" in (root / "prefs" / "README.txt").read_text()


def test_human_pairs_are_validated_before_anything_is_written(prefs, tmp_path):
    root, _ = prefs
    human = tmp_path / "export"
    shutil.copytree(root / "prefs", human)
    lines = (human / "pairs.jsonl").read_text().splitlines()
    bad = json.loads(lines[0]) | {"dimension": "removal_quality" if json.loads(lines[0])["task"] != "removal"
                                  else "aesthetics", "source": "human"}
    (human / "pairs.jsonl").write_text("\n".join([json.dumps(bad)] + lines[1:]) + "\n")
    out = tmp_path / "ingested"
    with pytest.raises(ManifestError, match=r"pairs.jsonl:1: field 'dimension'"):
        annotate(AnnotateConfig(human_dir=str(human), train_dir=str(root / "data/train"), out_dir=str(out)))
    assert not out.exists()
    (human / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    info = annotate(AnnotateConfig(human_dir=str(human), train_dir=str(root / "data/train"), out_dir=str(out)))
    assert info["n_pairs"] == len(lines) and (out / "pairs.jsonl").exists()


def test_easy_losers_are_worse_on_their_dimension():
    from steps.world import WorldConfig, make_sample

    rng = np.random.default_rng(0)
    for i, task in enumerate(["fill", "fill", "extend", "removal"] * 3):
        s = make_sample(WorldConfig(size=64, extend_prompt_fraction=1.0), i, task)
        for dim in dimensions_for(s.task, s.prompt):
            assert score(easy_loser(s, dim, rng), s)[dim] < score(s.target, s)[dim] - 0.05, (task, dim)


def test_pretraining_pairs_are_labelled_by_the_world():
    from steps.foundations.judge_pairs import pair_batch, soft_label
    from steps.world import WorldConfig, make_sample, score

    samples = [make_sample(WorldConfig(size=32), i, t) for i in range(12) for t in ("fill", "extend", "removal")]
    cfg = JudgePretrainConfig(profile="smoke")
    firsts, seconds, queries, labels, picked, dims = pair_batch(samples, np.random.default_rng(0), 40, cfg,
                                                                anchor_prob=0.5)
    for a, b, p, s, d in zip(firsts, seconds, labels, picked, dims):
        assert p == pytest.approx(soft_label(score(a, s, (d,))[d], score(b, s, (d,))[d], cfg.label_temperature))
    assert (labels > 0.7).any() and (labels < 0.3).any(), "both orders of clear pairs occur"
    assert len(set(queries)) > 5


@pytest.mark.parametrize("seed", range(4))
def test_hard_negative_textures_lose_against_the_target(seed):
    from steps.foundations.judge_pairs import variant
    from steps.world import WorldConfig, dimensions_for, make_sample, score

    rng = np.random.default_rng(seed)
    for i in range(6):
        s = make_sample(WorldConfig(size=64), i, "fill")
        textured = variant(s, rng, "texture")
        assert textured.shape == s.target.shape and textured.dtype == np.uint8
        worse = [score(textured, s)[d] < score(s.target, s)[d] for d in dimensions_for(s.task, s.prompt)]
        assert sum(worse) >= 2, "a texture in the edited region is worse on most dimensions"


def test_adversarial_images_stay_within_budget_and_raise_the_loss():
    import torch

    from steps.judge.losses import adversarial_images, soft_yes_no_loss, to_float
    from steps.models.judge import Judge
    from steps.models.judge_spec import spec_for
    from steps.world import WorldConfig, make_sample

    judge = Judge.build(spec_for("smoke"))
    samples = [make_sample(WorldConfig(size=32), i, "removal") for i in range(4)]
    first, second = to_float(np.stack([s.target for s in samples])), to_float(np.stack([s.image for s in samples]))
    q = ["Is the first image better than the second?"] * 4
    p = torch.ones(4)
    a, b = adversarial_images(judge, first, second, q, p, budget=0.03, steps=3)
    for x, x0 in ((a, first), (b, second)):
        rms = (x - x0).pow(2).flatten(1).mean(1).sqrt()
        assert (rms <= 0.03 + 1e-5).all() and (rms > 0.005).any()
    with torch.no_grad():
        before, _ = soft_yes_no_loss(judge, first, second, q, p)
        after, _ = soft_yes_no_loss(judge, a, b, q, p)
    assert after > before


def test_judge_training_and_agreement_gate(prefs, tmp_path):
    root, _ = prefs
    pre = pretrain_judge(JudgePretrainConfig(profile="smoke", train_dir=str(root / "data/train"),
                                             out_dir=str(tmp_path / "pre"), steps=5, batch_size=8,
                                             eval_conditions=6))
    assert "pretrain/heldout_accuracy" in pre["metrics"] and pre["evals"][-1]["step"] == 5
    logged = []
    summary = train_judge(JudgeConfig(profile="smoke", init_dir=str(tmp_path / "pre"), pairs_dir=str(root / "prefs"),
                                      train_dir=str(root / "data/train"), out_dir=str(tmp_path / "judge"),
                                      steps=6, batch_size=4, log_every=2, heldout_fraction=0.3),
                          log=lambda m, s: logged.append(m))
    assert summary["n_train_pairs"] > 0 and summary["n_heldout_pairs"] > 0
    assert any(m["judge/easy_batch"] == 1.0 for m in logged)
    result = run_agreement(AgreementConfig(judge_dir=str(tmp_path / "judge"), pairs_dir=str(root / "prefs"),
                                           train_dir=str(root / "data/train"), out_dir=str(tmp_path / "agree"),
                                           heldout_fraction=0.3, min_pairs=1))
    for cell, row in result["table"].items():
        assert cell.split("/")[1] in DIMENSIONS[cell.split("/")[0]]
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"] and row["clean_accuracy"] == row["accuracy"]
    assert (tmp_path / "agree" / "agreement.png").exists() and "SIMULATED" in result["markdown"]
    assert result["passed"] == all(r["accuracy"] >= r["threshold"] for r in result["table"].values()) \
        and not result["warnings"]
    probe = result["probe"]
    assert set(probe["cells"]) == {"0.03", "0.12"} and "Gradient probe" in result["probe_markdown"]
    for key, cells in probe["cells"].items():
        assert set(cells) <= set(result["table"]) and all(0 < c["p_yes_end"] < 1 for c in cells.values())
        assert probe["metrics"][f"probe/{key}/mean_truth_change"] == probe["summary"][key]["mean_truth_change"]


def test_gate_rules():
    row = {"accuracy": 0.9, "threshold": 0.8, "passed": True, "n": 50}
    assert gate({"fill/consistency": row}, ["fill/consistency"])[0]
    failing = dict(row, accuracy=0.7, passed=False)
    ok, reasons, _ = gate({"fill/consistency": failing})
    assert not ok and "0.700 < threshold 0.8000" in reasons[0]
    ok, reasons, _ = gate({"fill/consistency": dict(row, n=5)}, min_pairs=20)
    assert not ok and "cannot be validated" in reasons[0]
    ok, reasons, warnings = gate({}, ["removal/removal_quality"], insufficient="warn")
    assert ok and not reasons and "0 held-out pairs" in warnings[0]


def test_split_and_interval():
    ids = [f"fill-{i:06d}" for i in range(2000)]
    held = [i for i in ids if split_of(i, 0.2) == "heldout"]
    assert 0.17 < len(held) / len(ids) < 0.23 and held == [i for i in ids if split_of(i, 0.2) == "heldout"]
    lo, hi = wilson(80, 100)
    assert lo == pytest.approx(0.711, abs=0.002) and hi == pytest.approx(0.867, abs=0.002)


def test_config_guards():
    with pytest.raises(ValueError, match="init_dir"):
        JudgeConfig(profile="flux")
    with pytest.raises(ValueError, match="flux"):
        JudgePretrainConfig(profile="flux")


def test_easy_pair_batches_put_the_target_first_then_second():
    from steps.judge.easy_pairs import easy_pair_batch
    from steps.world import WorldConfig, make_sample

    samples = [make_sample(WorldConfig(size=32), i, t) for i, t in enumerate(["fill", "extend", "removal"] * 2)]
    (firsts, seconds), queries, labels = easy_pair_batch(samples, np.random.default_rng(0), 5)
    assert firsts.shape == seconds.shape == (10, 32, 32, 3) and len(queries) == 10
    assert labels.tolist() == [True, False] * 5 and queries[0::2] == queries[1::2]
    targets = {s.target.tobytes() for s in samples}
    assert all(firsts[i].tobytes() in targets and (seconds[i] == firsts[i + 1]).all() for i in range(0, 10, 2))


def test_masked_source_blanks_only_the_region():
    from steps.vocabulary import masked_source
    from steps.world import EXTEND_FILL_GREY, WorldConfig, make_sample

    s = make_sample(WorldConfig(size=32), 0, "fill")
    shown = masked_source(s.image, s.mask)
    inside = s.mask > 127
    assert (shown[inside] == EXTEND_FILL_GREY).all() and (shown[~inside] == s.image[~inside]).all()
    assert shown is not s.image and not (s.image[inside] == EXTEND_FILL_GREY).all()  # input left alone


def test_candidate_easy_pairs_are_better_by_construction(prefs):
    from steps.io import read_rgb
    from steps.judge.easy_pairs import CANDIDATE_EASY_DIMENSIONS, candidate_easy_pair

    root, _ = prefs
    samples = {s.id: s for s in load_samples(root / "data/train")}
    rng = np.random.default_rng(0)
    checked = 0
    for cset in read_candidate_sets(root / "cands" / "candidates.jsonl")[:8]:
        s = samples[cset["condition_id"]]
        cand = read_rgb(root / "cands" / cset["candidates"][0])
        for dim in set(dimensions_for(s.task, s.prompt)) & set(CANDIDATE_EASY_DIMENSIONS):
            better, worse = candidate_easy_pair(s, cand, dim, rng)
            assert worse is cand and better.shape == cand.shape and better.dtype == np.uint8
            if dim == "consistency":  # only the kept region moved, toward the source
                inside = s.mask > 127
                assert (better[inside] == cand[inside]).all()
                kept = ~inside
                assert np.abs(better.astype(float) - s.image)[kept].mean() < np.abs(cand.astype(float) - s.image)[kept].mean()
            else:
                assert score(better, s)[dim] >= score(cand, s)[dim]
            checked += 1
    assert checked >= 8


def test_a_judge_trained_with_the_source_is_shown_it_everywhere(prefs, tmp_path):
    """show_source is recorded with the judge; the agreement table and the benchmark pass the masked source."""
    import torch

    from steps.evaluation.benchmark import Item, judge_ratings
    from steps.judge.train import trained_with_source
    from steps.models.judge import Judge
    from steps.vocabulary import masked_source

    root, _ = prefs
    cfg = JudgeConfig(profile="smoke", pairs_dir=str(root / "prefs"), train_dir=str(root / "data/train"),
                      out_dir=str(tmp_path / "judge"), steps=2, batch_size=2, heldout_fraction=0.3, show_source=True)
    train_judge(cfg)
    assert trained_with_source(cfg.out_dir) and not trained_with_source(tmp_path / "nowhere")
    judge = Judge.load(cfg.out_dir).eval()
    s = load_samples(root / "data/train")[0]
    a, b = s.target, np.zeros_like(s.target)
    item = Item(condition=type("C", (), {"id": s.id, "task": s.task, "prompt": s.prompt})(), image=s.image,
                mask=s.mask, target=s.target)
    with_src = judge_ratings(judge, [item], {s.id: a}, {"other": {s.id: b}}, show_source=True)
    from steps.preferences import judge_query

    dims = dimensions_for(s.task, s.prompt)
    qs = [judge_query(s.task, d, s.prompt) for d in dims]
    src = np.stack([masked_source(s.image, s.mask)] * len(dims))
    with torch.no_grad():
        p_ab = judge.p_yes(np.stack([a] * len(dims)), np.stack([b] * len(dims)), qs, src).numpy()
        p_ba = judge.p_yes(np.stack([b] * len(dims)), np.stack([a] * len(dims)), qs, src).numpy()
    for d, x, y in zip(dims, p_ab, p_ba):
        expected = "good" if x > 0.5 and y < 0.5 else "bad" if x < 0.5 and y > 0.5 else "same"
        assert with_src["other"][s.task][d][expected] == 1


def test_judge_ablation_script_runs_its_variants(prefs, tmp_path):
    import argparse
    import importlib.util
    from pathlib import Path

    root, _ = prefs
    spec = importlib.util.spec_from_file_location("judge_ablations", Path("bench/judge/judge_ablations.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = argparse.Namespace(candidates=str(root / "cands"), train_dir=str(root / "data/train"), pretrained="",
                              profile="smoke", steps=2, threads=1, variants=["baseline", "noise_20"],
                              work=str(tmp_path / "work"))
    results = mod.run(args)
    assert set(results) == {"baseline", "noise_20"} and results["noise_20"]["noise"] == 0.2
    pairs = [json.loads(x) for x in (tmp_path / "work/pairs_noise10/pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["source"] == "simulated" for p in pairs)
    for r in results.values():
        assert 0 <= r["mean_accuracy"] <= 1 and r["table"]
    assert "| baseline |" in mod.markdown(results)


def test_compare_asks_both_orders_and_shows_the_source_as_trained():
    import torch

    from steps.models.judge import BothOrders, preference

    class Recorder(BothOrders):
        def __init__(self, record):
            self.record, self.calls = record, []

        def p_yes(self, first, second, queries, *extra):
            self.calls.append(len(extra))
            return torch.tensor([0.8 if f.mean() > s.mean() else 0.3 for f, s in zip(first, second)])

    bright, dark = np.full((3, 8, 8, 3), 200, np.uint8), np.zeros((3, 8, 8, 3), np.uint8)
    args = (bright, dark, ["fill"] * 3, ["consistency"] * 3, ["a red circle"] * 3)
    plain = Recorder({})
    fwd, bwd = plain.compare(*args)
    assert np.allclose(fwd, 0.8) and np.allclose(bwd, 0.3) and np.allclose(preference(fwd, bwd), 0.75)
    assert plain.calls == [0, 0]
    shown = Recorder({"config": {"show_source": True}})
    with pytest.raises(ValueError, match="masked source"):
        shown.compare(*args)
    shown.compare(*args, sources=bright, masks=np.zeros((3, 8, 8), np.uint8))
    assert shown.calls == [1, 1]


def test_attacked_pairs_stay_mirrored_and_within_budget():
    import torch

    from steps.judge.losses import attacked
    from steps.models.judge import Judge
    from steps.models.judge_spec import spec_for
    from steps.world import WorldConfig, make_sample

    judge = Judge.build(spec_for("smoke"))
    samples = [make_sample(WorldConfig(size=32), i, "removal") for i in range(3)]
    firsts, seconds = [], []
    for s in samples:
        firsts += [s.target, s.image]
        seconds += [s.image, s.target]
    queries = ["Is the first image better than the second?"] * 6
    first, second = attacked(judge, [np.stack(firsts), np.stack(seconds)], queries, 2, 0.01, 2)
    assert torch.equal(first[0], second[1]) and torch.equal(second[0], first[1])  # pair 0 mirrored
    target = torch.as_tensor(samples[0].target).permute(2, 0, 1).float() / 255
    rms = (first[0] - target).pow(2).mean().sqrt()
    assert 0 < rms <= 0.01 + 1e-5
    untouched = torch.as_tensor(samples[2].target).permute(2, 0, 1).float() / 255
    assert torch.equal(first[4], untouched)  # the third pair is not attacked


def test_selection_pairs_choose_the_saved_step_and_never_train(prefs, tmp_path):
    """select_fraction sets a band of training-side conditions apart: disjoint from the held-out agreement split,
    never trained on; the saved weights are those of the evaluation with the best agreement on them."""
    from steps.judge.agreement import load_preference_data
    from steps.judge.train import selection_split

    root, _ = prefs
    data = load_preference_data(root / "prefs", root / "data/train", 0.3)
    chosen = selection_split(data, 0.3, 0.4)
    held = {p.condition_id for p in data["heldout"]}
    assert chosen["pairs"] and not chosen["conditions"] & held
    assert chosen["conditions"] < {p.condition_id for p in data["train"]}
    logged = []
    summary = train_judge(JudgeConfig(profile="smoke", pairs_dir=str(root / "prefs"), train_dir=str(root / "data/train"),
                                      out_dir=str(tmp_path / "judge"), steps=6, batch_size=4, heldout_fraction=0.3,
                                      select_fraction=0.4, select_every=2), log=lambda m, s: logged.append((s, m)))
    scores = {s: m["judge/selection_agreement"] for s, m in logged if "judge/selection_agreement" in m}
    assert sorted(scores) == [2, 4, 6]
    best = max(scores, key=lambda s: (scores[s], -s))  # the first of equal scores is kept
    assert summary["selected"]["step"] == best and summary["selected"]["n_selection_pairs"] == len(chosen["pairs"])
    assert summary["n_train_pairs"] == len(data["train"]) - len(chosen["pairs"])
    with pytest.raises(ValueError, match="select_fraction"):
        JudgeConfig(profile="smoke", heldout_fraction=0.6, select_fraction=0.5)


def test_a_source_seeing_foundation_must_be_fine_tuned_with_the_source(prefs, tmp_path):
    root, _ = prefs
    pretrain_judge(JudgePretrainConfig(profile="smoke", train_dir=str(root / "data/train"), out_dir=str(tmp_path / "f"),
                                       steps=2, batch_size=4, eval_conditions=4, show_source=True))
    with pytest.raises(ValueError, match="show_source=true"):
        train_judge(JudgeConfig(profile="smoke", init_dir=str(tmp_path / "f"), pairs_dir=str(root / "prefs"),
                                train_dir=str(root / "data/train"), out_dir=str(tmp_path / "j"), steps=1,
                                heldout_fraction=0.3))


class Killed(Exception):
    pass


def _straight_and_resumed(tmp_path, run, loss_key: str):
    """``run(name, log)`` 8 steps straight, then killed in step 6 and resumed from the step-4 checkpoint;
    asserts the resumed run continued after step 4 and saved bit-identical weights; (straight, resumed)."""
    from safetensors.numpy import load_file

    def die_in_step_6(metrics, step):
        if loss_key in metrics and step == 5:
            raise Killed

    full = run("full", None)
    with pytest.raises(Killed):
        run("cut", die_in_step_6)
    seen = []
    cut = run("cut", lambda m, s: seen.append(s))
    assert min(seen) == 4
    a, b = (load_file(tmp_path / n / "judge" / "model.safetensors") for n in ("full", "cut"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return full, cut


def test_judge_training_kill_and_resume_gives_the_uninterrupted_weights(prefs, tmp_path):
    """Same weights (bit-identical), loss curve and selected step (the selection's best weights are
    checkpointed too) after a kill and a resume; a changed config is refused."""
    root, _ = prefs
    settings = dict(profile="smoke", pairs_dir=str(root / "prefs"), train_dir=str(root / "data/train"), steps=8,
                    batch_size=4, log_every=1, heldout_fraction=0.3, select_fraction=0.3, select_every=3,
                    adv_share=0.5)

    def run(name, log):
        return train_judge(JudgeConfig(**settings, out_dir=str(tmp_path / name / "judge"),
                                       checkpoint_dir=str(tmp_path / name / "ckpt"), checkpoint_every=4), log)

    full, cut = _straight_and_resumed(tmp_path, run, "judge/loss")
    assert full["loss_curve"] == cut["loss_curve"] and full["selected"] == cut["selected"]
    with pytest.raises(ValueError, match="cannot resume.*lr"):
        train_judge(JudgeConfig(**{**settings, "lr": 1e-3}, out_dir=str(tmp_path / "x"),
                                checkpoint_dir=str(tmp_path / "cut" / "ckpt")))


def test_judge_pretraining_kill_and_resume_gives_the_uninterrupted_weights(prefs, tmp_path):
    """Anchor phase, then adversarial pairs: the same weights and metrics after a kill and a resume."""
    root, _ = prefs

    def run(name, log):
        return pretrain_judge(JudgePretrainConfig(
            profile="smoke", train_dir=str(root / "data/train"), out_dir=str(tmp_path / name / "judge"), steps=8,
            batch_size=4, eval_conditions=4, log_every=1, adv_share=0.5, anchor_fraction=0.25,
            checkpoint_dir=str(tmp_path / name / "ckpt"), checkpoint_every=4), log)

    full, cut = _straight_and_resumed(tmp_path, run, "pretrain/loss")
    assert full["metrics"] == cut["metrics"]
