"""Denoising autoencoder (Vincent et al. 2008, "Extracting and Composing Robust Features with
Denoising Autoencoders"): corrupt the input, reconstruct the clean image from the encoder's
features. The decoder is thrown away; the encoder's features are what is kept.

Two corruptions, as in the paper: additive Gaussian noise, and masking noise (a random
fraction of the pixels set to 0). Reconstruction is the mean squared error to the clean image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def corrupt(x: Tensor, noise: str, level: float, generator: torch.Generator | None) -> Tensor:
    """``x`` (N, C, H, W) in [0, 1] with Gaussian noise of std ``level`` (clamped to [0, 1]),
    or with each pixel zeroed with probability ``level`` ("masking"); ``x`` is not modified.
    The noise is drawn on the CPU (whose RNG state checkpoints save) and moved to x's device."""
    if noise == "gaussian":
        noise_values = torch.randn(x.shape, generator=generator).to(x.device)
        return (x + level * noise_values).clamp(0, 1)
    keep = torch.rand(x.shape[0], 1, *x.shape[2:], generator=generator) >= level  # all channels
    return x * keep.to(x.device)


class PixelDecoder(nn.Module):
    """(B, D) features -> (B, C, H, W) image in [0, 1]: an MLP with a sigmoid output."""

    def __init__(self, in_dim: int, hidden_dim: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape
        c, h, w = shape
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, c * h * w)
        )

    def forward(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.net(h)).view(-1, *self.shape)  # (B, C, H, W)


def reconstruction_loss(recon: Tensor, x: Tensor, where: Tensor | None = None) -> Tensor:
    """Mean squared error per pixel, over the pixels where ``where`` is True if given."""
    err = F.mse_loss(recon.float(), x, reduction="none")
    if where is None:
        return err.mean()
    where = where.expand_as(err)
    return (err * where).sum() / where.sum().clamp(min=1)
