"""NNCLR's pieces (Dwibedi et al. 2021, "With a Little Help from My Friends: Nearest-Neighbor
Contrastive Learning of Visual Representations"): the support set and the loss.

SimCLR's positive for a view is the other view of the same image. NNCLR's is the nearest
neighbour of that view's projection in a *support set* of projections of earlier batches: an
image of something else that the network already finds similar, often of the same class. So
the loss pulls together what augmentation alone cannot relate (two different shirts), and the
features cluster by kind, which a probe with few labels needs. The support set is a FIFO
queue of the first view's normalised projections; it is part of the task's state, saved in
every checkpoint, so a resumed run continues with the same queue.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from neuralab.errors import UserError


class SupportSet:
    """A FIFO queue of ``size`` unit vectors of dimension ``dim``; starts as random directions
    drawn from ``generator`` (torch's global RNG when None), as in the paper's code."""

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None) -> None:
        self.queue = F.normalize(torch.randn(size, dim, generator=generator), dim=1)  # (S, D)
        self.ptr = 0

    @torch.no_grad()
    def nearest(self, z: Tensor) -> Tensor:
        """The most cosine-similar row of the queue for each row of ``z`` (N, D): (N, D).
        The queue moves to ``z``'s device once and stays there."""
        self.queue = self.queue.to(z.device)
        idx = (F.normalize(z.float(), dim=1) @ self.queue.T).argmax(dim=1)  # (N,)
        return self.queue[idx]

    @torch.no_grad()
    def push(self, z: Tensor) -> None:
        """Replace the oldest rows with ``z`` (N, D), normalised and detached."""
        z = F.normalize(z.detach().float(), dim=1)[: len(self.queue)].to(self.queue.device)
        rows = (self.ptr + torch.arange(len(z), device=z.device)) % len(self.queue)
        self.queue[rows] = z
        self.ptr = int((self.ptr + len(z)) % len(self.queue))

    def state_dict(self) -> dict[str, Tensor]:
        return {"queue": self.queue.cpu().clone(), "ptr": torch.tensor(self.ptr)}

    def load_state_dict(self, saved: dict[str, Tensor]) -> None:
        if saved["queue"].shape != self.queue.shape:
            raise UserError(
                f"the checkpoint's support set is {tuple(saved['queue'].shape)}, the config's "
                f"{tuple(self.queue.shape)}; resume with the run's ssl.support_size, proj_dim"
            )
        self.queue, self.ptr = saved["queue"].clone(), int(saved["ptr"])


def nnclr_loss(
    z1: Tensor, z2: Tensor, support: SupportSet, temperature: float
) -> tuple[Tensor, Tensor]:
    """NNCLR's symmetric loss of two views (N, D) of the same N images.

    Anchor i is NN(z1_i), the support set's nearest neighbour of view 1 of image i; it must
    pick out view 2 of image i among the N second views of the batch (an N-way softmax of
    cosine similarity / temperature), and the same with the views swapped. Gradients flow
    through the second views only (the neighbours are constants). Returns (mean loss over the
    2N anchors, how many of them ranked their image's other view first).
    """
    n = z1.shape[0]
    target = torch.arange(n, device=z1.device)
    loss, correct = 0.0, torch.zeros((), dtype=torch.long, device=z1.device)
    for a, b in ((z1, z2), (z2, z1)):
        anchor = support.nearest(a)  # (N, D), unit rows, no gradient
        with torch.autocast(a.device.type, enabled=False):  # fp32 similarities under bf16
            logits = anchor @ F.normalize(b.float(), dim=1).T / temperature  # (N, N)
        loss = loss + F.cross_entropy(logits, target) / 2
        correct = correct + (logits.detach().argmax(dim=1) == target).sum()
    return loss, correct
