"""Frozen features, and the weighted k-nearest-neighbour classifier on them.

kNN on cosine similarity with votes weighted by exp(similarity / temperature) (Wu et al. 2018,
"Unsupervised Feature Learning via Non-Parametric Instance Discrimination"): no training, so it
measures the features themselves; it is the monitor during pretraining and an evaluation after.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.no_grad()
def extract_features(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """``model.forward_features`` of every image of ``x``, in eval mode: (N, D) float32.

    The model's mode is restored afterwards; its weights and BatchNorm statistics are untouched.
    """
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        out = [
            model.forward_features(x[i : i + batch_size].to(device)).float()
            for i in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def knn_predict(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1000,
) -> Tensor:
    """Predicted class of each query (M, D) from its k most cosine-similar rows of ``bank``."""
    bank = F.normalize(bank.float(), dim=1)
    bank_labels = bank_labels.to(bank.device)
    k = min(k, len(bank))
    preds = []
    for start in range(0, len(queries), chunk):
        q = F.normalize(queries[start : start + chunk].to(bank.device).float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)  # (m, k)
        votes = torch.zeros(len(q), num_classes, device=bank.device)
        votes.scatter_add_(1, bank_labels[idx], (sim / temperature).exp())
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)
