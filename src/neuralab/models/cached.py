"""Generation with a KV cache, one token at a time, without module calls.

A causal Transformer writing text reads each new token once: every block keeps the keys and
values of the tokens before (``attention.KVCache``), and the new token's query attends to
them. At the classic char-GPT's size (4 blocks of width 128) a one-token step is about a
hundred tiny ops, so the cost is Python and dispatch, not arithmetic; ``CachedBlocks.step``
does the blocks' arithmetic with as few calls as it can.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuralab.models.attention import KVCache, ReLUSquared


def _norm(ln: nn.LayerNorm) -> tuple:
    return ln.weight, ln.bias, ln.eps


def _linear(layer: nn.Linear) -> tuple:
    """The weight transposed once, (in, out) and contiguous: a (B, in) row times it is the
    cheapest call for one token (``torch.mm``/``addmm``: ~3 µs against ~5 µs for
    ``F.linear`` on a (B, 1, in) input, on a 2-core Xeon)."""
    return layer.weight.t().contiguous(), layer.bias


def _affine(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)


def rotation_matrices(cis: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``rotate`` of one position as a matrix: (T, hs, hs) with ``x @ R[t] == rotate(x, cis[t])``
    for a row x of size hs. Each pair of dimensions (2j, 2j+1) turns by the angle of cis[t, j]:
    a 2 × 2 block [[cos, sin], [-sin, cos]] on the diagonal (the row-vector form)."""
    T, half = cis.shape
    cos, sin = cis.real.to(dtype), cis.imag.to(dtype)
    R = torch.zeros(T, half, 2, half, 2, dtype=dtype, device=cis.device)
    j = torch.arange(half, device=cis.device)
    R[:, j, 0, j, 0], R[:, j, 0, j, 1] = cos, sin
    R[:, j, 1, j, 0], R[:, j, 1, j, 1] = -sin, cos
    return R.view(T, 2 * half, 2 * half)


class CachedBlocks:
    """Causal ``blocks`` generating one token at a time: each block's ``KVCache`` (``caches``,
    filled by reading a prompt through ``run_blocks``) and, for ``step``, the tensors and
    sizes of each block looked up once per generation (``restart`` empties the caches and
    keeps them).

    ``step`` runs ``Block.forward``'s arithmetic with a cache functionally, on (B, d_model)
    rows: the projections as ``mm`` with weights transposed once, the rotary embedding of the
    new position as one (hs, hs) matrix. A one-token step is about a hundred tiny ops, and
    nn.Module's call and attribute overheads were most of its time: sampling the classic GPT
    on a 2-core Xeon went from 1,360 to 1,860 characters per second with the functional step,
    and to 2,160-2,390 on one thread with mm, the rotation matrices and ``TokenSampler``
    (``benchmarks/lm.py --only sample``).
    Generation through it is tested equal to recomputation."""

    def __init__(self, blocks: nn.ModuleList) -> None:
        self.caches = [KVCache() for _ in blocks]
        attn = blocks[0].attn
        weight = attn.qkv.weight
        self.rotations = (
            rotation_matrices(attn.rope_cis, weight.dtype).to(weight.device)
            if attn.rope_len
            else None
        )
        self.layers = [
            (
                *_norm(b.ln1),
                *_linear(b.attn.qkv),
                b.attn.n_heads,
                b.attn.d_head,
                b.attn._manual if b.attn.attn_impl == "manual" else None,
                *_linear(b.attn.proj),
                *_norm(b.ln2),
                *_linear(b.mlp.fc),
                isinstance(b.mlp.act, ReLUSquared),
                *_linear(b.mlp.proj),
            )  # fmt: skip
            for b in blocks
        ]

    def __len__(self) -> int:
        return len(self.caches[0])  # the tokens read so far

    def restart(self) -> None:
        """Forget the tokens read (the caches), keep the looked-up tensors."""
        self.caches = [KVCache() for _ in self.caches]

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One new token (B, d_model) through the blocks in eval mode, after a prompt: each
        block appends its key and value to its cache. Returns (B, d_model)."""
        B, C = x.shape
        rotation = None if self.rotations is None else self.rotations[len(self)]
        for cache, layer in zip(self.caches, self.layers, strict=True):
            ln1_w, ln1_b, eps1, qkv_w, qkv_b, nh, hs, manual = layer[:8]
            proj_w, proj_b, ln2_w, ln2_b, eps2, fc_w, fc_b, relu2, out_w, out_b = layer[8:]
            h = F.layer_norm(x, (C,), ln1_w, ln1_b, eps1)
            qkv = _affine(h, qkv_w, qkv_b).view(B, 3, nh, 1, hs)
            qk, v = qkv[:, :2], qkv[:, 2]  # (B, 2, nh, 1, hs), (B, nh, 1, hs)
            q, k = (qk if rotation is None else qk @ rotation).unbind(1)
            cache.k, cache.v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
            if manual is None:
                y = F.scaled_dot_product_attention(q, cache.k, cache.v)  # one query sees all
            else:
                y = manual(q, cache.k, cache.v, False)[0]
            x = x + _affine(y.reshape(B, C), proj_w, proj_b)
            h = _affine(F.layer_norm(x, (C,), ln2_w, ln2_b, eps2), fc_w, fc_b)
            if relu2:
                h = F.relu(h)
                h = h * h  # ReLUSquared's product
            else:
                h = F.gelu(h)
            x = x + _affine(h, out_w, out_b)
        return x
