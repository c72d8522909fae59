"""Preference pairs: simulated annotators (smoke / tiny) or human annotations from a folder (any profile).

    python -m steps.judge.annotate --set candidates_dir=data/tiny/candidates --set train_dir=data/tiny/train \\
        --set out_dir=data/tiny/preferences                       # simulated
    python -m steps.judge.annotate --set human_dir=/path/to/export ...  # human labels, validated and ingested

The output folder holds ``pairs.jsonl`` plus the candidate images it points to (hard links, so nothing is
copied twice) and ``candidates.jsonl``: a self-contained, versionable preference dataset (docs/DESIGN.md §6).

Simulated annotators: per candidate set and dimension, the world's scores pick the best and the worst
candidate; pairs whose score gap is below ``tie_margin`` are dropped (near-ties); each annotator (own seed)
flips its choice with probability ``noise``. The noise-free winner is kept in ``meta.clean_winner`` so the
agreement table can report accuracy against clean labels too. THESE LABELS ARE SIMULATED.

From an annotation tool: export one row per judged pair with the two image files and which one won; map it
to the pairs.jsonl fields (id, condition_id, task, dimension, winner, loser, prompt, annotator,
source="human"), put the images beside the file, and point ``human_dir`` at the folder. Everything is
validated (steps.preferences.read_pairs) before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steps.config import Profiled, field, parse_cli
from steps.fields import Seeded
from steps.paths import TINY


@dataclass(frozen=True)
class AnnotateConfig(Profiled, Seeded):
    """Preference pairs; the simulated annotators' seeds derive from ``seed``."""

    SECTION = "annotate"  # of configs/<profile>.yaml

    candidates_dir: str = field(str(TINY.candidates), "candidate sets (candidates.jsonl + images/)")
    train_dir: str = field(str(TINY.train), "the conditions the candidates were sampled for")
    out_dir: str = field(str(TINY.preferences), "output: pairs.jsonl + linked images")
    human_dir: str = field("", "a folder with human pairs.jsonl + images; empty = simulated annotators")
    label_studio: str = field("", "a Label Studio project URL (http://127.0.0.1:8080/projects/<id>) or export "
                                  "JSON file to ingest; API token from $LABEL_STUDIO_API_KEY or .labelstudio/")
    noise: float = field(0.10, "simulated: probability an annotator flips its choice")
    n_annotators: int = field(3, "simulated: number of annotators (each with its own seed)")
    tie_margin: float = field(0.03, "simulated: drop pairs whose world-score gap is below this")

    @classmethod
    def path_defaults(cls, paths, **context: Any) -> dict[str, Any]:
        return dict(candidates_dir=str(paths.candidates), train_dir=str(paths.train), out_dir=str(paths.preferences))


def link_image(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def simulate_pairs(cfg: AnnotateConfig) -> dict[str, Any]:
    from steps.data.datasets import load_samples
    from steps.io import atomic_dir, read_rgb
    from steps.judge.candidates import read_candidate_sets
    from steps.manifest import write_manifest
    from steps.preferences import AnnotatorConfig, simulate_choice
    from steps.world import dimensions_for, score

    ann = AnnotatorConfig(noise=cfg.noise, n_annotators=cfg.n_annotators, tie_margin=cfg.tie_margin, seed=cfg.seed)
    cdir = Path(cfg.candidates_dir)
    sets = read_candidate_sets(cdir / "candidates.jsonl")
    samples = {s.id: s for s in load_samples(cfg.train_dir)}
    rngs = [np.random.default_rng([cfg.seed, k]) for k in range(ann.n_annotators)]
    pairs, stats = [], {"ties_dropped": 0, "flipped": 0}
    for i, cs in enumerate(sets):
        sample = samples[cs["condition_id"]]
        scores = [score(read_rgb(p), sample) for p in cs["candidates"]]
        k = i % ann.n_annotators
        rel = [str(Path(p).relative_to(cdir)) for p in cs["candidates"]]
        for dim in dimensions_for(sample.task, sample.prompt):
            dim_scores = [s[dim] for s in scores]
            choice = simulate_choice(dim_scores, rngs[k], ann)
            if choice is None:
                stats["ties_dropped"] += 1
                continue
            w, lose, flipped, clean = choice
            stats["flipped"] += flipped
            pairs.append({"id": f"{sample.id}/{dim}", "condition_id": sample.id, "task": sample.task,
                          "dimension": dim, "winner": rel[w], "loser": rel[lose], "prompt": sample.prompt,
                          "annotator": f"simulated-{k}", "source": "simulated",
                          "meta": {"clean_winner": rel[clean], "score_gap": round(max(dim_scores) - min(dim_scores), 4),
                                   "flipped": flipped}})
    out = Path(cfg.out_dir)
    with atomic_dir(out) as tmp:
        for cs in sets:
            for p in cs["candidates"]:
                link_image(Path(p), tmp / Path(p).relative_to(cdir))
        shutil.copy2(cdir / "candidates.jsonl", tmp / "candidates.jsonl")
        write_manifest(tmp / "pairs.jsonl", pairs)
        (tmp / "README.txt").write_text("These preference labels are SIMULATED (steps/judge/annotate.py): "
                                        f"{json.dumps(asdict(ann))}\n")
    return {"out_dir": str(out), "n_pairs": len(pairs), "source": "simulated", **stats,
            "per_task_dimension": _counts(pairs)}


def ingest_human(cfg: AnnotateConfig) -> dict[str, Any]:
    """Validate a human pairs.jsonl against the training conditions, then copy it in atomically."""
    from steps.io import atomic_dir
    from steps.manifest import read_manifest
    from steps.preferences import read_pairs

    src = Path(cfg.human_dir)
    conditions = {c.id: c for c in read_manifest(Path(cfg.train_dir) / "manifest.jsonl")}
    pairs = read_pairs(src / "pairs.jsonl", conditions)  # raises ManifestError naming file/line/field
    out = Path(cfg.out_dir)
    with atomic_dir(out) as tmp:
        for p in {q for pair in pairs for q in (pair.winner, pair.loser)}:
            link_image(p, tmp / p.relative_to(src.resolve()))
        shutil.copy2(src / "pairs.jsonl", tmp / "pairs.jsonl")
        if (src / "candidates.jsonl").exists():
            shutil.copy2(src / "candidates.jsonl", tmp / "candidates.jsonl")
    records = [{"task": p.task, "dimension": p.dimension} for p in pairs]
    return {"out_dir": str(out), "n_pairs": len(pairs), "source": "human", "per_task_dimension": _counts(records)}


def _counts(pairs: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in pairs:
        key = f"{p['task']}/{p['dimension']}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def read_label_studio_export(location: str) -> tuple[list[dict[str, Any]], str]:
    """(export, name for errors) from a project URL (read through the REST API) or an export JSON file."""
    import re

    from steps.judge.labelstudio import DATA_DIR, TOKEN_ENV, LabelStudio, credentials

    m = re.match(r"^(https?://[^/]+)/projects/(\d+)", location)
    if m is None:
        path = Path(location)
        if not path.is_file():
            raise FileNotFoundError(f"label_studio {location!r}: neither http(s)://<host>/projects/<id> nor a file")
        try:
            return json.loads(path.read_text(encoding="utf-8")), str(path)
        except ValueError as e:
            raise ValueError(f"{path}:{getattr(e, 'lineno', 0)}: not Label Studio's JSON export ({e})") from None
    token = os.environ.get(TOKEN_ENV) or (credentials(DATA_DIR)["token"] if (DATA_DIR / "credentials.json").is_file()
                                          else "")
    if not token:
        raise ValueError(f"no Label Studio API token: set {TOKEN_ENV} (Account & Settings > Access token)")
    export = LabelStudio(m.group(1), token).export(int(m.group(2)))
    return export, f"Label Studio {m.group(1)} project {m.group(2)}"


def ingest_label_studio(cfg: AnnotateConfig) -> dict[str, Any]:
    """A Label Studio export -> validated pairs (steps.judge.labelstudio_export), then ingested like any human pairs."""
    import dataclasses
    import tempfile

    from steps.judge.labelstudio_export import pairs_from_export, write_pairs_folder

    export, source = read_label_studio_export(cfg.label_studio)
    pairs, report = pairs_from_export(export, source, cfg.candidates_dir)
    Path(cfg.out_dir).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".labelstudio-", dir=Path(cfg.out_dir).parent) as tmp:
        staged = write_pairs_folder(pairs, cfg.candidates_dir, Path(tmp) / "export", export)
        result = ingest_human(dataclasses.replace(cfg, human_dir=str(staged), label_studio=""))
    return {**result, "label_studio": source, "skipped": report["skipped"], "unannotated": len(report["unannotated"]),
            "annotations": report["annotations"], "annotators": sorted({p["annotator"] for p in pairs})}


def annotate(cfg: AnnotateConfig) -> dict[str, Any]:
    if cfg.label_studio:
        return ingest_label_studio(cfg)
    return ingest_human(cfg) if cfg.human_dir else simulate_pairs(cfg)


def main(argv: list[str] | None = None) -> None:
    cfg, _ = parse_cli(AnnotateConfig, __doc__, argv)
    print(json.dumps(annotate(cfg), indent=2))


if __name__ == "__main__":
    main()
