"""Metrics of fine-tuned models: segmentation (Dice, NSD) here; classification beside it."""
from harness.metrics.segmentation import (
    CASE_COLUMNS,
    ScoringInputError,
    dice,
    normalized_surface_dice,
    score_case,
    score_folders,
    summarize,
)

__all__ = [
    "CASE_COLUMNS",
    "ScoringInputError",
    "dice",
    "normalized_surface_dice",
    "score_case",
    "score_folders",
    "summarize",
]
