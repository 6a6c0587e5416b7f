"""Adversarial examples: FGSM and PGD attacks, robust accuracy and robustness curves.

``PGD(model, eps=8/255, alpha=2/255, steps=10)(images, labels)`` returns attacked images in
[0, 1]; ``robustness_curve`` reports robust accuracy against eps for any registered model;
``DensePGD`` attacks a segmenter's or a detector's own loss.
"""

from neuralab.attack.base import Attack
from neuralab.attack.dense import DensePGD
from neuralab.attack.fgsm import FGSM
from neuralab.attack.pgd import PGD
from neuralab.attack.robustness import robust_accuracy, robustness_curve

__all__ = ["FGSM", "PGD", "Attack", "DensePGD", "robust_accuracy", "robustness_curve"]
