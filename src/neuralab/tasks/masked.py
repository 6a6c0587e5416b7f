"""Masked-autoencoding pretraining: MAE for a ViT (He et al. 2022), SimMIM-style for any
other backbone (Xie et al. 2022); see ``neuralab.ssl.mae``. No ``train/acc`` is logged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuralab import data
from neuralab.config import RunConfig
from neuralab.errors import UserError
from neuralab.models.vit import ViT
from neuralab.ssl.dae import reconstruction_loss
from neuralab.ssl.mae import encode_visible, norm_pix_target, pixel_mask, random_patch_mask
from neuralab.tasks.base import TASKS
from neuralab.tasks.pretext import PretextTask


@TASKS.register("mae")
class MaskedTask(PretextTask):
    def check(self, cfg: RunConfig, world_size: int = 1) -> None:
        """Masked patches must tile the image."""
        super().check(cfg, world_size)
        spec = data.DATASETS.get(cfg.data.name)
        if spec.height % cfg.ssl.patch_size or spec.width % cfg.ssl.patch_size:
            raise UserError(
                f"ssl.patch_size={cfg.ssl.patch_size} does not divide {cfg.data.name}'s "
                f"{spec.height}x{spec.width} images; pick a divisor"
            )

    def pretext_loss(
        self, model: nn.Module, x: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, None, int]:
        encoder = model.encoder
        is_vit = isinstance(encoder, ViT)
        patch = encoder.config.patch_size if is_vit else self.ssl.patch_size
        grid = x.shape[-1] // patch
        hidden, visible = random_patch_mask(len(x), grid, self.ssl.mask_ratio, generator)
        hidden, visible = hidden.to(x.device), visible.to(x.device)
        where = pixel_mask(hidden, grid, patch)  # (B, 1, H, W)
        filled = torch.where(where, encoder.normalize.mean, x)  # hidden pixels: the data mean
        if not is_vit:
            return reconstruction_loss(model(filled), x, where), None, len(x)
        pred = model.pretext(encode_visible(encoder, filled, visible), visible)  # (B, P, p*p*C)
        err = (pred.float() - norm_pix_target(x, patch)).square().mean(dim=-1)  # (B, P)
        return (err * hidden).sum() / hidden.sum(), None, len(x)
