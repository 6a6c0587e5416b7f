"""Image files -> model inputs, converted like the training data.

A photo of a shirt is usually dark on a light background, while Fashion-MNIST
(like MNIST and the digits) is light on black: images whose border is lighter
than their centre are inverted for such datasets, then padded to a square with
the background colour and resized, so that any size of image can be classified.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from neuralab.errors import UserError


def border_mean(x: torch.Tensor) -> float:
    """Mean value of the one-pixel border of a batch of images N×C×H×W."""
    border = torch.cat(
        [x[..., 0, :].flatten(), x[..., -1, :].flatten(), x[..., 0].flatten(), x[..., -1].flatten()]
    )
    return float(border.mean())


def read_image(
    path: str | Path, *, channels: int, size: tuple[int, int], dark_background: bool
) -> tuple[torch.Tensor, bool]:
    """Read ``path`` as a C×H×W float tensor in [0, 1]; returns (image, was_inverted)."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("L" if channels == 1 else "RGB")
    except FileNotFoundError:
        raise UserError(f"image {path} not found") from None
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"cannot read image {path}: {err}") from None
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    arr = arr.unsqueeze(0) if channels == 1 else arr.permute(2, 0, 1)  # (C, h, w)
    inverted = dark_background and border_mean(arr) > float(arr.mean())
    if inverted:
        arr = 1.0 - arr
    c, h, w = arr.shape
    side = max(h, w)
    fill = border_mean(arr)
    square = torch.full((c, side, side), fill)
    top, left = (side - h) // 2, (side - w) // 2
    square[:, top : top + h, left : left + w] = arr
    if side >= max(size):  # shrinking: average each block, as the datasets were made
        resized = torch.nn.functional.interpolate(square.unsqueeze(0), size=size, mode="area")
    else:
        resized = torch.nn.functional.interpolate(
            square.unsqueeze(0), size=size, mode="bilinear", align_corners=False
        )
    return resized.squeeze(0).clamp(0, 1), inverted
