"""The model that is pretrained: any registered image backbone plus a pretext head.

``SSLModel.encoder`` is an ordinary ``ImageClassifier`` (its classification head is unused
during pretraining); ``SSLModel.pretext`` is SimCLR's projection MLP, a pixel decoder (DAE,
masked CNN) or an MAE decoder (masked ViT), and is thrown away afterwards. Checkpoints hold
``encoder.*`` and ``pretext.*`` weights; ``neuralab.probe.linear.load_encoder`` takes the encoder
back out as a plain model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuralab.config import SSLConfig
from neuralab.models.base import ImageClassifier
from neuralab.models.vit import ViT
from neuralab.ssl.dae import PixelDecoder
from neuralab.ssl.mae import MAEDecoder
from neuralab.ssl.simclr import ProjectionHead


class SSLModel(nn.Module):
    """Backbone + pretext head; ``config`` is the backbone's, so checkpoints name the backbone."""

    def __init__(self, encoder: ImageClassifier, pretext: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.pretext = pretext
        self.config = encoder.config

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images in [0, 1] -> (B, D): the representation that is evaluated."""
        return self.encoder.forward_features(x)

    def forward(self, x: Tensor) -> Tensor:
        """The pretext head on the features: projections (SimCLR) or reconstructed images."""
        return self.pretext(self.forward_features(x))

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def feature_dim(encoder: ImageClassifier) -> int:
    """Size D of ``encoder.forward_features`` (one eval-mode pass over two blank images)."""
    was_training = encoder.training
    encoder.eval()
    c, size = encoder.config.in_channels, encoder.config.image_size
    dim = encoder.forward_features(torch.zeros(2, c, size, size)).shape[1]
    encoder.train(was_training)
    return dim


def build_ssl_model(cfg: SSLConfig, encoder: ImageClassifier) -> SSLModel:
    """``encoder`` with the pretext head that ``cfg.method`` needs."""
    dim = feature_dim(encoder)
    c, size = encoder.config.in_channels, encoder.config.image_size
    if cfg.method in ("simclr", "nnclr"):
        pretext: nn.Module = ProjectionHead(dim, cfg.hidden_dim, cfg.proj_dim)
    elif cfg.method == "mae" and isinstance(encoder, ViT):
        p = encoder.config.patch_size
        pretext = MAEDecoder(encoder.config.d_model, encoder.config.num_patches, p * p * c)
    else:  # dae, or masked autoencoding of a CNN (SimMIM-style)
        pretext = PixelDecoder(dim, cfg.hidden_dim, (c, size, size))
    return SSLModel(encoder, pretext)
