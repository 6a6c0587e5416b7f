"""SimCLR's views of a batch, as batched tensor ops (Chen et al. 2020, "A Simple Framework for
Contrastive Learning of Visual Representations", Appendix A).

Random resized crop (one affine grid per image, resampled bilinearly), horizontal flip where
the dataset allows it, then brightness and contrast jitter with probability 0.8. Colour
images also get SimCLR's saturation jitter and random greyscale; grayscale images have no
colour to jitter. Every random number comes from ``generator`` (torch's global RNG when it is
None, which every checkpoint saves), so a resumed run draws the same views.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def resized_crop(
    x: Tensor, scale: tuple[float, float], hflip: bool, generator: torch.Generator | None
) -> Tensor:
    """Crop a random box of ``scale`` of the area, aspect ratio in [3/4, 4/3], from each image
    of ``x`` (N, C, H, W) and resize it back to H x W; mirror half of them if ``hflip``."""
    n = x.shape[0]
    area = _uniform(n, *scale, generator)
    log_ratio = _uniform(n, math.log(3 / 4), math.log(4 / 3), generator)
    ratio = log_ratio.exp()
    w = (area * ratio).sqrt().clamp(max=1.0)  # box width as a fraction of the image
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (1 - w) * _uniform(n, -1.0, 1.0, generator)  # box centre in [-1, 1] coordinates
    cy = (1 - h) * _uniform(n, -1.0, 1.0, generator)
    flip = torch.ones(n)
    if hflip:
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (N, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def jitter(x: Tensor, strength: float, generator: torch.Generator | None) -> Tensor:
    """Brightness and contrast (and, for colour images, saturation) jitter of ``strength``,
    applied to each image with probability 0.8; colour images turn grey with probability 0.2."""
    n, c = x.shape[:2]

    def per_image(values: Tensor) -> Tensor:  # drawn on the CPU (the saved RNG), used on x's device
        return values.view(n, 1, 1, 1).to(x.device)

    apply = per_image(torch.rand(n, generator=generator) < 0.8)
    bright = per_image(_uniform(n, 1 - strength, 1 + strength, generator))
    contrast = per_image(_uniform(n, 1 - strength, 1 + strength, generator))
    out = x * bright
    mean = out.mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    out = (out - mean) * contrast + mean
    if c == 3:
        luma = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
        grey = (out * luma).sum(1, keepdim=True)  # (N, 1, H, W)
        saturation = per_image(_uniform(n, 1 - strength, 1 + strength, generator))
        out = (out - grey) * saturation + grey
        to_grey = per_image(torch.rand(n, generator=generator) < 0.2)
        out = torch.where(to_grey, grey.expand_as(out), out)
    return torch.where(apply, out, x).clamp(0, 1)


def simclr_view(
    x: Tensor,
    *,
    crop_scale: float,
    strength: float,
    hflip: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One random view of every image of ``x`` (N, C, H, W) in [0, 1]; ``x`` is not modified."""
    return jitter(resized_crop(x, (crop_scale, 1.0), hflip, generator), strength, generator)
