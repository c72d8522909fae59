"""The method's vocabulary is one module: the world, the readers and the judge use the same objects."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from steps import vocabulary as V

STEPS = Path(__file__).resolve().parents[2] / "steps"


def test_every_user_shares_the_vocabulary_objects():
    import steps.manifest as M
    import steps.preferences as P
    import steps.world as W

    assert W.DIMENSIONS is V.DIMENSIONS and W.dimensions_for is V.dimensions_for and W.TASKS is V.TASKS
    assert M.TASKS is V.TASKS and M.EXTEND_DEFAULT_PROMPT is V.EXTEND_DEFAULT_PROMPT
    assert P.judge_query is V.judge_query and P.QUERY_TEMPLATE_VERSION is V.QUERY_TEMPLATE_VERSION


def test_the_vocabulary_is_defined_once():
    """No other module assigns the vocabulary's names (a copy "kept in sync" is how they drift apart)."""
    names = {"TASKS", "DIMENSIONS", "EXTEND_DEFAULT_PROMPT", "REMOVAL_PROMPT", "QUERY_TEMPLATE", "DIMENSION_TEXT"}
    for path in STEPS.rglob("*.py"):
        if path.name == "vocabulary.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign):
                targets = {t.id for t in node.targets if isinstance(t, ast.Name)}
                assert not targets & names, f"{path}: defines {targets & names}"


def test_the_vocabulary_does_not_import_the_world():
    tree = ast.parse((STEPS / "vocabulary.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m and m.startswith("steps") for m in imported)


def test_dimensions_and_query():
    assert V.dimensions_for("extend", "") == ("consistency", "structure", "aesthetics")
    assert V.dimensions_for("extend", "a red circle")[0] == "text_alignment"
    assert "a red circle" in V.judge_query("fill", "text_alignment", "a red circle")
    assert "a red circle" not in V.judge_query("fill", "consistency", "a red circle")
    with pytest.raises(ValueError, match="does not belong"):
        V.judge_query("removal", "aesthetics")
    image, mask = np.full((4, 4, 3), 7, np.uint8), np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 255
    out = V.masked_source(image, mask)
    assert (out[1:3, 1:3] == V.MASKED_GREY).all() and (out[0] == 7).all() and (image == 7).all()
