"""Shared pieces of the CPU benchmark scripts (bench/rl/rl_step.py, bench/judge/throughput.py).

- `machine`: what a figure was measured on (date, cores, CPU model, torch threads and version);
- `matmul_rate`: this machine's fp32 matmul FLOP/s, measured in the same process as the figures it rates;
- `Phases`: exclusive (self-time) accounting of named spans, with a swappable clock -- `time.perf_counter`
  for seconds, a `FlopCounterMode`'s running total for FLOPs -- so one instrumentation gives both;
- `timed` / `TimedTransformer` / `TimedTokenizer`: wrappers that put a callable's calls into a span;
- `write_section`: replace this script's generated block in docs/BENCHMARKS.md (the hand-written text
  around the blocks stays).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DOC = REPO / "docs" / "BENCHMARKS.md"


def machine() -> dict[str, Any]:
    import torch

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cores": os.cpu_count(),
        "cpu_model": model,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['date']}; {m['cores']} cores ({m['cpu_model']}), torch {m['torch']} with "
        f"{m['torch_threads']} thread(s), Python {m['python']}"
    )


def matmul_rate(n: int = 1024, k: int | None = None, m: int | None = None, reps: int = 5) -> float:
    """fp32 FLOP/s of an (n x k) @ (k x m) matmul (default 1024^3): the median of ``reps`` timed calls."""
    import torch

    k, m = k or n, m or n
    a, b = torch.randn(n, k), torch.randn(k, m)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * n * k * m / statistics.median(times)


def median(values) -> float:
    values = list(values)
    return float(statistics.median(values)) if values else float("nan")


class Phases:
    """Named spans with exclusive accounting: a span's time excludes the spans opened inside it."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.acc: dict[str, float] = defaultdict(float)
        self.marks: dict[str, float] = {}
        self._stack: list[list[float]] = []  # [start, time of children]

    @contextlib.contextmanager
    def span(self, name: str):
        frame = [self.clock(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            elapsed = self.clock() - frame[0]
            self.acc[name] += elapsed - frame[1]
            if self._stack:
                self._stack[-1][1] += elapsed

    def add(self, name: str, amount: float) -> None:
        self.acc[name] += amount
        if self._stack:
            self._stack[-1][1] += amount

    def mark(self, name: str) -> None:
        self.marks[name] = self.clock()

    def take(self) -> dict[str, float]:
        out = dict(self.acc)
        self.acc.clear()
        self.marks.clear()
        return out


def timed(phases: Phases, fn: Callable, name: str | Callable[[], str]) -> Callable:
    """``fn`` with every call inside ``phases.span(name)`` (``name`` may be chosen per call)."""

    def wrapper(*args, **kwargs):
        with phases.span(name() if callable(name) else name):
            return fn(*args, **kwargs)

    wrapper.__wrapped__ = fn
    return wrapper


class TimedTransformer:
    """A transformer as `denoise` calls it (``__call__`` + ``.config``), its calls in spans by grad mode.

    With grad, a hook on the output marks ``mark`` when backward reaches it (the split of one backward).
    """

    def __init__(self, inner, phases: Phases, no_grad: str, grad: str, mark: str | None = None):
        self.inner, self.phases, self.no_grad, self.grad, self.mark_name = inner, phases, no_grad, grad, mark
        self.config = inner.config

    def __call__(self, *args, **kwargs):
        import torch

        grad = torch.is_grad_enabled()
        with self.phases.span(self.grad if grad else self.no_grad):
            out = self.inner(*args, **kwargs)
        if grad and self.mark_name and out[0].requires_grad:
            out[0].register_hook(lambda g: self.phases.mark(self.mark_name))
        return out


class TimedTokenizer:
    """A tokenizer whose calls are spans; every other attribute is the tokenizer's."""

    def __init__(self, inner, phases: Phases, name: str):
        self._inner, self._phases, self._name = inner, phases, name

    def __call__(self, *args, **kwargs):
        with self._phases.span(self._name):
            return self._inner(*args, **kwargs)

    def __getattr__(self, item):
        return getattr(self._inner, item)


def write_section(key: str, markdown: str, doc: Path = DOC) -> Path:
    """Replace (or append) the block between ``<!-- BEGIN key -->`` and ``<!-- END key -->`` in ``doc``."""
    begin, end = f"<!-- BEGIN {key} (generated: do not edit by hand) -->", f"<!-- END {key} -->"
    text = doc.read_text() if doc.is_file() else "# Benchmarks\n"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, doc)
    return doc


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def step_config(cls, profile: str, overrides: dict[str, Any] | None = None, root: str | os.PathLike = ".",
                **bench_values: Any):
    """The step config a bench script runs: the profile's (steps.config.resolve: configs/<profile>.yaml and
    the paths, exactly as `python -m steps.<name> --profile` and the Dagster assets), then the script's own
    values, then the user's ``overrides`` (--set)."""
    from steps.config import Layer, resolve

    return resolve(cls, profile, root, overrides, layers=[Layer(Path(sys.argv[0]).name or "bench", bench_values)],
                   source="--set")
