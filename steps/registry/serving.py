"""What the registered models take and give (the MLflow pyfunc request format, docs/DESIGN.md §8).

Fill pyfunc (a pandas DataFrame, one row per request): ``image`` and ``mask`` are base64-encoded PNG
strings (strings survive JSON, REST serving and the signature's type checks; raw PNG bytes are accepted
too when calling in-process), ``prompt`` and ``task`` are strings; the response has one column ``image``
(base64 PNG). `fill_request` builds a row from arrays. Judge pyfunc: ``first_image``, ``second_image``
(base64 PNG) and ``query``; the response is ``p_yes``. Decoding errors name the row and the field.
"""

from __future__ import annotations

import base64
import io

import numpy as np

FILL_INPUT_COLUMNS = ("image", "mask", "prompt", "task")
# The fill model's sampling defaults (a registered model's model_config overrides them; a call's params win).
FILL_DEFAULTS = {"num_steps": 8, "guidance": 30.0, "seed": 0, "keep_unmasked": True}
JUDGE_INPUT_COLUMNS = ("first_image", "second_image", "query")


def encode_png(array: np.ndarray) -> str:
    """uint8 HxW or HxWx3 array -> base64 PNG string."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png(value: str | bytes, mode: str = "RGB") -> np.ndarray:
    """base64 PNG string (or raw PNG bytes) -> uint8 array in ``mode`` (RGB: HxWx3, L: HxW)."""
    from PIL import Image

    data = value if isinstance(value, (bytes, bytearray)) else base64.b64decode(value, validate=True)
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert(mode))


def fill_request(image: np.ndarray, mask: np.ndarray, prompt: str, task: str) -> dict[str, str]:
    """One request row for the fill pyfunc from a uint8 image and mask."""
    return {"image": encode_png(image), "mask": encode_png(mask), "prompt": prompt, "task": task}


def _rows(model_input, columns: tuple[str, ...]):
    import pandas as pd

    df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"request is missing column(s) {missing}; expected columns {list(columns)}")
    return df


def _decode(value, mode: str, row: int, name: str) -> np.ndarray:
    try:
        return decode_png(value, mode)
    except Exception as e:
        raise ValueError(f"row {row}: field {name!r}: expected a base64-encoded PNG ({type(e).__name__}: {e})") from e


def decode_fill_requests(model_input) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Validated (images, 0/255 masks, normalised prompts); errors name the row and field."""
    from steps.manifest import TASKS, normalise_prompt

    df = _rows(model_input, FILL_INPUT_COLUMNS)
    images, masks, prompts = [], [], []
    for i, row in enumerate(df.itertuples(index=False)):
        task = row.task
        if task not in TASKS:
            raise ValueError(f"row {i}: field 'task': unknown task {task!r}; expected one of {list(TASKS)}")
        image = _decode(row.image, "RGB", i, "image")
        mask = _decode(row.mask, "L", i, "mask")
        if mask.shape != image.shape[:2]:
            raise ValueError(f"row {i}: field 'mask': size {mask.shape[1]}x{mask.shape[0]} differs from the image "
                             f"size {image.shape[1]}x{image.shape[0]}")
        mask = np.where(mask > 127, 255, 0).astype(np.uint8)
        if not mask.any():
            raise ValueError(f"row {i}: field 'mask': empty mask (no pixel > 127): nothing to generate")
        prompt = row.prompt
        prompt = normalise_prompt(task, prompt if isinstance(prompt, str) else "")
        if task == "fill" and not prompt:
            raise ValueError(f"row {i}: field 'prompt': fill needs a prompt naming what to generate")
        images.append(image)
        masks.append(mask)
        prompts.append(prompt)
    return images, masks, prompts


def predict_fill(pipe, defaults: dict, model_input, params: dict | None = None):
    """Fill every request row with a FluxFill ``pipe``: the registered pyfunc's ``predict`` and a pipeline folder
    (`PipelineFillModel`) both answer through here. Row i's noise comes from (seed, i)."""
    import pandas as pd

    from steps.evaluation.fill import fill_images

    p = {**FILL_DEFAULTS, **defaults, **(params or {})}
    images, masks, prompts = decode_fill_requests(model_input)
    seeds = [int(p["seed"]) * 1_000_003 + i for i in range(len(images))]
    filled = fill_images(pipe, images, masks, prompts, seeds, int(p["num_steps"]), float(p["guidance"]),
                         keep_unmasked=bool(p["keep_unmasked"]))
    return pd.DataFrame({"image": [encode_png(out) for out in filled]})


class PipelineFillModel:
    """A diffusers FluxFill pipeline folder (model_index.json) that takes the registered fill model's requests
    and answers as it does (`predict_fill`, `FILL_DEFAULTS`): what to try before any model is registered."""

    def __init__(self, path):
        from steps.models.policy import load_fill_pipeline

        self.pipe = load_fill_pipeline(path)

    def predict(self, model_input, params: dict | None = None):
        return predict_fill(self.pipe, {}, model_input, params)


def decode_judge_requests(model_input) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    df = _rows(model_input, JUDGE_INPUT_COLUMNS)
    firsts, seconds, queries = [], [], []
    for i, row in enumerate(df.itertuples(index=False)):
        first = _decode(row.first_image, "RGB", i, "first_image")
        second = _decode(row.second_image, "RGB", i, "second_image")
        if first.shape != second.shape:
            raise ValueError(f"row {i}: field 'second_image': size {second.shape[1]}x{second.shape[0]} differs "
                             f"from first_image {first.shape[1]}x{first.shape[0]}")
        firsts.append(first)
        seconds.append(second)
        queries.append(str(row.query))
    return firsts, seconds, queries


def fill_signature(num_steps: int = 8, guidance: float = 30.0, seed: int = 0):
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", c) for c in FILL_INPUT_COLUMNS]),
        outputs=Schema([ColSpec("string", "image")]),
        params=ParamSchema([ParamSpec("num_steps", "long", num_steps), ParamSpec("guidance", "double", guidance),
                            ParamSpec("seed", "long", seed), ParamSpec("keep_unmasked", "boolean", True)]))


def judge_signature():
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", c) for c in JUDGE_INPUT_COLUMNS]),
                          outputs=Schema([ColSpec("double", "p_yes")]))
