"""Batched augmentation: random crop after zero padding, random horizontal flip.

The standard recipe for small images (He et al., 2016, "Deep Residual Learning",
Sec. 4.2: pad 4, random 32x32 crop, horizontal flip). Done as one gather on the
whole batch instead of a Python loop over images, because on a 2-core CPU a
per-image loop would cost more than the model's forward pass. All randomness comes
from the caller's generator, so a resumed run replays exactly the same crops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def augment(x: Tensor, *, generator: torch.Generator, crop_pad: int, hflip: bool) -> Tensor:
    """Randomly crop (after zero padding by ``crop_pad``) and flip each image of ``x``.

    ``x`` is (N, C, H, W); each image gets its own offset and, when ``hflip``, a flip
    with probability 1/2. Returns a new tensor and never modifies ``x``. Random draws,
    in this order: row offsets (N,), column offsets (N,), flips (N,).
    """
    if crop_pad < 0:
        raise ValueError(f"crop_pad must be >= 0, got {crop_pad}")
    if crop_pad == 0 and not hflip:
        return x.clone()
    n, c, h, w = x.shape
    device = generator.device
    rows = torch.arange(h, device=device).expand(n, h)  # (N, H)
    cols = torch.arange(w, device=device).expand(n, w)  # (N, W)
    if crop_pad:
        x = F.pad(x, (crop_pad,) * 4)  # (N, C, H+2p, W+2p), zeros outside the image
        span = 2 * crop_pad + 1
        rows = rows + torch.randint(span, (n, 1), generator=generator, device=device)
        cols = cols + torch.randint(span, (n, 1), generator=generator, device=device)
    if hflip:
        flip = torch.rand(n, 1, generator=generator, device=device) < 0.5  # (N, 1)
        cols = torch.where(flip, cols.flip(1), cols)  # reading columns backwards flips
    rows, cols = rows.to(x.device), cols.to(x.device)
    # One gather per axis: first pick the rows, then the columns, of every image.
    x = x.gather(2, rows[:, None, :, None].expand(n, c, h, x.shape[3]))  # (N, C, H, W+2p)
    return x.gather(3, cols[:, None, None, :].expand(n, c, h, w))  # (N, C, H, W)
