"""Measuring frozen features: linear probe, kNN, class-balanced label subsets.

The protocol (as in Chen et al. 2020 and He et al. 2022): pretraining saw the training split
only, without labels, and never the test split. The encoder is then frozen: its pre-head
features (``forward_features``, eval mode) are computed once, and

- the **linear probe** is a multinomial logistic regression on those features (standardised
  with the training features' mean and std), fitted by full-batch L-BFGS; its L2 strength is
  chosen on the val split when every label is used, and by stratified 5-fold cross-validation
  (scikit-learn's ``StratifiedKFold``) inside the labelled subset when only a fraction is (the
  val split's labels are not part of a 1% budget); the test split is touched once, by the
  chosen probe. The fit minimises scikit-learn's multinomial ``LogisticRegression`` objective
  with ``C = 1 / (2 · l2 · N)`` (a test checks that both reach the same accuracy); it stays in
  torch, on the tensors the features already are;
- **kNN** classifies each test image by its k most cosine-similar labelled training images,
  votes weighted by exp(cos / t) (Wu et al. 2018).

A label fraction below 1 uses a class-balanced subset of the training split drawn with a fixed
seed, the same subset for every method. Nothing here changes the encoder's weights.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from neuralab import config as config_lib
from neuralab import data
from neuralab.config import RunConfig
from neuralab.errors import UserError
from neuralab.models import create_model
from neuralab.models.base import ImageClassifier
from neuralab.seed import derived_generator
from neuralab.ssl.knn import extract_features, knn_predict
from neuralab.train import checkpoint

L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
CV_FOLDS = 5


def load_encoder(run_dir: str | Path, which: str = "best") -> tuple[ImageClassifier, RunConfig]:
    """The backbone of a pretraining run (its pretext head dropped), or the model of a
    supervised image run, in eval mode; and the run's config."""
    run_dir = Path(run_dir)
    cfg = config_lib.load_run(run_dir)
    if data.DATASETS.get(cfg.data.name).kind != "image":
        raise UserError(f"{run_dir} is a text run; probes measure image encoders")
    ckpt = checkpoint.read(run_dir, which, with_state=False)
    spec = ckpt.meta["model"]
    encoder = create_model(spec["name"], **spec["config"])
    weights = ckpt.model
    if ckpt.ema is not None:
        weights = {k.removeprefix("module."): v for k, v in ckpt.ema.items() if k != "n_averaged"}
    if cfg.ssl.method != "none":
        weights = {k[8:]: v for k, v in weights.items() if k.startswith("encoder.")}
    checkpoint.load_weights(encoder, weights, ckpt.path)
    return encoder.eval(), cfg


def balanced_subset(labels: Tensor, fraction: float, seed: int, num_classes: int) -> Tensor:
    """Sorted indices of round(fraction · N / classes) examples of every class, drawn with a
    generator seeded by (seed, class); all indices when ``fraction`` is 1."""
    if not 0 < fraction <= 1:
        raise UserError(f"a label fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return torch.arange(len(labels))
    per_class = max(1, round(fraction * len(labels) / num_classes))
    picked = []
    for c in range(num_classes):
        members = (labels == c).nonzero().flatten()
        if len(members) < per_class:
            raise UserError(
                f"class {c} has {len(members)} training examples, fewer than the {per_class} "
                f"a class-balanced {fraction:g} of the labels needs"
            )
        order = torch.randperm(len(members), generator=derived_generator(seed, c))
        picked.append(members[order[:per_class]])
    return torch.cat(picked).sort().values


@dataclass
class LinearProbe:
    """A fitted logistic regression on standardised features."""

    weight: Tensor  # (D, K)
    bias: Tensor  # (K,)
    mean: Tensor  # (D,)
    std: Tensor  # (D,)
    l2: float

    def predict(self, features: Tensor) -> Tensor:
        return (((features - self.mean) / self.std) @ self.weight + self.bias).argmax(dim=1)


def _fit_logistic(x: Tensor, y: Tensor, num_classes: int, l2: float, iters: int) -> tuple:
    """(weight, bias) minimising mean cross-entropy + l2 · |weight|² (the bias is free)."""
    w = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def stratified_folds(y: Tensor, folds: int = CV_FOLDS) -> list[tuple[Tensor, Tensor]]:
    """(kept, held-out) indices of each of ``folds`` parts of ``y`` that hold every class in
    the same proportion (a fixed shuffle, seed 0); fewer parts when a class has fewer members.

    A class with a single labelled example (a 1% budget of a small dataset) lands in one part
    only, and the probe fitted without it cannot predict it there: every L2 strength pays the
    same for it, so the choice between them is still fair; scikit-learn's warning about it
    is not repeated to the user. When every class has a single example (1% of digits), no
    stratified split exists: two plain shuffled halves stand in, where every strength scores
    the same and the grid's first wins.
    """
    from sklearn.model_selection import KFold, StratifiedKFold  # late: scikit-learn is slow

    counts = torch.bincount(y)
    smallest = int(counts[counts > 0].min())
    if int(counts.max()) < 2:
        splitter = KFold(2, shuffle=True, random_state=0)
    else:
        splitter = StratifiedKFold(max(2, min(folds, smallest)), shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        parts = list(splitter.split(torch.zeros(len(y), 1).numpy(), y.numpy()))
    return [(torch.as_tensor(kept), torch.as_tensor(held)) for kept, held in parts]


def _cross_validated_accuracy(
    z: Tensor, y: Tensor, num_classes: int, l2: float, iters: int, folds: int
) -> float:
    """Accuracy of the probe with strength ``l2`` on each held-out part of (z, y) when fitted
    on the others, over the ``stratified_folds`` of y."""
    correct = 0
    for kept, held in stratified_folds(y, folds):
        w, b = _fit_logistic(z[kept], y[kept], num_classes, l2, iters)
        correct += int(((z[held] @ w + b).argmax(dim=1) == y[held]).sum())
    return correct / len(y)


def fit_linear_probe(
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor] | None,
    num_classes: int,
    l2_grid: tuple[float, ...] = L2_GRID,
    iters: int = 300,
) -> tuple[LinearProbe, float]:
    """Logistic regression on (features, labels) ``train`` with the L2 strength of the grid
    that is most accurate on ``val`` or, when ``val`` is None, in stratified 5-fold
    cross-validation on ``train`` itself (then refitted on all of it); returns the probe and
    that accuracy."""
    f, y = train
    mean, std = f.mean(dim=0), f.std(dim=0).clamp(min=1e-6)
    z = (f - mean) / std
    scores = {}
    for l2 in l2_grid:
        if val is None:
            scores[l2] = _cross_validated_accuracy(z, y, num_classes, l2, iters, CV_FOLDS), None
        else:
            probe = LinearProbe(*_fit_logistic(z, y, num_classes, l2, iters), mean, std, l2)
            scores[l2] = (probe.predict(val[0]) == val[1]).double().mean().item(), probe
    l2 = max(scores, key=lambda s: scores[s][0])  # the first of equals: the weakest L2
    acc, probe = scores[l2]
    if probe is None:
        probe = LinearProbe(*_fit_logistic(z, y, num_classes, l2, iters), mean, std, l2)
    return probe, acc


@dataclass
class Features:
    """Frozen features (or raw pixels) and labels of the three splits."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]


def split_features(encoder: ImageClassifier | None, cfg: RunConfig, batch_size: int) -> Features:
    """``encoder``'s features of the run's train, val and test splits (raw pixels if None)."""
    out = []
    for split in ("train", "val", "test"):
        x, y = data.load_split(cfg.data, split)
        f = x.flatten(1) if encoder is None else extract_features(encoder, x, batch_size)
        out.append((f, y))
    return Features(*out)


def linear_probe_accuracy(feats: Features, subset: Tensor, num_classes: int) -> dict[str, Any]:
    """Fit the probe on the ``subset`` of the training features; its test accuracy, and the
    accuracy that chose its L2 strength: on the val split when the subset is the whole
    training split, else cross-validated inside the subset (no label outside it is read)."""
    f, y = feats.train
    everything = len(subset) == len(y)
    val = feats.val if everything else None
    probe, chosen_on = fit_linear_probe((f[subset], y[subset]), val, num_classes)
    test_acc = (probe.predict(feats.test[0]) == feats.test[1]).double().mean().item()
    key = "val/acc" if everything else "cv/acc"
    return {"test/acc": test_acc, key: chosen_on, "l2": probe.l2}


def knn_accuracy(
    feats: Features, subset: Tensor, num_classes: int, k: int, temperature: float
) -> float:
    """Test accuracy of kNN with the ``subset`` of the labelled training features as memory."""
    f, y = feats.train
    preds = knn_predict(f[subset], y[subset], feats.test[0], num_classes, k, temperature)
    return (preds == feats.test[1]).double().mean().item()


def _save(run_dir: Path, name: str, result: dict[str, Any]) -> None:
    out = run_dir / "probes" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def linear_probe(
    run_dir: str | Path, labels: float = 1.0, seed: int = 0, which: str = "best"
) -> dict[str, Any]:
    """Linear-probe test accuracy of a run's frozen encoder with a fraction of the labels;
    also written to ``RUN/probes/linear_probe_<labels>.json``."""
    run_dir = Path(run_dir)
    encoder, cfg = load_encoder(run_dir, which)
    num_classes = data.DATASETS.get(cfg.data.name).num_classes
    feats = split_features(encoder, cfg, cfg.train.eval_batch_size)
    subset = balanced_subset(feats.train[1], labels, seed, num_classes)
    result = {
        "run": str(run_dir),
        "checkpoint": which,
        "labels": labels,
        "seed": seed,
        "train/examples": len(subset),
        "feature_dim": feats.train[0].shape[1],
        **linear_probe_accuracy(feats, subset, num_classes),
        "test/examples": len(feats.test[1]),
    }
    _save(run_dir, f"linear_probe_{labels:g}", result)
    return result


def knn(
    run_dir: str | Path, k: int = 20, temperature: float = 0.07, which: str = "best"
) -> dict[str, Any]:
    """kNN test accuracy of a run's frozen encoder, every training image as memory; also
    written to ``RUN/probes/knn.json``."""
    run_dir = Path(run_dir)
    if k < 1:
        raise UserError(f"--k must be >= 1, got {k}")
    encoder, cfg = load_encoder(run_dir, which)
    num_classes = data.DATASETS.get(cfg.data.name).num_classes
    feats = split_features(encoder, cfg, cfg.train.eval_batch_size)
    everything = torch.arange(len(feats.train[1]))
    acc = knn_accuracy(feats, everything, num_classes, k, temperature)
    result = {
        "run": str(run_dir),
        "checkpoint": which,
        "k": k,
        "temperature": temperature,
        "test/acc": acc,
        "train/examples": len(everything),
        "test/examples": len(feats.test[1]),
    }
    _save(run_dir, "knn", result)
    return result
