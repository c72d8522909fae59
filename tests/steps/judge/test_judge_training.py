"""Judge training (steps/judge/train.py) on the smoke profile: config, the source shown as trained, selection, exact resume."""

from __future__ import annotations

import numpy as np
import pytest

from steps.data.datasets import load_samples
from steps.foundations.judge_pretrain import JudgePretrainConfig, pretrain_judge
from steps.judge.train import JudgeConfig, train_judge
from steps.world import dimensions_for
from tests.steps.resume import straight_and_resumed


def test_config_guards():
    with pytest.raises(ValueError, match="init_dir"):
        JudgeConfig(profile="flux")
    with pytest.raises(ValueError, match="flux"):
        JudgePretrainConfig(profile="flux")


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


def test_selection_pairs_choose_the_saved_step_and_never_train(prefs, tmp_path):
    """The held-out slice of the run's pairs is the selection set: never trained on; the saved weights are those of
    the evaluation with the best agreement on it, and the choice is recorded with its score in training.json."""
    from steps.judge.agreement import load_preference_data
    from steps.models.judge import training_record

    root, _ = prefs
    data = load_preference_data(root / "prefs", root / "data/train", 0.3)
    assert data["heldout"] and not {p.condition_id for p in data["heldout"]} & {p.condition_id for p in data["train"]}
    logged = []
    summary = train_judge(JudgeConfig(profile="smoke", pairs_dir=str(root / "prefs"), train_dir=str(root / "data/train"),
                                      out_dir=str(tmp_path / "judge"), steps=6, batch_size=4, heldout_fraction=0.3,
                                      select_every=2), log=lambda m, s: logged.append((s, m)))
    scores = {s: m["judge/selection_agreement"] for s, m in logged if "judge/selection_agreement" in m}
    assert sorted(scores) == [2, 4, 6]
    best = max(scores, key=lambda s: (scores[s], -s))  # the first of equal scores is kept
    chosen = summary["selected"]
    assert chosen["step"] == best and chosen["selection_agreement"] == scores[best]
    assert chosen["n_selection_pairs"] == len(data["heldout"]) and chosen["scores"] == [[s, scores[s]] for s in (2, 4, 6)]
    assert summary["n_train_pairs"] == len(data["train"])
    assert training_record(tmp_path / "judge")["selected"] == chosen  # recorded beside the weights
    assert any(m.get("judge/selected_step") == best and m.get("judge/selected_agreement") == scores[best]
               for _, m in logged)
    with pytest.raises(ValueError, match="select_every"):
        JudgeConfig(profile="smoke", select_every=-1)


def test_a_source_seeing_foundation_must_be_fine_tuned_with_the_source(prefs, tmp_path):
    root, _ = prefs
    pretrain_judge(JudgePretrainConfig(profile="smoke", train_dir=str(root / "data/train"), out_dir=str(tmp_path / "f"),
                                       steps=2, batch_size=4, eval_conditions=4, show_source=True))
    with pytest.raises(ValueError, match="show_source=true"):
        train_judge(JudgeConfig(profile="smoke", init_dir=str(tmp_path / "f"), pairs_dir=str(root / "prefs"),
                                train_dir=str(root / "data/train"), out_dir=str(tmp_path / "j"), steps=1,
                                heldout_fraction=0.3))


def test_judge_training_kill_and_resume_gives_the_uninterrupted_weights(prefs, tmp_path):
    """Same weights (bit-identical), loss curve and selected step (the selection's best weights are
    checkpointed too) after a kill and a resume; a changed config is refused."""
    root, _ = prefs
    settings = dict(profile="smoke", pairs_dir=str(root / "prefs"), train_dir=str(root / "data/train"), steps=8,
                    batch_size=4, log_every=1, heldout_fraction=0.3, select_every=3,
                    adv_share=0.5)

    def run(name, log):
        return train_judge(JudgeConfig(**settings, out_dir=str(tmp_path / name / "judge"),
                                       checkpoint_dir=str(tmp_path / name / "ckpt"), checkpoint_every=4), log)

    full, cut = straight_and_resumed(tmp_path, run, "judge/loss")
    assert full["loss_curve"] == cut["loss_curve"] and full["selected"] == cut["selected"]
    with pytest.raises(ValueError, match="cannot resume.*lr"):
        train_judge(JudgeConfig(**{**settings, "lr": 1e-3}, out_dir=str(tmp_path / "x"),
                                checkpoint_dir=str(tmp_path / "cut" / "ckpt")))
