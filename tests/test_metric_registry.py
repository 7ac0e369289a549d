"""The metric registry: lookups, and the vectorised pooled metrics against scikit-learn."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, roc_auc_score

from harness.metrics.classification import METRIC_NAMES, score_classification
from harness.metrics.pooled import macro_average_precision
from harness.metrics.registry import (
    CLASSIFICATION,
    METRICS,
    PER_CASE,
    POOLED,
    SEGMENTATION,
    MetricError,
    UnknownMetricError,
    get_metric,
    metrics_for,
    resolve_metric,
)

# --------------------------------------------------------------------------- scikit-learn references


def _auroc(y, p):
    present = np.unique(y)
    if len(present) < 2:
        return np.nan
    if p.shape[1] == 2:
        return roc_auc_score(y, p[:, 1])
    return np.mean([roc_auc_score(y == k, p[:, k]) for k in present])


def _average_precision(y, p):
    return np.mean([average_precision_score(y == k, p[:, k]) for k in range(p.shape[1]) if (y == k).any()])


def _balanced_accuracy(y, pred):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        return balanced_accuracy_score(y, pred)


REFERENCE = {
    "auroc": lambda y, p, pred: _auroc(y, p),
    "balanced_accuracy": lambda y, p, pred: _balanced_accuracy(y, pred),
    "f1": lambda y, p, pred: f1_score(y, pred, average="macro", zero_division=0),
    "average_precision": lambda y, p, pred: _average_precision(y, p),
}


def _random_task(rng, n_cases, n_classes, n_entries, ties):
    y = rng.integers(0, n_classes, n_cases)
    probs = rng.dirichlet(np.ones(n_classes), size=(n_entries, n_cases))
    if ties:  # a coarse grid: many tied scores within a class
        probs = np.round(probs * 4) / 4
    pred = probs.argmax(axis=2)
    pred[:, ::5] = rng.integers(0, n_classes, pred[:, ::5].shape)  # a label that is not the arg-max
    return y, probs, pred


@pytest.mark.parametrize("name", [m.name for m in metrics_for(CLASSIFICATION)])
@pytest.mark.parametrize("n_classes", [2, 3, 4])
@pytest.mark.parametrize("ties", [False, True])
def test_each_pooled_function_equals_scikit_learn_on_every_resample(name, n_classes, ties):
    rng = np.random.default_rng([n_classes, ties, len(name)])
    y, probs, pred = _random_task(rng, 17, n_classes, 3, ties)
    idx = rng.integers(0, len(y), size=(12, len(y)))
    idx[0] = np.arange(len(y))  # the full data
    idx[1] = np.flatnonzero(y == y[0])[np.arange(len(y)) % (y == y[0]).sum()]  # one class only
    idx[2] = np.flatnonzero(y != 0)[np.arange(len(y)) % (y != 0).sum()]  # class 0 absent
    metric = METRICS[name]
    got = metric.function(y, probs, pred, idx)
    assert got.shape == (12, 3)
    for r in range(idx.shape[0]):
        for e in range(3):
            expected = REFERENCE[name](y[idx[r]], probs[e][idx[r]], pred[e][idx[r]])
            np.testing.assert_allclose(got[r, e], expected, atol=1e-12, err_msg=f"{name} resample {r} entry {e}")


def test_pooled_functions_take_one_entry_and_default_to_the_arg_max_and_every_case():
    rng = np.random.default_rng(4)
    y, probs, _ = _random_task(rng, 12, 3, 1, ties=False)
    for metric in metrics_for(CLASSIFICATION):
        got = metric.function(y, probs[0])
        assert got.shape == (1,)
        np.testing.assert_allclose(got[0], REFERENCE[metric.name](y, probs[0], probs[0].argmax(axis=1)), atol=1e-12)


def test_pooled_functions_agree_with_the_metrics_json_of_a_fold():
    rng = np.random.default_rng(9)
    classes = ("a", "b", "c")
    y = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 1, 0])
    probs = rng.dirichlet(np.ones(3), size=len(y))
    organizers = score_classification(y, probs, classes).aggregates
    assert set(METRIC_NAMES) == {m.name for m in metrics_for(CLASSIFICATION)}
    for metric in metrics_for(CLASSIFICATION):
        assert metric.function(y, probs)[0] == pytest.approx(organizers[metric.name], abs=1e-12), metric.name


def test_average_precision_takes_the_leaderboards_most_wrong_answer_and_no_cases():
    y = np.array([0, 1, 1, 0, 1])
    worst = np.where(np.eye(2, dtype=bool)[y], -1.0, 2.0)  # a missing case: true class below all
    assert macro_average_precision(y, worst)[0] == pytest.approx(_average_precision(y, worst))
    assert np.isnan(macro_average_precision(np.zeros(0, dtype=int), np.zeros((2, 0, 2)))).all()


# --------------------------------------------------------------------------- lookups


def test_every_metric_has_one_task_type_kind_range_and_a_function_when_pooled():
    assert [m.name for m in metrics_for(SEGMENTATION)] == ["dice", "nsd"]
    assert [m.name for m in metrics_for(CLASSIFICATION)] == ["auroc", "balanced_accuracy", "f1", "average_precision"]
    assert metrics_for(CLASSIFICATION, PER_CASE) == () and metrics_for(SEGMENTATION, POOLED) == ()
    for metric in METRICS.values():
        assert metric.range == (0.0, 1.0) and metric.higher_is_better and metric.worst == 0.0
        assert (metric.function is not None) == (metric.kind == POOLED)


def test_get_metric_checks_the_task_type_and_suggests_a_name():
    assert get_metric("f1", CLASSIFICATION).kind == POOLED
    assert get_metric("dice").task_type == SEGMENTATION
    with pytest.raises(UnknownMetricError, match=r"unknown metric 'dise' \(did you mean 'dice'\?\)"):
        get_metric("dise", SEGMENTATION)
    with pytest.raises(ValueError, match=r"did you mean 'average_precision'\?\); known classification metrics: auroc"):
        get_metric("average_precission", CLASSIFICATION)
    with pytest.raises(UnknownMetricError, match="'dice' is a segmentation metric, not a classification one"):
        get_metric("dice", CLASSIFICATION)
    with pytest.raises(MetricError, match="unknown task type 'detection'"):
        metrics_for("detection")


def test_resolve_metric_takes_a_direction_only_for_names_it_does_not_know():
    assert resolve_metric("nsd") is METRICS["nsd"] and resolve_metric("nsd", True) is METRICS["nsd"]
    hd95 = resolve_metric("hd95", False)
    assert (hd95.higher_is_better, hd95.range, hd95.worst, hd95.kind, hd95.sign) == (False, None, None, PER_CASE, -1.0)
    with pytest.raises(MetricError, match="'hd95' is unknown and has no higher_is_better"):
        resolve_metric("hd95")
    with pytest.raises(MetricError, match="'auroc' is higher_is_better=True, not False"):
        resolve_metric("auroc", False)
    with pytest.raises(MetricError, match="must be true or false"):
        resolve_metric("dice", "yes")
    with pytest.raises(MetricError, match=r"dice values must lie in \[0, 1\]"):
        METRICS["dice"].check_values(np.array([0.5, np.nan, 1.5]))
    METRICS["dice"].check_values(np.array([0.0, np.nan, 1.0]))


def test_task_specs_validate_against_the_registry():
    from harness.tasks.spec import CLASSIFICATION_METRICS, SEGMENTATION_METRICS, MetricSpec, _check_metric_name

    assert CLASSIFICATION_METRICS == ("auroc", "balanced_accuracy", "f1", "average_precision")
    assert SEGMENTATION_METRICS == ("dice", "nsd")
    _check_metric_name("average_precision", CLASSIFICATION)
    with pytest.raises(ValueError, match="'auroc' is a classification metric, not a segmentation one"):
        _check_metric_name("auroc", SEGMENTATION)
    assert MetricSpec(name="f1").higher_is_better is True


def test_importing_the_registry_and_a_task_spec_stays_light():
    code = "import sys, harness.tasks.spec, harness.metrics.registry; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
