"""``seq2seq_transformer``: the Transformer encoder-decoder (Vaswani et al. 2017, "Attention
Is All You Need"), with the pre-LN blocks of ``models/attention.py``.

- One embedding for source and target tokens (a shared BPE vocabulary), scaled by
  √d_model, plus the paper's sinusoidal positions (§3.5); its transpose is the output layer.
- Encoder: ``n_layers`` bidirectional blocks whose attention never weighs a source pad.
- Decoder: ``n_layers`` blocks of causal self-attention, cross-attention to the encoder's
  output (pads masked) and the feed-forward net, each ``x + sublayer(LayerNorm(x))``; a last
  LayerNorm before the output layer, as pre-LN needs.
- Decoding keeps, per decoder block, the keys and values of the words already written (a
  KV cache in the state that ``models/search`` reorders with the beams) and the memory's
  keys and values, projected once in ``encode``: each step reads one word instead of the
  whole prefix, and gives the same logits as teacher forcing on that prefix (tested).

``step`` returns the last decoder block's cross-attention weights, averaged over heads, as
the alignment of each written word with the source (``neuralab probe attention``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from neuralab.models.attention import MLP, Block, CrossAttention, KVCache, MultiHeadSelfAttention
from neuralab.models.base import check, register_model
from neuralab.models.seq2seq import Memory, Seq2Seq, Seq2SeqConfig, State


def sinusoids(length: int, d_model: int) -> Tensor:
    """PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(t / 10000^(2i/d)): (length, d)."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    rate = torch.exp(
        -math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model
    )
    table = torch.zeros(length, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: d_model // 2])
    return table.float()


class DecoderBlock(nn.Module):
    """Pre-LN decoder block: causal self-attention, cross-attention, feed-forward."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, n_heads, causal=True, dropout=dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.cross = CrossAttention(d_model, n_heads, dropout)
        self.ln3 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio, dropout)

    def forward(
        self,
        x: Tensor,
        kv: tuple[Tensor, Tensor],
        keep: Tensor,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        x = x + self.attn(self.ln1(x), cache=cache)
        if need_weights:
            a, weights = self.cross(self.ln2(x), kv, keep, need_weights=True)
        else:
            a, weights = self.cross(self.ln2(x), kv, keep), None
        x = x + a
        return x + self.mlp(self.ln3(x)), weights


class TransformerTranslator(Seq2Seq):
    """The encoder-decoder of the module's docstring."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__(config)
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        nn.init.normal_(self.embed.weight, std=c.d_model**-0.5)
        with torch.no_grad():
            self.embed.weight[c.pad_id].zero_()
        self.register_buffer("positions", sinusoids(c.max_len, c.d_model), persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = nn.ModuleList(
            Block(c.d_model, c.n_heads, causal=False, dropout=c.dropout, mlp_ratio=c.mlp_ratio)
            for _ in range(c.n_layers)
        )
        self.ln_enc = nn.LayerNorm(c.d_model)
        self.decoder = nn.ModuleList(
            DecoderBlock(c.d_model, c.n_heads, c.mlp_ratio, c.dropout) for _ in range(c.n_layers)
        )
        self.ln_dec = nn.LayerNorm(c.d_model)

    def embed_at(self, ids: Tensor, start: Tensor | int = 0) -> Tensor:
        """(B, T) ids at positions start, start + 1, ... -> (B, T, d_model)."""
        T = ids.shape[1]
        if isinstance(start, Tensor):
            check(int(start.max()) + T <= self.config.max_len, "the target is past max_len")
            pos = self.positions[start[:, None] + torch.arange(T, device=ids.device)]
        else:
            check(start + T <= self.config.max_len, f"{start + T} tokens exceed max_len")
            pos = self.positions[start : start + T]
        return self.drop(self.embed(ids) * math.sqrt(self.config.d_model) + pos)

    def encode(self, src: Tensor) -> Memory:
        """(encoder output (B, S, d), keep (B, S), then each decoder block's memory keys and
        values (B, nh, S, hs))."""
        self.check_ids(src)
        keep = src != self.config.pad_id
        x = self.embed_at(src)
        for block in self.encoder:
            x = block(x, keep=keep)
        x = self.ln_enc(x)
        kvs = [t for block in self.decoder for t in block.cross.memory_kv(x)]
        return (x, keep, *kvs)

    def start(self, memory: Memory) -> State:
        """(positions (B,), then each decoder block's cached keys and values, empty)."""
        x = memory[0]
        B, nh = len(x), self.config.n_heads
        empty = x.new_zeros(B, nh, 0, self.config.d_model // nh)
        return (
            torch.zeros(B, dtype=torch.long, device=x.device),
            *[empty] * (2 * len(self.decoder)),
        )

    def _decode(
        self, memory: Memory, x: Tensor, caches: list[KVCache] | None, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        keep = memory[1]
        weights = None
        for i, block in enumerate(self.decoder):
            kv = (memory[2 + 2 * i], memory[3 + 2 * i])
            last = need_weights and i == len(self.decoder) - 1
            cache = None if caches is None else caches[i]
            x, w = block(x, kv, keep, cache=cache, need_weights=last)
            weights = w if last else weights
        logits = self.ln_dec(x) @ self.embed.weight.T
        return logits, None if weights is None else weights.mean(1)  # (B, T, S)

    def step(self, memory: Memory, state: State, words: Tensor) -> tuple[Tensor, State, Tensor]:
        position, cached = state[0], state[1:]
        caches = []
        for i in range(len(self.decoder)):
            cache = KVCache()
            if cached[2 * i].shape[2]:
                cache.k, cache.v = cached[2 * i], cached[2 * i + 1]
            caches.append(cache)
        x = self.embed_at(words[:, None], position)
        logits, weights = self._decode(memory, x, caches, need_weights=True)
        new = [t for cache in caches for t in (cache.k, cache.v)]
        return logits[:, 0], (position + 1, *new), weights[:, 0]

    def forward(self, src: Tensor, words: Tensor, need_weights: bool = False):
        memory = self.encode(src)
        logits, weights = self._decode(memory, self.embed_at(words), None, need_weights)
        return (logits, weights) if need_weights else logits


register_model("seq2seq_transformer", arch="transformer")(TransformerTranslator)
