"""Fill one image with a model from the MLflow registry.

    python -m steps.registry.infer --model models:/onereward-fill@champion --image IN.png --mask MASK.png \\
        --task fill --prompt "a red circle" --out OUT.png [--tracking-uri sqlite:////abs/mlflow.db]

The mask is a PNG of the image's size, > 127 = region to generate. ``--model`` takes any MLflow model URI
(``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``models:/<model id>``, ``runs:/...``), a local
MLflow model folder (with an ``MLmodel`` file) or a diffusers FluxFill pipeline folder (with ``model_index.json``,
e.g. ``foundations/tiny/base`` or a policy under ``outputs/``: what to try before any model is registered; it
answers like the registered model, with its default sampling settings). The kept region (mask 0) of the output is the input's own pixels (diffusers'
inpainting overlay); ``--raw`` returns the model's raw output instead (the VAE re-encodes the whole image,
so the kept region comes back regenerated and blurred). Images of any size are resized to the model's
resolution and the output back to the input's size. ``--tracking-uri`` defaults to ``$MLFLOW_TRACKING_URI`` or the project's
``mlflow/mlflow.db``. The model loads through ``mlflow.pyfunc.load_model``; the output PNG is written
atomically. Exit status: 0 on success, 2 for bad arguments or inputs (a folder that is neither kind of model
among them), 1 when the model cannot be found.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from steps.manifest import TASKS


class InputError(ValueError):
    """An image, mask or prompt that cannot make a fill request, or a --model folder that holds no model."""


MLFLOW_MODEL_FILE, PIPELINE_FILE = "MLmodel", "model_index.json"


def model_kind(model: str) -> str:
    """``uri`` (an MLflow model URI or an MLflow model folder: mlflow loads it), ``pipeline`` (a diffusers
    pipeline folder) or ``missing``; `InputError` for an existing path that is neither kind of model."""
    if model.startswith(("models:/", "runs:/")) or "://" in model:
        return "uri"
    path = Path(model)
    if not path.exists():
        return "missing"
    if path.is_dir() and (path / MLFLOW_MODEL_FILE).is_file():
        return "uri"
    if path.is_dir() and (path / PIPELINE_FILE).is_file():
        return "pipeline"
    raise InputError(f"--model {model}: expected an MLflow model (a models:/ or runs:/ URI, or a folder with an "
                     f"{MLFLOW_MODEL_FILE} file) or a diffusers fill pipeline folder (with {PIPELINE_FILE}); "
                     f"this {'folder' if path.is_dir() else 'file'} is neither")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m steps.registry.infer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models:/onereward-fill@champion", help="MLflow model URI or directory")
    p.add_argument("--image", required=True, help="source image (PNG or any format PIL reads)")
    p.add_argument("--mask", required=True, help="mask PNG of the image's size, > 127 = generate")
    p.add_argument("--task", required=True, choices=TASKS, help="fill | extend | removal")
    p.add_argument("--prompt", default="", help="what to generate (required for fill)")
    p.add_argument("--out", required=True, help="output PNG path")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking/registry URI")
    p.add_argument("--num-steps", type=int, default=None, help="override the model's Euler steps")
    p.add_argument("--seed", type=int, default=None, help="override the model's noise seed")
    p.add_argument("--raw", action="store_true",
                   help="return the raw model output (default: the kept pixels pasted back over it)")
    return p


def read_request(image_path: str, mask_path: str, task: str, prompt: str) -> dict[str, str]:
    """A fill request row from files; `InputError` names the file and what is wrong."""
    from PIL import Image, UnidentifiedImageError

    from steps.registry.serving import fill_request

    arrays = {}
    for name, path, mode in (("image", image_path, "RGB"), ("mask", mask_path, "L")):
        try:
            with Image.open(path) as im:
                arrays[name] = np.asarray(im.convert(mode))
        except FileNotFoundError:
            raise InputError(f"--{name} {path}: file not found") from None
        except (UnidentifiedImageError, OSError) as e:
            raise InputError(f"--{name} {path}: unreadable image ({e})") from None
    image, mask = arrays["image"], arrays["mask"]
    if mask.shape != image.shape[:2]:
        raise InputError(f"--mask {mask_path}: size {mask.shape[1]}x{mask.shape[0]} differs from --image "
                         f"{image_path} size {image.shape[1]}x{image.shape[0]}")
    if not (mask > 127).any():
        raise InputError(f"--mask {mask_path}: empty mask (no pixel > 127): nothing to generate")
    if task == "fill" and not prompt.strip():
        raise InputError("--prompt is required for task fill (what to generate in the masked region)")
    return fill_request(image, np.where(mask > 127, 255, 0).astype(np.uint8), prompt, task)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from steps.runtime import setup

    setup()
    try:
        request = read_request(args.image, args.mask, args.task, args.prompt)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import pandas as pd

    from steps.io import atomic_write_bytes
    from steps.registry.register import ModelNotFoundError, load_model
    from steps.registry.serving import decode_png
    from steps.tracking import default_tracking_uri

    try:
        kind = model_kind(args.model)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if kind == "missing":
        print(f"error: --model {args.model}: neither a model URI nor an existing folder", file=sys.stderr)
        return 1
    if kind == "pipeline":
        from steps.registry.serving import PipelineFillModel

        try:
            model = PipelineFillModel(args.model)
        except (OSError, ValueError, TypeError) as e:  # model_index.json, but not a complete FluxFill pipeline
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            print(f"error: --model {args.model}: not a loadable FluxFill pipeline folder: {first}", file=sys.stderr)
            return 2
    else:
        try:
            model = load_model(args.model, args.tracking_uri or default_tracking_uri())
        except ModelNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    params = {k: v for k, v in (("num_steps", args.num_steps), ("seed", args.seed)) if v is not None}
    if args.raw:
        params["keep_unmasked"] = False
    from mlflow.exceptions import MlflowException

    try:
        result = model.predict(pd.DataFrame([request]), params=params or None)
    except (ValueError, MlflowException) as e:  # the pyfunc's request checks (e.g. a size it cannot take)
        print(f"error: {e}", file=sys.stderr)
        return 2
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(decode_png(result["image"].iloc[0])).save(buf, format="PNG")
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"wrote {args.out} ({args.task}, model {args.model}, {'raw output' if args.raw else 'kept pixels kept'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
