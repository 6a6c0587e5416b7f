"""Denoising-autoencoder pretraining (Vincent et al. 2008): reconstruct clean images from
corrupted ones (``ssl.noise``: gaussian or masking, of ``ssl.noise_level``).

There is nothing to classify, so no ``train/acc`` is logged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuralab.ssl.dae import corrupt, reconstruction_loss
from neuralab.tasks.base import TASKS
from neuralab.tasks.pretext import PretextTask


@TASKS.register("dae")
class DenoiseTask(PretextTask):
    def pretext_loss(
        self, model: nn.Module, x: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, None, int]:
        noisy = corrupt(x, self.ssl.noise, self.ssl.noise_level, generator)
        return reconstruction_loss(model(noisy), x), None, len(x)
