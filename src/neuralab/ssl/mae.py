"""Masked autoencoding on patches.

- For a ViT: He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners". A random
  ``mask_ratio`` of the patches is dropped; the encoder sees only the visible ones (plus the
  class token); a small Transformer decoder gets the encoded tokens with a learned mask token
  in every hidden place and predicts the hidden patches' pixels, normalised per patch (the
  paper's norm-pix loss). The loss counts hidden patches only.
- For any other backbone (a CNN): SimMIM-style (Xie et al. 2022). Hidden patches are filled
  with the dataset mean, the whole image goes through the encoder, and a pixel decoder
  predicts the image from the pooled features; the loss counts hidden pixels only.

Hidden pixels are filled with the mean before the ViT's embedding too, so a convolutional
stem cannot see across a patch border into what is hidden.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralab.models.attention import Block, run_blocks
from neuralab.models.vit import ViT


def random_patch_mask(
    n: int, grid: int, ratio: float, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """(hidden (N, grid²) bool, visible indices (N, K) sorted) with exactly
    round(ratio · grid²) hidden patches per image, at least one visible."""
    patches = grid * grid
    hidden_count = min(round(ratio * patches), patches - 1)
    order = torch.rand(n, patches, generator=generator).argsort(dim=1)  # (N, P)
    visible = order[:, hidden_count:].sort(dim=1).values  # (N, K)
    hidden = torch.ones(n, patches, dtype=torch.bool).scatter_(1, visible, False)
    return hidden, visible


def pixel_mask(hidden: Tensor, grid: int, patch: int) -> Tensor:
    """(N, grid²) patch mask -> (N, 1, grid·patch, grid·patch) pixel mask."""
    m = hidden.view(-1, 1, grid, grid).float()
    return F.interpolate(m, scale_factor=patch, mode="nearest").bool()


def patchify(x: Tensor, patch: int) -> Tensor:
    """(N, C, H, W) -> (N, P, patch·patch·C): patches in row-major order, like a ViT's tokens."""
    n, c, h, w = x.shape
    x = x.view(n, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // patch) * (w // patch), patch * patch * c)


def encode_visible(vit: ViT, x: Tensor, visible: Tensor) -> Tensor:
    """The ViT on the visible patches only: (N, 1 + K, d) tokens, class token first."""
    t = vit.patch_embed(vit.normalize(x)).flatten(2).transpose(1, 2)  # (N, P, d)
    t = t + vit.pos_embed[:, 1:]
    t = t.gather(1, visible[..., None].expand(-1, -1, t.shape[2]))  # (N, K, d)
    cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(t.shape[0], -1, -1)  # (N, 1, d)
    t, _ = run_blocks(vit.blocks, vit.drop(torch.cat([cls, t], dim=1)))
    return vit.ln_f(t)  # (N, 1 + K, d)


class MAEDecoder(nn.Module):
    """Encoded visible tokens -> predicted pixels of every patch: (N, P, patch·patch·C)."""

    def __init__(
        self, in_dim: int, patches: int, patch_dim: int, d: int = 128, n_layer: int = 2
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + patches, d))
        self.blocks = nn.ModuleList(Block(d, 4, causal=False) for _ in range(n_layer))
        self.ln = nn.LayerNorm(d)
        self.out = nn.Linear(d, patch_dim)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, tokens: Tensor, visible: Tensor) -> Tensor:
        x = self.embed(tokens)  # (N, 1 + K, d)
        n, d = x.shape[0], x.shape[2]
        patches = self.pos_embed.shape[1] - 1
        full = self.mask_token.expand(n, patches, d).to(x.dtype)  # x is bf16 under autocast
        full = full.scatter(1, visible[..., None].expand(-1, -1, d), x[:, 1:])  # (N, P, d)
        x = torch.cat([x[:, :1], full], dim=1) + self.pos_embed  # (N, 1 + P, d)
        x, _ = run_blocks(self.blocks, x)
        return self.out(self.ln(x[:, 1:]))  # (N, P, patch_dim)


def norm_pix_target(x: Tensor, patch: int) -> Tensor:
    """Each patch's pixels normalised to zero mean and unit variance: (N, P, patch·patch·C)."""
    t = patchify(x, patch)
    mean, var = t.mean(dim=-1, keepdim=True), t.var(dim=-1, keepdim=True)
    return (t - mean) / (var + 1e-6).sqrt()
