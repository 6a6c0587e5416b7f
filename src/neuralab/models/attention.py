"""Multi-head self-attention, cross-attention, and the pre-LayerNorm Transformer block that GPT
and ViT share.

Attention (Vaswani et al. 2017, "Attention Is All You Need", §3.2): each of ``n_heads`` heads
projects the tokens to queries, keys and values of size ``d_head = d_model / n_heads`` and
mixes the values by ``softmax(Q Kᵀ / √d_head)``; the heads' outputs are concatenated back to
(B, T, d_model) and projected. A causal mask lets token t attend to tokens <= t only.

Two implementations give the same result: ``attn_impl="sdpa"`` calls PyTorch's fused
``F.scaled_dot_product_attention`` (fast, memory-efficient, never builds the weights), and
``"manual"`` spells the formula out and can return the (B, n_heads, T, T) attention weights.
Asking for the weights (``need_weights=True``) always takes the manual path, whatever
``attn_impl`` says, so probes work on any trained model.

Positions can enter as rotary embeddings (``rope_len > 0``; Su et al. 2021, "RoFormer"):
queries and keys are rotated by an angle proportional to their position, so the score of a
query at m and a key at n depends on m - n only. At character level they beat a learned
position table by a wide margin (see benchmarks/lm.py).

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
MLP_ACTIVATIONS = ("gelu", "relu2")


def rotary_tables(length: int, d_head: int, base: float = 10000.0) -> torch.Tensor:
    """e^(i·t·θ_j) for positions t < length and θ_j = base^(-2j/d_head): (length, hs/2),
    complex128."""
    theta = base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)  # (hs/2,)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * theta[None, :]  # (T, hs/2)
    return torch.polar(torch.ones_like(angles), angles)


def rotate(x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of (B, T, ..., hs) queries or keys: each pair of dimensions
    (2j, 2j+1) of position t, read as a complex number, is multiplied by cis[t, j] = e^(i·t·θ_j),
    i.e. turned by angle t·θ_j. Returns float32 (float64 for float64 input)."""
    x = x if x.dtype == torch.float64 else x.float()
    pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))  # (B, T, ..., hs/2)
    cis = cis.view(cis.shape[0], *([1] * (x.ndim - 3)), cis.shape[1])  # (T, 1.., hs/2)
    return torch.view_as_real(pairs * cis).flatten(-2)  # (B, T, ..., hs)


class KVCache:
    """The keys and values an attention layer has computed for the tokens it has read, so that
    generation reads each new token once instead of re-reading the whole context."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None  # (B, nh, L, hs)
        self.v: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]


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
        rope_len: int = 0,
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
        self.rope_len = rope_len
        if rope_len:
            check(self.d_head % 2 == 0, f"rotary embeddings need an even d_head, got {self.d_head}")
            cis = rotary_tables(rope_len, self.d_head).to(torch.complex64)  # (rope_len, hs/2)
            self.register_buffer("rope_cis", cis, persistent=False)

    def forward(
        self,
        x: torch.Tensor,
        need_weights: bool = False,
        cache: KVCache | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, T, d_model) -> (B, T, d_model), and the (B, nh, T, T) weights if asked.

        With a ``cache``, ``x`` holds the tokens that follow those already in it (a causal
        layer: a whole prompt into an empty cache, then one token at a time); their keys and
        values are appended, and each token attends to everything before it. ``keep``
        (B, T) bool says which tokens may be attended to: a padding position (False) gets
        no weight from any query."""
        B, T, C = x.shape
        start = 0 if cache is None else len(cache)
        check(start == 0 or T == 1, "a KV cache reads a prompt first, then one token at a time")
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, self.d_head)  # (B, T, 3, nh, hs)
        if self.rope_len:
            end = start + T
            check(end <= self.rope_len, f"{end} tokens exceed the rotary table of {self.rope_len}")
            q, k = rotate(qkv[:, :, :2], self.rope_cis[start:end]).unbind(2)  # 2 x (B,T,nh,hs)
            v = qkv[:, :, 2]
        else:
            q, k, v = qkv.unbind(2)  # 3 x (B, T, nh, hs)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            if start:
                k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
            cache.k, cache.v = k, v  # (B, nh, start + T, hs)
        # one new token attends to every key there is; a block of tokens needs the mask
        causal = self.causal and T > 1
        mask = None if keep is None else keep[:, None, None, :]  # (B, 1, 1, S)
        check(keep is None or not causal, "a padding mask is for bidirectional attention")
        if self.attn_impl == "sdpa" and not need_weights:
            p = self.dropout if self.training else 0.0
            # under bf16 autocast on a CPU, attend in fp32: the CPU flash-attention backward
            # is ~10x slower in bf16 than in fp32 at these sizes
            if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
                with torch.autocast("cpu", enabled=False):
                    q, k, v = q.float(), k.float(), v.float()
                    y = F.scaled_dot_product_attention(
                        q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal
                    )
            else:
                y = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal
                )
            weights = None
        else:
            y, weights = self._manual(q, k, v, causal, mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, nh * hs): heads side by side
        y = self.resid_dropout(self.proj(y))  # (B, T, C)
        return (y, weights) if need_weights else y

    def _manual(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        causal: bool,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax(Q Kᵀ / √d_head) V, with the causal mask if asked and the keys where
        ``mask`` (B, 1, 1, S) is False left out: ((B, nh, T, hs), (B, nh, T, S)) for T
        queries over S keys."""
        T = q.shape[2]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)  # (B, nh, T, S)
        if causal:
            future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(diagonal=1)
            scores = scores.masked_fill(future, float("-inf"))  # row t sees columns <= t
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, nh, T, S), rows sum to 1
        y = self.attn_dropout(weights) @ v  # (B, nh, T, S) @ (B, nh, S, hs) -> (B, nh, T, hs)
        return y, weights


class CrossAttention(nn.Module):
    """Attention of ``n_heads`` heads from (B, T, d_model) queries to (B, S, d_model) memory
    (an encoder's output): the decoder's "encoder-decoder attention" (Vaswani et al. 2017,
    §3.2.3). ``memory_kv(memory)`` projects the memory to keys and values once, so that a
    decoder generating word by word does not redo it; ``forward(x, kv, keep)`` attends, and
    a memory position where ``keep`` (B, S) is False (padding) gets no weight. With
    ``need_weights`` it also returns the (B, nh, T, S) weights (each row sums to 1)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        check(
            n_heads >= 1 and d_model % n_heads == 0,
            f"d_model={d_model} must be a multiple of n_heads={n_heads}",
        )
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.resid_dropout = nn.Dropout(dropout)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, d_model) -> keys and values, each (B, nh, S, hs)."""
        B, S, _ = memory.shape
        k, v = self.kv(memory).view(B, S, 2, self.n_heads, self.d_head).unbind(2)
        return k.transpose(1, 2), v.transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor],
        keep: torch.Tensor,
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        q = self.q(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        k, v = kv
        mask = keep[:, None, None, :]  # (B, 1, 1, S)
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)  # (B, nh, T, S)
            weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
            y = weights @ v
        else:
            p = self.dropout if self.training else 0.0
            y, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p), None
        y = self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, T, C)))
        return (y, weights) if need_weights else y


class ReLUSquared(nn.Module):
    """relu(x)², the feed-forward activation of So et al. 2021, "Primer" (§3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = F.relu(x)
        return r * r  # not .square(): autocast runs pow in fp32, twice as slow here


class MLP(nn.Module):
    """The position-wise feed-forward net: Linear(d, r d) -> act -> Linear(r d, d) -> dropout,
    with act GELU (GPT-2, ViT) or ReLU² (Primer)."""

    def __init__(
        self,
        d_model: int,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        bias: bool = True,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        check_choice("activation", activation, MLP_ACTIVATIONS)
        self.fc = nn.Linear(d_model, mlp_ratio * d_model, bias=bias)
        self.act = nn.GELU() if activation == "gelu" else ReLUSquared()
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
        activation: str = "gelu",
        rope_len: int = 0,
    ) -> None:
        super().__init__()
        check(mlp_ratio >= 1, f"mlp_ratio must be >= 1, got {mlp_ratio}")
        self.ln1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = MultiHeadSelfAttention(
            d_model, n_heads, causal, dropout, attn_impl, bias, rope_len
        )
        self.ln2 = nn.LayerNorm(d_model, bias=bias)
        self.mlp = MLP(d_model, mlp_ratio, dropout, bias, activation)

    def forward(
        self,
        x: torch.Tensor,
        need_weights: bool = False,
        cache: KVCache | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) -> (B, T, C), and the (B, nh, T, T) attention weights if asked; ``cache``
        and ``keep`` are the attention's (see ``MultiHeadSelfAttention.forward``)."""
        if need_weights:
            a, weights = self.attn(self.ln1(x), need_weights=True, cache=cache, keep=keep)
        else:
            a, weights = self.attn(self.ln1(x), cache=cache, keep=keep), None
        x = x + a  # (B, T, C)
        x = x + self.mlp(self.ln2(x))  # (B, T, C)
        return (x, weights) if need_weights else x


def run_blocks(
    blocks: nn.ModuleList,
    x: torch.Tensor,
    need_weights: bool = False,
    caches: list[KVCache] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``x`` through ``blocks`` in order: (output, [one (B, nh, T, T) map per block] if asked).
    ``caches``: one ``KVCache`` per block, for generation."""
    maps: list[torch.Tensor] = []
    for i, block in enumerate(blocks):
        cache = None if caches is None else caches[i]
        if need_weights:
            x, weights = block(x, need_weights=True, cache=cache)
            maps.append(weights)
        else:
            x = block(x, cache=cache)
    return x, maps
