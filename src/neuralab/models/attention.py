"""Multi-head self-attention and the pre-LayerNorm Transformer block that GPT and ViT share.

Attention (Vaswani et al. 2017, "Attention Is All You Need", §3.2): each of ``n_heads`` heads
projects the tokens to queries, keys and values of size ``d_head = d_model / n_heads`` and
mixes the values by ``softmax(Q Kᵀ / √d_head)``; the heads' outputs are concatenated back to
(B, T, d_model) and projected. A causal mask lets token t attend to tokens <= t only.

Two implementations give the same result: ``attn_impl="sdpa"`` calls PyTorch's fused
``F.scaled_dot_product_attention`` (fast, memory-efficient, never builds the weights), and
``"manual"`` spells the formula out and can return the (B, n_heads, T, T) attention weights.
Asking for the weights (``need_weights=True``) always takes the manual path, whatever
``attn_impl`` says, so probes work on any trained model.

The block is the pre-LN variant of GPT-2 (Radford et al. 2019, §2.3) and ViT (Dosovitskiy et
al. 2021, Eq. 2-3): ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``, which trains stably without
the learning-rate warm-up the original post-LN block needs (Xiong et al. 2020).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from neuralab.models.base import check, check_choice

ATTN_IMPLS = ("sdpa", "manual")


class MultiHeadSelfAttention(nn.Module):
    """Self-attention of ``n_heads`` heads over (B, T, d_model) tokens, causal or bidirectional.

    One fused ``qkv`` Linear (d_model -> 3 d_model), the output projection ``proj``, dropout on
    the attention weights and on the output (the residual branch). ``forward(x)`` returns
    (B, T, d_model); ``forward(x, need_weights=True)`` returns it with the (B, nh, T, T)
    weights (before dropout, so every row sums to 1), computed by the manual path.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        causal: bool,
        dropout: float = 0.0,
        attn_impl: str = "sdpa",
        bias: bool = True,
    ) -> None:
        super().__init__()
        check(n_heads >= 1, f"n_heads must be >= 1, got {n_heads}")
        check(
            d_model >= 1 and d_model % n_heads == 0,
            f"d_model={d_model} must be a positive multiple of n_heads={n_heads}",
        )
        check(0.0 <= dropout < 1.0, f"dropout must be in [0, 1), got {dropout}")
        check_choice("attn_impl", attn_impl, ATTN_IMPLS)
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.causal, self.dropout, self.attn_impl = causal, dropout, attn_impl
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, need_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, T, d_model) -> (B, T, d_model), and the (B, nh, T, T) weights if asked."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(self.d_model, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        if self.attn_impl == "sdpa" and not need_weights:
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
            weights = None
        else:
            y, weights = self._manual(q, k, v)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, nh * hs): heads side by side
        y = self.resid_dropout(self.proj(y))  # (B, T, C)
        return (y, weights) if need_weights else y

    def _manual(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax(Q Kᵀ / √d_head) V with the causal mask: ((B, nh, T, hs), (B, nh, T, T))."""
        T = q.shape[2]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)  # (B, nh, T, T)
        if self.causal:
            future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(diagonal=1)
            scores = scores.masked_fill(future, float("-inf"))  # row t sees columns <= t
        weights = torch.softmax(scores, dim=-1)  # (B, nh, T, T), rows sum to 1
        y = self.attn_dropout(weights) @ v  # (B, nh, T, T) @ (B, nh, T, hs) -> (B, nh, T, hs)
        return y, weights


class MLP(nn.Module):
    """The position-wise feed-forward net: Linear(d, r d) -> GELU -> Linear(r d, d) -> dropout."""

    def __init__(
        self, d_model: int, mlp_ratio: int = 4, dropout: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, mlp_ratio * d_model, bias=bias)
        self.act = nn.GELU()
        self.proj = nn.Linear(mlp_ratio * d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LN Transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``.

    ``forward(x, need_weights=True)`` also returns the block's (B, nh, T, T) attention weights.
    ``bias=False`` drops the biases of every Linear and LayerNorm (as nanoGPT allows).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        causal: bool,
        dropout: float = 0.0,
        attn_impl: str = "sdpa",
        bias: bool = True,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        check(mlp_ratio >= 1, f"mlp_ratio must be >= 1, got {mlp_ratio}")
        self.ln1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = MultiHeadSelfAttention(d_model, n_heads, causal, dropout, attn_impl, bias)
        self.ln2 = nn.LayerNorm(d_model, bias=bias)
        self.mlp = MLP(d_model, mlp_ratio, dropout, bias)

    def forward(
        self, x: torch.Tensor, need_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) -> (B, T, C), and the (B, nh, T, T) attention weights if asked."""
        if need_weights:
            a, weights = self.attn(self.ln1(x), need_weights=True)
        else:
            a, weights = self.attn(self.ln1(x)), None
        x = x + a  # (B, T, C)
        x = x + self.mlp(self.ln2(x))  # (B, T, C)
        return (x, weights) if need_weights else x


def run_blocks(
    blocks: nn.ModuleList, x: torch.Tensor, need_weights: bool = False
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``x`` through ``blocks`` in order: (output, [one (B, nh, T, T) map per block] if asked)."""
    maps: list[torch.Tensor] = []
    for block in blocks:
        if need_weights:
            x, weights = block(x, need_weights=True)
            maps.append(weights)
        else:
            x = block(x)
    return x, maps
