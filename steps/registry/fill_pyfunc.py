"""The registered fill model as an MLflow pyfunc, logged as "models from code" by `steps.registry.register`.

MLflow runs this file when the model loads; ``set_model`` at the bottom names the model object.

Request: a pandas DataFrame, one row per fill request (`steps.registry.serving.FILL_INPUT_COLUMNS`):
- ``image``:  str, base64 of a PNG (RGB; other modes are converted)
- ``mask``:   str, base64 of a PNG of the same size (single channel; > 127 = region to generate)
- ``prompt``: str, what to generate (may be empty for extend and removal)
- ``task``:   str, fill | extend | removal
Response: a DataFrame with one column ``image`` (str, base64 PNG, the request's size). A request of another
size than the model's resolution is resized to it and the output back (steps.evaluation.fill). The kept region
(mask 0) is pasted back over the output (diffusers' inpainting overlay) unless ``keep_unmasked`` is False
(then the raw model output: the whole image as the VAE decoded it).
Params (optional per call): ``num_steps``, ``guidance``, ``seed``, ``keep_unmasked``; defaults from the
logged model_config.
Row i's noise comes from (seed, i), so a request's output does not depend on the other rows' sizes.
Artifact ``pipeline``: a FluxFill pipeline directory (diffusers layout).
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class FillModel(PythonModel):
    def load_context(self, context):
        from steps.models.policy import load_fill_pipeline
        from steps.runtime import setup

        setup()
        self.pipe = load_fill_pipeline(context.artifacts["pipeline"])
        self.defaults = dict(context.model_config or {})

    # The DataFrame hint only tells MLflow not to validate by type hints: the logged signature does.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from steps.registry.serving import predict_fill

        return predict_fill(self.pipe, self.defaults, model_input, params)


mlflow.models.set_model(FillModel())
