"""The libraries engines run on, told to keep quiet: commands call this once before loading a model."""

from __future__ import annotations

import os
import warnings


def quiet_libraries() -> None:
    """Silence library warnings and download bars that mean nothing to a reverie user; never go online."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging  # here, not at the top: `reverie status` needs no torch

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets  # TRL's trainers map their datasets with progress bars of their own

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
