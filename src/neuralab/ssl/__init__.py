"""Self-supervised learning: features without labels, and an honest way to measure them.

Pretraining runs through the one training loop as a task (``neuralab.tasks.contrastive``,
``denoise``, ``masked``) on an ``SSLModel``: any registered image backbone plus a pretext head
(projection MLP or decoder) that is thrown away afterwards. ``neuralab.probe.linear`` then
and ``neuralab.probe.label_efficiency`` measure the frozen backbone: linear probe, kNN, label
efficiency against baselines.
"""

from neuralab.ssl.knn import extract_features, knn_predict
from neuralab.ssl.model import SSLModel, build_ssl_model
from neuralab.ssl.simclr import nt_xent

__all__ = ["SSLModel", "build_ssl_model", "extract_features", "knn_predict", "nt_xent"]
