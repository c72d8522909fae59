"""Process-wide settings every step entry point applies: offline switches, quiet libraries, threads."""

from __future__ import annotations

import logging
import os
import warnings

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1",
               "GX_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false"}


def setup(threads: int | None = None) -> None:
    """Offline + quiet: no hub look-ups, no telemetry, no per-call library warnings; optional torch threads."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*non-writable.*")
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
    except ImportError:
        pass
    if threads:
        import torch

        torch.set_num_threads(threads)
