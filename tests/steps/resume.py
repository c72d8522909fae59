"""Kill-and-resume helper of the judge recipes' tests."""

from __future__ import annotations

import numpy as np
import pytest


class Killed(Exception):
    pass


def straight_and_resumed(tmp_path, run, loss_key: str):
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
