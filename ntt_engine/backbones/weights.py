"""Where a backbone's weights come from when there is no checkpoint: a seeded random initialisation, for smoke tests
only, that says so loudly and leaves the caller's random state untouched."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, TypeVar

import torch

logger = logging.getLogger(__name__)

RANDOM_SEED = 0
RANDOM_WARNING = "RANDOM WEIGHTS: predictions are meaningless, smoke tests only"
Model = TypeVar("Model")


def require_checkpoint(model_name: str, checkpoint: Path | None, random_weights: bool) -> None:
    if checkpoint is None and not random_weights:
        raise ValueError(f"{model_name}: a checkpoint is required unless random_weights=True")


def random_init(model_name: str, build: Callable[[], Model]) -> tuple[Model, str]:
    """`build()` under RANDOM_SEED → (the model, its weights id "random-seed0"), with a warning in the log."""
    logger.warning("%s: %s", model_name, RANDOM_WARNING)
    with torch.random.fork_rng(devices=[]):  # deterministic without disturbing the caller's RNG
        torch.manual_seed(RANDOM_SEED)
        model = build()
    return model, f"random-seed{RANDOM_SEED}"
