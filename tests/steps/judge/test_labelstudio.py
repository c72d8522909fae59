"""The Label Studio round trip against a REAL Label Studio server (its own venv, `make labelstudio`).

Start the server, create the project, import candidate sets, submit annotations through its REST API as an
annotator would, export, convert, ingest, check the pairs; stop the server. No mocks of Label Studio.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from steps.judge.labelstudio import LS_VENV, LabelStudioServer, labeling_config, open_project
from steps.judge.labelstudio_export import pairs_from_export
from steps.manifest import ManifestError

pytestmark = pytest.mark.skipif(not (LS_VENV / "bin" / "label-studio").exists() and not __import__("os").environ.get("CI"),
                                reason="Label Studio not installed: make labelstudio")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """data/<profile>-like root: train conditions and 4 candidates for 4 of them (all three tasks)."""
    from steps.data.datasets import DatasetConfig, build_world
    from steps.io import read_rgb, write_png
    from steps.manifest import read_manifest

    root = tmp_path_factory.mktemp("lsdata")
    build_world(DatasetConfig(size=32, n_train=12, n_benchmark_per_task=1), root)
    conditions = read_manifest(root / "train" / "manifest.jsonl")
    chosen = [next(c for c in conditions if c.task == t) for t in ("fill", "extend", "removal")] + [conditions[-1]]
    rng = np.random.default_rng(0)
    lines = []
    for c in chosen:
        image = read_rgb(c.image)
        rel = []
        for k in range(4):
            out = np.clip(image.astype(int) + rng.integers(-40, 40, image.shape), 0, 255).astype(np.uint8)
            write_png(root / "candidates" / "images" / f"{c.id}_{k}.png", out)
            rel.append(f"images/{c.id}_{k}.png")
        lines.append(json.dumps({"condition_id": c.id, "task": c.task, "prompt": c.prompt, "candidates": rel}))
    (root / "candidates" / "candidates.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def server(data, tmp_path_factory):
    srv = LabelStudioServer(tmp_path_factory.mktemp("labelstudio"), data.parent)
    client = srv.start()
    yield srv, client
    srv.stop()


def test_labeling_config_asks_best_and_worst_per_dimension():
    xml = labeling_config(4)
    for name in ("best_consistency", "worst_consistency", "best_removal_quality", "worst_text_alignment"):
        assert f'name="{name}"' in xml
    assert xml.count('<Choice value="D"/>') == 2 * 5 and 'value="$candidate_D"' in xml and "$mask" in xml


def annotate_all(client, project, export_tasks):
    """As annotators would: per task, a best and a worst per dimension of its task; one task skipped."""
    from steps.world import dimensions_for

    by_task = {t["id"]: t["data"] for t in export_tasks}
    ids = sorted(by_task)
    for i, tid in enumerate(ids[:-1]):
        d = by_task[tid]
        prompt = "" if d["prompt"] == "(no prompt)" else d["prompt"]
        choices = {}
        for dim in dimensions_for(d["task"], prompt):
            choices[f"best_{dim}"], choices[f"worst_{dim}"] = "ABCD"[i % 4], "ABCD"[(i + 1) % 4]
        client.annotate(tid, choices)
    client.annotate(ids[-1], {}, skipped=True)
    return ids


def test_round_trip_through_a_real_label_studio(data, server, tmp_path):
    import requests

    from steps.judge.annotate import AnnotateConfig, annotate
    from steps.preferences import read_pairs

    srv, client = server
    project, n = open_project(client, data / "candidates", data / "train", data)
    assert n == 4
    assert open_project(client, data / "candidates", data / "train", data) == (project, 0)  # reopened, not re-imported
    tasks = client.export(project)
    # The interface's images are served by Label Studio itself (local file serving).
    served = client.session.get(srv.url + tasks[0]["data"]["candidate_A"], timeout=30)
    assert served.status_code == 200 and served.content[:4] == b"\x89PNG"
    assert requests.get(srv.url + tasks[0]["data"]["source"], timeout=30).status_code in (302, 401, 403)  # login
    ids = annotate_all(client, project, tasks)

    out = tmp_path / "preferences"
    cfg = AnnotateConfig(candidates_dir=str(data / "candidates"), train_dir=str(data / "train"), out_dir=str(out),
                         label_studio=f"{srv.url}/projects/{project}")
    import os

    os.environ["LABEL_STUDIO_API_KEY"] = srv.creds["token"]
    try:
        result = annotate(cfg)
    finally:
        del os.environ["LABEL_STUDIO_API_KEY"]
    assert result["source"] == "human" and result["annotations"] == 3
    assert result["skipped"] and f"task {ids[-1]}" in result["skipped"][0]
    from steps.manifest import read_manifest

    conditions = {c.id: c for c in read_manifest(data / "train" / "manifest.jsonl")}
    pairs = read_pairs(out / "pairs.jsonl", conditions)
    # 3 annotated tasks: fill and extend-with-prompt-or-not and removal; 5 pairs per dimension (N = 4).
    export = json.loads((Path(str(out)) / "pairs.jsonl").read_text().splitlines()[0])
    assert export["source"] == "human" and export["annotator"].startswith("labelstudio:")
    per_annotation: dict = {}
    for p in pairs:
        per_annotation.setdefault((p.meta["label_studio_task"], p.dimension), []).append(p)
    for group in per_annotation.values():
        assert len(group) == 5
        best, worst = group[0].meta["best"], group[0].meta["worst"]
        winners = [p.winner.name for p in group]
        losers = [p.loser.name for p in group]
        assert sum(w.endswith(f"_{'ABCD'.index(best)}.png") for w in winners) == 3  # best beats the 3 others
        assert sum(x.endswith(f"_{'ABCD'.index(worst)}.png") for x in losers) == 3  # the others beat worst
    assert {p.meta["label_studio_task"] for p in pairs} == set(ids[:-1])


def test_bad_exports_are_rejected_naming_task_and_field(data, server, tmp_path):
    srv, client = server
    project, _ = open_project(client, data / "candidates", data / "train", data)
    good = [t for t in client.export(project) if t["annotations"] and not t["annotations"][0]["was_cancelled"]]
    assert good, "the round-trip test annotates first"
    task = good[0]
    ann = task["annotations"][0]

    def variant(edit):
        t = json.loads(json.dumps(task))
        edit(t, t["annotations"][0]["result"])
        return [t]

    def set_choice(t, result, name, value):
        next(r for r in result if r["from_name"] == name)["value"]["choices"] = [value]

    dim = next(r["from_name"] for r in ann["result"] if r["from_name"].startswith("best_"))[5:]
    where = f"x.json: task {task['id']}, annotation {ann['id']}"
    cases = {
        "best and worst are the same": lambda t, r: set_choice(t, r, f"worst_{dim}",
                                                               next(x for x in r if x["from_name"] == f"best_{dim}")["value"]["choices"][0]),
        "unknown candidate 'Z'": lambda t, r: set_choice(t, r, f"best_{dim}", "Z"),
        "missing: every dimension": lambda t, r: r.remove(next(x for x in r if x["from_name"] == f"worst_{dim}")),
    }
    for message, edit in cases.items():
        with pytest.raises(ManifestError) as err:
            pairs_from_export(variant(edit), "x.json", data / "candidates")
        assert where in str(err.value) and message in str(err.value), str(err.value)
        assert f"_{dim}" in str(err.value)
    foreign = variant(lambda t, r: t["data"].__setitem__("candidates", ["../train/manifest.jsonl"] * 4))
    with pytest.raises(ManifestError, match=r"task \d+: field 'data.candidates'"):
        pairs_from_export(foreign, "x.json", data / "candidates")

    # Through the ingestion: an export file with one bad task writes nothing.
    from steps.judge.annotate import AnnotateConfig, annotate

    bad = tmp_path / "export.json"
    bad.write_text(json.dumps(variant(cases["unknown candidate 'Z'"])))
    out = tmp_path / "preferences"
    with pytest.raises(ManifestError, match=f"{bad}: task {task['id']}"):
        annotate(AnnotateConfig(candidates_dir=str(data / "candidates"), train_dir=str(data / "train"),
                                out_dir=str(out), label_studio=str(bad)))
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    shutil.rmtree(tmp_path, ignore_errors=True)
