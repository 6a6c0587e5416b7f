"""SimCLR pretraining (Chen et al. 2020): two random views of each image, NT-Xent loss.

The views are made here, from the batch of clean images (``data.augment`` is off for
pretraining). ``train/acc`` is the fraction of the 2B views that ranked their partner first.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuralab.ssl.simclr import nt_xent
from neuralab.ssl.views import simclr_view
from neuralab.tasks.pretext import PretextTask


class ContrastiveTask(PretextTask):
    def pretext_loss(
        self, model: nn.Module, x: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, int]:
        n = len(x)
        kw = {"crop_scale": self.ssl.crop_scale, "strength": self.ssl.jitter, "hflip": self.hflip}
        v1 = simclr_view(x, generator=generator, **kw)
        v2 = simclr_view(x, generator=generator, **kw)
        z = model(torch.cat([v1, v2]))  # (2B, proj_dim): one pass, BatchNorm sees both views
        loss, correct = nt_xent(z[:n], z[n:], self.ssl.temperature)
        return loss, correct, 2 * n
