"""The method's vocabulary: tasks, dimensions, fixed prompts, the judge's query and the masked source.

One small module with no dependencies, imported by everything that speaks the method's language: the
synthetic world (one user of it, not its owner), the manifest and pairs readers, the judge and its
trainers, the RL reward and the benchmark. Changing the query text means retraining the judge:
`QUERY_TEMPLATE_VERSION` travels with every trained judge (its training.json) and is checked on load.
"""

from __future__ import annotations

import numpy as np

TASKS = ("fill", "extend", "removal")
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "fill": ("text_alignment", "consistency", "structure", "aesthetics"),
    "extend": ("text_alignment", "consistency", "structure", "aesthetics"),
    "removal": ("removal_quality",),
}
EXTEND_DEFAULT_PROMPT = "high-definition, perfect composition"
REMOVAL_PROMPT = "remove"
MASKED_GREY = 128  # what the region to generate shows in a masked source (and an extend condition's image)

QUERY_TEMPLATE_VERSION = "v1"
DIMENSION_TEXT = {
    "text_alignment": "how well the generated region matches the request \"{prompt}\"",
    "consistency": "how well the image keeps everything outside the edited region unchanged and seamless",
    "structure": "how coherent and well-formed the shapes in the edited region are",
    "aesthetics": "how clean and artefact-free the image looks",
    "removal_quality": "how completely the object is removed and replaced by plausible background",
}
TASK_TEXT = {"fill": "image fill", "extend": "image extension", "removal": "object removal"}
QUERY_TEMPLATE = ("Task: {task}. Dimension: {dimension}. Judge {criterion}. "
                  "Is the first image better than the second? Answer Yes or No.")


def dimensions_for(task: str, prompt: str) -> tuple[str, ...]:
    """The dimensions judged for a condition: extend asks text_alignment only of a user prompt."""
    if task not in DIMENSIONS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if task == "extend" and (prompt or "").strip() in ("", EXTEND_DEFAULT_PROMPT):
        return tuple(d for d in DIMENSIONS[task] if d != "text_alignment")
    return DIMENSIONS[task]


def judge_query(task: str, dimension: str, prompt: str = "") -> str:
    """The judge's query q(task, dimension, prompt); the prompt appears only for text_alignment."""
    if task not in TASK_TEXT:
        raise ValueError(f"unknown task {task!r}")
    if dimension not in DIMENSIONS[task]:
        raise ValueError(f"dimension {dimension!r} does not belong to task {task!r}: {DIMENSIONS[task]}")
    criterion = DIMENSION_TEXT[dimension].format(prompt=prompt.strip())
    return QUERY_TEMPLATE.format(task=TASK_TEXT[task], dimension=dimension.replace("_", " "), criterion=criterion)


def masked_source(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The source with the region to generate blanked to mid grey: the judge's optional third image.

    It shows the judge what must be kept (consistency is judged outside the mask) and where the edit is;
    for extend it equals the condition image. ``image``: HxWx3 (or BxHxWx3) uint8, ``mask``: HxW (BxHxW),
    255 = generate. (The RL loop must pass the same image when the judge was trained with it.)
    """
    out = np.array(image, copy=True)
    out[np.asarray(mask) > 127] = MASKED_GREY
    return out
