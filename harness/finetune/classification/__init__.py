"""Classification fine-tuning: the track's pre-trained encoder plus a linear head.

* ``data``: reading and validating cases (labels CSV, images, masks), the recipe's folds, and
  the preprocessing cache shared by all entries of a task;
* ``model``: the encoder + head networks of both tracks;
* ``trainer``: the schedule and ``ClassifierTrainer``, the loop over named hooks (train step,
  epoch end, checkpoint), its step shared with the nnU-Net trainer
  (``harness.finetune.training_step``);
* ``checkpoint``: the training state written after every epoch and resumed from;
* ``train``: prediction and ``run_classification(job)``, which writes the run folder through
  ``harness.finetune.job`` exactly as segmentation does.
"""

from harness.finetune.classification.data import ClassificationDataError, load_cases, preprocess_task, split_cases
from harness.finetune.classification.model import build_classifier
from harness.finetune.classification.train import run_classification

__all__ = [
    "ClassificationDataError",
    "build_classifier",
    "load_cases",
    "preprocess_task",
    "run_classification",
    "split_cases",
]
