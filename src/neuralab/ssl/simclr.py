"""SimCLR's pieces: the projection head and the NT-Xent loss (Chen et al. 2020).

The loss of a batch of N images seen twice: each of the 2N views must pick out its partner
among the 2N - 1 other views by cosine similarity / temperature (a (2N - 1)-way softmax).
The projection head sits on top of the backbone's features during pretraining only; the
representation that is evaluated is the one before it (the paper's h, not z).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Linear: the MLP g(h) of SimCLR."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)  # (B, out_dim)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Normalised-temperature cross-entropy of two views (N, D) of the same N images.

    Returns (mean loss over the 2N views, how many of them ranked their partner first).
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D) on the unit sphere
    with torch.autocast(z.device.type, enabled=False):  # fp32 similarities even under bf16
        logits = z @ z.T / temperature  # (2N, 2N) cosine similarities / t
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), -torch.inf)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)  # (2N,)
    loss = F.cross_entropy(logits, partner)
    correct = (logits.detach().argmax(dim=1) == partner).sum()
    return loss, correct
