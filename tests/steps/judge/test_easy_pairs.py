"""Easy pairs of the judge's curriculum (steps/judge/easy_pairs.py) and the masked source they show."""

from __future__ import annotations

import numpy as np

from steps.data.datasets import load_samples
from steps.judge.candidates import read_candidate_sets
from steps.judge.easy_pairs import easy_loser
from steps.world import dimensions_for, score


def test_easy_losers_are_worse_on_their_dimension():
    from steps.world import WorldConfig, make_sample

    rng = np.random.default_rng(0)
    for i, task in enumerate(["fill", "fill", "extend", "removal"] * 3):
        s = make_sample(WorldConfig(size=64, extend_prompt_fraction=1.0), i, task)
        for dim in dimensions_for(s.task, s.prompt):
            assert score(easy_loser(s, dim, rng), s)[dim] < score(s.target, s)[dim] - 0.05, (task, dim)


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
