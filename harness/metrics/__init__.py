"""Metrics of fine-tuned models: segmentation (Dice, NSD) and classification beside it, and the
registry of every metric a task can rank by (``harness.metrics.registry``).

The segmentation names below load ``harness.metrics.segmentation`` (numpy, scipy) on first use,
so that importing the registry (every task spec does) stays light.
"""

_SEGMENTATION = (
    "CASE_COLUMNS",
    "ScoringInputError",
    "dice",
    "normalized_surface_dice",
    "score_case",
    "score_folders",
    "summarize",
)

__all__ = list(_SEGMENTATION)


def __getattr__(name: str):
    if name in _SEGMENTATION:
        from harness.metrics import segmentation

        return getattr(segmentation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
