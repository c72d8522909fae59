"""One object names every artifact (steps.paths): nothing else builds an outputs/<profile> or data/<profile> path,
and every step config's tiny defaults and per-profile paths are the paths object's."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from steps.paths import TINY, ArtifactPaths, PolicyLayout

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("steps", "orchestration", "bench")
PATHS_MODULE = REPO / "steps" / "paths.py"
# a literal artifact path: outputs/... or data/<profile>/..., alone or after a folder
LITERAL = re.compile(r"(^|/)(outputs/|data/(tiny|smoke|flux)\b)")
# an f-string building one: outputs/{...} or data/{...}
FSTRING = re.compile(r"(^|[/\s(])(outputs/|data/\{)")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def artifact_path_builders(source: str) -> list[tuple[int, str]]:
    """(line, text) of every place in ``source`` that builds an artifact path by hand."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    in_fstring = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            if FSTRING.search(text):
                found.append((node.lineno, f'f"{text}"'))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs | in_fstring:
            if not re.search(r"\s", node.value) and LITERAL.search(node.value):
                found.append((node.lineno, repr(node.value)))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and side.value in ("outputs", "data", "foundations"):
                    found.append((node.lineno, f"... / {side.value!r}"))
                if isinstance(side, ast.Constant) and isinstance(side.value, str) and LITERAL.search(side.value):
                    found.append((node.lineno, f"... / {side.value!r}"))
    return found


def test_no_artifact_path_is_built_outside_the_paths_module():
    offenders = []
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == PATHS_MODULE:
                continue
            for line, text in artifact_path_builders(path.read_text()):
                offenders.append(f"{path.relative_to(REPO)}:{line}: {text}")
    assert not offenders, "artifact paths built outside steps/paths.py (ask ArtifactPaths):\n" + "\n".join(offenders)


@pytest.mark.parametrize("source", [
    'p = root / f"outputs/{profile}/judge"',
    'p = Path(root) / "data" / profile / "train"',
    'p = f"data/{profile}/train"',
    'DEFAULT = "outputs/tiny/judge/model"',
    'x = REPO / "data/tiny/train"',
    'raise Failure(f"nothing under outputs/{profile}/policy")',
])
def test_the_scan_catches_hand_built_paths(source):
    assert artifact_path_builders(source), source


@pytest.mark.parametrize("source", [
    '"""Reads outputs/tiny/judge (a docstring)."""',
    'help_text = "output folder, e.g. data/tiny"',
    'p = paths.judge / "model_index.json"',
    'key = f"{split}_outputs"',
])
def test_the_scan_leaves_prose_and_subpaths_alone(source):
    assert not artifact_path_builders(source), source


def _config_classes():
    from steps.evaluation.benchmark import BenchmarkConfig
    from steps.evaluation.competitors import CompetitorsConfig
    from steps.foundations.base_pretrain import BaseConfig
    from steps.foundations.job import FoundationsConfig
    from steps.foundations.judge_pretrain import JudgePretrainConfig
    from steps.judge.agreement import AgreementConfig
    from steps.judge.annotate import AnnotateConfig
    from steps.judge.candidates import CandidatesConfig
    from steps.judge.train import JudgeConfig
    from steps.rl.config import RLConfig

    return [AnnotateConfig, BaseConfig, BenchmarkConfig, CandidatesConfig, CompetitorsConfig, FoundationsConfig,
            JudgeConfig, AgreementConfig, JudgePretrainConfig, RLConfig]


# each path field of the step configs and the artifact it names (root-relative for the tiny profile)
EXPECTED = {
    "train_dir": TINY.train, "candidates_dir": TINY.candidates, "pairs_dir": TINY.preferences,
    "judge_dir": TINY.judge, "base_dir": TINY.base_model,  # JudgeConfig.init_dir: "" (fresh) by default
    "competitors_dir": TINY.competitors("benchmark"),
}
EXPECTED_BY_CLASS = {
    "AnnotateConfig": {"out_dir": TINY.preferences},
    "BaseConfig": {"eval_dir": TINY.benchmark, "out_dir": TINY.base_model},
    "BenchmarkConfig": {"benchmark": TINY.benchmark, "out_dir": TINY.benchmark_report("benchmark")},
    "CandidatesConfig": {"out_dir": TINY.candidates},
    "CompetitorsConfig": {"benchmark": TINY.benchmark, "out_dir": TINY.competitors("benchmark")},
    "FoundationsConfig": {"out_dir": TINY.foundations},
    "JudgeConfig": {"out_dir": TINY.judge},
    "AgreementConfig": {"out_dir": TINY.judge_agreement, "test_dir": TINY.agreement_test},
    "JudgePretrainConfig": {"out_dir": TINY.judge_pretrained},
    "RLConfig": {"eval_dir": TINY.validation, "out_dir": TINY.policy_root},
}


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__name__)
def test_tiny_defaults_are_the_paths_objects(cls):
    """A config run with no --set (python -m steps.<name> from the repo root) reads and writes tiny's artifacts."""
    expected = {**EXPECTED, **EXPECTED_BY_CLASS[cls.__name__]}
    checked = 0
    for f in dataclasses.fields(cls):
        if f.name in expected:
            assert f.default == str(expected[f.name]), (cls.__name__, f.name, f.default)
            checked += 1
        elif isinstance(f.default, str):
            assert not LITERAL.search(f.default), f"{cls.__name__}.{f.name} = {f.default!r}: ask steps.paths"
    assert checked >= 1


@pytest.mark.parametrize("profile", ["smoke", "tiny"])
def test_for_profile_paths_are_the_paths_objects(profile, tmp_path):
    from steps.evaluation.benchmark import BenchmarkConfig
    from steps.evaluation.competitors import CompetitorsConfig
    from steps.foundations.base_pretrain import BaseConfig
    from steps.foundations.judge_pretrain import JudgePretrainConfig
    from steps.judge.train import JudgeConfig
    from steps.rl.config import RLConfig

    p = ArtifactPaths(tmp_path, profile)
    base = BaseConfig.for_profile(profile, tmp_path)
    assert (base.train_dir, base.eval_dir, base.out_dir) == tuple(map(str, (p.train, p.benchmark, p.base_model)))
    pre = JudgePretrainConfig.for_profile(profile, tmp_path)
    assert (pre.train_dir, pre.out_dir) == (str(p.train), str(p.judge_pretrained))
    judge = JudgeConfig.for_profile(profile, tmp_path)
    assert (judge.pairs_dir, judge.train_dir, judge.init_dir, judge.out_dir) == tuple(
        map(str, (p.preferences, p.train, p.judge_pretrained, p.judge)))
    rl = RLConfig.for_profile(profile, tmp_path)
    assert (rl.base_dir, rl.judge_dir, rl.train_dir, rl.eval_dir, rl.out_dir) == tuple(
        map(str, (p.base_model, p.judge, p.train, p.validation, p.policy_root)))
    for split in ("benchmark", "photos", "user"):
        bench = BenchmarkConfig.for_profile(profile, tmp_path, split)
        assert bench.judge_dir == str(p.judge)  # the folder Judge.save writes (not judge/model)
        assert (bench.benchmark, bench.competitors_dir, bench.out_dir) == tuple(
            map(str, (p.split(split), p.competitors(split), p.benchmark_report(split))))
        comp = CompetitorsConfig.for_profile(profile, tmp_path, split)
        assert (comp.benchmark, comp.out_dir) == (str(p.split(split)), str(p.competitors(split)))


def test_the_recipe_writes_where_the_paths_object_says(tmp_path):
    from steps.rl.config import RLConfig
    from steps.rl.train import OneRewardRecipe

    p = ArtifactPaths(tmp_path, "smoke")
    for variant in ("static", "dynamic"):
        recipe = OneRewardRecipe(RLConfig.for_profile("smoke", tmp_path, reference=variant))
        assert recipe.model_dir == p.policy(variant)
        assert recipe.ckpt_root == p.policy_checkpoints(variant)
        assert recipe.best_root == p.policy_best(variant)
        assert recipe.report_dir == p.policy_report(variant)


def test_layout_and_validation(tmp_path):
    p = ArtifactPaths(tmp_path, "smoke")
    assert p.judge == tmp_path / "outputs" / "smoke" / "judge"
    assert p.train == tmp_path / "data" / "smoke" / "train"
    assert p.agreement_json.parent == p.judge_agreement
    assert p.policy_layout("static") == PolicyLayout(p.policy_root, "static")
    assert p.dataset_preview("validation").name == "validation.png"
    assert p.foundations == tmp_path / "foundations" / "smoke"
    with pytest.raises(ValueError, match="unknown profile"):
        ArtifactPaths(tmp_path, "huge")
    with pytest.raises(ValueError, match="unknown split"):
        p.split("../judge")
    with pytest.raises(ValueError, match="unknown RL variant"):
        p.policy("greedy")


def test_cli_prints_paths(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "steps.paths", "--root", str(tmp_path), *args], cwd=REPO,
                              capture_output=True, text=True)

    assert run("--profile", "smoke", "policy_report", "dynamic").stdout.strip() == str(
        ArtifactPaths(tmp_path, "smoke").policy_report("dynamic"))
    assert run("--profile", "tiny", "agreement_md").stdout.strip() == str(ArtifactPaths(tmp_path, "tiny").agreement_md)
    bad = run("nothing_like_this")
    assert bad.returncode != 0 and "no 'nothing_like_this'" in bad.stderr
