"""The linear probe against scikit-learn: the same optimum, the same accuracy, stratified folds.

The probe fits its multinomial logistic regression with torch's L-BFGS. These tests show that
it solves the very problem scikit-learn's ``LogisticRegression`` solves, on scikit-learn's
digits (raw pixels as the features): mean cross-entropy + l2 · |W|² is scikit-learn's
objective with C = 1 / (2 · l2 · N) (an unpenalised intercept in both).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from neuralab.probe.linear import (
    CV_FOLDS,
    L2_GRID,
    Features,
    balanced_subset,
    fit_linear_probe,
    stratified_folds,
)


@pytest.fixture(scope="module")
def digits() -> Features:
    """Digits' 64 pixels as features: 500 to fit, 500 to validate, the rest to test."""
    x, y = load_digits(return_X_y=True)
    f, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    fit, val, test = order[:500], order[500:1000], order[1000:]
    return Features((f[fit], y[fit]), (f[val], y[val]), (f[test], y[test]))


def _sklearn(z: np.ndarray, y: np.ndarray, l2: float) -> LogisticRegression:
    """scikit-learn's fit of the probe's objective, solved to a tight tolerance."""
    return LogisticRegression(C=1 / (2 * l2 * len(y)), tol=1e-8, max_iter=100_000).fit(z, y)


def _objective(z: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray, l2: float) -> float:
    """Mean cross-entropy + l2 · |W|² in float64; ``w`` is (D, K)."""
    logits = z @ w + b
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean() + l2 * (w**2).sum())


@pytest.mark.parametrize("l2", L2_GRID)
def test_the_probe_reaches_scikit_learns_optimum_and_accuracy(
    digits: Features, l2: float, one_thread
) -> None:
    """For every L2 strength of the grid, on the same standardised features, the probe's
    weights score the objective no worse than scikit-learn's (up to float32 rounding), and its
    accuracy on held-out images equals scikit-learn's within one image (where the weakest
    penalties leave the optimum nearly flat, two solvers may stop either side of one point).
    This proves the probe's fit is the standard logistic regression, so its figures compare
    with papers that use scikit-learn, and that choosing ``l2`` means choosing ``1/(2CN)``."""
    (f, y), (f_val, y_val) = digits.train, digits.val
    probe, acc = fit_linear_probe((f, y), (f_val, y_val), 10, l2_grid=(l2,))
    z = ((f - probe.mean) / probe.std).double().numpy()
    z_val = ((f_val - probe.mean) / probe.std).double().numpy()
    reference = _sklearn(z, y.numpy(), l2)
    theirs = float((reference.predict(z_val) == y_val.numpy()).mean())
    assert abs(acc - theirs) <= 1 / len(y_val) + 1e-12, (acc, theirs)
    ours_loss = _objective(z, y.numpy(), probe.weight.double().numpy(), probe.bias.numpy(), l2)
    ref_loss = _objective(z, y.numpy(), reference.coef_.T, reference.intercept_, l2)
    assert ours_loss <= ref_loss + 1e-4 * max(ref_loss, 1e-3), (ours_loss, ref_loss)


def test_cross_validation_uses_stratified_folds_and_agrees_with_scikit_learn(
    digits: Features, one_thread
) -> None:
    """With a fraction of the labels the L2 strength is cross-validated on scikit-learn's
    ``StratifiedKFold`` (5 parts, shuffled with seed 0): the folds are exactly its folds,
    every held-out part holds each class in proportion (counts differ by at most one), and
    the probe's cross-validated accuracy of a strength is scikit-learn's own pooled
    out-of-fold accuracy for it, within one image."""
    f, y = digits.train
    subset = balanced_subset(y, 0.2, 0, 10)
    ys = y[subset]
    ours = stratified_folds(ys)
    reference = StratifiedKFold(CV_FOLDS, shuffle=True, random_state=0).split(ys.numpy(), ys)
    for (kept, held), (ref_kept, ref_held) in zip(ours, reference, strict=True):
        assert kept.tolist() == ref_kept.tolist() and held.tolist() == ref_held.tolist()
    assert sorted(torch.cat([held for _, held in ours]).tolist()) == list(range(len(ys)))
    per_part = torch.stack([torch.bincount(ys[held], minlength=10) for _, held in ours])
    assert (per_part.max(0).values - per_part.min(0).values).max() <= 1
    l2 = 1e-3
    probe, cv_acc = fit_linear_probe((f[subset], ys), None, 10, l2_grid=(l2,))
    z = ((f[subset] - probe.mean) / probe.std).double().numpy()
    correct = 0
    for kept, held in ours:
        model = _sklearn(z[kept], ys[kept].numpy(), l2)
        correct += int((model.predict(z[held]) == ys[held].numpy()).sum())
    assert abs(cv_acc - correct / len(ys)) <= 1 / len(ys) + 1e-12


def test_a_class_with_one_label_still_cross_validates_quietly() -> None:
    """A 1% budget of a small dataset can leave one example of a class: the folds shrink to
    what the smallest class allows (at least 2) and scikit-learn's warning stays inside."""
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folds = stratified_folds(y)
    assert len(folds) == 2
    assert sorted(torch.cat([held for _, held in folds]).tolist()) == list(range(7))
    y = torch.arange(10).repeat(3)
    assert len(stratified_folds(y)) == 3  # three of each class: three parts, not five
    # one example of every class (1% of digits' training split): two plain halves, no crash
    folds = stratified_folds(torch.arange(10))
    assert len(folds) == 2
    assert sorted(torch.cat([held for _, held in folds]).tolist()) == list(range(10))
