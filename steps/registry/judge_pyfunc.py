"""The registered judge as an MLflow pyfunc, logged as "models from code" by `steps.registry.register`.

Request: a pandas DataFrame, one row per comparison (`steps.registry.serving.JUDGE_INPUT_COLUMNS`):
``first_image`` and ``second_image`` (str, base64 PNGs of the same size) and ``query`` (str, e.g.
`steps.vocabulary.judge_query(task, dimension, prompt)`).
Response: a DataFrame with one column ``p_yes`` (float): P("Yes", the first image is better), normalised
over {Yes, No}. Artifact ``judge``: a directory written by `steps.models.judge.Judge.save`.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class JudgeModel(PythonModel):
    def load_context(self, context):
        from steps.models.judge import Judge
        from steps.runtime import setup

        setup()
        self.judge = Judge.load(context.artifacts["judge"]).freeze()
        self.batch = int((context.model_config or {}).get("batch_size", 32))

    # The DataFrame hint only tells MLflow not to validate by type hints: the logged signature does.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        import numpy as np
        import torch

        from steps.registry.serving import decode_judge_requests

        firsts, seconds, queries = decode_judge_requests(model_input)
        p_yes = np.zeros(len(queries))
        with torch.no_grad():  # rows are judged one size group at a time
            groups: dict[tuple, list[int]] = {}
            for i, image in enumerate(firsts):
                groups.setdefault(image.shape, []).append(i)
            for rows in groups.values():
                for start in range(0, len(rows), self.batch):
                    chunk = rows[start:start + self.batch]
                    p = self.judge.p_yes(np.stack([firsts[i] for i in chunk]), np.stack([seconds[i] for i in chunk]),
                                         [queries[i] for i in chunk])
                    p_yes[chunk] = p.float().cpu().numpy()
        return pd.DataFrame({"p_yes": p_yes})


mlflow.models.set_model(JudgeModel())
